"""Solution polishing for the convex ReLU program: an active-set method from ADMM's guess.

ADMM identifies *which* neurons are active and *which* cone constraints hold with
equality long before it resolves their values to high accuracy: its tail is slow and
linear. Polishing (as in OSQP [2]_) takes that guess from the ADMM state and solves the
program restricted to it exactly:

- a block ``u_g`` (a ``v_i`` or ``w_i`` of the program, one output) is kept when it is
  nonzero at the ADMM point and dropped otherwise;
- the start is the cone projection of the ADMM point (feasible); on a kept block, the
  rows ``(2 D_i - I) X u_g >= 0`` with a positive ADMM multiplier that are within 1e-3
  (relative) of their hyperplane form the working set (at most ``d - 1`` independent
  ones, larger multipliers first), whose values are held fixed: the block moves in
  ``u_g = a_g + N_g z_g``, ``a_g`` the current point and ``N_g`` an orthonormal basis of
  the rows' null space;
- the restricted problem ``min_z loss(sum_g F_g (a_g + N_g z_g)) + beta sum_g ||a_g +
  N_g z_g||`` is smooth away from ``u_g = 0`` and is solved by Newton's method with a
  backtracking line search (squared and logistic losses);
- for the hinge loss ``w max(0, 1 - m_k)`` of the margins ``m_k = y_k z_k``, the samples
  are split in the same way: margins held at exactly 1 (the kink, equalities like the
  working rows), below 1 (a linear term) and above (none); Newton then runs on the KKT
  system of the kink equalities, and steps stop at the first margin they would take
  across 1, which joins the kink; at a restricted optimum a kink sample whose multiplier
  ``s_k`` (the loss multiplier is ``-w y_k s_k``) leaves [0, 1] moves to its side;
- it is a primal active-set method: every iterate is feasible, and apart from the small
  moves that put held rows exactly on their hyperplanes the objective never increases;
  rows the step runs into join the working set, rows held off their hyperplane or with a
  negative multiplier leave it at a restricted optimum, until a KKT point of the program
  on the kept blocks is reached.

The polished point is a candidate only: the caller projects it onto the cones and
certifies it with the problem's own duality gap (:meth:`ConvexReLU.dual_bound`). A wrong
guess (a missing neuron, a constraint that should be released) shows up as a gap and the
candidate is discarded, so polishing can make a solve faster but never makes a status
less true.

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer ReLU
   Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data
   Sci., 2023, arXiv:2201.01965.
.. [2] B. Stellato, G. Banjac, P. Goulart, A. Bemporad, S. Boyd, "OSQP: an operator
   splitting solver for quadratic programs", Math. Program. Comput. 12, 2020, section 4
   (solution polishing).
"""

from __future__ import annotations

import numpy as np

from neurosolve.problems import relu_losses as RL

__all__ = ["POLISHABLE_LOSSES", "polish"]

POLISHABLE_LOSSES = ("squared", "logistic", "hinge")


