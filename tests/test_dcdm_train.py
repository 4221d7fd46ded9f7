"""DCDM training pieces: data generators, the stencil inside the loss, the loss, training.

Oracles: numpy.linalg.eigvalsh (Ritz values), the gallery's CSR matrices (stencil, box
eigenvectors), scipy.fft (spectral energy), the DCDM solver's own first step (loss).
"""

import json

import numpy as np
import pytest
import torch
from scipy import fft

import neurosolve as ns
from neurosolve.neural.dcdm_data import (BoxSampler, FilterSampler, MixtureSampler,
                                         RitzSampler, box_eigenvalues, lanczos_ritz)
from neurosolve.neural.dcdm_train import (StencilGeometry, TrainConfig, dcdm_loss,
                                          reference_losses, stencil_apply, train)
from neurosolve.problems import poisson


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- Lanczos / Ritz -------------------------------------------------------------------------
def _fluid_block(grid):
    A = grid.matrix()
    fl = grid.fluid.ravel()
    return A, A[fl][:, fl].toarray()


def test_lanczos_to_invariance_finds_exact_eigenvalues():
    grid = poisson.ellipsoids((10, 9), n=2, seed=4, walls="dirichlet")
    A, Af = _fluid_block(grid)
    lam = np.linalg.eigvalsh(Af)
    theta, Q = lanczos_ritz(A, A.shape[0], seed=0)
    # every Ritz value is an eigenvalue, the extremes are found
    assert np.min(np.abs(theta[:, None] - lam[None, :]), axis=1).max() < 1e-8 * lam.max()
    assert abs(theta[0] - lam[0]) < 1e-9 and abs(theta[-1] - lam[-1]) < 1e-9
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-10)
    R = A @ Q - Q * theta  # Ritz pairs are eigenpairs once the space is invariant
    assert np.abs(R).max() < 1e-7


def test_partial_lanczos_orthonormal_bracketed_and_null_space_dropped():
    grid = poisson.sphere((16, 16), radius=4)  # Neumann: singular
    A, Af = _fluid_block(grid)
    lam = np.linalg.eigvalsh(Af)
    theta, Q = lanczos_ritz(A, 60, seed=1)
    assert Q.shape == (256, 60) and np.all(np.diff(theta) > 0)
    np.testing.assert_allclose(Q.T @ Q, np.eye(60), atol=1e-10)
    assert theta.min() >= lam[1] - 1e-10 and theta.max() <= lam[-1] + 1e-10  # lam[0] = 0
    assert np.abs(Q.sum(axis=0)).max() < 1e-8  # orthogonal to the constant null vector
    assert not np.any(Q[~grid.fluid.ravel()])


def test_ritz_sampler_bias_norm_and_determinism():
    grid = poisson.sphere((16, 16), radius=4)
    s = RitzSampler.from_matrix(grid.matrix(), (16, 16), 100, shift=5, seed=3, dtype=np.float64)
    assert s.cut == 55
    batch = s.sample(64, step=7)
    b = batch.b.reshape(64, -1).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-6)
    c2 = (b @ s.Q) ** 2
    frac = c2[:, :55].sum(1) / c2.sum(1)
    expected = 55 * 81 / (55 * 81 + 45)  # 0.990 for the paper's 9x amplitude
    assert abs(frac.mean() - expected) < 0.004
    np.testing.assert_array_equal(s.sample(64, step=7).b, batch.b)
    assert not np.array_equal(s.sample(64, step=8).b, batch.b)


@pytest.mark.parametrize("bc", ["neumann", "dirichlet"])
def test_box_modes_are_the_gallery_eigenvectors(bc):
    shape = (6, 5, 4)
    A = poisson.box(shape, walls=bc).matrix()
    lam = box_eigenvalues(shape, bc)
    for k in [(0, 0, 1), (2, 3, 1), (5, 4, 3)]:
        c = np.zeros(shape)
        c[k] = 1.0
        v = (fft.idctn(c, type=2, norm="ortho") if bc == "neumann"
             else fft.idstn(c, type=1, norm="ortho")).ravel()
        np.testing.assert_allclose(A @ v, lam[k] * v, atol=1e-12)


