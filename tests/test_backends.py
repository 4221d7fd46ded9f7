"""Backend resolution, array ops, and numba kernels against numpy references."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from neurosolve.backends import backend_for, common_library, ops_for
from neurosolve.backends import numba_kernels as nk


def test_auto_resolution():
    assert backend_for("auto", "numpy", available=("numpy", "numba")).name == "numba"
    assert backend_for("auto", "numpy", available=("numpy",)).name == "numpy"
    assert backend_for("auto", "torch").name == "torch"
    with pytest.raises(ValueError, match="no 'numba' kernels"):
        backend_for("numba", "numpy", available=("numpy", "torch"))


def test_common_library():
    assert common_library(np.ones(2), None) == "numpy"
    assert common_library(torch.ones(2)) == "torch"
    assert common_library(sp.eye(2), np.ones(2)) == "numpy"
    with pytest.raises(TypeError, match="mix array libraries"):
        common_library(np.ones(2), torch.ones(2), names=("A", "b"))


@pytest.mark.parametrize("lib", ["numpy", "numba", "torch"])
def test_ops_agree(lib):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(7), rng.standard_normal(7)
    ops = ops_for("numpy", "numba") if lib == "numba" else ops_for(lib)
    A = ops.from_numpy(a) if lib == "torch" else a
    B = ops.from_numpy(b) if lib == "torch" else b
    assert float(ops.dot(A, B)) == pytest.approx(a @ b, rel=1e-14)
    assert float(ops.norm(A)) == pytest.approx(np.linalg.norm(a), rel=1e-14)
    assert ops.isfinite(A) and not ops.isfinite(A * np.nan)
    c = ops.copy(A)
    c[0] = 99.0
    assert float(A[0]) != 99.0


def test_numba_fused_updates_match_numpy():
    rng = np.random.default_rng(3)
    p, q, x, r = (rng.standard_normal(50) for _ in range(4))
    x_ref, r_ref = x + 0.3 * p, r - 0.3 * q
    rr = nk.cg_update(0.3, p, q, x, r)
    np.testing.assert_allclose(x, x_ref, rtol=1e-14)
    np.testing.assert_allclose(r, r_ref, rtol=1e-14)
    assert rr == pytest.approx(r_ref @ r_ref, rel=1e-13)
    z = rng.standard_normal(50)
    ref = z + 0.7 * p
    np.testing.assert_allclose(nk.xpby(z, 0.7, p.copy()), ref, rtol=1e-14)
    y = rng.standard_normal(50)
    yr = y + 2.0 * z
    assert nk.axpy_dot(2.0, z, y) == pytest.approx(yr @ yr, rel=1e-13)
    assert nk.dot(z, y) == pytest.approx(z @ y, rel=1e-13)
