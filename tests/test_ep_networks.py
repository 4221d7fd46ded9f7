"""Networks (dense, loop, conv), diagnostics and the training loop."""

import numpy as np
import pytest

from neurosolve.neural.ep import (
    TrainConfig, asymmetry_ratio, bp_adjoint, conv_net, dense_jacobian, estimate_gradient,
    exact_response, free_phase, jac_sym, layer_cosines, load_digits_split, loop_mlp, mlp,
    softmax_pool, softmax_pool_vjp, spectral_radius, train, weight_angle,
)
from neurosolve.neural.ep.stability import contraction_penalty
from neurosolve.solvers.fixed_point import FixedPoint

SOL = FixedPoint(method="anderson", rtol=0, atol=1e-12, maxiter=2000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mlp_block_structure_and_jvp_vjp_match_dense(rng):
    net = mlp([7, 5, 4, 3], angle=45, seed=0)
    assert net.n_state == 12
    blocks = {(post, pre) for post, pre, _ in net.block_structure()}
    assert blocks == {("h2", "h1"), ("out", "h2"), ("h1", "h2"), ("h2", "out")}
    Hp = dense_jacobian(net)
    lay = net.layout
    # zero diagonal blocks and no h1<->out block: block tridiagonal
    for a in lay.names:
        assert np.all(Hp[lay.slice(a), lay.slice(a)] == 0)
    assert np.all(Hp[lay.slice("h1"), lay.slice("out")] == 0)
    v = rng.standard_normal((3, 12))
    r = {n: None for n in lay.names}
    assert np.allclose(lay.join(net.jvp(net.params, r, lay.split(v))), v @ Hp.T)
    assert np.allclose(lay.join(net.vjp(net.params, r, lay.split(v))), v @ Hp)
    loop = loop_mlp([7, 5, 4, 3], seed=0)
    Hl = dense_jacobian(loop)
    assert np.all(Hl[lay.slice("h2"), lay.slice("out")] == 0)  # no reciprocal pairs
    assert np.all(Hl[lay.slice("h1"), lay.slice("out")] != 0)


def test_angle_init_and_diagnostics(rng):
    sym = mlp([20, 16, 16, 5], angle=0, seed=0)
    ind = mlp([20, 16, 16, 5], angle=90, seed=0)
    assert weight_angle(sym) < 1e-6
    assert 75 < weight_angle(ind) < 105
    assert abs(jac_sym(dense_jacobian(sym)) - 1) < 1e-12
    assert asymmetry_ratio(dense_jacobian(sym)) < 1e-12
    assert asymmetry_ratio(dense_jacobian(ind)) > 0.7
    assert np.isnan(weight_angle(loop_mlp([20, 16, 16, 5])))
    tied = mlp([20, 16, 16, 5], tied=True, seed=0)
    assert not any(k.startswith("B_") for k in tied.params)
    assert np.allclose(dense_jacobian(tied), dense_jacobian(tied).T)


def test_spectral_radius_matches_eigvals(rng):
    net = mlp([20, 16, 16, 5], angle=90, seed=0, recurrent_scale=0.7)
    x = rng.random((4, 20))
    fp = free_phase(net, x, np.zeros(4, int), solver=SOL)
    est = spectral_radius(net, fp, iters=300)
    Hp = dense_jacobian(net)
    D = net.activation.deriv(fp.u)
    ref = np.array([np.max(np.abs(np.linalg.eigvals(Hp * D[b][None, :]))) for b in range(4)])
    assert np.allclose(est, ref, rtol=0.05)
    cp = contraction_penalty(net, fp, target=0.0, iters=100, rng=0)
    assert np.allclose(cp.gains, ref, rtol=0.05)
    # gradient of 1/2 mean g^2 (target 0) vs finite differences along the fixed directions
    assert set(cp.grads) >= {"W_h1_h2", "B_h2_h1"} and np.all(cp.grads["W_input_h1"] == 0)


def test_softmax_pool_is_holomorphic_and_vjp_is_transpose():
    import torch

    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    w = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=g)
    vr = v.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((softmax_pool(vr) * w).sum(), vr)
    assert torch.allclose(softmax_pool_vjp(v, w), ref, atol=1e-14)
    vc = v + 0.1j * torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    assert torch.allclose(softmax_pool(vc.conj()), softmax_pool(vc).conj(), atol=1e-14)
    assert torch.allclose(softmax_pool(v + 5.0), softmax_pool(v) + 5.0, atol=1e-12)


