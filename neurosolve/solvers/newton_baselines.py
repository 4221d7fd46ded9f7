"""Baselines for GNS Newton: super-universal Newton, adaptive cubic Newton, gradient method.

All three solve :class:`~neurosolve.problems.Minimize` problems with the same metric
``B``, the same Hessian approximations (:mod:`neurosolve.solvers.hessian_approx`), the
same stopping rule (``||grad f||_* <= gtol``, or ``f - f_star <= ftol``) and the same
counters as :class:`~neurosolve.solvers.GNSNewton`, so their numbers compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neurosolve.core import State, Status, Stop, to_float
from neurosolve.problems.smooth import Minimize
from neurosolve.solvers.gns_newton import SmoothSolver, start_state

__all__ = ["SuperUniversalNewton", "CubicNewton", "GradientMethod"]


def _validate_positive(obj, *names):
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")


def _validate_tols(obj):
    if not isinstance(obj.gtol, (int, float)) or obj.gtol < 0:
        raise ValueError(f"gtol must be a non-negative number, got {obj.gtol!r}")
    if obj.ftol is not None and not (isinstance(obj.ftol, (int, float)) and obj.ftol >= 0):
        raise ValueError(f"ftol must be None or a non-negative number, got {obj.ftol!r}")
    if not isinstance(obj.max_trials, (int, np.integer)) or obj.max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, got {obj.max_trials!r}")


def _fail(state, status, message, trials):
    state.failure = Stop(status, message)
    state.k += 1
    state.metrics = dict(state.metrics, trials=trials, step_norm=0.0)
    return state


@dataclass(frozen=True, kw_only=True)
class SuperUniversalNewton(SmoothSolver):
    """Super-universal regularized Newton (Doikov, Mishchenko, Nesterov 2024).

    ``x+ = x - (H(x) + lambda B)^{-1} g`` with ``lambda = M_k ||g||_*^alpha``. A trial is
    accepted when ``<grad f(x+), x - x+> >= ||grad f(x+)||_*^2 / (4 lambda)``; then
    ``M_k <- max(M_k / 4, M_min)``, otherwise (or when ``H + lambda B`` is not positive
    definite) ``M_k <- 4 M_k``. Stops when ``||g||_* <= gtol`` (or ``f - f_star <= ftol``).

    Parameters
    ----------
    hessian : str, HessianApprox or callable, optional
        As for :class:`~neurosolve.solvers.GNSNewton` (default: the problem's, else exact).
    alpha : float
        Power in ``[0, 1]`` (2/3 is the universal choice for convex problems; 1 for
        Lipschitz-Hessian non-convex problems).
    M0, M_min : float
        Initial and smallest regularization constant.
    max_trials : int
        Trials per iteration before STAGNATION.

    References
    ----------
    .. [1] N. Doikov, K. Mishchenko, Y. Nesterov, "Super-Universal Regularized Newton
       Method", SIAM J. Optim. 34(1), 2024, arXiv:2208.05888.
    """

    hessian: Any = None
    alpha: float = 2.0 / 3.0
    M0: float = 1.0
    M_min: float = 1e-5
    max_trials: int = 40
    gtol: float = 1e-8
    ftol: float | None = None

    metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "f", "M", "lam", "trials", "step_norm")
    problem_types: ClassVar[tuple[type, ...]] = (Minimize,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        _validate_positive(self, "M0", "M_min")
        _validate_tols(self)
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 1000

    def init(self, problem, x0, ctx) -> State:
        state = start_state(self, problem, x0, ctx)
        state.M = float(self.M0)
        state.metrics = {"grad_norm": state.gnorm, "f": state.f, "M": state.M,
                         "lam": float("nan"), "trials": 0, "step_norm": 0.0}
        return state

    def step(self, problem, state, ctx) -> State:
        metric = problem.metric
        fg = ctx.setup.oracles["fun_and_grad"]
        gn = to_float(state.gnorm)
        model = ctx.setup.approx.evaluate(problem, state.x, ctx.setup.oracles, ctx)
        neg_g = -state.g
        for trial in range(1, self.max_trials + 1):
            lam = state.M * gn ** self.alpha
            d = model.solve(lam, neg_g)
            if d is None:
                state.M *= 4.0
                continue
            x_new = state.x + d
            f_new, g_new = fg(x_new)
            ctx.count("nfev")
            ctx.count("ngev")
            gn_new_t = metric.dual_norm(g_new)
            gn_new = to_float(gn_new_t)
            if not (math.isfinite(to_float(f_new)) and math.isfinite(gn_new)):
                state.M *= 4.0
                continue
            if to_float(-(g_new * d).sum()) >= gn_new * gn_new / (4.0 * lam):
                state.M = max(state.M / 4.0, self.M_min)
                state.x, state.f, state.g, state.gnorm = x_new, f_new, g_new, gn_new_t
                state.k += 1
                state.metrics = {"grad_norm": gn_new_t, "f": f_new, "M": state.M, "lam": lam,
                                 "trials": trial, "step_norm": metric.norm(d)}
                return state
            state.M *= 4.0
        return _fail(state, Status.STAGNATION,
                     f"the regularization search failed at iteration {state.k} after "
                     f"{self.max_trials} trials (M = {state.M:.3e}); ||g|| = {gn:.3e}",
                     self.max_trials)


@dataclass(frozen=True, kw_only=True)
class CubicNewton(SmoothSolver):
    """Cubic-regularized Newton with an adaptive constant (Nesterov and Polyak 2006).

    ``h = argmin <g, h> + <H h, h>/2 + (M/6) ||h||_B^3``: the minimizer satisfies
    ``(H + (M r / 2) B) h = -g`` with ``r = ||h||_B``, found by a safeguarded Newton
    iteration on ``psi(r) = 1/||h(r)|| - 1/r`` (one factorization per evaluation). A trial
    is accepted when ``f(x + h) <= f(x) + model(h)``; then ``M <- max(M/2, M_min)``,
    otherwise ``M <- 2 M``. Stops when ``||g||_* <= gtol`` (or ``f - f_star <= ftol``).

    Parameters
    ----------
    hessian : optional
        As for :class:`~neurosolve.solvers.GNSNewton` (the exact Hessian by default; it
        may be indefinite).
    M0, M_min : float
        Initial and smallest cubic constant.
    subproblem_tol : float
        Relative tolerance ``|r - ||h||| <= tol r`` of the subproblem.
    max_trials : int
        Trials per iteration before STAGNATION.

    References
    ----------
    .. [1] Y. Nesterov, B. T. Polyak, "Cubic regularization of Newton method and its global
       performance", Math. Program. 108, 2006.
    """

    hessian: Any = None
    M0: float = 1.0
    M_min: float = 1e-5
    subproblem_tol: float = 1e-10
    subproblem_maxiter: int = 100
    max_trials: int = 40
    gtol: float = 1e-8
    ftol: float | None = None

    metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "f", "M", "trials", "step_norm",
                                          "subproblem_solves")
    problem_types: ClassVar[tuple[type, ...]] = (Minimize,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        _validate_positive(self, "M0", "M_min", "subproblem_tol")
        _validate_tols(self)

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 1000

    def init(self, problem, x0, ctx) -> State:
        state = start_state(self, problem, x0, ctx)
        state.M = float(self.M0)
        state.metrics = {"grad_norm": state.gnorm, "f": state.f, "M": state.M, "trials": 0,
                         "step_norm": 0.0, "subproblem_solves": 0}
        return state

    def _subproblem(self, model, metric, g, M):
        """``(h, ||h||, solves)`` for the cubic model with constant M, or (None, _, solves).

        Newton's method on ``psi(r) = 1/||h(r)|| - 1/r`` (increasing and concave, so the
        iterates approach the root monotonically) with
        ``psi'(r) = (M/2) <B h, (H + tau B)^{-1} B h> / ||h||^3 + 1/r^2``, ``tau = M r / 2``,
        safeguarded by a bracket and bisection where ``H + tau B`` is not positive definite.
        """
        neg_g = -g
        solves = 0

        def at(r):
            nonlocal solves
            solves += 1
            sol = model.solver(M * r / 2.0)
            if sol is None:
                return None
            h = sol(neg_g)
            return h, to_float(metric.norm(h)), sol

        lo, hi = 0.0, None
        r = 1.0
        cur = None
        for _ in range(200):  # bracket: H + (M r/2) B > 0 and ||h(r)|| <= r
            cur = at(r)
            if cur is not None and cur[1] <= r:
                hi = r
                break
            lo = r
            r *= 2.0
        if hi is None:
            return None, 0.0, solves
        for _ in range(self.subproblem_maxiter):
            h, nh, sol = cur
            if abs(nh - r) <= self.subproblem_tol * r or nh == 0.0:
                return h, nh, solves
            if nh <= r:
                hi = r
            else:
                lo = r
            Bh = metric.matvec(h)
            dpsi = (M / 2.0) * to_float((Bh * sol(Bh)).sum()) / nh ** 3 + 1.0 / r ** 2
            cand = r - (1.0 / nh - 1.0 / r) / dpsi
            if not (lo < cand < hi) or not math.isfinite(cand):
                cand = 0.5 * (lo + hi)
            nxt = at(cand)
            while nxt is None:  # not positive definite: move right
                lo = cand
                cand = 0.5 * (lo + hi)
                nxt = at(cand)
            r, cur = cand, nxt
        return cur[0], cur[1], solves

    def step(self, problem, state, ctx) -> State:
        metric = problem.metric
        oracles = ctx.setup.oracles
        g = state.g
        f_val = to_float(state.f)
        model = ctx.setup.approx.evaluate(problem, state.x, oracles, ctx)
        total_solves = 0
        for trial in range(1, self.max_trials + 1):
            M = state.M
            h, nh, solves = self._subproblem(model, metric, g, M)
            total_solves += solves
            if h is None:
                state.M *= 2.0
                continue
            mval = to_float((g * h).sum() + 0.5 * model.quad(h)) + M / 6.0 * nh ** 3
            x_new = state.x + h
            f_new = oracles["fun"](x_new)
            ctx.count("nfev")
            fv = to_float(f_new)
            if math.isfinite(fv) and fv <= f_val + mval:
                state.M = max(M / 2.0, self.M_min)
                f_new, g_new = oracles["fun_and_grad"](x_new)
                ctx.count("ngev")
                state.x, state.f, state.g = x_new, f_new, g_new
                state.gnorm = metric.dual_norm(g_new)
                state.k += 1
                state.metrics = {"grad_norm": state.gnorm, "f": f_new, "M": state.M,
                                 "trials": trial, "step_norm": nh,
                                 "subproblem_solves": total_solves}
                return state
            state.M = 2.0 * M
        return _fail(state, Status.STAGNATION,
                     f"the cubic-regularization search failed at iteration {state.k} after "
                     f"{self.max_trials} trials (M = {state.M:.3e})", self.max_trials)


@dataclass(frozen=True, kw_only=True)
class GradientMethod(SmoothSolver):
    """Gradient method with backtracking on the Lipschitz constant.

    ``T = x - B^{-1} g / L``, accepted when ``f(T) <= f(x) + <g, T - x> + (L/2)||T - x||_B^2``;
    then ``L <- max(L/2, L_min)``, otherwise ``L <- 2 L``. With a metric ``B`` this is the
    preconditioned gradient method (the paper's notebook calls the ``B = A^T A`` version
    "Gauss-Newton"). Stops when ``||g||_* <= gtol`` (or ``f - f_star <= ftol``).

    References
    ----------
    .. [1] Y. Nesterov, "Gradient methods for minimizing composite functions", Math.
       Program. 140, 2013 (the backtracking rule).
    """

    L0: float = 1.0
    L_min: float = 1e-5
    max_trials: int = 30
    gtol: float = 1e-8
    ftol: float | None = None

    metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "f", "L", "trials", "step_norm")
    problem_types: ClassVar[tuple[type, ...]] = (Minimize,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        _validate_positive(self, "L0", "L_min")
        _validate_tols(self)

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 10000

    def init(self, problem, x0, ctx) -> State:
        state = start_state(self, problem, x0, ctx)
        state.L = float(self.L0)
        state.metrics = {"grad_norm": state.gnorm, "f": state.f, "L": state.L, "trials": 0,
                         "step_norm": 0.0}
        return state

    def step(self, problem, state, ctx) -> State:
        metric = problem.metric
        oracles = ctx.setup.oracles
        direction = metric.inv(state.g)
        f_val = to_float(state.f)
        for trial in range(1, self.max_trials + 1):
            L = state.L
            d = -direction / L
            T = state.x + d
            fT = oracles["fun"](T)
            ctx.count("nfev")
            fv = to_float(fT)
            bound = f_val + to_float((state.g * d).sum()) + 0.5 * L * to_float(metric.norm(d)) ** 2
            if math.isfinite(fv) and fv <= bound:
                state.L = max(L / 2.0, self.L_min)
                f_new, g_new = oracles["fun_and_grad"](T)
                ctx.count("ngev")
                state.x, state.f, state.g = T, f_new, g_new
                state.gnorm = metric.dual_norm(g_new)
                state.k += 1
                state.metrics = {"grad_norm": state.gnorm, "f": f_new, "L": state.L,
                                 "trials": trial, "step_norm": metric.norm(d)}
                return state
            state.L = 2.0 * L
        return _fail(state, Status.STAGNATION,
                     f"the backtracking search failed at iteration {state.k} after "
                     f"{self.max_trials} trials (L = {state.L:.3e})", self.max_trials)

