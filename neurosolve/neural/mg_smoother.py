"""The network of :class:`~neurosolve.solvers.preconditioners.LearnedMG` and its loader.

:class:`SmootherWeightNet` maps a multigrid level's cell features to per-cell smoother
weights (and, optionally, coarse-correction scalings); :func:`load_smoother` reads the
``smoother.pt`` + ``smoother.json`` that ``neurosolve train lmg`` writes. Training lives in
:mod:`neurosolve.neural.mg_weights`.

References
----------
.. [1] A. Katrutsa, T. Daulbaev, I. Oseledets, "Black-box learning of multigrid
   parameters", J. Comput. Appl. Math. 368 (2020), arXiv:1711.03825.
"""

from __future__ import annotations

import torch

__all__ = ["SmootherWeightNet", "load_smoother"]


class SmootherWeightNet(torch.nn.Module):
    """Cell features ``(batch, 4, *grid)`` -> smoother weights (and correction scalings),
    ``(batch, 1 or 2, *grid)``:
    ``omega = 1 + 0.9 tanh(z)`` in ``[0.1, 1.9]`` (inside ``(0, 2)`` even when ``tanh``
    saturates in floating point); the last layer starts at zero, so ``omega = 1`` exactly
    (plain Gauss-Seidel).

    Parameters
    ----------
    dim : {2, 3}
    channels : int
    layers : int
        Convolutions before the output layer (3^dim kernels each, ReLU).
    in_channels : int
        Feature channels (the 4 of
        :func:`~neurosolve.solvers.preconditioners.learned_mg.level_features`).
    correction : bool
        Also output a per-cell scaling ``s = exp(0.5 tanh(z))`` of the coarse-grid
        correction (interpolation ``S P``, restriction ``P^T S``); 1 at initialization.
        Off by default: trained with the one-step loss it lowered the loss (0.30 -> 0.20)
        but doubled PCG's iterations on pools and plates (benchmarks/bench_learned_mg.py
        with ``correction=True``), so the one-step loss does not measure what it changes.
    """

    def __init__(self, dim: int = 2, channels: int = 8, layers: int = 2,
                 correction: bool = False, in_channels: int = 4):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim!r}")
        conv = torch.nn.Conv2d if dim == 2 else torch.nn.Conv3d
        mods, c_in = [], int(in_channels)
        for _ in range(layers):
            mods += [conv(c_in, channels, 3, padding=1), torch.nn.ReLU()]
            c_in = channels
        self.body = torch.nn.Sequential(*mods)
        self.out = conv(c_in, 1 + int(correction), 3, padding=1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)
        self.dim, self.channels, self.layers = dim, channels, layers
        self.correction = bool(correction)

    def config(self) -> dict:
        return {"dim": self.dim, "channels": self.channels, "layers": self.layers,
                "correction": self.correction}

    def forward(self, features):
        z = self.out(self.body(features))
        omega = 1.0 + 0.9 * torch.tanh(z[:, :1])
        if not self.correction:
            return omega
        return torch.cat([omega, torch.exp(0.5 * torch.tanh(z[:, 1:]))], dim=1)


def load_smoother(path) -> SmootherWeightNet:
    """A :class:`SmootherWeightNet` from ``smoother.pt`` (with its ``smoother.json``
    beside it, as ``neurosolve train lmg`` writes them), in eval mode.

    Raises
    ------
    ValueError
        A missing file or manifest.
    """
    import json
    import pathlib

    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "smoother.pt"
    side = path.with_suffix(".json")
    if not path.exists() or not side.exists():
        raise ValueError(f"{path} (and its manifest {side.name}) must exist; write them with "
                         "'neurosolve train lmg --out DIR'")
    info = json.loads(side.read_text())
    net = SmootherWeightNet(**info["architecture"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    net.manifest = info
    return net
