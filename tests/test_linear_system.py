"""LinearSystem: conversion between libraries, null spaces, certificates."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import neurosolve as ns
from neurosolve.problems import LinearSystem, Nullspace
from neurosolve.solvers import CG


def neumann2d(n):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)).tolil()
    T[0, 0] = T[-1, -1] = 1.0
    return (sp.kron(T, sp.identity(n)) + sp.kron(sp.identity(n), T)).tocsr()


def test_to_torch_and_back_gives_same_answer():
    A = neumann2d(8) + 0.1 * sp.identity(64)
    b = np.random.default_rng(0).standard_normal(64)
    p = LinearSystem(A.tocsr(), b)
    pt = p.to(device="cpu")
    assert pt.array_library == "torch" and pt.A.is_sparse
    rn = ns.solve(p, CG(rtol=1e-10))
    rt = ns.solve(pt, CG(rtol=1e-10))
    assert isinstance(rt.x, torch.Tensor) and rt.x.dtype == torch.float64
    assert rt.n_iter == rn.n_iter
    np.testing.assert_allclose(rt.x.numpy(), rn.x, rtol=1e-10, atol=1e-12)
    back = pt.to(device="numpy")
    assert back.array_library == "numpy" and sp.issparse(back.A.matrix)
    np.testing.assert_allclose(ns.solve(back, CG(rtol=1e-10)).x, rn.x, rtol=1e-10)


def test_float32_torch_system():
    A = neumann2d(8) + 0.5 * sp.identity(64)
    b = np.random.default_rng(1).standard_normal(64)
    pt = LinearSystem(A.tocsr(), b).to(dtype=torch.float32)
    res = ns.solve(pt, CG(rtol=1e-5))
    assert res.success and res.x.dtype == torch.float32
    assert res.certificate["relative_residual"] < 1e-4  # float32 floor documented


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_nullspace_labels_projection(lib):
    labels = np.array([0, 0, 0, 1, 1, -1])
    nsp = Nullspace(labels=labels)
    v = np.array([1.0, 2.0, 3.0, 5.0, 7.0, 9.0])
    expect = np.array([-1.0, 0.0, 1.0, -1.0, 1.0, 9.0])
    vin = torch.as_tensor(v) if lib == "torch" else v
    out = nsp.project(vin)
    out = out.numpy() if lib == "torch" else out
    np.testing.assert_allclose(out, expect)
    assert nsp.component_norm(vin) == pytest.approx(np.sqrt(3 * 2.0**2 + 2 * 6.0**2))


def test_nullspace_basis_equals_labels():
    labels = np.array([0, 0, 1, 1, 1])
    B = np.zeros((5, 2))
    B[:2, 0] = 1 / np.sqrt(2)
    B[2:, 1] = 1 / np.sqrt(3)
    v = np.arange(5.0)
    np.testing.assert_allclose(Nullspace(basis=B).project(v), Nullspace(labels=labels).project(v),
                               atol=1e-14)
    with pytest.raises(ValueError, match="exactly one of"):
        Nullspace()


def test_neumann_torch_solution_mean_does_not_drift():
    A = neumann2d(12)
    b = np.random.default_rng(2).standard_normal(144)
    b -= b.mean()
    nsp = Nullspace(labels=np.zeros(144, dtype=int))
    pt = LinearSystem(A, b, nullspace=nsp).to()
    res = ns.solve(pt, CG(rtol=1e-10))
    assert res.success and abs(float(res.x.mean())) < 1e-12


def test_gallery_problem_to_torch_keeps_grid_and_warns_nothing():
    import warnings

    from neurosolve.problems import poisson

    grid = poisson.sphere((12, 12, 12))
    p = grid.system(poisson.rhs_blobs(grid))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torch beta/invariant warning would fail here
        pt = p.to("torch")
        rt = ns.solve(pt, CG(rtol=1e-8), progress=False)
    assert type(pt).__name__ == "PoissonSystem" and pt.grid is grid
    assert pt.A.matrix.layout == torch.sparse_csr and pt.b.dtype == torch.float64
    rn = ns.solve(p, CG(rtol=1e-8), progress=False)
    assert rt.success and abs(rt.n_iter - rn.n_iter) <= 1
    np.testing.assert_allclose(rt.x.numpy(), rn.x, rtol=1e-6, atol=1e-9)
    assert type(pt.to("numpy")).__name__ == "PoissonSystem"


def test_to_rejects_unknown_library():
    p = LinearSystem(sp.identity(4, format="csr"), np.ones(4))
    with pytest.raises(ValueError, match="library must be"):
        p.to(3)