def test_box_sampler_spectrum():
    s = BoxSampler((32, 32), "neumann", low_fraction=0.55, factor=9.0, seed=1)
    b = s.sample(32, step=0).b.astype(np.float64)
    np.testing.assert_allclose(np.sqrt((b ** 2).sum(axis=(1, 2))), 1.0, rtol=1e-6)
    assert np.abs(b.sum(axis=(1, 2))).max() < 1e-5  # no constant (null) component
    c2 = fft.dctn(b, type=2, norm="ortho", axes=(1, 2)) ** 2
    low = s.amplitude == 9.0
    frac = c2[:, low].sum(1) / c2.reshape(32, -1).sum(1)
    assert abs(frac.mean() - 0.99) < 0.004
    # the amplified modes are the lowest eigenvalues
    assert s.eigenvalues[low].max() <= s.eigenvalues[~low & (s.amplitude > 0)].min()


def test_filter_sampler_applies_h_of_a():
    """On the empty box, h(A) acts on each DCT eigenvector as h(lambda) (oracle: scipy.fft
    eigenvectors of the gallery matrix); samples are unit-norm, mean-free, deterministic."""
    grid = poisson.box((24, 20))
    fs = FilterSampler(grid.matrix(), (24, 20), nullspace=grid.nullspace(), seed=2)
    lam = box_eigenvalues((24, 20))
    for k in [(1, 0), (3, 5), (20, 17), (23, 19)]:
        c = np.zeros((24, 20))
        c[k] = 1.0
        v = fft.idctn(c, type=2, norm="ortho").ravel()
        np.testing.assert_allclose(fs.apply(v[:, None])[:, 0], fs.h(lam[k]) * v, atol=1e-4)
    assert fs.h(0.0) == pytest.approx(9.0, abs=1e-6) and fs.h(fs.lmax) == pytest.approx(1.0, abs=1e-6)
    x = fs.sample(16, step=3)
    b = x.b.reshape(16, -1).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-6)
    assert np.abs(b.sum(1)).max() < 1e-5
    np.testing.assert_array_equal(fs.sample(16, step=3).b, x.b)
    g = poisson.pool((16, 16), obstacles=2, seed=1)
    y = FilterSampler(g.matrix(), (16, 16)).sample(4).b.reshape(4, -1)
    assert not np.any(y[:, ~g.fluid.ravel()])


def test_mixture_sampler():
    a = BoxSampler((8, 8), seed=1)
    b = BoxSampler((8, 8), "dirichlet", seed=2)
    m = MixtureSampler([a, b], weights=[1, 3], seed=0)
    x = m.sample(200, step=4)
    assert set(np.unique(x.geometry)) == {0, 1} and 0.6 < x.geometry.mean() < 0.9
    np.testing.assert_array_equal(m.sample(200, step=4).b, x.b)
    with pytest.raises(ValueError, match="one grid shape"):
        MixtureSampler([a, BoxSampler((8, 10))])


# -- stencil and loss --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(12, 10), (8, 6, 10)])
def test_stencil_equals_gallery_matrix(shape):
    rng = np.random.default_rng(0)
    grids = [poisson.random_geometry(shape, seed=s) for s in range(6)]
    grids += [poisson.box(shape, walls="neumann"), poisson.box(shape, walls="dirichlet")]
    for g in grids:
        A = g.matrix()
        geom = StencilGeometry.from_matrix(A, shape)
        v = rng.standard_normal(A.shape[0])
        np.testing.assert_allclose(geom.apply_numpy(v), A @ v, atol=1e-12)
    for bc in ("neumann", "dirichlet"):
        v = rng.standard_normal(int(np.prod(shape)))
        np.testing.assert_allclose(StencilGeometry.box(shape, bc).apply_numpy(v),
                                   poisson.box(shape, walls=bc).matrix() @ v, atol=1e-12)


def test_non_stencil_matrix_is_rejected():
    import scipy.sparse as sp

    A = sp.random(16, 16, density=0.3, random_state=0)
    A = A + A.T + 10 * sp.eye(16)
    A = A - 2 * sp.triu(A, 1) - 2 * sp.tril(A, -1)  # negative off-diagonals, still not a stencil
    with pytest.raises(ValueError, match="not a 5/7-point Laplacian"):
        StencilGeometry.from_matrix(A, (4, 4))


