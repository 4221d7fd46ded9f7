"""The network of :class:`~neurosolve.solvers.preconditioners.LearnedMG` and its loader.

:class:`SmootherWeightNet` maps a multigrid level's cell features to per-cell smoother
weights (and, optionally, factors on the cells' interpolation strengths); :func:`load_smoother` reads the
``smoother.pt`` + ``smoother.json`` that ``neurosolve train lmg`` writes. Training lives in
:mod:`neurosolve.neural.mg_weights`.

References
----------
.. [1] A. Katrutsa, T. Daulbaev, I. Oseledets, "Black-box learning of multigrid
   parameters", J. Comput. Appl. Math. 368 (2020), arXiv:1711.03825.
"""

from __future__ import annotations

import torch

__all__ = ["SmootherWeightNet", "load_smoother", "fast_inference"]


class SmootherWeightNet(torch.nn.Module):
    """Cell features ``(batch, 5, *grid)`` -> smoother weights (and strength factors),
    ``(batch, 1 or 2, *grid)``:
    ``omega = 1 + 0.9 tanh(z0)`` in ``[0.1, 1.9]`` (inside ``(0, 2)`` even when ``tanh``
    saturates in floating point) and ``f = exp(2 tanh(z1))`` in ``[e^-2, e^2]``; the last
    layer starts at zero, so ``omega = 1`` and ``f = 1`` exactly (plain Gauss-Seidel and
    GMG's own interpolation).

    Parameters
    ----------
    dim : {2, 3}
    channels : int
    layers : int
        Convolutions before the output layer (3^dim kernels each, ReLU).
    interpolation : bool
        Also output a factor ``f`` per cell of every coarse level, multiplying that
        cell's weight in the interpolation from it (the rows are renormalized, so
        constants are still interpolated exactly and the cycle stays SPD).
    in_channels : int
        Feature channels (the 5 of
        :func:`~neurosolve.solvers.preconditioners.learned_mg.level_features`).
    learned_finest : bool
        Also learn the smoother weights of the finest level. False: the finest level keeps
        plain Gauss-Seidel (``omega = 1``) and the network never runs there (its strength
        factors are not used on the finest level either), so the setup pass costs about
        ``1 / 2^dim`` of the full one and the finest sweeps are GMG's own; the coarse
        levels' weights and the interpolation are still learned.
    """

    def __init__(self, dim: int = 2, channels: int = 8, layers: int = 2,
                 interpolation: bool = False, in_channels: int = 5,
                 learned_finest: bool = True):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim!r}")
        conv = torch.nn.Conv2d if dim == 2 else torch.nn.Conv3d
        mods, c_in = [], int(in_channels)
        for _ in range(layers):
            mods += [conv(c_in, channels, 3, padding=1), torch.nn.ReLU()]
            c_in = channels
        self.body = torch.nn.Sequential(*mods)
        self.out = conv(c_in, 1 + int(interpolation), 3, padding=1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)
        self.dim, self.channels, self.layers = dim, channels, layers
        self.interpolation = bool(interpolation)
        self.learned_finest = bool(learned_finest)

    def config(self) -> dict:
        return {"dim": self.dim, "channels": self.channels, "layers": self.layers,
                "interpolation": self.interpolation, "learned_finest": self.learned_finest}

    def forward(self, features):
        return self.head(self.out(self.body(features)))

    def head(self, z):
        """The bounded outputs from the last convolution's raw values ``z``."""
        omega = 1.0 + 0.9 * torch.tanh(z[:, :1])
        if not self.interpolation:
            return omega
        return torch.cat([omega, torch.exp(2.0 * torch.tanh(z[:, 1:]))], dim=1)


def fast_inference(net: SmootherWeightNet):
    """A no-grad CPU evaluator of ``net`` through oneDNN (mkldnn) convolutions, or None
    where that is unavailable. The outputs agree with ``net(features)`` to float32
    rounding.

    Two oneDNN paths, the first that works on this torch build:

    * each convolution with its ReLU fused, on channels-last tensors
      (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch's own compiler
      emits);
    * ``torch.utils.mkldnn`` modules (ReLU as a separate pass), about 2x slower.

    The setup times this gives are the ``setup_s`` of ``lmg`` in
    ``benchmarks/bench_preconditioners.py``. For a network run on every level (the first
    shipped ``nmg3d``) they were 0.48-0.62 s at 128^3 on one core with the first path and
    about 1 s with the second; the shipped models skip the finest level
    (``learned_finest=False``), and the whole setup there takes 0.11-0.25 s (the 128^3
    rows of docs/poisson.md).
    """
    import copy

    if not (isinstance(net, SmootherWeightNet) and torch.backends.mkldnn.is_available()):
        return None
    p = next(net.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        return None
    fused = _fused_convolutions(net)
    if fused is not None:
        return fused
    try:
        import warnings

        with warnings.catch_warnings():  # torch.utils.mkldnn uses the deprecated jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.utils import mkldnn

            convs = mkldnn.to_mkldnn(copy.deepcopy(torch.nn.Sequential(net.body, net.out)).eval())
    except (ImportError, AttributeError, RuntimeError, TypeError, ValueError):  # pragma: no cover
        return None  # a torch without oneDNN or without torch.utils.mkldnn: the plain path

    def run(features):
        with torch.no_grad():
            return net.head(convs(features.float().to_mkldnn()).to_dense())

    return run


def _fused_convolutions(net: SmootherWeightNet):
    """The convolution + ReLU fused evaluator of :func:`fast_inference`, or None when this
    torch build lacks the operator (tried once on a small input)."""
    convs = [m for m in net.body if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    convs.append(net.out)
    layout = torch.channels_last if net.dim == 2 else torch.channels_last_3d
    ones = [1] * net.dim
    try:
        op = torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):  # pragma: no cover
        return None
    params = [(c.weight.detach(), c.bias.detach(), [int(q) for q in c.padding]) for c in convs]

    def run(features):
        with torch.no_grad():
            h = features.float().contiguous(memory_format=layout)
            for i, (w, b, pad) in enumerate(params):
                h = op(h, w, b, pad, ones, ones, 1, "relu" if i < len(params) - 1 else "none",
                       [], "")
            return net.head(h)

    try:
        probe = torch.zeros((1, convs[0].in_channels) + (4,) * net.dim)
        run(probe)
    except (RuntimeError, TypeError, NotImplementedError):  # pragma: no cover
        return None
    return run


def load_smoother(path) -> SmootherWeightNet:
    """A :class:`SmootherWeightNet` from a shipped model's name (``"nmg2d"``, ``"nmg3d"``)
    or from ``smoother.pt`` (with its ``smoother.json`` beside it, as ``neurosolve train
    lmg`` writes them), in eval mode, with ``.manifest``.

    Raises
    ------
    ValueError
        A missing file or manifest.
    """
    import json
    import pathlib

    weights = pathlib.Path(__file__).resolve().parent / "weights"  # the shipped models
    shipped = sorted(p.stem for p in weights.glob("nmg*.json") if p.with_suffix(".pt").exists())
    if isinstance(path, str) and path in shipped:
        path = weights / f"{path}.pt"
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "smoother.pt"
    side = path.with_suffix(".json")
    if not path.exists() or not side.exists():
        raise ValueError(f"{path} (and its manifest {side.name}) must exist; write them with "
                         "'neurosolve train lmg --out DIR', or name a shipped model: "
                         f"{', '.join(shipped) or 'none'}")
    info = json.loads(side.read_text())
    net = SmootherWeightNet(**info["architecture"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    net.manifest = info
    return net
