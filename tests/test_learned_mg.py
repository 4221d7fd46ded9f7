"""LearnedMG: GMG with learned per-cell smoother weights and interpolation strengths.

Oracles: GMG itself (untrained weights), scipy's cg with the same preconditioner, random
vectors for symmetry and positivity, the torch and numba V-cycles against each other.
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

torch = pytest.importorskip("torch")

import neurosolve as ns  # noqa: E402
from neurosolve.neural.mg_weights import (LearnedVCycles, SmootherWeightNet,  # noqa: E402
                                          train_learned_mg)
from neurosolve.problems import poisson as P  # noqa: E402
from neurosolve.solvers.preconditioners import GMG, LearnedMG  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_net(dim, seed=0, spread=20.0, interpolation=False, learned_finest=True):
    """A weight network whose outputs are far from 1 (a non-trivial smoother and, with
    ``interpolation``, interpolation factors far from 1)."""
    torch.manual_seed(seed)
    net = SmootherWeightNet(dim=dim, channels=4, interpolation=interpolation,
                            learned_finest=learned_finest)
    with torch.no_grad():
        net.out.weight.normal_(0.0, spread)
        net.out.bias.normal_(0.0, 0.5)
    return net


GRIDS = {
    "pool2d": lambda: P.pool((32, 32), obstacles=2, seed=1),
    "plates2d": lambda: P.plates((32, 32), seed=0),
    "inclusions2d": lambda: P.box((32, 32), walls="dirichlet").with_coefficients(
        P.inclusions_field((32, 32), seed=0)),
    "sphere3d": lambda: P.sphere((16, 16, 16)),
}


@pytest.mark.parametrize("name", GRIDS)
def test_untrained_is_gmg_bit_for_bit(name):
    g = GRIDS[name]()
    r = np.random.default_rng(0).standard_normal(g.n) * g.fluid.ravel()
    ref = GMG(g)(r)
    assert np.array_equal(LearnedMG(g)(r), ref)
    assert np.array_equal(LearnedMG(g, SmootherWeightNet(dim=g.ndim))(r), ref)
    assert np.array_equal(LearnedMG(g, SmootherWeightNet(dim=g.ndim, interpolation=True))(r), ref)


@pytest.mark.parametrize("interpolation,finest", [(False, True), (True, True), (True, False)],
                         ids=["smoother", "interp", "interp-plain-finest"])
@pytest.mark.parametrize("name", GRIDS)
def test_symmetric_positive_definite_for_any_weights(name, interpolation, finest,
                                                     check_spd_on_fluid):
    g = GRIDS[name]()
    M = LearnedMG(g, _random_net(g.ndim, interpolation=interpolation, learned_finest=finest))
    assert (M.omegas[0] is None) == (not finest)
    spread = [np.abs(o - 1)[np.asarray(M._levels[i].d) > 0] for i, o in enumerate(M.omegas)
              if o is not None]  # (none on a two-level grid with a plain finest level)
    assert not spread or max(float(s.max()) for s in spread) > 0.5  # far from plain GS
    if interpolation:
        assert max(float(np.abs(np.log(f)).max()) for f in M.factors) > 1.0
    check_spd_on_fluid(M, g, np.random.default_rng(1))


@pytest.mark.parametrize("name,interpolation,finest", [
    ("pool2d", False, True), ("sphere3d", False, True), ("inclusions2d", True, True),
    ("sphere3d", True, True), ("inclusions2d", True, False), ("sphere3d", True, False)])
def test_torch_vcycle_equals_the_numba_one(name, interpolation, finest):
    g = GRIDS[name]()
    net = _random_net(g.ndim, seed=3, interpolation=interpolation,
                      learned_finest=finest).double()
    M = LearnedMG(g, net)
    r = np.random.default_rng(2).standard_normal(g.n) * g.fluid.ravel()
    mod = LearnedVCycles(net, [GMG(g)])
    with torch.no_grad():
        got = mod(torch.as_tensor(r).reshape(1, 1, *g.shape)).reshape(-1).numpy()
    ref = M(r)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["plates2d", "sphere3d"])
def test_plain_finest_level_is_gauss_seidel_there_and_learned_below(name):
    """``learned_finest=False``: the network does not run on the finest level, which
    smooths with plain Gauss-Seidel; the cycle equals the full model's with the finest
    weights set to 1, bit for bit, and differs from GMG (coarse levels still learned)."""
    from neurosolve.solvers.preconditioners.learned_mg import level_outputs

    g = GRIDS[name]()
    plain = _random_net(g.ndim, seed=4, interpolation=True, learned_finest=False)
    full = _random_net(g.ndim, seed=4, interpolation=True)
    levels = GMG(g)._levels
    with torch.no_grad():
        outs = level_outputs(plain, levels, g.ndim)
    assert outs[0] is None and all(o is not None for o in outs[1:])
    r = np.random.default_rng(6).standard_normal(g.n) * g.fluid.ravel()
    M, ref = LearnedMG(g, plain), LearnedMG(g, full)
    assert M.omegas[0] is None
    assert np.abs(ref.omegas[0] - 1).max() > 0.5  # the full model changes the finest sweep
    ref.omegas[0] = np.ones_like(ref.omegas[0])
    assert np.array_equal(M(r), ref(r))
    assert not np.allclose(M(r), GMG(g)(r))


def test_pcg_equals_scipy_cg_with_the_same_preconditioner():
    g = GRIDS["plates2d"]()
    prob = g.system(P.rhs_blobs(g, seed=0))
    M = LearnedMG(g, _random_net(2, seed=4, spread=0.5))
    ours = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), progress=False)
    iterates = []
    A = g.matrix()
    b = np.asarray(prob.b)
    x, info = spla.cg(A, b, rtol=1e-8, atol=0.0, M=M.as_scipy(), maxiter=500,
                      callback=lambda xk: iterates.append(xk.copy()))
    assert info == 0 and ours.success
    assert abs(len(iterates) - ours.n_iter) <= 1
    np.testing.assert_allclose(ours.x, x, rtol=1e-6, atol=1e-9 * np.abs(x).max())


def test_training_lowers_the_loss_and_the_weights_stay_valid():
    grids = [P.pool((32, 32), obstacles=2, seed=s) for s in (0, 1)] + [P.plates((32, 32), seed=0)]
    net, res = train_learned_mg(grids, steps=80, batch=4, progress=False)
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-10:])
    assert last < 0.97 * first
    held_out = P.plates((64, 64), seed=5)
    M = LearnedMG(held_out, net)
    assert all(0 < o.min() and o.max() < 2 for o in M.omegas)
    assert any(np.abs(o - 1).max() > 0.01 for o in M.omegas)  # it learned something
    prob = held_out.system(P.rhs_blobs(held_out, seed=3))
    assert ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), progress=False).success


def test_training_the_interpolation_lowers_the_loss_on_high_contrast():
    shape = (32, 32)
    grids = [P.pool(shape, obstacles=2, seed=s).with_coefficients(
        P.inclusions_field(shape, contrast=1e4, seed=s)) for s in (0, 1)]
    net, res = train_learned_mg(grids, interpolation=True, steps=60, batch=4, progress=False)
    assert np.mean(res.losses[-10:]) < 0.97 * np.mean(res.losses[:10])
    held_out = P.pool((64, 64), obstacles=2, seed=7).with_coefficients(
        P.inclusions_field((64, 64), contrast=1e4, seed=7))
    M = LearnedMG(held_out, net)
    assert M.factors is not None and any(np.abs(f - 1).max() > 0.01 for f in M.factors)
    prob = held_out.system(P.rhs_blobs(held_out, seed=3))
    assert ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), progress=False).success


def test_training_from_init_starts_at_those_weights():
    """Fine-tuning: ``init`` loads a trained network, so the first optimizer step sees its
    loss (below GMG's, the zero-output start), and a different architecture is refused."""
    grids = [P.pool((32, 32), obstacles=2, seed=0), P.plates((32, 32), seed=0)]
    kw = dict(channels=4, interpolation=True, batch=4, progress=False, seed=3)
    base, _ = train_learned_mg(grids, steps=40, **kw)
    _, from_gmg = train_learned_mg(grids, steps=1, lr=1e-12, lr_final=1e-12, **kw)
    _, from_base = train_learned_mg(grids, steps=1, lr=1e-12, lr_final=1e-12, init=base, **kw)
    assert from_base.losses[0] < 0.95 * from_gmg.losses[0]
    with pytest.raises(ValueError, match="architecture"):
        train_learned_mg(grids, steps=1, init=base, channels=8, interpolation=True,
                         progress=False)


def test_bad_models_are_refused():
    g = GRIDS["pool2d"]()

    class TooLarge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, f):
            return 2.5 * self.w * torch.ones_like(f[:, :1])

    with pytest.raises(ValueError, match=r"\(0, 2\)"):
        LearnedMG(g, TooLarge())
    with pytest.raises(ValueError, match="3-D grids"):
        LearnedMG(g, SmootherWeightNet(dim=3))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        LearnedMG(g, 3.0)
    with pytest.raises(ValueError, match="neurosolve train lmg"):
        LearnedMG(g, "no-such-dir/smoother.pt")


