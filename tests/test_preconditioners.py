"""Preconditioners: Jacobi, IC(0), SSOR, AMG (pyamg) and the geometric multigrid V-cycle."""

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.problems import poisson as P
from neurosolve.problems.poisson import SOLID, CellGrid
from neurosolve.solvers import preconditioners as PC


def _scipy_cg(A, b, M, rtol):
    its = []
    x, info = spla.cg(A, b, rtol=rtol, atol=0.0, M=M, maxiter=2000,
                      callback=lambda xk: its.append(1))
    return x, info, len(its)


GRIDS = {
    "sphere3d-dir": lambda: P.sphere((14, 13, 12), walls="dirichlet"),
    "pool2d": lambda: P.pool((30, 26), obstacles=2, seed=3, waves=0.1),
    "ellipsoids3d-neu": lambda: P.ellipsoids((16, 16, 16), n=5, seed=4),  # isolated pockets
}

MAKERS = {
    "jacobi": lambda prob, g: PC.Jacobi(prob),
    "ic0": lambda prob, g: PC.IC0(prob),
    "ssor": lambda prob, g: PC.SSOR(prob, omega=1.4),
    "amg-sa": lambda prob, g: PC.AMG(prob),
    "amg-rs": lambda prob, g: PC.AMG(prob, kind="rs"),
    "gmg": lambda prob, g: PC.GMG(g),
}


@pytest.mark.parametrize("gname", list(GRIDS))
@pytest.mark.parametrize("pname", list(MAKERS))
def test_pcg_matches_scipy_with_same_M(gname, pname):
    grid = GRIDS[gname]()
    b = P.rhs_blobs(grid, seed=0)
    prob = grid.system(b)
    M = MAKERS[pname](prob, grid)
    assert M.is_linear and M.is_spd and M.shape == (grid.n, grid.n)
    res = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M))
    x, info, its = _scipy_cg(grid.matrix(), prob.b, M.as_scipy(), 1e-8)
    assert res.status is Status.CONVERGED and info == 0
    assert res.n_iter == its
    ns_ = grid.nullspace()
    x_ref = ns_.project(x) if ns_ is not None else x
    np.testing.assert_allclose(res.x, x_ref, atol=1e-9 * np.linalg.norm(x_ref))
    # and it beats (or equals) plain CG
    assert res.n_iter <= ns.solve(prob, ns.solvers.CG(rtol=1e-8)).n_iter


@pytest.mark.parametrize("pname", ["ic0", "ssor", "gmg"])
def test_numba_and_numpy_backends_agree(pname):
    grid = P.sphere((12, 12, 12))
    prob = grid.system(P.rhs_noise(grid, seed=1))
    M = MAKERS[pname](prob, grid)
    r1 = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), backend="numba")
    r2 = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), backend="numpy")
    assert r1.n_iter == r2.n_iter
    np.testing.assert_allclose(r1.x, r2.x, atol=1e-10)


# -- Jacobi ---------------------------------------------------------------------------------

def test_jacobi_is_inverse_diagonal_and_runs_on_torch():
    torch = pytest.importorskip("torch")
    grid = P.pool((12, 10), obstacles=1, seed=0)
    A = grid.matrix()
    J = PC.Jacobi(A)
    d = A.diagonal()
    expect = np.where(d > 0, 1 / np.where(d > 0, d, 1), 1.0)
    r = np.random.default_rng(0).standard_normal(grid.n)
    np.testing.assert_array_equal(J.matvec(r), r * expect)
    b = P.rhs_blobs(grid, seed=2)
    for prob_t in (grid.system(torch.as_tensor(b)), grid.system(torch.as_tensor(b), matrix_free=True)):
        Jt = PC.Jacobi(prob_t)
        assert Jt.array_library == "torch"
        res_t = ns.solve(prob_t, ns.solvers.CG(rtol=1e-10, M=Jt))
        res_n = ns.solve(grid.system(b), ns.solvers.CG(rtol=1e-10, M=J))
        assert isinstance(res_t.x, torch.Tensor) and res_t.n_iter == res_n.n_iter
        np.testing.assert_allclose(res_t.x.numpy(), res_n.x, atol=1e-9)


