"""docs/configuration.md, generated from the schema so that the reference cannot drift from it.

`relay/config/schema.py` is the one place where a key's type, default and meaning are
written (the meaning as the field's docstring, which pydantic keeps as its description); a
table kept by hand beside it repeated all of that and fell behind. This walks `Config` in
the order of its fields and renders each table (`[relay]`), array of tables (`[[tenants]]`)
and table inside one (`[tenants.limits]`) under its own heading, after a fixed
introduction for what no field says: how a file is checked, units, reloading.

`make docs` writes the page (`python -m relay.config.reference > docs/configuration.md`);
tests/test_docs.py fails while the committed page and the schema disagree.
"""

import inspect
import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from relay.config.schema import Config, HostPort, Network
from relay.config.units import Bytes, Seconds

_CHECK_CONFIG_ERROR = (
    "relay.toml:73: tenants[0].limits.recipients_per_message: Input should be a valid "
    "integer, unable to parse string as an integer (got 'many')"
)
"""An error as `relay check-config` prints it, kept apart only for the code's line length."""

INTRODUCTION = f"""\
# Configuration reference

<!-- Generated from relay/config/schema.py by `make docs`: edit the docstrings there, not
this page. -->

[`relay.toml`](../relay.toml) is the demo; every key in it carries a comment. `relay
check-config FILE` validates a file without starting anything; an error names the file, the
line, the key path and what was expected, for example

```
{_CHECK_CONFIG_ERROR}
```

Unknown keys are errors. Durations take units (`"30s"`, `"5m"`, `"2h"`, `"5d"`; a bare number
is seconds) and sizes take `KiB`/`MiB` (a bare number is bytes).

Well-formed settings that would make the relay unsafe are refused the same way, naming the
key: a sending domain claimed by two tenants or lying inside another tenant's domain (the
second tenant would send as the first, signed with its DKIM key), a public suffix as a
sending domain (`co.uk`), a trusted network wider than `[smtp] min_network_prefix_ipv4`
or `_ipv6`, and the demo's password on a listener that is not loopback:

```
relay.toml:131: tenants[1].domains[0]: shop.example is also a domain of tenant acme
```

`SIGHUP` reloads tenants, credentials, limits and routes without dropping sessions; an
invalid file is refused (the errors are logged) and the running configuration stays.
Listener addresses, TLS files and the database need a restart. What `SIGTERM` does, and how
`[relay] processes` spreads submissions over several processes, is in
[Operations](operations.md#signals-and-processes).

The tables below are every key the schema knows, in its order. A *duration* takes the units
above, a *size* `KiB`, `MiB` or `GiB`; a `host:port` puts an IPv6 host in brackets
(`[::1]:587`); an *IP network* is written `192.0.2.0/24` or `2001:db8::/48` (a single
address is a network of one). Limits on a duration or a size are shown in its units.
"""
"""The page's fixed opening: what `relay.toml` as a whole does that no single key says."""

_NAMED_TYPES: tuple[tuple[Any, str], ...] = (
    (Seconds, "duration"),
    (Bytes, "size"),
    (HostPort, "`host:port`"),
    (Network, "IP network"),
)
"""The schema's own annotated types, named for a reader instead of as `float` or `str`."""

_PLAIN_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