def polish(problem, x, multipliers=None, *, max_changes: int | None = None, newton_iters: int = 8,
           keep_tol: float = 1e-6, near: float = 1e-3, max_dim: int = 600,
           return_active: bool = False, kink_near: float = 1e-3):
    """A polished candidate for ``problem`` from the point ``x`` (numpy, ``problem.x_shape``).

    See the module docstring for the method. Every iterate is cone feasible (it starts
    from the cone projection of ``x``).

    Parameters
    ----------
    problem : ConvexReLU
        A non-robust program (squared, logistic or hinge loss).
    x : ndarray
        The point whose support and active constraints are the guess.
    multipliers : ndarray, shape (n, 2, P, c), optional
        Cone multipliers of the rows (ADMM's ``-rho2 nu``): rows with a positive one that
        are within ``near`` of their hyperplane start in the working set, larger first.
        Default: the rows within ``near``, nearest first.
    max_changes : int, optional
        Outer iterations (working-set changes, or ``newton_iters`` Newton steps towards
        a restricted optimum) allowed before giving up. Default 200; 1,000 for the hinge
        loss, whose sets change one sample margin at a time.
    newton_iters : int
        Newton iterations per outer iteration.
    keep_tol : float
        Blocks with ``||u_g|| <= keep_tol max ||u||`` at the start are dropped.
    near : float
        Relative distance ``(2 D_i - I) X u_g / max |X u_g|`` below which a row is a
        candidate for the first working set.
    max_dim : int
        Largest number of free coordinates (the null-space dimensions summed over the
        kept blocks) a restricted problem may have: Newton on it is dense, so a larger
        one ends the attempt (None). The active sets ADMM identifies leave few free
        coordinates (30-80 on the benchmark instances); an early, loose guess leaves many.
    return_active : bool
        Also return the final working sets.
    kink_near : float
        Hinge loss: samples whose margin ``y z`` is within ``kink_near`` of 1 start at
        the kink (their margin held at exactly 1).

    Returns
    -------
    ndarray or None
        The candidate in ``problem.x_shape`` (numpy), or None when no block is left,
        Newton fails (non-finite values) or the working sets have not settled within
        ``max_changes``.
    active : dict, only with ``return_active``
        ``{(s, i, o): rows}`` for the nonzero blocks (``s = 0`` for ``v_i``, 1 for
        ``w_i``; output ``o``): the linearly independent rows held with equality at the
        returned KKT point (None when the candidate is None).

    Examples
    --------
    ADMM polishes by default; its answer is then exact to about 1e-10:

    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((60, 3)); y = np.sign(X[:, 0] * X[:, 1])
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.5, patterns=8)
    >>> res = ns.solve(prob, ns.solvers.ADMM(rtol=1e-6))
    >>> res.stats["polished"], bool(res.certificate["relative_gap"] < 1e-9)
    (True, True)
    """
    from neurosolve.backends.ops import to_numpy

    if problem.robust or problem.loss not in POLISHABLE_LOSSES:
        raise ValueError(f"polish supports epsilon = 0 programs with the losses "
                         f"{POLISHABLE_LOSSES}, got loss={problem.loss!r}, "
                         f"epsilon={problem.epsilon:g}")
    if max_changes is None:
        max_changes = 1000 if problem.loss == "hinge" else 200
    X, D, Y = problem.Xt_np, problem.D_np, problem.Y_np
    d, c = problem.d, problem.c
    E = 2.0 * D - 1.0
    x = np.asarray(to_numpy(x, np.float64), dtype=np.float64)
    xf = to_numpy(problem.project_feasible(problem._from_numpy(x)), np.float64)
    U = np.stack(problem._vw(xf))  # (2, P, d, c), feasible
    out = np.zeros_like(U)
    active = {}
    for o in range(c):
        blocks = _kept_blocks(U[..., o], keep_tol)
        if not blocks:
            continue
        u = {b: U[b][..., o].copy() for b in blocks}
        work = {}
        for b in blocks:
            g = E[:, b[1]] * (X @ u[b])
            rows = np.flatnonzero(g <= near * max(float(np.abs(g).max(initial=0.0)), 1e-300))
            if multipliers is not None:
                wt = np.asarray(multipliers[rows, b[0], b[1], o], np.float64)
                rows = rows[wt > 0][np.argsort(-wt[wt > 0], kind="stable")]
            else:
                rows = rows[np.argsort(g[rows], kind="stable")]
            work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)
        if problem.loss == "hinge":
            margin = Y[:, o] * _output(X, D, u, blocks, X.shape[0])
            kink = np.flatnonzero(np.abs(margin - 1.0) <= kink_near)
            kink = kink[np.argsort(np.abs(margin[kink] - 1.0), kind="stable")]
            u_out = _active_set_hinge(problem, X, D, E, Y[:, o], u, blocks, work, kink,
                                      max_changes, newton_iters, max_dim)
        else:
            u_out = _active_set(problem, X, D, E, Y[:, o], u, blocks, work, max_changes,
                                newton_iters, max_dim)
        if u_out is None:
            return (None, None) if return_active else None
        for b, ub in u_out.items():
            out[b][..., o] = ub
            active[(b[0], b[1], o)] = work[b].copy()
    x_out = out if c > 1 else out[..., 0]
    return (x_out, active) if return_active else x_out


