"""Shared fixtures: ``con`` runs each table-logic test on DuckDB and on Spark (local mode)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ibis.backends import BaseBackend

if TYPE_CHECKING:
    from playwright.sync_api import Browser

from factories import CHROMIUM, CHROMIUM_ARGS

from touchline import engine
from touchline.config import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
ENGINES = [pytest.param("duckdb"), pytest.param("spark", marks=pytest.mark.spark)]


def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'touchline[spark]')"
    if shutil.which("java") is None:
        return ("no Java runtime on PATH (make install-java / "
                "apt-get install openjdk-17-jre-headless)")
    return None


@pytest.fixture(scope="session")
def spark_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseBackend]:
    reason = _spark_missing()
    if reason:
        pytest.skip(reason)
    settings = Settings(
        # one task thread: two test workers each hold a session on the two cores, and two
        # threads per session only contended (a Spark prepare of the scenario's rows: the same
        # JVM CPU, 37-48 s instead of 70-84 s wall); two shuffle partitions keep every query
        # running on more than one partition
        database_url="spark://local[1]",
        spark_warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"),
        spark_shuffle_partitions=2,
        # test tables hold a handful of rows: compiling whole-stage code for each query costs
        # more than running it, and adaptive planning only adds passes; the JVM's optimising
        # compiler (C2) spent more CPU than it saved in a session of many tiny queries (the
        # Spark prepare tests ran about a quarter faster with C1 only); expressions are
        # interpreted, not compiled to Java (Janino) for each query: a Spark prepare of the
        # scenario's rows spent 32-38 s of JVM CPU instead of 46-48 s; compiled code is never
        # flushed from a code cache with room for all of it: the JVM flushed the methods it
        # thought cold (used ~50 MB of its 240 MB) and compiled them again, and every other
        # prepare of the scenario spent 19-21 s of JVM CPU instead of 13 (now 11.4-11.6 each)
        spark_conf={"spark.sql.codegen.wholeStage": "false",
                    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
                    "spark.sql.adaptive.enabled": "false",
                    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC "
                    "-XX:ReservedCodeCacheSize=1g -XX:-UseCodeCacheFlushing"},
    )
    backend = engine.connect(settings=settings)
    yield backend
    backend._session.stop()  # type: ignore[attr-defined]


def _warehouse(request: pytest.FixtureRequest, folder: Path) -> Iterator[BaseBackend]:
    """A fresh DuckDB warehouse, or the worker's Spark session with the tables made meanwhile
    dropped after (the session outlives a test)."""
    if request.param == "duckdb":
        backend = engine.connect(settings=Settings(database_url="duckdb://",
                                                   temp_directory=folder))
        yield backend
        backend.disconnect()
        return
    backend = request.getfixturevalue("spark_backend")
    before = set(backend.list_tables())
    yield backend
    for name in set(backend.list_tables()) - before:
        backend.drop_table(name, force=True)
    for row in backend._session.sql("SHOW VIEWS").collect():  # type: ignore[attr-defined]
        if row.isTemporary and row.viewName not in before:
            backend._session.catalog.dropTempView(row.viewName)  # type: ignore[attr-defined]


@pytest.fixture(params=ENGINES)
def con(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseBackend]:
    """A fresh warehouse on each engine; Spark tables made by a test are dropped after it."""
    yield from _warehouse(request, tmp_path)


@pytest.fixture(scope="module", params=ENGINES)
def module_con(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseBackend]:
    """One warehouse per engine for a whole module, for tests that only read what a
    module-scoped fixture loaded once (each Spark table load is a job and a Parquet write).

    Use it only in a module whose every engine-parametrised test reads the same warehouse:
    the Spark session is shared, so a function-scoped ``con`` test in the same module would
    write over the module's tables. A test that adds a table drops it again.
    """
    yield from _warehouse(request, tmp_path_factory.mktemp("module-warehouse"))


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[BaseBackend]:
    """A DuckDB warehouse file, for tests about the DuckDB engine only (its file on disk, its
    settings): each such test is marked ``@pytest.mark.duckdb_only(reason=...)`` saying why it
    cannot run on ``con`` (checked by tests/test_layout.py)."""
    backend = engine.connect(
        settings=Settings(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    )
    yield backend
    backend.disconnect()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for the module's tests (skips without ``/usr/bin/chromium``)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data folder {data} is absent (it sits beside the checkout)")
    return data



#: the fixtures whose ``spark`` parameter is the Spark variant of a test
ENGINE_FIXTURES = ("con", "module_con")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``@pytest.mark.duckdb_only(reason=...)`` that still reaches ``con`` or
    ``module_con`` (through a fixture built on them, say) runs on DuckDB alone: its Spark
    variant is skipped with the mark's reason, before any Spark session starts.

    On a worker of ``make test`` the tests are then put longest first (:func:`_longest_first`):
    the order they are collected in is the order the scheduler hands them out."""
    for item in items:
        mark = item.get_closest_marker("duckdb_only")
        params = getattr(getattr(item, "callspec", None), "params", {})
        if mark is not None and any(params.get(f) == "spark" for f in ENGINE_FIXTURES):
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
            item.add_marker(pytest.mark.skip(reason=f"DuckDB only: {reason}"))
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        items[:] = _longest_first(items, _files_with_module_fixtures(config.rootpath))


