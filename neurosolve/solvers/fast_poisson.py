"""Exact fast Poisson solver for the empty box: the floor every box benchmark reports.

On a rectangular box with no interior solid or air cells, the unscaled 5/7-point matrix
of :mod:`neurosolve.problems.poisson` is a Kronecker sum of 1-D second-difference
matrices ``T_a``, each diagonalized by a fixed orthogonal transform:

* both ends Dirichlet (``T`` = tridiag(-1, 2, -1)): the DST-I, eigenvalues
  ``2 - 2 cos(pi k / (n + 1))``, k = 1..n;
* both ends Neumann (end diagonals 1): the DCT-II, eigenvalues ``2 - 2 cos(pi k / n)``,
  k = 0..n-1;
* mixed ends: a dense eigendecomposition of the n x n matrix ``T`` (O(n^2) per line).

So ``x = Q (Q^T b / (lambda_1 + ... + lambda_d))`` costs O(n log n). An all-Neumann box
is singular: ``b`` is projected onto the range (mean removed) and the mean-zero solution
is returned.

References
----------
.. [1] R. W. Hockney, "A fast direct solution of Poisson's equation using Fourier
   analysis", J. ACM 12(1), 1965.
.. [2] G. Strang, "The discrete cosine transform", SIAM Review 41(1), 1999 (the
   boundary conditions behind each DCT/DST type).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fast_poisson_solve"]


def _axis_kind(walls: dict, axis: int) -> str:
    name = "xyz"[axis]
    lo, hi = walls[f"{name}-"], walls[f"{name}+"]
    if lo == hi:
        return lo
    return "mixed"


def _tridiag(n: int, lo: str, hi: str) -> np.ndarray:
    T = 2.0 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    if lo == "neumann":
        T[0, 0] -= 1.0
    if hi == "neumann":
        T[-1, -1] -= 1.0
    return T


def fast_poisson_solve(grid_or_shape: Any, b: Any, walls: Any = None, *, workers: int | None = None):
    """Solve the empty-box Poisson system exactly with DST/DCT transforms.

    Parameters
    ----------
    grid_or_shape : CellGrid or tuple of int
        An all-fluid :class:`~neurosolve.problems.poisson.CellGrid` (its walls are used)
        or a shape.
    b : array of length n or of the grid's shape
        Right-hand side (numpy).
    walls : {"dirichlet", "neumann"} or dict per face, optional
        Wall conditions when a shape is given (default "dirichlet"); must agree with the
        grid's walls when a grid is given.
    workers : int, optional
        Threads for :mod:`scipy.fft`.

    Returns
    -------
    numpy.ndarray
        ``x`` with the shape of ``b``; for an all-Neumann box the mean-zero solution for the
        mean-free part of ``b``.

    Raises
    ------
    ValueError
        A grid with solid or air cells, ``b`` of the wrong size, or walls that contradict
        the grid.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.problems import poisson
    >>> from neurosolve.solvers.fast_poisson import fast_poisson_solve
    >>> grid = poisson.box((16, 16, 16), walls="dirichlet")
    >>> b = poisson.rhs_noise(grid, seed=1)
    >>> x = fast_poisson_solve(grid, b)
    >>> float(np.linalg.norm(grid.matrix() @ x - b)) < 1e-12
    True
    """
    import scipy.fft as fft

    from neurosolve.problems.poisson import CellGrid, _parse_walls

    if isinstance(grid_or_shape, CellGrid):
        grid = grid_or_shape
        if not grid.fluid.all():
            raise ValueError(
                "fast_poisson_solve needs an empty box (all cells fluid); this grid has "
                f"{int((~grid.fluid).sum())} solid/air cells: use CG with a preconditioner"
            )
        if grid.variable and not np.all(grid.coefficients == grid.coefficients.flat[0]):
            raise ValueError(
                "fast_poisson_solve diagonalizes the constant-coefficient Laplacian; this grid "
                "carries a variable coefficient field: use CG with GMG or AMG")
        kscale = float(grid.coefficients.flat[0]) if grid.variable else 1.0
        shape = grid.shape
        wall_map = grid.walls
        if walls is not None and _parse_walls(walls, grid.ndim) != wall_map:
            raise ValueError(f"walls={walls!r} contradicts the grid's walls {wall_map}")
    else:
        kscale = 1.0
        shape = tuple(int(s) for s in grid_or_shape)
        if len(shape) not in (1, 2, 3) or min(shape) < 1:
            raise ValueError(f"shape must be 1 to 3 positive sizes, got {shape}")
        wall_map = _parse_walls("dirichlet" if walls is None else walls, len(shape)) \
            if len(shape) > 1 else None
        if len(shape) == 1:
            w = "dirichlet" if walls is None else walls
            wall_map = {"x-": w, "x+": w}
    b = np.asarray(b)
    n = int(np.prod(shape))
    if b.size != n:
        raise ValueError(f"b has {b.size} entries; the grid {shape} has {n} cells")
    out_shape = b.shape
    v = np.asarray(b, dtype=np.float64).reshape(shape)
    ndim = len(shape)

    kinds = [_axis_kind(wall_map, a) for a in range(ndim)]
    lam = np.zeros(shape)
    dense = {}
    for a, (s, kind) in enumerate(zip(shape, kinds)):
        if kind == "dirichlet":
            ev = 2.0 - 2.0 * np.cos(np.pi * np.arange(1, s + 1) / (s + 1))
        elif kind == "neumann":
            ev = 2.0 - 2.0 * np.cos(np.pi * np.arange(s) / s)
        else:
            name = "xyz"[a]
            ev, Q = np.linalg.eigh(_tridiag(s, wall_map[f"{name}-"], wall_map[f"{name}+"]))
            dense[a] = Q
        view = [1] * ndim
        view[a] = s
        lam = lam + ev.reshape(view)

    def forward(u):
        for a, kind in enumerate(kinds):
            if kind == "dirichlet":
                u = fft.dst(u, type=1, axis=a, norm="ortho", workers=workers)
            elif kind == "neumann":
                u = fft.dct(u, type=2, axis=a, norm="ortho", workers=workers)
            else:
                u = np.moveaxis(np.tensordot(dense[a].T, u, axes=([1], [a])), 0, a)
        return u

    def inverse(u):
        for a, kind in enumerate(kinds):
            if kind == "dirichlet":
                u = fft.idst(u, type=1, axis=a, norm="ortho", workers=workers)
            elif kind == "neumann":
                u = fft.idct(u, type=2, axis=a, norm="ortho", workers=workers)
            else:
                u = np.moveaxis(np.tensordot(dense[a], u, axes=([1], [a])), 0, a)
        return u

    coef = forward(v)
    singular = all(k == "neumann" for k in kinds)
    if singular:
        lam.flat[0] = 1.0
        coef.flat[0] = 0.0  # the constant mode: project b, return the mean-zero solution
    x = inverse(coef / lam)
    return (x / kscale if kscale != 1.0 else x).reshape(out_shape)
