"""numba kernels for LV-HBA on problems given as arrays.

:func:`lvhba_kron_step` performs one full LV-HBA iteration (spec section 3, in the same
update order) for a bilevel problem whose objectives are quadratics with
``kron(M, I_s)`` Hessians (:class:`neurosolve.problems.bilevel.KronIdentity`), whose
coupled constraints are dense affine rows, with ``Y`` a box and ``C`` all of R^N, a box or
a half-space. Every loop runs over contiguous slices (so LLVM vectorizes the axpys) and
reductions are deterministic for a given machine and length. The cost is
``O((nnz(M_F) + 3 nnz(M_f)) s + l N)`` per iteration: linear in the problem size. The
kernels are compiled with ``fastmath={"reassoc", "contract"}`` so that reductions
vectorize: results match the numpy path to rounding (about 1e-15 relative per step), not
bit for bit; NaN and infinity propagate normally.

Each kernel has a numpy reference it is tested against (tests/test_lvhba_kernels.py):
the generic numpy path of :class:`neurosolve.solvers.LVHBA`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["kron_accumulate", "dot4", "lvhba_kron_step", "generated_kron_step", "nnls_gram",
           "C_REALS", "C_BOX", "C_HALFSPACE"]

C_REALS = 0
C_BOX = 1
C_HALFSPACE = 2


_FM = {"reassoc", "contract"}  # lets LLVM vectorize reductions; NaN/inf semantics kept


@njit(cache=True, fastmath=_FM)
def dot4(a, b):
    """``a . b`` (vectorized reduction; the summation order is fixed per compiled loop)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(cache=True, fastmath=_FM)
def _axpy(alpha, x, y):
    """y += alpha * x (contiguous slices)."""
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


@njit(cache=True, fastmath=_FM)
def kron_accumulate(rows, cols, vals, scale, s, v, out):
    """``out += scale * kron(M, I_s) @ v`` for M given by its nonzeros (rows, cols, vals)."""
    for t in range(rows.shape[0]):
        _axpy(scale * vals[t], v[cols[t] * s: cols[t] * s + s], out[rows[t] * s: rows[t] * s + s])


@njit(cache=True, fastmath=_FM)
def _half_value(v, g, c):
    """``1/2 v . (g + c)``: the value of ``1/2 v^T Q v + c^T v`` given ``g = Q v + c``."""
    acc = 0.0
    for i in range(v.shape[0]):
        acc += v[i] * (g[i] + c[i])
    return 0.5 * acc


