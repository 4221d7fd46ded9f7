"""Flexible, truncated conjugate directions: the CG step for a *nonlinear* preconditioner.

With a nonlinear ``M`` (a neural network, an inner iterative solve) the PCG recurrence is
invalid. Instead each new direction ``d = M(r / ||r||)`` is A-orthogonalized against the
last ``truncate`` directions by classical Gram-Schmidt and the iterate moves by an exact
A-norm line search. With ``M`` = identity this reproduces CG, with a linear SPD ``M`` it
reproduces PCG, and with ``M = c A^{-1}`` it converges in one step; with ``truncate=2``
it is the deep conjugate-direction method (DCDM) of Kaneda et al.

Safeguards (absent in the reference code): a direction that is not finite, or whose
curvature ``d^T A d`` is negligible, is replaced by the residual (a steepest-descent /
CG step, counted as a ``fallback``); optionally (``guard > 0``) a direction whose
A-norm error reduction is below ``guard`` times the steepest-descent step's is enriched
by the residual and the step is an exact 2-D minimization over both (one more SpMV).

References
----------
.. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate Direction
   Method for Iteratively Solving Linear Systems", ICML 2023, arXiv:2205.10763.
.. [2] Y. Notay, "Flexible conjugate gradients", SIAM J. Sci. Comput. 22(4), 2000.
"""

from __future__ import annotations

from collections import deque

from neurosolve.core import to_float

__all__ = ["flexible_step", "conjugate", "true_residual_update", "StallWatch"]

_TINY = 1e-300


class StallWatch:
    """The one stall detector of the flexible methods (flexible CG and DCDM).

    Progress is stalled when the relative residual fell by less than ``1 / factor``
    over the last ``window`` iterations. The history lives in the solver state (a list
    the watcher trims to ``window + 1`` entries).

    Parameters
    ----------
    window : int
    factor : float
        In (0, 1).
    """

    def __init__(self, window: int, factor: float):
        self.window, self.factor = int(window), float(factor)

    def update(self, history: list, value: float) -> bool:
        """Append ``value``; True when the window shows a stall."""
        history.append(value)
        if len(history) > self.window + 1:
            del history[: len(history) - self.window - 1]
        return len(history) > self.window and history[-1] > self.factor * history[0]

    def message(self, k: int, who: str) -> str:
        return (f"the relative residual fell less than {1 / self.factor:g}x over the last "
                f"{self.window} iterations (iteration {k}): {who} does not reduce it. Check "
                "that it approximates A^-1 (an untrained or mismatched network, a wrong "
                "scaling), or use a linear SPD preconditioner with standard PCG.")


def _kept_buffer(state, cap):
    if not isinstance(state.kept, deque) or state.kept.maxlen != cap:
        state.kept = deque(state.kept, maxlen=cap)
    return state.kept


def true_residual_update(problem, state, ctx, x, r, every: int):
    """The residual after a step: the recursive ``r``, or ``b - A x`` (one SpMV) when
    ``every`` steps have passed since the last recomputation (``every=0``: never)."""
    state.since_recompute += 1
    if every and state.since_recompute >= every:
        r = problem.b - ctx.setup.mv(x)
        ctx.count("matvecs")
        state.since_recompute = 0
    return r


def _orthogonalize(xp, q, kept):
    """Classical Gram-Schmidt in the A-inner product; coefficients from the raw ``q``."""
    coefs = [xp.dot(q, w) / den for (_, w, den) in kept]
    for c, (p, _, _) in zip(coefs, kept):
        q = q - c * p
    return q, coefs


def conjugate(xp, q, state, ctx, nullspace):
    """``q`` projected off the null space and A-orthogonalized against the kept
    directions, with its product by ``A`` (one counted SpMV) and its curvature:
    ``(d, A d, d^T A d)``."""
    if nullspace is not None:
        q = nullspace.project(q)
    d, _ = _orthogonalize(xp, q, state.kept)
    w = ctx.setup.mv(d)
    ctx.count("matvecs")
    return d, w, xp.dot(d, w)


def _usable(den, dd, tol) -> bool:
    """``d^T A d`` finite and above ``tol * d^T d``: one host sync (NaN compares False)."""
    return bool((den > tol * dd) & (den - den == 0))


def flexible_step(solver, problem, state, ctx, Mmv) -> None:
    """One truncated conjugate-direction step with the direction map ``Mmv`` (None: the
    residual), updating ``state`` in place."""
    xp = ctx.xp
    r, x = state.r, state.x
    rnorm = state.rnorm
    ns = problem.nullspace
    anorm = ctx.setup.anorm
    _kept_buffer(state, None if solver.truncate is None else max(int(solver.truncate), 0))

    fell_back = False
    q = r
    if Mmv is not None:
        # no host sync here: a zero residual is scaled by 1, and a NaN or infinite q shows
        # up in den below, where it sends the step back to the residual direction
        scale = rnorm + (rnorm == 0) if solver.normalize else 1.0
        q = Mmv(r / scale if solver.normalize else r)
        ctx.count("preconditioner_calls")
    d, w, den = conjugate(xp, q, state, ctx, ns)
    bad = not _usable(den, xp.dot(d, d), solver.breakdown_tol * anorm)
    if bad and Mmv is not None:
        # the proposed direction is non-finite, (nearly) in the null space or lost after
        # orthogonalization
        fell_back = True
        d, w, den = conjugate(xp, r, state, ctx, ns)
        bad = not _usable(den, xp.dot(d, d), solver.breakdown_tol * anorm)
    if bad:
        state.breakdown = True
        return
    dr = xp.dot(d, r)
    if solver.guard > 0 and Mmv is not None and not fell_back:
        s, As, sAs = conjugate(xp, r, state, ctx, ns)
        sr = xp.dot(s, r)
        red_d = to_float(dr) ** 2 / to_float(den)
        red_s = to_float(sr) ** 2 / max(to_float(sAs), _TINY)
        if red_d < solver.guard * red_s and to_float(sAs) > 0:
            ctx.count("guard_steps")
            dAs = xp.dot(d, As)
            # exact minimization of the A-norm error over span{d, s}
            a11, a12, a22 = to_float(den), to_float(dAs), to_float(sAs)
            det = a11 * a22 - a12 * a12
            if det > 1e-14 * a11 * a22:
                c1 = (to_float(dr) * a22 - a12 * to_float(sr)) / det
                c2 = (a11 * to_float(sr) - a12 * to_float(dr)) / det
                d = c1 * d + c2 * s
                w = c1 * w + c2 * As
            else:
                d, w = s, As
            den = xp.dot(d, w)
            dr = xp.dot(d, r)
    if fell_back:
        ctx.count("fallbacks")
    alpha = dr / den
    x = x + alpha * d
    r = true_residual_update(problem, state, ctx, x, r - alpha * w, solver.recompute_every)
    state.kept.append((d, w, den))
    state.x, state.r = x, r
    state.den = den
    state.rnorm = xp.norm(r)