def test_conv_net_symmetric_ep_equals_bp_and_complex_nudges():
    import torch

    x = torch.as_tensor(np.random.default_rng(1).random((3, 1, 8, 8)))
    y = np.array([0, 3, 7])
    sym = conv_net((1, 8, 8), (3, 3, 4), angle=0, seed=0)
    fp = free_phase(sym, x, y, solver=SOL)
    assert fp.report.ok and fp.report.residual < 1e-11
    d_ep, _ = exact_response(sym, fp, solver=SOL)
    d_bp, _ = bp_adjoint(sym, fp, solver=SOL)
    assert float(torch.linalg.norm(d_ep - d_bp) / torch.linalg.norm(d_bp)) < 1e-9
    H = dense_jacobian(sym, r=fp.r[0])
    assert np.linalg.norm(H - H.T) < 1e-12 * np.linalg.norm(H)
    asym = conv_net((1, 8, 8), (3, 3, 4), angle=60, seed=0)
    est = estimate_gradient(asym, x, y, "ep", beta=0.05, n_points=4, solver=SOL, reference=True)
    ex = estimate_gradient(asym, x, y, "ep_exact", solver=SOL, free=est.free)
    assert est.ok and ex.ok
    assert float(torch.linalg.norm(est.delta - ex.delta) / torch.linalg.norm(ex.delta)) < 1e-5
    cos = layer_cosines(asym, ex.delta, est.delta_bp)
    assert cos["conv1"] < 0.99
    assert set(est.grads) >= {"W_input_conv1", "B_conv2_conv1", "readout_W"}


