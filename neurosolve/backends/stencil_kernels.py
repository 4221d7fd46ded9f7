"""numba kernels for 5/7-point stencil operators on cell grids (Poisson gallery, GMG).

Every grid is handled as 3-D: a 2-D grid of shape ``(n0, n1)`` is viewed as
``(1, n0, n1)``. A stencil is stored as

* ``d``: the diagonal, shape ``(n0, n1, n2)`` (0 on inactive cells: empty rows);
* ``cx, cy, cz``: the coupling of cell ``(i, j, k)`` with its ``+1`` neighbour along
  axis 0, 1, 2 (the matrix entry is ``-c``; ``c = 0`` where either cell is inactive and
  on the last layer along that axis).

so ``(A x)[i] = d[i] x[i] - sum_nb c(i, nb) x[nb]``. Kernels are serial: on the 2-core
machine this library is tuned on, ``prange`` lost to thread start-up at these sizes
(the same finding as :mod:`neurosolve.backends.numba_kernels`).

Each kernel has a numpy/scipy reference it is tested against (tests/test_poisson.py,
tests/test_preconditioners.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "stencil_matvec",
    "stencil_residual",
    "stencil_csr",
    "coarsen_galerkin",
    "rbgs_sweep",
    "axis_tables",
    "interp_weights",
    "prolong_add",
    "restrict",
]


@njit(cache=True)
def _stencil_residual(d, cx, cy, cz, x, b, y):
    # y = b - A x, written as axis-wise sweeps over contiguous k-lines so that
    # the inner loops have no branches and vectorize. Rows with d = 0 have no couplings
    # (c = 0 wherever either cell is inactive), so they give y = b.
    n0, n1, n2 = d.shape
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                y[i, j, k] = b[i, j, k] - d[i, j, k] * x[i, j, k]
            if i > 0:
                for k in range(n2):
                    y[i, j, k] += cx[i - 1, j, k] * x[i - 1, j, k]
            if i < n0 - 1:
                for k in range(n2):
                    y[i, j, k] += cx[i, j, k] * x[i + 1, j, k]
            if j > 0:
                for k in range(n2):
                    y[i, j, k] += cy[i, j - 1, k] * x[i, j - 1, k]
            if j < n1 - 1:
                for k in range(n2):
                    y[i, j, k] += cy[i, j, k] * x[i, j + 1, k]
            for k in range(1, n2):
                y[i, j, k] += cz[i, j, k - 1] * x[i, j, k - 1]
            for k in range(n2 - 1):
                y[i, j, k] += cz[i, j, k] * x[i, j, k + 1]
    return y


@njit(cache=True)
def _stencil_matvec(d, cx, cy, cz, x, y):
    n0, n1, n2 = d.shape
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                y[i, j, k] = d[i, j, k] * x[i, j, k]
            if i > 0:
                for k in range(n2):
                    y[i, j, k] -= cx[i - 1, j, k] * x[i - 1, j, k]
            if i < n0 - 1:
                for k in range(n2):
                    y[i, j, k] -= cx[i, j, k] * x[i + 1, j, k]
            if j > 0:
                for k in range(n2):
                    y[i, j, k] -= cy[i, j - 1, k] * x[i, j - 1, k]
            if j < n1 - 1:
                for k in range(n2):
                    y[i, j, k] -= cy[i, j, k] * x[i, j + 1, k]
            for k in range(1, n2):
                y[i, j, k] -= cz[i, j, k - 1] * x[i, j, k - 1]
            for k in range(n2 - 1):
                y[i, j, k] -= cz[i, j, k] * x[i, j, k + 1]
    return y


def stencil_matvec(d, cx, cy, cz, x, y):
    """``y = A x`` for the stencil ``(d, cx, cy, cz)``; all arrays 3-D of one shape.

    Entries of ``x`` on inactive cells are multiplied by zero couplings (so they are
    ignored unless they are inf/NaN)."""
    if not (x.shape == y.shape == d.shape == cx.shape == cy.shape == cz.shape):
        raise ValueError(f"stencil_matvec: x {x.shape}, y {y.shape} and the stencil "
                         f"{d.shape} must have one shape")
    return _stencil_matvec(d, cx, cy, cz, x, y)


def stencil_residual(d, cx, cy, cz, x, b, r):
    """``r = b - A x`` (``r = b`` on inactive cells)."""
    return _stencil_residual(d, cx, cy, cz, x, b, r)


@njit(cache=True)
def _csr_count(d, cx, cy, cz):
    n0, n1, n2 = d.shape
    indptr = np.zeros(n0 * n1 * n2 + 1, dtype=np.int64)
    row = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                c = 0
                if d[i, j, k] != 0.0:
                    c = 1
                    if i > 0 and cx[i - 1, j, k] != 0.0:
                        c += 1
                    if i < n0 - 1 and cx[i, j, k] != 0.0:
                        c += 1
                    if j > 0 and cy[i, j - 1, k] != 0.0:
                        c += 1
                    if j < n1 - 1 and cy[i, j, k] != 0.0:
                        c += 1
                    if k > 0 and cz[i, j, k - 1] != 0.0:
                        c += 1
                    if k < n2 - 1 and cz[i, j, k] != 0.0:
                        c += 1
                indptr[row + 1] = indptr[row] + c
                row += 1
    return indptr


@njit(cache=True)
def _csr_fill(d, cx, cy, cz, indptr, indices, data):
    n0, n1, n2 = d.shape
    s0 = n1 * n2
    s1 = n2
    row = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                if d[i, j, k] != 0.0:
                    p = indptr[row]
                    # columns in increasing flat order: -s0, -s1, -1, 0, +1, +s1, +s0
                    if i > 0 and cx[i - 1, j, k] != 0.0:
                        indices[p] = row - s0
                        data[p] = -cx[i - 1, j, k]
                        p += 1
                    if j > 0 and cy[i, j - 1, k] != 0.0:
                        indices[p] = row - s1
                        data[p] = -cy[i, j - 1, k]
                        p += 1
                    if k > 0 and cz[i, j, k - 1] != 0.0:
                        indices[p] = row - 1
                        data[p] = -cz[i, j, k - 1]
                        p += 1
                    indices[p] = row
                    data[p] = d[i, j, k]
                    p += 1
                    if k < n2 - 1 and cz[i, j, k] != 0.0:
                        indices[p] = row + 1
                        data[p] = -cz[i, j, k]
                        p += 1
                    if j < n1 - 1 and cy[i, j, k] != 0.0:
                        indices[p] = row + s1
                        data[p] = -cy[i, j, k]
                        p += 1
                    if i < n0 - 1 and cx[i, j, k] != 0.0:
                        indices[p] = row + s0
                        data[p] = -cx[i, j, k]
                        p += 1
                row += 1


def stencil_csr(d, cx, cy, cz):
    """CSR arrays ``(indptr, indices, data)`` of the stencil, columns sorted, empty rows
    for inactive cells."""
    indptr = _csr_count(d, cx, cy, cz)
    nnz = int(indptr[-1])
    index_dtype = np.int32 if max(nnz, d.size) < 2**31 - 1 else np.int64
    indices = np.empty(nnz, dtype=np.int64)
    data = np.empty(nnz, dtype=np.float64)
    _csr_fill(d, cx, cy, cz, indptr, indices, data)
    return indptr.astype(index_dtype), indices.astype(index_dtype), data


@njit(cache=True)
def coarsen_galerkin(d, cx, cy, cz, scale):
    """Coarse stencil ``scale * P0^T A P0`` for piecewise-constant aggregation of 2^d cells.

    ``P0`` maps a coarse cell to its (up to 2 x 2 x 2) children; axes of length 1 are not
    coarsened. The result is again a 5/7-point stencil: children only couple through faces.
    """
    n0, n1, n2 = d.shape
    m0 = (n0 + 1) // 2
    m1 = (n1 + 1) // 2
    m2 = (n2 + 1) // 2
    dc = np.zeros((m0, m1, m2))
    cxc = np.zeros((m0, m1, m2))
    cyc = np.zeros((m0, m1, m2))
    czc = np.zeros((m0, m1, m2))
    for i in range(n0):
        I = i // 2
        for j in range(n1):
            J = j // 2
            for k in range(n2):
                K = k // 2
                dc[I, J, K] += d[i, j, k]
                if i < n0 - 1:
                    c = cx[i, j, k]
                    if c != 0.0:
                        if (i + 1) // 2 == I:
                            dc[I, J, K] -= 2.0 * c
                        else:
                            cxc[I, J, K] += c
                if j < n1 - 1:
                    c = cy[i, j, k]
                    if c != 0.0:
                        if (j + 1) // 2 == J:
                            dc[I, J, K] -= 2.0 * c
                        else:
                            cyc[I, J, K] += c
                if k < n2 - 1:
                    c = cz[i, j, k]
                    if c != 0.0:
                        if (k + 1) // 2 == K:
                            dc[I, J, K] -= 2.0 * c
                        else:
                            czc[I, J, K] += c
    for I in range(m0):
        for J in range(m1):
            for K in range(m2):
                v = dc[I, J, K] * scale
                # an aggregate whose row sum cancels to rounding is a closed pocket
                if v <= 1e-12 * scale:
                    v = 0.0
                dc[I, J, K] = v
                cxc[I, J, K] *= scale
                cyc[I, J, K] *= scale
                czc[I, J, K] *= scale
    return dc, cxc, cyc, czc


@njit(cache=True)
def rbgs_sweep(inv_d, cx, cy, cz, b, x, color):
    """One Gauss-Seidel half sweep over cells with ``(i + j + k) % 2 == color``."""
    n0, n1, n2 = inv_d.shape
    for i in range(n0):
        for j in range(n1):
            k0 = (i + j + color) & 1
            for k in range(k0, n2, 2):
                w = inv_d[i, j, k]
                if w == 0.0:
                    continue
                s = b[i, j, k]
                if i > 0:
                    s += cx[i - 1, j, k] * x[i - 1, j, k]
                if i < n0 - 1:
                    s += cx[i, j, k] * x[i + 1, j, k]
                if j > 0:
                    s += cy[i, j - 1, k] * x[i, j - 1, k]
                if j < n1 - 1:
                    s += cy[i, j, k] * x[i, j + 1, k]
                if k > 0:
                    s += cz[i, j, k - 1] * x[i, j, k - 1]
                if k < n2 - 1:
                    s += cz[i, j, k] * x[i, j, k + 1]
                x[i, j, k] = s * w


@njit(cache=True)
def rbgs_sweep_weighted(inv_d, cx, cy, cz, b, x, color, omega):
    """:func:`rbgs_sweep` with a relaxation weight per cell:
    ``x_i <- (1 - omega_i) x_i + omega_i x_i^GS``.

    ``omega_i = 1`` gives exactly the Gauss-Seidel value (``0 * x + 1 * y`` is ``y``);
    ``0 < omega_i < 2`` keeps the smoother convergent for SPD and SPSD stencils.

    The stencil sum is written out here as in :func:`rbgs_sweep` on purpose: factoring it
    into a shared jitted helper made GMG's sweep 3-6x slower (96^3, measured).
    """
    n0, n1, n2 = inv_d.shape
    for i in range(n0):
        for j in range(n1):
            k0 = (i + j + color) & 1
            for k in range(k0, n2, 2):
                w = inv_d[i, j, k]
                if w == 0.0:
                    continue
                s = b[i, j, k]
                if i > 0:
                    s += cx[i - 1, j, k] * x[i - 1, j, k]
                if i < n0 - 1:
                    s += cx[i, j, k] * x[i + 1, j, k]
                if j > 0:
                    s += cy[i, j - 1, k] * x[i, j - 1, k]
                if j < n1 - 1:
                    s += cy[i, j, k] * x[i, j + 1, k]
                if k > 0:
                    s += cz[i, j, k - 1] * x[i, j, k - 1]
                if k < n2 - 1:
                    s += cz[i, j, k] * x[i, j, k + 1]
                o = omega[i, j, k]
                x[i, j, k] = (1.0 - o) * x[i, j, k] + o * (s * w)


def axis_tables(n, m, lo_ghost=0.0, hi_ghost=0.0):
    """Per fine index ``i`` along one axis: the two coarse cells it interpolates from and
    their 1-D cell-centred linear weights (3/4 for the parent ``i // 2``, 1/4 for the
    parent's neighbour on ``i``'s side).

    Where that neighbour lies outside the grid, its weight ``lo_ghost`` / ``hi_ghost`` is
    put on the parent instead: 0 (a Neumann wall: the weights are renormalized later,
    i.e. an even reflection) or -1/4 (a Dirichlet wall: an odd reflection, the ghost
    value is minus the parent's).
    """
    idx = np.zeros((n, 2), dtype=np.int64)
    w = np.zeros((n, 2))
    for i in range(n):
        P = i // 2
        idx[i, 0] = P
        idx[i, 1] = P
        if n == 1:
            w[i, 0] = 1.0
            continue
        w[i, 0] = 0.75
        J = P - 1 if i % 2 == 0 else P + 1
        if 0 <= J < m:
            idx[i, 1] = J
            w[i, 1] = 0.25
        else:
            w[i, 1] = lo_ghost if J < 0 else hi_ghost
    return idx, w


@njit(cache=True)
def interp_weights(d_fine, coarse_weight, ti, wi, tj, wj, tk, wk):
    """``1 / (sum of |weights| x coarse_weight of the usable coarse cells)`` per active fine
    cell (0 elsewhere).

    The interpolation of fine cell ``i`` is the tensor-product cell-centred linear rule
    (:func:`axis_tables`), each coarse cell ``J`` scaled by ``coarse_weight[J]``. Usable
    coarse cells are those with ``coarse_weight > 0``: the active ones and the all-air ones
    (a Dirichlet value 0); weights of the others (solid: Neumann) are dropped and the rest
    renormalized, so near solids and Neumann walls constants are interpolated exactly (the
    null space is kept). ``coarse_weight`` 1 on the usable cells is the plain linear rule;
    see :class:`~neurosolve.solvers.preconditioners.GMG` for the coefficient-weighted one.
    """
    n0, n1, n2 = d_fine.shape
    out = np.zeros((n0, n1, n2))
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                if d_fine[i, j, k] == 0.0:
                    continue
                s = 0.0
                for a in range(2):
                    for b in range(2):
                        for c in range(2):
                            w = wi[i, a] * wj[j, b] * wk[k, c]
                            if w != 0.0:
                                cw = coarse_weight[ti[i, a], tj[j, b], tk[k, c]]
                                if cw > 0.0:
                                    s += abs(w) * cw
                if s > 0.0:
                    out[i, j, k] = 1.0 / s
    return out


@njit(cache=True)
def prolong_add(xc, inv_w, ti, wi, tj, wj, tk, wk, xf):
    """``xf += P xc``; ``xc`` must vanish on inactive coarse cells."""
    n0, n1, n2 = xf.shape
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                iw = inv_w[i, j, k]
                if iw == 0.0:
                    continue
                s = 0.0
                for a in range(2):
                    I = ti[i, a]
                    for b in range(2):
                        J = tj[j, b]
                        wab = wi[i, a] * wj[j, b]
                        for c in range(2):
                            s += wab * wk[k, c] * xc[I, J, tk[k, c]]
                xf[i, j, k] += s * iw


@njit(cache=True)
def restrict(rf, inv_w, d_coarse, ti, wi, tj, wj, tk, wk, rc):
    """``rc = P^T rf`` (the exact transpose of :func:`prolong_add`)."""
    n0, n1, n2 = rf.shape
    rc[:, :, :] = 0.0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                v = rf[i, j, k] * inv_w[i, j, k]
                if v == 0.0:
                    continue
                for a in range(2):
                    I = ti[i, a]
                    for b in range(2):
                        J = tj[j, b]
                        wab = wi[i, a] * wj[j, b] * v
                        for c in range(2):
                            rc[I, J, tk[k, c]] += wab * wk[k, c]
    # inactive coarse cells carry no unknown
    m0, m1, m2 = rc.shape
    for I in range(m0):
        for J in range(m1):
            for K in range(m2):
                if d_coarse[I, J, K] <= 0.0:
                    rc[I, J, K] = 0.0
    return rc
