"""Where benchmark results go: `bench/results/NAME-latest.json` and a dated copy."""

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """Store `figures` with the time and machine; return the dated file's path."""
    now = datetime.now(UTC)
    result = {
        "benchmark": name,
        "when": now.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        **figures,
    }
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=2)
    (RESULTS / f"{name}-latest.json").write_text(text)
    dated = RESULTS / f"{name}-{now:%Y%m%d-%H%M%S}.json"
    dated.write_text(text)
    return dated