def test_jacobi_rejects_non_spd_diagonal():
    A = sp.csr_matrix(np.array([[1.0, 0.5], [0.5, -2.0]]))
    with pytest.raises(ValueError, match="Jacobi needs a positive diagonal"):
        PC.Jacobi(A)


# -- IC(0) ----------------------------------------------------------------------------------

def _dense_ic0(A):
    """Textbook IC(0) (Saad, Algorithm 10.4 specialized to zero fill), dense loops."""
    A = np.array(A, dtype=float)
    n = A.shape[0]
    pattern = A != 0
    L = np.tril(A)
    for k in range(n):
        L[k, k] = np.sqrt(L[k, k])
        for i in range(k + 1, n):
            if pattern[i, k]:
                L[i, k] /= L[k, k]
        for j in range(k + 1, n):
            for i in range(j, n):
                if pattern[i, j]:
                    L[i, j] -= L[i, k] * L[j, k]
    return L


def test_ic0_is_exact_cholesky_without_fill():
    n = 12
    T = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()   # tridiagonal: no fill
    ic = PC.IC0(T)
    np.testing.assert_allclose(ic.L.toarray(), np.linalg.cholesky(T.toarray()), atol=1e-14)
    r = np.arange(n, dtype=float)
    np.testing.assert_allclose(ic.matvec(r), np.linalg.solve(T.toarray(), r), atol=1e-12)


def test_ic0_matches_dense_reference_and_pattern_property():
    grid = P.sphere((7, 6, 5), walls="dirichlet", radius=1.5)
    A = grid.matrix()
    f = grid.fluid.ravel()
    Af = A[f][:, f]
    ic = PC.IC0(Af)
    Lref = _dense_ic0(Af.toarray())
    np.testing.assert_allclose(ic.L.toarray(), Lref, atol=1e-13)
    # the defining property of IC(0): L L^T equals A on A's sparsity pattern
    LLt = (ic.L @ ic.L.T).toarray()
    mask = Af.toarray() != 0
    np.testing.assert_allclose(LLt[mask], Af.toarray()[mask], atol=1e-13)
    r = np.random.default_rng(1).standard_normal(Af.shape[0])
    Ld = ic.L.toarray()
    np.testing.assert_allclose(ic.matvec(r), sla.cho_solve((Ld, True), r), atol=1e-12)


def test_ic0_empty_rows_are_identity():
    grid = P.sphere((8, 8, 8), walls="dirichlet")
    ic = PC.IC0(grid.matrix())
    r = np.random.default_rng(0).standard_normal(grid.n)
    z = ic.matvec(r)
    nf = ~grid.fluid.ravel()
    np.testing.assert_array_equal(z[nf], r[nf])