@njit(cache=True, fastmath=_FM)
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
    wy = w[nx:]
    # ---- step 2: (theta, lambda), both from the OLD theta^k, lambda^k ----
    v[:nx] = w[:nx]
    v[nx:] = th
    b1[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, v, b1)          # grad f(x^k, theta^k)
    for r in range(nl):
        cons[r] = dot4(G[r], v) - bg[r]                 # c(x^k, theta^k)
    b1y = b1[nx:]
    for j in range(m):
        th_out[j] = th[j] - eta * (b1y[j] + (th[j] - wy[j]) * inv_g1)
    for r in range(nl):
        _axpy(-eta * lam[r], G[r, nx:], th_out)
    dt = 0.0
    tt = 0.0
    dty = 0.0
    for j in range(m):
        t = th_out[j]
        if t < ylo[j]:
            t = ylo[j]
        if t > yhi[j]:
            t = yhi[j]
        th_out[j] = t
        d = t - th[j]
        dt += d * d
        tt += t * t
        e = t - wy[j]
        dty += e * e
    dlam = 0.0
    ll = 0.0
    lm = 0.0
    for r in range(nl):
        t = lam[r] - eta * (-cons[r] + (lam[r] - z[r]) * inv_g2)
        if t < lam_lo[r]:
            t = lam_lo[r]
        if t > lam_hi[r]:
            t = lam_hi[r]
        lam_out[r] = t
        d = t - lam[r]
        dlam += d * d
        ll += t * t
        lm = max(lm, abs(t))
    # ---- step 3: (x, y, z) from the NEW theta^{k+1}, lambda^{k+1} and OLD x, y, z ----
    v[nx:] = th_out
    b1[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, v, b1)          # grad f(x^k, theta^{k+1})
    lag = _half_value(v, b1, cf) + 0.5 * dty * inv_g1
    for r in range(nl):
        cr = dot4(G[r], v) - bg[r]
        dl = lam_out[r] - z[r]
        lag += lam_out[r] * cr - 0.5 * dl * dl * inv_g2
    b2[:] = cF
    kron_accumulate(Fr, Fc, Fv, 1.0, s, w, b2)          # grad F(x^k, y^k)
    b3[:] = cf
    kron_accumulate(fr, fc, fv, 1.0, s, w, b3)          # grad f(x^k, y^k)
    Fval = 0.0
    fval = 0.0
    for j in range(nx):
        wj = w[j]
        Fval += wj * (b2[j] + cF[j])
        fval += wj * (b3[j] + cf[j])
        w_out[j] = wj - alpha * (b2[j] * inv_c + b3[j] - b1[j])
    for j in range(nx, N):
        wj = w[j]
        Fval += wj * (b2[j] + cF[j])
        fval += wj * (b3[j] + cf[j])
        w_out[j] = wj - alpha * (b2[j] * inv_c + b3[j] - (wj - th_out[j - nx]) * inv_g1)
    for r in range(nl):
        _axpy(alpha * lam_out[r], G[r, :nx], w_out[:nx])
    # projection onto C, then ||w+ - w||^2 and ||w+||^2
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
    dw = 0.0
    ww = 0.0
    for j in range(N):
        t = w_out[j]
        d = t - w[j]
        dw += d * d
        ww += t * t
    dz = 0.0
    for r in range(nl):
        t = z[r] - beta * (z[r] - lam_out[r]) * inv_g2
        if t < z_lo[r]:
            t = z_lo[r]
        if t > z_hi[r]:
            t = z_hi[r]
        z_out[r] = t
        d = t - z[r]
        dz += d * d
    metrics[0] = 0.5 * Fval
    metrics[1] = 0.5 * fval
    metrics[2] = lag
    metrics[3] = dw
    metrics[4] = dz
    metrics[5] = dt
    metrics[6] = dlam
    metrics[7] = ww
    metrics[8] = tt
    metrics[9] = ll
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


# --------------------------------------------------------------------------------------
# generated kernels: one fused pass per phase, specialised to the block structure
# --------------------------------------------------------------------------------------
_GENERATED: dict = {}


