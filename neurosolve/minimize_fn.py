"""``neurosolve.minimize``: a scipy-shaped entry point to the smooth minimizers."""

from __future__ import annotations

from typing import Any, Callable

from neurosolve.core import Result, solve

__all__ = ["minimize", "METHODS"]

#: method name -> (module, class)
METHODS = {
    "gns": ("neurosolve.solvers.gns_newton", "GNSNewton"),
    "gns-normalized-gradient": ("neurosolve.solvers.gns_newton", "GNSNewton"),
    "super-newton": ("neurosolve.solvers.newton_baselines", "SuperUniversalNewton"),
    "cubic-newton": ("neurosolve.solvers.newton_baselines", "CubicNewton"),
    "gradient": ("neurosolve.solvers.newton_baselines", "GradientMethod"),
}


def minimize(fun: Callable, x0: Any, jac: Callable | bool | None = None, hess: Any = "exact", *,
             method: str = "gns", hessp: Callable | None = None, B: Any = None,
             gtol: float | None = None, ftol: float | None = None, f_star: float | None = None,
             maxiter: int | None = None, callback: Callable | None = None,
             backend: str = "auto", progress: bool = False, throw: bool = False,
             options: dict | None = None, **solver_options: Any) -> Result:
    """Minimize a smooth ``fun`` from ``x0`` with GNS Newton (or a baseline).

    Parameters
    ----------
    fun : callable
        ``fun(x) -> float``; with ``jac=True`` it returns ``(f, grad)``. A torch function of a
        torch ``x0`` gets its derivatives from autograd.
    x0 : array
        Start (numpy array or torch tensor; the answer has the same type and device).
    jac : callable, True or None
        The gradient; ``True`` when ``fun`` returns ``(f, g)``; None for torch (autograd).
    hess : callable, str or HessianApprox
        A callable ``hess(x) -> (d, d)`` is the exact Hessian. A name or object chooses the
        approximation: ``"exact"`` (default; needs a callable ``hess``, ``hessp`` or a torch
        function), ``"hessp"`` (CG on ``hessp``), ``"diag"``, ``"hutchinson"``, ``"zero"``
        (normalized gradient), any :mod:`~neurosolve.solvers.hessian_approx` object, or
        :class:`~neurosolve.solvers.hessian_approx.UserHessian` for your own approximation.
    method : {"gns", "gns-normalized-gradient", "super-newton", "cubic-newton", "gradient"}
    hessp : callable, optional
        ``hessp(x, v) -> H(x) v``.
    B : None, (d,) or (d, d) array
        The metric.
    gtol : float, optional
        Stop when ``||grad f||_* <= gtol``. Default 1e-8, or 1e-4 for float32/float16
        ``x0`` (float32 rounding leaves gradients of about 1e-7 relative to their terms,
        so 1e-8 cannot be certified).
    ftol, f_star : float, optional
        Also stop when ``f - f_star <= ftol``.
    maxiter : int, optional
    callback : callable, optional
        ``callback(view)`` with an :class:`neurosolve.IterView`; returning True stops.
    backend, progress, throw
        As for :func:`neurosolve.solve`.
    options, **solver_options
        Further solver fields (``gamma0``, ``max_trials``, ``rule``, ``L``, ``alpha``...).

    Returns
    -------
    Result
        ``res.x``, ``res.status``, ``res.history`` (``grad_norm``, ``f``, ``gamma``,
        ``lam``, ``trials``...), ``res.certificate`` (``f``, ``grad_norm``...), ``res.stats``
        (``nfev``, ``ngev``, ``nhev``, ``factorizations``, wall time).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess
    >>> res = ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, rosen_hess, gtol=1e-10)
    >>> res.success, np.allclose(res.x, [1.0, 1.0])
    (True, True)
    """
    import importlib

    from neurosolve.problems.smooth import Minimize
    from neurosolve.solvers.hessian_approx import HessianApprox

    key = method.lower().replace("_", "-") if isinstance(method, str) else method
    if key not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    fun_and_grad = None
    grad = None
    f = fun
    if jac is True:
        fun_and_grad = fun

        def f(x):
            return fun(x)[0]
    elif callable(jac):
        grad = jac
    elif jac not in (None, False):
        raise TypeError(f"jac must be a callable, True or None, got {type(jac).__name__}")
    hess_fn = None
    approx: Any = None
    if callable(hess) and not isinstance(hess, HessianApprox):
        hess_fn = hess
        approx = "exact"
    elif hess is None:
        approx = "zero"
    else:
        approx = hess
    problem = Minimize(f, grad, x0, hess=hess_fn, hessp=hessp, fun_and_grad=fun_and_grad, B=B,
                       f_star=f_star)
    modname, clsname = METHODS[key]
    cls = getattr(importlib.import_module(modname), clsname)
    opts = dict(options or {})
    opts.update(solver_options)
    if gtol is None:
        gtol = 1e-4 if any(t in str(problem.x0.dtype) for t in ("float32", "float16")) else 1e-8
    opts.setdefault("gtol", gtol)
    if ftol is not None:
        opts.setdefault("ftol", ftol)
    if maxiter is not None:
        opts.setdefault("maxiter", maxiter)
    if key == "gns-normalized-gradient":
        approx = "zero"
    if key != "gradient":
        opts.setdefault("hessian", approx)
    solver = cls(**opts)
    return solve(problem, solver, backend=backend, callback=callback, progress=progress,
                 throw=throw)
