"""Every ```python block of README.md and docs/*.md runs.

A page's blocks run in order in one namespace (a page reads like a notebook: later blocks
use the names of earlier ones); a block that starts with ``>>>`` is a transcript and runs
as a doctest (ELLIPSIS, NORMALIZE_WHITESPACE). Pages are globbed at collection, so a new
page is covered without editing this file. Pages whose blocks a dedicated test already
runs (with assertions on their output) are listed in ``OWN_TEST``.
"""

import doctest
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
OWN_TEST = {
    "docs/implicit.md": "tests/test_docs_implicit.py",
    "docs/sweeps.md": "tests/test_sweep.py",
}
PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
         if p.relative_to(ROOT).as_posix() not in OWN_TEST]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_pages_have_blocks():
    assert len(PAGES) >= 8
    assert sum(len(BLOCK.findall(p.read_text())) for p in PAGES) >= 25
    for page, test in OWN_TEST.items():
        assert (ROOT / page).exists() and (ROOT / test).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_blocks_run(page, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)  # files a block writes land here
    name = page.relative_to(ROOT).as_posix()
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(BLOCK.findall(page.read_text())):
        where = f"{name}[{i}]"
        if block.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(block, namespace, where, name, 0)
            runner = doctest.DocTestRunner(
                optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            report = []
            runner.run(test, out=report.append)
            assert runner.failures == 0, f"{where}: doctest failed\n" + "".join(report)
        else:
            try:
                exec(compile(block, where, "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - re-raised with the block named
                raise AssertionError(f"{where} raised {type(exc).__name__}: {exc}") from exc


def _modules_with_examples():
    out = []
    for path in sorted((ROOT / "neurosolve").rglob("*.py")):
        if ">>>" in path.read_text():
            rel = path.relative_to(ROOT).with_suffix("")
            out.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return out


@pytest.mark.parametrize("module", _modules_with_examples())
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    import importlib

    pytest.importorskip("torch")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module} has '>>>' but no doctest was found"
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