def test_loss_is_the_one_step_residual_and_scale_invariant():
    grid = poisson.ellipsoids((16, 16), n=2, seed=5, walls="dirichlet")
    A = grid.matrix()
    b = poisson.rhs_noise(grid, seed=2)
    f = np.random.default_rng(3).standard_normal(256) * grid.fluid.ravel()
    res = ns.solve(grid.system(b), ns.solvers.DCDM(model=lambda r: f, maxiter=1, augment=False,
                                                             guard=0.0))
    r1 = res.history["residual_norm"][1]
    geom = StencilGeometry.from_matrix(A, (16, 16))
    d, m = geom.tensors("cpu", torch.float64)
    bt = torch.as_tensor(b).reshape(1, 1, 16, 16)
    vals = []
    for c in (1.0, 7.3, -0.01):
        ft = c * torch.as_tensor(f).reshape(1, 1, 16, 16)
        vals.append(float(dcdm_loss(ft, bt, stencil_apply(ft, d, m))))
    assert abs(vals[0] - r1 ** 2) <= 1e-12
    np.testing.assert_allclose(vals, vals[0], rtol=1e-12)


def test_unrolled_loss_is_the_solvers_k_step_residual():
    """k unrolled training steps reproduce k paper-steps of the solver (float64 network)."""
    from neurosolve.neural import DCDMNet
    from neurosolve.neural.training import LossBatch, unrolled_loss

    torch.manual_seed(0)
    net = DCDMNet(dim=2, channels=4).double().eval()
    grid = poisson.pool((16, 16), obstacles=1, seed=3)
    b = poisson.rhs_blobs(grid, seed=1)
    res = ns.solve(grid.system(b), ns.solvers.DCDM(model=net, dtype=torch.float64, maxiter=3,
                                                    augment=False, guard=0.0,
                                                    recompute_every=0))
    geom = StencilGeometry.from_matrix(grid.matrix(), (16, 16))
    d, m = geom.tensors("cpu", torch.float64)
    bt = torch.as_tensor(b).reshape(1, 1, 16, 16)
    with torch.no_grad():
        for k in (1, 2, 3):
            batch = LossBatch(bt, lambda f: stencil_apply(f, d, m), m[None, None],
                              d[None, None], net)
            val = float(unrolled_loss(batch, k))
            assert val == pytest.approx(res.history["residual_norm"][k] ** (2.0 / k), rel=1e-9)


def test_smooth_envelope():
    from neurosolve.neural.dcdm_data import smooth_envelope

    rng = np.random.default_rng(0)
    w = smooth_envelope(rng, (32, 32), 4, strength=2.0)
    assert w.shape == (4, 32, 32) and np.all(w > 0)
    z = np.log(w) - np.log(w).mean(axis=(1, 2), keepdims=True)
    lag1 = (z[:, 1:] * z[:, :-1]).sum() / (z * z).sum()
    assert lag1 > 0.8  # smooth: neighbours strongly correlated (white noise: ~0)
    np.testing.assert_array_equal(smooth_envelope(rng, (8, 8), 2, 0.0), np.ones((2, 8, 8)))


# -- training -----------------------------------------------------------------------------------
def test_training_on_a_small_box_beats_untrained_and_jacobi():
    """The issue's check: training on a 16^3 box (a small network, 120 steps to fit the
    test budget) lowers the held-out loss below the untrained network's and below a Jacobi
    step's one-step residual."""
    cfg = TrainConfig(dim=3, grid=16, variant="64", channels=4, data="box", steps=120,
                      batch=2, lr=1e-2, lr_final=1e-3, seed=0)
    torch.manual_seed(0)
    untrained = cfg.network()
    res = train(cfg, progress=False)
    from neurosolve.neural.dcdm_train import build_data

    data = build_data(cfg)
    before = reference_losses(*data, net=untrained)
    after = reference_losses(*data, net=res.model)
    assert after["network"] < 0.5 * before["network"]
    assert after["network"] < 0.5 * after["jacobi"]
    assert len(res.losses) == 120 and res.steps_done == 120


def test_checkpoint_resume_is_exact_and_plots(tmp_path):
    cfg = TrainConfig(dim=2, grid=16, channels=4, steps=8, batch=2, seed=1)
    full = train(cfg, progress=False, checkpoint=tmp_path / "a.pt", checkpoint_every=3)
    part = train(cfg, progress=False, checkpoint=tmp_path / "b.pt", stop_after=5)
    assert part.stopped_early and part.steps_done == 5
    rest = train(cfg, progress=False, checkpoint=tmp_path / "b.pt", resume=True,
                 loss_png=tmp_path / "loss.png")
    assert rest.steps_done == 8
    np.testing.assert_allclose(rest.losses, full.losses, rtol=1e-5)
    for k, v in full.model.state_dict().items():
        np.testing.assert_allclose(rest.model.state_dict()[k].numpy(), v.numpy(), rtol=1e-4,
                                   atol=1e-6)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    other = TrainConfig(dim=2, grid=16, channels=4, steps=8, batch=3, seed=1)
    with pytest.raises(ValueError, match="different config"):
        train(other, progress=False, checkpoint=tmp_path / "b.pt", resume=True)


