"""Ready-made sweeps built on :func:`neurosolve.sweep`.

:func:`regularization_path`: the convex ReLU program over a list of ``beta`` values, warm
started along each chunk of consecutive betas, the chunks running in parallel (Ray) or one
after another (serial), with the same results either way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from neurosolve.sweeps import sweep

__all__ = ["regularization_path"]


@dataclasses.dataclass(frozen=True)
class _PathProblem:
    """``beta -> ConvexReLU(X, y, beta, **options)`` (picklable; X and y travel once)."""

    X: Any
    y: Any
    options: Mapping[str, Any]

    def __call__(self, beta: float):
        from neurosolve.problems.convex_relu import ConvexReLU

        return ConvexReLU(self.X, self.y, beta, **self.options)


def regularization_path(X: Any, y: Any, betas: Any, *, solver: Any = None,
                        chunksize: int = 4, warm_start: bool = True, engine: str = "serial",
                        solve_options: Mapping[str, Any] | None = None,
                        **options: Any) -> list:
    """Fit the convex ReLU program (:class:`neurosolve.problems.ConvexReLU`) for every
    ``beta`` of ``betas``; warm starts run inside chunks of consecutive betas.

    Parameters
    ----------
    X, y : array
        Training data, as for :class:`~neurosolve.problems.ConvexReLU`.
    betas : sequence of float
        Regularization strengths (> 0), solved in this order within each chunk. Order them
        from large to small: the large-beta solutions are sparse and cheap, and each
        solution is a good start for the next, slightly less regularized one.
    solver : Solver, callable or None
        The solver for every beta (a :class:`neurosolve.Solver`, or ``beta -> Solver``);
        None: the default solver of the program (ADMM for sampled patterns).
    chunksize : int
        Consecutive betas per task (default 4). Inside a chunk, each solve starts from the
        previous beta's answer (``x0=``); chunks are independent, so with
        ``engine="ray"`` they run in parallel. ``chunksize=len(betas)`` is the fully warm
        started, purely sequential path; ``chunksize=1`` a cold start for every beta.
    warm_start : bool
        False: every beta starts cold (x0 = 0), for comparison.
    engine : {"serial", "ray"}
        See :func:`neurosolve.sweep`. Both engines chunk identically, hence compute the
        same path.
    solve_options : dict, optional
        Keywords of :func:`neurosolve.solve` (``backend=``, ``record_every=``...).
    **options
        Keywords of :class:`~neurosolve.problems.ConvexReLU` (``loss=``, ``patterns=``,
        ``seed=``, ``bias=``...) and of :func:`neurosolve.sweep` (``progress=``,
        ``keep_state=``, ``on_error=``, ``max_retries=``, ``address=``, ``num_cpus=``,
        ``ray_init=``, ``ray_options=``, ``keep_ray=``).

    Returns
    -------
    list of Result
        One per beta, in the order of ``betas``. ``ConvexReLU(X, y, beta,
        **options).network(result)`` is the fitted network of one beta.

    Notes
    -----
    The patterns are sampled from ``X`` with ``seed`` (default 0), independently of beta,
    so all programs of the path share the shape of x and a warm start is well defined.
    ADMM takes ``x0`` as its starting primal point (its multipliers start at zero), so
    a warm start saves part of the iterations, not all (``docs/sweeps.md`` has a
    measurement).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.sweep_tools import regularization_path
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 2)); y = X[:, 0] * X[:, 1]
    >>> path = regularization_path(X, y, [1.0, 0.5], patterns=4, progress=False,
    ...                            solver=ns.solvers.ADMM(rtol=1e-3))
    >>> [r.status.name for r in path]
    ['CONVERGED', 'CONVERGED']
    """
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__iter__"):
        raise TypeError(f"betas must be a list of numbers > 0, got {type(betas).__name__}")
    values = []
    for b in betas:
        try:
            v = float(b)
        except (TypeError, ValueError):
            v = math.nan
        if isinstance(b, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"betas must hold finite numbers > 0, got {b!r}")
        values.append(v)
    if not values:
        raise ValueError("betas is empty: give at least one regularization strength")
    sweep_keys = {"progress", "keep_state", "on_error", "max_retries", "address", "num_cpus",
                  "ray_init", "ray_options", "keep_ray"}
    sweep_kwargs = {k: options.pop(k) for k in list(options) if k in sweep_keys}
    spec = {"problem": _PathProblem(X, y, dict(options)), "solver": solver,
            "options": dict(solve_options or {})}
    return sweep(spec, values, engine=engine, chunksize=chunksize,
                 warm_start=warm_start, **sweep_kwargs)
