"""EP gradient estimators: spec section 8.5 tests 1-6 and 9, numpy/torch parity, bad input.

Oracles: dense linear solves with numpy.linalg on the materialized Jacobian, central finite
differences of the loss at the fixed point, and the closed-form finite-difference forms of
the N = 1, 2 estimators.
"""

import numpy as np
import pytest

from neurosolve.core import Status
from neurosolve.neural.ep import (
    bp_adjoint, cauchy_response, dense_jacobian, dsilu, estimate_gradient, exact_response,
    free_phase, hard_sigmoid, layer_cosines, mlp, nudge_points, nudged_phase, sigmoid,
    spectral_radius, tanh,
)
from neurosolve.solvers.fixed_point import FixedPoint

TIGHT = FixedPoint(method="anderson", rtol=0, atol=1e-14, maxiter=3000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scale_recurrent(base, s):
    net = base.copy()
    for k in net.params:
        if (k.startswith("W_") and not k.startswith("W_input")) or k.startswith("B_"):
            net.params[k] = s * base.params[k]
    return net


def _rho(net, x, y):
    fp = free_phase(net, x, y, solver=TIGHT)
    Hp = dense_jacobian(net)
    D = net.activation.deriv(fp.u)
    return max(np.max(np.abs(np.linalg.eigvals(Hp * D[b][None, :]))) for b in range(len(x))), fp


def reference_net(angle=0.0, seed=0, target=0.72, batch=6, scale=None):
    """The spec's reference net: 20 -> 16 <-> 16 <-> 5, MSE, recurrent weights scaled so
    that the largest spectral radius of H'D over the batch is ``target`` (or by ``scale``)."""
    rng = np.random.default_rng(100 + seed)
    x = rng.random((batch, 20))
    y = rng.integers(0, 5, batch)
    base = mlp([20, 16, 16, 5], angle=angle, seed=seed, loss="mse")
    if scale is not None:
        net = _scale_recurrent(base, scale)
        return net, x, y, free_phase(net, x, y, solver=TIGHT)
    lo, hi = 0.1, 2.0
    for _ in range(18):
        s = 0.5 * (lo + hi)
        r, _ = _rho(_scale_recurrent(base, s), x, y)
        lo, hi = (lo, s) if r > target else (s, hi)
    net = _scale_recurrent(base, lo)
    r, fp = _rho(net, x, y)
    return net, x, y, fp


@pytest.fixture(scope="module")
def sym():
    return reference_net(angle=0.0)


def _dense_deltas(net, fp):
    """Oracle: delta_EP and delta_BP per sample by dense numpy solves."""
    Hp = dense_jacobian(net)
    n = Hp.shape[0]
    D = net.activation.deriv(fp.u)
    out = net.layout.slice(net.output_layer)
    c = np.zeros_like(fp.u)
    r_out = fp.r[:, out]
    c[:, out] = net.nudge(net.params, r_out, fp.y1h)
    dep = np.stack([-np.linalg.solve(np.eye(n) - D[b][:, None] * Hp, D[b] * c[b]) for b in range(len(D))])
    dbp = np.stack([-np.linalg.solve(np.eye(n) - D[b][:, None] * Hp.T, D[b] * c[b]) for b in range(len(D))])
    return dep, dbp


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# -- 1. fixed point ----------------------------------------------------------------------
def test_free_phase_residual_and_contraction(sym):
    net, x, y, fp = sym
    assert fp.report.ok
    G = net.drive(net.params, fp.rd, fp.ext)
    res = np.linalg.norm(net.layout.join(G) - fp.u, axis=1).max()
    assert res < 1e-12
    rho = spectral_radius(net, fp, iters=200)
    assert abs(rho.max() - 0.72) < 0.02


# -- 2. symmetric weights: EP == BP, gradient == finite differences ----------------------
def test_symmetric_ep_equals_implicit_adjoint(sym):
    net, x, y, fp = sym
    dep, dbp = _dense_deltas(net, fp)
    assert _rel(dep, dbp) < 1e-12  # the oracle itself: symmetric H' => equal
    d_ep, rep = exact_response(net, fp, solver=TIGHT)
    d_bp, rep2 = bp_adjoint(net, fp, solver=TIGHT)
    assert rep.ok and rep2.ok
    assert _rel(d_ep, dbp) < 1e-10
    assert _rel(d_bp, dbp) < 1e-10
    d_c, _, _ = cauchy_response(net, fp, 0.05, 16, solver=TIGHT)
    assert _rel(d_c, dbp) < 1e-10


def test_gradient_matches_central_finite_differences(sym, rng):
    net, x, y, _ = sym
    est = estimate_gradient(net, x, y, "ep_exact", solver=TIGHT)
    assert est.ok

    def loss(p):
        return float(free_phase(net, x, y, params=p, solver=TIGHT).loss.mean())

    h = 1e-6
    for k in ["W_input_h1", "W_h1_h2", "B_h2_h1", "W_h2_out", "B_out_h2", "b_h2", "b_out"]:
        P = net.params[k]
        idx = tuple(int(rng.integers(0, s)) for s in P.shape)
        p1, p2 = dict(net.params), dict(net.params)
        a, b = P.copy(), P.copy()
        a[idx] += h
        b[idx] -= h
        p1[k], p2[k] = a, b
        fd = (loss(p1) - loss(p2)) / (2 * h)
        g = est.grads[k][idx]
        assert abs(fd - g) <= 1e-6 * max(abs(fd), 1e-3), (k, fd, g)


# -- 3. Cauchy estimator error ~ beta^N ------------------------------------------------------
def test_cauchy_error_thresholds_and_slopes(sym):
    net, x, y, fp = sym
    ex, _ = exact_response(net, fp, solver=TIGHT)
    err = {}
    for beta in (0.02, 0.05, 0.1):
        for N in (1, 2, 4, 8, 16):
            if beta != 0.05 and N == 16:
                continue
            d, reps, _ = cauchy_response(net, fp, beta, N, solver=TIGHT)
            assert all(r.ok for r in reps)
            err[beta, N] = _rel(d, ex)
    assert err[0.05, 2] < 1e-2
    assert err[0.05, 4] < 1e-4
    assert err[0.05, 8] < 1e-6
    assert err[0.05, 16] < 1e-10
    for N in (1, 2, 4):
        slope = np.polyfit(np.log([0.02, 0.05, 0.1]), np.log([err[b, N] for b in (0.02, 0.05, 0.1)]), 1)[0]
        assert abs(slope - N) < 0.3, (N, slope)
    slope8 = np.log(err[0.1, 8] / err[0.05, 8]) / np.log(2)
    assert abs(slope8 - 8) < 0.6


# -- 4. N = 1, 2 are one-sided and symmetric differences -----------------------------------
def test_n1_n2_are_finite_differences(sym):
    net, x, y, fp = sym
    beta = 0.07
    rp, _ = nudged_phase(net, fp, beta, solver=TIGHT)
    rm, _ = nudged_phase(net, fp, -beta, solver=TIGHT)
    d1, reps1, _ = cauchy_response(net, fp, beta, 1, solver=TIGHT)
    d2, reps2, _ = cauchy_response(net, fp, beta, 2, solver=TIGHT)
    assert len(reps1) == 1 and len(reps2) == 2
    assert np.max(np.abs(d1 - (rp - fp.r) / beta)) < 1e-12
    assert np.max(np.abs(d2 - (rp - rm) / (2 * beta))) < 1e-12
    assert not np.iscomplexobj(d1) and not np.iscomplexobj(d2)


# -- 5. conjugate-symmetry shortcut ----------------------------------------------------------
@pytest.mark.parametrize("N", [3, 4, 5, 6])
def test_conjugate_shortcut_equals_full_sum(sym, N):
    net, x, y, fp = sym
    d_s, reps_s, _ = cauchy_response(net, fp, 0.1, N, solver=TIGHT)
    d_f, reps_f, imag = cauchy_response(net, fp, 0.1, N, conjugate_shortcut=False, solver=TIGHT)
    assert len(reps_s) == (N + 2) // 2 and len(reps_f) == N
    assert imag < 1e-12
    assert np.max(np.abs(d_s - d_f)) < 1e-12 * max(1.0, np.max(np.abs(d_f)))
    assert not np.iscomplexobj(d_s)


def test_nudge_points_on_circle():
    pts = nudge_points(0.3, 6)
    assert pts[0] == 0.3 and pts[3] == -0.3
    assert np.allclose(np.abs(pts), 0.3) and abs(sum(1 / p for p in pts)) < 1e-12


# -- 6. alignment degrades with asymmetry ----------------------------------------------------
def test_alignment_degrades_with_angle():
    means = {}
    for angle in (0.0, 30.0, 90.0):
        cs = []
        for seed in range(5):
            net, x, y, fp = reference_net(angle=angle, seed=seed, scale=0.6)
            assert fp.report.ok
            d_ep, _ = exact_response(net, fp, solver=TIGHT)
            d_bp, _ = bp_adjoint(net, fp, solver=TIGHT)
            c = layer_cosines(net, d_ep, d_bp)["h1"]
            cs.append(c)
            if angle >= 30:
                assert c < 1 - 1e-3
            if angle == 90 and seed == 0:
                # the Cauchy integral is exact for the EP quantity even without symmetry
                d4, _, _ = cauchy_response(net, fp, 0.05, 4, solver=TIGHT)
                assert _rel(d4, d_ep) < 1e-4
                dep, dbp = _dense_deltas(net, fp)
                assert _rel(d_ep, dep) < 1e-10 and _rel(d_bp, dbp) < 1e-10
        means[angle] = np.mean(cs)
    assert means[0.0] > 1 - 1e-10
    assert means[0.0] > means[30.0] > means[90.0]
    assert means[90.0] < 0.5


# -- 9. complex path -----------------------------------------------------------------------
@pytest.mark.parametrize("act", [sigmoid, dsilu, tanh])
def test_activation_conjugate_symmetry(act, rng):
    z = rng.standard_normal(50) + 0.3j * rng.standard_normal(50)
    assert np.allclose(act(np.conj(z)), np.conj(act(z)), atol=1e-15)
    h = 1e-6
    fd = (act(z + h) - act(z - h)) / (2 * h)
    fdi = (act(z + 1j * h) - act(z - 1j * h)) / (2j * h)
    assert np.allclose(fd, act.deriv(z), atol=1e-8)  # holomorphic: both directions agree
    assert np.allclose(fdi, act.deriv(z), atol=1e-8)
    import torch

    zt = torch.as_tensor(z)
    assert np.allclose(act(zt).numpy(), act(z), atol=1e-15)
    assert np.all(np.isfinite(act(np.array([-800.0 + 0.1j, 800.0 - 0.1j]))))


def test_complex_nudged_phases_converge(sym):
    net, x, y, fp = sym
    for beta in (0.05, 0.2):
        for b in nudge_points(beta, 6):
            r, rep = nudged_phase(net, fp, b, solver=TIGHT)
            assert rep.ok and rep.residual < 1e-10


def test_large_beta_reports_failure_not_zeros(sym):
    net, x, y, fp = sym
    solver = FixedPoint(method="damped", rtol=0, atol=1e-12, maxiter=300)
    est = estimate_gradient(net, x, y, "ep", beta=50.0, n_points=4, solver=solver, free=fp)
    assert not est.ok
    assert est.status in (Status.NONFINITE, Status.DIVERGED, Status.MAX_ITER)
    assert "nudged" in est.message and "phase" in est.message
    bad = [p for p in est.phases if not p.ok]
    assert bad and all("nudged" in p.name for p in bad)
    # never silently zeroed: either NaN stays NaN or the values are the (wrong) finite ones
    assert not all(np.all(g == 0) for k, g in est.grads.items() if not k.startswith("readout"))


# -- numpy (complex128) vs torch parity ------------------------------------------------------
def test_numpy_torch_agree(sym):
    import torch

    net, x, y, _ = sym
    nt = net.to("torch")
    xt = torch.as_tensor(x)
    for method, kw in (("bp", {}), ("ep_exact", {}), ("ep", dict(beta=0.1, n_points=2)),
                       ("ep", dict(beta=0.1, n_points=4))):
        a = estimate_gradient(net, x, y, method, solver=TIGHT, **kw)
        b = estimate_gradient(nt, xt, torch.as_tensor(y), method, solver=TIGHT, **kw)
        assert a.ok and b.ok
        assert isinstance(b.delta, torch.Tensor)
        assert _rel(b.delta.numpy(), a.delta) < 1e-10
        for k in a.grads:
            ga, gb = a.grads[k], b.grads[k].numpy()
            assert np.linalg.norm(ga - gb) <= 1e-10 * max(np.linalg.norm(ga), 1e-12), (method, k)


@pytest.mark.cuda
def test_cuda_parity(sym):
    """float64 on the GPU equals numpy to 1e-10; complex64 (float32 parameters) is within
    the documented 1e-3 relative tolerance of the float64 reference."""
    import torch

    net, x, y, _ = sym
    ref = estimate_gradient(net, x, y, "ep", beta=0.1, n_points=4, solver=TIGHT)
    for dtype, tol, solver in (
            (torch.float64, 1e-10, TIGHT),
            (torch.float32, 1e-3, FixedPoint(method="anderson", rtol=1e-6, atol=1e-7, maxiter=3000))):
        nt = net.to("torch", dtype=dtype, device="cuda")
        xt = torch.as_tensor(x, dtype=dtype, device="cuda")
        est = estimate_gradient(nt, xt, torch.as_tensor(y, device="cuda"), "ep", beta=0.1,
                                n_points=4, solver=solver)
        assert est.ok and est.delta.device.type == "cuda"
        assert _rel(est.delta.cpu().numpy(), ref.delta) < tol
        for k in ref.grads:
            g = est.grads[k].cpu().numpy()
            assert np.linalg.norm(g - ref.grads[k]) <= tol * max(np.linalg.norm(ref.grads[k]), 1e-12)


# -- bad input -------------------------------------------------------------------------------
def test_bad_inputs(sym):
    net, x, y, fp = sym
    hard = mlp([20, 8, 8, 5], activation=hard_sigmoid, seed=0)
    with pytest.raises(ValueError, match="not holomorphic"):
        estimate_gradient(hard, x, y, "ep", beta=0.1, n_points=3)
    est = estimate_gradient(hard, x, y, "ep", beta=0.05, n_points=2)  # real nudges are fine
    assert est.delta.shape == (6, 21)
    with pytest.raises(ValueError, match=r"x has shape \(6, 19\)"):
        estimate_gradient(net, x[:, :19], y, "bp")
    with pytest.raises(ValueError, match="y has shape"):
        estimate_gradient(net, x, y[:4], "bp")
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_gradient(net, x, y, "rbp")
    with pytest.raises(ValueError, match="beta must be a finite positive"):
        estimate_gradient(net, x, y, "ep", beta=-0.1)
    with pytest.raises(ValueError, match="beta must be a finite positive"):
        estimate_gradient(net, x, y, "ep", beta=0.1j)
    with pytest.raises(ValueError, match="n_points must be a positive integer"):
        estimate_gradient(net, x, y, "ep", n_points=0)
    with pytest.raises(TypeError, match="convert one of them"):
        import torch

        estimate_gradient(net, torch.as_tensor(x), y, "bp")
    with pytest.raises(ValueError, match="init has shape"):
        free_phase(net, x, y, init=np.zeros((6, 3)))
