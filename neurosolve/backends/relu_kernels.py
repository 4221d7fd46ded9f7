"""Numba kernels for convex ReLU training, each with the numpy reference it is tested against.

Layout shared with :mod:`neurosolve.solvers.admm_relu`: weights are stored as ``(d, 2P*c)``
matrices whose column ``g*c + o`` is block ``g`` (``g < P``: the ``v`` blocks, ``g >= P``:
the ``w`` blocks) of output ``o``; ``XU = X @ U`` is therefore ``(n, 2P*c)`` and the pattern
matrix ``D`` (and the sign matrix ``E = 2D - 1``) is ``(n, P)``.

Kernels
-------
``masked_output(XU, D, c)``
    The convex network's output ``sum_i D_i X (u_i - z_i)``, shape ``(n, c)``.
``cone_update(XU, E, W, alpha, c)``
    The eliminated-slack step of the cone splitting ``G u = s >= 0``. With
    ``s = max(W, 0)``, ``nu = min(W, 0)`` it forms ``Gu = E * XU``, the relaxed point
    ``alpha Gu + (1 - alpha) s``, updates ``W <- relaxed + nu`` in place, writes
    ``E * |W|`` (what the next right-hand side needs) and the network output (as
    ``masked_output``), and returns the squared norms ``||Gu - s_new||^2``,
    ``||s_new - s_old||^2``, ``||Gu||^2`` and ``||s_new||^2``.
``group_soft_threshold(A, kappa)``
    ``A[:, j] * max(0, 1 - kappa / ||A[:, j]||)`` for every column (the prox of
    ``kappa * sum_j ||a_j||_2``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "masked_output",
    "masked_output_ref",
    "cone_update",
    "cone_update_ref",
    "group_soft_threshold",
    "group_soft_threshold_ref",
]


@njit(cache=True)
def _masked_output(XU, D, c, out):
    n, P = D.shape
    for k in range(n):
        for o in range(c):
            acc = 0.0
            for i in range(P):
                if D[k, i] != 0.0:
                    acc += XU[k, i * c + o] - XU[k, (P + i) * c + o]
            out[k, o] = acc
    return out


def masked_output(XU: np.ndarray, D: np.ndarray, c: int) -> np.ndarray:
    """``sum_i D_i (XU_v,i - XU_w,i)`` as an ``(n, c)`` array (numba)."""
    out = np.empty((D.shape[0], c), dtype=XU.dtype)
    return _masked_output(XU, D, c, out)


def masked_output_ref(XU, D, c):
    """Numpy reference of :func:`masked_output`."""
    n, P = D.shape
    Z = XU.reshape(n, 2 * P, c)
    return ((Z[:, :P] - Z[:, P:]) * D[:, :, None]).sum(axis=1)


_FAST = {"reassoc", "contract", "arcp"}  # reassociate sums; keep NaN/inf semantics


@njit(cache=True, fastmath=_FAST)
def _cone_update(XU, E, W, alpha, c, EabsW, FU):
    n, P = E.shape
    r_prim = 0.0
    r_ds = 0.0
    n_gu = 0.0
    n_s = 0.0
    m = 2 * P * c
    beta = 1.0 - alpha
    for k in range(n):
        xr = XU[k]
        wr = W[k]
        er = E[k]
        ar = EabsW[k]
        for o in range(c):
            acc = 0.0
            for i in range(P):
                acc += (xr[i * c + o] - xr[(P + i) * c + o]) * (0.5 * (er[i] + 1.0))
            FU[k, o] = acc
        for j in range(m):
            g = j // c
            i = g - P if g >= P else g
            e = er[i]
            gu = e * xr[j]
            w = wr[j]
            s_old = max(w, 0.0)
            wn = alpha * gu + beta * s_old + min(w, 0.0)
            s_new = max(wn, 0.0)
            wr[j] = wn
            ar[j] = e * abs(wn)
            t = gu - s_new
            r_prim += t * t
            t2 = s_new - s_old
            r_ds += t2 * t2
            n_gu += gu * gu
            n_s += s_new * s_new
    return r_prim, r_ds, n_gu, n_s


def cone_update(XU, E, W, alpha, c, EabsW=None, FU=None):
    """Fused slack/dual update of the cone splitting (numba); ``W`` changes in place.

    Also writes the network output ``FU = sum_i D_i (XU_v,i - XU_w,i)`` (one pass over XU).
    Returns ``(EabsW, FU, (||Gu - s||^2, ||s - s_old||^2, ||Gu||^2, ||s||^2))``.
    """
    if EabsW is None:
        EabsW = np.empty_like(W)
    if FU is None:
        FU = np.empty((W.shape[0], c), dtype=W.dtype)
    sums = _cone_update(XU, E, W, float(alpha), c, EabsW, FU)
    return EabsW, FU, sums


def cone_update_ref(XU, E, W, alpha, c):
    """Numpy reference of :func:`cone_update` (returns the new W instead of mutating)."""
    n, P = E.shape
    E2 = np.repeat(np.concatenate([E, E], axis=1), c, axis=1)
    GU = E2 * XU
    s_old = np.maximum(W, 0.0)
    nu_old = np.minimum(W, 0.0)
    Wn = alpha * GU + (1.0 - alpha) * s_old + nu_old
    s_new = np.maximum(Wn, 0.0)
    sums = (np.sum((GU - s_new) ** 2), np.sum((s_new - s_old) ** 2), np.sum(GU**2),
            np.sum(s_new**2))
    return Wn, E2 * np.abs(Wn), sums


@njit(cache=True)
def _group_soft_threshold(A, kappa, out, norms):
    d, m = A.shape
    for j in range(m):
        norms[j] = 0.0
    for i in range(d):
        for j in range(m):
            norms[j] += A[i, j] * A[i, j]
    for j in range(m):
        nr = np.sqrt(norms[j])
        norms[j] = 1.0 - kappa / nr if nr > kappa else 0.0
    for i in range(d):
        for j in range(m):
            out[i, j] = A[i, j] * norms[j]
    return out


def group_soft_threshold(A: np.ndarray, kappa: float) -> np.ndarray:
    """Column-wise group soft-threshold ``a_j max(0, 1 - kappa/||a_j||)`` (numba)."""
    out = np.empty_like(A)
    norms = np.empty(A.shape[1], dtype=A.dtype)
    return _group_soft_threshold(A, float(kappa), out, norms)


def group_soft_threshold_ref(A, kappa):
    """Numpy reference of :func:`group_soft_threshold` (also works on torch tensors)."""
    nrm = (A * A).sum(0) ** 0.5
    if isinstance(A, np.ndarray):
        scale = np.where(nrm > kappa, 1.0 - kappa / np.where(nrm > 0, nrm, 1.0), 0.0)
    else:
        import torch

        scale = torch.where(nrm > kappa, 1.0 - kappa / torch.where(nrm > 0, nrm, torch.ones_like(nrm)),
                            torch.zeros_like(nrm))
    return A * scale


# ---------------------------------------------------------------------------------------
# robust program: projection onto the robust cones and the worst-case loss prox
# (numpy references: neurosolve.problems.relu_losses.project_robust_cone / prox_robust_loss)
# ---------------------------------------------------------------------------------------
@njit(cache=True)
def _l1_theta(a_sorted, csum, radius):
    """Soft-threshold level putting |a| (sorted decreasing) on the l1 ball of `radius`."""
    m = a_sorted.shape[0]
    th = csum[0] - radius  # the support has at least one element
    for j in range(1, m):
        t = (csum[j] - radius) / (j + 1)
        if a_sorted[j] > t:
            th = t
        else:
            break
    return th if th > 0.0 else 0.0


@njit(cache=True)
def robust_cone_project(S0, R0, eps, q, iters=60):
    """Numba version of :func:`neurosolve.problems.relu_losses.project_robust_cone`."""
    n, m = S0.shape
    d = R0.shape[0]
    S = S0.copy()
    R = R0.copy()
    a = np.empty(d)
    for g in range(m):
        rn = 0.0
        for j in range(d):
            a[j] = abs(R0[j, g])
            rn += a[j] if q == 1 else a[j] * a[j]
        if q != 1:
            rn = np.sqrt(rn)
        smin = S0[0, g]
        for k in range(n):
            if S0[k, g] < smin:
                smin = S0[k, g]
        if eps * rn <= smin:
            continue
        a_sorted = -np.sort(-a)
        csum = np.cumsum(a_sorted)
        lo = 0.0
        hi = eps * rn
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            acc = 0.0
            for k in range(n):
                t = mid - S0[k, g]
                if t > 0.0:
                    acc += t
            if q == 1:
                th = _l1_theta(a_sorted, csum, mid / eps)
            else:
                th = rn - mid / eps
                th = th if th > 0.0 else 0.0
            if acc - th / eps < 0.0:
                lo = mid
            else:
                hi = mid
        tau = 0.5 * (lo + hi)
        for k in range(n):
            if S0[k, g] < tau:
                S[k, g] = tau
        if q == 1:
            th = _l1_theta(a_sorted, csum, tau / eps)
            for j in range(d):
                v = abs(R0[j, g]) - th
                R[j, g] = np.sign(R0[j, g]) * v if v > 0.0 else 0.0
        else:
            th = rn - tau / eps
            th = th if th > 0.0 else 0.0
            sc = 1.0 - th / rn if rn > 0.0 else 0.0
            sc = sc if sc > 0.0 else 0.0
            for j in range(d):
                R[j, g] = R0[j, g] * sc
    return S, R


@njit(cache=True)
def _shrink_row(b0, q, t, out):
    d = b0.shape[0]
    nb = 0.0
    if q == 1:
        for j in range(d):
            v = abs(b0[j]) - t
            out[j] = np.sign(b0[j]) * v if v > 0.0 else 0.0
            nb += abs(out[j])
    else:
        nr = 0.0
        for j in range(d):
            nr += b0[j] * b0[j]
        nr = np.sqrt(nr)
        sc = 1.0 - t / nr if nr > t else 0.0
        for j in range(d):
            out[j] = b0[j] * sc
        nb = nr * sc
    return nb


@njit(cache=True)
def robust_loss_prox(loss, z0, B0, y, eps, q, w, rho, iters=60):
    """Numba version of :func:`neurosolve.problems.relu_losses.prox_robust_loss`.

    ``loss``: 0 squared, 1 logistic, 2 hinge. Returns ``(z, B)``.
    """
    n, d = B0.shape
    z = np.empty(n)
    B = np.empty_like(B0)
    tmp = np.empty(d)
    for k in range(n):
        b0 = B0[k]
        if loss == 0:
            e0 = z0[k] - y[k]
            ae0 = abs(e0)
            nb0 = _shrink_row(b0, q, 0.0, tmp)
            lo = 0.0
            hi = w * (ae0 + eps * nb0)
        else:
            m0 = -y[k] * z0[k]
            lo = 0.0
            hi = w
        for _ in range(iters):
            th = 0.5 * (lo + hi)
            nb = _shrink_row(b0, q, th * eps / rho, tmp)
            if loss == 0:
                e = ae0 - th / rho
                h = (e if e > 0.0 else 0.0) + eps * nb
                r = th - w * h
            else:
                m = m0 - th / rho + eps * nb
                if loss == 2:
                    r = th - w if 1.0 + m > 0.0 else th
                else:
                    r = th - w * 0.5 * (1.0 + np.tanh(0.5 * m))
            if r < 0.0:
                lo = th
            else:
                hi = th
        th = 0.5 * (lo + hi)
        _shrink_row(b0, q, th * eps / rho, B[k])
        if loss == 0:
            e = ae0 - th / rho
            z[k] = y[k] + (1.0 if e0 >= 0.0 else -1.0) * (e if e > 0.0 else 0.0)
        else:
            z[k] = z0[k] + y[k] * th / rho
    return z, B