#: a test's rough wall time on a worker of ``make test``, by kind, in seconds, for handing
#: out the longest work first (2026-12-05, two workers on two cores): a Spark variant runs
#: jobs of a fraction of a second each, 2-50 s a test (most 3-10 s); a DuckDB or plain test
#: mostly well under a second; a ``slow`` test is an end-to-end run (the demo's simulate,
#: load, run and report: 40-110 s). Only the order depends on them, never a result.
ESTIMATED_SECONDS = {"skipped": 0.0, "other": 0.3, "spark": 5.0, "slow": 90.0}


def _estimated_seconds(item: pytest.Item) -> float:
    """:data:`ESTIMATED_SECONDS` of the kind ``item`` is."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if item.get_closest_marker("skip") is not None:
        return ESTIMATED_SECONDS["skipped"]
    if item.get_closest_marker("slow") is not None:
        return ESTIMATED_SECONDS["slow"]
    if (any(params.get(f) == "spark" for f in ENGINE_FIXTURES)
            or "spark_backend" in getattr(item, "fixturenames", ())):
        return ESTIMATED_SECONDS["spark"]
    return ESTIMATED_SECONDS["other"]


def _work_unit(nodeid: str, shared: set[str]) -> str:
    """What ``make test`` hands a worker at once: a whole file when it has a module-scoped
    fixture (``shared``), so the fixture is built once, else the single test."""
    path = nodeid.split("::", 1)[0]
    return path if path in shared else nodeid


def _longest_first(items: list[pytest.Item], shared: set[str]) -> list[pytest.Item]:
    """``items`` as work units (:func:`_work_unit`) in descending estimated time (the sum of
    :func:`_estimated_seconds` over a unit's tests), a unit's tests in their own order.

    Why: xdist handed out the files with a module-scoped fixture first, then single tests in
    file order, so the demo's end-to-end tests (tests/test_pipeline.py, over a minute each)
    and Spark tests came near the end, and one worker ran them alone while the other sat
    idle. Longest first, the tests handed out last are short DuckDB and plain ones, and the
    two workers finish close together.
    """
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_work_unit(item.nodeid, shared), []).append(item)
    ordered = sorted(units.values(), key=lambda unit: -sum(map(_estimated_seconds, unit)))
    return [item for unit in ordered for item in unit]


def _files_with_module_fixtures(root: Path) -> set[str]:
    """Test files (node-id paths) that define a fixture made once per module."""
    return {str(path.relative_to(root)) for path in (root / "tests").rglob("test_*.py")
            if 'scope="module"' in path.read_text()}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist knows no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``make test`` (``-n 2 --dist loadgroup``): each test goes to whichever worker is free,
    except the tests of a file with a module-scoped fixture (a Spark scenario, a served
    dashboard): a file's such tests stay on one worker, so its fixture is built once
    (:func:`_work_unit`).

    Why a scheduler of our own: ``--dist loadfile`` sent whole files to one worker, and the
    Spark prepare tests of one file kept it busy for minutes after the other had finished;
    xdist's ``loadgroup`` would do this from ``xdist_group`` marks, but under pytest 9 the
    group suffix it writes into the node id is lost, and nothing is grouped. Work units are
    handed out in the order the workers collected them, longest first
    (:func:`pytest_collection_modifyitems`), not xdist's most-tests-first
    (``loadscopereorder``): a file of forty DuckDB tests can take less time than one Spark
    test.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = _files_with_module_fixtures(config.rootpath)
    config.option.loadscopereorder = False  # read by the scheduler alone

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid, shared)

    return SharedFixtureScheduling(config, log)  # type: ignore[arg-type]