def _kept_blocks(Uo, keep_tol):
    norms = np.linalg.norm(Uo, axis=2)  # (2, P)
    top = norms.max(initial=0.0)
    if top <= 0:
        return []
    return [(s, i) for s in range(2) for i in range(Uo.shape[1]) if norms[s, i] > keep_tol * top]


def _rows(E, X, b, r):
    """The constraint rows ``(2 D_i - I) X`` of block ``b`` at indices ``r``."""
    return E[r, b[1], None] * X[r]


def _sign(b):
    return 1.0 if b[0] == 0 else -1.0


def _nonzero(u, blocks, tol: float = 1e-8):
    """The blocks whose norm exceeds ``tol`` times the largest."""
    top = max([float(np.linalg.norm(u[b])) for b in blocks] + [0.0])
    return [b for b in blocks if float(np.linalg.norm(u[b])) > tol * top]


def _no_progress(trail, f, window):
    """Append the objective ``f`` to ``trail``; True when it has not decreased (beyond
    rounding) over the last ``window`` changes."""
    trail.append(f)
    return len(trail) > window and trail[-window - 1] - f <= 1e-12 * max(1.0, abs(f))


def _active_set(problem, X, D, E, y, u, blocks, work, max_changes, newton_iters, max_dim):
    """Feasible primal active-set iterations for one output; ``u`` (feasible) and
    ``work`` are changed in place. Returns the blocks' final values or None."""
    n, d = X.shape
    beta, w, loss = problem.beta, problem.w, problem.loss
    cache = {}  # null-space bases by block and working set
    trail = []  # the objective after each outer iteration
    for _ in range(max_changes):
        if not blocks:
            return None
        if _no_progress(trail, _objective(problem, X, D, y, u, blocks), 30):
            return None  # 30 changes without progress: the guess is too far off
        bases = _tightened_bases(E, X, u, blocks, work, cache, d)
        if sum(N.shape[1] for N in bases) > max_dim:
            return None  # too many free coordinates for a dense Newton step
        z, converged = _newton(problem, X, D, y, u, blocks, bases, newton_iters)
        if z is None:
            return None
        # step towards the restricted optimum, stopped by the first row it would cross;
        # rows crossed within 1e-6 of the step's length join as well (they are tight)
        step = _block_steps(blocks, bases, z)
        ratios = _row_ratios(E, X, u, step, blocks, work)
        alpha = min([1.0] + [float(t.min()) for _, t in ratios.values() if t.size])
        blocks, gone = _move(u, blocks, step, alpha)
        if alpha < 1.0:
            _join_hit_rows(E, X, u, blocks, work, ratios, alpha, d)
            continue
        if gone or not converged:
            continue  # not yet at the restricted optimum: Newton goes on from here
        # at the restricted optimum: rows held off their hyperplane leave, and so does the
        # row of most negative multiplier of each block
        lam = RL.loss_grad(loss, _output(X, D, u, blocks, n), y, w)
        if not _release_rows(E, X, D, u, blocks, work, lam, beta):
            return u
    return None


