"""``backend="numpy"`` runs no numba code, in every family.

Each case builds its problem first (a gallery may use numba to assemble data), then
replaces every numba dispatcher reachable from a loaded ``neurosolve`` module by a
function that raises, and solves with ``backend="numpy"``. A solver that still reaches a
numba kernel (through an inline branch, a kernel table or an operator's fast path)
fails here. ``stats["backend"]`` must say ``"numpy"``.
"""

import sys

import numpy as np
import pytest

import neurosolve as ns


def _poisson_matrix_free():
    from neurosolve.problems import poisson

    grid = poisson.sphere((12, 12, 12), walls="dirichlet")
    return grid.system(poisson.rhs_blobs(grid, seed=0), matrix_free=True), \
        ns.solvers.CG(rtol=1e-8)


def _poisson_csr():
    from neurosolve.problems import poisson

    grid = poisson.box((24, 24))
    return grid.system(poisson.rhs_blobs(grid, seed=1)), ns.solvers.CG(rtol=1e-8)


def _logistic():
    from neurosolve.problems import smooth_gallery as gal

    rng = np.random.default_rng(0)
    A = rng.standard_normal((100, 8))
    y = np.where(A @ rng.standard_normal(8) > 0, 1.0, -1.0)
    return gal.logistic(A, y, mu=1e-2), ns.solvers.GNSNewton()


def _convex_relu():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.maximum(X @ rng.standard_normal(3), 0.0)
    return ns.problems.ConvexReLU(X, y, 1e-2, patterns=8, seed=0), \
        ns.solvers.ADMM(maxiter=300)


def _bilevel():
    from neurosolve.problems import bilevel_gallery as bg

    return bg.toy_b(5), ns.solvers.LVHBA(maxiter=200)


def _fixed_point():
    M = 0.5 * np.eye(4)
    c = np.ones(4)
    return ns.problems.FixedPointProblem(lambda z: M @ z + c, np.zeros(4)), \
        ns.solvers.FixedPoint(rtol=1e-10)


CASES = {"cg-stencil": _poisson_matrix_free, "cg-csr": _poisson_csr, "gns": _logistic,
         "admm": _convex_relu, "lvhba": _bilevel, "fixed-point": _fixed_point}


@pytest.fixture
def numba_forbidden(monkeypatch):
    """Replace every numba dispatcher in loaded neurosolve modules by a raising stub."""
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover
        pytest.skip("numba not installed")

    def install():
        hit = []
        for name, mod in list(sys.modules.items()):
            if not name.startswith("neurosolve") or mod is None:
                continue
            for attr, val in list(vars(mod).items()):
                if isinstance(val, CPUDispatcher):
                    def stub(*a, _n=f"{name}.{attr}", **k):
                        hit.append(_n)
                        raise AssertionError(f"numba kernel {_n} ran under backend='numpy'")
                    monkeypatch.setattr(mod, attr, stub)
        return hit

    return install


@pytest.mark.parametrize("name", list(CASES))
def test_backend_numpy_runs_no_numba(name, numba_forbidden):
    problem, solver = CASES[name]()
    # make sure the family's numba modules are loaded, so their kernels get stubbed
    ns.solve(problem, solver, backend="auto")
    hit = numba_forbidden()
    res = ns.solve(problem, solver, backend="numpy")
    assert not hit, hit
    assert res.stats["backend"] == "numpy"
    assert res.status is not ns.Status.NONFINITE, res.message
