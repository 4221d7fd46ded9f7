"""Linear (and nonlinear) operators: one duck type for matrices, operators and callables.

:func:`aslinearoperator` accepts dense numpy arrays, scipy sparse matrices, scipy
``LinearOperator`` objects (so ``pyamg.smoothed_aggregation_solver(A).aspreconditioner()``
works unchanged), torch dense or sparse-CSR tensors, and plain callables. Matrices and
LinearOperators are *linear*; callables are *nonlinear* unless declared linear. A torch
``nn.Module`` must go through :class:`neurosolve.neural.TorchPreconditioner`, which
handles reshaping, normalization, eval mode and dtype/device.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from neurosolve.backends import is_torch

__all__ = [
    "LinearOperator",
    "MatrixOperator",
    "ScipyOperator",
    "FunctionOperator",
    "IdentityOperator",
    "aslinearoperator",
]


class LinearOperator:
    """An operator ``x -> A x`` on vectors of length ``shape[1]``.

    Attributes
    ----------
    shape : tuple of int or None
        ``(m, n)``; None for a callable whose size is fixed by the problem it joins.
    dtype : numpy dtype or torch dtype or None
    array_library : {"numpy", "torch"} or None
        The array library the operator consumes (None: either).
    is_linear : bool
        Whether ``matvec`` is linear (CG's recurrence needs a linear preconditioner).
    is_spd : bool or None
        Whether the operator is claimed symmetric positive (semi-)definite.
    """

    shape: tuple[int, int] | None = None
    dtype: Any = None
    array_library: str | None = None
    device: str = "cpu"
    is_linear: bool = True
    is_spd: bool | None = None

    def matvec(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        return self.matvec(x)

    def bind(self, kernels: Any) -> Callable:
        """The ``matvec`` a solver uses with ``kernels`` (a family's ``select(backend)``
        table). Operators with backend-specific kernels (the matrix-free Poisson stencil)
        take theirs from the table; the rest return ``matvec``."""
        return self.matvec

    def diagonal(self):
        """The main diagonal, where the operator knows it."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its diagonal")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} shape={self.shape} linear={self.is_linear} "
                f"spd={self.is_spd} library={self.array_library}>")


class MatrixOperator(LinearOperator):
    """An explicit matrix: dense numpy, scipy sparse (stored as CSR), torch dense/sparse."""

    def __init__(self, A: Any, *, spd: bool | None = None):
        if is_torch(A):
            if A.ndim != 2:
                raise ValueError(f"A must be 2-D, got a tensor of shape {tuple(A.shape)}")
            self.array_library = "torch"
            self.device = str(A.device)
            self.is_sparse = A.layout != _torch().strided
            if A.layout == _torch().sparse_coo:
                A = A.to_sparse_csr()
            self.matrix = A
        else:
            import scipy.sparse as sp

            self.array_library = "numpy"
            if sp.issparse(A):
                A = sp.csr_matrix(A)
                A.sort_indices()
                self.is_sparse = True
            else:
                A = np.asarray(A)
                if A.ndim != 2:
                    raise ValueError(f"A must be 2-D, got an array of shape {A.shape}")
                if not (np.issubdtype(A.dtype, np.number) or A.dtype == bool):
                    raise TypeError(f"A must be numeric, got dtype {A.dtype}")
                self.is_sparse = False
            self.matrix = A
        self.shape = tuple(int(s) for s in self.matrix.shape)
        self.dtype = self.matrix.dtype
        self.is_linear = True
        self.is_spd = spd

    def matvec(self, x):
        return self.matrix @ x

    def diagonal(self):
        A = self.matrix
        if self.array_library == "torch":
            if self.is_sparse:
                import numpy as _np

                d = _np.asarray(_torch_sparse_to_scipy(A).diagonal())
                return _torch().as_tensor(d, dtype=A.dtype, device=A.device)
            return _torch().diagonal(A).clone()
        return np.asarray(A.diagonal()).copy()

    # -- validation helpers used by problems -------------------------------------------
    def all_finite(self) -> bool:
        A = self.matrix
        if self.array_library == "torch":
            vals = A.values() if self.is_sparse else A
            return bool(_torch().isfinite(vals).all())
        vals = A.data if self.is_sparse else A
        return bool(np.all(np.isfinite(vals)))

    def asymmetry(self) -> float:
        """``||A - A^T||_F / ||A||_F`` (0 for a symmetric matrix)."""
        A = self.matrix
        if self.array_library == "torch":
            A = _torch_sparse_to_scipy(A) if self.is_sparse else A.detach().cpu().numpy()
        import scipy.sparse as sp

        if sp.issparse(A):
            diff = sp.linalg.norm(A - A.conj().T) if A.nnz else 0.0
            nrm = sp.linalg.norm(A) if A.nnz else 0.0
        else:
            diff = np.linalg.norm(A - A.conj().T)
            nrm = np.linalg.norm(A)
        return float(diff / nrm) if nrm > 0 else 0.0


