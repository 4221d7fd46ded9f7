"""Linear systems ``A x = b`` with SPD (or singular SPSD) operators."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends import common_library, is_torch
from neurosolve.operators import LinearOperator, MatrixOperator, aslinearoperator

__all__ = ["LinearSystem", "Nullspace"]


class Nullspace:
    """The null space of a singular SPSD operator and the projection onto its complement.

    Either ``labels`` (one integer per unknown: unknowns with equal non-negative labels
    form a component whose constant vector is in the null space; -1 marks unknowns outside
    every such component) or an orthonormal ``basis`` of shape (n, m).

    Parameters
    ----------
    labels : array of int, optional
    basis : array of shape (n, m), optional
    """

    def __init__(self, *, labels: Any = None, basis: Any = None):
        if (labels is None) == (basis is None):
            raise ValueError("Nullspace needs exactly one of labels= or basis=")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
        self.basis = None if basis is None else basis
        if self.labels is not None:
            self.n_components = int(self.labels.max()) + 1 if self.labels.size else 0
            mask = self.labels >= 0
            self._idx = np.nonzero(mask)[0]
            self._lab = self.labels[mask]
            self._counts = np.bincount(self._lab, minlength=self.n_components).astype(float)
            self._torch_cache: dict = {}
        else:
            self.n_components = int(basis.shape[1])

    @property
    def dim(self) -> int:
        return self.n_components

    def project(self, v):
        """``v`` minus its null-space component (a copy; numpy or torch)."""
        if self.basis is not None:
            B = self.basis
            return v - B @ (B.T.conj() @ v)
        if is_torch(v):
            import torch

            key = str(v.device)
            if key not in self._torch_cache:
                self._torch_cache[key] = (torch.as_tensor(self._idx, device=v.device),
                                          torch.as_tensor(self._lab, device=v.device),
                                          torch.as_tensor(self._counts, device=v.device))
            idx, lab, counts = self._torch_cache[key]
            sums = torch.zeros(self.n_components, dtype=v.dtype, device=v.device)
            sums.index_add_(0, lab, v[idx])
            out = v.clone()
            out[idx] -= (sums / counts.to(v.dtype))[lab]
            return out
        sums = np.bincount(self._lab, weights=v[self._idx], minlength=self.n_components)
        out = np.array(v, copy=True)
        out[self._idx] -= (sums / self._counts)[self._lab]
        return out

    def component_norm(self, v) -> float:
        """Norm of the null-space component of ``v``."""
        from neurosolve.core import to_float

        if self.basis is not None:
            c = self.basis.T.conj() @ v
            return to_float((c.conj() * c).sum() ** 0.5) if is_torch(c) else float(np.linalg.norm(c))
        if is_torch(v):
            return to_float(__import__("torch").linalg.vector_norm(v - self.project(v)))
        sums = np.bincount(self._lab, weights=v[self._idx], minlength=self.n_components)
        return float(np.sqrt(np.sum(sums**2 / self._counts)))


class LinearSystem:
    """The linear system ``A x = b``.

    Parameters
    ----------
    A : array, sparse matrix, LinearOperator, tensor or callable
        The operator (see :func:`neurosolve.operators.aslinearoperator`).
    b : array of shape (n,)
        Right-hand side, numpy array or torch tensor (the library of the answer).
    spd : bool, default True
        Claim that ``A`` is symmetric positive (semi-)definite. For explicit matrices the
        symmetry is verified (``||A - A^T||_F <= 1e-10 ||A||_F``).
    nullspace : Nullspace, optional
        For singular SPSD ``A``: its null space. ``b`` must be compatible (orthogonal to
        it); CG reports ``Status.INFEASIBLE`` otherwise, or pass ``project_b=True``.
    project_b : bool, default False
        Remove the null-space component of ``b`` at construction.

    Raises
    ------
    ValueError
        Non-square ``A``, ``b`` of the wrong size, NaN/inf in ``A`` or ``b``, a
        nonsymmetric ``A`` claimed SPD.
    TypeError
        ``A`` and ``b`` from different array libraries.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.problems import LinearSystem
    >>> p = LinearSystem(np.diag([1.0, 2.0]), np.ones(2))
    >>> p.certificate(np.array([1.0, 0.5]))["relative_residual"]
    0.0
    """

    def __init__(self, A: Any, b: Any, *, spd: bool = True, nullspace: Nullspace | None = None,
                 project_b: bool = False):
        self._operator = A  # the user's object: what a warm start is checked against
        op = aslinearoperator(A, spd=spd if not isinstance(A, LinearOperator) else None)
        if isinstance(A, LinearOperator) and op.is_spd is None:
            op.is_spd = spd
        self.array_library = common_library(op if op.array_library else None, b,
                                            names=("A", "b"))
        if not (is_torch(b) or isinstance(b, np.ndarray)):
            if isinstance(b, (list, tuple)):
                b = np.asarray(b, dtype=float)
            else:
                raise TypeError(f"b must be a numpy array or torch tensor, got {type(b).__name__}")
        if b.ndim != 1:
            raise ValueError(f"b must be a 1-D vector, got shape {tuple(b.shape)}")
        b = _floating(b, "b")
        if isinstance(op, MatrixOperator):
            op.matrix = _floating(op.matrix, "A")
            op.dtype = op.matrix.dtype
            if is_torch(b) and is_torch(op.matrix) and op.matrix.dtype != b.dtype:
                raise TypeError(f"A has dtype {op.matrix.dtype} but b has {b.dtype}; convert "
                                "one of them (e.g. A.to(b.dtype)) so both match")
        n = int(b.shape[0])
        if n == 0:
            raise ValueError("b is empty; a linear system needs at least one unknown")
        if op.shape is not None:
            if op.shape[0] != op.shape[1]:
                raise ValueError(f"A must be square, got shape {op.shape}")
            if op.shape[1] != n:
                raise ValueError(f"b has length {n} but A has shape {op.shape}; they must match")
        else:
            op.shape = (n, n)
        if isinstance(op, MatrixOperator):
            if not op.all_finite():
                raise ValueError("A contains NaN or inf entries")
            if spd and op.asymmetry() > _symmetry_tol(op.dtype):
                raise ValueError(
                    f"A was passed as SPD (spd=True) but is not symmetric "
                    f"(||A - A^T|| / ||A|| = {op.asymmetry():.2e}); pass spd=False for a "
                    "nonsymmetric matrix (CG needs a symmetric positive definite A)"
                )
        finite = bool(__import__("torch").isfinite(b).all()) if is_torch(b) else bool(np.all(np.isfinite(b)))
        if not finite:
            raise ValueError("b contains NaN or inf entries")
        if is_torch(b):
            self.device = str(b.device)
            if op.array_library == "torch" and op.device != self.device:
                raise ValueError(f"A is on {op.device} but b is on {self.device}; move one of them")
        else:
            self.device = "cpu"
        if nullspace is not None and not isinstance(nullspace, Nullspace):
            raise TypeError("nullspace must be a neurosolve.problems.Nullspace")
        self.nullspace = nullspace
        self.b_incompatibility = 0.0
        if nullspace is not None:
            if project_b:
                b = nullspace.project(b)
            bn = float(np.linalg.norm(_to_numpy(b)))
            self.b_incompatibility = nullspace.component_norm(b) / bn if bn > 0 else 0.0
        self.A = op
        self.b = b
        self.n = n
        self.spd = spd

    @classmethod
    def from_csr(cls, crow_indices, col_indices, values, b, *, spd: bool = True,
                 nullspace: Nullspace | None = None, project_b: bool = False) -> "LinearSystem":
        """A system whose matrix is given by its CSR arrays, with ``values`` a torch tensor
        that may carry autograd.

        The solver iterates on a CSR tensor of the detached values; the implicit adjoint
        (``solve(..., adjoint="implicit")``) differentiates ``A x - b`` with respect to
        ``values`` directly. Building ``torch.sparse_csr_tensor(crow, col, values)`` from
        values that require grad works too, but torch's backward through that constructor
        is slow (it dominated the gradient's cost at 64^2 in ``benchmarks/bench_implicit.py``).

        Examples
        --------
        >>> import torch
        >>> from neurosolve.problems import LinearSystem
        >>> v = torch.tensor([2.0, -1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
        >>> p = LinearSystem.from_csr(torch.tensor([0, 2, 4]), torch.tensor([0, 1, 0, 1]), v,
        ...                           torch.ones(2, dtype=torch.float64))
        >>> p.n, p.A.matrix.layout
        (2, torch.sparse_csr)
        """
        import torch

        if not torch.is_tensor(values):
            raise TypeError(f"values must be a torch tensor, got {type(values).__name__}")
        crow = torch.as_tensor(crow_indices, dtype=torch.int64, device=values.device)
        col = torch.as_tensor(col_indices, dtype=torch.int64, device=values.device)
        if crow.ndim != 1 or col.shape != values.shape or values.ndim != 1:
            raise ValueError(f"crow_indices (n + 1,), col_indices and values (nnz,) must be 1-D "
                             f"with matching nnz; got {tuple(crow.shape)}, {tuple(col.shape)}, "
                             f"{tuple(values.shape)}")
        n = int(crow.shape[0]) - 1
        from neurosolve.operators import torch_csr

        A = torch_csr(crow, col, values.detach(), (n, n))
        system = cls(A, b, spd=spd, nullspace=nullspace, project_b=project_b)
        system._csr_values = values
        return system

    @property
    def dtype(self):
        return self.b.dtype

    def fingerprint(self) -> tuple:
        """Type, size, dtype and the identity of the operator (not of ``b``: a warm start
        with a new right-hand side is legitimate, the solver recomputes the residual)."""
        return (self.n, str(self.dtype), self.array_library, self._operator)

    def residual(self, x):
        """``b - A x``."""
        return self.b - self.A.matvec(x)

    def optimality(self, x):
        """``A x - b`` computed with torch autograd through the entries of ``A`` and ``b``.

        The optimality condition that :mod:`neurosolve.adjoint` differentiates: for a
        sparse CSR ``A`` the product runs over the stored entries only (so a CSR ``A``
        that requires grad receives a CSR gradient on its own pattern, stored zeros
        included); a callable ``A`` is called as is (gradients reach the tensors it uses).
        """
        if self.array_library != "torch":
            raise TypeError("optimality needs torch data (autograd); this system holds numpy")
        return _autograd_matvec(self.A, x, getattr(self, "_csr_values", None)) - self.b

    def project_range(self, v):
        """``v`` without its null-space component (``v`` itself for a nonsingular system):
        the right-hand sides this system can be solved for."""
        return v if self.nullspace is None else self.nullspace.project(v)

    def certificate(self, x) -> dict[str, float]:
        """True residual of ``x``, recomputed from scratch with the reference kernels.

        Returns ``residual_norm`` (``||b - A x||``), ``relative_residual`` (over ``||b||``,
        or the plain norm when b = 0) and, for singular systems, ``b_incompatibility``
        (relative size of b's null-space component, the residual floor).
        """
        from neurosolve.backends.linear_kernels import select

        # the numpy reference kernels: independent of the kernels the solver ran
        r = _to_numpy(self.b - self.A.bind(select("numpy"))(x))
        bn = float(np.linalg.norm(_to_numpy(self.b)))
        rn = float(np.linalg.norm(r))
        cert = {"residual_norm": rn, "relative_residual": rn / bn if bn > 0 else rn}
        if self.nullspace is not None:
            cert["b_incompatibility"] = self.b_incompatibility
        return cert

    def to(self, library: str | None = None, dtype: Any = None, *,
           device: str | None = None) -> "LinearSystem":
        """A copy of the system in another array library, dtype or device.

        Parameters
        ----------
        library : {"torch", "numpy"} or a torch device string, optional
            ``"torch"``: ``A`` as a torch sparse CSR (or dense) tensor and ``b`` as a
            tensor; ``"numpy"``: back to scipy/numpy. A device string (``"cpu"``,
            ``"cuda"``, ``"cuda:1"``) means torch on that device.
        dtype : numpy or torch dtype, optional
            Default: float64 (or the dtype of a torch ``b``).
        device : str, optional
            Torch device (default: that of a torch ``b``, else ``"cpu"``).
            ``device="numpy"`` is the same as ``library="numpy"``.

        Returns
        -------
        LinearSystem
            Of the same kind (a gallery :class:`PoissonSystem` keeps its grid).

        Raises
        ------
        TypeError
            A matrix-free operator (only explicit matrices can move).

        Examples
        --------
        >>> from neurosolve.problems import poisson
        >>> grid = poisson.sphere((8, 8, 8))
        >>> pt = grid.system(poisson.rhs_blobs(grid)).to("torch")
        >>> pt.A.matrix.layout, str(pt.b.dtype), type(pt).__name__
        (torch.sparse_csr, 'torch.float64', 'PoissonSystem')
        """
        if not isinstance(self.A, MatrixOperator):
            raise TypeError("only systems with an explicit matrix can be converted with .to()")
        if library not in (None, "torch", "numpy"):
            if not isinstance(library, str) or device is not None:
                raise ValueError(f"library must be 'torch', 'numpy' or a torch device string, "
                                 f"got {library!r}")
            library, device = "torch", library
        if device == "numpy":
            library, device = "numpy", None
        import torch

        from neurosolve.operators import _torch_sparse_to_scipy, scipy_to_torch_csr

        A = self.A.matrix
        if library == "numpy":
            if is_torch(A):
                A = _torch_sparse_to_scipy(A) if self.A.is_sparse else A.cpu().numpy()
            b = _to_numpy(self.b)
            return self._with(A, b if dtype is None else b.astype(dtype))
        tdtype = dtype or (self.b.dtype if is_torch(self.b) else torch.float64)
        dev = device or (self.device if is_torch(self.b) else "cpu")
        if is_torch(A):
            At = A.to(device=dev, dtype=tdtype)
        elif hasattr(A, "tocsr"):
            At = scipy_to_torch_csr(A, dtype=tdtype, device=dev)
        else:
            At = torch.as_tensor(A, dtype=tdtype, device=dev)
        bt = torch.as_tensor(_to_numpy(self.b), dtype=tdtype, device=dev)
        return self._with(At, bt)

    def _with(self, A: Any, b: Any) -> "LinearSystem":
        """The same kind of system with another matrix and right-hand side."""
        return LinearSystem(A, b, spd=self.spd, nullspace=self.nullspace)


def _autograd_matvec(op, x, values=None):
    """``A x`` as torch operations autograd can differentiate with respect to ``A``'s
    entries: dense and COO by ``@``, CSR by a product over its stored entries (``values``
    replaces the stored values: :meth:`LinearSystem.from_csr`)."""
    import torch

    if isinstance(op, MatrixOperator):
        A = op.matrix
        if A.layout == torch.sparse_csr:
            crow, col = A.crow_indices(), A.col_indices()
            rows = torch.repeat_interleave(torch.arange(A.shape[0], device=x.device),
                                           crow.diff())
            vals = A.values() if values is None else values
            return torch.zeros(A.shape[0], dtype=x.dtype, device=x.device).index_add(
                0, rows, vals * x[col])
        return A @ x
    fn = getattr(op, "fn", None)
    if fn is None:
        raise TypeError(f"a {type(op).__name__} operator cannot be differentiated; pass a torch "
                        "tensor (dense or sparse CSR) or a torch callable as A")
    return fn(x)


def _to_numpy(v):
    from neurosolve.backends.ops import to_numpy

    return to_numpy(v)


def _floating(a, name):
    """Integer/bool data as float64; floating and complex data unchanged."""
    if is_torch(a):
        import torch

        if a.dtype == torch.bool or not (a.dtype.is_floating_point or a.dtype.is_complex):
            return a.to(torch.float64)
        return a
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        return a
    if dtype == bool or np.issubdtype(dtype, np.integer):
        return a.astype(np.float64)
    if not np.issubdtype(dtype, np.inexact):
        raise TypeError(f"{name} must be numeric, got dtype {dtype}")
    return a


def _symmetry_tol(dtype) -> float:
    """Relative asymmetry accepted as rounding for ``dtype`` (float32: 1e-5, else 1e-10)."""
    name = str(dtype)
    return 1e-5 if ("float32" in name or "complex64" in name or "float16" in name) else 1e-10
