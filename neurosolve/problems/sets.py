"""Closed convex sets with Euclidean projections.

Every set offers ``project(w)`` (the nearest point of the set, for a 1-D numpy array or
torch tensor), ``violation(w)`` (how far ``w`` is from satisfying the set's description,
0 inside) and ``contains(w, tol)``. They are the feasible sets ``X``, ``Y`` and ``C`` of
:class:`neurosolve.problems.Bilevel`, and are usable on their own.

=================  ==================================  ====================================
set                description                         projection
=================  ==================================  ====================================
``Reals``          all of R^d                          identity
``Box``            ``lower <= w <= upper``             clipping (closed form)
``HalfSpace``      ``a^T w <= b``                      closed form
``Affine``         ``A w = b``                         ``w - A^+ (A w - b)`` (pseudo-inverse)
``Ball``           ``||w - center|| <= radius``        closed form
``Product``        ``S_1 x S_2 x ...``                 block by block
``Intersection``   ``S_1 ∩ S_2 ∩ ...``                 Dykstra's alternating projections
``Polyhedron``     ``A_ub w <= b_ub, A_eq w = b_eq,``  a QP solved by Clarabel
                   ``lower <= w <= upper``             (closed form where it reduces)
``Custom``         a user-supplied projection          the user's function
=================  ==================================  ====================================

A set described by a *nonlinear* function (``{w : g(w) <= 0}``) has no generic
projection; :func:`sublevel` turns an affine ``g`` into a :class:`Polyhedron` and refuses
anything else with a message saying whether ``g`` looked non-convex.

References
----------
.. [1] J. P. Boyle, R. L. Dykstra, "A method for finding projections onto the intersection
   of convex sets in Hilbert spaces", Lecture Notes in Statistics 37, 1986.
.. [2] P. J. Goulart, Y. Chen, "Clarabel: An interior-point solver for conic programs with
   quadratic objectives", arXiv:2405.12762, 2024.

Examples
--------
>>> import numpy as np
>>> from neurosolve.problems import sets
>>> H = sets.HalfSpace(np.array([1.0, 1.0]), 1.0)
>>> H.project(np.array([2.0, 2.0]))
array([0.5, 0.5])
>>> S = sets.Intersection(H, sets.Box(0.0, 0.3, dim=2))
>>> np.round(S.project(np.array([2.0, 2.0])), 6)
array([0.3, 0.3])
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from neurosolve.backends.ops import to_numpy as _to_numpy_any
from neurosolve.backends import is_torch

__all__ = [
    "ConvexSet",
    "Reals",
    "Box",
    "HalfSpace",
    "Affine",
    "Ball",
    "Product",
    "Intersection",
    "Polyhedron",
    "Custom",
    "NonConvexSetError",
    "as_set",
    "sublevel",
]


class EmptySetError(ValueError):
    """A set, typically an :class:`Intersection`, that has no point."""


class NonConvexSetError(ValueError):
    """Raised when a set is (or looks) non-convex, so no projection method applies."""


def _as_vector(v: Any, name: str, dim: int | None = None) -> np.ndarray:
    if is_torch(v):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=float)
    if a.ndim == 0:
        if dim is None:
            raise ValueError(f"{name} is a scalar; pass dim= to give the set's dimension")
        a = np.full(dim, float(a))
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if dim is not None and a.shape[0] != dim:
        raise ValueError(f"{name} has length {a.shape[0]}; expected {dim}")
    return a


def _as_matrix(A: Any, name: str) -> np.ndarray:
    if is_torch(A):
        A = A.detach().cpu().numpy()
    if hasattr(A, "toarray"):  # scipy sparse
        A = A.toarray()
    A = np.asarray(A, dtype=float)
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return A


class ConvexSet:
    """Base class: a closed convex subset of R^dim with a Euclidean projection.

    Subclasses implement ``_project_numpy`` (and may override ``project`` for torch);
    the default torch path converts to numpy and back (a host round trip).
    """

    dim: int
    is_convex: bool = True
    kind: str = "custom"

    def project(self, w):
        """The point of the set nearest to ``w`` (a new array/tensor, same type as ``w``)."""
        self._check_dim(w)
        if is_torch(w):
            import torch

            out = self._project_numpy(w.detach().cpu().numpy().astype(float))
            return torch.as_tensor(out, dtype=w.dtype, device=w.device)
        return self._project_numpy(np.asarray(w, dtype=float))

    def _project_numpy(self, w: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def violation(self, w) -> float:
        """Largest violation of the set's description at ``w`` (0 inside)."""
        v = _to_numpy(w)
        return float(np.linalg.norm(v - self._project_numpy(v)))

    def distance(self, w) -> float:
        """Euclidean distance from ``w`` to the set."""
        v = _to_numpy(w)
        return float(np.linalg.norm(v - self._project_numpy(v)))

    def contains(self, w, tol: float = 1e-9) -> bool:
        """True when ``violation(w) <= tol * (1 + ||w||_inf)``."""
        v = _to_numpy(w)
        scale = 1.0 + (float(np.max(np.abs(v))) if v.size else 0.0)
        return self.violation(v) <= tol * scale

    def _check_dim(self, w) -> None:
        shape = tuple(w.shape)
        if shape != (self.dim,):
            raise ValueError(f"{type(self).__name__} lives in R^{self.dim}; got a vector of shape {shape}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dim={self.dim}>"


class _TorchCache:
    """numpy parameters converted once per (device, dtype) for the torch paths."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, key: str, arr: np.ndarray, like):
        import torch

        k = (key, str(like.device), like.dtype)
        t = self._cache.get(k)
        if t is None:
            t = torch.as_tensor(arr, dtype=like.dtype, device=like.device)
            self._cache[k] = t
        return t


class Reals(ConvexSet):
    """All of R^dim (no constraint)."""

    kind = "reals"

    def __init__(self, dim: int):
        if not isinstance(dim, (int, np.integer)) or dim < 0:
            raise ValueError(f"dim must be a non-negative integer, got {dim!r}")
        self.dim = int(dim)

    def project(self, w):
        self._check_dim(w)
        return w.clone() if is_torch(w) else np.array(w, dtype=float, copy=True)

    def _project_numpy(self, w):
        return np.array(w, copy=True)

    def violation(self, w) -> float:
        return 0.0


class Box(ConvexSet):
    """``{w : lower <= w <= upper}`` (entries may be -inf / +inf).

    Parameters
    ----------
    lower, upper : float or array of shape (dim,)
    dim : int, optional
        Needed when both bounds are scalars.
    """

    kind = "box"

    def __init__(self, lower: Any = -np.inf, upper: Any = np.inf, *, dim: int | None = None):
        if dim is None:
            for v in (lower, upper):
                if np.ndim(v if not is_torch(v) else v.detach().cpu().numpy()) == 1:
                    dim = len(v)
                    break
        self.lower = _as_vector(lower, "lower", dim)
        self.upper = _as_vector(upper, "upper", dim)
        self.dim = self.lower.shape[0]
        if np.any(np.isnan(self.lower)) or np.any(np.isnan(self.upper)):
            raise ValueError("Box bounds contain NaN")
        if np.any(self.lower > self.upper):
            i = int(np.argmax(self.lower > self.upper))
            raise ValueError(f"Box is empty: lower[{i}] = {self.lower[i]} > upper[{i}] = {self.upper[i]}")
        self._t = _TorchCache()

    def project(self, w):
        self._check_dim(w)
        if is_torch(w):
            import torch

            return torch.minimum(torch.maximum(w, self._t.get("lo", self.lower, w)),
                                 self._t.get("hi", self.upper, w))
        return np.minimum(np.maximum(w, self.lower), self.upper)

    def _project_numpy(self, w):
        return np.minimum(np.maximum(w, self.lower), self.upper)

    def violation(self, w) -> float:
        v = _to_numpy(w)
        if v.size == 0:
            return 0.0
        return float(max(np.max(self.lower - v, initial=0.0), np.max(v - self.upper, initial=0.0)))


class HalfSpace(ConvexSet):
    """``{w : a^T w <= b}``, projected in closed form: ``w - max(0, a^T w - b) a / ||a||^2``."""

    kind = "halfspace"

    def __init__(self, a: Any, b: float):
        self.a = _as_vector(a, "a")
        self.dim = self.a.shape[0]
        self.b = float(b)
        self.a_sq = float(self.a @ self.a)
        if self.a_sq == 0.0:
            raise ValueError("HalfSpace normal a is zero; the set is empty or all of R^dim")
        if not np.isfinite(self.b):
            raise ValueError(f"HalfSpace offset b must be finite, got {b!r}")
        self._t = _TorchCache()

    def project(self, w):
        self._check_dim(w)
        if is_torch(w):
            a = self._t.get("a", self.a, w)
            excess = (a @ w - self.b).clamp(min=0.0)
            return w - (excess / self.a_sq) * a
        excess = max(float(self.a @ w) - self.b, 0.0)
        return w - (excess / self.a_sq) * self.a

    def _project_numpy(self, w):
        excess = max(float(self.a @ w) - self.b, 0.0)
        return w - (excess / self.a_sq) * self.a

    def violation(self, w) -> float:
        return max(float(self.a @ _to_numpy(w)) - self.b, 0.0)


class Affine(ConvexSet):
    """``{w : A w = b}``, projected with the pseudo-inverse: ``w - A^+ (A w - b)``.

    ``A`` may be rank deficient; the system must be consistent (checked at construction).
    """

    kind = "affine"

    def __init__(self, A: Any, b: Any, *, rcond: float = 1e-12):
        self.A = _as_matrix(A, "A")
        self.b = _as_vector(b, "b", self.A.shape[0])
        self.dim = self.A.shape[1]
        self.pinv = np.linalg.pinv(self.A, rcond=rcond)
        w0 = self.pinv @ self.b
        res = float(np.linalg.norm(self.A @ w0 - self.b))
        if res > 1e-8 * (1.0 + float(np.linalg.norm(self.b))):
            raise ValueError(
                f"Affine set is empty: A w = b has no solution (least-squares residual {res:.2e}); "
                "b must lie in the range of A"
            )
        self._t = _TorchCache()

    def project(self, w):
        self._check_dim(w)
        if is_torch(w):
            A = self._t.get("A", self.A, w)
            P = self._t.get("P", self.pinv, w)
            b = self._t.get("b", self.b, w)
            return w - P @ (A @ w - b)
        return w - self.pinv @ (self.A @ w - self.b)

    def _project_numpy(self, w):
        return w - self.pinv @ (self.A @ w - self.b)

    def violation(self, w) -> float:
        v = _to_numpy(w)
        return float(np.max(np.abs(self.A @ v - self.b), initial=0.0))


class Ball(ConvexSet):
    """``{w : ||w - center|| <= radius}``."""

    kind = "ball"

    def __init__(self, center: Any, radius: float, *, dim: int | None = None):
        self.center = _as_vector(center, "center", dim)
        self.dim = self.center.shape[0]
        if not (np.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be finite and non-negative, got {radius!r}")
        self.radius = float(radius)

    def _project_numpy(self, w):
        d = w - self.center
        nd = float(np.linalg.norm(d))
        if nd <= self.radius:
            return np.array(w, copy=True)
        return self.center + d * (self.radius / nd)

    def violation(self, w) -> float:
        return max(float(np.linalg.norm(_to_numpy(w) - self.center)) - self.radius, 0.0)


class Product(ConvexSet):
    """The Cartesian product ``S_1 x S_2 x ...``, on the concatenated vector."""

    kind = "product"

    def __init__(self, *parts: ConvexSet):
        if not parts:
            raise ValueError("Product needs at least one set")
        self.parts = tuple(as_set(p, None, name=f"part {i}") for i, p in enumerate(parts))
        self.offsets = np.cumsum([0] + [p.dim for p in self.parts])
        self.dim = int(self.offsets[-1])

    def project(self, w):
        self._check_dim(w)
        pieces = [p.project(w[int(a):int(b)]) for p, a, b in
                  zip(self.parts, self.offsets[:-1], self.offsets[1:])]
        if is_torch(w):
            import torch

            return torch.cat(pieces)
        return np.concatenate(pieces)

    def _project_numpy(self, w):
        return self.project(w)

    def violation(self, w) -> float:
        v = _to_numpy(w)
        return max((p.violation(v[int(a):int(b)]) for p, a, b in
                    zip(self.parts, self.offsets[:-1], self.offsets[1:])), default=0.0)


class Intersection(ConvexSet):
    """``S_1 ∩ S_2 ∩ ...`` projected by Dykstra's alternating projections [1]_.

    Dykstra's method converges to the exact projection (plain alternating projections
    only find *a* point of the intersection). It stops when one sweep changes the iterate
    by less than ``tol * (1 + ||w||)``; after ``maxiter`` sweeps it warns and returns the
    current point. Several :class:`Affine` parts are merged into one first.

    Parameters
    ----------
    *parts : ConvexSet
    maxiter : int
    tol : float
    """

    kind = "intersection"

    def __init__(self, *parts: ConvexSet, maxiter: int = 10000, tol: float = 1e-12):
        if not parts:
            raise ValueError("Intersection needs at least one set")
        parts = tuple(as_set(p, None, name=f"part {i}") for i, p in enumerate(parts))
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"Intersection parts live in different dimensions: {sorted(dims)}")
        affine = [p for p in parts if isinstance(p, Affine)]
        others = [p for p in parts if not isinstance(p, Affine)]
        if len(affine) > 1:
            affine = [Affine(np.vstack([p.A for p in affine]), np.concatenate([p.b for p in affine]))]
        self.parts = tuple(others + affine)
        self.dim = dims.pop()
        self.maxiter = int(maxiter)
        self.tol = float(tol)
        self.last_sweeps = 0

    def _project_numpy(self, w):
        if len(self.parts) == 1:
            return self.parts[0]._project_numpy(w)
        x = np.array(w, dtype=float, copy=True)
        incs = [np.zeros_like(x) for _ in self.parts]
        scale = 1.0 + float(np.linalg.norm(w))
        for sweep in range(1, self.maxiter + 1):
            x_old = x.copy()
            for i, S in enumerate(self.parts):
                y = x + incs[i]
                x = S._project_numpy(y)
                incs[i] = y - x
            if float(np.linalg.norm(x - x_old)) <= self.tol * scale:
                self.last_sweeps = sweep
                return self._feasible(x, scale)
        self.last_sweeps = self.maxiter
        self._feasible(x, scale)
        warnings.warn(
            f"Dykstra's projection did not converge in {self.maxiter} sweeps (last change "
            f"{np.linalg.norm(x - x_old):.2e}); raise Intersection(maxiter=...) or describe the "
            "set as a Polyhedron", RuntimeWarning, stacklevel=3)
        return x

    def _feasible(self, x, scale):
        """``x`` if it lies in every part (to 1e-6 relative); else the sets do not meet."""
        gaps = [p.violation(x) for p in self.parts]
        worst = int(np.argmax(gaps))
        if gaps[worst] > 1e-6 * scale:
            raise EmptySetError(
                f"the intersection looks empty: Dykstra's projection ends at a point that "
                f"violates part {worst} ({type(self.parts[worst]).__name__}) by "
                f"{gaps[worst]:.3e} (relative {gaps[worst] / scale:.1e}); check that the "
                "constraints can hold together")
        return x

    def violation(self, w) -> float:
        v = _to_numpy(w)
        return max(p.violation(v) for p in self.parts)


class Polyhedron(ConvexSet):
    """``{w : A_ub w <= b_ub, A_eq w = b_eq, lower <= w <= upper}``.

    The projection ``argmin ||u - w||^2 / 2`` over the polyhedron is a QP, solved with
    Clarabel [2]_ (interior point, tolerance ``tol``); the solver is set up once and only
    its linear term changes between calls. Descriptions that reduce to one
    :class:`HalfSpace`, an :class:`Affine` set or a :class:`Box` use the closed forms; up to
    64 inequality rows (bounds included) of full row rank and no equalities use the exact
    dual, a non-negative least-squares problem (Lawson-Hanson, a numba kernel).

    Parameters
    ----------
    A_ub, b_ub : matrix (k, dim) and vector (k,), optional
    A_eq, b_eq : matrix (q, dim) and vector (q,), optional
    lower, upper : float or vector, optional
    dim : int, optional
        Needed when no matrix gives it.
    tol : float
        Clarabel's feasibility and gap tolerances.
    """

    kind = "polyhedron"

    def __init__(self, A_ub=None, b_ub=None, A_eq=None, b_eq=None, lower=None, upper=None, *,
                 dim: int | None = None, tol: float = 1e-10):
        if (A_ub is None) != (b_ub is None):
            raise ValueError("A_ub and b_ub must be given together")
        if (A_eq is None) != (b_eq is None):
            raise ValueError("A_eq and b_eq must be given together")
        import scipy.sparse as sp

        def mat(A, name):
            if A is None:
                return None
            if is_torch(A):
                A = A.detach().cpu().numpy()
            M = sp.csr_matrix(A, dtype=float) if not sp.issparse(A) else A.tocsr().astype(float)
            if M.ndim != 2:
                raise ValueError(f"{name} must be 2-D")
            if M.shape[0] == 0:
                return None
            return M

        self.A_ub = mat(A_ub if A_ub is None or np.ndim(A_ub) != 1 else np.atleast_2d(A_ub), "A_ub")
        self.A_eq = mat(A_eq if A_eq is None or np.ndim(A_eq) != 1 else np.atleast_2d(A_eq), "A_eq")
        dims = {M.shape[1] for M in (self.A_ub, self.A_eq) if M is not None}
        if dim is not None:
            dims.add(int(dim))
        for v in (lower, upper):
            if v is not None and np.ndim(v) == 1:
                dims.add(len(v))
        if len(dims) != 1:
            raise ValueError(f"Polyhedron pieces disagree on the dimension (or none gives it): {sorted(dims)}")
        self.dim = dims.pop()
        self.b_ub = None if self.A_ub is None else _as_vector(b_ub, "b_ub", self.A_ub.shape[0])
        self.b_eq = None if self.A_eq is None else _as_vector(b_eq, "b_eq", self.A_eq.shape[0])
        self.lower = _as_vector(-np.inf if lower is None else lower, "lower", self.dim)
        self.upper = _as_vector(np.inf if upper is None else upper, "upper", self.dim)
        if np.any(self.lower > self.upper):
            raise ValueError("Polyhedron bounds are inconsistent (lower > upper)")
        self.tol = float(tol)
        self._fast = self._closed_form()
        self._solver = None
        self._fallback_cvxpy = False

    def _closed_form(self):
        has_bounds = bool(np.any(np.isfinite(self.lower)) or np.any(np.isfinite(self.upper)))
        if self.A_ub is None and self.A_eq is None:
            return Box(self.lower, self.upper)
        if has_bounds:
            return None
        if self.A_eq is None and self.A_ub.shape[0] == 1:
            return HalfSpace(self.A_ub.toarray()[0], self.b_ub[0])
        if self.A_ub is None:
            return Affine(self.A_eq.toarray(), self.b_eq)
        return None

    # -- the QP ---------------------------------------------------------------------------
    def _setup(self):
        import clarabel
        import scipy.sparse as sp

        rows, rhs, cones = [], [], []
        if self.A_eq is not None:
            rows.append(self.A_eq)
            rhs.append(self.b_eq)
            cones.append(clarabel.ZeroConeT(self.A_eq.shape[0]))
        ineq_rows, ineq_rhs = [], []
        if self.A_ub is not None:
            ineq_rows.append(self.A_ub)
            ineq_rhs.append(self.b_ub)
        fin_u = np.isfinite(self.upper)
        fin_l = np.isfinite(self.lower)
        I = sp.identity(self.dim, format="csr")
        if fin_u.any():
            ineq_rows.append(I[fin_u])
            ineq_rhs.append(self.upper[fin_u])
        if fin_l.any():
            ineq_rows.append(-I[fin_l])
            ineq_rhs.append(-self.lower[fin_l])
        if ineq_rows:
            k = sum(M.shape[0] for M in ineq_rows)
            rows.extend(ineq_rows)
            rhs.extend(ineq_rhs)
            cones.append(clarabel.NonnegativeConeT(k))
        A = sp.vstack(rows, format="csc")
        b = np.concatenate(rhs)
        P = sp.identity(self.dim, format="csc")
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.presolve_enable = False
        settings.tol_gap_abs = self.tol
        settings.tol_gap_rel = self.tol
        settings.tol_feas = self.tol
        settings.tol_ktratio = self.tol
        self._clarabel_args = (P, A, b, cones, settings)
        self._solver = clarabel.DefaultSolver(P, np.zeros(self.dim), A, b, cones, settings)

    def _dual_nnls_setup(self):
        """For a few inequality rows of full row rank: the projection's dual is an NNLS."""
        self._nnls = False
        if self.A_eq is not None or self.A_ub is None:
            return
        rows = [self.A_ub.toarray()]
        rhs = [self.b_ub]
        I = np.eye(self.dim)
        fin_u, fin_l = np.isfinite(self.upper), np.isfinite(self.lower)
        if fin_u.any():
            rows.append(I[fin_u])
            rhs.append(self.upper[fin_u])
        if fin_l.any():
            rows.append(-I[fin_l])
            rhs.append(-self.lower[fin_l])
        A = np.vstack(rows)
        if A.shape[0] > 64:
            return
        K = A @ A.T
        ev = np.linalg.eigvalsh(K)
        if ev[0] <= 1e-10 * max(ev[-1], 1.0):
            return
        self._nnls = (np.ascontiguousarray(A), np.concatenate(rhs), np.ascontiguousarray(K))

    def _project_nnls(self, w):
        from neurosolve.backends.lvhba_kernels import nnls_gram

        A, b, K = self._nnls
        r = A @ w - b
        if np.all(r <= 0):
            return np.array(w, copy=True)
        mu = nnls_gram(K, r, 1e-14 * (1.0 + float(np.abs(r).max())), 50 * A.shape[0])
        return w - A.T @ mu

    def _project_numpy(self, w):
        if self._fast is not None:
            return self._fast._project_numpy(w)
        if not hasattr(self, "_nnls"):
            self._dual_nnls_setup()
        if self._nnls:
            return self._project_nnls(np.asarray(w, dtype=float))
        if self.violation(w) == 0.0:
            return np.array(w, dtype=float, copy=True)
        if self._solver is None:
            self._setup()
        import clarabel

        q = -np.asarray(w, dtype=float)
        try:
            self._solver.update(q=q)
        except Exception:  # pragma: no cover - older Clarabel without data updates
            P, A, b, cones, settings = self._clarabel_args
            self._solver = clarabel.DefaultSolver(P, q, A, b, cones, settings)
        sol = self._solver.solve()
        status = str(sol.status)
        if "Infeasible" in status:
            raise EmptySetError(
                "Polyhedron is empty: Clarabel reports the projection QP infeasible; check "
                "A_ub/b_ub, A_eq/b_eq and the bounds"
            )
        if not ("Solved" in status):
            warnings.warn(f"Polyhedron projection: Clarabel returned status {status}",
                          RuntimeWarning, stacklevel=3)
        return self._polish(np.asarray(w, dtype=float), np.asarray(sol.x, dtype=float),
                            np.asarray(sol.z, dtype=float))

    def _rows(self):
        if not hasattr(self, "_all_rows"):
            import scipy.sparse as sp

            I = sp.identity(self.dim, format="csr")
            rows, rhs, eq = [], [], []
            if self.A_eq is not None:
                rows.append(self.A_eq)
                rhs.append(self.b_eq)
                eq.append(np.ones(self.A_eq.shape[0], bool))
            if self.A_ub is not None:
                rows.append(self.A_ub)
                rhs.append(self.b_ub)
                eq.append(np.zeros(self.A_ub.shape[0], bool))
            for fin, M, v in ((np.isfinite(self.upper), I, self.upper),
                              (np.isfinite(self.lower), -I, -self.lower)):
                if fin.any():
                    rows.append(M[fin])
                    rhs.append(v[fin])
                    eq.append(np.zeros(int(fin.sum()), bool))
            self._all_rows = (sp.vstack(rows, format="csr"), np.concatenate(rhs), np.concatenate(eq))
        return self._all_rows

    def _polish(self, w, u, duals=None):
        """Refine the interior-point answer: solve the KKT system on a guessed active set.

        Candidate active sets come from the solver's multipliers and from a residual
        threshold; the first whose exact solution is feasible with non-negative
        multipliers wins (else the interior-point answer is returned). Each candidate
        costs one sparse factorization of ``A_act A_act^T``.
        """
        import scipy.sparse.linalg as spla

        M, rhs, eq = self._rows()
        res = M @ u - rhs
        sc = 1.0 + float(np.max(np.abs(u), initial=0.0))
        cands = []
        if duals is not None and duals.shape == res.shape:
            dm = float(np.max(np.abs(duals), initial=0.0))
            if dm > 0:
                cands.append(eq | (duals > 1e-6 * dm))
        for t in (1e-8, 1e-6, 1e-4):
            cands.append(eq | (res >= -t * sc))
        seen = set()
        for act in cands:
            key = act.tobytes()
            if key in seen or not act.any() or act.sum() > self.dim:
                continue
            seen.add(key)
            Aa = M[act]
            try:
                lu = spla.splu((Aa @ Aa.T).tocsc())
                mu = lu.solve(Aa @ w - rhs[act])
            except RuntimeError:  # singular: the candidate rows are dependent
                continue
            p = w - Aa.T @ mu
            tol = 1e-11 * (1.0 + float(np.max(np.abs(p), initial=0.0)))
            r = M @ p - rhs
            mtol = 1e-9 * (1.0 + float(np.max(np.abs(mu), initial=0.0)))
            if (np.all(np.isfinite(p)) and np.all(r[~eq] <= tol) and np.all(np.abs(r[eq]) <= tol)
                    and np.all(mu[~eq[act]] >= -mtol)):
                return p
        return u

    def violation(self, w) -> float:
        v = _to_numpy(w)
        out = 0.0
        if self.A_ub is not None:
            out = max(out, float(np.max(self.A_ub @ v - self.b_ub, initial=0.0)))
        if self.A_eq is not None:
            out = max(out, float(np.max(np.abs(self.A_eq @ v - self.b_eq), initial=0.0)))
        out = max(out, float(np.max(self.lower - v, initial=0.0)), float(np.max(v - self.upper, initial=0.0)))
        return out