def _active_set_hinge(problem, X, D, E, y, u, blocks, work, kink, max_changes, newton_iters,
                      max_dim):
    """The active-set iterations of :func:`_active_set` for the hinge loss (one output).

    The hinge ``w max(0, 1 - m_k)`` of a sample with margin ``m_k = y_k z_k`` is linear on
    either side of ``m_k = 1``: samples below it (in the loss) contribute ``-w m_k``,
    samples above it nothing, and the samples of ``kink`` are held at ``m_k = 1`` exactly,
    like the working rows of the cones. Steps stop at the first cone row or the first
    sample margin they would take across 1 (which joins ``kink``); at a restricted
    optimum the kink multipliers ``s_k`` (the loss multiplier is ``-w y_k s_k``) must
    lie in [0, 1]: the sample of the worst violation leaves for the side it belongs to,
    then the cone rows are released as for the smooth losses."""
    n, d = X.shape
    beta, w = problem.beta, problem.w
    cache, trail = {}, []
    kink = np.asarray(kink, dtype=np.int64)
    side = None  # 1 for samples in the loss (margin below 1), 0 above
    for _ in range(max_changes):
        if not blocks:
            return None
        if _no_progress(trail, _objective(problem, X, D, y, u, blocks), 100):
            # (a longer window than the smooth losses': putting many kink margins and
            # rows exactly in place can raise f for a while)
            return None
        bases = _tightened_bases(E, X, u, blocks, work, cache, d)
        K = sum(N.shape[1] for N in bases)
        if K == 0 or K > max_dim:
            return None
        B = np.hstack([_sign(b) * D[:, b[1], None] * (X @ N) for b, N in zip(blocks, bases)])
        C = y[:, None] * B  # margin changes per unit of z
        m = y * _output(X, D, u, blocks, n)
        # a margin at 1 to rounding keeps the side it was given (a released kink sample)
        clear = np.abs(m - 1.0) > 1e-12
        side = np.where(clear, m < 1.0, side if side is not None else m < 1.0).astype(np.int8)
        kink = _independent(C[kink], kink, K)
        # onto the kink: the least-norm z putting the held margins at exactly 1
        if kink.size and float(np.abs(m[kink] - 1.0).max()) > 1e-13:
            z = np.linalg.lstsq(C[kink], 1.0 - m[kink], rcond=None)[0]
            converged = False
        else:
            inside = np.setdiff1d(np.flatnonzero(side == 1), kink)
            gA = -w * C[inside].sum(0)
            z, converged = _newton_hinge(beta, u, blocks, bases, gA, C[kink], newton_iters)
            if z is None:
                return None
        step = _block_steps(blocks, bases, z)
        ratios = _row_ratios(E, X, u, step, blocks, work)
        # sample margins the step takes across 1 (those outside the kink)
        dm = C @ z
        free = np.ones(n, dtype=bool)
        free[kink] = False
        cross = free & (((side == 1) & (dm > 0)) | ((side == 0) & (dm < 0)))
        cross &= np.abs(dm) > 1e-14 * max(1.0, float(np.abs(dm).max(initial=0.0)))
        rs = np.flatnonzero(cross)
        ts = np.maximum((1.0 - m[rs]) / dm[rs], 0.0)
        alpha = min([1.0] + [float(t.min()) for _, t in ratios.values() if t.size]
                    + ([float(ts.min())] if ts.size else []))
        blocks, gone = _move(u, blocks, step, alpha)
        if alpha < 1.0:
            _join_hit_rows(E, X, u, blocks, work, ratios, alpha, d)
            hit = rs[ts <= alpha * (1 + 1e-9) + 1e-12]
            kink = np.concatenate([hit, kink])
            continue
        if gone or not converged:
            continue
        # at the restricted optimum: the kink multipliers from the stationarity of z
        inside = np.setdiff1d(np.flatnonzero(side == 1), kink)
        s = np.zeros(n)
        s[inside] = 1.0
        if kink.size:
            grad = -w * C[inside].sum(0)
            off = 0
            for b, N in zip(blocks, bases):
                k = N.shape[1]
                grad[off:off + k] += beta * (N.T @ u[b]) / np.linalg.norm(u[b])
                off += k
            # grad + C_kink^T nu = 0 with nu = -w s_kink
            nu = np.linalg.lstsq(C[kink].T, -grad, rcond=None)[0]
            s[kink] = -nu / w
            bad = np.maximum(s[kink] - 1.0, -s[kink])
            j = int(np.argmax(bad))
            if bad[j] > 1e-9:  # it leaves for the side its multiplier asks for
                side[kink[j]] = 1 if s[kink[j]] > 1.0 else 0
                kink = np.delete(kink, j)
                continue
        lam = -w * y * np.clip(s, 0.0, 1.0)
        if not _release_rows(E, X, D, u, blocks, work, lam, beta):
            return u
    return None