def test_network_bad_inputs():
    with pytest.raises(ValueError, match="sizes must be"):
        mlp([10, 5])
    with pytest.raises(ValueError, match="activation must be one of"):
        mlp([4, 3, 2], activation="relu")
    with pytest.raises(ValueError, match="loss must be"):
        mlp([4, 3, 2], loss="hinge")
    with pytest.raises(ValueError, match="divisible"):
        conv_net((1, 6, 6), (2, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="sgd")
    with pytest.raises(ValueError, match="lr must be"):
        TrainConfig(lr=-1.0)


def test_training_smoke_loss_decreases_and_beats_chance():
    Xtr, ytr, Xte, yte = load_digits_split()
    net = mlp([64, 16, 16, 10], angle=90, seed=0, recurrent_scale=0.6)
    res = train(net, Xtr[:400], ytr[:400], Xte[:120], yte[:120], method="ep_exact", homeostasis=10.0,
                contraction=100.0, lr=1e-2, readout_lr_scale=10.0, batch_size=20, epochs=3,
                progress=False)
    h = res.history
    assert res.steps == 60
    assert h["train_loss"][-1] < h["train_loss"][0] - 0.1
    assert h["test_acc"][-1] > 0.2  # chance is 0.1
    assert h["cos_h1"][-1] > h["cos_h1"][0]  # homeostasis raises alignment
    assert min(h["free_converged"]) >= 0.99 and sum(h["skipped_steps"]) == 0
    for k in ("rho_max", "angle", "jac_sym", "homeo", "test_converged"):
        assert len(h[k]) == 4


def test_training_skips_nonfinite_steps():
    Xtr, ytr, _, _ = load_digits_split()
    net = mlp([64, 8, 8, 10], angle=90, seed=0)
    res = train(net, Xtr[:40], ytr[:40], method="ep", beta=1e6, n_points=2, epochs=1,
                batch_size=20, diagnostics=False, progress=False,
                solver=FixedPoint(method="damped", maxiter=20))
    assert res.history["failed_phases"][-1] > 0
    with pytest.raises(RuntimeError, match="non-finite"):
        train(net, Xtr[:40], ytr[:40], method="ep", beta=1e300, n_points=2, epochs=1,
              batch_size=20, diagnostics=False, progress=False, strict=True,
              solver=FixedPoint(method="damped", maxiter=20))


def test_contraction_penalty_gradient_matches_finite_differences(rng):
    net = mlp([20, 16, 16, 5], angle=90, seed=1, recurrent_scale=1.2)
    x = rng.random((3, 20))
    fp = free_phase(net, x, np.zeros(3, int), solver=SOL)
    v0 = rng.standard_normal(fp.u.shape)
    cp = contraction_penalty(net, fp, target=0.3, iters=0, v0=v0)
    assert cp.value > 0
    # the gradient is at fixed states and fixed direction v: compare with finite
    # differences that keep v (iters=0, same v0)
    h = 1e-6
    for k, idx in (("W_h1_h2", (2, 3)), ("B_out_h2", (1, 4))):
        p1, p2 = dict(net.params), dict(net.params)
        a, b = net.params[k].copy(), net.params[k].copy()
        a[idx] += h
        b[idx] -= h
        p1[k], p2[k] = a, b
        f1 = contraction_penalty(net, fp, target=0.3, iters=0, v0=v0, params=p1).value
        f2 = contraction_penalty(net, fp, target=0.3, iters=0, v0=v0, params=p2).value
        fd = (f1 - f2) / (2 * h)
        assert abs(fd - cp.grads[k][idx]) < 1e-6 * max(abs(fd), 1e-4), (k, fd, cp.grads[k][idx])


def test_public_names_resolve():
    import neurosolve

    assert neurosolve.neural.ep.mlp is mlp
    assert neurosolve.solvers.FixedPoint is FixedPoint
    from neurosolve.demos.ep import run  # noqa: F401


def test_study_collapse_measure_counts_drops_after_epoch_3_only():
    from neurosolve.demos.ep import max_drop

    acc = [0.1, 0.9, 0.3, 0.8, 0.85, 0.79, 0.9]   # index = epoch; 0.9 -> 0.3 is before epoch 3
    assert max_drop(acc, after=3) == pytest.approx(0.06)
    assert max_drop(acc, after=0) == pytest.approx(0.6)
    assert max_drop([0.5, 0.6, 0.7, 0.8, 0.9], after=3) == 0.0


def test_conv_net_forward_and_feedback_scales():
    torch = pytest.importorskip("torch")
    base = conv_net((1, 8, 8), (3, 3, 4), angle=90, seed=0)
    net = conv_net((1, 8, 8), (3, 3, 4), angle=90, seed=0, forward_scale=3.0, feedback_scale=0.5)
    for k, v in base.params.items():
        f = 3.0 if k.startswith("W_") else 0.5 if k.startswith("B_") else 1.0
        assert torch.allclose(net.params[k], f * v), k
    with pytest.raises(ValueError, match="feedback_scale must be a finite positive"):
        conv_net((1, 8, 8), (3, 3, 4), feedback_scale=0.0)


def test_conv_study_helpers_layer_rates_and_standardized_images():
    pytest.importorskip("torch")
    from neurosolve.demos.ep import layer_lr_scales, load_conv_digits
    from neurosolve.neural.ep.trainer import TrainConfig, _param_lr_scales

    net = conv_net((1, 8, 8), (3, 4), angle=90, seed=0)
    sc = layer_lr_scales(net, (25.0, 15.0))
    assert sc == {"W_input_conv1": 25.0, "b_conv1": 25.0, "W_conv1_conv2": 15.0,
                  "b_conv2": 15.0, "B_conv2_conv1": 15.0}
    f = _param_lr_scales(net.params, TrainConfig(lr_scales=sc, readout_lr_scale=5.0))
    assert f["readout_W"] == 5.0 and f["B_conv2_conv1"] == 15.0
    with pytest.raises(ValueError, match="one entry per layer"):
        layer_lr_scales(net, (1.0,))
    Xtr, ytr, Xte, yte = load_conv_digits()
    assert tuple(Xtr.shape[1:]) == (1, 8, 8) and len(ytr) == Xtr.shape[0]
    assert abs(float(Xtr.mean())) < 1e-12 and float(Xtr.std()) == pytest.approx(1 / 1.5)
