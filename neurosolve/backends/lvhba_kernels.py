"""numba kernels for LV-HBA on problems given as arrays.

:func:`lvhba_kron_step` performs one full LV-HBA iteration (spec section 3, in the same
update order) for a bilevel problem whose objectives are quadratics with
``kron(M, I_s)`` Hessians (:class:`neurosolve.problems.bilevel.KronIdentity`), whose
coupled constraints are dense affine rows, with ``Y`` a box and ``C`` all of R^N, a box or
a half-space. Every loop runs over contiguous slices (so LLVM vectorizes the axpys) and
reductions use four fixed accumulators (so results are deterministic). The cost is
``O((nnz(M_F) + 2 nnz(M_f)) s + l N)`` per iteration: linear in the problem size.

Each kernel has a numpy reference it is tested against (tests/test_lvhba_kernels.py):
the generic numpy path of :class:`neurosolve.solvers.LVHBA`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["kron_accumulate", "dot4", "lvhba_kron_step", "C_REALS", "C_BOX", "C_HALFSPACE"]

C_REALS = 0
C_BOX = 1
C_HALFSPACE = 2


@njit(cache=True)
def dot4(a, b):
    """``a . b`` with four interleaved accumulators (fixed summation order)."""
    n = a.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = 0
    while i + 4 <= n:
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
        i += 4
    while i < n:
        s0 += a[i] * b[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def _axpy(alpha, x, y):
    """y += alpha * x (contiguous slices)."""
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


@njit(cache=True)
def kron_accumulate(rows, cols, vals, scale, s, v, out):
    """``out += scale * kron(M, I_s) @ v`` for M given by its nonzeros (rows, cols, vals)."""
    for t in range(rows.shape[0]):
        _axpy(scale * vals[t], v[cols[t] * s: cols[t] * s + s], out[rows[t] * s: rows[t] * s + s])


@njit(cache=True)
def lvhba_kron_step(Fr, Fc, Fv, cF, fr, fc, fv, cf, s, nx,
                    G, bg, lam_lo, lam_hi, z_lo, z_hi, ylo, yhi,
                    c_kind, clo, chi, ca, cb, ca_sq,
                    alpha, beta, eta, inv_g1, inv_g2, inv_c,
                    w, th, lam, z,
                    w_out, th_out, lam_out, z_out, v, b1, b2, b3, cons, metrics):
    """One LV-HBA iteration for a Kronecker-quadratic problem; writes the ``*_out`` arrays.

    ``w = (x, y)`` (length N), ``th`` (length m = N - nx), ``lam``/``z`` (length l). The
    Hessians are ``kron(M, I_s)`` given by nonzeros ``(Fr, Fc, Fv)`` and ``(fr, fc, fv)``,
    with linear terms ``cF``, ``cf``; constraints ``G w - bg``. ``metrics`` receives
    ``[F(x, y), f(x, y), Lhat, ||dw||^2, ||dz||^2, ||dtheta||^2, ||dlam||^2, ||w+||^2,
    ||theta+||^2, ||lam+||^2, max|lam+|]`` (objective values without constants), where
    ``Lhat`` is the proximal Lagrangian at ``(x^k, y^k, z^k; theta^{k+1}, lam^{k+1})``.
    """
    N = w.shape[0]
    m = N - nx
    nl = G.shape[0]
    # ---- step 2: (theta, lambda), both from the OLD theta^k, lambda^k ----
    v[:nx] = w[:nx]
    v[nx:] = th
    b1[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, v, b1)          # grad f(x^k, theta^k)
    for r in range(nl):
        cons[r] = dot4(G[r], v) - bg[r]                 # c(x^k, theta^k)
    wy = w[nx:]
    b1y = b1[nx:]
    for j in range(m):
        th_out[j] = th[j] - eta * (b1y[j] + (th[j] - wy[j]) * inv_g1)
    for r in range(nl):
        _axpy(-eta * lam[r], G[r, nx:], th_out)
    for j in range(m):
        t = th_out[j]
        if t < ylo[j]:
            t = ylo[j]
        if t > yhi[j]:
            t = yhi[j]
        th_out[j] = t
    for r in range(nl):
        t = lam[r] - eta * (-cons[r] + (lam[r] - z[r]) * inv_g2)
        if t < lam_lo[r]:
            t = lam_lo[r]
        if t > lam_hi[r]:
            t = lam_hi[r]
        lam_out[r] = t
    # ---- step 3: (x, y, z) from the NEW theta^{k+1}, lambda^{k+1} and OLD x, y, z ----
    v[nx:] = th_out
    b1[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, v, b1)          # grad f(x^k, theta^{k+1})
    f_th = 0.5 * (dot4(v, b1) + dot4(v, cf))
    lag = f_th
    for r in range(nl):
        cr = dot4(G[r], v) - bg[r]
        dl = lam_out[r] - z[r]
        lag += lam_out[r] * cr - 0.5 * dl * dl * inv_g2
    dth = 0.0
    for j in range(m):
        d = th_out[j] - wy[j]
        dth += d * d
    lag += 0.5 * dth * inv_g1
    b2[:] = cF
    kron_accumulate(Fr, Fc, Fv, 1.0, s, w, b2)          # grad F(x^k, y^k)
    Fval = 0.5 * (dot4(w, b2) + dot4(w, cF))
    b3[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, w, b3)          # grad f(x^k, y^k)
    fval = 0.5 * (dot4(w, b3) + dot4(w, cf))
    for j in range(nx):
        w_out[j] = w[j] - alpha * (b2[j] * inv_c + b3[j] - b1[j])
    for r in range(nl):
        _axpy(alpha * lam_out[r], G[r, :nx], w_out[:nx])
    for j in range(nx, N):
        w_out[j] = w[j] - alpha * (b2[j] * inv_c + b3[j] - (w[j] - th_out[j - nx]) * inv_g1)
    # projection onto C
    if c_kind == C_BOX:
        for j in range(N):
            t = w_out[j]
            if t < clo[j]:
                t = clo[j]
            if t > chi[j]:
                t = chi[j]
            w_out[j] = t
    elif c_kind == C_HALFSPACE:
        excess = dot4(ca, w_out) - cb
        if excess > 0.0:
            _axpy(-excess / ca_sq, ca, w_out)
    for r in range(nl):
        t = z[r] - beta * (z[r] - lam_out[r]) * inv_g2
        if t < z_lo[r]:
            t = z_lo[r]
        if t > z_hi[r]:
            t = z_hi[r]
        z_out[r] = t
    # ---- metrics ----
    dw = 0.0
    for j in range(N):
        d = w_out[j] - w[j]
        dw += d * d
    dz = 0.0
    dlam = 0.0
    for r in range(nl):
        d = z_out[r] - z[r]
        dz += d * d
        d = lam_out[r] - lam[r]
        dlam += d * d
    dt = 0.0
    for j in range(m):
        d = th_out[j] - th[j]
        dt += d * d
    metrics[0] = Fval
    metrics[1] = fval
    metrics[2] = lag
    metrics[3] = dw
    metrics[4] = dz
    metrics[5] = dt
    metrics[6] = dlam
    metrics[7] = dot4(w_out, w_out)
    metrics[8] = dot4(th_out, th_out)
    metrics[9] = dot4(lam_out, lam_out)
    lm = 0.0
    for r in range(nl):
        if abs(lam_out[r]) > lm:
            lm = abs(lam_out[r])
    metrics[10] = lm


@njit(cache=True)
def nnls_gram(K, r, tol, maxiter):
    """``argmin_{mu >= 0} 1/2 mu^T K mu - r^T mu`` for a small SPD ``K`` (Lawson-Hanson).

    The dual of projecting onto ``{u : A u <= b}`` (``K = A A^T``, ``r = A w - b``;
    the projection is ``w - A^T mu``). Exact up to rounding after finitely many
    active-set changes. Reference: ``scipy.optimize.nnls`` on the Cholesky factor.
    """
    k = K.shape[0]
    mu = np.zeros(k)
    active = np.zeros(k, dtype=np.bool_)
    for _ in range(maxiter):
        grad = r - K @ mu  # negative gradient
        j = -1
        best = tol
        for i in range(k):
            if not active[i] and grad[i] > best:
                best = grad[i]
                j = i
        if j < 0:
            break
        active[j] = True
        while True:
            idx = np.nonzero(active)[0]
            Kp = np.empty((idx.shape[0], idx.shape[0]))
            rp = np.empty(idx.shape[0])
            for a in range(idx.shape[0]):
                rp[a] = r[idx[a]]
                for b in range(idx.shape[0]):
                    Kp[a, b] = K[idx[a], idx[b]]
            s = np.linalg.solve(Kp, rp)
            if np.all(s > 0):
                mu[:] = 0.0
                for a in range(idx.shape[0]):
                    mu[idx[a]] = s[a]
                break
            step = 1.0
            for a in range(idx.shape[0]):
                if s[a] <= 0:
                    m = mu[idx[a]]
                    t = m / (m - s[a]) if m - s[a] != 0 else 0.0
                    if t < step:
                        step = t
            for a in range(idx.shape[0]):
                i = idx[a]
                mu[i] = mu[i] + step * (s[a] - mu[i])
                if mu[i] <= 1e-300:
                    mu[i] = 0.0
                    active[i] = False
            if not np.any(active):
                break
    return mu