def test_ic0_singular_pocket_and_breakdown():
    cells = np.full((6, 6), SOLID, dtype=np.int8)
    cells[1:5, 1] = 0      # a 1-D Neumann channel: IC(0) is exact, the last pivot is zero
    cells[2, 3:5] = 0      # a two-cell pocket
    grid = CellGrid(cells)
    ic = PC.IC0(grid.matrix())
    assert ic.n_zero_pivots == 2
    b = P.rhs_noise(grid, seed=0)
    res = ns.solve(grid.system(b), ns.solvers.CG(rtol=1e-10, M=ic))
    assert res.success
    with pytest.raises(ValueError, match=r"IC\(0\) breakdown: the pivot at row 1"):
        PC.IC0(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="positive diagonal"):
        PC.IC0(np.array([[0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="shift"):
        PC.IC0(np.eye(2), shift=-1.0)
    # a large enough shift makes the factorization exist
    assert PC.IC0(np.array([[1.0, 2.0], [2.0, 1.0]]), shift=1.5).L.nnz == 3


# -- SSOR -----------------------------------------------------------------------------------

@pytest.mark.parametrize("omega", [1.0, 1.6])
def test_ssor_matches_dense_formula(omega):
    grid = P.pool((9, 8), obstacles=1, seed=2)
    A = grid.matrix()
    f = grid.fluid.ravel()
    Af = A[f][:, f].toarray()
    D = np.diag(np.diag(Af))
    Lo = np.tril(Af, -1)
    Msor = (D + omega * Lo) @ np.linalg.inv(D) @ (D + omega * Lo.T) / (omega * (2 - omega))
    S = PC.SSOR(A, omega=omega)
    r = np.random.default_rng(3).standard_normal(grid.n)
    z = S.matvec(r)
    np.testing.assert_allclose(z[f], np.linalg.solve(Msor, r[f]), atol=1e-12)
    np.testing.assert_allclose(z[~f], omega * (2 - omega) * r[~f])
    with pytest.raises(ValueError, match="omega must be in"):
        PC.SSOR(A, omega=2.0)


# -- AMG ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sa", "rs"])
def test_amg_equals_pyamg_preconditioner(kind):
    pyamg = pytest.importorskip("pyamg")
    A = P.box((12, 11, 10), walls="dirichlet").matrix()
    build = pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
    # pyamg's spectral-radius estimates start from np.random vectors: seed both builds
    np.random.seed(0)
    ref = build(A, max_coarse=50).aspreconditioner()
    np.random.seed(0)
    M = PC.AMG(A, kind=kind, max_coarse=50)
    r = np.random.default_rng(0).standard_normal(A.shape[0])
    np.testing.assert_allclose(M.matvec(r), ref.matvec(r), rtol=1e-13, atol=1e-13)
    # empty rows: pyamg on the fluid submatrix, identity elsewhere
    grid = P.sphere((10, 10, 10), walls="dirichlet")
    A = grid.matrix()
    f = grid.fluid.ravel()
    np.random.seed(0)
    ref = build(A[f][:, f].tocsr(), max_coarse=50).aspreconditioner()
    np.random.seed(0)
    M = PC.AMG(A, kind=kind, max_coarse=50)
    r = np.random.default_rng(1).standard_normal(grid.n)
    z = M.matvec(r)
    np.testing.assert_allclose(z[f], ref.matvec(r[f]), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(z[~f], r[~f])
    with pytest.raises(ValueError, match="kind must be"):
        PC.AMG(A, kind="gmg")


def test_amg_singular_projection_keeps_pcg_working():
    """pyamg's 1 x 1 singular coarsest matrix holds only rounding; the raw cycle makes scipy's
    cg fail on this grid. With the system's null space the wrapper projects and converges."""
    grid = P.ellipsoids((20, 20, 20), n=5, seed=4)
    prob = grid.system(P.rhs_blobs(grid, seed=0))
    M = PC.AMG(prob)
    assert M.nullspace is prob.nullspace
    res = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M))
    assert res.success and res.n_iter < 20


@pytest.fixture(scope="module")
def elasticity():
    pyamg = pytest.importorskip("pyamg")
    A, B = pyamg.gallery.linear_elasticity((60, 60))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    return A, B, b


@pytest.mark.parametrize("with_B", [False, True], ids=["default-B", "rigid-body-B"])
def test_amg_bsr_elasticity_iterations_match_pyamg(elasticity, with_B):
    """BSR keeps its 2 x 2 blocks (CSR took 50 iterations against pyamg's 12) and ``B`` is
    passed through. Same rule on the same norm everywhere: ``||b - A x_k||_2 < rtol ||b||_2``
    on the recurrence residual (pyamg's default criterion 'rr', scipy's rule, ours)."""
    pyamg = pytest.importorskip("pyamg")
    A, B, b = elasticity
    assert A.format == "bsr" and A.blocksize == (2, 2)
    kw = {"B": B} if with_B else {}
    rtol = 1e-8
    np.random.seed(0)
    ml = pyamg.smoothed_aggregation_solver(A, **kw)
    residuals = []
    ml.solve(b, tol=rtol, accel="cg", residuals=residuals)
    n_pyamg = len(residuals) - 1          # residuals[0] is ||b - A x0||
    _, info, n_scipy = _scipy_cg(A, b, ml.aspreconditioner(), rtol)
    np.random.seed(0)
    M = PC.AMG(A, **kw)
    assert M.blocksize == 2 and len(M.hierarchy.levels) == len(ml.levels)
    assert M.hierarchy.levels[0].B.shape == (A.shape[0], 3 if with_B else 2)
    res = ns.cg(A, b, rtol=rtol, M=M)
    assert res.success and info == 0
    assert abs(res.n_iter - n_pyamg) <= 1 and abs(res.n_iter - n_scipy) <= 1
    assert res.n_iter <= (10 if with_B else 13)
    # iteration for iteration: the residual norms agree with pyamg's recorded ones
    ours = res.history["residual_norm"]
    k = min(len(ours), len(residuals))
    np.testing.assert_allclose(ours[:k], residuals[:k], rtol=1e-6)
    # the cycle itself is pyamg's (same seeded build)
    r = np.random.default_rng(3).standard_normal(A.shape[0])
    np.testing.assert_allclose(M.matvec(r), ml.aspreconditioner().matvec(r), rtol=1e-12,
                               atol=1e-12)


def test_amg_blocksize_for_csr_and_systems(elasticity):
    A, B, b = elasticity
    np.random.seed(0)
    ref = PC.AMG(A, B=B)
    r = np.random.default_rng(4).standard_normal(A.shape[0])
    csr = A.tocsr()
    for src in (csr, ns.problems.LinearSystem(csr, b)):
        np.random.seed(0)
        M = PC.AMG(src, B=B, blocksize=2)
        assert M.blocksize == 2
        np.testing.assert_allclose(M.matvec(r), ref.matvec(r), rtol=1e-12, atol=1e-12)
    # without a block size a CSR matrix is scalar AMG: many more iterations (the old defect)
    scalar = ns.cg(A, b, rtol=1e-8, M=PC.AMG(csr))
    blocked = ns.cg(A, b, rtol=1e-8, M=PC.AMG(csr, blocksize=2))
    assert PC.AMG(csr).blocksize == 1 and blocked.n_iter * 2 < scalar.n_iter
    with pytest.raises(ValueError, match="blocksize=7 does not divide"):
        PC.AMG(csr, blocksize=7)
    with pytest.raises(ValueError, match="blocksize must be a positive integer"):
        PC.AMG(csr, blocksize=0)
    with pytest.raises(ValueError, match=r"B must be an \(n, k\) array.*7200 rows"):
        PC.AMG(A, B=B[:-2])
    with pytest.raises(ValueError, match="smoothed aggregation only"):
        PC.AMG(A, kind="rs", B=B)


def test_amg_bsr_with_empty_block_rows_keeps_blocks():
    pyamg = pytest.importorskip("pyamg")
    A, B = pyamg.gallery.linear_elasticity((12, 12))
    n = A.shape[0]
    pad = sp.bsr_matrix(sp.block_diag([sp.csr_matrix((4, 4)), A.tocsr()]), blocksize=(2, 2))
    Bp = np.vstack([np.zeros((4, 3)), B])
    np.random.seed(0)
    ref = pyamg.smoothed_aggregation_solver(A, B=B).aspreconditioner()
    np.random.seed(0)
    M = PC.AMG(pad, B=Bp)
    assert M.blocksize == 2 and M.B.shape == (n, 3)
    r = np.random.default_rng(5).standard_normal(n + 4)
    z = M.matvec(r)
    np.testing.assert_array_equal(z[:4], r[:4])
    np.testing.assert_allclose(z[4:], ref.matvec(r[4:]), rtol=1e-12, atol=1e-12)
    # empty rows that split a block: CSR on the nonempty rows, with a warning
    half = sp.bsr_matrix(sp.block_diag([sp.csr_matrix((1, 1)), sp.eye(1),
                                        A.tocsr()]), blocksize=(2, 2))
    with pytest.warns(RuntimeWarning, match="do not fill whole 2 x 2 blocks"):
        assert PC.AMG(half).blocksize == 1


# -- GMG ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: P.sphere((16, 16, 16)),
    lambda: P.pool((20, 18, 17), obstacles=2, seed=1, waves=0.1),
    lambda: P.ellipsoids((33, 30), n=4, seed=2, walls={"x+": "dirichlet"}),
    lambda: CellGrid(np.where(np.arange(16)[:, None, None] == 8, SOLID, 0) * np.ones((16, 12, 10), int)),
])
def test_gmg_is_symmetric_positive(make):
    grid = make()
    M = PC.GMG(grid, max_coarse=20)
    assert len(M.levels) >= 3
    rng = np.random.default_rng(0)
    f = grid.fluid.ravel()
    for _ in range(3):
        x = rng.standard_normal(grid.n) * f
        y = rng.standard_normal(grid.n) * f
        xMy, yMx = x @ M.matvec(y), y @ M.matvec(x)
        assert abs(xMy - yMx) <= 1e-12 * np.sqrt((x @ M.matvec(x)) * (y @ M.matvec(y)))
        assert x @ M.matvec(x) > 0
    # linear
    x = rng.standard_normal(grid.n) * f
    y = rng.standard_normal(grid.n) * f
    np.testing.assert_allclose(M.matvec(2 * x - 3 * y), 2 * M.matvec(x) - 3 * M.matvec(y), atol=1e-10)


