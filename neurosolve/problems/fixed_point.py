"""Fixed-point problems ``z = F(z)``, real or complex, on numpy arrays or torch tensors.

A :class:`FixedPointProblem` holds the map ``F`` and a template/starting state ``z0``;
its certificate is the residual ``||F(z) - z||`` recomputed from scratch. With
``batched=True`` the leading axis indexes independent systems (one per sample, as in the
relaxation of a recurrent network on a mini-batch): residuals are then measured per row
and the certificate reports the worst row.

The default solver is :class:`neurosolve.solvers.FixedPoint` (damped iteration, damping
0.5); ``FixedPoint(method="anderson")`` accelerates it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from neurosolve.backends import array_library, is_torch

__all__ = ["FixedPointProblem", "row_norms"]


def row_norms(a: Any, batched: bool):
    """Euclidean norm of each row (``batched``) or of the whole array, as a 1-d array/tensor.

    Works for real and complex data (the modulus is used), numpy or torch.
    """
    if is_torch(a):
        import torch

        flat = a.reshape(a.shape[0], -1) if batched else a.reshape(1, -1)
        return torch.linalg.vector_norm(flat, dim=1)
    flat = a.reshape(a.shape[0], -1) if batched else a.reshape(1, -1)
    return np.linalg.norm(flat, axis=1)


class FixedPointProblem:
    """The fixed-point problem ``z = F(z)``.

    Parameters
    ----------
    F : callable
        ``F(z)`` returns an array of the same shape (and array library) as ``z``. It may be
        nonlinear and complex-valued; a real map evaluated at a complex state must return
        the holomorphic continuation (as the equilibrium-propagation relaxations do).
    z0 : numpy array or torch tensor
        The starting point and the template for shape, dtype, array library and device.
        Real or complex.
    batched : bool, default False
        The leading axis indexes independent systems ``z_b = F(z)_b`` (``F`` must act
        row-wise). Residuals, convergence and Anderson mixing are then per row.
    validate : bool, default True
        Evaluate ``F(z0)`` once to check its shape, dtype and library.
    name : str, optional
        A label for reports.

    Raises
    ------
    TypeError
        ``F`` is not callable, ``z0`` is not a numpy array / torch tensor, or ``F`` returns
        a different array library.
    ValueError
        ``z0`` has NaN/inf, ``batched=True`` with a 0-d ``z0``, or ``F(z0)`` has a
        different shape.

    Notes
    -----
    The certificate ``certificate(z)`` returns ``residual`` (the largest row norm of
    ``F(z) - z``; the whole-array norm when not batched), ``relative_residual`` (each row
    residual divided by that row's ``||z||``, worst row) and ``finite`` (1.0 or 0.0).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.problems.fixed_point import FixedPointProblem
    >>> prob = FixedPointProblem(np.cos, np.zeros(1))
    >>> res = ns.solve(prob, ns.solvers.FixedPoint(method="anderson", atol=1e-12))
    >>> res.status.name, round(float(res.x[0]), 6)
    ('CONVERGED', 0.739085)
    """

    def __init__(self, F: Callable[[Any], Any], z0: Any, *, batched: bool = False,
                 validate: bool = True, name: str = "fixed_point"):
        if not callable(F):
            raise TypeError(f"F must be callable (z -> F(z)), got {type(F).__name__}")
        lib = array_library(z0)
        if lib not in ("numpy", "torch") or np.isscalar(z0):
            raise TypeError(
                f"z0 must be a numpy array or torch tensor, got {type(z0).__name__}"
            )
        if lib == "numpy":
            z0 = np.asarray(z0)
            if not (np.issubdtype(z0.dtype, np.floating) or np.issubdtype(z0.dtype, np.complexfloating)):
                z0 = z0.astype(np.float64)
        else:
            if not (z0.dtype.is_floating_point or z0.dtype.is_complex):
                raise TypeError(f"z0 must be a floating or complex tensor, got dtype {z0.dtype}")
        if batched and len(z0.shape) < 1:
            raise ValueError("batched=True needs z0 with a leading batch axis (ndim >= 1)")
        finite = bool(np.all(np.isfinite(z0))) if lib == "numpy" else bool(
            __import__("torch").isfinite(z0).all())
        if not finite:
            raise ValueError("z0 contains NaN or infinity; start from a finite state")
        self.F = F
        self.z0 = z0
        self.batched = bool(batched)
        self.name = name
        self.array_library = lib
        self.device = str(z0.device) if lib == "torch" else "cpu"
        if validate:
            g = F(z0)
            glib = array_library(g)
            if glib != lib:
                raise TypeError(f"F returned a {glib or type(g).__name__} value for a {lib} state; "
                                "F must stay in the state's array library")
            if tuple(g.shape) != tuple(z0.shape):
                raise ValueError(
                    f"F(z0) has shape {tuple(g.shape)} but z0 has shape {tuple(z0.shape)}; "
                    "F must map a state to a state of the same shape"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.z0.shape)

    @property
    def n_rows(self) -> int:
        return int(self.z0.shape[0]) if self.batched else 1

    def residual_rows(self, z: Any, Fz: Any | None = None):
        """Per-row residual norms ``||F(z)_b - z_b||`` (1-d array/tensor)."""
        if Fz is None:
            Fz = self.F(z)
        return row_norms(Fz - z, self.batched)

    def optimality(self, z):
        """``F(z) - z``, the condition :mod:`neurosolve.adjoint` differentiates (torch
        autograd reaches the tensors ``F`` uses)."""
        return self.F(z) - z

    def certificate(self, z: Any) -> dict[str, float]:
        """Residual of ``z``, recomputed with one evaluation of ``F``."""
        Fz = self.F(z)
        res = self.residual_rows(z, Fz)
        zn = row_norms(z, self.batched)
        if is_torch(res):
            res = res.detach().cpu().numpy()
            zn = zn.detach().cpu().numpy()
        res = np.asarray(res, dtype=float)
        zn = np.asarray(zn, dtype=float)
        finite = bool(np.all(np.isfinite(res)))
        rel = res / np.maximum(zn, np.finfo(float).tiny)
        return {
            "residual": float(np.max(res)) if res.size else 0.0,
            "relative_residual": float(np.max(rel)) if rel.size else 0.0,
            "finite": 1.0 if finite else 0.0,
        }

    def __repr__(self) -> str:
        return (f"FixedPointProblem(name={self.name!r}, shape={self.shape}, "
                f"dtype={self.z0.dtype}, library={self.array_library}, batched={self.batched})")
