"""One contract test over every registered (solver, problem, tolerance) case."""

import importlib
import pathlib
import sys

import numpy as np
import pytest

import neurosolve as ns

sys.path.insert(0, str(pathlib.Path(__file__).parent))

_cases = []
for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    mod = importlib.import_module(path.stem)
    _cases.extend(mod.CASES)


def _lib_device(x):
    if hasattr(x, "device") and type(x).__module__.startswith("torch"):
        return ("torch", str(x.device), x.dtype)
    if isinstance(x, (tuple, list)):
        return tuple(_lib_device(v) for v in x)
    if isinstance(x, dict):
        return {k: _lib_device(v) for k, v in x.items()}
    return ("numpy", "cpu", np.asarray(x).dtype)


@pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])
def test_contract(case):
    problem = case.make_problem()
    calls = []
    res = ns.solve(problem, case.make_solver(), backend=case.backend,
                   callback=lambda v: calls.append(v.k), **case.solve_kwargs)
    assert isinstance(res, ns.Result)
    assert res.status is ns.Status.CONVERGED, res.message
    assert res.certificate[case.cert_key] <= case.cert_tol
    assert len(calls) == res.n_iter + 1 and calls[0] == 0
    for name, h in res.history.items():
        assert len(h) == res.n_iter + 1, name
    ref = getattr(problem, "b", None)
    if ref is None:
        ref = getattr(problem, "x0", None)
    if ref is not None and not isinstance(res.x, (tuple, list, dict)):
        assert _lib_device(res.x) == _lib_device(ref)
    if case.warm_start:
        warm = ns.solve(case.make_problem(), case.make_solver(), res.x, backend=case.backend,
                        **case.solve_kwargs)
        assert warm.success and warm.n_iter <= res.n_iter
