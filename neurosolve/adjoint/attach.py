"""Reattaching a root to the autograd graph: the mechanism behind ``adjoint="implicit"``.

Given a root ``x*`` of an optimality condition ``G(x, theta) = 0`` computed without
autograd, :func:`reattach` evaluates ``r = G(x*, theta)`` once with autograd recording and
returns ``x*`` through a :class:`torch.autograd.Function` whose backward solves the
adjoint system ``(dG/dx)^T lam = -g`` and hands ``lam`` to ``r``. Autograd then carries
``lam`` through ``r``'s graph, which yields ``lam^T dG/dtheta`` for every tensor ``G``
uses, listed anywhere or not: the implicit-function-theorem gradient. The solver's
iterations are never recorded, so the memory does not grow with their number.

References
----------
.. [1] M. Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022,
   arXiv:2105.15183.
.. [2] S. Bai, J. Z. Kolter, V. Koltun, "Deep Equilibrium Models", NeurIPS 2019 (the
   implicit backward of an equilibrium layer as an autograd function).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable

from neurosolve.adjoint.config import DOUBLE_BACKWARD_MESSAGE, Implicit, ImplicitDiffError
from neurosolve.core import Result, Status

__all__ = ["resolve", "reattach", "attach_result"]


def resolve(adjoint: Any, problem: Any, solver: Any) -> Callable[[Result], Result]:
    """``solve``'s hook: turn its ``adjoint=`` argument into ``Result -> Result``."""
    from neurosolve.adjoint.rules import rule_for

    if isinstance(adjoint, str):
        if adjoint != "implicit":
            raise ValueError(f'adjoint must be None, "implicit", "unrolled" or an '
                             f"neurosolve.adjoint.Implicit, got {adjoint!r}")
        adjoint = Implicit()
    if not isinstance(adjoint, Implicit):
        raise TypeError(f'adjoint must be None, "implicit", "unrolled" or an '
                        f"neurosolve.adjoint.Implicit, got {type(adjoint).__name__}")
    rule = rule_for(problem, solver, adjoint)  # refuses before any work
    return lambda result: attach_result(rule, result, adjoint)


def attach_result(rule: Any, result: Result, config: Implicit) -> Result:
    """``result`` with ``x`` reattached through ``rule``; ``stats["adjoint"]`` is filled
    by the backward pass (solver, iterations, residual, status, time)."""
    report: dict[str, Any] = {}

    def check_forward():
        if result.status is Status.CONVERGED:
            return
        text = (f"backward through a forward solve that ended {result.status.name} "
                f"({result.message}); the gradient formula assumes a root of the optimality "
                "condition. Tighten the tolerance or raise maxiter so that the solve "
                'converges, or pass adjoint=Implicit(on_unconverged="warn") to accept an '
                "approximate gradient")
        if config.on_unconverged == "raise":
            raise ImplicitDiffError(text, report, result)
        warnings.warn(text, RuntimeWarning, stacklevel=4)
        report["exact"] = False

    polish = getattr(rule, "polish", None)  # a rule may refine the answer to a root first
    if polish is not None:
        result = polish(result, report)
    root = getattr(rule, "root", None)
    x = reattach(root(result.x) if root is not None else result.x, rule.optimality,
                 rule.solve_adjoint, config=config,
                 defaults=(rule.default_rtol(), rule.default_max_iter(result.n_iter)),
                 n_forward=result.n_iter if rule.comparable_iterations else 0, report=report,
                 before=check_forward)
    embed = getattr(rule, "embed", None)  # the root's coordinates back to the answer's
    if embed is not None:
        x = embed(x)
    stats = dict(result.stats)
    stats["adjoint"] = report
    return dataclasses.replace(result, x=x, stats=stats)


def _eps_floor(dtype) -> float:
    import torch

    real = torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype
    return 50.0 * float(torch.finfo(real).eps)


