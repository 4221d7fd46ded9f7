"""Damped (Krasnosel'skii-Mann) iteration and safeguarded Anderson acceleration for ``z = F(z)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.problems.fixed_point import FixedPointProblem, row_norms

__all__ = ["FixedPoint"]


def torch_where(c, a, b):
    import torch

    return torch.where(c, a, b)


def _lib(a):
    """The array namespace of ``a`` (numpy or torch): both spell ``where``, ``einsum``,
    ``isfinite``, ``minimum`` and ``linalg.eigvalsh`` the same way."""
    if is_torch(a):
        import torch

        return torch
    return np


_METHODS = ("damped", "anderson")


@dataclass(eq=False)
class FixedPointState(State):
    """Iteration data of :class:`FixedPoint`: ``g = F(x)``, the residual ``f = g - x`` and
    its per-row norms, and for Anderson the secant history (ring buffers of the residual
    differences ``dF`` between successive evaluated points and of ``dW = dZ + damping dF``
    for the point differences ``dZ``, the Gram matrix ``gram`` of ``dF`` and the per-row
    mask ``valid``), each row's best residual since its last restart, the progress-test
    bookkeeping (window start point ``cx``/``cg``, its reference ``win_r``, the window's
    length and best residual, the damped steps still to take ``hold`` and the next
    ``backoff``), and the fallback/restart/stall counts of this solve."""

    g: Any = None
    f: Any = None
    res_rows: Any = None
    ok: Any = None
    res_max: Any = None
    frac: Any = None
    finite: Any = True
    r0: Any = None
    k_start: int = 0
    dW: Any = None
    dF: Any = None
    gram: Any = None
    valid: Any = None
    slot: int = 0
    best: Any = None
    hold: Any = None
    backoff: Any = None
    win_r: Any = None
    win_n: Any = None
    cx: Any = None
    cg: Any = None
    floor: Any = None
    hold_ref: Any = None
    win_min: Any = None
    n_restarts: Any = 0
    n_fallbacks: Any = 0
    n_stalls: Any = 0


@dataclass(frozen=True, kw_only=True)
class FixedPoint(Solver):
    """Fixed-point iteration for ``z = F(z)``: damped, or with safeguarded Anderson acceleration.

    ``method="damped"`` iterates ``z <- z + damping * (F(z) - z)`` (``damping=1`` is plain
    Picard iteration, torchdeq's ``fixed_point_iter``).

    ``method="anderson"`` is type-II Anderson mixing in the difference form of Walker and
    Ni [2]_: with ``f = F(z) - z`` at the current point and the last ``memory`` secant pairs
    ``(dz_i, df_i)`` (differences between successive evaluated points and between their
    residuals), ``gamma`` solves the Tikhonov-regularized least-squares problem
    ``min ||f - dF gamma||^2 + lam ||dF^H dF||_F ||gamma||^2`` (``lam = regularization``;
    Hermitian for complex states) and the candidate is
    ``z + damping * f - (dZ + damping * dF) gamma``. The safeguards, per row, make it a
    globalized Anderson method in the spirit of [3]_ (whose damped fallback is the
    Krasnosel'skii-Mann step):

    * **fallback** (``safeguard=True``): a candidate whose residual exceeds
      ``safeguard_ratio`` times the current one (or is not finite) is rejected: the row
      stays where it was and its next step is the damped step;
    * **progress test** (``safeguard=True``, ``stall_window > 0``): every ``stall_window``
      extrapolated steps must, at some point of the window, bring the residual below
      ``stall_factor`` times the best residual the row had when the window began. If not, the row goes back to the point
      where the window began and takes damped steps: ``backoff`` of them after the first
      failure, doubling after each further failure (reset by a successful window), ended
      early when a damped step beats that best residual. This handles the case where
      Anderson stalls near a point of small but nonzero residual (a "ghost" of a fixed
      point, as near a saddle-node) that the damped iteration passes by;
    * **restart on growth**: a row whose residual exceeds ``restart`` times its smallest
      residual since its last restart drops its history;
    * **restart on ill-conditioning**: a row whose secant Gram matrix ``dF^H dF`` has a
      condition number above ``max_condition`` keeps only its newest pair.

    Rejected candidates count as iterations (each cost one ``F`` evaluation), so an
    Anderson run is charged for its failures. With ``safeguard=False``, ``restart=inf``
    and ``max_condition=inf`` it is plain (regularized) Anderson mixing.

    Parameters
    ----------
    method : {"damped", "anderson"}
    damping : float in (0, 1], default 0.5
        The relaxation factor (``u <- u + 0.5 (F(u) - u)`` is the stabilised version of the
        synchronous update that oscillates in period two for near-symmetric networks).
        Anderson's fallback step is this damped step.
    rtol, atol : float
        Stopping rule: every row ``b`` satisfies
        ``||F(z_b) - z_b|| <= max(rtol * ||z_b||, atol)`` (2-norm, modulus for complex).
    maxiter : int, optional
        Iteration limit; default 1000. One iteration = one evaluation of ``F``.
    memory : int, default 5
        Anderson: number of past secant pairs combined.
    regularization : float, default 1e-8
        Anderson: Tikhonov weight ``lam``, relative to the Frobenius norm of the row's Gram
        matrix ``dF^H dF`` (so it does not depend on the scale of the problem).
    divergence : float, default 1e8
        Report ``DIVERGED`` when the residual exceeds ``divergence`` times the initial one
        (and the initial one is not tiny).
    restart : float, default 4.0
        Anderson: a row whose residual exceeds ``restart`` times its smallest residual since
        its last restart drops its history. ``math.inf`` disables it.
    freeze_converged : bool, default True
        Batched problems: rows that meet the tolerance stop moving (otherwise Anderson
        mixing on rounding-level residuals can push a converged row out again).
    safeguard : bool, default True
        Anderson: the fallback and the progress test above (False: plain Anderson).
    safeguard_ratio : float >= 1, default 2.0
        Anderson: reject a candidate with ``||f(z_new)|| > safeguard_ratio * ||f(z)||``.
        1.0 demands a monotone residual, which rejects many useful steps on the networks
        of :mod:`neurosolve.neural.ep`.
    stall_window : int >= 0, default 5
        Anderson: length of the progress-test window in extrapolated steps (0: no test).
    stall_factor : float in (0, 1], default 0.9
        Anderson: the decrease a window must achieve.
    backoff : int >= 1, default 4
        Anderson: damped steps after the first failed window.
    max_condition : float, default 1e12
        Anderson: restart a row (keep only its newest secant pair) when the condition number
        of its Gram matrix exceeds this; ``math.inf`` disables the test.

    Notes
    -----
    Metrics: ``residual`` (the largest row residual of the current iterate, computed with
    the same ``F`` evaluation that feeds the next step, so the check is exact for the
    returned ``x``) and ``converged_fraction`` (rows meeting the tolerance). The current
    iterate of an Anderson row is its last *accepted* point (a rejected candidate is never
    returned), so a safeguarded run never ends on a non-finite or blown-up candidate.

    ``Result.stats`` of an Anderson solve has, summed over rows, ``anderson_fallbacks``
    (rejected candidates), ``anderson_stalls`` (failed progress windows, each followed by
    a return to the window's start and damped steps) and ``anderson_restarts`` (history
    dropped on growth or ill-conditioning).

    Status: CONVERGED, MAX_ITER (the message reports the residual and the fraction of rows
    that converged), NONFINITE (``F`` produced NaN/inf at an accepted point: e.g. a complex
    state left the analytic region of a holomorphic activation), DIVERGED.

    References
    ----------
    .. [1] D. G. Anderson, "Iterative procedures for nonlinear integral equations",
       J. ACM 12(4), 1965.
    .. [2] H. F. Walker, P. Ni, "Anderson acceleration for fixed-point iterations",
       SIAM J. Numer. Anal. 49(4), 2011.
    .. [3] J. Zhang, B. O'Donoghue, S. Boyd, "Globally convergent type-I Anderson
       acceleration for nonsmooth fixed-point iterations", SIAM J. Optim. 30(4), 2020.
    .. [4] S. Bai, J. Z. Kolter, V. Koltun, "Deep equilibrium models", NeurIPS 2019.
    .. [5] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight
       symmetry through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.problems.fixed_point import FixedPointProblem
    >>> A = np.array([[0.5, 0.2], [0.1, 0.3]]); b = np.array([1.0, 1.0])
    >>> prob = FixedPointProblem(lambda z: A @ z + b, np.zeros(2))
    >>> res = ns.solve(prob, ns.solvers.FixedPoint(atol=1e-12))
    >>> res.success, np.allclose(res.x, np.linalg.solve(np.eye(2) - A, b))
    (True, True)
    >>> res = ns.solve(prob, ns.solvers.FixedPoint(method="anderson", atol=1e-12))
    >>> res.success, sorted(k for k in res.stats if k.startswith("anderson"))
    (True, ['anderson_fallbacks', 'anderson_restarts', 'anderson_stalls'])
    """

    method: str = "damped"
    damping: float = 0.5
    rtol: float = 1e-10
    atol: float = 1e-12
    memory: int = 5
    regularization: float = 1e-8
    divergence: float = 1e8
    freeze_converged: bool = True
    restart: float = 4.0
    safeguard: bool = True
    safeguard_ratio: float = 2.0
    stall_window: int = 5
    stall_factor: float = 0.9
    backoff: int = 4
    max_condition: float = 1e12

    metrics: ClassVar[tuple[str, ...]] = ("residual", "converged_fraction")
    problem_types: ClassVar[tuple[type, ...]] = (FixedPointProblem,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "torch")

    def __post_init__(self):
        super().__post_init__()
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        d = self.damping
        if not isinstance(d, (int, float, np.floating)) or not (0 < d <= 1):
            raise ValueError(f"damping must be in (0, 1], got {d!r}")
        for name in ("rtol", "atol", "regularization"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if not isinstance(self.memory, (int, np.integer)) or self.memory < 1:
            raise ValueError(f"memory must be a positive integer, got {self.memory!r}")
        if not (isinstance(self.divergence, (int, float)) and self.divergence > 1):
            raise ValueError(f"divergence must be a number > 1, got {self.divergence!r}")
        for name in ("restart", "safeguard_ratio", "max_condition"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) \
                    or math.isnan(v) or v < 1:
                raise ValueError(f"{name} must be a number >= 1 (or inf), got {v!r}")
        for name, lo in (("stall_window", 0), ("backoff", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        f = self.stall_factor
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not (0 < f <= 1):
            raise ValueError(f"stall_factor must be in (0, 1], got {f!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 1000

    # -- protocol ------------------------------------------------------------------------
    def init(self, problem: FixedPointProblem, x0, ctx) -> State:
        z = problem.z0 if x0 is None else x0
        if tuple(z.shape) != problem.shape:
            raise ValueError(f"x0 has shape {tuple(z.shape)}; expected {problem.shape}")
        if is_torch(z):
            z = z.clone()
        else:
            z = np.array(z, copy=True)
        g = problem.F(z)
        ctx.count("F_evals")
        if tuple(g.shape) != problem.shape:
            raise ValueError(f"F returned shape {tuple(g.shape)}; expected {problem.shape}")
        state = FixedPointState(x=z, k=0, g=g)
        self._measure(problem, state)
        state.r0 = state.res_max
        state.k_start = 0
        return state

    def resume(self, problem, state, ctx) -> "FixedPointState":
        """Warm start from ``result.state``: the iteration budget counts from here, the
        Anderson history and counts are dropped and the residual is re-measured under the
        (possibly new) tolerances."""
        state.k_start = state.k
        state.dW = state.dF = state.gram = state.valid = state.best = None
        state.hold = state.backoff = state.win_r = state.win_n = None
        state.cx = state.cg = state.floor = state.win_min = state.hold_ref = None
        state.n_restarts = state.n_fallbacks = state.n_stalls = 0
        state.g = problem.F(state.x)
        ctx.count("F_evals")
        self._measure(problem, state)
        return state

    def tolerance(self, problem, state) -> dict[str, float]:
        """``residual`` (max over rows of ``||F(z) - z||``) below ``max(atol, rtol
        max_i ||z_i||)``: implied by the per-row rule, recomputed by the certificate."""
        zn = row_norms(state.x, problem.batched)
        zmax = float(zn.max()) if not is_torch(zn) else float(zn.max().item())
        return {"residual": max(float(self.atol), float(self.rtol) * zmax)}

    def finalize(self, problem, state, ctx):
        if self.method == "anderson":
            # set, not add: finalize may run more than once in a solve
            ctx.counters["anderson_fallbacks"] = int(to_float(state.n_fallbacks))
            ctx.counters["anderson_restarts"] = int(to_float(state.n_restarts))
            ctx.counters["anderson_stalls"] = int(to_float(state.n_stalls))
        return state.x

    def _measure(self, problem, state):
        f = state.g - state.x
        state.f = f
        res = row_norms(f, problem.batched)
        zn = row_norms(state.x, problem.batched)
        if is_torch(res):
            import torch

            tol = torch.clamp(self.rtol * zn, min=self.atol)
            ok = res <= tol
            res_max = res.max()
            frac = ok.to(torch.float64).mean()
            finite = torch.isfinite(res).all()
        else:
            tol = np.maximum(self.rtol * zn, self.atol)
            ok = res <= tol
            res_max = res.max()
            frac = ok.mean()
            finite = np.isfinite(res).all()
        state.res_rows = res
        state.ok = ok
        state.res_max = res_max
        state.frac = frac
        state.finite = finite
        state.metrics = {"residual": res_max, "converged_fraction": frac}

    def step(self, problem, state, ctx) -> State:
        z, f = state.x, state.f
        if self.method == "damped":
            z_new, extrapolated = z + self.damping * f, None
        else:
            z_new, extrapolated = self._propose(problem, state)
        if problem.batched and self.freeze_converged:
            ok = state.ok
            okb = ok.reshape((-1,) + (1,) * (len(z.shape) - 1))
            z_new = (torch_where(okb, z, z_new) if is_torch(z) else np.where(okb, z, z_new))
            if extrapolated is not None:
                extrapolated = extrapolated & ~ok
        g = problem.F(z_new)
        ctx.count("F_evals")
        state.k += 1
        if extrapolated is None:
            state.x, state.g = z_new, g
            self._measure(problem, state)
        else:
            self._accept(problem, state, z_new, g, extrapolated)
        return state

    # -- Anderson ------------------------------------------------------------------------
    def _rows(self, problem, z):
        return z.shape[0] if problem.batched else 1

    def _allocate(self, state, rows, n, like):
        m = self.memory
        if is_torch(like):
            import torch

            kw = dict(dtype=like.dtype, device=like.device)
            state.dW = torch.zeros((rows, m, n), **kw)
            state.dF = torch.zeros((rows, m, n), **kw)
            state.gram = torch.zeros((rows, m, m), **kw)
            state.valid = torch.zeros((rows, m), dtype=torch.bool, device=like.device)
            state.hold = torch.zeros(rows, dtype=torch.int64, device=like.device)
        else:
            state.dW = np.zeros((rows, m, n), dtype=like.dtype)
            state.dF = np.zeros((rows, m, n), dtype=like.dtype)
            state.gram = np.zeros((rows, m, m), dtype=like.dtype)
            state.valid = np.zeros((rows, m), dtype=bool)
            state.hold = np.zeros(rows, dtype=np.int64)
        state.slot = 0
        state.backoff = state.hold + self.backoff
        state.win_n = state.hold * 0
        state.win_r = row_norms(like, True) * 0
        state.hold_ref = state.win_r + math.inf

    def _propose(self, problem, state):
        """The Anderson candidate from the current point and its secant history.

        Returns the candidate (shape of ``x``) and a per-row mask of the rows where it is an
        extrapolation (the others take exactly the damped step ``x + damping * f``).
        """
        z, f = state.x, state.f
        d = self.damping
        rows = self._rows(problem, z)
        zf, ff = z.reshape(rows, -1), f.reshape(rows, -1)
        xp = _lib(z)
        if state.dW is None:
            self._allocate(state, rows, zf.shape[1], zf)
        valid = state.valid & (state.hold == 0)[:, None]
        if not bool(valid.any()):
            return z + d * f, valid.any(1)
        Gv = self._masked_gram(state, valid)
        if math.isfinite(self.max_condition):
            ill = self._ill_conditioned(Gv, valid)
            if ill is not None:
                # restart: keep only the newest secant pair
                newest = xp.zeros_like(valid)
                newest[:, (state.slot - 1) % self.memory] = True
                keep = xp.where(ill[:, None], newest, xp.ones_like(newest))
                state.valid &= keep
                valid = valid & keep
                Gv = self._masked_gram(state, valid)
                state.n_restarts = state.n_restarts + ill.sum()
        cnt = valid.sum(1)
        # Tikhonov term relative to ||dF^H dF||_F of the row; identity on unused slots
        scale = (xp.abs(Gv) ** 2).sum((1, 2)) ** 0.5
        dvals = xp.where(valid, (self.regularization * scale)[:, None], xp.ones_like(scale)[:, None])
        M = Gv + self._eye(Gv) * dvals[:, None, :]
        rhs = xp.einsum("bjn,bn->bj", state.dF.conj(), ff)
        rhs = xp.where(valid, rhs, xp.zeros_like(rhs))
        gamma = _solve(M, rhs)
        use = (cnt > 0) & xp.isfinite(gamma).all(1)
        gamma = xp.where(use[:, None], gamma, xp.zeros_like(gamma))
        new = zf + d * ff
        new = new - xp.einsum("bj,bjn->bn", gamma, state.dW)
        return new.reshape(z.shape), use

    def _eye(self, like):
        if is_torch(like):
            import torch

            return torch.eye(self.memory, dtype=like.dtype, device=like.device)
        return np.eye(self.memory, dtype=like.dtype)

    @staticmethod
    def _masked_gram(state, valid):
        xp = _lib(state.gram)
        pair = valid[:, :, None] & valid[:, None, :]
        return xp.where(pair, state.gram, xp.zeros_like(state.gram))

    def _ill_conditioned(self, Gv, valid):
        """Rows with two or more secant pairs whose Gram matrix ``Gv`` (masked to the
        ``valid`` pairs) has condition number above ``max_condition``; None if there are
        none."""
        xp = _lib(Gv)
        cnt = valid.sum(1)
        several = cnt >= 2
        if not bool(several.any()):
            return None
        diag = xp.einsum("bii->bi", Gv).real
        # unused slots get the mean used diagonal: it lies between the extreme eigenvalues
        # of the used block, so the condition number is that of the used block
        mean = diag.sum(1) / xp.maximum(cnt, xp.ones_like(cnt))
        mean = xp.where(mean > 0, mean, xp.ones_like(mean))
        fill = xp.where(valid, xp.zeros_like(diag), mean[:, None])
        eye = self._eye(diag)
        Gc = Gv + eye * fill[:, None, :]
        finite = xp.isfinite(Gc).all(2).all(1)
        Gc = xp.where(finite[:, None, None], Gc, xp.zeros_like(Gc) + eye)
        ev = xp.linalg.eigvalsh(Gc)
        lo, hi = ev[:, 0], ev[:, -1]
        ill = several & (~finite | (hi > self.max_condition * xp.maximum(lo, 0 * lo)))
        return ill if bool(ill.any()) else None

    def _accept(self, problem, state, z_new, g_new, extrapolated):
        """Record the secant pair to the new point; accept or reject it per row; run the
        progress test (go back and take damped steps on failure) and the growth restart."""
        xp = _lib(z_new)
        rows = self._rows(problem, z_new)
        m = self.memory
        shp = (-1,) + (1,) * (len(z_new.shape) - 1)
        x_old, g_old = state.x, state.g
        r_old = state.res_rows
        f_new = g_new - z_new
        r_new = row_norms(f_new, problem.batched)
        dz = z_new.reshape(rows, -1) - x_old.reshape(rows, -1)
        df = f_new.reshape(rows, -1) - state.f.reshape(rows, -1)
        dfn = row_norms(df, True)
        info = xp.isfinite(r_new) & xp.isfinite(dfn) & (dfn > 0)
        if self.safeguard:
            # NaN residuals compare False: a non-finite candidate is rejected
            acc = ~extrapolated | (r_new <= self.safeguard_ratio * r_old)
        else:
            acc = xp.ones_like(info)
        # the secant pair is information about F whether or not the point is accepted
        s = state.slot
        state.slot = (s + 1) % m
        ib = info[:, None]
        state.dF[:, s] = xp.where(ib, df, xp.zeros_like(df))
        state.dW[:, s] = xp.where(ib, dz + self.damping * df, xp.zeros_like(dz))
        state.valid[:, s] = info
        row = xp.einsum("bn,bjn->bj", state.dF[:, s].conj(), state.dF)
        state.gram[:, s, :] = row
        state.gram[:, :, s] = row.conj()

        x = _pick(acc, shp, z_new, x_old)
        g = _pick(acc, shp, g_new, g_old)
        r = xp.where(acc, r_new, r_old)
        rej = ~acc
        zero = state.hold * 0
        if state.best is None:
            state.best = r_old
        grow = r > self.restart * state.best
        drop = grow
        held = ~extrapolated & (state.hold > 0)
        state.hold = xp.where(held, state.hold - 1, state.hold)
        if self.stall_window and self.safeguard:
            # progress test: within a window of `stall_window` extrapolated steps (rejected
            # ones included) the residual must drop below `stall_factor` times the best one
            # seen when the window began; otherwise the row goes back to the window's first point
            # and takes damped steps for `backoff` iterations (doubling at each failure)
            state.floor = r_old if state.floor is None else xp.minimum(state.floor, r_old)
            start = extrapolated & (state.win_n == 0)
            if bool(start.any()):
                state.cx = _pick(start, shp, x_old, state.cx)
                state.cg = _pick(start, shp, g_old, state.cg)
                state.win_r = xp.where(start, state.floor, state.win_r)
            state.win_n = xp.where(extrapolated, state.win_n + 1, state.win_n)
            state.win_min = r if state.win_min is None else \
                xp.where(start, r, xp.minimum(state.win_min, r))
            full = extrapolated & (state.win_n >= self.stall_window)
            good = full & (state.win_min <= self.stall_factor * state.win_r)
            stall = full & ~good
            state.backoff = xp.where(good, zero + self.backoff, state.backoff)
            state.win_n = xp.where(full | grow, zero, state.win_n)
            if bool(stall.any()):
                x = _pick(stall, shp, state.cx, x)
                g = _pick(stall, shp, state.cg, g)
                state.hold = xp.where(stall, state.backoff, state.hold)
                state.hold_ref = xp.where(stall, state.win_r, state.hold_ref)
                state.backoff = xp.where(stall, state.backoff * 2, state.backoff)
                drop = drop | stall
                state.n_stalls = state.n_stalls + stall.sum()
        state.x, state.g = x, g
        self._measure(problem, state)
        r = state.res_rows
        # a damped step that beats the reference of the failed window ends the hold early
        state.hold = xp.where(held & (r <= self.stall_factor * state.hold_ref), zero, state.hold)
        state.hold = xp.where(rej, xp.maximum(state.hold, zero + 1), state.hold)
        state.best = xp.where(drop, r, xp.minimum(state.best, r))
        state.valid &= ~drop[:, None]
        state.n_fallbacks = state.n_fallbacks + rej.sum()
        state.n_restarts = state.n_restarts + grow.sum()

    def check(self, problem, state, ctx):
        if not bool(state.finite):
            return Stop(Status.NONFINITE, (
                f"F produced NaN/inf at iteration {state.k}; for a complex (holomorphic) "
                "relaxation this means the state left the analytic region: reduce |beta| or "
                "the damping"))
        frac = to_float(state.frac)
        if frac >= 1.0:
            return Stop(Status.CONVERGED)
        res = to_float(state.res_max)
        r0 = to_float(state.r0)
        if state.k > 0 and r0 > 1e-300 and res > self.divergence * r0:
            return Stop(Status.DIVERGED, (
                f"the residual grew from {r0:.3e} to {res:.3e} by iteration {state.k}: the map "
                "is not contracting here; lower the damping or use method='anderson'"))
        limit = self.max_iterations(problem)
        if limit is not None and state.k - state.k_start >= limit:
            return Stop(Status.MAX_ITER, (
                f"{limit} iterations reached with residual {res:.3e}; "
                f"{100 * frac:.1f}% of rows met the tolerance. Raise maxiter, lower the "
                "damping, or use method='anderson'"))
        return None


def _pick(mask, shape, a, b):
    """Rows of ``a`` where ``mask`` holds, of ``b`` elsewhere (no copy when uniform)."""
    if bool(mask.all()):
        return a
    if b is None or not bool(mask.any()):
        return a if b is None else b
    return _lib(a).where(mask.reshape(shape), a, b)


def _solve(M, rhs):
    """Batched solve of the small regularized normal equations; NaN rows where singular."""
    if is_torch(M):
        import torch

        sol, info = torch.linalg.solve_ex(M, rhs[..., None])
        sol = sol[..., 0]
        return torch.where((info == 0)[:, None], sol, torch.full_like(sol, float("nan")))
    with np.errstate(all="ignore"):
        try:
            return np.linalg.solve(M, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            out = np.full(rhs.shape, np.nan, dtype=np.result_type(M, rhs))
            for i in range(M.shape[0]):
                try:
                    out[i] = np.linalg.solve(M[i], rhs[i])
                except np.linalg.LinAlgError:
                    pass
            return out
