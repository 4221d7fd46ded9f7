"""``neurosolve.minimize``: a scipy-shaped entry point to the smooth minimizers."""

from __future__ import annotations

from typing import Any, Callable

from neurosolve.core import Result, solve
from neurosolve.solvers.hessian_approx import QUASI_NEWTON, HessianApprox, QuasiNewton

__all__ = ["METHODS", "minimize"]

#: method name -> (module, class)
METHODS = {
    "gns": ("neurosolve.solvers.gns_newton", "GNSNewton"),
    "gns-normalized-gradient": ("neurosolve.solvers.gns_newton", "GNSNewton"),
    "super-newton": ("neurosolve.solvers.newton_baselines", "SuperUniversalNewton"),
    "cubic-newton": ("neurosolve.solvers.newton_baselines", "CubicNewton"),
    "gradient": ("neurosolve.solvers.newton_baselines", "GradientMethod"),
}


def _resolve_approx(hess: Any):
    """A quasi-Newton name or scipy strategy -> :class:`QuasiNewton`; anything else as is."""
    from scipy.optimize import HessianUpdateStrategy

    if isinstance(hess, HessianUpdateStrategy):
        return QuasiNewton(hess)
    if isinstance(hess, str) and hess.lower() in QUASI_NEWTON:
        return QuasiNewton(hess.lower())
    return hess


#: what each named approximation needs from the caller (numpy problems)
_NEEDS = {
    "diag": ("hess_diag", "hess"),
    "diagonal": ("hess_diag", "hess"),
    "hutchinson": ("hessp", "hess"),
    "hessp": ("hessp", "hess"),
    "fisher": ("sample_grads",),
    "gauss-newton": ("residual",),
    "gn": ("residual",),
    "fisher-term": ("residual",),
}


def _check_oracles(approx: Any, given: dict) -> None:
    if not isinstance(approx, str):
        return
    key = approx.lower().replace("_", "-")
    need = _NEEDS.get(key)
    if need is None or any(given.get(k) is not None for k in need):
        return
    hint = {
        "hess_diag": "hess_diag=callable (the Hessian's diagonal), or the dense Hessian as "
                     "minimize(fun, x0, jac, hess_fn, hessian='diag')",
        "hessp": "hessp=callable (Hessian-vector products)",
        "sample_grads": "sample_grads=callable (x -> (m, d) per-sample gradients) and "
                        "optionally fisher_reg=",
        "residual": "residual= and residual_jac= (f = (1/p)||u(x)||^p, power=p)",
    }[need[0]]
    raise ValueError(f"hess={approx!r} needs {hint}")


