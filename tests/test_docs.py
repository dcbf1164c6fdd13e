"""Every example in the docstrings runs (STYLE.md: examples in the docs are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

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


def test_python_examples_in_the_privacy_doc_run(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """docs/privacy.md's ```python blocks run as written (each asserts what it shows)."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the spool folder and any file the example makes
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})
