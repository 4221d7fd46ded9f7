"""LV-HBA solver: update order, reductions, backends, bad inputs, divergence."""

import math
import warnings

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.problems import Bilevel, bilevel_gallery, sets
from neurosolve.problems.bilevel import BilevelSolution, KronIdentity, QuadraticFunction
from neurosolve.solvers import LVHBA
from neurosolve.solvers.bilevel_reference import toy_numpy_loop


def one_d_problem():
    # F = 1/2 (x + 1)^2 + 1/2 (y - 2)^2, f = 1/2 y^2 - x y, g = y - x - 0.5 <= 0
    return Bilevel(F=lambda x, y: 0.5 * ((x + 1) ** 2).sum() + 0.5 * ((y - 2) ** 2).sum(),
                   f=lambda x, y: 0.5 * (y * y).sum() - (x * y).sum(),
                   g=lambda x, y: y - x - 0.5, x0=np.array([0.3]), y0=np.array([0.6]))


def test_one_step_update_order_by_hand():
    p = one_d_problem()
    a, b, e, g1, g2, c0 = 0.3, 0.2, 0.4, 2.0, 0.5, 2.0
    solver = LVHBA(alpha=a, beta=b, eta=e, gamma1=g1, gamma2=g2, c0=c0, p=0.3, r=10.0, maxiter=1)
    x, y, th, lam, z = 0.3, 0.6, 1.2, 0.2, 0.1
    res = ns.solve(p, solver, x0=BilevelSolution(np.array([x]), np.array([y]), np.array([z]),
                                               np.array([lam]), np.array([th])))
    # step 2 with the OLD theta, lambda
    d_th = (th - x) + lam + (th - y) / g1
    d_lam = -(th - x - 0.5) + (lam - z) / g2
    th1 = th - e * d_th
    lam1 = max(lam - e * d_lam, 0.0)
    # step 3 with the NEW theta, lambda and the OLD x, y, z;  c_0 = c0 * 1^p
    c = c0
    d_x = (x + 1) / c + (-y) - (-th1) - (-1.0) * lam1
    d_y = (y - 2) / c + (y - x) - (y - th1) / g1
    d_z = (z - lam1) / g2
    xt, yt = x - a * d_x, y - a * d_y
    excess = max(yt - xt - 0.5, 0.0)      # joint projection onto C = {y - x <= 0.5}
    x1, y1 = xt + excess / 2, yt - excess / 2
    z1 = min(max(z - b * d_z, 0.0), 10.0)
    assert excess > 0 and lam1 > 0  # projection and multiplier both active here
    sol = res.x
    assert np.allclose([sol.x[0], sol.y[0], sol.theta[0], sol.lam[0], sol.z[0]],
                       [x1, y1, th1, lam1, z1], rtol=0, atol=1e-14)


def test_reduces_to_moreau_envelope_iteration_bit_for_bit():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((3, 2))

    def F(x, y):
        return 0.5 * ((y - 1.0) ** 2).sum() + 0.5 * (x * x).sum()

    def gF(x, y):
        return x.copy(), y - 1.0

    def f(x, y):
        return 0.5 * ((y - M @ x) ** 2).sum()

    def gf(x, y):
        r = y - M @ x
        return -(M.T @ r), r

    x0, y0 = rng.standard_normal(2), rng.standard_normal(3)
    p = Bilevel(F, f, x0=x0, y0=y0, grad_F=gF, grad_f=gf)
    kw = dict(alpha=0.05, beta=0.05, eta=0.1, gamma1=2.0, c0=1.0, p=0.3)
    res = ns.solve(p, LVHBA(**kw, maxiter=50), backend="numpy")
    x, y, th = x0.copy(), y0.copy(), y0.copy()
    for k in range(50):
        c = 1.0 * (k + 1) ** 0.3
        th_new = th - 0.1 * (gf(x, th)[1] + (th - y) / 2.0)
        Fx, Fy = gF(x, y)
        fx, fy = gf(x, y)
        dx = Fx / c + fx - gf(x, th_new)[0]
        dy = Fy / c + fy - (y - th_new) / 2.0
        x, y, th = x - 0.05 * dx, y - 0.05 * dy, th_new
    assert np.array_equal(res.x.x, x) and np.array_equal(res.x.y, y) and np.array_equal(res.x.theta, th)