def _newton_hinge(beta, u, blocks, bases, gA, Ck, iters):
    """Newton's method for ``min_z gA^T z + beta sum_g ||u_g + N_g z_g||`` subject to
    ``Ck z = 0`` (the kink margins stay at 1), from ``z = 0``, each step from the
    equality-constrained KKT system and a backtracking line search, each at most the
    blocks' size long (the problem can be unbounded along the face: the caller's ratio
    test cuts the path). Returns ``(z, converged)``, ``z`` None when non-finite values
    appear."""
    sizes = [N.shape[1] for N in bases]
    offs = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    K, q = int(sum(sizes)), Ck.shape[0]
    nb, d = len(blocks), bases[0].shape[0]
    Nbig = np.zeros((nb * d, K))
    for j, (N, o) in enumerate(zip(bases, offs)):
        Nbig[j * d:(j + 1) * d, o:o + N.shape[1]] = N
    U0 = np.concatenate([u[b] for b in blocks])

    def value(z):
        Ub = (U0 + Nbig @ z).reshape(nb, d)
        return float(gA @ z) + beta * float(np.sqrt((Ub * Ub).sum(1)).sum())

    z = np.zeros(K)
    f = value(z)
    scale0 = max(1.0, float(np.linalg.norm(U0)))
    for _ in range(iters):
        grad = gA.copy()
        H = np.zeros((K, K))
        for b, N, o in zip(blocks, bases, offs):
            k = N.shape[1]
            ub = u[b] + N @ z[o:o + k]
            nrm = float(np.linalg.norm(ub))
            if nrm <= 0:
                return None, False
            gb = N.T @ ub
            grad[o:o + k] += beta * gb / nrm
            H[o:o + k, o:o + k] += beta / nrm * (np.eye(k) - np.outer(gb, gb) / nrm**2)
        H[np.diag_indices_from(H)] += 1e-12 * max(1.0, float(np.abs(np.diag(H)).max()))
        KKT = np.zeros((K + q, K + q))
        KKT[:K, :K] = H
        KKT[:K, K:] = Ck.T
        KKT[K:, :K] = Ck
        rhs = np.concatenate([-grad, np.zeros(q)])
        try:
            step = np.linalg.solve(KKT, rhs)[:K]
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(KKT, rhs, rcond=None)[0][:K]
        dec = -float(grad @ step)
        if not np.all(np.isfinite(step)) or not np.isfinite(dec):
            return None, False
        capped = np.linalg.norm(step) > scale0
        if capped:
            # far (or unbounded, where f decreases linearly along the face): at most the
            # blocks' own size per iteration; the caller's ratio test cuts the path
            step = step * (scale0 / np.linalg.norm(step))
            dec = -float(grad @ step)
        elif dec <= 1e-20 * max(1.0, abs(f)):
            return z, True
        elif dec <= 1e-12 * max(1.0, abs(f)):
            return z + step, True
        t, accepted = 1.0, False
        for _ls in range(30):
            f_new = value(z + t * step)
            if f_new <= f - 0.25 * t * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return z, True
        z, f = z + t * step, f_new
    return z, False


