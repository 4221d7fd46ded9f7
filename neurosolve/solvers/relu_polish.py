"""Solution polishing for the convex ReLU program: an active-set method from ADMM's guess.

ADMM identifies *which* neurons are active and *which* cone constraints hold with
equality long before it resolves their values to high accuracy: its tail is slow and
linear. Polishing (as in OSQP [2]_) takes that guess from the ADMM state and solves the
program restricted to it exactly:

- a block ``u_g`` (a ``v_i`` or ``w_i`` of the program, one output) is kept when it is
  nonzero at the ADMM point and dropped otherwise;
- on a kept block, the rows ``(2 D_i - I) X u_g >= 0`` with a positive ADMM multiplier
  (at most ``d - 1`` independent ones, larger multipliers first) form the working set,
  held as equalities: ``u_g = N_g z_g`` with ``N_g`` an orthonormal basis of their null
  space (a one-dimensional ``N_g`` is a ray of the cone, whose coordinate stays >= 0);
- the restricted problem ``min_z loss(sum_g F_g N_g z_g) + beta sum_g ||z_g||`` is smooth
  where every ``z_g != 0`` and is solved by Newton's method with a backtracking line
  search (squared and logistic losses);
- a primal active-set method then moves from a feasible point towards the restricted
  optimum, adding the rows it runs into and releasing those whose multiplier is
  negative, until a KKT point of the program on the kept blocks is reached.

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

POLISHABLE_LOSSES = ("squared", "logistic")


def polish(problem, x, multipliers=None, *, max_changes: int = 60, newton_iters: int = 50,
           keep_tol: float = 1e-6):
    """A polished candidate for ``problem`` from the point ``x`` (numpy, ``problem.x_shape``).

    Phase 1 solves the program restricted to the blocks that are nonzero at ``x`` and to
    the guessed working sets (each block in the null space of its rows), adding each
    block's most violated row for a few rounds. Phase 2 is a primal active-set method
    from that point if it is feasible (else from its cone projection), so every
    iterate is feasible and the objective never increases: Newton on the null spaces of
    the working sets; a step that would leave the cone stops at the first row it
    reaches, which joins the working set; at the restricted optimum the row with the
    most negative multiplier of each block leaves; a block that shrinks to zero is
    dropped. It ends at a KKT point of the program restricted to the kept blocks, which
    the caller certifies.

    Parameters
    ----------
    problem : ConvexReLU
        A non-robust program with the squared or logistic loss.
    x : ndarray
        The point whose support and active constraints are the guess.
    multipliers : ndarray, shape (n, 2, P, c), optional
        Cone multipliers of the rows (ADMM's ``-rho2 nu``): they order the tight rows of
        the start when its working sets are chosen (larger first, at most ``d - 1``
        linearly independent rows per block). Default: tight rows in index order.
    max_changes : int
        Working-set changes allowed before giving up.
    newton_iters : int
        Newton iterations per restricted solve.
    keep_tol : float
        Blocks with ``||u_g|| <= keep_tol max ||u||`` at the start are dropped.

    Returns
    -------
    ndarray or None
        The candidate in ``problem.x_shape`` (numpy), or None when no block is left,
        Newton fails (non-finite values) or the working sets have not settled within
        ``max_changes``.

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
    X, D, Y = problem.Xt_np, problem.D_np, problem.Y_np
    d, c = problem.d, problem.c
    E = 2.0 * D - 1.0
    x = np.asarray(to_numpy(x, np.float64), dtype=np.float64)
    U = np.stack(problem._vw(x))  # (2, P, d, c)
    # phase 1: restricted optima on the guessed working sets, violated rows added
    U1 = np.zeros_like(U)
    starts, feasible = [], True
    for o in range(c):
        blocks = _kept_blocks(U[..., o], keep_tol)
        if not blocks:
            starts.append({})
            continue
        work = {}
        for b in blocks:
            if multipliers is not None:
                wt = np.asarray(multipliers[:, b[0], b[1], o], np.float64)
                rows = np.flatnonzero(wt > 0)
                rows = rows[np.argsort(-wt[rows], kind="stable")]
            else:
                rows = _tight(E, X, b, U[b][..., o], 1e-6)
            work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)
        u1, blocks, ok = _phase_one(problem, X, D, E, Y[:, o],
                                    {b: U[b][..., o] for b in blocks}, blocks, work,
                                    newton_iters)
        if u1 is None:
            return None
        for b in blocks:
            U1[b][..., o] = u1[b]
        starts.append(work)
        feasible = feasible and ok
    # phase 2: feasible active-set iterations (from the cone projection if phase 1 did
    # not reach a feasible point)
    if feasible:
        Uf = U1
    else:
        x1 = U1 if c > 1 else U1[..., 0]
        xf = to_numpy(problem.project_feasible(problem._from_numpy(x1)), np.float64)
        Uf = np.stack(problem._vw(xf))
    out = np.zeros_like(Uf)
    for o in range(c):
        blocks = _kept_blocks(Uf[..., o], keep_tol)
        if not blocks:
            continue
        u_out = _active_set(problem, X, D, E, Y[:, o], Uf[..., o], blocks, starts[o],
                            max_changes, newton_iters)
        if u_out is None:
            return None
        out[..., o] = u_out
    return out if c > 1 else out[..., 0]


