"""The convex-ReLU family's kernels, chosen once per solve by :func:`select`.

``select(backend)`` returns a :class:`ReLUKernels` table with one signature per entry for
every backend, so ADMM's ``step`` never branches on the backend:

- ``"numpy"`` and ``"torch"``: the references (array expressions that run on numpy arrays
  and torch tensors alike); no numba is imported;
- ``"numba"``: the compiled kernels of :mod:`neurosolve.backends.relu_kernels`.

Each numba kernel is tested against its reference (tests/test_convex_relu*.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = ["ReLUKernels", "select"]

_LOSS_CODE = {"squared": 0, "logistic": 1, "hinge": 2}


class ReLUKernels(NamedTuple):
    """Kernels of ADMM for the convex ReLU program.

    Attributes
    ----------
    name : str
    soft_threshold : ``(A (d, m), kappa) -> A * max(0, 1 - kappa / ||a_j||)`` per column.
    masked_output : ``(XU (n, 2P c), D (n, P), c) -> F u`` of shape ``(n, c)``.
    cone_step : ``(XU, E, E2c, D, W, EabsW, alpha, c) -> (W, EabsW, FU, sums)``: the
        relaxed slack/dual update of the cone splitting, the network output and
        ``sums = (||Gu - s||^2, ||s - s_old||^2, ||Gu||^2, ||s||^2)``.
    robust_cone : ``(Gh, Rh (d, m), eps, q) -> (S, R)``: projection onto the robust cones.
    robust_loss : ``(loss, z, B, y, eps, q, w, rho) -> (z, B)``: the robust loss prox.
    """

    name: str
    soft_threshold: Callable
    masked_output: Callable
    cone_step: Callable
    robust_cone: Callable
    robust_loss: Callable


def _ref_soft(A, kappa):
    from neurosolve.backends.relu_kernels import group_soft_threshold_ref

    return group_soft_threshold_ref(A, kappa)


def _ref_masked(XU, D, c):
    from neurosolve.backends.relu_kernels import masked_output_ref

    return masked_output_ref(XU, D, c)


def _ref_cone_step(XU, E, E2c, D, W, EabsW, alpha, c):
    from neurosolve.core import to_float

    GU = E2c * XU
    s_old = W.clip(min=0)
    Wn = alpha * GU + (1 - alpha) * s_old + W.clip(max=0)
    s_new = Wn.clip(min=0)
    sums = (to_float(((GU - s_new) ** 2).sum()), to_float(((s_new - s_old) ** 2).sum()),
            to_float((GU ** 2).sum()), to_float((s_new ** 2).sum()))
    return Wn, E2c * abs(Wn), _ref_masked(XU, D, c), sums


def _ref_robust_cone(Gh, Rh, eps, q):
    from neurosolve.problems.relu_losses import project_robust_cone

    return project_robust_cone(Gh, Rh, eps, q)


def _ref_robust_loss(loss, z, B, y, eps, q, w, rho):
    from neurosolve.problems.relu_losses import prox_robust_loss

    return prox_robust_loss(loss, z, B, y, eps, q, w, rho)


def _nb_soft(A, kappa):
    from neurosolve.backends.relu_kernels import group_soft_threshold

    return group_soft_threshold(np.ascontiguousarray(A), kappa)


def _nb_masked(XU, D, c):
    from neurosolve.backends.relu_kernels import masked_output

    return masked_output(XU, D, c)


def _nb_cone_step(XU, E, E2c, D, W, EabsW, alpha, c):
    from neurosolve.backends.relu_kernels import cone_update

    EabsW, FU, sums = cone_update(XU, E, W, alpha, c, EabsW)  # W changes in place
    return W, EabsW, FU, sums


def _nb_robust_cone(Gh, Rh, eps, q):
    from neurosolve.backends.relu_kernels import robust_cone_project

    return robust_cone_project(np.ascontiguousarray(Gh), np.ascontiguousarray(Rh), eps, q)


def _nb_robust_loss(loss, z, B, y, eps, q, w, rho):
    from neurosolve.backends.relu_kernels import robust_loss_prox

    return robust_loss_prox(_LOSS_CODE[loss], np.ascontiguousarray(z), np.ascontiguousarray(B),
                            np.ascontiguousarray(y), eps, q, w, rho)


_REF = dict(soft_threshold=_ref_soft, masked_output=_ref_masked, cone_step=_ref_cone_step,
            robust_cone=_ref_robust_cone, robust_loss=_ref_robust_loss)
_TABLES = {
    "numpy": ReLUKernels("numpy", **_REF),
    "torch": ReLUKernels("torch", **_REF),
    "numba": ReLUKernels("numba", _nb_soft, _nb_masked, _nb_cone_step, _nb_robust_cone,
                         _nb_robust_loss),
}


def select(backend: str) -> ReLUKernels:
    """The kernel table for ``backend`` ("numpy", "numba" or "torch").

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.backends.relu_kernel_table import select
    >>> select("numpy").soft_threshold(np.array([[3.0], [4.0]]), 2.5)[:, 0].tolist()
    [1.5, 2.0]
    """
    try:
        return _TABLES[backend]
    except KeyError:
        raise ValueError(f"backend must be 'numpy', 'numba' or 'torch', got {backend!r}") from None
