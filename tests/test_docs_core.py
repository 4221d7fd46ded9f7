"""The custom-solver example of docs/core.md runs and does what the text says."""

import pathlib
import re

import neurosolve as ns


def test_custom_solver_example_runs(capsys):
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "core.md").read_text()
    block = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class Richardson" in b]
    assert len(block) == 1
    env: dict = {}
    exec(compile(block[0], "docs/core.md", "exec"), env)
    assert capsys.readouterr().out.split() == ["CONVERGED", "CONVERGED", "True"]
    # the gate ran on the example's solver: its certificate meets its declared tolerance
    tight = env["tight"]
    assert tight.state.k > env["res"].state.k
    assert tight.certificate["relative_residual"] <= 1e-9
    assert isinstance(tight.state, env["RichardsonState"])
    assert tight.status is ns.Status.CONVERGED
