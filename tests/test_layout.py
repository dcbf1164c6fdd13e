"""The package's shape: imports point one way (STYLE.md), the public surface is curated."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import touchline

PACKAGE = Path(touchline.__file__).parent
# layer → layers it may import from (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    # modules imported on first use (SciPy), for a light start-up
    "lazy": set(),
    "config": {"errors"},
    # one HMAC signature scheme for webhooks received and lead payloads sent
    "signing": set(),
    "engine": {"config", "errors"},
    "store": {"config", "errors", "engine"},
    "simulate": {"config", "errors", "store"},
    "collect": {"config", "errors", "engine", "store", "signing"},
    "prepare": {"config", "errors", "engine", "store"},
    "journeys": {"config", "errors", "engine", "store", "prepare"},
    "attribution": {"config", "errors", "engine", "store", "journeys", "lazy"},
    "metrics": {"config", "errors", "engine", "store", "journeys", "lazy"},
    # exports read the stored tables, never the stages' code
    "exports": {"config", "errors", "engine", "store", "signing"},
    # erasure rewrites the collector's spool and leases and normalises as identities do
    "privacy": {"config", "errors", "engine", "store", "collect"},
}
TOP = {"pipeline", "demo", "warehouse", "cli", "terminal", "formatting", "serve", "__init__",
       "__main__"}


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("touchline.")):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "touchline":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("touchline."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) not in TOP)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"new top-level module {layer}: add it to ALLOWED with its layer"
    wrong = {m for m in _imports(path) if m != layer and m not in ALLOWED[layer]}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_all_lists_every_public_name_sorted() -> None:
    """``__all__`` is the lazily imported names, sorted, and each one resolves."""
    assert touchline.__all__ == sorted(touchline._LAZY)
    import importlib

    for name in touchline.__all__:
        assert getattr(touchline, name) is getattr(
            importlib.import_module(touchline._LAZY[name]), name), name


def test_importing_touchline_loads_no_heavy_stack() -> None:
    """``import touchline`` (issue 19, start-up): no scipy, pyspark, collector server stack or
    engine until a name is used; checked in a fresh interpreter."""
    import subprocess
    import sys

    heavy = ("scipy", "pyspark", "starlette", "uvicorn", "msgspec", "duckdb", "ibis")
    code = ("import sys, touchline; print(' '.join(m for m in " + repr(heavy)
            + " if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []


#: what ``touchline --help`` must not import: SciPy, PySpark and the collector's server stack
#: (seconds), and the engine, Ibis, pandas and the rest of the data stack (1.4 s), which every
#: command imports when it runs (issue 19, start-up); not pydantic itself: typer imports it
CLI_HEAVY = ("scipy", "pyspark", "starlette", "uvicorn", "msgspec", "ibis", "duckdb", "pandas",
             "numpy", "pyarrow", "sqlglot", "pydantic_settings", "httpx", "touchline.engine",
             "touchline.store", "touchline.config")
#: every command's ``--help`` in one fresh interpreter, then the heavy modules it loaded
CLI_HELP_ALL = """
import sys
import typer.main
from typer.testing import CliRunner
from touchline.cli import app

def walk(command, path):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, [*path, name])

runner = CliRunner()
paths = list(walk(typer.main.get_command(app), []))
for path in paths:
    result = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0 and "Usage: " in result.output, (path, result.output)
