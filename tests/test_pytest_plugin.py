"""The ``convergence`` pytest plugin (neurosolve.pytest_plugin), tested with ``pytester``."""

import importlib.metadata
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

from neurosolve import pytest_plugin as plugin

pytest_plugins = ["pytester"]
pytest.importorskip("pytest_benchmark")

ROOT = pathlib.Path(__file__).resolve().parents[1]

USER_BENCH = '''
import os
import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC


def _prob():
    g = P.sphere((24, 24), walls={"y+": "dirichlet"})
    return g.system(P.rhs_blobs(g, seed=0))


def test_pcg(convergence):
    prob = _prob()
    # the "slowed" version: a worse preconditioner (none at all)
    M = None if os.environ.get("NS_SLOW") == "1" else PC.IC0(prob)
    res = convergence(prob, ns.solvers.CG(rtol=1e-8, M=M), rounds=2, warmup_rounds=1)
    assert res.success
    assert convergence.extra_info["iterations"] == res.n_iter


def test_callable(convergence):
    prob = _prob()
    out = convergence(lambda: ("tag", ns.solve(prob, ns.solvers.CG(rtol=1e-8))))
    assert out[0] == "tag"
'''

FIELDS = ("iterations", "matvecs", "counters", "status", "certificate", "residual_history",
          "residual_history_iterations", "rate", "time_per_iteration_s", "metric")


@pytest.fixture(scope="module", autouse=True)
def _warm_imports():
    """Run the user file's solves once here: in-process pytester runs unload the modules
    they import first, and some extension modules (numpy.fft) cannot load twice."""
    ns_globals: dict = {}
    exec(compile(USER_BENCH, "<user>", "exec"), ns_globals)
    prob = ns_globals["_prob"]()
    ns_globals["ns"].solve(prob, ns_globals["ns"].solvers.CG(rtol=1e-8, M=ns_globals["PC"].IC0(prob)))
    ns_globals["ns"].solve(prob, ns_globals["ns"].solvers.CG(rtol=1e-8))


def _plugin_args():
    """Load the plugin by its module unless an installed distribution registers it (pytest
    scans every distribution's entry points, as here)."""
    for dist in importlib.metadata.distributions():
        if any(ep.group == "pytest11" and ep.value == "neurosolve.pytest_plugin"
               for ep in dist.entry_points):
            return []
    return ["-p", "neurosolve.pytest_plugin"]


def _run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", *_plugin_args(), *args)


def _bench_json(pytester, name, *args):
    path = pytester.path / name
    r = _run(pytester, f"--benchmark-json={path}", *args)
    r.assert_outcomes(passed=2)
    return json.loads(path.read_text())


def test_entry_point_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {"neurosolve": "neurosolve.pytest_plugin"}


def test_extra_info_fields_in_benchmark_json(pytester):
    pytester.makepyfile(test_user=USER_BENCH)
    data = _bench_json(pytester, "out.json")
    by = {b["name"]: b for b in data["benchmarks"]}
    assert set(by) == {"test_pcg", "test_callable"}
    for b in by.values():
        info = b["extra_info"]
        for k in FIELDS:
            assert k in info, k
        assert info["status"] == "CONVERGED"
        assert info["metric"] == "relative_residual"
        assert info["matvecs"] == info["counters"]["matvecs"] > 0
        assert info["certificate"]["relative_residual"] <= 1e-8
        hist = info["residual_history"]
        assert 2 <= len(hist) <= plugin.MAX_HISTORY_POINTS
        assert len(info["residual_history_iterations"]) == len(hist)
        assert hist[0] == pytest.approx(1.0) and hist[-1] <= 1e-8
        assert 0 < info["rate"] < 1
        assert info["time_per_iteration_s"] == pytest.approx(
            b["stats"]["min"] / info["iterations"])
    assert by["test_pcg"]["stats"]["rounds"] == 2
    # the JSON is strict JSON (no NaN / Infinity)
    json.dumps(data, allow_nan=False)