def _phase_one(problem, X, D, E, y, u, blocks, work, newton_iters, rounds: int = 4):
    """Restricted optima on the working sets ``work`` (changed in place); after each,
    every block's most violated row enters (first, so a full set gives up its last row)
    and blocks that shrank to zero leave. Returns ``(u, blocks, feasible)``; ``u`` is None
    on failure."""
    d = X.shape[1]
    for _ in range(rounds):
        target = _restricted_optimum(problem, X, D, y, u, blocks, work, E, newton_iters)
        if target is None:
            return None, blocks, False
        u = target
        blocks = _nonzero(u, blocks)
        if not blocks:
            return None, blocks, False
        clean = True
        for b in blocks:
            g = E[:, b[1]] * (X @ u[b])
            scale = max(float(np.abs(g).max(initial=0.0)), 1e-300)
            j = int(np.argmin(g))
            if g[j] < -1e-12 * scale:
                clean = False
                rows = np.concatenate([[j], work[b]]).astype(np.int64)
                work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)
        if clean:
            return u, blocks, True
    return u, blocks, False


def _nonzero(u, blocks, tol: float = 1e-8):
    """The blocks whose norm exceeds ``tol`` times the largest."""
    top = max([float(np.linalg.norm(u[b])) for b in blocks] + [0.0])
    return [b for b in blocks if float(np.linalg.norm(u[b])) > tol * top]


def _kept_blocks(Uo, keep_tol):
    norms = np.linalg.norm(Uo, axis=2)  # (2, P)
    top = norms.max(initial=0.0)
    if top <= 0:
        return []
    return [(s, i) for s in range(2) for i in range(Uo.shape[1]) if norms[s, i] > keep_tol * top]


def _rows(E, X, b, r):
    """The constraint rows ``(2 D_i - I) X`` of block ``b`` at indices ``r``."""
    return E[r, b[1], None] * X[r]


def _tight(E, X, b, u, tol):
    g = E[:, b[1]] * (X @ u)
    return np.flatnonzero(g <= tol * max(float(np.abs(g).max(initial=0.0)), 1e-300))


def _restricted_optimum(problem, X, D, y, u, blocks, work, E, newton_iters):
    """Newton on ``loss + beta sum ||u_g||`` with ``u_g`` in the null space of its
    working set, from the projection of ``u`` on those null spaces; None on failure."""
    bases = []
    for b in blocks:
        N = _null_basis(_rows(E, X, b, work[b]))
        if N.shape[1] == 1 and float(N[:, 0] @ u[b]) < 0:
            N = -N  # a ray points the way of the block (its coordinate stays >= 0)
        bases.append(N)
    sizes = [N.shape[1] for N in bases]
    if sum(sizes) == 0:
        return None
    B = np.hstack([(1.0 if b[0] == 0 else -1.0) * D[:, b[1], None] * (X @ N)
                   for b, N in zip(blocks, bases)])
    z0 = np.concatenate([N.T @ u[b] for b, N in zip(blocks, bases)])
    z = _newton(problem, B, y, z0, sizes, newton_iters)
    if z is None:
        return None
    out, off = {}, 0
    for b, N, k in zip(blocks, bases, sizes):
        out[b] = N @ z[off:off + k]
        off += k
    return out


def _active_set(problem, X, D, E, y, Uo, blocks, guess, max_changes, newton_iters):
    """Feasible primal active-set iterations for one output (see :func:`polish`).

    ``Uo`` is feasible; the working set of a block starts with its tight rows, those of
    the phase-1 guess first (they carry the multiplier order)."""
    n, d = X.shape
    beta, w, loss = problem.beta, problem.w, problem.loss
    u = {b: Uo[b].copy() for b in blocks}
    work = {}
    for b in blocks:
        tight = _tight(E, X, b, u[b], 1e-9)
        first = np.asarray([r for r in guess.get(b, ()) if r in set(tight.tolist())], np.int64)
        rest = np.setdiff1d(tight, first)
        rows = np.concatenate([first, rest]).astype(np.int64)
        work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)
    for _ in range(max_changes):
        if not blocks:
            return None
        target = _restricted_optimum(problem, X, D, y, u, blocks, work, E, newton_iters)
        if target is None:
            return None
        # step towards the restricted optimum, stopped by the first row it would cross
        ratios = {}
        for b in blocks:
            gu = E[:, b[1]] * (X @ u[b])
            gp = E[:, b[1]] * (X @ (target[b] - u[b]))
            scale = max(float(np.abs(gu).max(initial=0.0)), 1e-300)
            moving = gp < -1e-14 * scale
            moving[work[b]] = False
            r = np.flatnonzero(moving)
            ratios[b] = (r, np.maximum(gu[r], 0.0) / -gp[r])
        alpha = min([1.0] + [float(t.min()) for _, t in ratios.values() if t.size])
        for b in blocks:
            u[b] = u[b] + alpha * (target[b] - u[b])
        kept = _nonzero(u, blocks)
        gone = [b for b in blocks if b not in kept]
        blocks = kept  # shrunk to zero: dropped
        if alpha < 1.0:
            # the blocking row joins its block's working set, and with it every row the
            # full step would cross within 1e-6 of its length (they are tight already)
            for b in blocks:
                r, t = ratios[b]
                near = r[t <= max(alpha, 1e-6)]
                if near.size:
                    rows = np.append(work[b], near[np.argsort(t[t <= max(alpha, 1e-6)])])
                    work[b] = _independent(_rows(E, X, b, rows), rows, d - 1)
            continue
        if gone:
            continue
        # at the restricted optimum: release the most negative multiplier of each block
        lam = RL.loss_grad(loss, _output(X, D, u, blocks, n), y, w)
        released = False
        for b in blocks:
            if not work[b].size:
                continue
            grad = (1.0 if b[0] == 0 else -1.0) * (X.T @ (D[:, b[1]] * lam)) \
                + beta * u[b] / np.linalg.norm(u[b])
            mu = np.linalg.lstsq(_rows(E, X, b, work[b]).T, grad, rcond=None)[0]
            j = int(np.argmin(mu))
            if mu[j] < -1e-9 * max(1.0, float(np.abs(mu).max())):
                work[b] = np.delete(work[b], j)
                released = True
        if not released:
            out = np.zeros_like(Uo)
            for b in blocks:
                out[b] = u[b]
            return out
    return None