def test_gmg_dense_operator_is_spd_on_fluid():
    grid = P.pool((12, 10), obstacles=1, seed=4)
    M = PC.GMG(grid, max_coarse=4)
    f = np.flatnonzero(grid.fluid.ravel())
    E = np.zeros((grid.n, f.size))
    E[f, np.arange(f.size)] = 1.0
    Md = np.column_stack([M.matvec(E[:, j]) for j in range(f.size)])[f]
    np.testing.assert_allclose(Md, Md.T, atol=1e-12)
    assert np.linalg.eigvalsh(Md).min() > 0


def test_gmg_single_level_is_exact_pinv():
    grid = P.sphere((8, 8))
    M = PC.GMG(grid, max_coarse=10_000)
    assert len(M.levels) == 1
    b = P.rhs_noise(grid, seed=0)
    np.testing.assert_allclose(grid.matrix() @ M.matvec(b), b, atol=1e-12)


def test_gmg_grid_independent_iterations():
    """Iterations to 1e-6 grow by at most 2 from 32^3 to 64^3 (the issue's goal is stated for
    64^3 -> 128^3; that pair runs in the benchmark)."""
    counts = {}
    for n in (32, 64):
        for name, make in (("sphere", lambda s: P.sphere(s, walls="dirichlet")),
                           ("pool", lambda s: P.pool(s, obstacles=2, seed=1, waves=0.1))):
            grid = make((n, n, n))
            prob = grid.system(P.rhs_blobs(grid, seed=0))
            res = ns.solve(prob, ns.solvers.CG(rtol=1e-6, M=PC.GMG(grid)))
            assert res.success
            counts[name, n] = res.n_iter
    for name in ("sphere", "pool"):
        assert counts[name, 64] <= counts[name, 32] + 2, counts
        assert counts[name, 64] <= 12, counts


