"""The DCDM network: a fully convolutional residual U-Net mapping a residual to a direction.

:class:`DCDMNet` reproduces the architecture of Kaneda et al. (ICML 2023) exactly
(variants ``"64"`` and ``"128"``: one average-pooling level, nearest-neighbour upsampling,
3x3(x3) convolutions with 16 filters, the ReLU applied *before* each residual add, a
linear 1x1(x1) head), in 2D or 3D. A deeper option, ``variant="unet"``, repeats the
pooling ``levels`` times so that the receptive field covers larger grids; it is not in the
paper and is measured side by side with it in ``docs/dcdm.md``.

The paper's network never sees the geometry: boundaries enter only through the zeros of the
residual in non-fluid cells (and, in the solver, through ``A``). ``geometry=True`` adds two
input channels read off the matrix (fluid mask, solid-face fraction), as NPSDO does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DCDMNet", "VARIANTS", "geometry_channels", "count_parameters"]

#: Blocks per stage: (full-resolution residual blocks after the first two convolutions,
#: half-resolution blocks, full-resolution blocks after upsampling).
VARIANTS = {
    "64": (1, 3, 2),
    "128": (2, 5, 3),
}


def _mkldnn_ok(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always takes oneDNN on the CPU.

    PyTorch's heuristic sends batch-1 inputs with ``N*C*D*H <= 20480`` (a 16-channel 32^3
    grid, or the coarse level of a 64^3 one) to a native kernel that is ~10x slower.
    """

    def forward(self, x):
        if _mkldnn_ok(x):
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, list(self.padding),
                                                     [1, 1, 1], [1, 1, 1], 1)
        return super().forward(x)


