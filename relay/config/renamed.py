"""Keys of `relay.toml` that have a new name, and reading files that still use the old one.

A renamed key keeps working for one release, as Postfix and KumoMTA admins expect of a
renamed parameter: a file with the old name loads as if it had the new one, and the
loader says which key to rename where (`relay check-config` prints it, `relay serve`
logs it). A file that sets both names is refused, since which value was meant cannot be
guessed. A rename is added to `RENAMED` and nowhere else, and removed a release later.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EACH = "[]"
"""In an old path: every table of an array of tables (`[[tenants]]`)."""

RENAMED: dict[tuple[str, ...], str] = {
    # Three keys were called messages_per_minute with three meanings. This one limits what a
    # tenant submits, per relay process; it has nothing to do with delivery rates.
    ("tenants", EACH, "limits", "messages_per_minute"): "submissions_per_minute",
    # The ceiling for destination sites nobody names, unlike [[sites]] messages_per_minute
    # (which keeps its name: it is that site's own ceiling).
    ("delivery", "messages_per_minute"): "default_site_messages_per_minute",
    # The limit has always applied per site (the destinations one operator's MX hosts
    # serve), never per destination domain as its name said.
    ("delivery", "connections_per_domain"): "connections_per_site",
}
"""Old path of a key (tables, then the key) -> its new name in the same table."""

Loc = tuple[str | int, ...]
"""Where a key is, as pydantic gives it: `("tenants", 0, "limits", "x")`."""


@dataclass(frozen=True)
class Renamed:
    """An old key found in a file."""

    old: Loc
    new: Loc
    both: bool
    """The file sets the new key too: refused, and the old key's value was dropped."""


def rename_old_keys(raw: dict[str, Any]) -> list[Renamed]:
    """Move every old key in `raw` (the parsed TOML, changed in place) to its new name, so
    validation sees only new names; where the new key is set too, drop the old one (and
    report it with `both`) so that validation still checks the rest of the file."""
    found = []
    for path, new_name in RENAMED.items():
        *tables, old_name = path
        for table, loc in _tables(raw, tuple(tables), ()):
            if old_name not in table:
                continue
            value = table.pop(old_name)
            both = new_name in table
            if not both:
                table[new_name] = value
            found.append(Renamed((*loc, old_name), (*loc, new_name), both))
    return found


def _tables(node: Any, path: tuple[str, ...], loc: Loc) -> Iterator[tuple[dict[str, Any], Loc]]:
    """The tables that `path` leads to from `node`, with their locations. A part of the file
    of the wrong type is skipped: validation reports it."""
    if not path:
        if isinstance(node, dict):
            yield node, loc
        return
    step, rest = path[0], path[1:]
    if step == EACH:
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _tables(item, rest, (*loc, index))
    elif isinstance(node, dict) and step in node:
        yield from _tables(node[step], rest, (*loc, step))