def test_gmg_bad_inputs():
    with pytest.raises(TypeError, match="CellGrid"):
        PC.GMG(sp.identity(4, format="csr"))
    with pytest.raises(ValueError, match="nu"):
        PC.GMG(P.box((8, 8)), nu=0)
    with pytest.raises(ValueError, match="max_coarse"):
        PC.GMG(P.box((8, 8)), max_coarse=0)
    M = PC.GMG(P.box((8, 8)))
    with pytest.raises(ValueError, match="length 64"):
        M.matvec(np.ones(3))


# -- kernels against references ---------------------------------------------------------------

def _grid_levels(grid):
    from neurosolve.solvers.preconditioners.gmg import GMG

    return GMG(grid, max_coarse=1)._levels


def _dense_from(apply, n_in, n_out):
    out = np.zeros((n_out, n_in))
    for j in range(n_in):
        e = np.zeros(n_in)
        e[j] = 1.0
        out[:, j] = apply(e)
    return out


def test_coarse_operator_is_half_galerkin_and_restriction_is_transpose():
    from neurosolve.backends import stencil_kernels as K

    grid = P.pool((7, 6, 5), obstacles=1, seed=3, walls={"x-": "dirichlet"})
    L0, L1 = _grid_levels(grid)[:2]
    # piecewise-constant aggregation P0 built independently
    shape, cshape = L0.shape, L1.shape
    fine = np.arange(int(np.prod(shape))).reshape(shape)
    rows, cols = [], []
    for idx in np.ndindex(*shape):
        if L0.d[idx] > 0:
            rows.append(fine[idx])
            cols.append(np.ravel_multi_index(tuple(i // 2 if s > 1 else 0 for i, s in zip(idx, shape)), cshape))
    P0 = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(fine.size, int(np.prod(cshape))))
    A = grid.matrix()
    Ac_ref = (0.5 * (P0.T @ A @ P0)).toarray()
    ip, ind, dat = K.stencil_csr(L1.d, L1.cx, L1.cy, L1.cz)
    Ac = sp.csr_matrix((dat, ind, ip), shape=Ac_ref.shape).toarray()
    np.testing.assert_allclose(Ac, Ac_ref, atol=1e-14)
    nf, nc = L0.d.size, L1.d.size

    def prolong(xc):
        xc = xc.reshape(cshape) * (L1.d > 0)
        xf = np.zeros(shape)
        K.prolong_add(xc, L0.inv_w, *L0.tables, xf)
        return xf.ravel()

    def restrict(rf):
        rc = np.zeros(cshape)
        K.restrict(rf.reshape(shape).copy(), L0.inv_w, L1.d, *L0.tables, rc)
        return rc.ravel()

    Pd = _dense_from(prolong, nc, nf)
    Rd = _dense_from(restrict, nf, nc)
    active_c = (L1.d > 0).ravel()
    np.testing.assert_allclose(Rd[active_c], Pd.T[active_c], atol=1e-15)


def test_interpolation_reproduces_constants_with_neumann_boundaries():
    from neurosolve.backends import stencil_kernels as K

    grid = P.ellipsoids((13, 12, 11), n=3, seed=1)       # solids and Neumann walls only
    L0, L1 = _grid_levels(grid)[:2]
    xf = np.zeros(L0.shape)
    K.prolong_add((L1.d > 0).astype(float), L0.inv_w, *L0.tables, xf)
    np.testing.assert_allclose(xf[L0.d > 0], 1.0, atol=1e-14)
    assert np.all(xf[L0.d == 0] == 0)


def test_rbgs_sweep_matches_reference():
    from neurosolve.backends import stencil_kernels as K

    grid = P.sphere((6, 7, 5), radius=1.5)
    d, cx, cy, cz = grid._stencil3()
    inv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0.0)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(d.shape) * (d > 0)
    x = rng.standard_normal(d.shape) * (d > 0)
    A = grid.matrix().toarray()
    ref = x.ravel().copy()
    red = (np.indices(d.shape).sum(axis=0) % 2 == 0).ravel() & (d > 0).ravel()
    for i in np.flatnonzero(red):   # red cells only couple to black cells: order-free update
        ref[i] = (b.ravel()[i] - (A[i] @ ref - A[i, i] * ref[i])) / A[i, i]
    K.rbgs_sweep(inv, cx, cy, cz, b, x, 0)
    np.testing.assert_allclose(x.ravel(), ref, atol=1e-13)


def test_preconditioners_accept_systems_operators_and_matrices():
    grid = P.sphere((10, 9, 8))
    b = P.rhs_blobs(grid, seed=1)
    csr_sys, mf_sys = grid.system(b), grid.system(b, matrix_free=True)
    r = np.random.default_rng(2).standard_normal(grid.n) * grid.fluid.ravel()
    for cls in (PC.Jacobi, PC.IC0, PC.SSOR):
        z = [cls(src).matvec(r) for src in (csr_sys, mf_sys, mf_sys.A, grid.matrix())]
        for zi in z[1:]:
            np.testing.assert_array_equal(zi, z[0])
    z = [PC.GMG(src).matvec(r) for src in (grid, csr_sys, mf_sys.A)]
    for zi in z[1:]:
        np.testing.assert_array_equal(zi, z[0])
    res = ns.solve(mf_sys, ns.solvers.CG(rtol=1e-8, M=PC.IC0(mf_sys)))
    assert res.success
    with pytest.raises(TypeError, match="LinearSystem, a matrix or a Poisson operator"):
        PC.IC0("A")
