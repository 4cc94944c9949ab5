"""The deploy files that ask Prometheus for the relay's metrics, and the PromQL read out of
them: the operations tests check every name against the relay's exposition, the interop
tests have promtool parse every query."""

import re
from typing import Any

from tests.support.peers import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "relay.json"


def alert_expressions(text: str) -> list[str]:
    """Every `expr:` of a rules file, one-line or block (`expr: |`), without a YAML parser:
    a block runs while its lines are indented deeper than the key."""
    found: list[str] = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value not in ("|", ">", "|-", ">-"):
            found.append(value)
            continue
        block = []
        for following in lines[n + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        found.append(" ".join(b for b in block if b))
    return found


def dashboard_queries(node: Any) -> list[str]:
    """Every PromQL text of a Grafana dashboard: panel targets' `expr` and the variables'
    `query` and `definition`."""
    if isinstance(node, list):
        return [q for item in node for q in dashboard_queries(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
    query = node.get("query")
    if isinstance(query, str) and "(" in query:
        found.append(query)
    return found + [q for v in node.values() for q in dashboard_queries(v)]