def _release_rows(E, X, D, u, blocks, work, lam, beta) -> bool:
    """At a restricted optimum with loss multiplier ``lam``: rows held off their
    hyperplane leave the working sets, and so does each block's row of most negative
    multiplier. Returns whether any row left."""
    released = False
    for b in blocks:
        rows = work[b]
        if not rows.size:
            continue
        A = _rows(E, X, b, rows)
        g = A @ u[b]
        loose = g > 1e-12 * max(float(np.abs(E[:, b[1]] * (X @ u[b])).max()), 1e-300)
        grad = _sign(b) * (X.T @ (D[:, b[1]] * lam)) + beta * u[b] / np.linalg.norm(u[b])
        mu = np.linalg.lstsq(A.T, grad, rcond=None)[0]
        drop = loose.copy()
        j = int(np.argmin(np.where(loose, np.inf, mu)))
        if not loose[j] and mu[j] < -1e-9 * max(1.0, float(np.abs(mu).max())):
            drop[j] = True
        if drop.any():
            work[b] = rows[~drop]
            released = True
    return released


def _objective(problem, X, D, y, u, blocks):
    """The program's objective (one output) at the blocks ``u``."""
    z = _output(X, D, u, blocks, X.shape[0])
    return float(RL.loss_value(problem.loss, z[:, None], y[:, None], problem.w)) \
        + problem.beta * sum(float(np.linalg.norm(u[b])) for b in blocks)


def _tightened_bases(E, X, u, blocks, work, cache, d):
    """Each block moved onto its working rows (:func:`_tighten`), then the null-space
    bases of the working sets (cached by block and set)."""
    for b in blocks:
        _tighten(E, X, b, u, work, d)
    bases = []
    for b in blocks:
        key = (b, work[b].tobytes())
        if key not in cache:
            cache[key] = _null_basis(_rows(E, X, b, work[b]))
        bases.append(cache[key])
    return bases


def _block_steps(blocks, bases, z):
    """The blocks' changes ``N_g z_g`` of the stacked step ``z``."""
    step, off = {}, 0
    for b, N in zip(blocks, bases):
        k = N.shape[1]
        step[b] = N @ z[off:off + k]
        off += k
    return step


def _move(u, blocks, step, alpha):
    """``u_g += alpha step_g`` in place; blocks that shrink to zero are dropped. Returns
    the kept blocks and the dropped ones."""
    for b in blocks:
        u[b] = u[b] + alpha * step[b]
    kept = _nonzero(u, blocks)
    gone = [b for b in blocks if b not in kept]
    for b in gone:
        del u[b]
    return kept, gone


def _row_ratios(E, X, u, step, blocks, work):
    """Per block: the rows outside the working set that the step ``u + t step`` moves
    towards their hyperplane, and the ``t`` at which each reaches it."""
    ratios = {}
    for b in blocks:
        gu = E[:, b[1]] * (X @ u[b])
        gp = E[:, b[1]] * (X @ step[b])
        scale = max(float(np.abs(gu).max(initial=0.0)), 1e-300)
        moving = gp < -1e-14 * scale
        moving[work[b]] = False
        r = np.flatnonzero(moving)
        ratios[b] = (r, np.maximum(gu[r], 0.0) / -gp[r])
    return ratios


def _join_hit_rows(E, X, u, blocks, work, ratios, alpha, d):
    """After a step of length ``alpha`` cut short by :func:`_row_ratios`: the rows it
    reached (and those within 1e-6 of the step's length, which are tight too) join the
    working sets, first; the held rows follow by increasing distance from their
    hyperplane, so a full set gives up its loosest rows for them."""
    for b in blocks:
        r, t = ratios[b]
        hit = t <= max(alpha * (1 + 1e-9), 1e-6)
        if hit.any():
            held = work[b]
            gap = _rows(E, X, b, held) @ u[b]
            rows = np.concatenate([r[hit][np.argsort(t[hit])],
                                   held[np.argsort(gap, kind="stable")]])
            work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)


