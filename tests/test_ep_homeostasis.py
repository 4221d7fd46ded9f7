"""Homeostatic (Jacobian-asymmetry) loss: spec section 8.5 tests 7 and 8.

Oracles: the dense Jacobian's asymmetry 1/2||J - J^T||_F^2 / n and the Gaussian quadratic
form variance 2||M_s||_F^2 / n^2 (numpy on the materialized matrix), finite differences.
"""

import numpy as np
import pytest

from neurosolve.neural.ep import (
    bp_adjoint, conv_net, dense_jacobian, exact_asymmetry, exact_response, free_phase,
    homeostatic_loss, layer_cosines, loop_mlp, mlp, probe_asymmetry,
)
from neurosolve.solvers.fixed_point import FixedPoint

SOL = FixedPoint(method="anderson", rtol=0, atol=1e-12, maxiter=2000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dense_stats(Hp):
    n = Hp.shape[0]
    J = Hp - np.eye(n)
    exact = 0.5 * np.linalg.norm(J - J.T) ** 2 / n
    Ms = J.T @ J - 0.5 * (J @ J + J.T @ J.T)
    var1 = 2 * np.linalg.norm(Ms) ** 2 / n ** 2
    return exact, var1


@pytest.mark.parametrize("builder", [
    lambda: mlp([20, 16, 16, 5], angle=60, seed=3),
    lambda: loop_mlp([20, 16, 16, 5], seed=4),
])
def test_probe_matches_exact_within_standard_error(builder, rng):
    net = builder()
    x = rng.random((50, 20))
    r = net.activation(net.forward_state(net.params, x))  # H' is state independent here
    exact, var1 = _dense_stats(dense_jacobian(net))
    ex = homeostatic_loss(net, method="exact")
    assert abs(ex.value - exact) < 1e-12 * max(1, exact)
    pr = homeostatic_loss(net, r, method="probe", n_probes=20, rng=1)
    K = pr.samples.size
    assert K == 1000
    assert abs(pr.value - exact) < 5 * np.sqrt(var1 / K)
    assert abs(pr.stderr - np.sqrt(var1 / K)) < 0.2 * np.sqrt(var1 / K)


def test_loop_reduces_to_weight_decay():
    net = loop_mlp([20, 16, 16, 5], seed=0)
    Hp = dense_jacobian(net)
    assert np.abs(np.trace(Hp @ Hp)) < 1e-12  # a 3-cycle has no reciprocal pairs
    ex = exact_asymmetry(net)
    assert abs(ex.value - np.linalg.norm(Hp) ** 2 / net.n_state) < 1e-12
    for k in ("W_h1_h2", "W_h2_out", "B_out_h1"):
        assert np.allclose(ex.grads[k], 2 * net.params[k] / net.n_state, atol=1e-15)


def test_symmetric_jacobian_gives_zero(rng):
    net = mlp([20, 16, 16, 5], angle=0, seed=0)
    tied = mlp([20, 16, 16, 5], tied=True, seed=0)
    x = rng.random((10, 20))
    for n_ in (net, tied):
        r = n_.activation(n_.forward_state(n_.params, x))
        assert abs(homeostatic_loss(n_, method="exact").value) < 1e-25
        pr = homeostatic_loss(n_, r, method="probe", n_probes=3, rng=0)
        assert np.max(np.abs(pr.samples)) < 1e-12


def test_exact_gradient_formula_and_finite_differences():
    net = mlp([20, 16, 16, 5], angle=70, seed=2)
    n = net.n_state
    ex = exact_asymmetry(net)
    for W, B in (("W_h1_h2", "B_h2_h1"), ("W_h2_out", "B_out_h2")):
        D = net.params[W] - net.params[B].T
        assert np.allclose(ex.grads[W], 2 * D / n, atol=1e-15)
        assert np.allclose(ex.grads[B], -2 * D.T / n, atol=1e-15)
    assert np.all(ex.grads["W_input_h1"] == 0)
    h = 1e-6
    P = net.params["B_out_h2"]
    for idx in [(0, 0), (3, 2), (15, 4)]:
        p1, p2 = dict(net.params), dict(net.params)
        a, b = P.copy(), P.copy()
        a[idx] += h
        b[idx] -= h
        p1["B_out_h2"], p2["B_out_h2"] = a, b
        fd = (exact_asymmetry(net, p1).value - exact_asymmetry(net, p2).value) / (2 * h)
        assert abs(fd - ex.grads["B_out_h2"][idx]) < 1e-8


def test_probe_gradient_is_unbiased(rng):
    net = mlp([20, 16, 16, 5], angle=80, seed=5)
    x = rng.random((400, 20))
    r = net.activation(net.forward_state(net.params, x))
    pr = probe_asymmetry(net, r, n_probes=100, rng=7)
    ex = exact_asymmetry(net)
    for k in ("W_h1_h2", "B_h2_h1", "W_h2_out", "B_out_h2"):
        err = np.linalg.norm(pr.grads[k] - ex.grads[k]) / np.linalg.norm(ex.grads[k])
        assert err < 0.05, (k, err)


def test_numpy_torch_agree(rng):
    import torch

    net = mlp([20, 16, 16, 5], angle=90, seed=1)
    nt = net.to("torch")
    x = rng.random((8, 20))
    r = net.activation(net.forward_state(net.params, x))
    a = homeostatic_loss(net, r, method="probe", n_probes=4, rng=3)
    b = homeostatic_loss(nt, torch.as_tensor(r), method="probe", n_probes=4, rng=3)
    assert abs(a.value - b.value) < 1e-12 * abs(a.value)
    for k in a.grads:
        assert np.allclose(a.grads[k], b.grads[k].numpy(), rtol=1e-10, atol=1e-14)
    ea, eb = exact_asymmetry(net), exact_asymmetry(nt)
    assert abs(ea.value - eb.value) < 1e-12 * ea.value


def test_homeostasis_only_descent_restores_alignment(rng):
    """Spec 8.3: alpha = 90, 20-32-32-5, 200 samples, descent on the probe loss only."""
    net = mlp([20, 32, 32, 5], angle=90, seed=0, loss="mse", recurrent_scale=0.6)
    x = rng.random((200, 20))
    y = rng.integers(0, 5, 200)

    def mean_cos():
        fp = free_phase(net, x, y, solver=SOL)
        assert fp.report.ok
        d_ep, _ = exact_response(net, fp, solver=SOL)
        d_bp, _ = bp_adjoint(net, fp, solver=SOL)
        hid = slice(0, net.layout.offsets["out"])  # hidden layers (the output is aligned anyway)
        return layer_cosines(net, d_ep[:, hid], d_bp[:, hid])["all"], fp

    c0, fp = mean_cos()
    assert c0 < 0.2
    probe_rng = np.random.default_rng(0)
    for step in range(200):
        h = probe_asymmetry(net, fp.r[:1], n_probes=5, rng=probe_rng)  # 5 probes per step
        for k, g in h.grads.items():
            net.params[k] = net.params[k] - 0.5 * g
    c1, _ = mean_cos()
    assert c1 > 0.9, (c0, c1)


def test_conv_probe_matches_dense_asymmetry():
    import torch

    net = conv_net((1, 8, 8), (3, 3, 4), angle=60, seed=0)
    x = torch.as_tensor(np.random.default_rng(0).random((2, 1, 8, 8)))
    fp = free_phase(net, x, np.array([1, 2]), solver=SOL)
    vals, var = [], []
    for b in range(2):
        e, v = _dense_stats(dense_jacobian(net, r=fp.r[b]))
        vals.append(e)
        var.append(v)
    pr = homeostatic_loss(net, fp.r, n_probes=30, rng=0, with_grad=False)
    assert pr.method == "probe"
    K = pr.samples.size
    assert abs(pr.value - np.mean(vals)) < 5 * np.sqrt(np.mean(var) / K)
    pg = homeostatic_loss(net, fp.r, n_probes=1, rng=0)  # reverse mode through two JVPs
    assert abs(pg.value - pr.samples[:2].mean()) < 1e-12  # same probes, same values
    g = pg.grads["B_conv2_conv1"]
    assert torch.isfinite(g).all() and float(g.norm()) > 0
    sym = conv_net((1, 8, 8), (3, 3, 4), angle=0, seed=0)
    fs = free_phase(sym, x, np.array([1, 2]), solver=SOL)
    assert abs(homeostatic_loss(sym, fs.r, n_probes=3, rng=0).value) < 1e-12


def test_bad_inputs(rng):
    net = mlp([20, 16, 16, 5], seed=0)
    with pytest.raises(ValueError, match="method must be"):
        homeostatic_loss(net, method="hutchinson")
    with pytest.raises(ValueError, match="needs the free-phase activities"):
        homeostatic_loss(net, method="probe")
    with pytest.raises(ValueError, match="n_probes must be a positive integer"):
        homeostatic_loss(net, np.zeros((2, net.n_state)), method="probe", n_probes=0)
    with pytest.raises(ValueError, match=r"r has shape \(2, 5\)"):
        homeostatic_loss(net, np.zeros((2, 5)), method="probe")
    with pytest.raises(TypeError, match="use method='probe'"):
        exact_asymmetry(conv_net((1, 8, 8), (2, 2, 2)))


@pytest.mark.parametrize("shape", [(5, 3), (130, 70), (64, 64)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_pair_asymmetry_kernel_matches_numpy(shape, order, rng):
    from neurosolve.neural.ep._kernels import pair_asymmetry, pair_asymmetry_numpy

    M = np.asarray(rng.standard_normal(shape), order=order)
    Mt = np.asarray(rng.standard_normal(shape[::-1]), order=order)
    v, gM, gMt = pair_asymmetry(M, Mt, 0.3)
    w, hM, hMt = pair_asymmetry_numpy(M, Mt, 0.3)
    assert abs(v - w) < 1e-12 * w
    assert np.allclose(gM, hM, atol=1e-15) and np.allclose(gMt, hMt, atol=1e-15)
