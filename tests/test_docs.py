"""Every example in the docstrings runs (STYLE.md: examples in the docs are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import touchline


def _modules() -> list[str]:
    names = ["touchline"]
    for info in pkgutil.walk_packages(touchline.__path__, prefix="touchline."):
        names.append(info.name)
    return sorted(names)


def _with_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return bool(doctest.DocTestFinder().find(module)) and any(
        test.examples for test in doctest.DocTestFinder().find(module)
    )


@pytest.mark.parametrize("name", [n for n in _modules() if _with_examples(n)])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0


def test_every_toml_example_in_the_docs_is_valid_settings(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A settings example a user copies from the docs loads (docs/*.md ```toml blocks whose
    first line names touchline.toml; the others are mapping files, tested with ingest)."""
    import re
    from pathlib import Path

    from touchline.config import load_settings

    docs = Path(__file__).resolve().parents[1] / "docs"
    blocks = [(page.name, block) for page in sorted(docs.glob("*.md"))
              for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)
              if "touchline.toml" in block.splitlines()[0]]
    assert any(name == "journeys.md" for name, _ in blocks)
    for name, block in blocks:
        config = tmp_path / "touchline.toml"
        config.write_text(block)
        monkeypatch.setenv("TOUCHLINE_CONFIG", str(config))
        # secrets go in the environment, as docs/privacy.md says, never in the file
        monkeypatch.setenv("TOUCHLINE_PII_HASH_KEY", "a-secret-of-16-chars")
        settings = load_settings()
        assert settings is not None, name


DOCS = Path(__file__).resolve().parents[1]
# the pages whose python blocks a test of their own runs (each beside the fixtures it needs)
RUN_ELSEWHERE = {"docs/attribution.md": "tests/attribution/test_attribution_api.py",
                 "docs/dashboard.md": "tests/serve/test_report.py",
                 "docs/kpis.md": "tests/metrics/test_kpis.py",
                 "docs/exports.md": "tests/exports/test_crm.py",
                 "docs/privacy.md": "tests/test_docs.py"}


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_every_page_with_python_blocks_has_a_test_that_runs_them() -> None:
    pages = {str(p.relative_to(DOCS)) for p in [DOCS / "README.md", *DOCS.glob("docs/*.md")]
             if _python_blocks(p)}
    assert pages <= set(RUN_ELSEWHERE) | {"README.md", "docs/journeys.md"}, (
        "a page gained python examples: run them in test_readme_and_journeys_examples_run "
        "or name the test that does in RUN_ELSEWHERE")
    for page, test in RUN_ELSEWHERE.items():
        if page in pages:
            assert page.split("/")[-1] in (DOCS / test).read_text(), f"{test} reads no {page}"


@pytest.mark.duckdb_only(reason="the examples open the DuckDB file touchline.duckdb in the "
                         "working folder, as a user's first warehouse is")
def test_readme_and_journeys_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """README's and docs/journeys.md's python blocks, as a user pastes them, on John's
    prepared journey (and a path file where the demo writes one)."""
    from factories import JOHN, JOHN_DEAL, arrow_table, event_rows

    from touchline import engine, store
    from touchline.config import Settings
    from touchline.prepare import run_prepare

    monkeypatch.chdir(tmp_path)
    url = "duckdb:///touchline.duckdb"
    settings = Settings(database_url=url)
    con = engine.connect(url, settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    run_prepare(con, settings)
    con.disconnect()
    (tmp_path / "demo-data" / "b2c").mkdir(parents=True)
    (tmp_path / "demo-data" / "b2c" / "paths.csv").write_text(
        "path,total_conversions,total_conversion_value,total_null\n"
        "Organic Search > Paid Search,3,300,5\nDirect,1,50,9\nPaid Search > Email,2,80,4\n")
    journeys = _python_blocks(DOCS / "docs" / "journeys.md")
    readme = _python_blocks(DOCS / "README.md")
    assert journeys and readme
    for name, blocks in (("docs/journeys.md", journeys), ("README.md", readme)):
        for block in blocks:
            exec(compile(block, name, "exec"), {})


def test_python_examples_in_the_privacy_doc_run(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/privacy.md's python blocks run as written (each asserts what it shows)."""
    page = DOCS / "docs" / "privacy.md"
    blocks = _python_blocks(page)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the spool folder and any file the example makes
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})