def _tighten(E, X, b, u, work, d):
    """Move block ``b`` onto the hyperplanes of its working set (the least-norm step
    making those rows exact), stopped by the first other row it would cross (which
    joins the set, the loosest held row giving way when the set is full)."""
    rows = work[b]
    if not rows.size:
        return
    A = _rows(E, X, b, rows)
    gw = A @ u[b]
    g_all = E[:, b[1]] * (X @ u[b])
    scale = max(float(np.abs(g_all).max(initial=0.0)), 1e-300)
    if float(np.abs(gw).max()) <= 1e-13 * scale:
        return
    delta = -np.linalg.lstsq(A, gw, rcond=None)[0]
    gp = E[:, b[1]] * (X @ delta)
    moving = gp < -1e-14 * scale
    moving[rows] = False
    r = np.flatnonzero(moving)
    t = np.maximum(g_all[r], 0.0) / -gp[r]
    alpha = min(1.0, float(t.min(initial=np.inf)))
    u[b] = u[b] + alpha * delta
    if alpha < 1.0:
        hit = t <= alpha * (1 + 1e-9)
        gap = A @ u[b]
        order = np.concatenate([r[hit], rows[np.argsort(gap, kind="stable")]])
        work[b] = _independent(_rows(E, X, b, order), order, d - 1)


def _output(X, D, u, blocks, n):
    z = np.zeros(n)
    for b in blocks:
        z += _sign(b) * D[:, b[1]] * (X @ u[b])
    return z


def _independent(A, rows, cap):
    """The rows of ``A`` (in order) that are linearly independent of the ones before
    them, at most ``cap`` of them (a face of the cone keeps at least one direction)."""
    picked, Q = [], np.zeros((0, A.shape[1]))
    for r, a in zip(rows, A):
        if len(picked) >= cap:
            break
        res = a - Q.T @ (Q @ a)
        nr = float(np.linalg.norm(res))
        if nr > 1e-8 * float(np.linalg.norm(a)):
            picked.append(r)
            Q = np.vstack([Q, res / nr])
    return np.asarray(picked, dtype=np.int64)


def _null_basis(A):
    """Orthonormal basis (d, k) of the null space of ``A`` (rank by relative 1e-10)."""
    d = A.shape[1]
    if A.shape[0] == 0:
        return np.eye(d)
    _, sv, Vt = np.linalg.svd(A, full_matrices=True)
    r = int((sv > 1e-10 * sv.max(initial=0.0)).sum()) if sv.size else 0
    return Vt[r:].T.copy()


