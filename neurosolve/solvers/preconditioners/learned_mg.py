"""LearnedMG: the GMG V-cycle with per-cell smoother weights predicted by a small CNN.

A first, deliberately narrow learned multigrid: the hierarchy, transfers and coarse
operators are those of :class:`~neurosolve.solvers.preconditioners.GMG`; what is learned is
one relaxation weight ``omega`` per cell and level for the red-black Gauss-Seidel smoother,
``x_i <- (1 - omega_i) x_i + omega_i x_i^GS``. A convolutional network reads the level's
cell types and its normalized diagonal (which carries the walls, the free surface and the
coefficient field) and outputs ``omega = 1 + 0.9 tanh(z)``, so ``0.1 <= omega <= 1.9``
for *any* weights (also where ``tanh`` rounds to 1); the network runs once per level at
setup.

Why it stays a PCG preconditioner: the pre-smoother sweeps red then black, the
post-smoother the adjoint order with the same weights, the restriction is ``P^T`` and the
coarsest solve is a symmetric positive semi-definite pseudo-inverse, so the V-cycle is
symmetric; weighted Gauss-Seidel ``M = D / omega + L`` has ``M + M^T - A = D (2 / omega -
1)``, positive definite when ``0 < omega < 2``, so the smoother is convergent and the cycle
is positive definite (the argument of GMG, with ``D`` replaced by ``D / omega``).

The network's last layer starts at zero, so ``z = 0``, ``omega = 1`` exactly: untrained, LearnedMG
*is* GMG, to the last bit (``0 * x + 1 * y = y``). Training
(:func:`neurosolve.neural.mg_weights.train_learned_mg`) runs the same V-cycle in torch and lowers the error-energy loss of
:func:`~neurosolve.neural.energy_loss` through
:func:`~neurosolve.neural.train_preconditioner`.

References
----------
.. [1] A. Katrutsa, T. Daulbaev, I. Oseledets, "Black-box learning of multigrid
   parameters", J. Comput. Appl. Math. 368 (2020), arXiv:1711.03825.
.. [2] D. Greenfeld, M. Galun, R. Kimmel, I. Yavneh, R. Basri, "Learning to Optimize
   Multigrid PDE Solvers", ICML 2019, arXiv:1902.10248.
.. [3] U. Trottenberg, C. W. Oosterlee, A. Schueller, "Multigrid", Academic Press, 2001
   (weighted Gauss-Seidel smoothing; the symmetric V-cycle).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.solvers.preconditioners.gmg import GMG

__all__ = ["LearnedMG", "level_features", "omega_for_levels"]

N_FEATURES = 4


def level_features(L) -> np.ndarray:
    """Per-cell input channels of one level, shape ``(4, *shape3)``: active (has an
    equation), air, solid (neither), and the diagonal over its level maximum."""
    d = np.asarray(L.d)
    active = d > 0
    air = np.asarray(L.air) & ~active
    solid = ~active & ~air
    scale = float(d.max()) if d.size and d.max() > 0 else 1.0
    return np.stack([active, air, solid, d / scale]).astype(np.float32)


def omega_for_levels(net, levels, ndim: int, device: Any = "cpu") -> list:
    """The network's output per level but the coarsest, shape ``(channels, *shape3)``:
    channel 0 the smoother weights, channel 1 (when present) the correction scaling."""
    import torch

    out = []
    for L in levels[:-1]:
        f = level_features(L)
        spatial = f.shape[1 + 3 - ndim:]
        w = next(iter(net.parameters()), None)
        dtype = w.dtype if w is not None else torch.float32
        t = torch.as_tensor(f.reshape(N_FEATURES, *spatial))[None].to(device=device, dtype=dtype)
        y = net(t)
        out.append(y.reshape(y.shape[1], *L.d.shape))
    return out


class LearnedMG(GMG):
    """GMG with smoother weights from a trained
    :class:`~neurosolve.neural.mg_smoother.SmootherWeightNet`.

    Parameters
    ----------
    grid : CellGrid, PoissonSystem or PoissonOperator
    model : torch.nn.Module or path, optional
        A :class:`~neurosolve.neural.mg_smoother.SmootherWeightNet` of the grid's dimension
        (or the ``smoother.pt`` that ``neurosolve train lmg`` writes) (or any module mapping
        ``(1, 4, *level_shape)`` to ``(1, 1, *level_shape)`` with values in ``(0, 2)``).
        None: weights 1, i.e. exactly :class:`GMG`.
    nu, max_coarse, max_levels
        As in :class:`GMG`.

    Attributes
    ----------
    omegas : list of numpy.ndarray
        The smoother weights per level (fine to second coarsest).
    scalings : list of numpy.ndarray or None
        The per-cell scaling ``s`` of the coarse-grid correction per level (a two-channel
        model): the interpolation becomes ``S P`` and the restriction ``P^T S``, which
        keeps the cycle symmetric positive definite for any ``s > 0``.

    Raises
    ------
    ValueError
        A model whose weights leave ``(0, 2)`` (the V-cycle would not be SPD).

    Examples
    --------
    >>> import numpy as np
    >>> import neurosolve as ns
    >>> from neurosolve.problems import poisson
    >>> from neurosolve.solvers.preconditioners import GMG, LearnedMG
    >>> grid = poisson.pool((32, 32), obstacles=1, seed=0)
    >>> r = np.random.default_rng(0).standard_normal(grid.n) * grid.fluid.ravel()
    >>> bool(np.array_equal(LearnedMG(grid)(r), GMG(grid)(r)))   # untrained = GMG
    True
    """

    def __init__(self, grid: Any, model: Any = None, *, nu: int = 2, max_coarse: int = 256,
                 max_levels: int | None = None):
        super().__init__(grid, nu=nu, max_coarse=max_coarse, max_levels=max_levels)
        self.model = model
        self.omegas = None
        self.scalings = None
        if model is None:
            return
        import os

        import torch

        if isinstance(model, (str, os.PathLike)):
            from neurosolve.neural.mg_smoother import load_smoother

            model = load_smoother(model)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a SmootherWeightNet) or None, "
                            f"got {type(model).__name__}")
        if getattr(model, "dim", self.grid.ndim) != self.grid.ndim:
            raise ValueError(f"the model is for {model.dim}-D grids; this grid is "
                             f"{self.grid.ndim}-D")
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = [o.double().cpu().numpy() for o in
                       omega_for_levels(model, self._levels, self.grid.ndim,
                                        next(model.parameters()).device)]
        finally:
            model.train(was)
        om = [o[0] for o in out]
        for o in om:
            if not (np.all(o > 0) and np.all(o < 2)):
                raise ValueError("the model's smoother weights must lie in (0, 2) (the "
                                 f"V-cycle is SPD only then); got [{o.min():.3g}, {o.max():.3g}]")
        self.omegas = [np.ascontiguousarray(o) for o in om]
        if out and out[0].shape[0] > 1:
            sc = [o[1] for o in out]
            for o in sc:
                if not (np.all(o > 0) and np.all(np.isfinite(o))):
                    raise ValueError("the model's correction scalings must be positive and "
                                     f"finite; got [{o.min():.3g}, {o.max():.3g}]")
            self.scalings = [np.ascontiguousarray(o) for o in sc]

    def __repr__(self) -> str:
        return super().__repr__().replace("<GMG", "<LearnedMG", 1)

    def _restrict(self, l, r, rc):
        if self.scalings is None:
            return super()._restrict(l, r, rc)
        super()._restrict(l, r * self.scalings[l], rc)

    def _prolong_add(self, l, xc, x):
        if self.scalings is None:
            return super()._prolong_add(l, xc, x)
        tmp = np.zeros_like(x)
        super()._prolong_add(l, xc, tmp)
        x += self.scalings[l] * tmp

    def _smooth(self, l, b, x, colors):
        if self.omegas is None:
            return super()._smooth(l, b, x, colors)
        from neurosolve.backends import stencil_kernels as K

        L, om = self._levels[l], self.omegas[l]
        for _ in range(self.nu):
            for c in colors:
                K.rbgs_sweep_weighted(L.inv_d, L.cx, L.cy, L.cz, b, x, c, om)