class Custom(ConvexSet):
    """A set known only through a user-supplied projection ``project(w) -> w'``.

    The caller vouches that the set is closed and convex. ``contains`` (optional) tests
    membership; without it, membership is ``||project(w) - w|| <= tol``.
    """

    kind = "custom"

    def __init__(self, project: Callable, dim: int, *, violation: Callable | None = None):
        if not callable(project):
            raise TypeError(f"project must be callable, got {type(project).__name__}")
        self._fn = project
        self.dim = int(dim)
        self._violation = violation

    def project(self, w):
        self._check_dim(w)
        out = self._fn(w)
        if tuple(out.shape) != (self.dim,):
            raise ValueError(f"the projection returned shape {tuple(out.shape)}; expected ({self.dim},)")
        return out

    def _project_numpy(self, w):
        return np.asarray(self._fn(w), dtype=float)

    def violation(self, w) -> float:
        if self._violation is not None:
            return float(self._violation(w))
        return super().violation(w)


def as_set(obj: Any, dim: int | None, *, name: str = "C") -> ConvexSet:
    """Turn ``obj`` into a :class:`ConvexSet` of dimension ``dim`` (None: any).

    Accepts a ``ConvexSet``, ``None`` (all of R^dim) or a callable projection. Anything
    else (a matrix, a list, a set object without a projection) raises ``TypeError``; a set
    declaring ``is_convex = False`` raises :class:`NonConvexSetError`.
    """
    if obj is None:
        if dim is None:
            raise ValueError(f"{name}: None needs a known dimension")
        return Reals(dim)
    if isinstance(obj, ConvexSet):
        S = obj
    elif callable(obj) and not isinstance(obj, type):
        if dim is None:
            raise ValueError(f"{name}: a projection callable needs a known dimension")
        S = Custom(obj, dim)
    else:
        raise TypeError(
            f"{name} must be a convex set with a projection (a neurosolve.problems.sets object such "
            f"as Box, HalfSpace, Affine, Polyhedron, Intersection, or a callable w -> Proj(w)); "
            f"got {type(obj).__name__}"
        )
    if not getattr(S, "is_convex", True):
        raise NonConvexSetError(
            f"{name} is declared non-convex; its projection is not unique and projected "
            "gradient methods (LV-HBA) do not apply"
        )
    if dim is not None and S.dim != dim:
        raise ValueError(f"{name} lives in R^{S.dim}; expected R^{dim}")
    return S


