"""Every Python block of docs/implicit.md runs (each block is self-contained)."""

import pathlib
import re

import pytest

pytest.importorskip("torch")

TEXT = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "implicit.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_there_are_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_block_runs(i, capsys):
    exec(compile(BLOCKS[i], f"docs/implicit.md[{i}]", "exec"), {})
    if i == 0:
        assert capsys.readouterr().out.split() == ["CG", "2"]