def _emit_kernel(maskF, maskf, B, Bx, nl, c_kind, y_box) -> str:
    """Source of a fused LV-HBA step for B blocks (Bx of them x), nl constraint rows.

    The loops run over the block index ``i`` and keep every block's entry in registers,
    so each phase reads and writes each vector once; only the nonzero pattern of the
    Hessian factors ``M`` is fixed here (their values stay runtime data).
    """
    L = []
    a = L.append
    a("def kernel(Fr, Fc, Fv, cF, fr, fc, fv, cf, s, nx, G, bg, lam_lo, lam_hi, z_lo, z_hi, ylo, yhi,")
    a("           c_kind, clo, chi, ca, cb, ca_sq, alpha, beta, eta, inv_g1, inv_g2, inv_c,")
    a("           w, th, lam, z, w_out, th_out, lam_out, z_out, v, b1, b2, b3, cons, metrics, MF, Mf):")
    ys = range(Bx, B)
    for b in range(B):
        a(f"    w{b} = w[{b}*s:{b + 1}*s]; wo{b} = w_out[{b}*s:{b + 1}*s]")
        a(f"    cF{b} = cF[{b}*s:{b + 1}*s]; cf{b} = cf[{b}*s:{b + 1}*s]")
        for r in range(nl):
            a(f"    G{r}_{b} = G[{r}, {b}*s:{b + 1}*s]")
        if c_kind == C_HALFSPACE:
            a(f"    a{b} = ca[{b}*s:{b + 1}*s]")
        if c_kind == C_BOX:
            a(f"    lo{b} = clo[{b}*s:{b + 1}*s]; hi{b} = chi[{b}*s:{b + 1}*s]")
    for b in ys:
        k = b - Bx
        a(f"    t{b} = th[{k}*s:{k + 1}*s]; to{b} = th_out[{k}*s:{k + 1}*s]")
        if y_box:
            a(f"    ylo{b} = ylo[{k}*s:{k + 1}*s]; yhi{b} = yhi[{k}*s:{k + 1}*s]")
    for b in range(B):
        for c in range(B):
            if maskF[b, c]:
                a(f"    F{b}{c} = MF[{b}, {c}]")
            if maskf[b, c]:
                a(f"    f{b}{c} = Mf[{b}, {c}]")
    for r in range(nl):
        a(f"    l{r} = lam[{r}]")
        a(f"    cs{r} = 0.0")
    a("    dt = 0.0; tt = 0.0; dty = 0.0")

    def lin(mask, pref, b, src):
        terms = [f"{pref}{b}{c} * {src(c)}" for c in range(B) if mask[b, c]]
        return " + ".join(terms) if terms else "0.0"

    # phase A: theta step from the old theta, lambda; constraint values at (x, theta)
    a("    for i in range(s):")
    for b in range(B):
        a(f"        v{b} = {'w' if b < Bx else 't'}{b}[i]")
    for r in range(nl):
        a(f"        cs{r} += " + " + ".join(f"G{r}_{b}[i] * v{b}" for b in range(B)))
    for b in ys:
        gl = " + ".join(f"G{r}_{b}[i] * l{r}" for r in range(nl)) or "0.0"
        a(f"        g = {lin(maskf, 'f', b, lambda c: f'v{c}')} + cf{b}[i] + {gl} + (v{b} - w{b}[i]) * inv_g1")
        a(f"        n = v{b} - eta * g")
        if y_box:
            a(f"        if n < ylo{b}[i]:")
            a(f"            n = ylo{b}[i]")
            a(f"        if n > yhi{b}[i]:")
            a(f"            n = yhi{b}[i]")
        a(f"        to{b}[i] = n")
        a(f"        d = n - v{b}; dt += d * d; tt += n * n")
        a(f"        e = n - w{b}[i]; dty += e * e")
    # multipliers
    a("    dlam = 0.0; ll = 0.0; lm = 0.0")
    for r in range(nl):
        a(f"    t = l{r} - eta * (-(cs{r} - bg[{r}]) + (l{r} - z[{r}]) * inv_g2)")
        a(f"    if t < lam_lo[{r}]:")
        a(f"        t = lam_lo[{r}]")
        a(f"    if t > lam_hi[{r}]:")
        a(f"        t = lam_hi[{r}]")
        a(f"    lam_out[{r}] = t; m{r} = t; dlam += (t - l{r}) ** 2; ll += t * t; lm = max(lm, abs(t))")
        a(f"    cq{r} = 0.0")
    # phase B: x, y step with the new theta, lambda and the old x, y
    a("    Fv = 0.0; fv = 0.0; fth = 0.0; aw = 0.0; dwt = 0.0; wwt = 0.0")
    a("    for i in range(s):")
    for b in range(B):
        a(f"        u{b} = w{b}[i]")
    for b in ys:
        a(f"        n{b} = to{b}[i]")

    def vp(c):
        return f"u{c}" if c < Bx else f"n{c}"
    for b in range(B):
        a(f"        h{b} = {lin(maskf, 'f', b, vp)} + cf{b}[i]")
        a(f"        fth += {vp(b)} * (h{b} + cf{b}[i])")
        a(f"        p{b} = {lin(maskF, 'F', b, lambda c: f'u{c}')} + cF{b}[i]")
        a(f"        q{b} = {lin(maskf, 'f', b, lambda c: f'u{c}')} + cf{b}[i]")
        a(f"        Fv += u{b} * (p{b} + cF{b}[i]); fv += u{b} * (q{b} + cf{b}[i])")
    for r in range(nl):
        a(f"        cq{r} += " + " + ".join(f"G{r}_{b}[i] * {vp(b)}" for b in range(B)))
    for b in range(B):
        if b < Bx:
            gl = " + ".join(f"G{r}_{b}[i] * m{r}" for r in range(nl)) or "0.0"
            a(f"        o = u{b} - alpha * (p{b} * inv_c + q{b} - h{b} - ({gl}))")
        else:
            a(f"        o = u{b} - alpha * (p{b} * inv_c + q{b} - (u{b} - n{b}) * inv_g1)")
        if c_kind == C_BOX:
            a(f"        if o < lo{b}[i]:")
            a(f"            o = lo{b}[i]")
            a(f"        if o > hi{b}[i]:")
            a(f"            o = hi{b}[i]")
        a(f"        wo{b}[i] = o")
        a(f"        d = o - u{b}; dwt += d * d; wwt += o * o")
        if c_kind == C_HALFSPACE:
            a(f"        aw += a{b}[i] * o")
    if c_kind == C_HALFSPACE:
        a("    ex = aw - cb")
        a("    if ex > 0.0:")
        a("        sc = ex / ca_sq")
        a("        dwt = 0.0; wwt = 0.0")
        a("        for j in range(w_out.shape[0]):")
        a("            o = w_out[j] - sc * ca[j]")
        a("            w_out[j] = o")
        a("            d = o - w[j]; dwt += d * d; wwt += o * o")
    a("    lag = 0.5 * fth + 0.5 * dty * inv_g1")
    for r in range(nl):
        a(f"    lag += m{r} * (cq{r} - bg[{r}]) - 0.5 * (m{r} - z[{r}]) ** 2 * inv_g2")
    a("    dz = 0.0")
    for r in range(nl):
        a(f"    t = z[{r}] - beta * (z[{r}] - m{r}) * inv_g2")
        a(f"    if t < z_lo[{r}]:")
        a(f"        t = z_lo[{r}]")
        a(f"    if t > z_hi[{r}]:")
        a(f"        t = z_hi[{r}]")
        a(f"    z_out[{r}] = t; dz += (t - z[{r}]) ** 2")
    a("    metrics[0] = 0.5 * Fv; metrics[1] = 0.5 * fv; metrics[2] = lag; metrics[3] = dwt")
    a("    metrics[4] = dz; metrics[5] = dt; metrics[6] = dlam; metrics[7] = wwt; metrics[8] = tt")
    a("    metrics[9] = ll; metrics[10] = lm")
    return "\n".join(L) + "\n"


