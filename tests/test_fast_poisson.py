"""The exact DST/DCT Poisson solver for empty boxes."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from neurosolve.problems import poisson as P
from neurosolve.solvers.fast_poisson import fast_poisson_solve


@pytest.mark.parametrize("walls", ["dirichlet", "neumann", {"x-": "dirichlet"},
                                   {"y+": "dirichlet", "x+": "dirichlet"}])
@pytest.mark.parametrize("shape", [(17, 12), (9, 10, 7), (16, 16, 16)])
def test_residual_against_csr(walls, shape):
    grid = P.box(shape, walls=walls)
    b = P.rhs_noise(grid, seed=2)
    x = fast_poisson_solve(grid, b)
    A = grid.matrix()
    assert np.linalg.norm(A @ x - b) < 1e-12


def test_dirichlet_matches_spsolve_and_shape_input():
    shape = (12, 11, 10)
    grid = P.box(shape, walls="dirichlet")
    b = P.rhs_blobs(grid, seed=1)
    x_ref = spla.spsolve(grid.matrix().tocsc(), b)
    np.testing.assert_allclose(fast_poisson_solve(shape, b), x_ref, atol=1e-12)
    xg = fast_poisson_solve(shape, b.reshape(shape), walls="dirichlet")
    assert xg.shape == shape
    np.testing.assert_allclose(xg.ravel(), x_ref, atol=1e-12)


def test_neumann_projects_b_and_returns_mean_zero():
    shape = (10, 12)
    grid = P.box(shape)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(grid.n) + 0.5          # incompatible: nonzero mean
    x = fast_poisson_solve(grid, b)
    assert abs(x.mean()) < 1e-14
    A = grid.matrix()
    np.testing.assert_allclose(A @ x, b - b.mean(), atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="empty box"):
        fast_poisson_solve(P.sphere((16, 16)), np.zeros(256))
    with pytest.raises(ValueError, match="empty box"):
        fast_poisson_solve(P.pool((8, 8)), np.zeros(64))
    with pytest.raises(ValueError, match="b has 10 entries"):
        fast_poisson_solve((4, 4), np.zeros(10))
    with pytest.raises(ValueError, match="contradicts"):
        fast_poisson_solve(P.box((4, 4)), np.zeros(16), walls="dirichlet")
    with pytest.raises(ValueError, match="shape"):
        fast_poisson_solve((4, 0), np.zeros(0))