print(";".join(" ".join(path) for path in paths))
print(" ".join(m for m in HEAVY if m in sys.modules))
"""


def test_cli_help_of_every_command_loads_no_heavy_stack() -> None:
    """``touchline --help`` and each command's ``--help`` (issue 19, start-up) work, yet
    import none of SciPy, PySpark, the collector's server stack, the engine, Ibis or pandas:
    the commands import them when they run (and ``touchline/cli/*.py`` copy the few
    registry names their options show, checked below). Checked in a fresh interpreter."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CLI_HELP_ALL.replace("HEAVY", repr(CLI_HEAVY))],
                          capture_output=True, text=True, check=True)
    commands, loaded = done.stdout.split("\n")[:2]
    # the top level, groups and their subcommands all answered
    assert {"", "attribute", "ingest", "keys", "keys create", "clv fit",
            "retention apply"} <= set(commands.split(";"))
    assert loaded.split() == []


def test_cli_copies_of_registry_names_match_the_registries() -> None:
    """The names the CLI's options show without importing the stages (help texts and
    defaults built at start-up) equal the registries they copy."""
    from touchline import store
    from touchline.attribution.paths import PATH_SEP_DEFAULT
    from touchline.attribution.registry import MODELS
    from touchline.cli import INGESTIBLE
    from touchline.cli import attribution as attribution_cli
    from touchline.cli import exports as exports_cli
    from touchline.cli import simulate as simulate_cli
    from touchline.exports.export import DESTINATIONS, FORMATS
    from touchline.journeys import LEVELS
    from touchline.simulate import CHUNK_PEOPLE_DEFAULT
    from touchline.simulate import FORMATS as SIMULATE_FORMATS

    assert tuple(store.INGESTIBLE) == INGESTIBLE
    assert tuple(sorted(MODELS)) == attribution_cli.MODEL_NAMES
    assert tuple(LEVELS) == attribution_cli.LEVELS
    assert attribution_cli.PATH_SEP_DEFAULT == PATH_SEP_DEFAULT
    assert tuple(DESTINATIONS) == exports_cli.DESTINATIONS
    assert tuple((f.id, f.destination) for f in FORMATS.values()) == exports_cli.FORMATS
    assert tuple(SIMULATE_FORMATS) == simulate_cli.FORMATS
    assert simulate_cli.CHUNK_PEOPLE_DEFAULT == CHUNK_PEOPLE_DEFAULT


def test_a_lazy_module_imports_on_first_attribute_read() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom touchline.lazy import lazy_module\n"
            "wave = lazy_module('wave')\nbefore = 'wave' in sys.modules\n"
            "print(before, wave.WAVE_FORMAT_PCM, 'wave' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "1", "True"]


TESTS = Path(__file__).parent


def _duckdb_only(decorators: list[ast.expr]) -> ast.Call | None:
    for node in decorators:
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.mark.duckdb_only":
            return node
    return None


def _has_reason(mark: ast.Call) -> bool:
    reason = next((k.value for k in mark.keywords if k.arg == "reason"), None)
    # a literal that says something, or a named constant shared by several tests
    return isinstance(reason, ast.Name) or (
        isinstance(reason, ast.Constant) and bool(str(reason.value).strip()))


def test_duckdb_only_tests_say_why_and_table_tests_run_on_both_engines() -> None:
    """Table tests run on ``con`` (DuckDB and Spark). A test on the DuckDB-only ``duck``
    fixture carries ``@pytest.mark.duckdb_only(reason=...)`` (on the test or the module), and
    no test is both marked DuckDB only and run on ``con``."""
    wrong = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_mark = next((_duckdb_only([n.value]) for n in tree.body
                            if isinstance(n, ast.Assign)
                            and any(ast.unparse(t) == "pytestmark" for t in n.targets)), None)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            args = {a.arg for a in node.args.args}
            mark = _duckdb_only(node.decorator_list) or module_mark
            where = f"{path.relative_to(TESTS)}::{node.name}"
            if "duck" in args and mark is None:
                wrong.append(f"{where} uses duck without @pytest.mark.duckdb_only(reason=...)")
            if mark is not None and not _has_reason(mark):
                wrong.append(f"{where} is marked duckdb_only without a reason")
            if mark is not None and "con" in args:
                wrong.append(f"{where} runs on con but is marked duckdb_only")
    assert not wrong, "\n".join(wrong)


@pytest.fixture
def engine_under_test(con: object) -> str:
    from touchline import engine

    return engine.engine_name(con)  # type: ignore[arg-type]


@pytest.mark.duckdb_only(reason="checks that the mark keeps a test reaching con (through a "
                         "fixture) off Spark")
def test_a_duckdb_only_test_reaching_con_runs_on_duckdb_alone(engine_under_test: str) -> None:
    # its Spark variant is collected and skipped by tests/conftest.py with the mark's reason;
    # without that it would run here and fail
    assert engine_under_test == "duckdb"