_BOUNDS = (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than"))
"""annotated_types' bounds as pydantic keeps them in a field's metadata, read by attribute."""


@dataclass(frozen=True)
class Row:
    """One key of a table, as the page shows it."""

    key: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Table:
    """One TOML table of the configuration: `[relay]`, `[[tenants]]`, `[tenants.limits]`."""

    heading: str
    depth: int
    """0 for a table at the top of the file, 1 for one inside it (`[tenants.limits]`)."""
    intro: tuple[str, ...]
    rows: tuple[Row, ...]


def tables() -> Iterator[Table]:
    """Every table of `Config`, in the order of its fields, each followed by those inside it."""
    hints = _annotations(Config)
    for name, info in Config.model_fields.items():
        model, is_array = _nested_model(hints[name])
        if model is None:
            raise TypeError(f"Config.{name} is not a table: the reference has nowhere to put it")
        yield from _tables(model, name, is_array, 0, info)


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [INTRODUCTION.rstrip("\n"), ""]
    for table in tables():
        lines += [f"{'#' * (2 + table.depth)} `{table.heading}`", ""]
        for paragraph in table.intro:
            lines += [paragraph, ""]
        if table.rows:
            lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
            for row in table.rows:
                cells = (f"`{row.key}`", row.type, row.default, row.meaning)
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    """Write the page to the file named by the only argument, or print it; as UTF-8 whatever
    the locale (the docstrings are not all ASCII). The file is replaced whole only once the
    page is rendered, so a generator that fails leaves the committed page as it was."""
    page = render().encode("utf-8")
    if len(sys.argv) < 2:
        sys.stdout.buffer.write(page)
        return
    target = Path(sys.argv[1])
    partial = target.with_name(target.name + ".tmp")
    partial.write_bytes(page)
    partial.replace(target)


def _tables(
    model: type[BaseModel], path: str, is_array: bool, depth: int, holder: FieldInfo
) -> Iterator[Table]:
    """`model`'s own keys as one table, then each table inside it under its own heading: a
    nested table is written apart in TOML too (`[tenants.limits]` after `[[tenants]]`).
    `holder` is the field that holds the table; its docstring says what it is there for."""
    hints = _annotations(model)
    rows: list[Row] = []
    inside: list[tuple[str, type[BaseModel], bool, FieldInfo]] = []
    for name, info in model.model_fields.items():
        nested, nested_array = _nested_model(hints[name])
        if nested is not None:
            inside.append((name, nested, nested_array, info))
            continue
        meaning = " ".join((info.description or "").split())
        rows.append(Row(name, _type(hints[name], info), _default(hints[name], info), meaning))
    intro = _paragraphs(model.__dict__.get("__doc__")) + _paragraphs(holder.description)
    heading = f"[[{path}]]" if is_array else f"[{path}]"
    yield Table(heading, depth, intro, tuple(rows))
    for name, nested, nested_array, info in inside:
        yield from _tables(nested, f"{path}.{name}", nested_array, depth + 1, info)


def _annotations(model: type[BaseModel]) -> dict[str, Any]:
    """The fields' annotations as written, so `Seconds` is still `Seconds`: pydantic's
    `FieldInfo.annotation` has already taken the outer `Annotated` apart."""
    found: dict[str, Any] = {}
    for klass in reversed(model.__mro__):
        if issubclass(klass, BaseModel) and klass is not BaseModel:
            found.update(inspect.get_annotations(klass))
    return found


def _nested_model(hint: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (a table), or a list of (an array of tables), else None."""
    hint = _without_none(hint)
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item, True
    if inspect.isclass(hint) and issubclass(hint, BaseModel):
        return hint, False
    return None, False


def _without_none(hint: Any) -> Any:
    """`X | None` as `X`: an optional key is one whose default is unset."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _type(hint: Any, info: FieldInfo) -> str:
    """The type's name, then its limits: `integer, at least 2, at most 200`."""
    limits: list[str] = []
    for metadata in info.metadata:
        for attribute, word in _BOUNDS:
            value = getattr(metadata, attribute, None)
            if isinstance(value, int | float):
                limits.append(_bound(hint, word, value))
        length = getattr(metadata, "min_length", None)
        if isinstance(length, int) and length > 0:
            limits.append(_min_length(hint, length))
    return ", ".join([_type_name(hint), *limits])


def _min_length(hint: Any, length: int) -> str:
    """pydantic's `min_length` counts items of a list and characters of a string."""
    if length == 1:
        return "not empty"
    return f"at least {length} {'items' if get_origin(hint) is list else 'characters'}"


def _type_name(hint: Any) -> str:
    """What a reader writes in TOML, not the Python type: an unknown type is an error, so a
    new kind of key gets a name here rather than a `repr` on the page."""
    for named, name in _NAMED_TYPES:
        if hint == named:
            return name
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return _one_of([f"`{_toml(value)}`" for value in args])
    if origin in (Union, types.UnionType):
        return _one_of([_type_name(arg) for arg in args if arg is not type(None)])
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if hint in _PLAIN_TYPES:
        return _PLAIN_TYPES[hint]
    raise TypeError(f"no name for the type {hint!r}: add it to relay.config.reference")


def _one_of(names: list[str]) -> str:
    """`a`, `b` or `c`: the choices as a sentence says them, with no `|` to escape in a table."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _bound(hint: Any, word: str, value: float) -> str:
    """`at least 1d` for a duration, `at least 1KiB` for a size: bounds in the key's units."""
    if hint == Seconds:
        return f"{word} {_duration(value)}"
    if hint == Bytes:
        return f"{word} {_size(int(value))}"
    return f"{word} {value}"


def _default(hint: Any, info: FieldInfo) -> str:
    """The default as it would be written in `relay.toml`: a number of seconds in its unit
    (`"5m"`, not `300`), a computed default as what computes it, a missing one as `unset`."""
    if info.default_factory is not None:
        factory = info.default_factory
        return f"`{factory.__module__}.{factory.__qualname__}()`"
    if info.is_required():
        return "required"
    value = info.default
    if value is None:
        return "unset"
    if hint == Seconds and isinstance(value, int | float):
        return f'`"{_duration(value)}"`' if value else "`0`"
    if isinstance(value, list) and value and get_origin(hint) is list:
        (item,) = get_args(hint)
        if get_origin(item) is Literal and set(value) == set(get_args(item)):
            return "all of them"  # the full list of choices says nothing the type does not
    return f"`{_toml(value)}`"


def _toml(value: object) -> str:
    """A value as it is written in `relay.toml`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def _duration(seconds: float) -> str:
    """300 as `5m`, 86400 as `1d`: the largest unit that divides it, as an admin writes it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds else "0"


def _size(octets: int) -> str:
    """1024 as `1KiB`: the unit the configuration's sizes are written in."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if octets >= size and octets % size == 0:
            return f"{octets // size}{unit}"
    return str(octets)


def _paragraphs(text: str | None) -> tuple[str, ...]:
    """A docstring's paragraphs, each on one line (the page's tables and prose reflow)."""
    if not text:
        return ()
    return tuple(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n") if p.strip())


if __name__ == "__main__":
    main()