def minimize(fun: Callable, x0: Any, jac: Callable | bool | None = None, hess: Any = "auto", *,
             method: str = "gns", hessp: Callable | None = None, B: Any = None,
             gtol: float | None = None, ftol: float | None = None, f_star: float | None = None,
             maxiter: int | None = None, callback: Callable | None = None,
             backend: str = "auto", progress: bool = False, throw: bool = False,
             options: dict | None = None, hess_diag: Callable | None = None,
             sample_grads: Callable | None = None, fisher_reg: float = 0.0,
             residual: Callable | None = None, residual_jac: Callable | None = None,
             power: float | None = None, **solver_options: Any) -> Result:
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
    hess : callable, str, HessianApprox or scipy.optimize.HessianUpdateStrategy
        A callable ``hess(x) -> (d, d)`` is the exact Hessian. A name or object chooses the
        approximation:

        * ``"auto"`` (default): the exact Hessian when one is available (``hessp=`` or a
          torch function), else quasi-Newton ``"bfgs"``;
        * ``"exact"`` (needs a callable ``hess``, ``hessp`` or a torch function),
          ``"hessp"`` (CG on ``hessp``);
        * ``"bfgs"``, ``"sr1"`` or a scipy ``BFGS()`` / ``SR1()`` object: quasi-Newton
          (:class:`QuasiNewton`), from gradients only;
        * ``"diag"`` (needs ``hess_diag=``), ``"hutchinson"`` (needs ``hessp=``),
          ``"fisher"`` (empirical Fisher; needs ``sample_grads=``), ``"gauss-newton"`` and
          ``"fisher-term"`` (need ``residual=``, ``residual_jac=``, ``power=``),
          ``"zero"`` or None (normalized gradient); every name of
          :data:`~neurosolve.solvers.hessian_approx.APPROXIMATIONS`;
        * any :mod:`~neurosolve.solvers.hessian_approx` object, e.g.
          :class:`~neurosolve.solvers.hessian_approx.UserHessian` for your own.

        To use an approximation *and* give the exact Hessian as its oracle (``"diag"`` of a
        dense ``hess``), pass the callable as ``hess`` and the name as ``hessian=``.
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
    hess_diag, sample_grads, fisher_reg, residual, residual_jac, power
        Oracles of the structured approximations (see ``hess``), as for
        :class:`~neurosolve.problems.Minimize`.
    options, **solver_options
        Further solver fields (``gamma0``, ``max_trials``, ``rule``, ``L``, ``alpha``,
        ``hessian``...).

    Returns
    -------
    Result
        ``res.x``, ``res.fun``, ``res.jac`` (the gradient at ``x``), ``res.nit``,
        ``res.status``, ``res.history`` (``grad_norm``, ``f``, ``gamma``, ``lam``,
        ``trials``...), ``res.certificate`` (``f``, ``grad_norm``...), ``res.stats``
        (``nfev``, ``ngev``, ``nhev``, ``factorizations``, wall time). For scipy's
        ``OptimizeResult`` and methods use :func:`neurosolve.compat.minimize`.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess
    >>> res = ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, rosen_hess, gtol=1e-10)
    >>> res.success, np.allclose(res.x, [1.0, 1.0]), res.nit == res.n_iter, res.fun < 1e-20
    (True, True, True, True)

    Without a Hessian the default is quasi-Newton (BFGS):

    >>> qn = ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, gtol=1e-8)
    >>> qn.success, np.allclose(qn.x, [1.0, 1.0]), qn.stats.get("nhev", 0)
    (True, True, 0)
    """
    import importlib

    from neurosolve.problems.smooth import Minimize

    key = method.lower().replace("_", "-") if isinstance(method, str) else method
    if key not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r} (for "
                         "scipy's methods use neurosolve.compat.minimize, which delegates them)")
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
    opts = dict(options or {})
    opts.update(solver_options)
    hess_fn = None
    approx: Any = None
    if callable(hess) and not isinstance(hess, HessianApprox):
        hess_fn = hess
        approx = "exact"
    elif hess is None:
        approx = "zero"
    else:
        approx = _resolve_approx(hess)
    if "hessian" in opts:  # an approximation named separately from the oracle ``hess``
        approx = _resolve_approx(opts.pop("hessian"))
    torch_x0 = hasattr(x0, "detach")
    if isinstance(approx, str) and approx.lower() == "auto":
        approx = "exact" if (hess_fn is not None or hessp is not None or torch_x0) \
            else QuasiNewton("bfgs")
    if not torch_x0:
        _check_oracles(approx, {"hess": hess_fn, "hessp": hessp, "hess_diag": hess_diag,
                                "sample_grads": sample_grads, "residual": residual})
    if key == "gns-normalized-gradient":
        approx = "zero"
    if isinstance(approx, QuasiNewton) and key not in ("gradient", "gns-normalized-gradient"):
        # hand the approximation every gradient the solver evaluates (no extra evaluations)
        base_fg = fun_and_grad if fun_and_grad is not None else (
            (lambda x: (fun(x), grad(x))) if grad is not None else None)
        if base_fg is not None:
            qn = approx

            def fun_and_grad(x):
                fx, gx = base_fg(x)
                qn.observe(x, gx)
                return fx, gx
    structure = {"hess_diag": hess_diag} if hess_diag is not None else None
    problem = Minimize(f, grad, x0, hess=hess_fn, hessp=hessp, fun_and_grad=fun_and_grad, B=B,
                       f_star=f_star, residual=residual, residual_jac=residual_jac, power=power,
                       sample_grads=sample_grads, fisher_reg=fisher_reg, structure=structure)
    modname, clsname = METHODS[key]
    cls = getattr(importlib.import_module(modname), clsname)
    if gtol is None:
        gtol = 1e-4 if any(t in str(problem.x0.dtype) for t in ("float32", "float16")) else 1e-8
    opts.setdefault("gtol", gtol)
    if ftol is not None:
        opts.setdefault("ftol", ftol)
    if maxiter is not None:
        opts.setdefault("maxiter", maxiter)
    if key != "gradient":
        opts.setdefault("hessian", approx)
    solver = cls(**opts)
    return solve(problem, solver, backend=backend, callback=callback, progress=progress,
                 throw=throw)
