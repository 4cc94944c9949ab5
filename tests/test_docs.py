"""The documentation stays true to the tree: every relative link in README.md and docs/ (and
in the pages that link into docs/) leads to a file that exists and, for a `#fragment`, to a
heading in it; README.md lists every page of docs/; and a command's output shown on a page
is what the command prints. docs/configuration.md is generated from the schema and must
match it. Pages are moved and renamed and the code moves on; a link that
silently 404s or an example that no longer matches is how a manual rots."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINKING_IN = (
    "README.md",
    "bench/README.md",
    "deploy/DEPLOYMENT.md",
    "tests/policy_corpus/README.md",
)
"""Pages outside docs/ whose links lead into it (or, for README.md, out of it)."""
PAGES = sorted([*(ROOT / name for name in LINKING_IN), *DOCS.glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def links(text: str) -> list[str]:
    """Link targets outside code, where `[x](y)` is text, not a link."""
    return _LINK.findall(_CODE.sub("", _FENCE.sub("", text)))


def anchors(text: str) -> set[str]:
    """The fragments GitHub gives a page's headings: lower case, punctuation dropped, spaces
    as hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = "".join(c for c in heading.lower() if c.isalnum() or c in " -_").replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_anchors_follow_github() -> None:
    text = "# Faults (`--faults`)\n## `[[tenants]]`\n## Tests\n## Tests\n```\n# not one\n```\n"
    assert anchors(text) == {"faults---faults", "tenants", "tests", "tests-1"}


def test_links_skip_code() -> None:
    text = "[a](one.md) `[b](two.md)`\n```\n[c](three.md)\n```\n[d](four.md#x)\n"
    assert links(text) == ["one.md", "four.md#x"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken = []
    for target in links(page.read_text("utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: and the like are not the tree's to keep
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_readme_lists_every_page_of_docs() -> None:
    listed = {target.partition("#")[0] for target in links((ROOT / "README.md").read_text())}
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md")}
    assert pages - listed == set(), "README.md's Documentation list misses these pages"


def test_policy_page_shows_what_explain_prints() -> None:
    """docs/policy.md's `relay policy explain` example is the command's output, verbatim: the
    pipeline gains checks, and a stale example teaches the wrong order."""
    page = (DOCS / "policy.md").read_text("utf-8")
    command = "$ .venv/bin/relay policy explain examples/newsletter.eml --tenant demo\n"
    shown = page.split(command, 1)[1].split("```", 1)[0]
    argv = command.removeprefix("$ .venv/bin/relay ").split()
    result = subprocess.run(
        [sys.executable, "-m", "relay", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # the demo tenant may not send bulk
    assert result.stdout == shown, "update the example in docs/policy.md"


def test_configuration_reference_is_generated_from_the_schema() -> None:
    """docs/configuration.md is what `make docs` renders from relay/config/schema.py now."""
    committed = (DOCS / "configuration.md").read_text("utf-8")
    assert committed == reference.render(), (
        "docs/configuration.md differs from relay/config/schema.py: run make docs"
    )


def test_every_key_says_what_it_does() -> None:
    """A key without a docstring would reach the reference as an empty cell."""
    silent = [
        f"{t.heading} {row.key}" for t in reference.tables() for row in t.rows if not row.meaning
    ]
    assert silent == [], "give these fields a docstring in relay/config/schema.py"


def test_reference_writes_values_as_relay_toml_does() -> None:
    """Defaults and limits in the units an admin writes, not in seconds and bytes."""
    rows = {(t.heading, row.key): row for t in reference.tables() for row in t.rows}
    assert rows["[smtp]", "command_timeout"].default == '`"5m"`'
    assert rows["[policy]", "unsubscribe_lifetime"].type == "duration, at least 1d"
    assert rows["[smtp]", "max_message_size"].type == "size, at least 1KiB"
    assert rows["[relay]", "processes"].type == 'integer or `"auto"`'
    assert rows["[[listeners]]", "address"].default == "required"
    assert rows["[[sites]]", "connections"].default == "unset"
    assert rows["[policy]", "content_categories"].default == "all of them"
    assert "bulk\\|list" in reference.render()  # a `|` inside a cell does not split it