def _output(X, D, u, blocks, n):
    z = np.zeros(n)
    for b in blocks:
        z += (1.0 if b[0] == 0 else -1.0) * D[:, b[1]] * (X @ u[b])
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


def _block_norms(z, starts):
    """Norms of the consecutive blocks of ``z`` starting at ``starts``."""
    return np.sqrt(np.add.reduceat(z * z, starts)) if starts.size else np.zeros(0)


def _phi(problem, B, y, z, starts):
    val = float(RL.loss_value(problem.loss, (B @ z)[:, None], y[:, None], problem.w))
    return val + problem.beta * float(_block_norms(z, starts).sum())


def _newton(problem, B, y, z, sizes, iters):
    """Damped Newton on ``loss(B z) + beta sum ||z_g||`` (smooth at blocks away from 0);
    None if it produces non-finite values.

    A one-dimensional block is a ray of its cone (the working set fixes its direction),
    so its coordinate must stay >= 0: a step that would take it below zero is shortened
    to reach zero, and the block stays frozen at zero from then on."""
    beta, w, loss = problem.beta, problem.w, problem.loss
    sizes = list(sizes)
    offs = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    starts = offs[np.asarray(sizes) > 0]
    rays = np.asarray([o for o, k in zip(offs, sizes) if k == 1], dtype=np.int64)
    z = z.copy()
    if rays.size:
        z[rays] = np.maximum(z[rays], 0.0)
    frozen = np.zeros(z.size, dtype=bool)
    if rays.size:
        frozen[rays[z[rays] <= 0]] = True
    gram = B.T @ B if loss == "squared" else None
    f = _phi(problem, B, y, z, starts)
    for _ in range(iters):
        r = B @ z
        grad = B.T @ RL.loss_grad(loss, r, y, w)
        if gram is not None:
            H = w * gram
        else:
            H = B.T @ (RL.loss_hess_diag(loss, r, y, w)[:, None] * B)
        for o, k in zip(offs, sizes):
            zg = z[o:o + k]
            nz = float(np.sqrt(zg @ zg))
            if nz > 0:
                grad[o:o + k] += beta * zg / nz
                H[o:o + k, o:o + k] += beta / nz * (np.eye(k) - np.outer(zg, zg) / nz**2)
        H[np.diag_indices_from(H)] += 1e-14 * max(1.0, float(np.abs(np.diag(H)).max()))
        if frozen.any():
            grad[frozen] = 0.0
            H[frozen, :] = 0.0
            H[:, frozen] = 0.0
            H[frozen, frozen] = 1.0
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            return None
        dec = -float(grad @ step)
        if not np.isfinite(dec):
            return None
        if dec <= 1e-20 * max(1.0, abs(f)):
            break
        t_max, hit = 1.0, None
        if rays.size:
            live = rays[~frozen[rays] & (step[rays] < 0)]
            if live.size:
                ratio = z[live] / -step[live]
                j = int(np.argmin(ratio))
                if ratio[j] < 1.0:
                    t_max, hit = float(ratio[j]), int(live[j])
        if hit is None and dec <= 1e-12 * max(1.0, abs(f)):
            z = z + step  # quadratic regime: below what a line search on f can resolve
            break
        t, accepted = t_max, False
        for _ls in range(30):  # backtracking (Armijo)
            z_new = z + t * step
            if hit is not None and t == t_max:
                z_new[hit] = 0.0
            f_new = _phi(problem, B, y, z_new, starts)
            if f_new <= f - 0.25 * t * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            break
        if hit is not None and t == t_max:
            frozen[hit] = True
        z, f = z_new, f_new
    return z if np.all(np.isfinite(z)) else None