@pytest.mark.parametrize("toy", ["a", "b"])
def test_backends_match_the_straightforward_loop_over_100_steps(toy, backend):
    n = 8
    p = bilevel_gallery.toy_a(n=n) if toy == "a" else bilevel_gallery.toy_b(n=n)
    kw = dict(p.meta["solver_kwargs"], alpha=0.01, beta=0.02, eta=0.02)
    ref = toy_numpy_loop(toy, n, 100, **kw)
    if backend.library == "torch":
        p = p.to(library="torch", device=backend.device)
    res = ns.solve(p, LVHBA(**kw, maxiter=100), backend=backend.name)
    assert res.n_iter == 100
    if backend.name == "numba":
        assert res.stats["kernel"] == "numba-fused"
    got = {k: backend.to_numpy(getattr(res.x, k)) for k in ("x", "y", "theta", "lam", "z")}
    for k in got:
        assert np.allclose(got[k], ref[k], rtol=0, atol=1e-10), k
    assert len(res.history["stationarity"]) == 101


def test_straightforward_array_loop_matches_fused_kernel():
    from neurosolve.solvers.bilevel_reference import array_numpy_loop

    p = bilevel_gallery.toy_b(n=6)
    kw = dict(p.meta["solver_kwargs"], alpha=0.01, eta=0.01)
    ref = array_numpy_loop(p, 100, **kw)
    res = ns.solve(p, LVHBA(**kw, maxiter=100), backend="numba")
    for k in ("x", "y", "theta", "lam", "z"):
        assert np.allclose(getattr(res.x, k), ref[k], rtol=0, atol=1e-10), k


def test_fused_kernel_with_two_rows_box_y_and_halfspace_matches_numpy():
    # two (parallel) constraint rows, a box Y, C the half-space they describe
    from neurosolve.problems.bilevel import AffineFunction

    n = 5
    rng = np.random.default_rng(7)
    MF = np.array([[2.0, 0.5], [0.5, 1.0]])
    Mf = np.array([[1.0, -1.0], [-1.0, 2.0]])
    F = QuadraticFunction(KronIdentity(MF, n), rng.standard_normal(2 * n))
    f = QuadraticFunction(KronIdentity(Mf, n), rng.standard_normal(2 * n))
    a = rng.standard_normal(2 * n)
    g = AffineFunction(np.vstack([a, 2 * a]), np.array([0.5, 1.0]))
    p = Bilevel(F, f, g, x0=np.zeros(n), y0=np.zeros(n), Y=sets.Box(-0.2, 0.2, dim=n),
                C=sets.HalfSpace(a, 0.5))
    kw = dict(alpha=0.01, beta=0.05, eta=0.05, gamma1=2.0, gamma2=0.5, maxiter=80)
    start = BilevelSolution(np.zeros(n), np.zeros(n), z=np.ones(2), lam=np.ones(2))
    r1 = ns.solve(p, LVHBA(**kw), backend="numba", x0=start)
    r2 = ns.solve(p, LVHBA(**kw), backend="numpy", x0=start)
    assert r1.stats["kernel"] == "numba-fused"
    assert np.all(r2.history["lam_max"][:20] > 0)   # the multipliers are exercised
    for k in ("x", "y", "theta", "lam", "z"):
        assert np.allclose(getattr(r1.x, k), getattr(r2.x, k), rtol=1e-12, atol=1e-12), k
    for key in ("stationarity", "inner_residual", "upper_objective", "ll_gap_estimate", "lam_max"):
        assert np.allclose(r1.history[key], r2.history[key], rtol=1e-9, atol=1e-12), key


