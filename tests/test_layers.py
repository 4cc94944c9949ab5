"""Which package may import which: the layout of DESIGN.md, checked on the source.

The listener (`relay/smtp/`) is started by `relay/serve/` and imported by nothing below it
(the other packages, and the modules at the package root such as `accept.py`); the values
every layer needs (addresses, the wire form, MIME helpers) live in `relay/mail/`;
`relay/queue/` is the only door to PostgreSQL. In the tests, what several modules share
lives in `tests/support/` and no test module imports another.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "relay"
TESTS = ROOT / "tests"
BELOW_THE_LISTENER = ("mail", "policy", "dkim", "delivery", "feedback", "queue", "config", "web")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a file of `package` imports, as dotted names, relative imports resolved."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).parts[:-1])


def test_imported_modules_sees_every_form_of_import() -> None:
    source = "import relay.smtp.x\nfrom relay.smtp import y\nfrom ..smtp import z\n"
    found = imported_modules(source, "relay.policy")
    assert {"relay.smtp.x", "relay.smtp.y", "relay.smtp.z"} <= found


@pytest.mark.parametrize("layer", [*BELOW_THE_LISTENER, ""])  # "": relay/*.py, accept.py...
def test_nothing_below_the_app_imports_the_listener(layer: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in imported_modules(path.read_text("utf-8"), package_of(path))
            if m.startswith("relay.smtp")
        )
        for path in sorted((PACKAGE / layer).rglob("*.py") if layer else PACKAGE.glob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


_RUNS_SQL = re.compile(r"\bQUERIES\[|\.(fetch|fetchrow|fetchval|execute|executemany|cursor)\(")


def runs_sql(path: Path) -> bool:
    """Imports asyncpg, reads the named queries, or calls a connection's query methods."""
    source = path.read_text("utf-8")
    uses_driver = any(m.split(".")[0] == "asyncpg" for m in imported_modules(source, ""))
    return uses_driver or _RUNS_SQL.search(source) is not None


def test_runs_sql_sees_the_driver_and_the_queries() -> None:
    assert runs_sql(PACKAGE / "queue" / "store.py")
    assert not runs_sql(PACKAGE / "mail" / "wire.py")


def test_only_the_queue_talks_to_postgresql() -> None:
    found = {
        str(path.relative_to(ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "queue" and runs_sql(path)
    }
    assert found == set()


def imports_a_test_module(source: str) -> list[str]:
    """The test modules a file of tests/ imports: `tests.test_x`, or `test_x` as pytest's
    default import mode would also let it be found."""
    return sorted(
        m for m in imported_modules(source, "tests") if m.removeprefix("tests.").startswith("test_")
    )


def test_no_test_module_imports_another() -> None:
    """Importing a test module runs its module-level setup and hands over names private to
    it; what is shared belongs in tests/support/, where it is written to be shared."""
    forms = "from tests.test_a import x\nimport test_b\nfrom . import test_c\n"
    assert imports_a_test_module(forms) == [
        "test_b", "tests.test_a", "tests.test_a.x", "tests.test_c"
    ]  # fmt: skip
    offenders = {
        path.name: imports_a_test_module(path.read_text("utf-8"))
        for path in sorted(TESTS.glob("test_*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}
