"""Holomorphic activations for equilibrium propagation, on real or complex numpy/torch arrays.

Generalized (holomorphic) EP evaluates the network at complex nudges, so every activation
used with ``n_points >= 3`` must be the analytic continuation of a real function and must
never call non-holomorphic operations (``abs``, ``max`` of complex numbers, clipping).
The logistic function is evaluated as ``1/(1+exp(-z))`` for ``Re z >= 0`` and
``exp(z)/(1+exp(z))`` otherwise: the same analytic function, with ``|exp(.)| <= 1`` so
nothing overflows.

=================  ====================================  =====================  ===========
name               formula                               singularities          holomorphic
=================  ====================================  =====================  ===========
``sigmoid``        ``1 / (1 + exp(-4 z + 2))``            poles at ``Im z = +-pi/4``  yes
``dsilu``          ``z s(z)/2 + (1 - z/2) s(z - 2)``      poles at ``Im z = +-pi``    yes
``tanh``           ``tanh(z)``                            poles at ``Im z = +-pi/2``  yes
``hard_sigmoid``   ``clip(z, 0, 1)``                      --                     no
=================  ====================================  =====================  ===========

References
----------
.. [1] A. Laborieux, F. Zenke, "Holomorphic equilibrium propagation computes exact
   gradients through finite size oscillations", NeurIPS 2022, arXiv:2209.00530.
.. [2] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from neurosolve.backends import ops as xp

__all__ = ["Activation", "sigmoid", "dsilu", "tanh", "hard_sigmoid", "get_activation",
           "logistic"]


def logistic(z):
    """The logistic function ``1/(1+exp(-z))``, overflow-free and holomorphic."""
    pos = xp.real(z) >= 0
    t = xp.exp(xp.where(pos, -z, z))
    return xp.where(pos, 1.0 / (1.0 + t), t / (1.0 + t))


@dataclass(frozen=True)
class Activation:
    """A pointwise activation with its derivative.

    Attributes
    ----------
    name : str
    fn, deriv : callable
        ``fn(z)`` and ``fn'(z)`` on numpy arrays or torch tensors, real or complex.
    holomorphic : bool
        Whether ``fn`` is analytic (required for complex nudges, ``n_points >= 3``).
    """

    name: str
    fn: Callable[[Any], Any]
    deriv: Callable[[Any], Any]
    holomorphic: bool = True

    def __call__(self, z):
        return self.fn(z)


def _sig4(z):
    return logistic(4.0 * z - 2.0)


def _sig4_d(z):
    s = logistic(4.0 * z - 2.0)
    return 4.0 * s * (1.0 - s)


def _dsilu(z):
    return 0.5 * z * logistic(z) + (1.0 - 0.5 * z) * logistic(z - 2.0)


def _dsilu_d(z):
    s1 = logistic(z)
    s2 = logistic(z - 2.0)
    return 0.5 * s1 + 0.5 * z * s1 * (1 - s1) - 0.5 * s2 + (1.0 - 0.5 * z) * s2 * (1 - s2)


def _tanh(z):
    if xp.lib(z) == "torch":
        import torch

        return torch.tanh(z)
    return np.tanh(z)


def _tanh_d(z):
    t = _tanh(z)
    return 1.0 - t * t


def _hard(z):
    if xp.is_complex(z):
        raise TypeError("hard_sigmoid is not holomorphic and cannot take complex states")
    if xp.lib(z) == "torch":
        return z.clamp(0.0, 1.0)
    return np.clip(z, 0.0, 1.0)


def _hard_d(z):
    if xp.lib(z) == "torch":
        return ((z > 0) & (z < 1)).to(z.dtype)
    return ((z > 0) & (z < 1)).astype(z.dtype)


sigmoid = Activation("sigmoid", _sig4, _sig4_d, True)
dsilu = Activation("dsilu", _dsilu, _dsilu_d, True)
tanh = Activation("tanh", _tanh, _tanh_d, True)
hard_sigmoid = Activation("hard_sigmoid", _hard, _hard_d, False)

_REGISTRY = {a.name: a for a in (sigmoid, dsilu, tanh, hard_sigmoid)}


def get_activation(act: str | Activation) -> Activation:
    """An :class:`Activation` from its name (``sigmoid``, ``dsilu``, ``tanh``,
    ``hard_sigmoid``) or the object itself."""
    if isinstance(act, Activation):
        return act
    if isinstance(act, str) and act in _REGISTRY:
        return _REGISTRY[act]
    raise ValueError(f"activation must be one of {sorted(_REGISTRY)} or an Activation, got {act!r}")
