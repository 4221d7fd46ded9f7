"""Algebraic multigrid preconditioner: a pyamg hierarchy's V-cycle."""

from __future__ import annotations

import time
import warnings
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
    B : (n, k) array, optional
        Smoothed aggregation's near-null-space candidates, as pyamg's ``B`` (for linear
        elasticity the rigid body modes; ``pyamg.gallery.linear_elasticity`` returns them).
        Default: pyamg's, i.e. ``blocksize`` constant vectors, one per component.
    blocksize : int, optional
        The block size of the hierarchy. A scipy BSR ``A`` keeps its own (it is *not*
        converted to CSR, so systems of PDEs are aggregated node by node, as pyamg does);
        ``blocksize=`` imposes one on a CSR matrix or a
        :class:`~neurosolve.problems.LinearSystem` (which stores its matrix as CSR).
    nullspace : Nullspace or None or "auto"
        Project the preconditioned vector onto the range of a singular ``A``; "auto" takes
        the null space of a system passed as ``A``.
    **pyamg_kwargs
        Passed to the pyamg solver constructor (e.g. ``max_coarse=500``, ``strength=...``).

    Attributes
    ----------
    hierarchy : pyamg.multilevel.MultilevelSolver
    blocksize : int
        The block size the hierarchy was built with (1: CSR).
    B : array or None
        The near-null space passed (restricted to the nonempty rows).

    Examples
    --------
    Linear elasticity in BSR form with its rigid body modes: PCG takes as many iterations
    as pyamg's own ``ml.solve(b, tol=1e-8, accel="cg")``.

    >>> import numpy as np, pyamg, neurosolve as ns
    >>> from neurosolve.solvers.preconditioners import AMG
    >>> A, B = pyamg.gallery.linear_elasticity((20, 20))
    >>> M = AMG(A, B=B)
    >>> M.blocksize
    2
    >>> res = ns.cg(A, np.ones(A.shape[0]), rtol=1e-8, M=M)
    >>> res.success
    True

    References
    ----------
    .. [1] P. Vanek, J. Mandel, M. Brezina, "Algebraic multigrid by smoothed aggregation for
       second and fourth order elliptic problems", Computing 56, 1996.
    .. [2] J. W. Ruge, K. Stueben, "Algebraic multigrid", in Multigrid Methods, SIAM, 1987.
    .. [3] N. Bell, L. N. Olson, J. Schroder, B. Southworth, "PyAMG: Algebraic multigrid
       solvers in Python", J. Open Source Software 8(87), 2023.
    """

    def __init__(self, A: Any, kind: str = "sa", cycle: str = "V", *, B: Any = None,
                 blocksize: int | None = None, nullspace: Any = "auto", **pyamg_kwargs: Any):
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
        A = _as_amg_matrix(A, blocksize)
        n = A.shape[0]
        bs = A.blocksize[0] if A.format == "bsr" else 1
        if B is not None:
            if kind != "sa":
                raise ValueError("B (the near-null space) is used by smoothed aggregation only; "
                                 "pass kind='sa' or drop B")
            B = np.asarray(B, dtype=np.float64)
            if B.ndim == 1:
                B = B.reshape(-1, 1)
            if B.ndim != 2 or B.shape[0] != n or B.shape[1] < 1:
                raise ValueError(f"B must be an (n, k) array of near-null-space vectors with "
                                 f"n = {n} rows, got shape {B.shape}")
            if not np.isfinite(B).all():
                raise ValueError("B contains NaN or inf entries")
        csr = A.tocsr() if A.format == "bsr" else A
        # empty rows: no stored entry, or (BSR blocks store them) only explicit zeros
        active = np.diff(csr.indptr) > 0
        if A.format == "bsr":
            nz = csr.copy()
            nz.eliminate_zeros()
            active = np.diff(nz.indptr) > 0
        self.active = None if active.all() else np.flatnonzero(active)
        if self.active is None:
            sub = A
        elif bs > 1 and active.reshape(-1, bs).all(axis=1).sum() * bs == active.sum():
            # the empty rows fill whole block rows: keep the block structure on the rest
            sub = _bsr(csr[self.active][:, self.active], bs)
        else:
            if bs > 1:
                warnings.warn(f"A has empty rows that do not fill whole {bs} x {bs} blocks; "
                              "the hierarchy is built on the CSR submatrix of its nonempty rows, "
                              "without the block size", RuntimeWarning, stacklevel=2)
            sub = csr[self.active][:, self.active].tocsr()
        if B is not None and self.active is not None:
            B = B[self.active]
        build = pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
        if B is not None:
            pyamg_kwargs["B"] = B
        self.hierarchy = build(sub, **pyamg_kwargs)
        self._M = self.hierarchy.aspreconditioner(cycle=cycle)
        self.kind = kind
        self.cycle = cycle
        self.blocksize = sub.blocksize[0] if sub.format == "bsr" else 1
        self.B = B
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
        bs = f" blocksize={self.blocksize}" if self.blocksize > 1 else ""
        return (f"<AMG kind={self.kind} cycle={self.cycle} levels={len(self.hierarchy.levels)} "
                f"n={self.shape[0]}{bs}>")


def _bsr(A, blocksize: int):
    import scipy.sparse as sp

    out = sp.bsr_matrix(A, blocksize=(blocksize, blocksize), dtype=np.float64)
    out.sort_indices()
    return out


def _as_amg_matrix(A: Any, blocksize: int | None):
    """A float64 CSR matrix, or BSR when ``A`` is BSR or ``blocksize`` is given.

    A scipy BSR matrix keeps its block size (pyamg's smoothed aggregation then aggregates
    whole blocks and takes ``blocksize`` near-null-space candidates by default);
    ``blocksize=`` imposes one on any other input (a CSR elasticity matrix, or a
    :class:`~neurosolve.problems.LinearSystem`, which stores its matrix as CSR).
    """
    import scipy.sparse as sp

    if blocksize is not None:
        if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) \
                or blocksize < 1:
            raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
        blocksize = int(blocksize)
    if sp.issparse(A) and A.format == "bsr":
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {A.shape}")
        r, c = A.blocksize
        if blocksize is None and r == c:
            if r == 1:
                return as_csr(A)
            return _bsr(A, r)
        if blocksize is None:
            raise ValueError(f"A has non-square {r} x {c} blocks; pass blocksize= to choose "
                             "the square block size for the hierarchy")
    csr = as_csr(A)
    if blocksize is None or blocksize == 1:
        return csr
    if csr.shape[0] % blocksize:
        raise ValueError(f"blocksize={blocksize} does not divide the dimension "
                         f"{csr.shape[0]} of A")
    return _bsr(csr, blocksize)
