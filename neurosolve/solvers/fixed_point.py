"""Damped (Krasnosel'skii-Mann) iteration and Anderson acceleration for ``z = F(z)``."""

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

_METHODS = ("damped", "anderson")


@dataclass(eq=False)
class FixedPointState(State):
    """Iteration data of :class:`FixedPoint`: ``g = F(x)``, the residual ``f = g - x``
    and its per-row norms, the Anderson ring buffers, and the start of this solve."""

    g: Any = None
    f: Any = None
    res_rows: Any = None
    ok: Any = None
    res_max: Any = None
    frac: Any = None
    finite: Any = True
    r0: Any = None
    k_start: int = 0
    Zb: Any = None
    Fb: Any = None
    gram: Any = None
    valid: Any = None
    slot: int = 0
    best: Any = None


@dataclass(frozen=True, kw_only=True)
class FixedPoint(Solver):
    """Fixed-point iteration for ``z = F(z)``: damped, or with Anderson acceleration.

    ``method="damped"`` iterates ``z <- z + damping * (F(z) - z)`` (``damping=1`` is plain
    Picard iteration, torchdeq's ``fixed_point_iter``). ``method="anderson"`` is type-II
    Anderson mixing with ``memory`` past residuals: the combination weights ``alpha``
    minimize ``||sum_i alpha_i f_i||`` subject to ``sum_i alpha_i = 1`` (``f_i = F(z_i) -
    z_i``, Tikhonov-regularized Gram matrix, Hermitian for complex states) and
    ``z <- sum_i alpha_i (z_i + damping * f_i)``. For a batched problem every row has its
    own weights.

    Parameters
    ----------
    method : {"damped", "anderson"}
    damping : float in (0, 1], default 0.5
        The relaxation factor (``u <- u + 0.5 (F(u) - u)`` is the stabilised version of the
        synchronous update that oscillates in period two for near-symmetric networks).
    rtol, atol : float
        Stopping rule: every row ``b`` satisfies
        ``||F(z_b) - z_b|| <= max(rtol * ||z_b||, atol)`` (2-norm, modulus for complex).
    maxiter : int, optional
        Iteration limit; default 1000. One iteration = one evaluation of ``F``.
    memory : int, default 5
        Anderson: number of past residuals combined.
    regularization : float, default 1e-8
        Anderson: Tikhonov term, relative to the mean diagonal of the Gram matrix.
    divergence : float, default 1e8
        Report ``DIVERGED`` when the residual exceeds ``divergence`` times the initial one
        (and the initial one is not tiny).
    restart : float, default 4.0
        Anderson safeguard: a row whose residual exceeds ``restart`` times its smallest
        residual since its last restart drops its history (next step is damped).
    freeze_converged : bool, default True
        Batched problems: rows that meet the tolerance stop moving (otherwise Anderson
        mixing on rounding-level residuals can push a converged row out again).

    Notes
    -----
    Metrics: ``residual`` (the largest row residual of the current iterate, computed with
    the same ``F`` evaluation that feeds the next step, so the check is exact for the
    returned ``x``) and ``converged_fraction`` (rows meeting the tolerance).
    Status: CONVERGED, MAX_ITER (the message reports the residual and the fraction of rows
    that converged), NONFINITE (``F`` produced NaN/inf: e.g. a complex state left the
    analytic region of a holomorphic activation), DIVERGED.

    References
    ----------
    .. [1] D. G. Anderson, "Iterative procedures for nonlinear integral equations",
       J. ACM 12(4), 1965.
    .. [2] H. F. Walker, P. Ni, "Anderson acceleration for fixed-point iterations",
       SIAM J. Numer. Anal. 49(4), 2011.
    .. [3] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight
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
        Anderson history is dropped and the residual is re-measured under the (possibly
        new) tolerances."""
        state.k_start = state.k
        state.Zb = state.Fb = state.gram = state.valid = state.best = None
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
        d = self.damping
        if self.method == "damped":
            z_new = z + d * f
        else:
            z_new = self._anderson(problem, state)
        if problem.batched and self.freeze_converged:
            ok = state.ok.reshape((-1,) + (1,) * (len(z.shape) - 1))
            z_new = (torch_where(ok, z, z_new) if is_torch(z) else np.where(ok, z, z_new))
        g = problem.F(z_new)
        ctx.count("F_evals")
        state.x, state.g = z_new, g
        state.k += 1
        self._measure(problem, state)
        return state

    def _anderson(self, problem, state):
        """One Anderson step with per-row weights and per-row restarts.

        The last ``memory`` iterates and residuals live in ring buffers of shape
        ``(rows, memory, n)``; the Gram matrix is updated by one new row per step.
        """
        z, f = state.x, state.f
        d = self.damping
        rows = z.shape[0] if problem.batched else 1
        tl = is_torch(z)
        m = self.memory
        zf, ff = z.reshape(rows, -1), f.reshape(rows, -1)
        if state.Zb is None:
            if tl:
                import torch

                state.Zb = torch.zeros((rows, m) + tuple(zf.shape[1:]), dtype=z.dtype, device=z.device)
                state.Fb = torch.zeros_like(state.Zb)
                state.gram = torch.zeros((rows, m, m), dtype=z.dtype, device=z.device)
                state.valid = torch.zeros((rows, m), dtype=torch.bool, device=z.device)
            else:
                state.Zb = np.zeros((rows, m) + zf.shape[1:], dtype=z.dtype)
                state.Fb = np.zeros_like(state.Zb)
                state.gram = np.zeros((rows, m, m), dtype=z.dtype)
                state.valid = np.zeros((rows, m), dtype=bool)
            state.slot = 0
        res = state.res_rows
        # safeguard: a row whose residual exceeds `restart` x its best since its last
        # restart forgets its history (its next step is then a plain damped step)
        if state.best is None:
            state.best = res
        else:
            grow = res > self.restart * state.best
            if tl:
                import torch

                state.valid &= ~grow[:, None]
                state.best = torch.where(grow, res, torch.minimum(state.best, res))
            else:
                state.valid &= ~grow[:, None]
                state.best = np.where(grow, res, np.minimum(state.best, res))
        s = state.slot
        state.slot = (s + 1) % m
        state.Zb[:, s] = zf
        state.Fb[:, s] = ff
        state.valid[:, s] = True
        if tl:
            import torch

            row = torch.einsum("bn,bjn->bj", ff.conj(), state.Fb)
            state.gram[:, s, :] = row
            state.gram[:, :, s] = row.conj()
            valid = state.valid
            diag = torch.diagonal(state.gram, dim1=1, dim2=2).real
            cnt = valid.sum(1)
            scale = ((diag * valid).sum(1) / cnt.clamp_min(1)).clamp_min(1e-300)
            pen = self.regularization * scale[:, None] + (~valid) * (1e30 * scale[:, None])
            G = state.gram + torch.diag_embed(pen.to(state.gram.dtype))
            ones = torch.ones(rows, m, 1, dtype=G.dtype, device=G.device)
            a = torch.linalg.solve_ex(G, ones)[0][..., 0]
            a = a / a.sum(dim=1, keepdim=True)
            bad = ~torch.isfinite(a).all(dim=1) | (cnt < 2)
            last = torch.zeros_like(a)
            last[:, s] = 1
            a = torch.where(bad[:, None], last, a)
            new = torch.einsum("bi,bin->bn", a, state.Zb)
            new += d * torch.einsum("bi,bin->bn", a, state.Fb)
            return new.reshape(z.shape)
        row = np.einsum("bn,bjn->bj", ff.conj(), state.Fb)
        state.gram[:, s, :] = row
        state.gram[:, :, s] = row.conj()
        valid = state.valid
        diag = np.real(np.einsum("bii->bi", state.gram))
        cnt = valid.sum(1)
        scale = np.maximum((diag * valid).sum(1) / np.maximum(cnt, 1), 1e-300)
        pen = self.regularization * scale[:, None] + (~valid) * (1e30 * scale[:, None])
        G = state.gram.copy()
        idx = np.arange(m)
        G[:, idx, idx] += pen
        with np.errstate(all="ignore"):
            try:
                a = np.linalg.solve(G, np.ones((rows, m, 1), dtype=G.dtype))[..., 0]
            except np.linalg.LinAlgError:
                a = np.full((rows, m), np.nan, dtype=G.dtype)
            a = a / a.sum(axis=1, keepdims=True)
        bad = ~np.all(np.isfinite(a), axis=1) | (cnt < 2)
        if bad.any():
            a[bad] = 0
            a[bad, s] = 1
        new = np.einsum("bi,bin->bn", a, state.Zb)
        new += d * np.einsum("bi,bin->bn", a, state.Fb)
        if not np.iscomplexobj(z) and np.iscomplexobj(new):
            new = new.real
        return new.reshape(z.shape).astype(z.dtype, copy=False)

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