def test_cli_trains_writes_and_the_file_loads(tmp_path, capsys):
    import json

    from neurosolve.cli import main
    from neurosolve.neural.mg_weights import load_smoother

    out = tmp_path / "lmg"
    assert main(["train", "lmg", "--grid", "16", "--per-kind", "1", "--steps", "2",
                 "--out", str(out), "--no-progress"]) == 2
    assert "larger grids" in capsys.readouterr().err
    assert main(["train", "lmg", "--grid", "32", "--per-kind", "1", "--steps", "6",
                 "--batch", "2", "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "smoother.json").read_text())
    assert info["training"]["steps"] == 6 and info["command"].startswith("neurosolve train lmg")
    assert (out / "checkpoint.pt").exists() and (out / "loss.png").exists()
    g = P.plates((32, 32), seed=3)
    r = np.random.default_rng(0).standard_normal(g.n) * g.fluid.ravel()
    by_path = LearnedMG(g, out / "smoother.pt")(r)
    by_net = LearnedMG(g, load_smoother(out))(r)
    assert np.array_equal(by_path, by_net)
    assert not np.array_equal(by_path, GMG(g)(r))  # six steps moved the weights off 1
    tuned = tmp_path / "tuned"  # fine-tuning records how its starting weights were made
    assert main(["train", "lmg", "--grid", "32", "--per-kind", "1", "--steps", "2",
                 "--batch", "2", "--init", str(out / "smoother.pt"), "--no-learned-finest",
                 "--out", str(tuned), "--no-progress"]) == 0
    tinfo = json.loads((tuned / "smoother.json").read_text())
    assert tinfo["command"].endswith(f"--init {out / 'smoother.pt'}")
    assert "--no-learned-finest" in tinfo["command"]
    assert tinfo["init"]["command"] == info["command"]
    assert LearnedMG(P.plates((64, 64), seed=3), tuned / "smoother.pt").omegas[0] is None


def test_pcg_loss_is_the_energy_error_of_k_pcg_iterations():
    """The K-step loss against scipy's cg with the same (untrained = GMG) preconditioner."""
    from neurosolve.neural.mg_weights import _lmg_pcg_loss
    from neurosolve.neural.training import LossBatch

    g = GRIDS["pool2d"]()
    A = g.matrix()
    gmg = GMG(g)
    mod = LearnedVCycles(SmootherWeightNet(dim=2).double(), [gmg])
    rng = np.random.default_rng(5)
    e0 = rng.standard_normal(g.n) * g.fluid.ravel()
    At = torch.as_tensor(A.toarray())

    def apply_A(f):
        return (At @ f.reshape(f.shape[0], -1).T).T.reshape(f.shape)

    b = torch.as_tensor(e0).reshape(1, 1, *g.shape)
    fluid = torch.as_tensor(np.array(g.fluid, dtype=float).reshape(1, 1, *g.shape))
    batch = LossBatch(b, apply_A, fluid, fluid, mod, np.zeros(1, dtype=int))
    K = 3
    with torch.no_grad():
        got = float(_lmg_pcg_loss(K)(batch))
    xs = []
    spla.cg(A, A @ e0, rtol=0.0, atol=0.0, M=gmg.as_scipy(), maxiter=K,
            callback=lambda xk: xs.append(xk.copy()))
    eK = e0 - xs[-1]
    want = ((eK @ A @ eK) / (e0 @ A @ e0)) ** (1.0 / K)
    assert got == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("dim", [2, 3])
def test_fast_inference_matches_the_network(dim):
    from neurosolve.neural.mg_smoother import _fused_convolutions, fast_inference

    net = _random_net(dim, seed=4, interpolation=True)
    run = fast_inference(net)
    if run is None:
        pytest.skip("this torch has no oneDNN convolutions")
    f = torch.randn((1, 5) + (12, 10, 8)[:dim])
    channels_last = f.movedim(1, -1).contiguous().movedim(-1, 1)  # the layout LearnedMG passes
    with torch.no_grad():
        ref = net(f)
    # float32 rounding, amplified by the far-from-zero last layer (std 20) of this net
    for features in (f, channels_last):
        np.testing.assert_allclose(run(features).numpy(), ref.numpy(), rtol=2e-4, atol=1e-4)
    fused = _fused_convolutions(net)
    if fused is not None:  # the fused path is the one taken when it exists
        np.testing.assert_array_equal(fused(f).numpy(), run(f).numpy())
    assert fast_inference(net.double()) is None  # float64 training nets take the plain path


def test_every_training_family_builds_its_geometry():
    """``neurosolve train lmg --kinds``: each family is a valid grid; the coefficient
    families carry their field (log-normal: a continuous spread, not two values)."""
    from neurosolve.cli_train import LMG_KINDS, lmg_training_grid

    for kind in LMG_KINDS:
        g = lmg_training_grid(kind, (32, 32), seed=5)
        assert g.fluid.any(), kind
        k = None if g.coefficients is None else g.coefficients[g.fluid]
        if kind in ("inclusions", "layered", "lognormal"):
            assert k is not None and k.max() / k.min() > 10, kind
        else:
            assert k is None or np.all(k == 1), kind
    k = lmg_training_grid("lognormal", (32, 32), seed=5).coefficients
    assert len(np.unique(k)) > 100
