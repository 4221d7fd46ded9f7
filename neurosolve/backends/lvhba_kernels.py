"""numba kernels for LV-HBA on problems given as arrays, and a small NNLS.

:func:`generated_kron_step` returns a fused kernel performing one full LV-HBA iteration
(spec section 3, in the same update order) for a bilevel problem whose objectives are
quadratics with ``kron(M, I_s)`` Hessians (:class:`neurosolve.problems.bilevel.KronIdentity`),
whose coupled constraints are at most 8 dense affine rows, with ``Y`` a box (or R^m) and
``C`` all of R^N, a box or a half-space. The kernel is generated for the block structure
(number of blocks, nonzero pattern of the ``M`` factors, number of rows, kind of ``C``):
its loops run over the position ``i`` inside the blocks and keep every block's entry in
registers, so each phase reads and writes each vector once, and LLVM vectorizes them. The
cost is ``O((B^2 + l B) s)`` per iteration: linear in the problem size. Kernels are
compiled with ``fastmath={"reassoc", "contract"}`` so that reductions vectorize: results
match the numpy path to rounding (about 1e-15 relative per step), not bit for bit; NaN and
infinity propagate normally.

:func:`nnls_gram` is the exact dual of projecting onto a few half-spaces (used by
:class:`neurosolve.problems.sets.Polyhedron`).

Numpy references they are tested against: the generic path of
:class:`neurosolve.solvers.LVHBA` and two straightforward loops in
:mod:`neurosolve.solvers.bilevel_reference` (tests/test_lvhba.py); ``scipy.optimize.nnls``
(tests/test_bilevel_sets.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["generated_kron_step", "nnls_gram", "C_REALS", "C_BOX", "C_HALFSPACE"]

C_REALS = 0
C_BOX = 1
C_HALFSPACE = 2


@njit(cache=True)
def _spd_solve(A, b):
    """Solve ``A x = b`` for a small SPD ``A`` by Cholesky (no LAPACK: compiles fast)."""
    n = A.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        d = A[j, j]
        for k in range(j):
            d -= L[j, k] * L[j, k]
        d = np.sqrt(d) if d > 0 else 1e-300
        L[j, j] = d
        for i in range(j + 1, n):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / d
    y = np.empty(n)
    for i in range(n):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * y[k]
        y[i] = t / L[i, i]
    x = np.empty(n)
    for i in range(n - 1, -1, -1):
        t = y[i]
        for k in range(i + 1, n):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]
    return x


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
            s = _spd_solve(Kp, rp)
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
    memory. Arguments: ``(Fr, Fc, Fv, cF, fr, fc, fv, cf, s, nx, G, bg, lam_lo, lam_hi,
    z_lo, z_hi, ylo, yhi, c_kind, clo, chi, ca, cb, ca_sq, alpha, beta, eta, inv_g1, inv_g2,
    inv_c, w, th, lam, z, w_out, th_out, lam_out, z_out, v, b1, b2, b3, cons, metrics, MF,
    Mf)``; ``metrics`` receives ``[F(x, y), f(x, y), Lhat, ||dw||^2, ||dz||^2,
    ||dtheta||^2, ||dlam||^2, ||w+||^2, ||theta+||^2, ||lam+||^2, max|lam+|]`` (objective
    values without constants), ``Lhat`` being the proximal Lagrangian at
    ``(x^k, y^k, z^k; theta^{k+1}, lam^{k+1})``. (``Fr, Fc, Fv, v, b1, b2, b3, cons`` are
    accepted for a stable signature and unused.)
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