def generated_kron_step(MF, Mf, B: int, Bx: int, nl: int, c_kind: int, y_box: bool):
    """The fused kernel for this structure (generated and compiled once per structure).

    The source is written to ``$NEUROSOLVE_CACHE`` (default ``~/.cache/neurosolve``) so
    numba's on-disk cache applies; if that directory is not writable it is compiled in
    memory. Same signature as :func:`lvhba_kron_step` plus ``MF, Mf`` (the ``B x B``
    factors) at the end.
    """
    import hashlib
    import importlib.util
    import os

    maskF = np.asarray(MF) != 0
    maskf = np.asarray(Mf) != 0
    key = (maskF.tobytes(), maskf.tobytes(), B, Bx, nl, int(c_kind), bool(y_box))
    fn = _GENERATED.get(key)
    if fn is not None:
        return fn
    body = _emit_kernel(maskF, maskf, B, Bx, nl, int(c_kind), bool(y_box))
    header = ("# generated by neurosolve.backends.lvhba_kernels; do not edit\n"
              "from numba import njit\n\n"
              "@njit(cache=True, fastmath={'reassoc', 'contract'})\n")
    src = header + body
    digest = hashlib.sha1(src.encode()).hexdigest()[:16]
    cache_dir = os.path.join(os.environ.get("NEUROSOLVE_CACHE", os.path.expanduser("~/.cache/neurosolve")),
                             "lvhba_kernels")
    fn = None
    try:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"kron_{digest}.py")
        if not os.path.exists(path):
            tmp = path + f".{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(src)
            os.replace(tmp, path)
        import sys

        name = f"_neurosolve_kron_{digest}"
        mod = sys.modules.get(name)
        if mod is None:
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # numba's disk cache re-imports the module by name
            spec.loader.exec_module(mod)
        fn = mod.kernel
    except OSError:
        ns: dict = {}
        exec(compile(src.replace("cache=True", "cache=False"), f"<lvhba kernel {digest}>", "exec"), ns)
        fn = ns["kernel"]
    _GENERATED[key] = fn
    return fn
