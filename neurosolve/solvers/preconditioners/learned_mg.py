"""LearnedMG: the GMG V-cycle with per-cell smoother weights and interpolation strengths
predicted by a small CNN.

The hierarchy and coarse operators are those of
:class:`~neurosolve.solvers.preconditioners.GMG`. What is learned, per cell and level:

* a relaxation weight ``omega`` for the red-black Gauss-Seidel smoother,
  ``x_i <- (1 - omega_i) x_i + omega_i x_i^GS``, ``omega = 1 + 0.9 tanh(z)``, so
  ``0.1 <= omega <= 1.9`` for *any* network weights (also where ``tanh`` rounds to 1);
* optionally (``SmootherWeightNet(interpolation=True)``) a factor ``f = exp(2 tanh(z'))``
  on each coarse cell's weight in GMG's interpolation: ``P_iJ = w_iJ c_J f_J / sum_K
  w_iK c_K f_K`` with ``w`` the linear weights and ``c`` GMG's coefficient strengths, so
  rows still sum to one (constants and the Neumann null space are kept) and the
  restriction is still ``P^T``.

A convolutional network reads each level's cell types, its normalized diagonal and its log
coefficient strength (the walls, the free surface and the coefficient field) and runs
once per level at setup. A model with ``learned_finest=False`` (the shipped ones) skips
the finest level, which keeps plain Gauss-Seidel: the setup pass then covers only the
coarse levels (a quarter of the cells in 2-D, an eighth in 3-D).

Why it stays a PCG preconditioner: the pre-smoother sweeps red then black, the
post-smoother the adjoint order with the same weights, the restriction is ``P^T`` and the
coarsest solve is a symmetric positive semi-definite pseudo-inverse, so the V-cycle is
symmetric; weighted Gauss-Seidel ``M = D / omega + L`` has ``M + M^T - A = D (2 / omega -
1)``, positive definite when ``0 < omega < 2``, so the smoother is convergent and the cycle
is positive definite (the argument of GMG, with ``D`` replaced by ``D / omega``).

The interpolation factors change ``P`` only, and a V-cycle with restriction ``P^T`` is
symmetric positive definite for any ``P``. The network's last layer starts at zero, so
``omega = 1`` and ``f = 1`` exactly: untrained, LearnedMG *is* GMG, to the last bit
(``0 * x + 1 * y = y``, ``c * 1 = c``). Training
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

__all__ = ["LearnedMG", "level_features", "level_outputs"]

N_FEATURES = 5


def level_features(L) -> np.ndarray:
    """Per-cell input channels of one level, float32 of shape ``(*shape3, 5)`` (channels
    last, the layout the fast convolutions read): active (has an equation), air, solid
    (neither), the diagonal over its level maximum, and ``log10(strength) / 4`` on active
    cells (GMG's coefficient strength; 0 with ``k = 1``)."""
    d = np.asarray(L.d)
    active = d > 0
    air = np.asarray(L.air) & ~active
    f = np.empty(d.shape + (N_FEATURES,), dtype=np.float32)
    f[..., 0] = active
    f[..., 1] = air
    f[..., 2] = ~active & ~air
    scale = float(d.max()) if d.size and d.max() > 0 else 1.0
    np.multiply(d, 1.0 / scale, out=f[..., 3], casting="same_kind")
    f[..., 4] = 0.0
    if L.strength is not None:
        logk = np.zeros(d.shape)
        np.log10(L.strength, out=logk, where=active & (L.strength > 0))
        logk[~active] = 0.0
        np.multiply(logk, 0.25, out=f[..., 4], casting="same_kind")
    return f


def level_outputs(net, levels, ndim: int, device: Any = "cpu", evaluate=None) -> list:
    """The network's output per level, shape ``(channels, *shape3)``: channel 0 the
    smoother weights (used on every level but the coarsest), channel 1 (when the network
    has ``interpolation=True``) the strength factors of the level's cells as coarse cells
    (used on every level but the finest). Levels the model does not need are None: the
    coarsest without interpolation, the finest when ``net.learned_finest`` is False.
    ``evaluate`` replaces ``net(features)`` (a faster inference path)."""
    import torch

    interp = bool(getattr(net, "interpolation", False))
    finest = bool(getattr(net, "learned_finest", True))
    w = next(iter(net.parameters()), None)
    dtype = w.dtype if w is not None else torch.float32
    out = []
    for i, L in enumerate(levels):
        if (i == len(levels) - 1 and not interp) or (i == 0 and not finest):
            out.append(None)
            continue
        f = level_features(L)
        spatial = f.shape[3 - ndim:-1]
        # (1, 5, *spatial) as a channels-last view of the (*spatial, 5) array: no copy
        t = torch.from_numpy(f.reshape(1, *spatial, N_FEATURES)).movedim(-1, 1)
        t = t.to(device=device, dtype=dtype)
        y = net(t) if evaluate is None else evaluate(t)
        out.append(y.reshape(y.shape[1], *L.d.shape))
    return out


class LearnedMG(GMG):
    """GMG with smoother weights (and interpolation strengths) from a trained
    :class:`~neurosolve.neural.mg_smoother.SmootherWeightNet`.

    Parameters
    ----------
    grid : CellGrid, PoissonSystem or PoissonOperator
    model : torch.nn.Module, str or path, optional
        A :class:`~neurosolve.neural.mg_smoother.SmootherWeightNet` of the grid's dimension;
        a shipped model's name (``"nmg2d"``, ``"nmg3d"``: see
        :func:`neurosolve.neural.available_pretrained`); or the ``smoother.pt`` that
        ``neurosolve train lmg`` writes. (Any module mapping ``(1, 5, *level_shape)`` to
        ``(1, 1 or 2, *level_shape)`` with weights in ``(0, 2)`` and positive factors.)
        None: exactly :class:`GMG`.
    nu, max_coarse, max_levels, interpolation
        As in :class:`GMG`.

    Attributes
    ----------
    omegas : list of numpy.ndarray
        The smoother weights per level (fine to second coarsest); the finest entry is None
        (plain Gauss-Seidel) for a model with ``learned_finest=False``.
    factors : list of numpy.ndarray or None
        The interpolation strength factors per transfer (coarse cells of levels 1 to the
        coarsest); None for a smoother-only model.

    Raises
    ------
    ValueError
        A model whose weights leave ``(0, 2)`` (the V-cycle would not be SPD), whose
        factors are not positive and finite, or of the wrong dimension.

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
                 max_levels: int | None = None, interpolation: str = "weighted"):
        super().__init__(grid, nu=nu, max_coarse=max_coarse, max_levels=max_levels,
                         interpolation=interpolation)
        self.model = model
        self.omegas = None
        self.factors = None
        if model is None:
            return
        import os

        import torch

        if isinstance(model, (str, os.PathLike)):
            from neurosolve.neural.mg_smoother import load_smoother

            model = load_smoother(model)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a SmootherWeightNet), a shipped "
                            f"model's name, a path or None, got {type(model).__name__}")
        if getattr(model, "dim", self.grid.ndim) != self.grid.ndim:
            raise ValueError(f"the model is for {model.dim}-D grids; this grid is "
                             f"{self.grid.ndim}-D")
        from neurosolve.neural.mg_smoother import fast_inference

        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = [None if o is None else o.double().cpu().numpy() for o in
                       level_outputs(model, self._levels, self.grid.ndim,
                                     next(model.parameters()).device,
                                     evaluate=fast_inference(model))]
        finally:
            model.train(was)
        om = [None if o is None else o[0] for o in out[:-1]]
        for o in om:
            if o is not None and not (np.all(o > 0) and np.all(o < 2)):
                raise ValueError("the model's smoother weights must lie in (0, 2) (the "
                                 f"V-cycle is SPD only then); got [{o.min():.3g}, {o.max():.3g}]")
        self.omegas = [None if o is None else np.ascontiguousarray(o) for o in om]
        if out[-1] is not None and out[-1].shape[0] > 1:
            from neurosolve.solvers.preconditioners.gmg import usable_cells

            fac = [np.ascontiguousarray(o[1]) for o in out[1:]]
            for f in fac:
                if not (np.all(f > 0) and np.all(np.isfinite(f))):
                    raise ValueError("the model's interpolation factors must be positive and "
                                     f"finite; got [{f.min():.3g}, {f.max():.3g}]")
            self.factors = fac
            for l, f in enumerate(fac):
                L, C = self._levels[l], self._levels[l + 1]
                base = L.cw if L.cw is not None else usable_cells(C)
                self._set_coarse_weights(l, base * f)

    def __repr__(self) -> str:
        return super().__repr__().replace("<GMG", "<LearnedMG", 1)

    def _smooth(self, l, b, x, colors):
        if self.omegas is None or self.omegas[l] is None:
            return super()._smooth(l, b, x, colors)
        from neurosolve.backends import stencil_kernels as K

        L, om = self._levels[l], self.omegas[l]
        for _ in range(self.nu):
            for c in colors:
                K.rbgs_sweep_weighted(L.inv_d, L.cx, L.cy, L.cz, b, x, c, om)
