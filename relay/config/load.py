"""Read `relay.toml` with `tomllib`, validate it, and explain every mistake.

An error names the file, the key path (`tenants[0].limits.max_message_size`), the line when
it can be found, and what was expected, so an admin can fix the file without reading code.
A well-formed file that is unsafe (`relay.config.safety`) is refused the same way. A key
with an old name (`relay.config.renamed`) is read under its new one with a warning that
names both, in the same form.
"""

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from relay.config.renamed import Loc, Renamed, rename_old_keys
from relay.config.safety import unsafe
from relay.config.schema import Config

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file."""

    key: str
    line: int | None
    message: str


class ConfigError(Exception):
    """The file cannot be used; `problems` lists every reason, each naming its key."""

    def __init__(self, path: Path, problems: list[ConfigProblem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(
            f"{_where(self.path, p.line)}: {p.key or '(file)'}: {p.message}" for p in self.problems
        )


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def load_config(path: str | Path) -> Config:
    """Load and validate a config file, logging its warnings (`read_config`) as a running
    relay reports them."""
    config, warnings = read_config(path)
    log_warnings(warnings)
    return config


def log_warnings(warnings: list[str]) -> None:
    """Log `read_config`'s warnings at WARNING, where admins watching the relay's log (and
    alerting on its warnings) see them."""
    for warning in warnings:
        log.warning("%s", warning)


def read_config(path: str | Path) -> tuple[Config, list[str]]:
    """Load and validate a config file; relative `data_dir` becomes relative to the file.

    Also returns the warnings about a file that loads, each a line naming the file, the line
    and the key (old key names, for now), for the caller to print or log: `relay serve`
    cannot log before it has read the log level from the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [ConfigProblem("", None, f"cannot read: {exc.strerror}")]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))  # tomllib has no lineno before 3.14
        line = int(found.group(1)) if found else None
        raise ConfigError(path, [ConfigProblem("", line, f"not valid TOML: {exc}")]) from exc
    renamed = rename_old_keys(raw)
    twice = [_set_twice(r, text) for r in renamed if r.both]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, twice + _problems(exc, text, renamed)) from exc
    if twice:
        raise ConfigError(path, twice)
    refused = [
        ConfigProblem(_key_path(loc), _line_of(text, loc), why) for loc, why in unsafe(config)
    ]
    if refused:
        raise ConfigError(path, refused)
    data_dir = (path.parent / config.relay.data_dir).resolve()
    config = config.model_copy(
        update={"relay": config.relay.model_copy(update={"data_dir": str(data_dir)})}
    )
    return config, _renamed_warnings(path, text, renamed)


def _renamed_warnings(path: Path, text: str, renamed: list[Renamed]) -> list[str]:
    """One line per old key name, in file order, naming the old and the new key."""
    found = sorted(((_line_of(text, r.old) or 0, r) for r in renamed), key=lambda x: x[0])
    return [
        f"{_where(path, line)}: {_key_path(r.old)} is now {_key_path(r.new)}"
        " (the old name is still read in this release, not in the next)"
        for line, r in found
    ]


def _set_twice(renamed: Renamed, text: str) -> ConfigProblem:
    return ConfigProblem(
        _key_path(renamed.new),
        _line_of(text, renamed.old),
        f"set twice, also as {_key_path(renamed.old)} (its old name); keep only {renamed.new[-1]}",
    )


def _problems(exc: ValidationError, text: str, renamed: list[Renamed]) -> list[ConfigProblem]:
    """One problem per validation error; an error in a renamed key names the key as the file
    writes it, so that the admin finds it."""
    as_written: dict[Loc, Loc] = {r.new: r.old for r in renamed if not r.both}
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        loc = as_written.get(loc, loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and table)"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            message = f"{message} (got {err['input']!r})"
        problems.append(ConfigProblem(_key_path(loc), _line_of(text, loc), message))
    return problems


def _key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line of `loc` in the TOML text: the key's own line, else its table's."""
    tables, key = _split_loc(loc)
    while True:
        line = _find(text, tables, key)
        if line or not (tables or key):
            return line
        if key:  # the key itself may be missing: point at its table
            key = None
        else:
            key, tables = _unindexed(tables[-1]), tables[:-1]


def _split_loc(loc: tuple[str | int, ...]) -> tuple[list[str], str | None]:
    """('tenants', 0, 'limits', 'x') -> (['tenants[0]', 'limits'], 'x')."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and parts:
            parts[-1] = f"{parts[-1]}[{item}]"
        else:
            parts.append(str(item))
    if not parts:
        return [], None
    return parts[:-1], parts[-1]


def _unindexed(part: str) -> str:
    return part.split("[", 1)[0]


def _find(text: str, tables: list[str], key: str | None) -> int | None:
    want = ".".join(tables)
    current = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = _table_label(header.group(1) == "[[", header.group(2), counts)
            if key is None and current == want:
                return number
            continue
        match = _KEY.match(line)
        if key is not None and match and current == want and match.group(1) == _unindexed(key):
            return number
    return None


def _table_label(is_array: bool, dotted: str, counts: dict[str, int]) -> str:
    """Label a header as `tenants[1].limits`, numbering arrays of tables in file order."""
    names = dotted.split(".")
    label = ""
    for depth, name in enumerate(names):
        prefix = f"{label}.{name}" if label else name
        last = depth == len(names) - 1
        if last and is_array:
            counts[prefix] = counts.get(prefix, 0) + 1
            label = f"{prefix}[{counts[prefix] - 1}]"
        elif prefix in counts:
            label = f"{prefix}[{counts[prefix] - 1}]"
        else:
            label = prefix
    return label