class ScipyOperator(LinearOperator):
    """Wraps a ``scipy.sparse.linalg.LinearOperator`` (e.g. pyamg's ``aspreconditioner()``)."""

    def __init__(self, op: Any, *, spd: bool | None = None):
        self.op = op
        self.shape = tuple(int(s) for s in op.shape)
        self.dtype = op.dtype
        self.array_library = "numpy"
        self.is_linear = True
        self.is_spd = spd

    def matvec(self, x):
        return np.asarray(self.op.matvec(x)).reshape(-1)


class FunctionOperator(LinearOperator):
    """A callable ``x -> y``; nonlinear unless declared ``linear=True``."""

    def __init__(self, fn: Callable, *, shape=None, linear: bool = False,
                 spd: bool | None = None, array_library: str | None = None):
        self.fn = fn
        self.shape = shape
        self.is_linear = bool(linear)
        self.is_spd = spd
        self.array_library = array_library

    def matvec(self, x):
        return self.fn(x)


def checked(fn: Callable, name: str, n: int, like: Any, *, finite: bool = True) -> Callable:
    """``fn`` with its output validated: fully on the first call, by shape after.

    The first output must be a vector of length ``n`` in the array library of ``like``
    (numpy or torch, on its device), of a real floating dtype, and finite; later outputs
    must keep the length (a cheap check). Errors name the callable (``name``) and say
    what it returned. Used for every user-supplied operator and preconditioner;
    ``finite=False`` leaves NaN/inf to the solver (a status or a fallback step).
    """
    from neurosolve.backends import is_torch

    want_torch = is_torch(like)
    first = [True]

    def describe(y):
        return f"{type(y).__name__} of shape {tuple(getattr(y, 'shape', ()))}" \
            f"{' and dtype ' + str(y.dtype) if hasattr(y, 'dtype') else ''}"

    def call(x):
        y = fn(x)
        if first[0]:
            if is_torch(y) != want_torch or not hasattr(y, "shape"):
                lib = "torch tensor" if want_torch else "numpy array"
                raise TypeError(f"{name}(x) returned a {describe(y)}; expected a {lib} like x")
            if want_torch:
                import torch

                ok = y.dtype.is_floating_point and not y.dtype.is_complex
                if str(y.device) != str(like.device):
                    raise TypeError(f"{name}(x) returned a tensor on {y.device}; x is on "
                                    f"{like.device}")
            else:
                ok = np.issubdtype(y.dtype, np.floating)
            if not ok:
                raise TypeError(f"{name}(x) returned dtype {y.dtype}; expected a real floating "
                                "dtype")
            if tuple(y.shape) != (n,):
                raise ValueError(f"{name}(x) returned shape {tuple(y.shape)}; expected ({n},)")
            ok_values = not finite or (bool(torch.isfinite(y).all()) if want_torch
                                       else bool(np.isfinite(y).all()))
            if not ok_values:
                raise ValueError(f"{name}(x) returned NaN or inf on the first call (x finite); "
                                 f"check {name}")
            first[0] = False
        elif y.shape[0] != n or y.ndim != 1:
            raise ValueError(f"{name}(x) returned shape {tuple(y.shape)}; expected ({n},)")
        return y

    return call


class IdentityOperator(LinearOperator):
    """The identity (no preconditioning)."""

    def __init__(self, n: int | None = None):
        self.shape = (n, n) if n is not None else None
        self.is_linear = True
        self.is_spd = True

    def matvec(self, x):
        return x


def _torch():
    import torch

    return torch


def _torch_sparse_to_scipy(A):
    import scipy.sparse as sp

    A = A.detach().cpu()
    if A.layout != _torch().sparse_csr:
        A = A.to_sparse_csr()
    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()),
                         shape=tuple(A.shape))