def reattach(x_star, optimality: Callable, solve_adjoint: Callable, *, config: Implicit,
             defaults: tuple[float, int], n_forward: int, report: dict,
             before: Callable[[], None] | None = None):
    """``x_star`` attached to the graph of ``optimality(x_star)``.

    Parameters
    ----------
    x_star : torch.Tensor
        The root (any graph it carries is dropped).
    optimality : callable
        ``x -> G(x)`` with autograd through the parameters; called once, here.
    solve_adjoint : callable
        ``(g, rtol, max_iter) -> (lam, info)`` solving ``(dG/dx)^T lam = -g`` for a
        unit-norm ``g``; ``info`` has ``solver``, ``n_iter``, ``status``,
        ``relative_residual``.
    config : Implicit
    defaults : (float, int)
        The rule's default relative tolerance and iteration cap.
    n_forward : int
        Forward iterations (for the "adjoint harder than forward" warning).
    report : dict
        Filled in by the backward pass.
    before : callable, optional
        Run at the start of backward (the forward-status check).
    """
    import torch

    x_star = x_star.detach()
    with torch.enable_grad():
        r = optimality(x_star)
    if not r.requires_grad:
        return x_star  # nothing the answer depends on requires grad
    rtol = config.rtol if config.rtol is not None else defaults[0]
    rtol = max(float(rtol), _eps_floor(x_star.dtype))
    max_iter = config.max_iter if config.max_iter is not None else defaults[1]

    def backward(g):
        if torch.is_grad_enabled():
            raise NotImplementedError(DOUBLE_BACKWARD_MESSAGE)
        if before is not None:
            before()
        report.setdefault("exact", True)
        gnorm = torch.linalg.vector_norm(g)
        if float(gnorm) == 0.0:
            report.update(solver=None, n_iter=0, status=Status.CONVERGED,
                          relative_residual=0.0, time=0.0)
            return torch.zeros_like(g)
        t0 = time.perf_counter()
        x0 = _cached_start(config, g)
        lam, info = (solve_adjoint(g / gnorm, rtol, max_iter) if x0 is None
                     else solve_adjoint(g / gnorm, rtol, max_iter, x0=x0))
        info = dict(info, warm_start=x0 is not None)
        if config.warm_start and bool(torch.isfinite(lam).all()):
            config.cache["lam"] = lam.detach().clone()
        lam = lam * gnorm
        report.update(info, rtol=rtol, max_iter=max_iter, time=time.perf_counter() - t0,
                      forward_iterations=n_forward)
        if not bool(torch.isfinite(lam).all()):
            raise ImplicitDiffError(
                f"the adjoint solve ({info['solver']}) returned NaN/inf after "
                f"{info['n_iter']} iterations ({info['status'].name}): {info['message']}",
                report)
        if info["status"] is not Status.CONVERGED:
            text = (f"the adjoint solve ({info['solver']}) ended {info['status'].name} after "
                    f"{info['n_iter']} iterations at relative residual "
                    f"{info['relative_residual']:.2e} (asked {rtol:.1e}): {info['message']} "
                    "Raise Implicit(max_iter=...), loosen Implicit(rtol=...), or pass "
                    'on_unconverged="warn"')
            if config.on_unconverged == "raise":
                raise ImplicitDiffError(text, report)
            warnings.warn(text, RuntimeWarning, stacklevel=3)
            report["exact"] = False
        elif info["n_iter"] > 3 * max(n_forward, 1) and n_forward > 0 and report["exact"]:
            warnings.warn(
                f"the adjoint solve took {info['n_iter']} iterations against the forward's "
                f"{n_forward}: adjoint harder than forward; check the conditioning and that "
                "the preconditioner suits the transposed system", RuntimeWarning, stacklevel=3)
        return lam.reshape(g.shape).to(g.dtype)

    return _Reattach.apply(x_star, r, backward)


def _cached_start(config: Implicit, g):
    """The previous unit-cotangent adjoint solution when ``config.warm_start`` and it fits
    ``g`` (shape, dtype, device); otherwise None."""
    if not config.warm_start:
        return None
    lam = config.cache.get("lam")
    if lam is None or lam.shape != g.shape or lam.dtype != g.dtype or lam.device != g.device:
        config.cache.pop("lam", None)
        return None
    return lam


def _function_class():
    import torch

    class Reattach(torch.autograd.Function):
        """Identity on ``x*`` in forward; the adjoint solve in backward, whose result
        flows into the optimality residual ``r``."""

        @staticmethod
        def forward(x_star, r, backward):
            return x_star.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.adjoint_backward = inputs[2]

        @staticmethod
        def backward(ctx, g):
            return None, ctx.adjoint_backward(g), None

        @staticmethod
        def vmap(info, in_dims, *args):  # pragma: no cover - torch.func only
            raise NotImplementedError('vmap over adjoint="implicit" is not supported; loop '
                                      "over the batch or use a batched problem")

    return Reattach


class _LazyFunction:
    """The autograd Function, created on first use so that importing this module does not
    import torch."""

    cls = None

    def apply(self, *args):
        if _LazyFunction.cls is None:
            _LazyFunction.cls = _function_class()
        return _LazyFunction.cls.apply(*args)


_Reattach = _LazyFunction()
