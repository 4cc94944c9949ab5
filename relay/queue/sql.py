"""SQL lives in `.sql` files beside this module, not in Python strings.

`queries.sql` holds named blocks (`-- name: lease_due`) loaded once into `QUERIES`;
migrations are the numbered files (`0001_initial.sql`, ...) applied in order.
"""

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load_queries() -> dict[str, str]:
    text = resources.files("relay.queue").joinpath("sql/queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration, in order."""
    found = []
    for entry in resources.files("relay.queue").joinpath("sql").iterdir():
        match = re.match(r"^(\d{4})_\w+\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


QUERIES = _load_queries()