def torch_csr(crow_indices: Any, col_indices: Any, values: Any, size: tuple[int, int], *,
              device: Any = None):
    """A torch sparse CSR tensor, built the one way the library builds them.

    The indices are trusted (they come from scipy or from the gallery), so torch's invariant
    check is skipped explicitly (``check_invariants=False``) and its "sparse CSR support is
    in beta" warning is silenced: neither reaches users.
    """
    import warnings

    torch = _torch()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size=size,
                                       device=device, check_invariants=False)


def scipy_to_torch_csr(A: Any, *, dtype: Any = None, device: Any = "cpu"):
    """A scipy sparse matrix as a torch sparse CSR tensor (``dtype`` default float64)."""
    import scipy.sparse as sp

    torch = _torch()
    C = sp.csr_matrix(A)
    return torch_csr(torch.as_tensor(C.indptr, dtype=torch.int64),
                     torch.as_tensor(C.indices, dtype=torch.int64),
                     torch.as_tensor(C.data, dtype=dtype or torch.float64), C.shape,
                     device=device)


def aslinearoperator(A: Any, *, linear: bool | None = None, spd: bool | None = None,
                     shape: tuple[int, int] | None = None) -> LinearOperator:
    """Wrap ``A`` as a :class:`LinearOperator`.

    Parameters
    ----------
    A : array, sparse matrix, LinearOperator, tensor or callable
        Dense numpy arrays, scipy sparse matrices, scipy ``LinearOperator``s (pyamg's
        ``aspreconditioner()`` included), torch dense/sparse tensors, neurosolve
        operators, or a callable ``x -> y``.
    linear : bool, optional
        Declare a callable linear (callables are nonlinear by default). Ignored for
        matrices, which are always linear; ``linear=False`` on a matrix is an error.
    spd : bool, optional
        Claim that the operator is symmetric positive (semi-)definite.
    shape : tuple, optional
        Shape of a callable operator.

    Returns
    -------
    LinearOperator

    Raises
    ------
    TypeError
        For a torch ``nn.Module`` (wrap it in :class:`neurosolve.neural.TorchPreconditioner`)
        or an object that is none of the above.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.operators import aslinearoperator
    >>> op = aslinearoperator(np.eye(3))
    >>> op.is_linear, op.shape
    (True, (3, 3))
    >>> aslinearoperator(lambda r: 2 * r).is_linear
    False
    """
    if isinstance(A, LinearOperator):
        if spd is not None:
            A.is_spd = spd
        if linear is not None and linear != A.is_linear and not isinstance(A, FunctionOperator):
            raise ValueError(f"linear={linear} contradicts the operator's own flag {A.is_linear}")
        if linear is not None and isinstance(A, FunctionOperator):
            A.is_linear = bool(linear)
        return A
    torch = __import__("sys").modules.get("torch")
    if torch is not None and isinstance(A, torch.nn.Module):
        raise TypeError(
            f"a torch nn.Module ({type(A).__name__}) cannot be used as an operator directly; "
            "wrap it: neurosolve.neural.TorchPreconditioner(model, grid=...) handles reshaping, "
            "normalization, eval mode and dtype/device"
        )
    if linear is False and not callable(A):
        raise ValueError("matrices are linear operators; linear=False only applies to callables")
    if is_torch(A) or isinstance(A, np.ndarray):
        return MatrixOperator(A, spd=spd)
    mod = type(A).__module__ or ""
    if mod.startswith("scipy.sparse"):
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        if sp.issparse(A):
            return MatrixOperator(A, spd=spd)
        if isinstance(A, spla.LinearOperator):
            return ScipyOperator(A, spd=spd)
    try:
        import scipy.sparse.linalg as spla

        if isinstance(A, spla.LinearOperator):
            return ScipyOperator(A, spd=spd)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(A, (list, tuple)):
        return MatrixOperator(np.asarray(A, dtype=float), spd=spd)
    if callable(A):
        return FunctionOperator(A, shape=shape, linear=bool(linear), spd=spd)
    raise TypeError(
        f"cannot interpret {type(A).__name__} as a linear operator; expected a numpy array, "
        "scipy sparse matrix or LinearOperator, torch tensor, or a callable"
    )
