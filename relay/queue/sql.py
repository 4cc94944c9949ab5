"""SQL lives in `.sql` files beside this module, not in Python strings.

`queries.sql` and `queries_*.sql` (one per feature) hold named blocks (`-- name: lease_due`)
loaded once into `QUERIES`; migrations are the numbered files (`0001_initial.sql`, ...)
applied in order. `schema.sql` is neither: it is the schema after the last migration,
written out for readers, and nothing here reads it (its name matches neither pattern).
"""

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted(resources.files("relay.queue").joinpath("sql").iterdir(), key=str):
        if not re.match(r"^queries(_\w+)?\.sql$", entry.name):
            continue
        parts = _NAME.split(entry.read_text("utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"query {name} is named twice ({entry.name})")
            queries[name] = body.strip()
    return queries


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration, in order."""
    found = []
    for entry in resources.files("relay.queue").joinpath("sql").iterdir():
        match = re.match(r"^(\d{4})_\w+\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


QUERIES = _load_queries()
