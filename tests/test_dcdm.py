"""DCDM solver: exact special cases against scipy, robustness, stopping rule, bad inputs.

Oracles: scipy.sparse.linalg.cg (with and without M), scipy.sparse.linalg.spsolve, and
closed forms (an exact inverse converges in one step).
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.neural import DCDMNet, TorchPreconditioner
from neurosolve.problems import LinearSystem, poisson
from neurosolve.solvers import CG, DCDM
from neurosolve.solvers.preconditioners import GMG, Jacobi


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scipy_cg(A, b, rtol, M=None):
    it = [0]
    x, info = spla.cg(A, b, rtol=rtol, atol=0.0, M=M, maxiter=10 * A.shape[0],
                      callback=lambda _: it.__setitem__(0, it[0] + 1))
    assert info == 0
    return x, it[0]


@pytest.fixture(scope="module")
def dir_sys():
    """A 3-D Dirichlet box with a solid ball and air on top: nonsingular, unseen-type geometry."""
    cells = np.array(poisson.sphere((12, 12, 12), radius=3, walls="dirichlet").cells)
    cells[:, :, -2:] = poisson.AIR
    grid = poisson.CellGrid(cells, walls="dirichlet")
    return grid.system(poisson.rhs_blobs(grid, seed=3))


@pytest.fixture(scope="module")
def neu_sys():
    """A 2-D Neumann box with an obstacle: singular, b compatible."""
    grid = poisson.sphere((24, 24))
    return grid.system(poisson.rhs_noise(grid, seed=1))


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return DCDMNet(dim=3, variant="64", channels=4)


def test_identity_model_equals_cg(dir_sys):
    A = dir_sys.A.matrix
    x_ref, it_ref = scipy_cg(A, dir_sys.b, 1e-8)
    for augment in (False, True):  # the paper's step, and the augmented step
        res = ns.solve(dir_sys, DCDM(model=lambda r: r, rtol=1e-8, rtol_reference="b",
                                     augment=augment))
        assert res.success
        assert abs(res.n_iter - it_ref) <= 1
        assert np.linalg.norm(res.x - x_ref) / np.linalg.norm(x_ref) <= 1e-8
        assert res.stats["network_evaluations"] == res.n_iter
        assert res.stats.get("fallbacks", 0) == 0


@pytest.mark.parametrize("kind", ["jacobi", "gmg"])
def test_linear_spd_model_equals_pcg(dir_sys, kind):
    A = dir_sys.A.matrix
    M = Jacobi(dir_sys) if kind == "jacobi" else GMG(dir_sys)
    _, it_ref = scipy_cg(A, dir_sys.b, 1e-8, M=M.as_scipy())
    res = ns.solve(dir_sys, DCDM(model=M.matvec, rtol=1e-8, rtol_reference="b", guard=0.0,
                                 augment=False))
    assert res.success and abs(res.n_iter - it_ref) <= 1
    pcg = ns.solve(dir_sys, CG(M=M, rtol=1e-8))
    assert np.linalg.norm(res.x - pcg.x) <= 1e-7 * np.linalg.norm(pcg.x)


@pytest.mark.parametrize("c", [2.5, -0.37])
def test_exact_inverse_converges_in_one_step(dir_sys, c):
    A = dir_sys.A.matrix.tocsc()
    fl = dir_sys.grid.fluid.ravel()
    Af = A[fl][:, fl].tocsc()

    def inv(r):
        out = np.zeros_like(r)
        out[fl] = c * spla.spsolve(Af, r[fl])
        return out

    res = ns.solve(dir_sys, DCDM(model=inv, rtol=1e-12))
    assert res.success and res.n_iter == 1
    assert res.certificate["relative_residual"] < 1e-12


def _wrap(net, c):
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return c * self.net(x)

        def check_grid(self, shape):
            self.net.check_grid(shape)

    return Scaled()


def test_scale_invariance_of_iterates(dir_sys, small_net):
    """f -> c f leaves every iterate unchanged (float64 network, so rounding stays tiny)."""
    net64 = DCDMNet(dim=3, variant="64", channels=4).double()
    net64.load_state_dict(small_net.state_dict())
    hist = []
    for c in (1.0, 7.3, -0.01):
        res = ns.solve(dir_sys, DCDM(model=_wrap(net64, c), dtype=torch.float64, rtol=1e-6,
                                     maxiter=30))
        hist.append((res.n_iter, res.history["residual_norm"], res.x))
    for n, h, x in hist[1:]:
        assert n == hist[0][0]
        np.testing.assert_allclose(h, hist[0][1], rtol=1e-9)
        np.testing.assert_allclose(x, hist[0][2], rtol=1e-9, atol=1e-12 * np.abs(x).max())


def test_a_orthogonality_and_monotone_error(dir_sys, small_net):
    A = dir_sys.A.matrix
    fl = dir_sys.grid.fluid.ravel()
    xs = np.zeros(A.shape[0])
    xs[fl] = spla.spsolve(A[fl][:, fl].tocsc(), dir_sys.b[fl])
    errs, cosines = [], []

    def cb(view):
        e = view.x - xs
        errs.append(float(e @ (A @ e)))
        kept = list(getattr(view.state, "kept", []))
        if len(kept) >= 2:
            d_new, w_new, den_new = kept[-1]
            for d_old, _, den_old in kept[:-1]:
                cosines.append(abs(d_old @ w_new) / np.sqrt(den_new * den_old))

    res = ns.solve(dir_sys, DCDM(model=small_net, rtol=1e-8, maxiter=60), callback=cb)
    assert len(cosines) > 30 and max(cosines) <= 1e-10
    errs = np.array(errs)
    assert np.all(np.diff(errs) <= 1e-12 * errs[0])
    assert res.n_iter > 5


def test_agrees_with_direct_solve_and_true_residual_stop(dir_sys, small_net):
    A = dir_sys.A.matrix
    fl = dir_sys.grid.fluid.ravel()
    xs = np.zeros(A.shape[0])
    xs[fl] = spla.spsolve(A[fl][:, fl].tocsc(), dir_sys.b[fl])
    x0 = np.where(fl, 0.1, 0.0)
    r0 = np.linalg.norm(dir_sys.b - A @ x0)
    res = ns.solve(dir_sys, DCDM(model=small_net, rtol=1e-7, maxiter=300), x0=x0)
    assert res.success
    rn = np.linalg.norm(dir_sys.b - A @ res.x)
    assert rn < 1e-7 * r0
    assert res.history["residual_norm"][-2] >= 1e-7 * r0  # it did not stop late
    kappa_bound = 1e-7 * r0 / 0.03  # ||A^-1|| <= 1/lambda_min, lambda_min > 0.03 here
    assert np.linalg.norm(res.x - xs) <= kappa_bound
    np.testing.assert_allclose(res.history["residual_norm"][-1], rn, rtol=1e-8)


def test_nan_model_falls_back_and_says_so(dir_sys):
    A = dir_sys.A.matrix
    _, it_ref = scipy_cg(A, dir_sys.b, 1e-6)
    res = ns.solve(dir_sys, DCDM(model=lambda r: np.full_like(r, np.nan), rtol=1e-6,
                                 rtol_reference="b"))
    assert res.success and abs(res.n_iter - it_ref) <= 1
    assert res.stats["fallbacks"] == res.n_iter
    assert "NaN" in res.message
    res = ns.solve(dir_sys, DCDM(model=lambda r: np.full_like(r, np.nan), on_nonfinite="error"))
    assert res.status is Status.NONFINITE and "network returned NaN" in res.message


def test_nan_network_module_through_adapter(dir_sys):
    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return x * float("nan")

    res = ns.solve(dir_sys, DCDM(model=NaNNet(), rtol=1e-6))
    assert res.success and res.stats["fallbacks"] == res.n_iter


@pytest.mark.parametrize("bad", ["zeros", "nullspace"])
def test_degenerate_directions_fall_back(neu_sys, bad):
    fl = neu_sys.grid.fluid.ravel()
    f = (lambda r: np.zeros_like(r)) if bad == "zeros" else (lambda r: fl.astype(float))
    res = ns.solve(neu_sys, DCDM(model=f, rtol=1e-6))
    assert res.success
    assert res.stats["fallbacks"] == res.n_iter


def test_zero_rhs_returns_x0_immediately():
    grid = poisson.box((8, 8), walls="dirichlet")
    prob = grid.system(np.zeros(64))
    res = ns.solve(prob, DCDM(model=lambda r: r))
    assert res.success and res.n_iter == 0 and not np.any(res.x)


def test_singular_neumann_compatible_and_incompatible(neu_sys, small_net):
    net2 = DCDMNet(dim=2, channels=4)
    res = ns.solve(neu_sys, DCDM(model=net2, rtol=1e-8, maxiter=500))
    assert res.success
    fl = neu_sys.grid.fluid.ravel()
    assert abs(res.x[fl].mean()) < 1e-10  # no drift along the null space
    b = neu_sys.b + 0.1 * fl / np.sqrt(fl.sum())
    bad = neu_sys.grid.system(b)
    res = ns.solve(bad, DCDM(model=net2, rtol=1e-6))
    assert res.status is Status.INFEASIBLE and "incompatible" in res.message
    assert np.all(np.isfinite(res.x))


def test_user_matrix_with_grid_keyword(dir_sys):
    """A plain LinearSystem on a full cell grid: grid= gives the layout, empty rows the mask."""
    A = dir_sys.A.matrix
    prob = LinearSystem(A, dir_sys.b)
    net = DCDMNet(dim=3, channels=4)
    res = ns.solve(prob, DCDM(model=net, grid=(12, 12, 12), rtol=1e-6, maxiter=300))
    assert res.success
    fl = dir_sys.grid.fluid.ravel()
    assert not np.any(res.x[~fl])


# -- bad inputs ---------------------------------------------------------------------------
def test_odd_grid_is_rejected():
    grid = poisson.sphere((13, 12))
    prob = grid.system(poisson.rhs_noise(grid))
    with pytest.raises(ValueError, match="divisible by 2"):
        ns.solve(prob, DCDM(model=DCDMNet(dim=2, channels=4)))


def test_wrong_dimensionality_is_rejected(dir_sys):
    with pytest.raises(ValueError, match="2-D but the grid .* is 3-D"):
        ns.solve(dir_sys, DCDM(model=DCDMNet(dim=2, channels=4)))


def test_rhs_of_wrong_size_is_rejected(dir_sys):
    prob = LinearSystem(dir_sys.A.matrix, dir_sys.b)
    with pytest.raises(ValueError, match="1728 entries but the grid \\(10, 10, 10\\) has 1000"):
        ns.solve(prob, DCDM(model=DCDMNet(dim=3, channels=4), grid=(10, 10, 10)))
    with pytest.raises(ValueError, match="b has shape"):
        dir_sys.grid.system(np.ones(100))


def test_a_useless_network_is_switched_off_and_cg_finishes(dir_sys):
    """Random directions in the paper's step (no residual in the search space, no guard):
    the solve stalls, the switch turns the network off, the rest is CG restarted at the
    current iterate."""
    _, it_ref = scipy_cg(dir_sys.A.matrix, dir_sys.b, 1e-8)
    rng = np.random.default_rng(0)
    noise = lambda r: rng.standard_normal(r.shape)  # noqa: E731
    paper = dict(augment=False, guard=0.0, rtol=1e-8, maxiter=2000)
    res = ns.solve(dir_sys, DCDM(model=noise, stall_window=10, **paper))
    off = res.stats["network_switched_off_at"]
    assert res.success and res.certificate["relative_residual"] < 1e-8
    assert 10 <= off < res.n_iter
    assert res.stats["network_evaluations"] == off
    assert res.n_iter - off <= it_ref + 2
    assert "switched off at iteration" in res.message
    rng = np.random.default_rng(0)
    slow = ns.solve(dir_sys, DCDM(model=noise, stall_window=None, **paper))
    assert "network_switched_off_at" not in slow.stats
    assert slow.n_iter > res.n_iter


def test_after_the_switch_the_augmented_loop_costs_what_cg_costs(dir_sys):
    """A switch forced early (residual must fall 100x every 2 iterations): the remaining
    iterations are CG steps, one SpMV each (the true residual is recomputed every 50 and
    at the end), and the stopping rule still holds for the true residual."""
    _, it_ref = scipy_cg(dir_sys.A.matrix, dir_sys.b, 1e-9)
    rng = np.random.default_rng(1)
    res = ns.solve(dir_sys, DCDM(model=lambda r: rng.standard_normal(r.shape), rtol=1e-9,
                                 stall_window=2, stall_factor=0.01, maxiter=2000))
    off = res.stats["network_switched_off_at"]
    assert off == 2 and res.success
    assert res.certificate["relative_residual"] < 1e-9  # x0 = 0: r0 = b
    cg_steps = res.n_iter - off
    assert cg_steps <= it_ref + 2
    assert res.stats["matvecs"] <= 3 * off + 1 + cg_steps + cg_steps // 50 + 2


def test_a_helpful_network_is_never_switched_off(dir_sys):
    res = ns.solve(dir_sys, DCDM(model=GMG(dir_sys.grid), rtol=1e-10, stall_window=3))
    assert res.success and "network_switched_off_at" not in res.stats


def test_missing_grid_and_bad_options():
    prob = LinearSystem(np.eye(4) * 2.0, np.ones(4))
    with pytest.raises(ValueError, match="grid layout"):
        ns.solve(prob, DCDM(model=DCDMNet(dim=2, channels=4)))
    with pytest.raises(ValueError, match="model=...,? not M="):
        DCDM(M=lambda r: r)
    with pytest.raises(ValueError, match="on_nonfinite"):
        DCDM(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="guard"):
        DCDM(guard=-1.0)
    with pytest.raises(ValueError, match="stall_window must be a positive integer"):
        DCDM(stall_window=0)
    with pytest.raises(ValueError, match=r"stall_factor must be in \(0, 1\)"):
        DCDM(stall_factor=1.5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchPreconditioner(lambda r: r, grid=(4, 4))


def test_torch_inputs_stay_torch(dir_sys, small_net):
    prob = dir_sys.grid.system(torch.as_tensor(dir_sys.b))
    res = ns.solve(prob, DCDM(model=small_net, rtol=1e-5, maxiter=200))
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float64
    assert res.success and res.stats["backend"] == "torch"
