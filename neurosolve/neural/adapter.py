"""Use a torch ``nn.Module`` as a (nonlinear) preconditioner inside neurosolve's CG loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neurosolve.backends import is_torch
from neurosolve.operators import LinearOperator

__all__ = ["TorchPreconditioner"]


def _grid_and_mask(grid: Any):
    """``(shape, fluid mask or None)`` from a tuple or a gallery CellGrid."""
    if grid is None:
        raise ValueError("grid is required: a tuple of cells per side, or a gallery CellGrid")
    cells = getattr(grid, "cells", None)
    if cells is not None:
        cells = np.asarray(cells)
        return tuple(int(s) for s in cells.shape), cells == 0  # FLUID = 0 in the gallery
    if isinstance(grid, (int, np.integer)):
        raise TypeError(f"grid must be a tuple of cells per side, e.g. (64, 64), got {grid!r}")
    shape = tuple(int(s) for s in grid)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"grid must be a tuple of positive integers, got {grid!r}")
    return shape, None


class TorchPreconditioner(LinearOperator):
    """A torch module ``r -> d`` on a cell grid, as a neurosolve operator.

    Reshapes the solver's flat vector to ``(1, 1, *grid)``, optionally normalizes it to
    unit norm, evaluates the module in eval mode without gradients in ``dtype`` on
    ``device``, zeroes the output on non-fluid cells, multiplies it back by the input norm
    (so a linear module gives a linear operator) and returns it in the caller's array
    library, dtype and device (numpy float64 in, numpy float64 out).

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, 1, *grid)`` to the same shape (e.g. :class:`~neurosolve.neural.DCDMNet`).
    grid : tuple of int or CellGrid
        Grid shape; a gallery grid (``neurosolve.problems.poisson``) also gives the fluid
        mask.
    normalize : bool
        Feed the module ``r / ||r||`` (the paper's convention; a network is nonlinear, so
        the input scale matters).
    mask : array of bool, optional
        Cells where the output is kept (default: fluid cells of a gallery grid, else all).
    dtype : torch.dtype
        Precision of the module (float32: the float64 solver loop converts on the way).
    device : str or torch.device, optional
        Where the module runs (default: where its parameters are).
    linear : bool
        Declare the module linear (then CG may use it in the PCG recurrence).
    diagonal : array, optional
        The matrix diagonal, for a network that takes geometry channels
        (``DCDMNet(geometry=True)``); a gallery grid supplies it.

    Attributes
    ----------
    evaluations : int
        Number of module evaluations so far.
    nonfinite_outputs : int
        How many of them returned NaN or inf.

    Raises
    ------
    TypeError
        ``model`` is not a torch module.
    ValueError
        A grid the module cannot run on (wrong dimensionality, a side not divisible by the
        pooling factor), a mask of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.neural import DCDMNet, TorchPreconditioner
    >>> M = TorchPreconditioner(DCDMNet(dim=2), grid=(16, 16))
    >>> M(np.ones(256)).shape, M.evaluations, M.is_linear
    ((256,), 1, False)
    """

    def __init__(self, model: torch.nn.Module, grid: Any = None, *, normalize: bool = True,
                 mask: Any = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None, linear: bool = False,
                 diagonal: Any = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        shape, gmask = _grid_and_mask(grid)
        if hasattr(model, "check_grid"):
            model.check_grid(shape)
        if mask is not None:
            mask = np.asarray(mask.detach().cpu().numpy() if is_torch(mask) else mask, dtype=bool)
            if mask.size != int(np.prod(shape)):
                raise ValueError(f"mask has {mask.size} entries; the grid {shape} has "
                                 f"{int(np.prod(shape))} cells")
            mask = mask.reshape(shape)
        else:
            mask = gmask
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.model = model
        self.grid = shape
        self.normalize = bool(normalize)
        self.torch_dtype = dtype
        self.torch_device = torch.device(device)
        self.n = int(np.prod(shape))
        self.shape = (self.n, self.n)
        self.dtype = None
        self.array_library = None
        self.device = str(self.torch_device)
        self.is_linear = bool(linear)
        self.is_spd = None
        self.mask = mask
        self._mask_t: dict = {}
        self.evaluations = 0
        self.nonfinite_outputs = 0
        self.geometry = None
        if getattr(model, "geometry", False):
            if diagonal is None and getattr(grid, "cells", None) is not None:
                diagonal = grid.diagonal()
            if diagonal is None:
                raise ValueError("this network takes geometry channels: pass diagonal= (the "
                                 "matrix diagonal) or a gallery grid")
            diagonal = np.asarray(diagonal.detach().cpu().numpy() if is_torch(diagonal)
                                  else diagonal, dtype=np.float64).reshape(shape)
            fl = mask if mask is not None else diagonal != 0
            from neurosolve.neural.dcdm_net import geometry_channels

            g = geometry_channels(diagonal, fl, len(shape))[None]
            self.geometry = torch.as_tensor(g, dtype=dtype, device=self.torch_device)

    def _mask_on(self, device) -> torch.Tensor | None:
        if self.mask is None:
            return None
        key = str(device)
        if key not in self._mask_t:
            self._mask_t[key] = torch.as_tensor(self.mask.reshape(-1), device=device)
        return self._mask_t[key]

    def matvec(self, x):
        size = int(np.prod(tuple(x.shape)))
        if size != self.n:
            raise ValueError(f"the vector has {size} entries but the grid {self.grid} has "
                             f"{self.n} cells")
        src_torch = is_torch(x)
        t = x.reshape(-1) if src_torch else torch.from_numpy(np.ascontiguousarray(x).reshape(-1))
        scale = None
        if self.normalize:
            scale = torch.linalg.vector_norm(t.to(torch.float64))
            if float(scale) > 0 and np.isfinite(float(scale)):
                t = t.to(torch.float64) / scale
            else:
                scale = None
        t = t.to(device=self.torch_device, dtype=self.torch_dtype).reshape(1, 1, *self.grid)
        if self.geometry is not None:
            t = torch.cat([t, self.geometry], dim=1)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                y = self.model(t)
        finally:
            self.model.train(was_training)
        self.evaluations += 1
        if tuple(y.shape[-len(self.grid):]) != self.grid or y.numel() != self.n:
            raise ValueError(f"the model returned shape {tuple(y.shape)}; expected "
                             f"(1, 1, {', '.join(map(str, self.grid))})")
        y = y.reshape(-1)
        m = self._mask_on(y.device)
        if m is not None:
            y = torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device))
        if not bool(torch.isfinite(y).all()):
            self.nonfinite_outputs += 1
        if src_torch:
            y = y.to(device=x.device, dtype=x.dtype)
        else:
            y = y.detach().cpu().numpy().astype(x.dtype if x.dtype.kind == "f" else np.float64)
        if scale is not None:
            y = y * (float(scale) if not src_torch else scale.to(device=y.device, dtype=y.dtype))
        return y.reshape(tuple(x.shape))

    def __repr__(self) -> str:
        return (f"<TorchPreconditioner {type(self.model).__name__} grid={self.grid} "
                f"device={self.torch_device} dtype={self.torch_dtype} linear={self.is_linear}>")
