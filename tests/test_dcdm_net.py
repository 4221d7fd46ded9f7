"""DCDMNet architecture, the torch adapter, and the shipped weights."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import neurosolve as ns
from neurosolve.neural import DCDMNet, TorchPreconditioner, available_pretrained, load_pretrained
from neurosolve.neural.dcdm_net import count_parameters
from neurosolve.neural.mg_smoother import SmootherWeightNet
from neurosolve.problems import poisson


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("dim,variant,expected", [
    (3, "64", 97_457), (3, "128", 152_881),            # the paper's from64 / from128
    (2, "64", 160 + 14 * 2320 + 17), (2, "128", 160 + 22 * 2320 + 17),
])
def test_parameter_counts(dim, variant, expected):
    assert count_parameters(DCDMNet(dim=dim, variant=variant)) == expected


def _reference_from64(net, x):
    """The spec's table for the from64 network, written out op by op (3-D)."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    it = iter(convs)

    def L(z):
        m = next(it)
        return F.conv3d(z, m.weight, m.bias, padding=m.padding)

    def C(z):
        return torch.relu(L(z))

    t = L(x)
    la = C(t)
    lb = C(la)
    la = C(lb) + la          # ReLU before the add
    lb = C(la)
    a = F.avg_pool3d(lb, 2)
    for _ in range(3):
        b = C(a)
        a = C(b) + a
    u = F.interpolate(a, scale_factor=2, mode="nearest") + lb
    for _ in range(2):
        v = C(u)
        u = C(v) + u
    out = L(u)
    assert next(it, None) is None
    return out


def test_forward_matches_the_papers_graph():
    torch.manual_seed(1)
    net = DCDMNet(dim=3, variant="64", input_norm=None).double()
    x = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), _reference_from64(net, x).numpy(),
                                   rtol=1e-10, atol=1e-12)
    assert net.receptive_field() == 45
    assert DCDMNet(dim=3, variant="128").receptive_field() == 69


def test_onednn_path_equals_reference_convolution():
    torch.manual_seed(2)
    net = DCDMNet(dim=3, variant="64", channels=8).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        y1 = net(x)
        try:
            torch.backends.mkldnn.enabled = False
            y2 = net(x)
        finally:
            torch.backends.mkldnn.enabled = True
    assert float((y1 - y2).norm() / y2.norm()) < 1e-5


def test_translation_equivariance_and_resolution_transfer():
    torch.manual_seed(3)
    net = DCDMNet(dim=2, variant="64", channels=8, input_norm=None).double().eval()
    x = torch.zeros(1, 1, 128, 128, dtype=torch.float64)
    x[0, 0, 60:68, 60:68] = torch.randn(8, 8, dtype=torch.float64)
    xs = torch.roll(x, shifts=(4, 2), dims=(2, 3))  # shift by a multiple of the pooling
    with torch.no_grad():
        y, ys = net(x), net(xs)
        # the response farther than the receptive field (45) from the zero-padded boundary
        # moves with the input
        np.testing.assert_allclose(torch.roll(y, (4, 2), (2, 3))[..., 32:96, 32:96].numpy(),
                                   ys[..., 32:96, 32:96].numpy(), rtol=1e-9, atol=1e-12)
        assert net(torch.randn(1, 1, 256, 256, dtype=torch.float64)).shape == (1, 1, 256, 256)


def test_rms_input_norm_makes_the_network_scale_invariant():
    torch.manual_seed(4)
    net = DCDMNet(dim=2, channels=4).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), net(1e-3 * x).numpy(), rtol=1e-4, atol=1e-6)


def test_bad_network_inputs():
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        DCDMNet(dim=1)
    with pytest.raises(ValueError, match="variant"):
        DCDMNet(variant="256")
    net = DCDMNet(dim=3, channels=4)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.zeros(1, 1, 8, 8, 9))
    with pytest.raises(ValueError, match="expects input of shape"):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="divisible by 16"):
        DCDMNet(dim=2, variant="unet", levels=4).check_grid((24, 32))


# -- adapter --------------------------------------------------------------------------------
def test_adapter_conversions_mask_and_counts():
    torch.manual_seed(5)
    grid = poisson.sphere((16, 16), radius=4)
    net = DCDMNet(dim=2, channels=4)
    net.train()
    M = TorchPreconditioner(net, grid=grid)
    r = np.random.default_rng(0).standard_normal(256) * grid.fluid.ravel()
    y = M(r)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == (256,)
    assert not np.any(y[~grid.fluid.ravel()])
    assert M.evaluations == 1 and not M.is_linear and net.training  # mode restored
    yt = M(torch.as_tensor(r))
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float64
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-6)
    assert M.evaluations == 2
    with pytest.raises(ValueError, match="255 entries but the grid"):
        M(np.ones(255))
    with pytest.raises(ValueError, match="mask has 10 entries"):
        TorchPreconditioner(net, grid=(16, 16), mask=np.ones(10, bool))


def test_adapter_of_a_linear_module_is_linear():
    """Normalization then rescaling by the input norm keeps a linear module linear (PCG-safe)."""
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    M = TorchPreconditioner(conv, grid=(8, 8), dtype=torch.float64, linear=True)
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(64), rng.standard_normal(64)
    np.testing.assert_allclose(M(2.0 * u - 3.0 * v), 2.0 * M(u) - 3.0 * M(v), atol=1e-12)