def sublevel(g: Callable, dim: int, *, point: Any = None, equality: bool = False,
             seed: int = 0, name: str = "g") -> ConvexSet:
    """The set ``{w : g(w) <= 0}`` (or ``= 0``) when ``g`` is affine; refuse otherwise.

    ``g`` maps a vector of length ``dim`` to a vector (or scalar). Affinity is tested
    numerically (the Jacobian by finite differences at random points, and
    ``g(u) + J (v - u) = g(v)``). A non-affine ``g`` raises :class:`NonConvexSetError`:
    the message says whether a midpoint-convexity probe found ``g`` non-convex (then the
    set is not convex and LV-HBA's projection is ill-posed) or ``g`` merely nonlinear
    (then supply a projection with :class:`Custom`).

    Returns
    -------
    ConvexSet
        A :class:`HalfSpace`, :class:`Affine` or :class:`Polyhedron`.
    """
    rng = np.random.default_rng(seed)
    base = np.zeros(dim) if point is None else _to_numpy(point)
    scale = 1.0 + float(np.max(np.abs(base), initial=0.0))

    def G(w):
        return np.atleast_1d(np.asarray(g(w), dtype=float)).reshape(-1)

    info = affine_probe(G, dim, base, scale, rng)
    if info["affine"]:
        A, c = info["A"], info["c"]  # g(w) = A w + c
        if equality:
            return Affine(A, -c)
        if A.shape[0] == 1:
            return HalfSpace(A[0], -c[0])
        return Polyhedron(A, -c)
    raise NonConvexSetError(nonaffine_message(name, info))