def test_autograd_callable_form_matches_array_form():
    import torch

    pa = bilevel_gallery.toy_b(n=5)
    pc = bilevel_gallery.toy_b(n=5, array_form=False)
    kw = dict(pa.meta["solver_kwargs"], alpha=0.01, eta=0.01)
    ra = ns.solve(pa, LVHBA(**kw, maxiter=100), backend="numba")
    rc = ns.solve(pc, LVHBA(**kw, maxiter=100))              # numpy data, autograd gradients
    rt = ns.solve(pc.to(library="torch"), LVHBA(**kw, maxiter=100))
    assert rc.stats["kernel"] == "numba"                      # not fusable: generic path
    assert isinstance(rt.x.x, torch.Tensor) and rt.x.x.dtype == torch.float64
    assert np.allclose(rc.x.x, ra.x.x, atol=1e-10) and np.allclose(rt.x.x.numpy(), ra.x.x, atol=1e-10)


def test_fused_kernel_with_boxes_matches_numpy():
    n = 6
    rng = np.random.default_rng(3)
    MF = np.array([[2.0, 0.5], [0.5, 1.0]])
    Mf = np.array([[1.0, -1.0], [-1.0, 2.0]])
    F = QuadraticFunction(KronIdentity(MF, n), rng.standard_normal(2 * n))
    f = QuadraticFunction(KronIdentity(Mf, n), rng.standard_normal(2 * n))
    p = Bilevel(F, f, x0=np.zeros(n), y0=np.zeros(n), X=sets.Box(-0.2, 0.3, dim=n),
                Y=sets.Box(-0.1, 0.1, dim=n))
    assert isinstance(p.C, sets.Box)
    kw = dict(alpha=0.05, beta=0.05, eta=0.1, gamma1=2.0, maxiter=60)
    r1 = ns.solve(p, LVHBA(**kw), backend="numba")
    r2 = ns.solve(p, LVHBA(**kw), backend="numpy")
    assert r1.stats["kernel"] == "numba-fused"
    assert np.allclose(r1.x.x, r2.x.x, atol=1e-12) and np.allclose(r1.x.theta, r2.x.theta, atol=1e-12)
    assert np.all(np.abs(r1.x.theta) <= 0.1 + 1e-15)
    for key in ("stationarity", "inner_residual", "upper_objective", "ll_gap_estimate"):
        assert np.allclose(r1.history[key], r2.history[key], rtol=1e-9, atol=1e-12), key


def test_float32_torch_stays_close():
    import torch

    p = bilevel_gallery.toy_b(n=5)
    kw = dict(p.meta["solver_kwargs"], alpha=0.01, eta=0.01)
    r64 = ns.solve(p, LVHBA(**kw, maxiter=500))
    r32 = ns.solve(p.to(library="torch", dtype=torch.float32), LVHBA(**kw, maxiter=500))
    assert r32.x.x.dtype == torch.float32
    assert np.max(np.abs(r32.x.x.numpy() - r64.x.x)) < 1e-4 * (1 + np.abs(r64.x.x).max())


def test_penalty_exponent_rules():
    with pytest.raises(ValueError, match="outside \\(0, 1/2\\).*theory=False"):
        LVHBA(p=0.5, theory=True)
    with pytest.warns(UserWarning, match="p = 0.5 is outside"):
        LVHBA(p=0.5)
    with pytest.warns(UserWarning, match="p = 0 is outside"):
        LVHBA(p=0)
    with pytest.raises(ValueError, match="p must be a finite non-negative"):
        LVHBA(p=-0.1)
    with pytest.raises(ValueError, match="alpha must be a finite positive"):
        LVHBA(alpha=0.0)
    with pytest.raises(ValueError, match="infeasible_start"):
        LVHBA(infeasible_start="ignore")
    assert LVHBA(c0=2.0, p=0.25).penalty(15) == pytest.approx(2.0 * 16 ** 0.25)


def test_infeasible_start_raises_or_projects():
    p = bilevel_gallery.toy_a(n=3)
    bad = (np.full(3, -1.0), np.zeros(6))               # sum < 0: outside C
    with pytest.raises(ValueError, match="not in C"):
        ns.solve(p, LVHBA(infeasible_start="raise", maxiter=1), x0=bad)
    with pytest.warns(UserWarning, match="projecting it onto C"):
        res = ns.solve(p, LVHBA(maxiter=1), x0=bad)
    assert res.certificate["set_violation"] <= 1e-12
    with pytest.raises(ValueError, match="x0\\[1\\] \\(y\\) has shape"):
        ns.solve(p, LVHBA(maxiter=1), x0=(np.zeros(3), np.zeros(5)))
    with pytest.raises(TypeError, match="LVHBA solves Bilevel"):
        ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), LVHBA())


