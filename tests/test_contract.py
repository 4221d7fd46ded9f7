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


# -- core v2: certificate-gated CONVERGED, warm starts that cannot lie ---------------------

def _tight(case, solver):
    if case.tighten is not None:
        return case.tighten(solver)
    if not hasattr(solver, "rtol"):
        pytest.fail(f"{case.id}: the solver has no rtol; give the case a tighten= function")
    return solver.replace(rtol=solver.rtol / 100)


def _bounds_met(problem, solver, res):
    bounds = solver.tolerance(problem, res.state)
    assert bounds, f"{type(solver).__name__}.tolerance declares nothing: CONVERGED unverified"
    for key, bound in bounds.items():
        assert res.certificate[key] <= bound, (key, res.certificate[key], bound)
    return bounds


@pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])
def test_converged_meets_declared_tolerance(case):
    problem, solver = case.make_problem(), case.make_solver()
    res = ns.solve(problem, solver, backend=case.backend, **case.solve_kwargs)
    assert res.status is ns.Status.CONVERGED, res.message
    _bounds_met(problem, solver, res)


@pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])
def test_typed_state_holds_iteration_data_only(case):
    import dataclasses

    from neurosolve.core import Solver, State
    from neurosolve.operators import LinearOperator

    problem, solver = case.make_problem(), case.make_solver()
    res = ns.solve(problem, solver, backend=case.backend, **case.solve_kwargs)
    st = res.state
    assert dataclasses.is_dataclass(st) and type(st) is not State, type(st)
    extra = set(vars(st)) - {f.name for f in dataclasses.fields(st)}
    assert not extra, f"untyped state attributes {sorted(extra)}"
    for f in dataclasses.fields(st):
        v = getattr(st, f.name)
        assert not isinstance(v, (Solver, LinearOperator)), f.name
        assert not (callable(v) and not hasattr(v, "shape")), f"{f.name} holds a callable"


@pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])
def test_resume_with_tighter_tolerance_reaches_it(case):
    problem, solver = case.make_problem(), case.make_solver()
    first = ns.solve(problem, solver, backend=case.backend, **case.solve_kwargs)
    assert first.status is ns.Status.CONVERGED, first.message
    tight = _tight(case, solver)
    loose_bounds = solver.tolerance(problem, first.state)
    res = ns.solve(problem, tight, backend=case.backend, init=first.state, **case.solve_kwargs)
    assert res.status is ns.Status.CONVERGED, res.message
    bounds = _bounds_met(problem, tight, res)
    assert any(bounds[k] < loose_bounds[k] for k in bounds), "tighten did not tighten"
    # the new tolerance was honoured, not the old one
    assert any(res.certificate[k] <= bounds[k] < loose_bounds[k] for k in bounds)


@pytest.mark.parametrize("case", [c for c in _cases if c.new_M is not None],
                         ids=[c.id for c in _cases if c.new_M is not None])
def test_resume_with_new_preconditioner_uses_it(case):
    problem, solver = case.make_problem(), case.make_solver()
    first = ns.solve(problem, solver.replace(maxiter=3), backend=case.backend,
                     **case.solve_kwargs)
    calls = []
    res = ns.solve(problem, solver.replace(M=case.new_M(problem, calls)),
                   backend=case.backend, init=first.state, **case.solve_kwargs)
    assert calls, "the new M was never applied"
    assert res.status is ns.Status.CONVERGED, res.message
    _bounds_met(problem, solver, res)


@pytest.mark.parametrize("case", _cases, ids=[c.id for c in _cases])
def test_state_from_another_problem_is_refused(case):
    problem, solver = case.make_problem(), case.make_solver()
    res = ns.solve(problem, solver.replace(maxiter=2) if hasattr(solver, "maxiter") else solver,
                   backend=case.backend, **case.solve_kwargs)
    other = (case.other_problem or case.make_problem)()
    assert other is not problem
    with pytest.raises(ValueError, match="different problem"):
        ns.solve(other, solver, backend=case.backend, init=res.state, **case.solve_kwargs)
