"""The Poisson gallery: pressure-projection systems on 2-D and 3-D cell grids.

A :class:`CellGrid` marks each cell FLUID, SOLID or AIR (the fluid-simulation
convention of the DCDM paper): a fluid cell is an unknown; a solid neighbour is a
homogeneous Neumann boundary (the neighbour is dropped and the diagonal is *not*
incremented); an air neighbour is a homogeneous Dirichlet boundary p = 0 (the neighbour
is dropped but the diagonal *is* incremented). The domain walls are solid (``"neumann"``)
or air (``"dirichlet"``), per face. Rows and columns of non-fluid cells stay in the
matrix, empty, so vectors always have one entry per cell (``n = prod(shape)``).

The system is unscaled (diagonal 6 at an interior 3-D cell, 4 in 2-D). It is singular
when a connected fluid region touches no air cell and no Dirichlet wall: the constant
vector on that region is in the null space and a right-hand side must sum to zero there.
:meth:`CellGrid.components` labels these regions and :meth:`CellGrid.nullspace` returns the
:class:`~neurosolve.problems.Nullspace` that :class:`~neurosolve.solvers.CG` uses to
detect an incompatible ``b`` and to project the answer.

Geometries: :func:`box`, :func:`sphere`, :func:`cylinder`, :func:`ellipsoids`,
:func:`pool` (free surface) and :func:`random_geometry` (a seeded mixture, for training
data). Right-hand sides: :func:`rhs_blobs` (smoke-like divergence), :func:`rhs_noise`,
:func:`rhs_lowfreq`; all are zero outside the fluid, projected onto the range of the
matrix and of unit norm.

Axes are named x, y, z for axes 0, 1, 2 of the ``cells`` array; :func:`pool` takes the
*last* axis as "up".

References
----------
.. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate Direction
   Method for Iteratively Solving Linear Systems", ICML 2023, arXiv:2205.10763 (section 1
   of specs/dcdm.md describes its matrices).
.. [2] R. Bridson, "Fluid Simulation for Computer Graphics", 2nd ed., CRC Press, 2015,
   chapter 5 (the pressure equation with solid and free-surface boundaries).

Examples
--------
>>> import neurosolve as ns
>>> from neurosolve.problems import poisson
>>> grid = poisson.sphere((32, 32, 32))
>>> prob = grid.system(poisson.rhs_blobs(grid, seed=0))
>>> res = ns.solve(prob, ns.solvers.CG(rtol=1e-6, M=ns.solvers.preconditioners.GMG(grid)))
>>> res.success, res.n_iter < 15
(True, True)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.operators import LinearOperator, MatrixOperator
from neurosolve.problems.linear import LinearSystem, Nullspace

__all__ = [
    "FLUID",
    "SOLID",
    "AIR",
    "CellGrid",
    "PoissonOperator",
    "PoissonSystem",
    "box",
    "sphere",
    "cylinder",
    "ellipsoids",
    "pool",
    "plates",
    "random_geometry",
    "lognormal_field",
    "layered_field",
    "inclusions_field",
    "rhs_blobs",
    "rhs_noise",
    "rhs_lowfreq",
]

FLUID = 0
SOLID = 1
AIR = 2

_AXES = "xyz"
_WALL_KINDS = ("neumann", "dirichlet")


def _faces(ndim: int) -> tuple[str, ...]:
    return tuple(f"{_AXES[a]}{s}" for a in range(ndim) for s in "-+")


def _parse_walls(walls: Any, ndim: int) -> dict[str, str]:
    faces = _faces(ndim)
    if isinstance(walls, str):
        if walls not in _WALL_KINDS:
            raise ValueError(f"walls must be 'neumann' or 'dirichlet' (or a dict per face), got {walls!r}")
        return {f: walls for f in faces}
    if isinstance(walls, Mapping):
        unknown = [k for k in walls if k not in faces]
        if unknown:
            raise ValueError(f"walls has unknown faces {unknown}; a {ndim}-D grid has faces "
                             f"{', '.join(faces)}")
        out = {}
        for f in faces:
            v = walls.get(f, "neumann")
            if v not in _WALL_KINDS:
                raise ValueError(f"walls[{f!r}] must be 'neumann' or 'dirichlet', got {v!r}")
            out[f] = v
        return out
    raise TypeError(f"walls must be a string or a dict per face, got {type(walls).__name__}")


class CellGrid:
    """A grid of FLUID / SOLID / AIR cells with Neumann or Dirichlet domain walls.

    Parameters
    ----------
    cells : array of int, shape (n0, n1) or (n0, n1, n2)
        Cell types: :data:`FLUID` (0), :data:`SOLID` (1) or :data:`AIR` (2).
    walls : {"neumann", "dirichlet"} or dict
        The condition on the domain boundary, for all faces or per face
        (``{"x-": ..., "x+": ..., "y-": ..., ...}``, missing faces are ``"neumann"``).
        A Neumann wall behaves like a layer of solid cells outside the grid, a Dirichlet
        wall like a layer of air cells.
    coefficients : array of float, shape ``cells.shape``, optional
        A positive coefficient ``k`` per cell: the operator becomes ``-div(k grad p)``.
        The coefficient of the face between two fluid cells is the harmonic mean of their
        ``k`` (exact for a flux through two half cells in series); a face towards an air
        cell or a Dirichlet wall uses the fluid cell's own ``k``; solid faces stay closed.
        ``None`` (default) means ``k = 1`` everywhere (the unit stencil, bit for bit).
        Generators: :func:`lognormal_field`, :func:`layered_field`,
        :func:`inclusions_field`. Values on non-fluid cells are ignored.

    Attributes
    ----------
    cells : numpy.ndarray of int8 (read-only)
    shape, ndim, n : grid shape, dimension and number of cells
    walls : dict
        The condition per face.
    fluid : numpy.ndarray of bool (read-only)

    Raises
    ------
    ValueError
        ``cells`` not 2-D or 3-D, empty, or with values other than 0, 1, 2; bad ``walls``;
        ``coefficients`` of another shape, not finite, or not positive on a fluid cell.
    """

    def __init__(self, cells: Any, walls: Any = "neumann", coefficients: Any = None):
        arr = np.asarray(cells)
        if arr.ndim not in (2, 3):
            raise ValueError(f"cells must be a 2-D or 3-D array, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"cells must not be empty, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"cells must hold integer cell types (FLUID=0, SOLID=1, AIR=2), "
                             f"got dtype {arr.dtype}")
        bad = (arr < 0) | (arr > 2)
        if bad.any():
            raise ValueError(f"cells may only hold FLUID=0, SOLID=1, AIR=2; found values "
                             f"{sorted(set(np.unique(arr[bad]).tolist()))[:5]}")
        self.cells = np.array(arr, dtype=np.int8)
        self.cells.flags.writeable = False
        self.shape = tuple(int(s) for s in self.cells.shape)
        self.ndim = self.cells.ndim
        self.n = int(np.prod(self.shape))
        self.walls = _parse_walls(walls, self.ndim)
        self.fluid = self.cells == FLUID
        self.fluid.flags.writeable = False
        self.coefficients = _check_coefficients(coefficients, self.shape, self.fluid)
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        counts = np.bincount(self.cells.ravel(), minlength=3)
        walls = set(self.walls.values())
        w = walls.pop() if len(walls) == 1 else self.walls
        k = ""
        if self.coefficients is not None:
            kf = self.coefficients[self.fluid]
            k = (f", coefficients=[{kf.min():.3g}, {kf.max():.3g}]" if kf.size
                 else ", coefficients=[]")
        return (f"CellGrid(shape={self.shape}, fluid={counts[0]}, solid={counts[1]}, "
                f"air={counts[2]}, walls={w!r}{k})")

    @property
    def variable(self) -> bool:
        """True when the grid carries a coefficient field (``-div(k grad p)``)."""
        return self.coefficients is not None

    def with_coefficients(self, coefficients: Any) -> "CellGrid":
        """The same cells and walls with a coefficient field (None: back to ``k = 1``)."""
        return CellGrid(self.cells, walls=dict(self.walls), coefficients=coefficients)

    # -- the stencil ---------------------------------------------------------------------
    def stencil(self):
        """``(diag, couplings)``: the diagonal (grid-shaped float64) and, per axis, the
        coupling of each cell with its ``+1`` neighbour (1.0 between two fluid cells, the
        face coefficient with a coefficient field).

        ``A[i, i] = diag[i]`` and ``A[i, i + e_a] = -couplings[a][i]``.
        """
        if "stencil" not in self._cache:
            f = self.fluid
            diag = np.zeros(self.shape)
            coup = []
            dirichlet_faces = np.zeros(self.shape, dtype=np.int64)
            k = self.coefficients
            for a in range(self.ndim):
                lo = SOLID if self.walls[f"{_AXES[a]}-"] == "neumann" else AIR
                hi = SOLID if self.walls[f"{_AXES[a]}+"] == "neumann" else AIR
                width = [(0, 0)] * self.ndim
                width[a] = (1, 1)
                vals = [(0, 0)] * self.ndim
                vals[a] = (lo, hi)
                P = np.pad(self.cells, width, mode="constant", constant_values=vals)
                sl_lo = [slice(None)] * self.ndim
                sl_hi = [slice(None)] * self.ndim
                sl_lo[a] = slice(0, -2)
                sl_hi[a] = slice(2, None)
                lower, upper = P[tuple(sl_lo)], P[tuple(sl_hi)]
                dirichlet_faces += (lower == AIR).astype(np.int64) + (upper == AIR)
                if k is None:
                    diag += (lower != SOLID)
                    diag += (upper != SOLID)
                    coup.append((f & (upper == FLUID)).astype(np.float64))
                    continue
                # neighbour coefficients (edge-replicated: a wall face uses the cell's k)
                Kp = np.pad(k, width, mode="edge")
                k_lo, k_hi = Kp[tuple(sl_lo)], Kp[tuple(sl_hi)]
                for nb, k_nb in ((lower, k_lo), (upper, k_hi)):
                    face = np.where(nb == FLUID, _harmonic(k, k_nb), np.where(nb == AIR, k, 0.0))
                    diag += face
                coup.append(np.where(f & (upper == FLUID), _harmonic(k, k_hi), 0.0))
            diag *= f
            dirichlet_faces *= f
            self._cache["dirichlet_faces"] = dirichlet_faces
            for c in coup:
                c.flags.writeable = False
            diag.flags.writeable = False
            self._cache["stencil"] = (diag, tuple(coup))
        return self._cache["stencil"]

    def _stencil3(self, dtype=np.float64):
        """The stencil as 3-D arrays ``(d, cx, cy, cz)`` for the numba kernels."""
        key = ("stencil3", np.dtype(dtype).str)
        if key not in self._cache:
            diag, coup = self.stencil()
            shape3 = (1,) * (3 - self.ndim) + self.shape
            # writeable copies: numba compiles read-only arrays as a separate signature
            cs = [np.zeros(shape3, dtype=dtype) for _ in range(3 - self.ndim)]
            cs += [np.array(c.reshape(shape3), dtype=dtype, order="C") for c in coup]
            self._cache[key] = (np.array(diag.reshape(shape3), dtype=dtype, order="C"), *cs)
        return self._cache[key]

    def matrix(self, dtype=np.float64):
        """The n x n CSR matrix over all cells (empty rows/columns for non-fluid cells).

        Column indices are sorted; the matrix is symmetric by construction.
        """
        import scipy.sparse as sp

        from neurosolve.backends.stencil_kernels import stencil_csr

        indptr, indices, data = stencil_csr(*self._stencil3())
        A = sp.csr_matrix((data.astype(dtype, copy=False), indices, indptr), shape=(self.n, self.n))
        A.has_sorted_indices = True
        return A

    def operator(self, library: str = "numpy", device: str = "cpu", dtype: Any = None) -> "PoissonOperator":
        """A matrix-free :class:`PoissonOperator` with the action of :meth:`matrix`."""
        return PoissonOperator(self, library=library, device=device, dtype=dtype)

    def diagonal(self) -> np.ndarray:
        """The main diagonal as a flat float64 array."""
        return self.stencil()[0].reshape(-1).copy()

    # -- null space ------------------------------------------------------------------------
    def components(self) -> np.ndarray:
        """Labels (grid-shaped int64) of the fluid regions whose constant is a null vector.

        Fluid cells are grouped into face-connected components; a component touching no
        air cell and no Dirichlet wall gets a label ``0 .. m-1`` (in raster order of its
        first cell); every other cell gets -1.
        """
        if "components" not in self._cache:
            from scipy import ndimage

            self.stencil()
            touches_dirichlet = self.fluid & (self._cache["dirichlet_faces"] > 0)
            lab, m = ndimage.label(self.fluid, structure=ndimage.generate_binary_structure(self.ndim, 1))
            dirichlet_labels = np.unique(lab[touches_dirichlet])
            keep = np.ones(m + 1, dtype=bool)
            keep[0] = False
            keep[dirichlet_labels] = False
            new = np.full(m + 1, -1, dtype=np.int64)
            new[keep] = np.arange(int(keep.sum()))
            out = new[lab]
            out.flags.writeable = False
            self._cache["components"] = out
        return self._cache["components"]

    def nullspace(self) -> Nullspace | None:
        """The :class:`Nullspace` (constants per Neumann component) or None if A is nonsingular."""
        labels = self.components()
        if labels.max(initial=-1) < 0:
            return None
        return Nullspace(labels=labels.reshape(-1))

    # -- systems ---------------------------------------------------------------------------
    def system(self, b: Any, *, matrix_free: bool = False, library: str | None = None,
               device: str | None = None, project_b: bool = False, dtype: Any = None) -> "PoissonSystem":
        """The linear system ``A x = b`` on this grid.

        Parameters
        ----------
        b : array of length n or of the grid's shape (numpy array or torch tensor)
            Right-hand side; flattened in C order. Must vanish on non-fluid cells.
        matrix_free : bool
            Use the stencil :class:`PoissonOperator` instead of the CSR matrix.
        library : {"numpy", "torch"}, optional
            Array library of the system; default: that of ``b``.
        device : str, optional
            Torch device (default: ``b``'s device, or "cpu").
        project_b : bool
            Remove the null-space component of ``b`` (per Neumann component).
        dtype : optional
            Floating dtype of the system (default: ``b``'s floating dtype, else float64).

        Raises
        ------
        ValueError
            ``b`` of the wrong size, or nonzero on solid/air cells.
        """
        if library is None:
            library = "torch" if is_torch(b) else "numpy"
        if library not in ("numpy", "torch"):
            raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")
        if is_torch(b):
            bdev = str(b.device)
            bdtype = b.dtype
            bn = b.detach().cpu().numpy()
        elif isinstance(b, (np.ndarray, list, tuple)):
            bn = np.asarray(b)
            bdev, bdtype = "cpu", bn.dtype
        else:
            raise TypeError(f"b must be a numpy array or torch tensor, got {type(b).__name__}")
        if bn.size != self.n or (bn.ndim > 1 and tuple(bn.shape) != self.shape):
            raise ValueError(f"b has shape {tuple(bn.shape)}; expected {self.n} entries "
                             f"(flat) or the grid shape {self.shape}")
        if not np.issubdtype(bn.dtype, np.floating):
            bn = bn.astype(np.float64)
        bn = bn.reshape(-1)
        nonfluid = ~self.fluid.reshape(-1)
        if nonfluid.any():
            vals = np.abs(bn[nonfluid])
            top = float(vals.max()) if vals.size else 0.0
            scale = float(np.abs(bn).max()) if bn.size else 0.0
            if top > 1e-12 * scale:
                raise ValueError(
                    f"b is nonzero on {int(np.count_nonzero(vals > 1e-12 * scale))} solid/air cells "
                    f"(max |b| there {top:.3g}, max |b| {scale:.3g}); their rows are empty, so b must "
                    "vanish there: use b * grid.fluid.ravel()"
                )
            if top > 0:
                bn = bn.copy()
                bn[nonfluid] = 0.0
        if library == "numpy":
            ndtype = np.dtype(dtype) if dtype is not None else (
                bn.dtype if np.issubdtype(bn.dtype, np.floating) else np.float64)
            bsys = np.ascontiguousarray(bn, dtype=ndtype)
            A = self.operator("numpy", dtype=ndtype) if matrix_free else self.matrix(ndtype)
        else:
            import torch

            tdtype = dtype or (bdtype if is_torch(b) and bdtype.is_floating_point else torch.float64)
            dev = device or bdev
            bsys = torch.as_tensor(bn, dtype=tdtype, device=dev)
            if matrix_free:
                A = self.operator("torch", device=dev, dtype=tdtype)
            else:
                from neurosolve.operators import scipy_to_torch_csr

                A = scipy_to_torch_csr(self.matrix(), dtype=tdtype, device=dev)
        return PoissonSystem(self, A, bsys, nullspace=self.nullspace(), project_b=project_b)


class _SymmetricCSR(MatrixOperator):
    """The gallery's CSR matrix: symmetric by construction (tested), so the O(nnz)
    symmetry check of :class:`LinearSystem` is skipped."""

    def asymmetry(self) -> float:
        return 0.0


class PoissonSystem(LinearSystem):
    """A :class:`~neurosolve.problems.LinearSystem` built by :meth:`CellGrid.system`.

    Attributes
    ----------
    grid : CellGrid
        The geometry (used by :class:`~neurosolve.solvers.preconditioners.GMG` and plots).
    """

    def __init__(self, grid: CellGrid, A: Any, b: Any, *, nullspace: Nullspace | None = None,
                 project_b: bool = False):
        import scipy.sparse as sp

        if sp.issparse(A):
            A = _SymmetricCSR(A, spd=True)
        super().__init__(A, b, spd=True, nullspace=nullspace, project_b=project_b)
        self.grid = grid

    def project_range(self, v):
        """``v`` zeroed on solid and air cells (whose rows of ``A`` are empty: the answer
        is zero there whatever the data) and without its null-space component."""
        mask = self.grid.fluid.reshape(-1)
        if is_torch(v):
            import torch

            v = v * torch.as_tensor(np.array(mask), dtype=v.dtype, device=v.device)
        else:
            v = v * mask
        return super().project_range(v)

    def _with(self, A: Any, b: Any) -> "PoissonSystem":
        return PoissonSystem(self.grid, A, b, nullspace=self.nullspace)

    def reshape(self, x):
        """``x`` (flat) as a grid-shaped array."""
        return x.reshape(self.grid.shape)


class PoissonOperator(LinearOperator):
    """The matrix-free 5/7-point operator of a :class:`CellGrid` (same action as its matrix).

    numpy vectors go through a numba stencil kernel; torch tensors (CPU or CUDA) through
    sliced tensor arithmetic.

    Parameters
    ----------
    grid : CellGrid
    library : {"numpy", "torch"}
    device : str
        Torch device.
    dtype : optional
        Floating dtype (default float64).
    """

    is_linear = True
    is_spd = True

    def __init__(self, grid: CellGrid, library: str = "numpy", device: str = "cpu", dtype: Any = None):
        if library not in ("numpy", "torch"):
            raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")
        self.grid = grid
        self.shape = (grid.n, grid.n)
        self.array_library = library
        self._shape3 = (1,) * (3 - grid.ndim) + grid.shape
        if library == "numpy":
            self.dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float64)
            self.device = "cpu"
            self._st = grid._stencil3(self.dtype)
        else:
            import torch

            self.dtype = dtype or torch.float64
            self.device = str(torch.device(device))
            self._st = tuple(torch.tensor(np.asarray(a), dtype=self.dtype, device=device)
                             for a in grid._stencil3())

    def matvec(self, x):
        if self.array_library == "numpy":
            from neurosolve.backends.stencil_kernels import stencil_matvec

            x = np.asarray(x)
            if x.shape != (self.shape[1],):
                raise ValueError(f"x has shape {x.shape}; expected ({self.shape[1]},)")
            x3 = np.ascontiguousarray(x).reshape(self._shape3)
            y = np.empty(self._shape3, dtype=np.result_type(x.dtype, self.dtype))
            stencil_matvec(*self._st, x3, y)
            return y.reshape(-1)
        return self._torch_matvec(x)

    def _torch_matvec(self, x):
        d, cx, cy, cz = self._st
        x3 = x.reshape(self._shape3)
        y = d * x3
        for axis, c in ((0, cx), (1, cy), (2, cz)):
            if x3.shape[axis] < 2:
                continue
            n = x3.shape[axis]
            c_lo = c.narrow(axis, 0, n - 1)          # coupling (i, i+1), i < n-1
            x_lo = x3.narrow(axis, 0, n - 1)
            x_hi = x3.narrow(axis, 1, n - 1)
            y.narrow(axis, 0, n - 1).sub_(c_lo * x_hi)
            y.narrow(axis, 1, n - 1).sub_(c_lo * x_lo)
        return y.reshape(-1)

    def bind(self, kernels):
        """The matvec with ``kernels.stencil_matvec`` (numpy data) or the tensor path."""
        if self.array_library != "numpy":
            return self._torch_matvec
        stencil, st, shape3, n = kernels.stencil_matvec, self._st, self._shape3, self.shape[1]
        dtype = self.dtype

        def matvec(x):
            if x.shape != (n,):
                raise ValueError(f"x has shape {x.shape}; expected ({n},)")
            y = np.empty(shape3, dtype=np.result_type(x.dtype, dtype))
            stencil(*st, np.ascontiguousarray(x).reshape(shape3), y)
            return y.reshape(-1)

        return matvec

    def diagonal(self):
        d = self._st[0].reshape(-1)
        return d.copy() if self.array_library == "numpy" else d.clone()


def _harmonic(a, b):
    """Elementwise harmonic mean ``2 a b / (a + b)`` (0 where both vanish)."""
    s = a + b
    return np.divide(2.0 * a * b, s, out=np.zeros_like(s, dtype=np.float64), where=s > 0)


def _check_coefficients(coefficients, shape, fluid):
    if coefficients is None:
        return None
    if is_torch(coefficients):
        coefficients = coefficients.detach().cpu().numpy()
    k = np.asarray(coefficients)
    if k.dtype.kind not in "biuf":
        raise TypeError(f"coefficients must be a real numeric array, got dtype {k.dtype}")
    k = np.array(k, dtype=np.float64)
    if k.shape != tuple(shape):
        raise ValueError(f"coefficients must have the grid's shape {tuple(shape)}, got {k.shape}")
    kf = k[fluid]
    if not np.all(np.isfinite(kf)):
        raise ValueError("coefficients must be finite on fluid cells (found NaN or inf)")
    if np.any(kf <= 0):
        raise ValueError(f"coefficients must be > 0 on fluid cells (smallest {kf.min():.3g}); "
                         "close a region with SOLID cells instead of a zero coefficient")
    k[~fluid] = 1.0  # unused; keeps the edge replication of wall faces finite
    k.flags.writeable = False
    return k


# -- geometries -----------------------------------------------------------------------------

def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of 2 or 3 ints, got {shape!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    return shape


def _centres(shape):
    """Cell-centre coordinates per axis (broadcastable), in cell units."""
    return np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij", sparse=True)


def _vec(v, ndim, name):
    v = np.asarray(v, dtype=float).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, ndim)
    if v.size != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {v.size}")
    return v


def box(shape, walls: Any = "neumann") -> CellGrid:
    """An empty box: all cells fluid.

    With Neumann walls the matrix is singular (constant null vector); with Dirichlet walls
    it is the standard ``pyamg.gallery.poisson`` 5/7-point matrix.
    """
    shape = _check_shape(shape)
    return CellGrid(np.zeros(shape, dtype=np.int8), walls=walls)


def sphere(shape, center=None, radius=None, walls: Any = "neumann") -> CellGrid:
    """A box with a solid ball (3-D) or disk (2-D) obstacle.

    Parameters
    ----------
    center : sequence of float, optional
        In cell units (cell i spans [i, i+1]); default the box centre.
    radius : float, optional
        Default a quarter of the smallest side.
    """
    shape = _check_shape(shape)
    c = _vec(center if center is not None else [s / 2 for s in shape], len(shape), "center")
    r = float(radius) if radius is not None else 0.25 * min(shape)
    if r <= 0:
        raise ValueError(f"radius must be positive, got {r}")
    X = _centres(shape)
    dist2 = sum((X[a] - c[a]) ** 2 for a in range(len(shape)))
    cells = np.where(dist2 < r * r, SOLID, FLUID).astype(np.int8)
    return CellGrid(cells, walls=walls)


def cylinder(shape, axis: int | None = None, center=None, radius=None,
             walls: Any = "neumann") -> CellGrid:
    """A box with a solid cylinder spanning the box along ``axis`` (3-D; default the last
    axis). On a 2-D grid the cross-section is the disk of :func:`sphere`.

    ``center`` gives the axis position in the other coordinates (or all coordinates, the
    one along ``axis`` ignored); default the box centre. ``radius`` defaults to a quarter
    of the smallest cross-section side.
    """
    shape = _check_shape(shape)
    nd = len(shape)
    if nd == 2:
        if axis is not None:
            raise ValueError("axis applies to 3-D grids only (a 2-D cylinder is a disk)")
        return sphere(shape, center, radius, walls)
    axis = nd - 1 if axis is None else int(axis)
    if axis not in range(nd):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    others = [a for a in range(nd) if a != axis]
    if center is None:
        c = np.array([shape[a] / 2 for a in others])
    else:
        cc = np.asarray(center, dtype=float).reshape(-1)
        if cc.size == nd:
            c = cc[others]
        elif cc.size == nd - 1:
            c = cc
        else:
            raise ValueError(f"center must have {nd - 1} or {nd} entries, got {cc.size}")
    r = float(radius) if radius is not None else 0.25 * min(shape[a] for a in others)
    if r <= 0:
        raise ValueError(f"radius must be positive, got {r}")
    X = _centres(shape)
    dist2 = sum((X[a] - c[i]) ** 2 for i, a in enumerate(others))
    cells = np.broadcast_to(np.where(dist2 < r * r, SOLID, FLUID), shape).astype(np.int8)
    return CellGrid(cells, walls=walls)


def _random_rotation(rng, nd):
    Q, R = np.linalg.qr(rng.standard_normal((nd, nd)))
    return Q * np.sign(np.diag(R))


def _ellipsoid_mask(shape, rng, n, size, lo=0.15, hi=0.85, top=None):
    """Union of ``n`` random rotated solid ellipsoids (semi-axes ``size`` x min side)."""
    nd = len(shape)
    X = _centres(shape)
    mask = np.zeros(shape, dtype=bool)
    m = min(shape)
    for _ in range(n):
        c = np.array([rng.uniform(lo, hi) * s for s in shape])
        if top is not None:  # keep the centre below a level on the last axis
            c[-1] = rng.uniform(lo * shape[-1], max(lo * shape[-1], top))
        semi = rng.uniform(size[0], size[1], nd) * m
        Q = _random_rotation(rng, nd)
        q = 0.0
        for i in range(nd):
            proj = sum(Q[a, i] * (X[a] - c[a]) for a in range(nd))
            q = q + (proj / semi[i]) ** 2
        mask |= q < 1.0
    return mask


def ellipsoids(shape, n: int = 3, seed: int = 0, walls: Any = "neumann",
               size: tuple[float, float] = (0.08, 0.22)) -> CellGrid:
    """A box with a random union of ``n`` solid, randomly rotated ellipsoids (ellipses in 2-D).

    Centres are uniform in the middle 70% of the box; semi-axes uniform in ``size`` times
    the smallest side. Deterministic in ``seed``.
    """
    shape = _check_shape(shape)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    mask = _ellipsoid_mask(shape, rng, int(n), size)
    return CellGrid(np.where(mask, SOLID, FLUID).astype(np.int8), walls=walls)


def pool(shape, depth: float = 0.6, obstacles: int = 0, seed: int = 0, walls: Any = "neumann",
         waves: float = 0.0) -> CellGrid:
    """A free-surface pool: liquid below a level, AIR above it (the last axis is up).

    Parameters
    ----------
    depth : float in (0, 1]
        Liquid level as a fraction of the height.
    obstacles : int
        Number of random solid ellipsoids placed below the surface.
    waves : float
        Relative amplitude of a random smooth perturbation of the surface height.
    seed : int
        Seeds the obstacles and waves.
    """
    shape = _check_shape(shape)
    if not 0 < depth <= 1:
        raise ValueError(f"depth must be in (0, 1], got {depth}")
    rng = np.random.default_rng(seed)
    nd = len(shape)
    H = shape[-1]
    X = _centres(shape)
    level = depth * H
    if waves:
        pert = 0.0
        for a in range(nd - 1):
            k = rng.integers(1, 4)
            pert = pert + np.sin(2 * np.pi * k * X[a] / shape[a] + rng.uniform(0, 2 * np.pi))
        level = level * (1.0 + waves * pert / max(nd - 1, 1))
    cells = np.where(X[-1] > level, AIR, FLUID).astype(np.int8)
    cells = np.broadcast_to(cells, shape).copy()
    if obstacles:
        mask = _ellipsoid_mask(shape, rng, int(obstacles), (0.06, 0.16), top=0.8 * depth * H)
        cells[mask & (cells == FLUID)] = SOLID
    return CellGrid(cells, walls=walls)


def plates(shape, n_plates: int = 3, slit: float = 0.15, seed: int = 0,
           walls: Any = "dirichlet") -> CellGrid:
    """Thin solid plates, one cell thick, across the first axis, each with one slit.

    The fluid on either side of a plate communicates only through its slit, so the
    solution has near-discontinuities across the plates that smooth coarse-grid
    corrections cannot represent: the thin-feature case of the neural preconditioner
    literature.

    Parameters
    ----------
    n_plates : int
        Plates at evenly spaced positions along axis 0.
    slit : float in (0, 1)
        Width of each plate's opening, as a fraction of the plate's extent along the last
        axis; the openings' positions are random.
    seed : int
    walls : domain walls (default Dirichlet everywhere, so the system is nonsingular).
    """
    shape = _check_shape(shape)
    if not (isinstance(n_plates, (int, np.integer)) and 1 <= n_plates < shape[0]):
        raise ValueError(f"n_plates must be an integer in [1, {shape[0] - 1}], got {n_plates!r}")
    if not 0 < slit < 1:
        raise ValueError(f"slit must be in (0, 1), got {slit!r}")
    rng = np.random.default_rng(seed)
    cells = np.zeros(shape, dtype=np.int8)
    H = shape[-1]
    w = max(1, int(round(slit * H)))
    for i in range(1, n_plates + 1):
        pos = (i * shape[0]) // (n_plates + 1)
        start = int(rng.integers(0, H - w + 1))
        plane = cells[pos]
        plane[...] = SOLID
        plane[..., start:start + w] = FLUID
    return CellGrid(cells, walls=walls)


def random_geometry(shape, seed: int = 0) -> CellGrid:
    """A random gallery geometry, for training-data diversity. Deterministic in ``seed``.

    Draws uniformly one of: empty box, sphere (random centre/radius), cylinder (3-D, random
    axis) or disk, 1-5 random ellipsoids, or a pool (depth 0.4-0.9, 0-3 obstacles, waves
    up to 0.15). Walls are all Neumann (probability 1/2), all Dirichlet (1/4), or Neumann
    with a Dirichlet top face (1/4), so singular and nonsingular matrices, solid and air
    boundaries all occur.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    nd = len(shape)
    u = rng.uniform()
    if u < 0.5:
        walls: Any = "neumann"
    elif u < 0.75:
        walls = "dirichlet"
    else:
        walls = {f"{_AXES[nd - 1]}+": "dirichlet"}
    kind = rng.choice(["box", "sphere", "cylinder", "ellipsoids", "pool"])
    m = min(shape)
    sub = int(rng.integers(0, 2**31 - 1))
    if kind == "box":
        return box(shape, walls=walls)
    if kind == "sphere":
        c = [rng.uniform(0.3, 0.7) * s for s in shape]
        return sphere(shape, center=c, radius=rng.uniform(0.1, 0.3) * m, walls=walls)
    if kind == "cylinder":
        axis = int(rng.integers(0, nd)) if nd == 3 else None
        c = [rng.uniform(0.3, 0.7) * s for s in shape]
        return cylinder(shape, axis=axis, center=c, radius=rng.uniform(0.1, 0.3) * m, walls=walls)
    if kind == "ellipsoids":
        return ellipsoids(shape, n=int(rng.integers(1, 6)), seed=sub, walls=walls)
    return pool(shape, depth=rng.uniform(0.4, 0.9), obstacles=int(rng.integers(0, 4)), seed=sub,
                walls=walls, waves=rng.uniform(0.0, 0.15))


# -- right-hand sides ----------------------------------------------------------------------

def _as_grid(grid_or_shape) -> CellGrid:
    if isinstance(grid_or_shape, CellGrid):
        return grid_or_shape
    return box(grid_or_shape, walls="neumann")


def _finish(grid: CellGrid, v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1) * grid.fluid.reshape(-1)
    ns = grid.nullspace()
    if ns is not None:
        v = ns.project(v)
    nrm = float(np.linalg.norm(v))
    if not nrm > 0 or not math.isfinite(nrm):
        raise ValueError("the right-hand side vanished after restriction to the fluid and "
                         "projection onto the range (a grid without usable fluid cells?)")
    return v / nrm


def rhs_blobs(grid_or_shape, seed: int = 0, n_blobs: int = 4, width: float | None = None) -> np.ndarray:
    """Smoke-like divergence: a sum of dipoles, each the difference of two narrow Gaussians.

    Centres are random fluid cells; the second Gaussian of a dipole sits two widths away
    in a random direction. ``width`` (standard deviation, cells) defaults to
    ``max(1, 0.04 * min(shape))``. A shape instead of a grid means a Neumann box.
    Returns a flat unit vector, zero off the fluid, projected onto the range.
    """
    grid = _as_grid(grid_or_shape)
    if n_blobs < 1:
        raise ValueError(f"n_blobs must be at least 1, got {n_blobs}")
    rng = np.random.default_rng(seed)
    shape = grid.shape
    sig = float(width) if width is not None else max(1.0, 0.04 * min(shape))
    fl = np.flatnonzero(grid.fluid)
    if fl.size == 0:
        raise ValueError("the grid has no fluid cells")
    coords = [np.arange(s) + 0.5 for s in shape]

    def gauss(c):
        g = None
        for a, s in enumerate(shape):
            ga = np.exp(-0.5 * ((coords[a] - c[a]) / sig) ** 2)
            g = ga if g is None else np.multiply.outer(g, ga)
        return g

    v = np.zeros(shape)
    for _ in range(n_blobs):
        idx = np.unravel_index(rng.choice(fl), shape)
        c1 = np.array(idx, dtype=float) + 0.5
        dirn = rng.standard_normal(len(shape))
        dirn /= np.linalg.norm(dirn)
        c2 = c1 + 2.0 * sig * dirn
        v += rng.uniform(0.5, 1.5) * (gauss(c1) - gauss(c2))
    return _finish(grid, v)


def rhs_noise(grid_or_shape, seed: int = 0) -> np.ndarray:
    """White noise on the fluid cells (flat unit vector, projected onto the range)."""
    grid = _as_grid(grid_or_shape)
    rng = np.random.default_rng(seed)
    return _finish(grid, rng.standard_normal(grid.n))


def rhs_lowfreq(grid_or_shape, seed: int = 0, modes: int = 4) -> np.ndarray:
    """A random combination of the lowest ``modes`` cosine modes per axis (DCT-II basis,
    the Neumann box eigenvectors), restricted to the fluid and projected onto the range."""
    grid = _as_grid(grid_or_shape)
    if modes < 1:
        raise ValueError(f"modes must be at least 1, got {modes}")
    rng = np.random.default_rng(seed)
    shape = grid.shape
    C = rng.standard_normal((modes,) * len(shape))
    C.flat[0] = 0.0  # the constant mode
    bases = [np.cos(np.pi * np.outer(np.arange(modes), np.arange(s) + 0.5) / s) for s in shape]
    if len(shape) == 2:
        v = np.einsum("ab,ai,bj->ij", C, *bases, optimize=True)
    else:
        v = np.einsum("abc,ai,bj,ck->ijk", C, *bases, optimize=True)
    return _finish(grid, v)


# -- coefficient fields ------------------------------------------------------------------

def _gaussian_field(shape, correlation, rng):
    """A stationary Gaussian field of unit variance with a Gaussian covariance of length
    ``correlation`` (in cells), by filtering white noise in Fourier space (periodic)."""
    noise = rng.standard_normal(shape)
    freqs = np.meshgrid(*[np.fft.fftfreq(s) for s in shape], indexing="ij")
    k2 = sum(f * f for f in freqs)
    filt = np.exp(-2.0 * (np.pi * correlation) ** 2 * k2)
    g = np.real(np.fft.ifftn(np.fft.fftn(noise) * filt))
    g -= g.mean()
    sd = g.std()
    return g / sd if sd > 0 else g


def lognormal_field(shape, sigma: float = 1.0, correlation: float = 0.1, seed: int = 0) -> np.ndarray:
    """A log-normal random coefficient field ``k = exp(sigma g)``, ``g`` a unit Gaussian
    field with correlation length ``correlation`` (a fraction of the smallest side).

    The standard model of heterogeneous permeability in groundwater and reservoir
    studies; the contrast ``max k / min k`` grows like ``exp(2 sigma * 4)`` roughly
    (``sigma = 2`` gives about 1e6 on a 64^2 grid).

    Examples
    --------
    >>> from neurosolve.problems import poisson
    >>> k = poisson.lognormal_field((32, 32), sigma=1.5, seed=0)
    >>> grid = poisson.box((32, 32), walls="dirichlet").with_coefficients(k)
    >>> grid.variable, k.shape
    (True, (32, 32))
    """
    shape = _check_shape(shape)
    if not (isinstance(sigma, (int, float)) and sigma >= 0 and np.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not (isinstance(correlation, (int, float)) and 0 < correlation <= 1):
        raise ValueError(f"correlation must be in (0, 1] (a fraction of the grid), got {correlation!r}")
    rng = np.random.default_rng(seed)
    g = _gaussian_field(shape, correlation * min(shape), rng)
    return np.exp(sigma * g)


def layered_field(shape, n_layers: int = 8, contrast: float = 1e4, axis: int = -1,
                  channels: int = 2, seed: int = 0) -> np.ndarray:
    """Layers with log-uniform coefficients across ``contrast``, crossed by meandering
    high-coefficient channels: the structure of the SPE10 benchmark's fluvial layers
    (Christie and Blunt, 2001).

    Parameters
    ----------
    shape : sizes
    n_layers : int
        Layers of equal thickness along ``axis``, each with ``log10 k`` uniform in
        ``[-log10(contrast)/2, +log10(contrast)/2]``.
    contrast : float
        ``max k / min k`` (>= 1); the channels take the top value.
    axis : int
        The stacking axis (default the last, "up").
    channels : int
        Sinuous channels per layer-crossing plane running along the first other axis.
    seed : int
    """
    shape = _check_shape(shape)
    if not (isinstance(contrast, (int, float)) and contrast >= 1 and np.isfinite(contrast)):
        raise ValueError(f"contrast must be a finite number >= 1, got {contrast!r}")
    if not (isinstance(n_layers, (int, np.integer)) and n_layers >= 1):
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    nd = len(shape)
    axis = axis % nd
    rng = np.random.default_rng(seed)
    half = 0.5 * np.log10(contrast)
    logk = rng.uniform(-half, half, n_layers)
    pos = (np.arange(shape[axis]) * n_layers) // shape[axis]
    bshape = [1] * nd
    bshape[axis] = shape[axis]
    k = np.broadcast_to((10.0 ** logk[pos]).reshape(bshape), shape).copy()
    along = [a for a in range(nd) if a != axis][0]
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    t = grids[along] / max(shape[along] - 1, 1)
    for _ in range(int(channels)):
        centre = rng.uniform(0.2, 0.8)
        amp, freq, phase = rng.uniform(0.05, 0.2), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
        width = rng.uniform(0.03, 0.07)
        path = centre + amp * np.sin(2 * np.pi * freq * t + phase)
        others = [a for a in range(nd) if a != along]
        dist2 = sum(((grids[a] + 0.5) / shape[a] - (path if a == others[-1] else 0.5)) ** 2
                    * (1.0 if a == others[-1] else 0.05) for a in others)
        k[dist2 < width ** 2] = 10.0 ** half
    return k


def inclusions_field(shape, n: int = 6, contrast: float = 1e4, radius: float = 0.12,
                     seed: int = 0) -> np.ndarray:
    """A unit background with ``n`` spherical inclusions of coefficient ``contrast`` or
    ``1 / contrast`` (alternating): the high-contrast case (1e-4 .. 1e4 by default) on
    which geometric multigrid with linear interpolation loses its grid independence.

    Parameters
    ----------
    shape : sizes
    n : int
        Number of inclusions.
    contrast : float
        The inclusions' coefficient factor (>= 1).
    radius : float
        Largest inclusion radius as a fraction of the smallest side (radii vary in
        ``[radius / 2, radius]``).
    seed : int
    """
    shape = _check_shape(shape)
    if not (isinstance(contrast, (int, float)) and contrast >= 1 and np.isfinite(contrast)):
        raise ValueError(f"contrast must be a finite number >= 1, got {contrast!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not (isinstance(radius, (int, float)) and 0 < radius < 0.5):
        raise ValueError(f"radius must be in (0, 0.5), got {radius!r}")
    rng = np.random.default_rng(seed)
    X = _centres(shape)
    k = np.ones(shape)
    m = min(shape)
    for i in range(int(n)):
        c = rng.uniform(0.2, 0.8, len(shape))
        r = rng.uniform(0.5, 1.0) * radius * m
        inside = sum(((x - ci * s) / 1.0) ** 2 for x, ci, s in zip(X, c, shape)) <= r * r
        k[inside] = contrast if i % 2 == 0 else 1.0 / contrast
    return k