@pytest.mark.parametrize("be", ["numba"])
def test_divergence_reported_not_nan(be):
    p = bilevel_gallery.toy_a(n=10)
    kw = dict(p.meta["solver_kwargs"], alpha=1e-2)          # 10x the stable alpha (eta = 1e-3)
    res = ns.solve(p, LVHBA(**kw, maxiter=20000), backend=be)
    assert res.status is Status.DIVERGED
    assert "Reduce alpha" in res.message
    assert np.all(np.isfinite(res.x.x)) and np.all(np.isfinite(res.x.y))


def test_warm_start_continues_the_penalty_schedule():
    p = bilevel_gallery.toy_b(n=4)
    s = LVHBA(**p.meta["solver_kwargs"], maxiter=200)
    full = ns.solve(p, s.replace(maxiter=400), backend="numba")
    half = ns.solve(p, s, backend="numba")
    rest = ns.solve(p, s, backend="numba", init=half.state)
    assert rest.n_iter == 200 and rest.state.k == 400
    assert np.allclose(rest.x.x, full.x.x, atol=1e-13)
    assert rest.stats["grad_f"] == 600


def test_result_contract():
    p = bilevel_gallery.toy_b(n=3)
    calls = []
    res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=30), callback=lambda v: calls.append(v.k))
    assert isinstance(res.x, BilevelSolution) and res.x.gamma1 == 1.0 and res.x.c > 1
    assert len(calls) == 31 and len(res.history["penalty"]) == 31
    assert res.history["penalty"][-1] == pytest.approx(30 ** 0.3)
    for key in ("ll_gap", "constraint_violation", "stationarity", "vgamma_gap", "upper_objective"):
        assert key in res.certificate
    assert math.isfinite(res.certificate["stationarity"])


def test_convergence_stop_rule_triggers():
    # unconstrained, strongly convex LL where F and f agree: converges to the joint minimizer
    p = Bilevel(F=lambda x, y: 0.5 * ((y - x) ** 2).sum() + 0.5 * (x * x).sum(),
                f=lambda x, y: 0.5 * ((y - x) ** 2).sum(), x0=np.ones(2), y0=np.zeros(2),
                grad_F=lambda x, y: (x - (y - x), y - x), grad_f=lambda x, y: (-(y - x), y - x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ns.solve(p, LVHBA(alpha=0.2, beta=0.2, eta=0.5, gamma1=1.0, p=0.0, tol_stat=1e-9,
                                tol_inner=1e-9, tol_gap=1e-12, maxiter=5000))
    assert res.status is Status.CONVERGED
    assert np.allclose(res.x.x, 0, atol=1e-7) and np.allclose(res.x.y, 0, atol=1e-7)


def test_implicit_hypergradient_runs_the_library_cg_and_matches_the_closed_form():
    """F = 1/2 ||y - a||^2, f = 1/2 y^T Q y - y^T B x: y*(x) = Q^-1 B x and
    dF/dx = B^T Q^-1 (y* - a). The adjoint solve is the library's CG (certified)."""
    import torch

    from neurosolve.solvers.bilevel_reference import implicit_hypergradient

    g = torch.Generator().manual_seed(0)
    G = torch.randn(6, 6, generator=g, dtype=torch.float64)
    Q = G @ G.T + 6 * torch.eye(6, dtype=torch.float64)
    B = torch.randn(6, 3, generator=g, dtype=torch.float64)
    a = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(3, generator=g, dtype=torch.float64)
    y = torch.linalg.solve(Q, B @ x)
    grad, info = implicit_hypergradient(lambda x, y: 0.5 * ((y - a) ** 2).sum(),
                                        lambda x, y: 0.5 * y @ Q @ y - y @ (B @ x), x, y)
    want = B.T @ torch.linalg.solve(Q, y - a)
    assert torch.allclose(grad, want, rtol=1e-8, atol=1e-10)
    assert info["cg_residual"] <= 1e-10 and 0 < info["cg_iters"] <= 6