def test_geometry_channels_and_adapter():
    from neurosolve.neural.dcdm_net import geometry_channels

    cells = np.zeros((8, 8), dtype=np.int8)
    cells[3, 3] = poisson.SOLID
    cells[:, 7] = poisson.AIR
    grid = poisson.CellGrid(cells, walls="neumann")
    fl, solid = geometry_channels(grid.diagonal().reshape(8, 8), grid.fluid, 2)
    np.testing.assert_array_equal(fl, grid.fluid)
    assert solid[3, 4] == 0.25          # one face on the solid cell
    assert solid[0, 0] == 0.5           # a corner: two Neumann walls
    assert solid[4, 6] == 0.0           # next to air: no Neumann face
    assert solid[3, 3] == 0.0 and solid[4, 7] == 0.0  # non-fluid cells
    net = DCDMNet(dim=2, channels=4, geometry=True)
    M = TorchPreconditioner(net, grid=grid)
    assert M(np.ones(64)).shape == (64,)
    with pytest.raises(ValueError, match="geometry channels: pass diagonal="):
        TorchPreconditioner(net, grid=(8, 8))
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 3, \*grid\)"):
        net(torch.zeros(1, 1, 8, 8))


# -- shipped weights --------------------------------------------------------------------------
def test_shipped_models_and_manifests():
    names = available_pretrained()
    assert {"dcdm2d", "dcdm3d"} <= set(names)
    for name in names:
        net = load_pretrained(name)
        info = net.manifest
        assert not net.training
        if info.get("kind") == "learned_mg_smoother":  # LearnedMG's (tests/test_learned_mg_weights.py)
            assert isinstance(net, SmootherWeightNet) and name.startswith("nmg")
            continue
        for key in ("architecture", "grid", "data", "training", "final_loss", "command",
                    "measured_iterations"):
            assert key in info, (name, key)
        assert info["command"].startswith("neurosolve train dcdm")
        assert info["architecture"]["parameters"] == count_parameters(net)
        assert json.loads(json.dumps(info)) == info
    with pytest.raises(ValueError, match="no pretrained model named 'nope'; available: dcdm2d"):
        load_pretrained("nope")
    assert {n for n in names if not n.startswith("dcdm")} <= {"nmg2d", "nmg3d"}


def test_weights_load_without_pickle_code(tmp_path):
    """Weight files are plain tensors: torch.load(weights_only=True) accepts them."""
    from neurosolve.neural.pretrained import WEIGHTS_DIR

    for name in available_pretrained():
        state = torch.load(WEIGHTS_DIR / f"{name}.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert (WEIGHTS_DIR / f"{name}.pt").stat().st_size < 600_000


def test_pretrained_2d_beats_cg_on_an_unseen_obstacle():
    grid = poisson.ellipsoids((64, 64), n=3, seed=11)
    prob = grid.system(poisson.rhs_blobs(grid, seed=2))
    cg = ns.solve(prob, ns.solvers.CG(rtol=1e-6))
    res = ns.solve(prob, ns.solvers.DCDM(rtol=1e-6))  # model="auto" -> dcdm2d
    assert res.success and cg.success
    assert res.n_iter * 2 <= cg.n_iter
    assert res.certificate["relative_residual"] < 1e-6


def test_pretrained_3d_beats_cg_on_an_unseen_obstacle():
    """The demo's solid torus (the 3-D network trained on the empty box only)."""
    from neurosolve.demos.dcdm import torus_pool

    grid = torus_pool(32)
    prob = grid.system(poisson.rhs_blobs(grid, seed=0))
    cg = ns.solve(prob, ns.solvers.CG(rtol=1e-4))
    res = ns.solve(prob, ns.solvers.DCDM(rtol=1e-4))  # model="auto" -> dcdm3d
    assert res.success and cg.success
    assert res.n_iter * 3 <= cg.n_iter
    assert "network_switched_off_at" not in res.stats


@pytest.mark.parametrize("name,dim,n", [("dcdm2d", 2, 64), ("dcdm3d", 3, 32)])
def test_shipped_networks_replay_their_manifests(name, dim, n, one_torch_thread):
    """The manifests' measured iteration counts (CG and DCDM, every unseen geometry and
    rtol at the manifest's smallest grid) are reproduced by the stored weights, +-1."""
    from neurosolve.neural import load_pretrained
    from neurosolve.neural.dcdm_train import evaluate_model

    net = load_pretrained(name)
    want = [r for r in net.manifest["measured_iterations"] if r["grid"] == [n] * dim]
    assert want, "the manifest has no rows at this grid"
    got = evaluate_model(net, dim, sizes=(n,), rtols=sorted({r["rtol"] for r in want}, reverse=True))
    key = {(r["geometry"], r["rtol"]): r for r in got}
    for row in want:
        mine = key[(row["geometry"], row["rtol"])]
        assert abs(mine["cg"] - row["cg"]) <= 1, (row, mine)
        assert abs(mine["dcdm"] - row["dcdm"]) <= 1, (row, mine)
        assert mine["converged"] == row["converged"]
