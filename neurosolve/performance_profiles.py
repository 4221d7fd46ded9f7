"""Dolan-Moré performance profiles of solvers on a test set.

Given a table ``T[s, p]`` of a cost (iterations, function evaluations, wall time) of solver
``s`` on problem ``p``, with ``inf`` (or NaN) where the solver failed, the performance ratio
is ``r[s, p] = T[s, p] / min_s T[s, p]`` and the profile of solver ``s`` is

    rho_s(tau) = |{p : r[s, p] <= tau}| / n_problems,

the fraction of problems it solves within a factor ``tau`` of the best solver.
``rho_s(1)`` is the fraction on which ``s`` is (one of) the best; ``rho_s(inf)`` the
fraction it solves at all. Problems no solver solved are kept in the denominator (they
count against everyone), as in the paper.

References
----------
.. [1] E. D. Dolan, J. J. Moré, "Benchmarking optimization software with performance
   profiles", Mathematical Programming 91(2), 201-213, 2002.

Examples
--------
>>> import numpy as np
>>> from neurosolve.performance_profiles import ratios, profile
>>> T = np.array([[10.0, 20.0, np.inf],    # solver A on problems 1-3
...               [12.0, 10.0, 30.0]])     # solver B
>>> ratios(T)
array([[1. , 2. , inf],
       [1.2, 1. , 1. ]])
>>> profile(T, [1.0, 2.0])
array([[0.33333333, 0.66666667],
       [0.66666667, 1.        ]])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["ratios", "profile", "profile_table", "plot"]


def _as_table(costs: Any) -> np.ndarray:
    T = np.array(costs, dtype=float)
    if T.ndim != 2 or T.shape[0] < 1 or T.shape[1] < 1:
        raise ValueError(f"costs must be a 2-D table (solvers x problems), got shape {T.shape}")
    T[np.isnan(T)] = np.inf
    if np.any(T <= 0):
        raise ValueError("costs must be positive (use inf for a failure); got a value <= 0 "
                         f"at {tuple(np.argwhere(T <= 0)[0])}")
    return T


def ratios(costs: Any) -> np.ndarray:
    """Performance ratios ``T[s, p] / min_s T[s, p]`` (inf for a failure, and for every
    solver on a problem no solver solved).

    Parameters
    ----------
    costs : (n_solvers, n_problems) array_like
        Positive costs; ``inf`` or NaN marks a failure.

    Raises
    ------
    ValueError
        ``costs`` not 2-D, or a cost ``<= 0``.
    """
    T = _as_table(costs)
    best = T.min(axis=0)
    with np.errstate(invalid="ignore"):
        R = T / best[None, :]
    R[:, ~np.isfinite(best)] = np.inf
    return R


def profile(costs: Any, taus: Sequence[float]) -> np.ndarray:
    """``rho_s(tau)`` for each solver (rows) and each ``tau`` (columns).

    Parameters
    ----------
    costs : (n_solvers, n_problems) array_like
    taus : sequence of float
        Ratios ``>= 1`` at which to evaluate the profile.
    """
    t = np.asarray(taus, dtype=float)
    if t.ndim != 1 or np.any(~(t >= 1)):
        raise ValueError(f"taus must be a 1-D sequence of numbers >= 1, got {taus!r}")
    R = ratios(costs)
    return (R[:, :, None] <= t[None, None, :]).mean(axis=1)


def profile_table(costs: Any, solvers: Sequence[str], problems: Sequence[str],
                  taus: Sequence[float] = (1.0, 1.5, 2.0, 4.0, 10.0)) -> dict:
    """A JSON-ready summary: the costs, the ratios and ``rho_s(tau)`` at ``taus``.

    Infinite values are written as None.
    """
    T = _as_table(costs)
    if len(solvers) != T.shape[0] or len(problems) != T.shape[1]:
        raise ValueError(f"costs has shape {T.shape} but {len(solvers)} solvers and "
                         f"{len(problems)} problems were named")
    R = ratios(T)
    P = profile(T, taus)

    def clean(a):
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

    return {"solvers": list(solvers), "problems": list(problems), "taus": [float(t) for t in taus],
            "costs": clean(T), "ratios": clean(R),
            "profile": {s: [float(v) for v in P[i]] for i, s in enumerate(solvers)},
            "solved": {s: int(np.isfinite(T[i]).sum()) for i, s in enumerate(solvers)}}


def plot(costs: Any, solvers: Sequence[str], *, ax: Any = None, tau_max: float | None = None,
         title: str | None = None, log2: bool = True):
    """Plot the profiles as step functions of ``tau`` (matplotlib).

    Parameters
    ----------
    costs : (n_solvers, n_problems) array_like
    solvers : sequence of str
        Legend labels, one per row of ``costs``.
    ax : matplotlib Axes, optional
        Drawn into; a new figure otherwise.
    tau_max : float, optional
        Right end of the axis (default: twice the largest finite ratio, at least 2).
    log2 : bool
        A log2 ``tau`` axis, as in the paper.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    R = ratios(costs)
    if len(solvers) != R.shape[0]:
        raise ValueError(f"costs has {R.shape[0]} rows but {len(solvers)} solver names")
    finite = R[np.isfinite(R)]
    if tau_max is None:
        tau_max = max(2.0, 2.0 * float(finite.max()) if finite.size else 2.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    n = R.shape[1]
    for i, name in enumerate(solvers):
        r = np.sort(R[i][np.isfinite(R[i])])
        xs = np.concatenate([[1.0], r, [tau_max]])
        ys = np.concatenate([[np.mean(R[i] <= 1.0)], np.arange(1, r.size + 1) / n,
                             [r.size / n]])
        ax.step(xs, ys, where="post", label=name)
    if log2:
        ax.set_xscale("log", base=2)
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("tau (ratio to the best solver)")
    ax.set_ylabel("fraction of problems")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return ax