class _Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that always takes oneDNN on the CPU (see :class:`_Conv3d`)."""

    def forward(self, x):
        if _mkldnn_ok(x):
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, list(self.padding),
                                                     [1, 1], [1, 1], 1)
        return super().forward(x)


class DCDMNet(nn.Module):
    """The DCDM convolutional network (Kaneda et al. 2023), 2D or 3D.

    Parameters
    ----------
    dim : {2, 3}
        Spatial dimension.
    variant : {"64", "128", "unet"}
        ``"64"``/``"128"``: the paper's ``from64``/``from128`` networks (97,457 and 152,881
        parameters in 3D). ``"unet"``: ``levels`` pooling levels, each with
        ``blocks_per_level`` residual blocks on the way down and one on the way up.
    channels : int
        Feature channels (16 in the paper).
    levels : int
        Pooling levels of the ``"unet"`` variant (ignored otherwise: the paper's nets
        have one). The grid must be divisible by ``2**levels``.
    blocks_per_level : int
        Residual blocks per coarse level of the ``"unet"`` variant.
    input_norm : {"rms", None}
        ``"rms"``: scale each input to unit root-mean-square over its nonzero cells before
        the first convolution, so the same weights see the same input statistics at every
        grid size (a parameter-free step; the paper feeds a unit 2-norm residual
        instead, which shrinks entries by ``sqrt(n)``). ``None``: the paper's network
        exactly, fed whatever the caller passes.
    geometry : bool
        Take two more input channels describing the matrix (not in the paper; NPSDO-like):
        the fluid mask and the fraction of a fluid cell's faces that are solid
        (``(2 d - A_ii) / 2 d``), see :func:`geometry_channels`. The residual alone cannot
        tell a solid (Neumann) neighbour from an air (Dirichlet) one; these channels can.

    Notes
    -----
    Input and output have shape ``(batch, 1, *grid)`` (channels first). Every block is
    ``a <- relu(conv(b)) + a`` (ReLU before the add, as in the Keras source; the PyTorch
    port in the MLPCG repository applies it after the add, a different function).
    Zero padding at the grid boundary, average pooling down, nearest-neighbour up.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate
       Direction Method for Iteratively Solving Linear Systems", ICML 2023,
       arXiv:2205.10763.

    Examples
    --------
    >>> from neurosolve.neural import DCDMNet
    >>> net = DCDMNet(dim=3, variant="64")
    >>> sum(p.numel() for p in net.parameters())
    97457
    """

    def __init__(self, dim: int = 3, variant: str = "64", *, channels: int = 16,
                 levels: int = 4, blocks_per_level: int = 2, input_norm: str | None = "rms",
                 geometry: bool = False):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim!r}")
        if variant not in (*VARIANTS, "unet"):
            raise ValueError(f"variant must be '64', '128' or 'unet', got {variant!r}")
        if input_norm not in ("rms", None):
            raise ValueError(f"input_norm must be 'rms' or None, got {input_norm!r}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if variant == "unet" and (not isinstance(levels, int) or levels < 1):
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        self.dim = dim
        self.variant = variant
        self.channels = channels
        self.levels = 1 if variant in VARIANTS else levels
        self.blocks_per_level = blocks_per_level
        self.input_norm = input_norm
        self.geometry = bool(geometry)
        self.in_channels = 3 if self.geometry else 1
        Conv = _Conv3d if dim == 3 else _Conv2d
        c = channels

        def conv(cin=c, cout=c):
            return Conv(cin, cout, 3, padding=1)

        self.stem = conv(self.in_channels, c)
        if variant in VARIANTS:
            n_full, n_half, n_up = VARIANTS[variant]
            # la = C(t); lb = C(la); then n_full x {la <- C(lb) + la; lb = C(la)}
            self.full = nn.ModuleList([conv() for _ in range(2 + 2 * n_full)])
            self.coarse = nn.ModuleList([nn.ModuleList([conv() for _ in range(2 * n_half)])])
            self.up = nn.ModuleList([nn.ModuleList([conv() for _ in range(2 * n_up)])])
        else:
            n_full, n_up = 1, 1
            self.full = nn.ModuleList([conv() for _ in range(2 + 2 * n_full)])
            self.coarse = nn.ModuleList(
                [nn.ModuleList([conv() for _ in range(2 * blocks_per_level)]) for _ in range(levels)])
            self.up = nn.ModuleList(
                [nn.ModuleList([conv() for _ in range(2 * n_up)]) for _ in range(levels)])
        self.head = Conv(c, 1, 1)
        # channels-last weights: oneDNN trains ~1.5x faster on the CPU in this layout
        self.to(memory_format=torch.channels_last_3d if dim == 3 else torch.channels_last)

    @property
    def divisor(self) -> int:
        """Every grid side must be a multiple of this (``2**levels``)."""
        return 2 ** self.levels

    def config(self) -> dict:
        """The constructor arguments (stored in weight manifests)."""
        return {"dim": self.dim, "variant": self.variant, "channels": self.channels,
                "levels": self.levels, "blocks_per_level": self.blocks_per_level,
                "input_norm": self.input_norm, "geometry": self.geometry}

    def check_grid(self, shape) -> None:
        """Raise ``ValueError`` unless ``shape`` is a grid this network can run on."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.dim:
            raise ValueError(
                f"this DCDMNet is {self.dim}-D but the grid {shape} is {len(shape)}-D; use a "
                f"{len(shape)}-D model (DCDMNet(dim={len(shape)}))")
        bad = [s for s in shape if s % self.divisor]
        if bad:
            raise ValueError(
                f"grid {shape}: every side must be divisible by {self.divisor} "
                f"({self.levels} pooling level{'s' if self.levels > 1 else ''}); pad the domain "
                "with solid cells to the next multiple")

    def _pool(self, x):
        return F.avg_pool3d(x, 2) if self.dim == 3 else F.avg_pool2d(x, 2)

    def _up(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DCDMNet(dim={self.dim}{', geometry=True' if self.geometry else ''}) expects "
                f"input of shape (batch, {self.in_channels}, *grid) with a {self.dim}-D grid, "
                f"got {tuple(x.shape)}")
        self.check_grid(x.shape[2:])
        if self.input_norm == "rms":
            r = x[:, :1]
            flat = r.flatten(1)
            count = (flat != 0).sum(dim=1).clamp(min=1).to(x.dtype)
            rms = torch.sqrt((flat * flat).sum(dim=1) / count).clamp(min=torch.finfo(x.dtype).tiny)
            r = r / rms.view(-1, *([1] * (x.dim() - 1)))
            x = torch.cat([r, x[:, 1:]], dim=1) if self.geometry else r
        if x.device.type == "cpu":
            # oneDNN is ~1.5x faster on channels-last layouts (training and inference)
            x = x.contiguous(memory_format=torch.channels_last_3d if self.dim == 3
                             else torch.channels_last)
        t = self.stem(x)
        full = self.full
        la = F.relu(full[0](t))
        lb = F.relu(full[1](la))
        for i in range(2, len(full), 2):
            la = F.relu(full[i](lb)) + la
            lb = F.relu(full[i + 1](la))
        skips = [lb]
        a = lb
        for level in self.coarse:
            a = self._pool(a)
            for i in range(0, len(level), 2):
                b = F.relu(level[i](a))
                a = F.relu(level[i + 1](b)) + a
            skips.append(a)
        skips.pop()
        for level in reversed(self.up):
            u = self._up(a) + skips.pop()
            for i in range(0, len(level), 2):
                v = F.relu(level[i](u))
                u = F.relu(level[i + 1](v)) + u
            a = u
        return self.head(a).contiguous()

    def receptive_field(self) -> int:
        """Receptive field in cells per side (the longest path through the graph)."""
        rf = 1 + 2 * (1 + len(self.full))
        for lvl, level in enumerate(self.coarse, start=1):
            rf += 2 ** (lvl - 1) + 2 * 2 ** lvl * len(level)
        for lvl, level in enumerate(self.up, start=1):
            rf += 2 ** (lvl - 1) + 2 * 2 ** (lvl - 1) * len(level)
        return int(rf)


def geometry_channels(diag, fluid, dim: int):
    """The two geometry input channels of a ``geometry=True`` network.

    ``fluid`` (1 on fluid cells) and ``(2 dim - diag) / (2 dim)`` on fluid cells (the
    fraction of faces closed by a solid cell or a Neumann wall; 0 elsewhere). Works on
    numpy arrays and torch tensors of any (matching) shape; returns the two stacked on a
    new leading axis.
    """
    if isinstance(diag, torch.Tensor):
        fl = fluid.to(diag.dtype)
        return torch.stack([fl, fl * (2 * dim - diag) / (2 * dim)])
    import numpy as np

    fl = np.asarray(fluid, dtype=np.float64)
    return np.stack([fl, fl * (2 * dim - np.asarray(diag, dtype=np.float64)) / (2 * dim)])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
