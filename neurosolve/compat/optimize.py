"""``neurosolve.compat.minimize``: scipy's ``OptimizeResult`` return convention."""

from __future__ import annotations

import inspect
from typing import Any, Callable

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


def minimize(fun: Callable, x0: Any, args: tuple = (), method: str = "gns",
             jac: Callable | bool | None = None, hess: Any = "exact",
             hessp: Callable | None = None, tol: float | None = None,
             callback: Callable | None = None, options: dict | None = None):
    """Drop-in for :func:`scipy.optimize.minimize` running GNS Newton (or a baseline).

    Same positional order and keywords as scipy (``bounds``/``constraints`` are not
    supported). ``tol`` sets ``gtol``; ``options`` may hold ``gtol``, ``maxiter`` and any
    solver field (``gamma0``, ``max_trials``, ``B``, ``f_star``, ``ftol``...). ``callback``
    is called once per iteration as ``callback(xk)``, or, when its parameter is named
    ``intermediate_result``, with an ``OptimizeResult`` holding ``x`` and ``fun`` (scipy's
    new convention); raising ``StopIteration`` ends the solve.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x, fun, jac, nit, nfev, njev, nhev, status, success, message`` plus
        ``nfactorizations``, ``gamma`` (the accepted radii) and ``result`` (the full
        :class:`neurosolve.Result`). ``status``: 0 converged, 1 iteration limit,
        2 stagnation (search failed), 3 breakdown / non-finite, 99 stopped.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import rosen, rosen_der, rosen_hess
    >>> from neurosolve import compat
    >>> res = compat.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
    ...                       tol=1e-10)
    >>> res.success, res.nit < 60
    (True, True)
    """
    from scipy.optimize import OptimizeResult

    from neurosolve.minimize_fn import minimize as _minimize

    opts = dict(options or {})
    if tol is not None:
        opts.setdefault("gtol", tol)
    if args:
        f0, j0, h0, hp0 = fun, jac, hess, hessp
        fun = lambda x: f0(x, *args)  # noqa: E731
        if callable(j0):
            jac = lambda x: j0(x, *args)  # noqa: E731
        if callable(h0):
            hess = lambda x: h0(x, *args)  # noqa: E731
        if callable(hp0):
            hessp = lambda x, v: hp0(x, v, *args)  # noqa: E731
    cb = None
    if callback is not None:
        try:
            params = list(inspect.signature(callback).parameters)
        except (TypeError, ValueError):
            params = []
        new_style = bool(params) and params[0] == "intermediate_result"

        def cb(view):
            if view.k == 0:
                return False
            try:
                if new_style:
                    callback(intermediate_result=OptimizeResult(
                        x=view.x, fun=float(view.metrics["f"])))
                else:
                    callback(view.x)
            except StopIteration:
                return True
            return False

    res = _minimize(fun, x0, jac, hess, method=method, hessp=hessp, callback=cb, **opts)
    from neurosolve.core import to_float

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
    return out