def test_cli_trains_and_exports_a_loadable_model(tmp_path):
    from neurosolve.cli_train import build_parser, main
    from neurosolve.neural import available_pretrained, load_pretrained

    args = build_parser().parse_args([
        "--dim", "2", "--grid", "16", "--channels", "4", "--steps", "4", "--batch", "2",
        "--out", str(tmp_path / "run"), "--name", "tiny", "--weights-dir", str(tmp_path / "w"),
        "--no-progress"])
    assert main(args) == 0
    assert available_pretrained(tmp_path / "w") == ["tiny"]
    net = load_pretrained("tiny", directory=tmp_path / "w")
    info = net.manifest
    assert info["command"].startswith("neurosolve train dcdm --dim 2 --grid 16")
    assert info["training"]["steps"] == 4 and info["architecture"]["channels"] == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps_done"] == 4
    assert (tmp_path / "run" / "loss.png").exists()
    # the same network by path: the exported file, the checkpoint, the run folder
    by_file = load_pretrained(tmp_path / "w" / "tiny.pt")
    by_ckpt = load_pretrained(str(tmp_path / "run" / "checkpoint.pt"))
    by_dir = load_pretrained(tmp_path / "run")
    assert by_file.manifest["command"] == info["command"] and by_ckpt.manifest["step"] == 4
    for k, v in by_ckpt.state_dict().items():
        assert torch.equal(by_dir.state_dict()[k], v)
        # the exported file is float16-rounded
        torch.testing.assert_close(by_file.state_dict()[k], v, rtol=2e-3, atol=1e-4)
    grid = poisson.sphere((16, 16))
    prob = grid.system(poisson.rhs_blobs(grid, seed=0))
    a = ns.solve(prob, ns.solvers.DCDM(model=tmp_path / "w" / "tiny.pt", rtol=1e-6))
    b = ns.solve(prob, ns.solvers.DCDM(model=by_file, rtol=1e-6))
    assert a.success and a.n_iter == b.n_iter


def test_cli_stop_at_step_keeps_the_schedule_and_exports(tmp_path):
    """--stop-at-step ends a 6-step schedule after 3 steps; the losses are the first 3 of
    the full run (same learning rates) and the planned stop still exports the weights."""
    from neurosolve.cli_train import build_parser, main

    common = ["--dim", "2", "--grid", "16", "--channels", "4", "--steps", "6", "--batch", "2",
              "--no-progress", "--checkpoint-every", "1"]
    main(build_parser().parse_args(common + ["--out", str(tmp_path / "full")]))
    args = build_parser().parse_args(common + [
        "--out", str(tmp_path / "part"), "--stop-at-step", "3", "--name", "part",
        "--weights-dir", str(tmp_path / "w")])
    assert main(args) == 0
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["losses"]
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["losses"]
    np.testing.assert_allclose(part.numpy(), full.numpy()[:3], rtol=1e-5)
    info = json.loads((tmp_path / "w" / "part.json").read_text())
    assert info["command"].endswith("--stop-at-step 3 --out " + str(tmp_path / "part")
                                    + " --name part")
    assert info["training"]["steps"] == 3


def test_geometry_network_can_start_from_a_geometry_free_one():
    """--init of a geometry=True network from 1-channel weights: the extra input channels
    start at zero, so the function is unchanged at the start of fine-tuning."""
    from neurosolve.neural import DCDMNet
    from neurosolve.neural.dcdm_train import _widen_stem

    torch.manual_seed(0)
    plain, geo = DCDMNet(2, channels=4), DCDMNet(2, channels=4, geometry=True)
    geo.load_state_dict(_widen_stem(plain.state_dict(), geo))
    x, g = torch.randn(2, 1, 16, 16), torch.rand(2, 2, 16, 16)
    torch.testing.assert_close(geo(torch.cat([x, g], dim=1)), plain(x))


def test_bad_training_configs():
    with pytest.raises(ValueError, match="data must be"):
        TrainConfig(data="files")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="divisible by 2"):
        TrainConfig(dim=2, grid=15).network()
    with pytest.raises(ValueError, match="m must be a positive integer"):
        lanczos_ritz(poisson.box((4, 4)).matrix(), 0)
