"""Variable coefficients in the Poisson gallery: -div(k grad p) on cell grids.

Oracles: the unit stencil (k = None) bit for bit, a hand-assembled two-cell system
(harmonic face average), scaling (constant k = c gives c A), a dense finite-volume assembly
written here cell by cell, scipy's CG, and pyamg's smoothed aggregation.
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC


def _dense_fv(grid):
    """-div(k grad p) assembled face by face from the definitions (reference)."""
    cells, k, shape = grid.cells, grid.coefficients, grid.shape
    k = np.ones(shape) if k is None else k
    n = grid.n
    A = np.zeros((n, n))
    idx = np.arange(n).reshape(shape)
    for c in np.ndindex(shape):
        if cells[c] != P.FLUID:
            continue
        i = idx[c]
        for a in range(grid.ndim):
            for step, face in ((-1, f"{'xyz'[a]}-"), (1, f"{'xyz'[a]}+")):
                nb = list(c)
                nb[a] += step
                if not 0 <= nb[a] < shape[a]:
                    if grid.walls[face] == "dirichlet":
                        A[i, i] += k[c]
                    continue
                nb = tuple(nb)
                if cells[nb] == P.SOLID:
                    continue
                if cells[nb] == P.AIR:
                    A[i, i] += k[c]
                    continue
                h = 2 * k[c] * k[nb] / (k[c] + k[nb])
                A[i, i] += h
                A[i, idx[nb]] -= h
    return A


def test_none_and_unit_field_give_the_unit_stencil_bit_for_bit():
    g = P.pool((20, 16), obstacles=2, seed=3, walls="dirichlet")
    A0 = g.matrix()
    A1 = g.with_coefficients(np.ones(g.shape)).matrix()
    assert (A0 != A1).nnz == 0 and not g.variable and g.with_coefficients(np.ones(g.shape)).variable


def test_two_cells_harmonic_face_and_dirichlet_faces():
    cells = np.zeros((2, 1), dtype=int)
    g = P.CellGrid(cells, walls="dirichlet", coefficients=np.array([[1.0], [3.0]]))
    A = g.matrix().toarray()
    h = 2 * 1 * 3 / 4
    # each cell: the shared face (h), its Dirichlet wall face along x (own k), and two
    # Dirichlet wall faces along y (own k)
    expected = np.array([[h + 1 + 2 * 1, -h], [-h, h + 3 + 2 * 3]])
    np.testing.assert_allclose(A, expected, rtol=1e-15)


@pytest.mark.parametrize("field", ["lognormal", "layered", "inclusions"])
def test_matrix_matches_a_face_by_face_assembly(field):
    shape = (9, 7)
    k = {"lognormal": P.lognormal_field(shape, sigma=1.5, seed=1),
         "layered": P.layered_field(shape, contrast=1e3, seed=2),
         "inclusions": P.inclusions_field(shape, n=3, contrast=1e4, radius=0.3, seed=3)}[field]
    g = P.pool(shape, obstacles=1, seed=0, walls={"x-": "dirichlet"}).with_coefficients(k)
    A = g.matrix().toarray()
    np.testing.assert_allclose(A, _dense_fv(g), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(A, A.T)


def test_constant_field_scales_the_matrix_and_the_fft_solve():
    from neurosolve.solvers.fast_poisson import fast_poisson_solve

    g = P.box((8, 6, 5), walls="dirichlet")
    gc = g.with_coefficients(np.full(g.shape, 2.5))
    np.testing.assert_allclose(gc.matrix().toarray(), 2.5 * g.matrix().toarray(), rtol=1e-15)
    b = P.rhs_noise(g, seed=0)
    x = fast_poisson_solve(gc, b)
    assert np.linalg.norm(gc.matrix() @ x - b) < 1e-12
    with pytest.raises(ValueError, match="variable coefficient"):
        fast_poisson_solve(g.with_coefficients(P.lognormal_field(g.shape, seed=0)), b)


def test_matrix_free_numpy_and_torch_match_the_csr():
    g = P.sphere((12, 10, 8), walls="dirichlet").with_coefficients(
        P.lognormal_field((12, 10, 8), sigma=2.0, seed=4))
    A = g.matrix()
    v = np.random.default_rng(0).standard_normal(g.n) * g.fluid.reshape(-1)
    np.testing.assert_allclose(g.operator().matvec(v), A @ v, rtol=1e-12, atol=1e-12)
    torch = pytest.importorskip("torch")
    y = g.operator("torch").matvec(torch.as_tensor(v))
    np.testing.assert_allclose(y.numpy(), A @ v, rtol=1e-12, atol=1e-12)


def test_neumann_component_keeps_its_constant_null_space():
    g = P.box((10, 10), walls="neumann").with_coefficients(P.lognormal_field((10, 10), seed=5))
    A = g.matrix()
    assert np.abs(A @ np.ones(g.n)).max() < 1e-12
    assert g.nullspace() is not None and g.components().max() == 0
    gd = P.box((10, 10), walls={"y+": "dirichlet"}).with_coefficients(g.coefficients)
    assert gd.nullspace() is None


@pytest.mark.parametrize("field", ["lognormal", "layered", "inclusions"])
def test_pcg_with_gmg_and_amg_solves_high_contrast_systems(field):
    shape = (48, 48)
    k = {"lognormal": P.lognormal_field(shape, sigma=2.0, seed=0),
         "layered": P.layered_field(shape, contrast=1e4, seed=0),
         "inclusions": P.inclusions_field(shape, contrast=1e4, seed=0)}[field]
    grid = P.pool(shape, obstacles=2, seed=1).with_coefficients(k)
    prob = grid.system(P.rhs_blobs(grid, seed=0))
    A = grid.matrix()
    for M in (PC.GMG(grid), PC.AMG(prob)):
        res = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M))
        assert res.success
        assert np.linalg.norm(prob.b - A @ res.x) <= 1.01e-8 * np.linalg.norm(prob.b)
    # the same GMG as a scipy preconditioner gives the same iterate count (same M)
    M = PC.GMG(grid)
    count = [0]
    spla.cg(A, prob.b, rtol=1e-8, atol=0.0, maxiter=500,
            M=spla.LinearOperator(A.shape, matvec=M.matvec), callback=lambda xk: count.__setitem__(0, count[0] + 1))
    ours = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M)).n_iter
    assert abs(ours - count[0]) <= 1


def test_gmg_is_symmetric_positive_definite_with_coefficients():
    grid = P.pool((24, 20), obstacles=2, seed=2).with_coefficients(
        P.inclusions_field((24, 20), contrast=1e4, radius=0.25, seed=1))
    M = PC.GMG(grid)
    rng = np.random.default_rng(0)
    f = grid.fluid.reshape(-1)
    x, y = rng.standard_normal(grid.n) * f, rng.standard_normal(grid.n) * f
    assert abs(x @ M.matvec(y) - y @ M.matvec(x)) <= 1e-10 * np.linalg.norm(x) * np.linalg.norm(y)
    assert x @ M.matvec(x) > 0


def _dense_transfers(gmg, l=0):
    """P (fine x coarse) and R (coarse x fine) of level l, column by column through GMG's
    own transfer methods."""
    L, C = gmg._levels[l], gmg._levels[l + 1]
    nf, nc = L.d.size, C.d.size
    Pd, Rd = np.zeros((nf, nc)), np.zeros((nc, nf))
    for j in range(nc):
        e = np.zeros(nc)
        e[j] = 1.0
        xf = np.zeros(L.shape)
        gmg._prolong_add(l, (e * (C.d.ravel() > 0)).reshape(C.shape), xf)
        Pd[:, j] = xf.ravel()
    for i in range(nf):
        e = np.zeros(L.shape)
        e.reshape(-1)[i] = 1.0
        rc = np.zeros(C.shape)
        gmg._restrict(l, e, rc)
        Rd[:, i] = rc.ravel()
    return Pd, Rd


def test_weighted_interpolation_keeps_constants_and_transposes_exactly():
    shape = (20, 18)
    grid = P.pool(shape, obstacles=2, seed=1).with_coefficients(
        P.inclusions_field(shape, contrast=1e4, radius=0.2, seed=0))
    gmg = PC.GMG(grid, max_coarse=1)
    lin = PC.GMG(grid, max_coarse=1, interpolation="linear")
    Pw, Rw = _dense_transfers(gmg)
    Pl, _ = _dense_transfers(lin)
    L, C = gmg._levels[:2]
    fluid_f = L.d.ravel() > 0
    # rows over fluid cells with no air parent sum to one (constants are interpolated)
    air_parent = (Pl[:, (C.air & (C.d <= 0)).ravel()] != 0).any(axis=1) if (C.air & (C.d <= 0)).any() \
        else np.zeros(L.d.size, bool)
    rows = fluid_f & ~air_parent
    np.testing.assert_allclose(Pw[rows].sum(axis=1), 1.0, atol=1e-13)
    np.testing.assert_array_equal(Pw[~fluid_f], 0.0)
    active_c = C.d.ravel() > 0
    np.testing.assert_allclose(Rw[active_c], Pw.T[active_c], atol=1e-15)
    # the weights differ from the linear rule exactly where the strengths vary
    assert np.abs(Pw - Pl).max() > 0.1
    # with k = 1 the weighted rule is the linear one, bit for bit
    unit = grid.with_coefficients(None)
    r = np.random.default_rng(0).standard_normal(unit.n) * unit.fluid.ravel()
    assert np.array_equal(PC.GMG(unit)(r), PC.GMG(unit, interpolation="linear")(r))


def test_weighted_interpolation_cuts_pcg_iterations_on_high_contrast():
    """Interpolating across a 1e4 jump is what makes linear-transfer GMG slow on
    inclusions; the weighted rule must at least halve PCG's iterations there (measured:
    about 4x at 256^2) and keep the V-cycle SPD."""
    shape = (128, 128)
    grid = P.pool(shape, obstacles=2, seed=1).with_coefficients(
        P.inclusions_field(shape, contrast=1e4, seed=0))
    prob = grid.system(P.rhs_blobs(grid, seed=0))
    its = {}
    for interp in ("linear", "weighted"):
        res = ns.solve(prob, ns.solvers.CG(rtol=1e-8, maxiter=2000,
                                           M=PC.GMG(grid, interpolation=interp)))
        assert res.success
        its[interp] = res.n_iter
    assert its["weighted"] <= 0.5 * its["linear"], its
    M = PC.GMG(grid)
    rng = np.random.default_rng(1)
    f = grid.fluid.reshape(-1)
    x, y = rng.standard_normal(grid.n) * f, rng.standard_normal(grid.n) * f
    assert abs(x @ M(y) - y @ M(x)) <= 1e-10 * np.linalg.norm(x) * np.linalg.norm(y)
    assert x @ M(x) > 0


def test_gmg_interpolation_argument_is_checked():
    with pytest.raises(ValueError, match="interpolation"):
        PC.GMG(P.box((8, 8)), interpolation="cubic")


def test_fields_have_the_declared_statistics():
    k = P.lognormal_field((64, 64), sigma=1.5, seed=0)
    assert np.log(k).mean() == pytest.approx(0.0, abs=1e-10)
    assert np.log(k).std() == pytest.approx(1.5, rel=1e-10)
    lay = P.layered_field((32, 32), contrast=1e4, seed=0)
    assert lay.max() == pytest.approx(100.0) and lay.min() >= 1e-2 * (1 - 1e-12)
    inc = P.inclusions_field((40, 40), contrast=1e4, seed=0)
    assert set(np.unique(inc)) <= {1e-4, 1.0, 1e4} and inc.max() == 1e4 and inc.min() == 1e-4
    np.testing.assert_array_equal(P.lognormal_field((16, 16), seed=3),
                                  P.lognormal_field((16, 16), seed=3))


def test_bad_coefficients_are_refused_with_the_argument_named():
    cells = np.zeros((4, 4), dtype=int)
    with pytest.raises(ValueError, match="shape"):
        P.CellGrid(cells, coefficients=np.ones((4, 5)))
    with pytest.raises(ValueError, match="> 0"):
        P.CellGrid(cells, coefficients=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="finite"):
        P.CellGrid(cells, coefficients=np.full((4, 4), np.nan))
    with pytest.raises(TypeError, match="real numeric"):
        P.CellGrid(cells, coefficients=np.full((4, 4), 1 + 1j))
    solid = cells.copy()
    solid[0, 0] = P.SOLID
    k = np.ones((4, 4))
    k[0, 0] = 0.0  # a zero on a solid cell is ignored
    assert P.CellGrid(solid, coefficients=k).variable
    with pytest.raises(ValueError, match="sigma"):
        P.lognormal_field((8, 8), sigma=-1)
    with pytest.raises(ValueError, match="contrast"):
        P.inclusions_field((8, 8), contrast=0.5)


def test_plates_geometry():
    g = P.plates((20, 12), n_plates=3, slit=0.25, seed=1)
    solid_planes = [i for i in range(20) if (g.cells[i] == P.SOLID).any()]
    assert len(solid_planes) == 3
    for i in solid_planes:
        assert (g.cells[i] == P.FLUID).sum() == 3  # the slit: round(0.25 * 12) cells
    assert g.nullspace() is None
    prob = g.system(P.rhs_blobs(g, seed=0))
    assert ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=PC.GMG(g))).success
    with pytest.raises(ValueError, match="n_plates"):
        P.plates((4, 4), n_plates=4)