def affine_probe(G: Callable, dim: int, base: np.ndarray, scale: float, rng) -> dict:
    """Test numerically whether ``G`` (R^dim -> R^l) is affine; probe convexity if not.

    Returns a dict with ``affine`` (bool), and ``A``, ``c`` (``G(w) = A w + c``) when it is,
    otherwise ``convex_violation`` (the largest midpoint-convexity violation found).
    """
    u = base + scale * rng.standard_normal(dim)
    v = base + scale * rng.standard_normal(dim)
    gu = G(u)
    h = 1e-3 * scale
    J = np.empty((gu.shape[0], dim))
    for j in range(dim):
        e = np.zeros(dim)
        e[j] = h
        J[:, j] = (G(u + e) - G(u - e)) / (2 * h)
    pred = gu + J @ (v - u)
    gv = G(v)
    err = float(np.max(np.abs(pred - gv), initial=0.0))
    ref = 1.0 + float(np.max(np.abs(gv), initial=0.0)) + float(np.max(np.abs(gu), initial=0.0))
    if err <= 1e-6 * ref:
        return {"affine": True, "A": J, "c": gu - J @ u}
    worst = 0.0
    for _ in range(64):
        a = base + scale * rng.standard_normal(dim)
        b = base + scale * rng.standard_normal(dim)
        worst = max(worst, float(np.max(G(0.5 * (a + b)) - 0.5 * (G(a) + G(b)), initial=0.0)))
    return {"affine": False, "convex_violation": worst, "affine_error": err}


def nonaffine_message(name: str, info: dict) -> str:
    if info.get("convex_violation", 0.0) > 1e-9:
        return (
            f"the constraint set {{{name}(x, y) <= 0}} is not convex: {name} fails the midpoint "
            f"convexity test (violation {info['convex_violation']:.3g}). LV-HBA needs C to be "
            "convex, with a projection; a non-convex coupled constraint is outside its theory "
            "(use a method without projections, e.g. BiC-GAFFA, or reformulate)"
        )
    return (
        f"{name} is nonlinear, so neurosolve cannot project onto {{{name}(x, y) <= 0}} by itself. "
        "C must be convex and projectable: pass C= (a neurosolve.problems.sets object, e.g. "
        "sets.Custom(project, dim)) describing the joint set"
    )


def _to_numpy(a) -> np.ndarray:
    return np.asarray(_to_numpy_any(a), dtype=float)