def _newton(problem, X, D, y, u, blocks, bases, iters):
    """Damped Newton for the step ``z`` (one piece ``z_g`` per block) minimizing
    ``loss(sum_g F_g (u_g + N_g z_g)) + beta sum_g ||u_g + N_g z_g||`` from ``z = 0``.
    Returns ``(z, converged)``; ``z`` is None if non-finite values appear.

    A block whose line ``u_g + N_g z_g`` passes through the origin (a ray, held by all
    but one direction) must not pass it: its step is shortened to reach zero, and the
    block stays frozen at zero from then on."""
    beta, w, loss = problem.beta, problem.w, problem.loss
    sizes = [N.shape[1] for N in bases]
    offs = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    K = int(sum(sizes))
    if K == 0:
        return np.zeros(0), True
    B = np.hstack([_sign(b) * D[:, b[1], None] * (X @ N) for b, N in zip(blocks, bases)])
    r0 = _output(X, D, u, blocks, X.shape[0])
    # rays through the origin: u_g = t n with t > 0; z_g >= -t keeps the sign
    floor = {}
    for j, (b, N, o) in enumerate(zip(blocks, bases, offs)):
        if N.shape[1] == 1:
            t = float(N[:, 0] @ u[b])
            if np.linalg.norm(u[b] - t * N[:, 0]) <= 1e-12 * max(abs(t), 1e-300):
                floor[int(o)] = -t if t > 0 else None
    floor = {o: f for o, f in floor.items() if f is not None}
    frozen = np.zeros(K, dtype=bool)

    nb, d = len(blocks), X.shape[1]
    Nbig = np.zeros((nb * d, K))  # block-diagonal: z -> the blocks' changes
    for j, (N, o) in enumerate(zip(bases, offs)):
        Nbig[j * d:(j + 1) * d, o:o + N.shape[1]] = N
    U0 = np.concatenate([u[b] for b in blocks])

    def value(z):
        val = float(RL.loss_value(loss, (r0 + B @ z)[:, None], y[:, None], w))
        Ub = (U0 + Nbig @ z).reshape(nb, d)
        return val + beta * float(np.sqrt((Ub * Ub).sum(1)).sum())

    gram = B.T @ B if loss == "squared" else None
    z = np.zeros(K)
    f = value(z)
    converged = False
    start = [float(np.linalg.norm(u[b])) for b in blocks]
    to_zero = [-(N.T @ u[b]) for b, N in zip(blocks, bases)]  # the z_g of u_g's null part = 0
    for _ in range(iters):
        # a block that shrinks towards zero is tried at zero (the group norm is not smooth
        # there and Newton would crawl): kept there if that does not raise the objective
        for j, (b, N, o) in enumerate(zip(blocks, bases, offs)):
            k = N.shape[1]
            if k == 0 or frozen[o]:
                continue
            if np.linalg.norm(u[b] + N @ z[o:o + k]) <= 1e-2 * start[j]:
                z_try = z.copy()
                z_try[o:o + k] = to_zero[j]
                f_try = value(z_try)
                if f_try <= f:
                    z, f = z_try, f_try
                    frozen[o:o + k] = True
        r = r0 + B @ z
        grad = B.T @ RL.loss_grad(loss, r, y, w)
        H = w * gram if gram is not None else \
            B.T @ (RL.loss_hess_diag(loss, r, y, w)[:, None] * B)
        for b, N, o in zip(blocks, bases, offs):
            k = N.shape[1]
            ub = u[b] + N @ z[o:o + k]
            nrm = float(np.linalg.norm(ub))
            if nrm > 0:
                gb = N.T @ ub
                grad[o:o + k] += beta * gb / nrm
                H[o:o + k, o:o + k] += beta / nrm * (np.eye(k) - np.outer(gb, gb) / nrm**2)
        H[np.diag_indices_from(H)] += 1e-14 * max(1.0, float(np.abs(np.diag(H)).max()))
        if frozen.any():
            grad[frozen] = 0.0
            H[frozen, :] = 0.0
            H[:, frozen] = 0.0
            H[frozen, frozen] = 1.0
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            return None, False
        dec = -float(grad @ step)
        if not np.isfinite(dec):
            return None, False
        if dec <= 1e-20 * max(1.0, abs(f)):
            converged = True
            break
        t_max, hit = 1.0, None
        for o, fl in floor.items():
            if not frozen[o] and step[o] < 0 and z[o] + step[o] < fl:
                t = (fl - z[o]) / step[o]
                if t < t_max:
                    t_max, hit = t, o
        if hit is None and dec <= 1e-12 * max(1.0, abs(f)):
            z = z + step  # quadratic regime: below what a line search on f can resolve
            converged = True
            break
        t, accepted = t_max, False
        for _ls in range(30):  # backtracking (Armijo)
            z_new = z + t * step
            if hit is not None and t == t_max:
                z_new[hit] = floor[hit]
            f_new = value(z_new)
            if f_new <= f - 0.25 * t * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            converged = True  # no further decrease that f can resolve
            break
        if hit is not None and t == t_max:
            frozen[hit] = True
        z, f = z_new, f_new
    if not np.all(np.isfinite(z)):
        return None, False
    return z, converged
