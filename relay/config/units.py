"""Human units in `relay.toml`: durations ("90s", "5 minutes", "5d") and sizes ("25MiB").

KumoMTA-style: admins write what they mean, and a bare number keeps its plain meaning
(seconds for durations, bytes for sizes), so existing numeric configs stay valid.
"""

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "k": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "m": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "g": 1024**3,
}
_NUMBER_AND_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> object:
    """Turn "5m", "2 hours" or 30 into seconds; leave other types to pydantic's error."""
    if not isinstance(value, str):
        return value
    match = _NUMBER_AND_UNIT.match(value)
    unit = match.group(2).lower() if match else ""
    unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _DURATION_UNITS else unit
    if not match or (unit and unit not in _DURATION_UNITS):
        raise ValueError(
            f"expected a duration such as 30, '30s', '5m', '2h' or '5d', got {value!r}"
        )
    return float(match.group(1)) * _DURATION_UNITS.get(unit or "s", 1)


def parse_size(value: object) -> object:
    """Turn "25MiB", "10 MB" or 1024 into bytes; leave other types to pydantic's error."""
    if not isinstance(value, str):
        return value
    match = _NUMBER_AND_UNIT.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _SIZE_UNITS):
        raise ValueError(f"expected a size such as 1048576, '512KiB' or '25MiB', got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS.get(unit or "b", 1))


Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_size)]
