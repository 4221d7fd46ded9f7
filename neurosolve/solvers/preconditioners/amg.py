"""Algebraic multigrid preconditioner: a pyamg hierarchy's V-cycle."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from neurosolve.solvers.preconditioners.base import Preconditioner, as_csr

__all__ = ["AMG"]


class AMG(Preconditioner):
    """One pyamg multigrid cycle as the preconditioner (``ml.aspreconditioner()``).

    The hierarchy is built on the nonempty rows of ``A`` only (the solid and air cells of a
    Poisson grid have empty rows, which pyamg's smoothers cannot divide by); those rows are
    identity rows of M. On a matrix without empty rows this is exactly pyamg's
    ``aspreconditioner(cycle)``.

    Singular Neumann systems: smoothed aggregation's default near-null-space candidate
    ``B`` is the constant vector, which is the null space on each fluid component
    (aggregates never span two components), and pyamg's coarsest solver is a
    pseudo-inverse. That pseudo-inverse measures small singular values relative to the
    coarsest matrix itself, so a 1 x 1 coarsest matrix holding only rounding error is
    inverted and the cycle returns a huge null-space component (scipy's ``cg`` then fails).
    When the null space is known (``nullspace=``, or taken from a system passed as ``A``)
    the output is therefore projected onto the range: ``M = Pi M_pyamg Pi`` with ``Pi``
    the orthogonal projector, symmetric and positive definite on the range, which is all
    PCG needs for a compatible ``b``.

    Parameters
    ----------
    A : LinearSystem, matrix or Poisson operator
    kind : {"sa", "rs"}
        ``pyamg.smoothed_aggregation_solver`` or ``pyamg.ruge_stuben_solver``.
    cycle : {"V", "W", "F", "AMLI"}
        Passed to ``aspreconditioner``.
    nullspace : Nullspace or None or "auto"
        Project the preconditioned vector onto the range of a singular ``A``; "auto" takes
        the null space of a system passed as ``A``.
    **pyamg_kwargs
        Passed to the pyamg solver constructor (e.g. ``max_coarse=500``, ``B=...``).

    Attributes
    ----------
    hierarchy : pyamg.multilevel.MultilevelSolver

    References
    ----------
    .. [1] P. Vanek, J. Mandel, M. Brezina, "Algebraic multigrid by smoothed aggregation for
       second and fourth order elliptic problems", Computing 56, 1996.
    .. [2] J. W. Ruge, K. Stueben, "Algebraic multigrid", in Multigrid Methods, SIAM, 1987.
    .. [3] N. Bell, L. N. Olson, J. Schroder, B. Southworth, "PyAMG: Algebraic multigrid
       solvers in Python", J. Open Source Software 8(87), 2023.
    """

    def __init__(self, A: Any, kind: str = "sa", cycle: str = "V", *, nullspace: Any = "auto",
                 **pyamg_kwargs: Any):
        from neurosolve.problems.linear import LinearSystem, Nullspace

        t0 = time.perf_counter()
        if isinstance(nullspace, str):
            if nullspace != "auto":
                raise ValueError(f"nullspace must be a Nullspace, None or 'auto', got {nullspace!r}")
            nullspace = A.nullspace if isinstance(A, LinearSystem) else None
        elif nullspace is not None and not isinstance(nullspace, Nullspace):
            raise TypeError("nullspace must be a neurosolve.problems.Nullspace, None or 'auto'")
        self.nullspace = nullspace
        if kind not in ("sa", "rs"):
            raise ValueError(f"kind must be 'sa' (smoothed aggregation) or 'rs' (Ruge-Stueben), "
                             f"got {kind!r}")
        try:
            import pyamg
        except ImportError as exc:  # pragma: no cover - pyamg is a test dependency
            raise ImportError("AMG needs pyamg: pip install pyamg") from exc
        A = as_csr(A)
        active = np.diff(A.indptr) > 0
        self.active = None if active.all() else np.flatnonzero(active)
        sub = A if self.active is None else A[self.active][:, self.active].tocsr()
        build = pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
        self.hierarchy = build(sub, **pyamg_kwargs)
        self._M = self.hierarchy.aspreconditioner(cycle=cycle)
        self.kind = kind
        self.cycle = cycle
        self.shape = A.shape
        self.dtype = np.dtype(np.float64)
        self.setup_time = time.perf_counter() - t0

    def matvec(self, r):
        r = self._check(r)
        ns = self.nullspace
        if ns is not None:
            r = ns.project(r)
        if self.active is None:
            z = np.asarray(self._M.matvec(r)).reshape(-1)
        else:
            z = np.array(r, dtype=np.float64, copy=True)
            z[self.active] = np.asarray(self._M.matvec(r[self.active])).reshape(-1)
        return z if ns is None else ns.project(z)

    def __repr__(self) -> str:
        return f"<AMG kind={self.kind} cycle={self.cycle} levels={len(self.hierarchy.levels)} n={self.shape[0]}>"
