"""aslinearoperator over every supported input kind."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import neurosolve as ns
from neurosolve.operators import (FunctionOperator, MatrixOperator, ScipyOperator,
                                  aslinearoperator)


def poisson1d(n):
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()


def test_kinds_and_flags():
    A = poisson1d(5)
    x = np.arange(5.0)
    cases = [
        (A.toarray(), MatrixOperator, True),
        (A, MatrixOperator, True),
        (sp.coo_matrix(A), MatrixOperator, True),
        (spla.aslinearoperator(A), ScipyOperator, True),
        (torch.as_tensor(A.toarray()), MatrixOperator, True),
        (torch.as_tensor(A.toarray()).to_sparse_csr(), MatrixOperator, True),
        (lambda v: A @ v, FunctionOperator, False),
    ]
    for obj, cls, linear in cases:
        op = aslinearoperator(obj)
        assert isinstance(op, cls) and op.is_linear is linear
        xin = torch.as_tensor(x) if op.array_library == "torch" else x
        y = op.matvec(xin)
        y = y.numpy() if isinstance(y, torch.Tensor) else y
        np.testing.assert_allclose(y, A @ x)


def test_declared_linear_callable_and_spd_flag():
    op = aslinearoperator(lambda v: 2 * v, linear=True, spd=True, shape=(3, 3))
    assert op.is_linear and op.is_spd and op.shape == (3, 3)
    with pytest.raises(ValueError, match="linear=False only applies"):
        aslinearoperator(np.eye(2), linear=False)
    with pytest.raises(TypeError, match="cannot interpret"):
        aslinearoperator("not an operator")


def test_kernel_equals_matvec_and_diagonal():
    A = poisson1d(50)
    op = aslinearoperator(A)
    x = np.random.default_rng(0).standard_normal(50)
    from neurosolve.backends.linear_kernels import select

    mv = op.bind(select("numba"))
    np.testing.assert_allclose(mv(x), A @ x)
    np.testing.assert_allclose(op.diagonal(), A.diagonal())
    top = aslinearoperator(torch.as_tensor(A.toarray()).to_sparse_csr())
    np.testing.assert_allclose(top.diagonal().numpy(), A.diagonal())


def test_pyamg_aspreconditioner_works_unchanged():
    pyamg = pytest.importorskip("pyamg")
    A = pyamg.gallery.poisson((24, 24), format="csr")
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    ml = pyamg.smoothed_aggregation_solver(A)
    M = ml.aspreconditioner()
    xs = []
    spla.cg(A, b, rtol=1e-8, M=M, callback=lambda xk: xs.append(xk))
    res = ns.cg(A, b, rtol=1e-8, M=M)
    assert res.success and res.n_iter == len(xs) and res.n_iter < 20
    assert res.certificate["relative_residual"] < 1e-8