def test_compare_flags_a_slowed_solver_and_not_an_identical_run(pytester, monkeypatch, capsys):
    pytester.makepyfile(test_user=USER_BENCH)
    base = _bench_json(pytester, "base.json")
    same = _bench_json(pytester, "same.json")
    monkeypatch.setenv("NS_SLOW", "1")
    slow = _bench_json(pytester, "slow.json")

    assert plugin.compare(base, same) == []
    regs = plugin.compare(base, slow)
    kinds = {(r.name.rsplit("::", 1)[-1], r.kind) for r in regs}
    assert ("test_pcg", "iterations") in kinds and ("test_pcg", "rate") in kinds
    assert not any(r.name.endswith("test_callable") for r in regs)  # unchanged test
    # and the other way round (faster) is no regression
    assert plugin.compare(slow, base) == []

    # the CLI-friendly entry point: exit status 1 on a regression, 0 otherwise
    p = pytester.path
    assert plugin.main([str(p / "base.json"), str(p / "same.json")]) == 0
    assert plugin.main([str(p / "base.json"), str(p / "slow.json")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "iterations" in out


def test_benchmark_only_runs_convergence_tests(pytester):
    pytester.makepyfile(test_user=USER_BENCH + "\n\ndef test_plain():\n    pass\n")
    r = _run(pytester, "--benchmark-only")
    r.assert_outcomes(passed=2, skipped=1)


@pytest.mark.parametrize("flag", [["--benchmark-skip"], ["-p", "no:benchmark"],
                                  ["--benchmark-disable"]])
def test_runs_once_and_records_without_the_timer(pytester, flag):
    pytester.makepyfile(test_user=USER_BENCH + '''

def test_untimed(convergence):
    res = convergence(_prob(), ns.solvers.CG(rtol=1e-8))
    info = convergence.extra_info
    assert info["iterations"] == res.n_iter and 0 < info["rate"] < 1
    assert info["time_per_iteration_s"] > 0
''')
    r = _run(pytester, *flag)
    r.assert_outcomes(passed=3)


def test_tests_without_the_fixture_are_unchanged(pytester):
    pytester.makepyfile(test_plain="def test_a():\n    pass\n\ndef test_b(benchmark):\n"
                                   "    benchmark(lambda: None)\n")
    for flags, outcome in ((["--benchmark-skip"], dict(passed=1, skipped=1)),
                           (["--benchmark-only"], dict(passed=1, skipped=1)),
                           ([], dict(passed=2))):
        _run(pytester, *flags).assert_outcomes(**outcome)


def test_import_is_cheap():
    """Loading the plugin (what every pytest run does once neurosolve is installed) adds
    only itself and standard-library modules to ``import pytest, neurosolve``: no torch."""
    code = ("import sys, pytest, neurosolve; before = set(sys.modules); "
            "import neurosolve.pytest_plugin; new = set(sys.modules) - before; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "bad = sorted(m for m in new if m != 'neurosolve.pytest_plugin' "
            "and m.split('.')[0].lstrip('_') not in sys.stdlib_module_names "
            "and m.split('.')[0] not in sys.stdlib_module_names); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_rate_and_downsample():
    vals = [0.5 ** k for k in range(40)]
    rate, n = plugin.asymptotic_rate(vals)
    assert rate == pytest.approx(0.5) and n == 20
    rate, _ = plugin.asymptotic_rate([1.0, 0.1, 0.0, float("nan"), 0.01, 0.001])
    assert rate is not None and rate < 1
    assert plugin.asymptotic_rate([1.0])[0] is None
    idx, kept = plugin.downsample(list(range(1000)))
    assert len(kept) <= plugin.MAX_HISTORY_POINTS and idx[0] == 0 and idx[-1] == 999
    assert plugin.downsample([1, 2, 3]) == ([0, 1, 2], [1, 2, 3])


def test_compare_status_and_rate_to_one():
    def js(**info):
        return {"benchmarks": [{"name": "t", "fullname": "f::t", "extra_info": info}]}

    base = js(iterations=10, rate=0.5, status="CONVERGED")
    regs = plugin.compare(base, js(iterations=10, rate=1.0, status="MAX_ITER"))
    assert {r.kind for r in regs} == {"status", "rate"}
    assert plugin.compare(base, js(iterations=11, rate=0.49, status="CONVERGED")) == []
    assert plugin.compare(base, js(iterations=12, rate=0.5, status="CONVERGED"))[0].kind == \
        "iterations"
    assert math.isfinite(plugin.compare(base, js(iterations=10, rate=0.7))[0].current)


def test_docs_core_example_runs(pytester):
    text = (ROOT / "docs" / "core.md").read_text()
    sec = text.split("## Benchmarking convergence with pytest-benchmark", 1)[1]
    block = re.findall(r"```python\n(.*?)```", sec, re.S)[0]
    pytester.makepyfile(bench_poisson=block)
    path = pytester.path / "base.json"
    _run(pytester, "bench_poisson.py", "--benchmark-only",
         f"--benchmark-json={path}").assert_outcomes(passed=1)
    info = json.loads(path.read_text())["benchmarks"][0]["extra_info"]
    assert info["status"] == "CONVERGED" and 0 < info["rate"] < 1
    assert plugin.main([str(path), str(path)]) == 0
