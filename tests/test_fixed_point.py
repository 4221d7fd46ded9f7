"""FixedPointProblem + FixedPoint solver (damped, Anderson) on the core protocol."""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.problems.fixed_point import FixedPointProblem
from neurosolve.solvers.fixed_point import FixedPoint


def _linear_map(rng, n=12, rho=0.8, complex_=False):
    A = rng.standard_normal((n, n))
    if complex_:
        A = A + 1j * rng.standard_normal((n, n))
    A *= rho / np.max(np.abs(np.linalg.eigvals(A)))
    b = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0)
    return A, b


@pytest.mark.parametrize("method", ["damped", "anderson"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("complex_", [False, True])
def test_linear_fixed_point_matches_scipy_solve(rng, method, library, complex_):
    A, b = _linear_map(rng, complex_=complex_)
    z_true = scipy.linalg.solve(np.eye(len(b)) - A, b)
    if library == "torch":
        import torch

        At, bt = torch.as_tensor(A), torch.as_tensor(b)
        prob = FixedPointProblem(lambda z: At @ z + bt, torch.zeros_like(bt))
    else:
        prob = FixedPointProblem(lambda z: A @ z + b, np.zeros_like(b))
    calls = []
    res = ns.solve(prob, FixedPoint(method=method, rtol=0, atol=1e-11, maxiter=5000),
                   callback=lambda v: calls.append(v.k))
    assert res.status is Status.CONVERGED
    x = res.x if library == "numpy" else res.x.numpy()
    assert type(res.x) is type(prob.z0)
    assert np.linalg.norm(x - z_true) < 1e-9 * np.linalg.norm(z_true) * 100
    assert res.certificate["residual"] <= 1e-11
    assert len(res.history["residual"]) == res.n_iter + 1
    assert len(calls) == res.n_iter + 1
    assert res.stats["F_evals"] == res.n_iter + 1


def test_anderson_needs_fewer_iterations_than_damped(rng):
    Q = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    A = Q @ np.diag(np.linspace(-0.95, 0.97, 40)) @ Q.T
    b = rng.standard_normal(40)
    prob = FixedPointProblem(lambda z: A @ z + b, np.zeros(40))
    rd = ns.solve(prob, FixedPoint(method="damped", atol=1e-10, maxiter=20000))
    ra = ns.solve(prob, FixedPoint(method="anderson", atol=1e-10, memory=10))
    assert rd.success and ra.success
    assert ra.n_iter < rd.n_iter / 3


def test_nonlinear_cos_matches_scipy_fixed_point():
    ref = scipy.optimize.fixed_point(np.cos, 0.5, xtol=1e-14)
    for m in ("damped", "anderson"):
        res = ns.solve(FixedPointProblem(np.cos, np.zeros(1)), FixedPoint(method=m, rtol=0, atol=1e-13))
        assert res.success
        assert abs(res.x[0] - ref) < 1e-12


def test_default_solver_is_damped_half():
    prob = FixedPointProblem(lambda z: 0.5 * z + 1.0, np.zeros(3))
    from neurosolve.solvers import default_solver
    s = default_solver(prob)
    assert s.method == "damped" and s.damping == 0.5
    res = ns.solve(prob)
    assert res.success and np.allclose(res.x, 2.0)
    assert ns.solvers.FixedPoint is FixedPoint


def test_batched_rows_converge_independently_and_freeze(rng):
    rows = []
    for i in range(5):
        A, b = _linear_map(rng, n=6, rho=0.3 + 0.15 * i)
        rows.append((A, b))
    As = np.stack([a for a, _ in rows])
    bs = np.stack([b for _, b in rows])
    F = lambda Z: np.einsum("bij,bj->bi", As, Z) + bs  # noqa: E731
    prob = FixedPointProblem(F, np.zeros((5, 6)), batched=True)
    res = ns.solve(prob, FixedPoint(method="anderson", rtol=0, atol=1e-12))
    assert res.success
    for i, (A, b) in enumerate(rows):
        assert np.allclose(res.x[i], np.linalg.solve(np.eye(6) - A, b), atol=1e-10)
    frac = res.history["converged_fraction"]
    assert frac[0] == 0 and frac[-1] == 1 and np.all(np.diff(frac) >= 0)


def test_max_iter_reports_residual_and_fraction():
    prob = FixedPointProblem(lambda z: 0.999 * z + 1.0, np.zeros(4))
    res = ns.solve(prob, FixedPoint(method="damped", maxiter=5))
    assert res.status is Status.MAX_ITER and not res.success
    assert "5 iterations" in res.message and "residual" in res.message
    with pytest.raises(ns.SolveError):
        res.raise_for_status()


def test_diverging_map_is_reported():
    res = ns.solve(FixedPointProblem(lambda z: 3.0 * z + 1.0, np.zeros(3)),
                   FixedPoint(method="damped", damping=1.0))
    assert res.status is Status.DIVERGED
    assert "not contracting" in res.message


def test_nan_map_is_reported_not_hidden():
    def F(z):
        out = 0.5 * z + 1
        if z[0] > 1.5:
            out[0] = np.nan
        return out

    res = ns.solve(FixedPointProblem(F, np.zeros(2)), FixedPoint())
    assert res.status is Status.NONFINITE
    assert "NaN" in res.message


def test_warm_start_resumes_and_progress_bar():
    prob = FixedPointProblem(lambda z: 0.9 * z + 1.0, np.zeros(2))
    r1 = ns.solve(prob, FixedPoint(method="damped", maxiter=10))
    assert r1.status is Status.MAX_ITER
    r2 = ns.solve(prob, FixedPoint(method="damped", atol=1e-10), init=r1.state, progress=True)
    assert r2.success and np.allclose(r2.x, 10.0)


def test_bad_inputs():
    with pytest.raises(TypeError, match="F must be callable"):
        FixedPointProblem(3.0, np.zeros(2))
    with pytest.raises(TypeError, match="z0 must be a numpy array or torch tensor"):
        FixedPointProblem(np.cos, [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        FixedPointProblem(np.cos, np.array([np.nan]))
    with pytest.raises(ValueError, match="same shape"):
        FixedPointProblem(lambda z: np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="damping"):
        FixedPoint(damping=1.5)
    with pytest.raises(ValueError, match="method"):
        FixedPoint(method="broyden")
    with pytest.raises(ValueError, match="memory"):
        FixedPoint(method="anderson", memory=0)
    with pytest.raises(TypeError, match="FixedPoint solves FixedPointProblem"):
        ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), FixedPoint())
