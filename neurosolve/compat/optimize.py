"""``neurosolve.compat.minimize``: :func:`scipy.optimize.minimize`, signature and result.

The GNS Newton family (:data:`neurosolve.minimize_fn.METHODS`) runs through
:func:`neurosolve.minimize`; every other method, and anything with bounds or constraints
when ``method`` is not ours, goes to :func:`scipy.optimize.minimize` unchanged.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import numpy as np

from neurosolve.core import Status

__all__ = ["minimize"]

_STATUS_CODES = {
    Status.CONVERGED: 0,
    Status.MAX_ITER: 1,
    Status.STAGNATION: 2,
    Status.BREAKDOWN: 3,
    Status.NONFINITE: 3,
    Status.DIVERGED: 3,
    Status.STOPPED: 99,
}

#: scipy's keywords of ``minimize`` that this module handles itself for our methods
_OWN_OPTIONS = ("disp", "maxiter", "gtol", "return_all")

#: finite-difference choices of scipy's ``jac=`` / ``hess=`` that our methods support
_FD = ("2-point", "3-point")


def _our_methods() -> tuple[str, ...]:
    from neurosolve.minimize_fn import METHODS

    return tuple(METHODS)


def _key(method: Any) -> str | None:
    if not isinstance(method, str):
        return None
    return method.lower().replace("_", "-")


def _has_constraints(constraints: Any) -> bool:
    if constraints is None:
        return False
    if isinstance(constraints, (list, tuple)):
        return len(constraints) > 0
    if isinstance(constraints, dict):
        return len(constraints) > 0
    return True


def _fd_step(x, order: int):
    eps = np.finfo(np.float64).eps
    return (eps ** (1.0 / (order + 1))) * np.maximum(1.0, np.abs(x))


def _fd_grad(f: Callable, scheme: str) -> Callable:
    """Forward (``2-point``) or central (``3-point``) differences of ``f`` (numpy)."""
    central = scheme == "3-point"

    def grad(x):
        x = np.asarray(x, dtype=np.float64)
        h = _fd_step(x, 2 if central else 1)
        g = np.empty_like(x)
        f0 = None if central else float(f(x))
        for i in range(x.size):
            e = np.zeros_like(x)
            e[i] = h[i]
            if central:
                g[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h[i])
            else:
                g[i] = (float(f(x + e)) - f0) / h[i]
        return g

    return grad


def _fd_hess(grad: Callable, scheme: str) -> Callable:
    """A symmetrized dense Hessian from differences of the gradient (numpy)."""
    central = scheme == "3-point"

    def hess(x):
        x = np.asarray(x, dtype=np.float64)
        h = _fd_step(x, 2 if central else 1)
        n = x.size
        H = np.empty((n, n))
        g0 = None if central else np.asarray(grad(x), dtype=np.float64)
        for i in range(n):
            e = np.zeros_like(x)
            e[i] = h[i]
            if central:
                H[:, i] = (np.asarray(grad(x + e)) - np.asarray(grad(x - e))) / (2 * h[i])
            else:
                H[:, i] = (np.asarray(grad(x + e)) - g0) / h[i]
        return 0.5 * (H + H.T)

    return hess


def _with_args(fn, args, kind: str):
    if not args or not callable(fn):
        return fn
    if kind == "hessp":
        return lambda x, v: fn(x, v, *args)
    return lambda x: fn(x, *args)


def minimize(fun: Callable, x0: Any, args: tuple = (), method: str | Callable | None = None,
             jac: Callable | bool | str | None = None, hess: Any = None,
             hessp: Callable | None = None, bounds: Any = None, constraints: Any = (),
             tol: float | None = None, callback: Callable | None = None,
             options: dict | None = None):
    """Drop-in for :func:`scipy.optimize.minimize`: same signature, a real ``OptimizeResult``.

    Which method runs:

    * a method of ours (``"gns"``, ``"gns-normalized-gradient"``, ``"super-newton"``,
      ``"cubic-newton"``, ``"gradient"``) runs through :func:`neurosolve.minimize`;
    * ``method=None`` runs ``"gns"`` when a Hessian is given (a callable ``hess`` or
      ``hessp``) and there are no bounds or constraints; otherwise scipy's own default
      (BFGS, L-BFGS-B or SLSQP). Where scipy would run BFGS and warn that it ignores
      ``hess``, this uses it;
    * every other method (``"BFGS"``, ``"L-BFGS-B"``, ``"trust-exact"``, ``"Newton-CG"``,
      a callable...) is handed to :func:`scipy.optimize.minimize` with every argument
      unchanged, so its result is scipy's, bit for bit.

    For our methods: ``args`` are appended to every call of ``fun``, ``jac``, ``hess`` and
    ``hessp``; ``jac`` is a callable, True (``fun`` returns ``(f, g)``), ``"2-point"`` /
    ``"3-point"`` (finite differences), or None for a torch ``x0`` (autograd); ``hess`` is a
    callable, None (the default: quasi-Newton BFGS from gradients for numpy, the exact
    Hessian with ``hessp`` or torch), a scipy ``BFGS()`` / ``SR1()`` strategy,
    ``"2-point"`` / ``"3-point"`` (finite differences of ``jac``) or one of our
    approximation names (``"diag"``, ``"fisher"``...; see :func:`neurosolve.minimize`).
    ``tol`` sets ``gtol``. ``options`` may hold ``disp`` (print a summary as scipy does),
    ``maxiter``, ``gtol``, ``return_all`` (the iterates in ``allvecs``), any keyword of
    :func:`neurosolve.minimize` (``B``, ``ftol``, ``f_star``, ``hess_diag``,
    ``sample_grads``...) and any field of the solver (``gamma0``, ``max_trials``...);
    other options draw scipy's ``OptimizeWarning("Unknown solver options: ...")`` and are
    ignored. ``callback(xk)`` is called after every iteration, or, when its only parameter
    is named ``intermediate_result``, ``callback(intermediate_result=OptimizeResult(x=...,
    fun=...))``; raising ``StopIteration`` ends the solve (status 99), as in scipy.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x, fun, jac, nit, nfev, njev, nhev, status, success, message``; for our methods
        also ``nfactorizations``, ``gamma`` (the accepted radii) and ``result`` (the full
        :class:`neurosolve.Result`). ``status``: 0 converged, 1 iteration limit,
        2 stagnation (search failed), 3 breakdown / non-finite, 99 stopped by the callback.

    Raises
    ------
    ValueError
        Our method with ``bounds`` or ``constraints`` (use a scipy method), without a
        gradient for a numpy ``x0``, or with ``jac``/``hess="cs"``; a multi-dimensional
        ``x0``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess
    >>> from neurosolve import compat
    >>> res = compat.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
    ...                       tol=1e-10)
    >>> res.success, res.nit < 60, type(res).__name__
    (True, True, 'OptimizeResult')
    >>> compat.minimize(rosen, np.array([-1.2, 1.0]), method="trust-exact", jac=rosen_der,
    ...                 hess=rosen_hess).success          # scipy's own trust-exact
    True
    """
    import scipy.optimize as so

    key = _key(method)
    ours = _our_methods()
    if method is None:
        has_hess = (callable(hess) and not isinstance(hess, so.HessianUpdateStrategy)) \
            or hessp is not None
        if has_hess and bounds is None and not _has_constraints(constraints):
            key = "gns"
    if key not in ours:
        return so.minimize(fun, x0, args=args, method=method, jac=jac, hess=hess, hessp=hessp,
                           bounds=bounds, constraints=constraints, tol=tol, callback=callback,
                           options=options)
    if bounds is not None:
        raise ValueError(f"method {method or key!r} does not support bounds; use a scipy "
                         "method such as 'L-BFGS-B', 'TNC' or 'trust-constr'")
    if _has_constraints(constraints):
        raise ValueError(f"method {method or key!r} does not support constraints; use a scipy "
                         "method such as 'SLSQP' or 'trust-constr'")
    return _minimize_ours(fun, x0, args, key, jac, hess, hessp, tol, callback, options)


def _minimize_ours(fun, x0, args, key, jac, hess, hessp, tol, callback, options):
    import dataclasses
    import importlib

    from scipy.optimize import HessianUpdateStrategy, OptimizeResult, OptimizeWarning

    from neurosolve.core import to_float
    from neurosolve.minimize_fn import METHODS
    from neurosolve.minimize_fn import minimize as _minimize

    if not isinstance(args, tuple):
        args = (args,)
    torch_x0 = hasattr(x0, "detach")
    if not torch_x0:
        x0 = np.atleast_1d(np.asarray(x0))
        if x0.ndim != 1:
            raise ValueError(f"'x0' must only have one dimension, got shape {x0.shape}")
        if not np.issubdtype(x0.dtype, np.floating):
            x0 = x0.astype(np.float64)
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    opts = dict(options or {})
    disp = bool(opts.pop("disp", False))
    return_all = bool(opts.pop("return_all", False))
    if tol is not None:
        opts.setdefault("gtol", tol)

    # -- the oracles, scipy-style ---------------------------------------------------------
    f = _with_args(fun, args, "fun")
    if isinstance(jac, str):
        if jac not in _FD:
            raise ValueError(f"jac={jac!r} is not supported by method {key!r}; pass a callable, "
                             f"True, or one of {', '.join(map(repr, _FD))}")
        if torch_x0:
            raise ValueError("finite differences need a numpy x0; a torch x0 uses autograd "
                             "(leave jac=None)")
        g = _fd_grad(f, jac)
    elif jac is True:
        g = True
    elif callable(jac):
        g = _with_args(jac, args, "jac")
    elif jac in (None, False):
        if not torch_x0:
            raise ValueError(f"method {key!r} needs the gradient: pass jac= a callable, "
                             "jac=True (fun returns (f, g)) or jac='2-point'/'3-point' "
                             "(finite differences), or use a torch x0 (autograd)")
        g = None
    else:
        raise TypeError(f"jac must be a callable, True, a string or None, got "
                        f"{type(jac).__name__}")
    h: Any = "auto"
    if isinstance(hess, HessianUpdateStrategy):
        h = hess
    elif callable(hess):
        h = _with_args(hess, args, "hess")
    elif isinstance(hess, str):
        if hess in _FD:
            if torch_x0:
                raise ValueError("finite differences need a numpy x0; a torch x0 gets its "
                                 "Hessian from autograd (leave hess=None)")
            grad_fn = (lambda x: f(x)[1]) if g is True else g
            h = _fd_hess(grad_fn, hess)
        elif hess == "cs":
            raise ValueError(f"hess='cs' (complex step) is not supported by method {key!r}; "
                             f"use {' or '.join(map(repr, _FD))}, a callable or None")
        else:
            h = hess
    elif hess is not None:
        raise TypeError(f"hess must be a callable, a string, a HessianUpdateStrategy or None, "
                        f"got {type(hess).__name__}")
    hp = _with_args(hessp, args, "hessp")
    if hp is not None and not callable(hp):
        raise TypeError(f"hessp must be callable, got {type(hp).__name__}")

    # -- options: ours, ns.minimize's keywords, solver fields; the rest as scipy warns ------
    cls = getattr(importlib.import_module(METHODS[key][0]), METHODS[key][1])
    known = set(inspect.signature(_minimize).parameters) - {"fun", "x0", "jac", "hess",
                                                            "method", "hessp", "callback",
                                                            "options", "solver_options"}
    if dataclasses.is_dataclass(cls):
        known |= {fl.name for fl in dataclasses.fields(cls)}
    unknown = sorted(k for k in opts if k not in known)
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(unknown)}", OptimizeWarning,
                      stacklevel=3)
        for k in unknown:
            del opts[k]

    # -- callback, scipy's two conventions ------------------------------------------------
    allvecs = [] if return_all else None
    new_style = False
    if callback is not None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        try:
            new_style = set(inspect.signature(callback).parameters) == {"intermediate_result"}
        except (TypeError, ValueError):
            new_style = False

    def cb(view):
        if view.k == 0:
            if allvecs is not None:
                allvecs.append(_copy(view.x))
            return False
        if allvecs is not None:
            allvecs.append(_copy(view.x))
        if callback is None:
            return False
        try:
            if new_style:
                callback(intermediate_result=OptimizeResult(
                    x=view.x, fun=float(view.metrics["f"]), nit=view.k))
            else:
                callback(view.x)
        except StopIteration:
            return True
        return False

    res = _minimize(f, x0, g, h, method=key, hessp=hp, callback=cb, **opts)
    st = res.state
    out = OptimizeResult(
        x=res.x,
        fun=to_float(st.f),
        jac=st.g,
        nit=res.n_iter,
        nfev=res.stats.get("nfev", 0),
        njev=res.stats.get("ngev", 0),
        nhev=res.stats.get("nhev", 0),
        nfactorizations=res.stats.get("factorizations", 0),
        status=_STATUS_CODES.get(res.status, 3),
        success=res.success,
        message=res.message,
        gamma=res.history.get("gamma"),
        result=res,
    )
    if res.status is Status.STOPPED and callback is not None:
        out.message = "`callback` raised `StopIteration`."
    if allvecs is not None:
        out.allvecs = allvecs
    if disp:
        _print_summary(out)
    return out


def _copy(x):
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def _print_summary(out) -> None:
    """scipy's ``disp=True`` summary."""
    head = "Optimization terminated successfully." if out.success else f"Warning: {out.message}"
    print(head)
    print(f"         Current function value: {out.fun:f}")
    print(f"         Iterations: {out.nit:d}")
    print(f"         Function evaluations: {out.nfev:d}")
    print(f"         Gradient evaluations: {out.njev:d}")
    print(f"         Hessian evaluations: {out.nhev:d}")
