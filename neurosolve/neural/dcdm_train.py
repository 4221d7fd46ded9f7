"""Training DCDM networks: the scale-invariant one-step loss, Adam, checkpoints, resume.

The loss of Kaneda et al. (2023, section 4) for a unit-norm right-hand side ``b`` and the
network's output ``f = net(b)`` is the squared residual after one DCDM step from ``x0 = 0``::

    alpha(b) = (f . b) / (f . A f)
    loss(b)  = || b - alpha(b) A f ||^2

It needs no reference solutions and is invariant to ``f -> c f`` (any ``c != 0``), so the
network only has to learn ``A^{-1}`` up to a constant. ``A f`` is applied matrix-free as a
5/7-point stencil whose diagonal and fluid mask are read off the training matrix
(:class:`StencilGeometry`), so one batch may mix geometries.

The network trains in float32; the solver that uses it runs in float64.

References
----------
.. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate Direction
   Method for Iteratively Solving Linear Systems", ICML 2023, arXiv:2205.10763.
.. [2] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from neurosolve.neural.dcdm_data import BoxSampler, FilterSampler, MixtureSampler, RitzSampler
from neurosolve.neural.dcdm_net import DCDMNet, geometry_channels

__all__ = [
    "StencilGeometry",
    "stencil_apply",
    "dcdm_loss",
    "TrainConfig",
    "TrainResult",
    "train",
    "build_data",
    "reference_losses",
]


# --------------------------------------------------------------------------------------------
# the operator inside the loss
# --------------------------------------------------------------------------------------------
def stencil_apply(f: torch.Tensor, diag: torch.Tensor, fluid: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
    """``A f`` for a 5/7-point Laplacian given its diagonal and fluid mask, batched.

    ``(A f)_i = scale * fluid_i * (diag_i f_i - sum_{j ~ i} fluid_j f_j)`` (off-diagonals
    ``-scale`` between neighbouring fluid cells; non-fluid rows and columns empty).

    Parameters
    ----------
    f : tensor of shape (batch, 1, *grid)
    diag, fluid : tensors broadcastable to ``f`` (diagonal / ``scale`` and 0/1 mask)
    """
    d = f.dim() - 2
    g = f * fluid
    pad = F.pad(g, (1, 1) * d)
    nb = torch.zeros_like(g)
    full = [slice(None), slice(None)] + [slice(1, -1)] * d
    for ax in range(d):
        lo = list(full)
        hi = list(full)
        lo[2 + ax] = slice(0, -2)
        hi[2 + ax] = slice(2, None)
        nb = nb + pad[tuple(lo)] + pad[tuple(hi)]
    return scale * fluid * (diag * g - nb)


@dataclass
class StencilGeometry:
    """One training matrix as a stencil: diagonal, fluid mask and off-diagonal scale.

    Build it with :meth:`from_matrix` (verified against the matrix) or :meth:`box`.
    """

    diag: np.ndarray
    fluid: np.ndarray
    scale: float = 1.0
    name: str = ""

    @property
    def grid(self) -> tuple:
        return tuple(self.diag.shape)

    @classmethod
    def from_matrix(cls, A, grid: Sequence[int], name: str = "", *, check: bool = True,
                    seed: int = 0) -> "StencilGeometry":
        """Read the stencil off a CSR matrix laid out on ``grid`` (C order).

        Raises ``ValueError`` unless ``A`` is a 5/7-point Laplacian of the form
        ``scale * (diag - fluid neighbours)`` (checked on random vectors).
        """
        import scipy.sparse as sp

        grid = tuple(int(s) for s in grid)
        A = sp.csr_matrix(A)
        n = int(np.prod(grid))
        if A.shape != (n, n):
            raise ValueError(f"A has shape {A.shape}; a matrix on grid {grid} must be ({n}, {n})")
        dg = np.asarray(A.diagonal(), dtype=np.float64)
        fluid = (np.diff(A.indptr) > 0) & (dg != 0)
        off = A.copy()
        off.setdiag(0)
        off.eliminate_zeros()
        scale = float(-off.data.min()) if off.nnz else 1.0
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError("A's off-diagonal entries must be negative (a Laplacian stencil)")
        geom = cls((dg / scale).reshape(grid), fluid.reshape(grid).astype(np.float64), scale, name)
        if check:
            rng = np.random.default_rng(seed)
            for _ in range(2):
                v = rng.standard_normal(n)
                ref = A @ v
                got = geom.apply_numpy(v)
                if np.linalg.norm(ref - got) > 1e-10 * (np.linalg.norm(ref) + 1e-300):
                    raise ValueError(
                        "A is not a 5/7-point Laplacian on the given grid (scale * (diag - "
                        "fluid neighbours), empty non-fluid rows); DCDM training needs one")
        return geom

    @classmethod
    def box(cls, grid: Sequence[int], bc: str = "neumann") -> "StencilGeometry":
        """The empty box with solid walls (``"neumann"``) or ``p = 0`` outside (``"dirichlet"``)."""
        grid = tuple(int(s) for s in grid)
        d = len(grid)
        if bc == "dirichlet":
            diag = np.full(grid, 2.0 * d)
        elif bc == "neumann":
            diag = np.zeros(grid)
            for ax, N in enumerate(grid):
                cnt = np.full(N, 2.0)
                cnt[0] -= 1
                cnt[-1] -= 1
                sh = [1] * d
                sh[ax] = N
                diag = diag + cnt.reshape(sh)
        else:
            raise ValueError(f"bc must be 'neumann' or 'dirichlet', got {bc!r}")
        return cls(diag, np.ones(grid), 1.0, f"box-{bc}")

    def apply_numpy(self, v: np.ndarray) -> np.ndarray:
        """``A v`` in float64 numpy (flat in, flat out)."""
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(1, 1, *self.grid))
        out = stencil_apply(t, torch.as_tensor(self.diag), torch.as_tensor(self.fluid), self.scale)
        return out.reshape(-1).numpy()

    def tensors(self, device, dtype=torch.float32):
        return (torch.as_tensor(self.diag, dtype=dtype, device=device),
                torch.as_tensor(self.fluid, dtype=dtype, device=device))


def dcdm_loss(f: torch.Tensor, b: torch.Tensor, Af: torch.Tensor,
              reduction: str = "mean") -> torch.Tensor:
    """The DCDM loss ``|| b - (f.b / f.Af) A f ||^2`` per sample (mean over the batch).

    Equal to the squared residual after one exact line search along ``f`` from ``x0 = 0``;
    invariant to ``f -> c f``.
    """
    fb = (f * b).flatten(1).sum(1)
    fAf = (f * Af).flatten(1).sum(1)
    tiny = torch.finfo(f.dtype).tiny
    alpha = fb / fAf.clamp_min(tiny)
    r = b - alpha.view(-1, *([1] * (b.dim() - 1))) * Af
    per = (r * r).flatten(1).sum(1)
    return per.mean() if reduction == "mean" else per


# --------------------------------------------------------------------------------------------
# configuration and data
# --------------------------------------------------------------------------------------------
DATA_KINDS = ("box", "mixture", "ritz-box", "mixture-ritz")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints and manifests).

    Parameters
    ----------
    dim : {2, 3}
    grid : int
        Cells per side of the training grid.
    variant : {"64", "128", "unet"}
        Network variant (see :class:`~neurosolve.neural.DCDMNet`).
    levels : int
        Pooling levels of the ``"unet"`` variant.
    channels : int
    geometry : bool
        Give the network the geometry channels (fluid mask, solid-face fraction).
    data : {"box", "mixture", "ritz-box", "mixture-ritz"}
        ``"box"``: the paper's recipe, the empty Neumann box, with exact DCT modes sampled on
        the fly. ``"ritz-box"``: the same matrix with Lanczos Ritz vectors (as the paper).
        ``"mixture"``: ``n_geometries`` random gallery geometries (solids, air, both wall
        kinds) with filtered-noise samples (:class:`FilterSampler`) plus the empty box's
        DCT modes. ``"mixture-ritz"``: the same geometries with Ritz-vector samples.
    n_geometries : int
        Geometries of the ``"mixture"`` data.
    ritz_m : int
        Lanczos steps per matrix for Ritz data.
    low_fraction, factor : float
        Fraction of the spectrum amplified and the amplification (0.55 and 9 in the paper).
    envelope : float
        Random smooth amplitude modulation of the samples (0 = the paper's stationary
        samples); see :func:`~neurosolve.neural.dcdm_data.smooth_envelope`.
    unroll : int
        Train through this many solver steps (:func:`unrolled_loss`; 1 = the paper's
        one-step loss; costs ``unroll`` network passes per sample).
    steps, batch, lr, lr_final : training schedule (Adam; cosine decay from lr to lr_final).
    seed : int
    max_minutes : float, optional
        Stop (and checkpoint) after this much wall time.
    """

    dim: int = 3
    grid: int = 32
    variant: str = "64"
    levels: int = 4
    channels: int = 16
    geometry: bool = False
    data: str = "box"
    n_geometries: int = 8
    ritz_m: int = 400
    low_fraction: float = 0.55
    factor: float = 9.0
    envelope: float = 0.0
    unroll: int = 1
    steps: int = 500
    batch: int = 8
    lr: float = 1e-3
    lr_final: float = 1e-4
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self):
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {', '.join(DATA_KINDS)}, got {self.data!r}")
        for name in ("grid", "steps", "batch", "ritz_m", "n_geometries", "unroll"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

    def network(self) -> DCDMNet:
        net = DCDMNet(self.dim, self.variant, channels=self.channels, levels=self.levels,
                      geometry=self.geometry)
        net.check_grid((self.grid,) * self.dim)
        return net


def _mixture_geometries(cfg: TrainConfig) -> list:
    """Random gallery grids for the mixture data (deterministic in the seed)."""
    from neurosolve.problems import poisson

    shape = (cfg.grid,) * cfg.dim
    grids = []
    for i in range(cfg.n_geometries):
        grids.append(poisson.random_geometry(shape, seed=cfg.seed * 1000 + i))
    return grids


def build_data(cfg: TrainConfig, progress: bool = False):
    """The sampler and the loss-side geometries for ``cfg``.

    Returns
    -------
    sampler : BoxSampler or MixtureSampler or RitzSampler
    geometries : list of StencilGeometry
        ``geometries[batch.geometry[i]]`` is the matrix of sample ``i``.
    """
    shape = (cfg.grid,) * cfg.dim
    if cfg.data == "box":
        return (BoxSampler(shape, "neumann", cfg.low_fraction, cfg.factor, seed=cfg.seed,
                           envelope=cfg.envelope),
                [StencilGeometry.box(shape, "neumann")])
    if cfg.data == "ritz-box":
        from neurosolve.problems import poisson

        grid = poisson.box(shape)
        A = grid.matrix()
        geom = StencilGeometry.from_matrix(A, shape, "box")
        s = RitzSampler.from_matrix(A, shape, cfg.ritz_m, factor=cfg.factor,
                                    shift=int(round((cfg.low_fraction - 0.5) * cfg.ritz_m)),
                                    seed=cfg.seed)
        return s, [geom]
    samplers = [BoxSampler(shape, "neumann", cfg.low_fraction, cfg.factor, seed=cfg.seed,
                           envelope=cfg.envelope)]
    geoms = [StencilGeometry.box(shape, "neumann")]
    grids = _mixture_geometries(cfg)
    it = grids
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(grids, desc="Ritz vectors", leave=False)
    for i, g in enumerate(it):
        A = g.matrix()
        geoms.append(StencilGeometry.from_matrix(A, shape, f"geometry-{i}"))
        if cfg.data == "mixture-ritz":
            samplers.append(RitzSampler.from_matrix(
                A, shape, cfg.ritz_m, factor=cfg.factor,
                shift=int(round((cfg.low_fraction - 0.5) * cfg.ritz_m)), seed=cfg.seed * 1000 + i))
        else:
            samplers.append(FilterSampler(A, shape, nullspace=g.nullspace(),
                                          low_fraction=cfg.low_fraction, factor=cfg.factor,
                                          seed=cfg.seed * 1000 + i, envelope=cfg.envelope))
    return MixtureSampler(samplers, seed=cfg.seed), geoms


def _loss_on_batch(net, batch, geoms_t, device, unroll: int = 1,
                   truncate: int = 2) -> torch.Tensor:
    b = torch.as_tensor(batch.b, device=device).unsqueeze(1)
    diag = torch.stack([geoms_t[g][0] for g in batch.geometry]).unsqueeze(1)
    fluid = torch.stack([geoms_t[g][1] for g in batch.geometry]).unsqueeze(1)
    scale = torch.as_tensor([geoms_t[g][2] for g in batch.geometry], dtype=b.dtype,
                            device=device).view(-1, *([1] * (b.dim() - 1)))
    if unroll == 1:
        f = net(_net_input(net, b, diag * scale, fluid)) * fluid
        Af = stencil_apply(f, diag, fluid) * scale
        return dcdm_loss(f, b, Af, reduction="none")
    return unrolled_loss(net, b, diag, fluid, scale, unroll, truncate)


def _bdot(u, v):
    return (u * v).flatten(1).sum(1).view(-1, *([1] * (u.dim() - 1)))


def unrolled_loss(net, b, diag, fluid, scale, steps: int, truncate: int = 2) -> torch.Tensor:
    """``||r_k||^(2/k)`` after ``k = steps`` DCDM steps (paper step, ``truncate`` directions
    kept) from ``x0 = 0``, per sample; ``steps = 1`` is the paper's loss.

    Training through several steps rewards directions that keep working on the residuals
    the solver itself produces (one-step training only sees the data distribution).
    """
    tiny = torch.finfo(b.dtype).tiny
    r = b
    kept = []
    for _ in range(steps):
        rn = r / torch.sqrt(_bdot(r, r)).clamp_min(tiny)
        f = net(_net_input(net, rn, diag * scale, fluid)) * fluid
        for d, Ad, dAd in kept[-truncate:] if truncate else []:
            f = f - _bdot(f, Ad) / dAd * d
        Af = stencil_apply(f, diag, fluid) * scale
        fAf = _bdot(f, Af).clamp_min(tiny)
        r = r - _bdot(f, r) / fAf * Af
        kept.append((f, Af, fAf))
    rr = (r * r).flatten(1).sum(1) / (b * b).flatten(1).sum(1)
    return rr.clamp_min(tiny) ** (1.0 / steps)


def _net_input(net, b, diag, fluid):
    """``b`` plus, for a ``geometry=True`` network, its geometry channels."""
    if not getattr(net, "geometry", False):
        return b
    dim = b.dim() - 2
    g = geometry_channels(diag[:, 0], fluid[:, 0], dim).transpose(0, 1)
    return torch.cat([b, g.to(b.dtype)], dim=1)


def reference_losses(sampler, geoms: Sequence[StencilGeometry], batch: int = 16,
                     step: int = 10**6, net: torch.nn.Module | None = None) -> dict[str, float]:
    """Mean one-step residual on held-out samples for classical directions (and ``net``).

    ``"identity"`` (a steepest-descent / first CG step), ``"jacobi"`` (``D^{-1} b``) and,
    when given, ``"network"``.
    """
    data = sampler.sample(batch, step)
    geoms_t = [(*g.tensors("cpu", torch.float64), g.scale) for g in geoms]
    b = torch.as_tensor(data.b, dtype=torch.float64).unsqueeze(1)
    diag = torch.stack([geoms_t[g][0] for g in data.geometry]).unsqueeze(1)
    fluid = torch.stack([geoms_t[g][1] for g in data.geometry]).unsqueeze(1)
    out = {}
    dirs = {"identity": b, "jacobi": b / torch.where(diag > 0, diag, torch.ones_like(diag))}
    if net is not None:
        was = net.training
        net.eval()
        with torch.no_grad():
            dirs["network"] = net(_net_input(net, b, diag, fluid).float()).double()
        net.train(was)
    for name, f in dirs.items():
        f = f * fluid
        out[name] = float(dcdm_loss(f, b, stencil_apply(f, diag, fluid)).item())
    return out


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: DCDMNet
    config: TrainConfig
    losses: list = field(default_factory=list)
    steps_done: int = 0
    wall_time: float = 0.0
    stopped_early: bool = False
    final_loss: float = float("nan")


def _lr_at(cfg: TrainConfig, step: int) -> float:
    t = min(step / max(cfg.steps - 1, 1), 1.0)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def _device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def train(cfg: TrainConfig, *, checkpoint: str | pathlib.Path | None = None,
          checkpoint_every: int = 50, resume: bool = False, device: str | None = "auto",
          progress: bool = True, loss_png: str | pathlib.Path | None = None,
          data=None, log_every: int = 10, stop_after: int | None = None,
          stop_at: int | None = None,
          init: str | pathlib.Path | dict | None = None) -> TrainResult:
    """Train a :class:`~neurosolve.neural.DCDMNet` with the DCDM loss.

    Parameters
    ----------
    cfg : TrainConfig
    checkpoint : path, optional
        Where to save ``{model, optimizer, step, losses, config}`` every
        ``checkpoint_every`` steps and at the end.
    resume : bool
        Continue from ``checkpoint`` if it exists (same config required). The data are a
        function of ``(seed, step)``, so a resumed run sees the same samples as an
        uninterrupted one.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
    progress : bool
        tqdm bar with the running loss.
    loss_png : path, optional
        Write the loss curve there at the end.
    data : (sampler, geometries), optional
        Prebuilt :func:`build_data` output (otherwise built from ``cfg``).
    stop_after : int, optional
        Run at most this many steps in this call (checkpointed; resume later).
    stop_at : int, optional
        End once this many steps are done in all (the schedule stays that of ``cfg.steps``).
    init : path or state dict, optional
        Start from these weights (a training checkpoint, a shipped ``NAME.pt`` or a state
        dict of the same architecture) instead of a random initialization: e.g. pretrain
        on a small grid, then fine-tune on the target grid (the network is resolution
        independent). A geometry-free network may start a ``geometry=True`` one (the new
        input channels start at zero weight).

    Returns
    -------
    TrainResult
    """
    dev = _device(device)
    torch.manual_seed(cfg.seed)
    net = cfg.network().to(dev)
    if init is not None:
        net.load_state_dict(_widen_stem(_init_state(init), net))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    losses: list[float] = []
    start = 0
    elapsed0 = 0.0
    ckpt = pathlib.Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        saved = json.loads(state["config"])
        diff = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                if saved.get(k) != v and k != "max_minutes"}
        if diff:
            raise ValueError(f"checkpoint {ckpt} was written with a different config "
                             f"(saved, requested): {diff}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        losses = [float(v) for v in state["losses"]]
        elapsed0 = float(state.get("wall_time", 0.0))
    sampler, geoms = data if data is not None else build_data(cfg, progress=progress)
    geoms_t = [(*g.tensors(dev), float(g.scale)) for g in geoms]

    def save(step):
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "losses": torch.tensor(losses, dtype=torch.float64),
                    "config": json.dumps(dataclasses.asdict(cfg)),
                    "net_config": json.dumps(net.config()),
                    "wall_time": elapsed0 + time.perf_counter() - t0}, tmp)
        tmp.replace(ckpt)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train dcdm", leave=True)
    t0 = time.perf_counter()
    net.train()
    stopped = False
    step = start
    try:
        for step in range(start, cfg.steps):
            if (cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes) \
                    or (stop_after is not None and step - start >= stop_after) \
                    or (stop_at is not None and step >= stop_at):
                stopped = True
                break
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            batch = sampler.sample(cfg.batch, step)
            loss = _loss_on_batch(net, batch, geoms_t, dev, unroll=cfg.unroll).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            if bar is not None:
                bar.update(1)
                if (step + 1) % log_every == 0 or step == start:
                    bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}")
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                save(step + 1)
        else:
            step = cfg.steps
    finally:
        if bar is not None:
            bar.close()
    done = step if stopped else cfg.steps
    save(done)
    net.eval()
    if loss_png is not None and losses:
        plot_losses(losses, loss_png, title=f"DCDM {cfg.dim}D {cfg.grid} {cfg.variant} {cfg.data}")
    tail = losses[-max(1, min(50, len(losses))):]
    return TrainResult(net, cfg, losses, done, elapsed0 + time.perf_counter() - t0, stopped,
                       float(np.mean(tail)) if tail else float("nan"))


def _init_state(init) -> dict:
    if isinstance(init, dict):
        return init
    state = torch.load(init, map_location="cpu", weights_only=True)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return {k: v.float() for k, v in state.items()}


def _widen_stem(state: dict, net: DCDMNet) -> dict:
    """Zero-pad the first convolution's input channels of ``state`` to fit ``net``.

    Lets a geometry-free network (1 input channel) start a ``geometry=True`` one (3 input
    channels): the new channels' weights are zero, so the initial function is the old one.
    """
    w = state.get("stem.weight")
    want = net.stem.weight.shape[1]
    if w is not None and w.shape[1] < want:
        pad = torch.zeros((w.shape[0], want - w.shape[1], *w.shape[2:]), dtype=w.dtype)
        state = dict(state, **{"stem.weight": torch.cat([w, pad], dim=1)})
    return state


def plot_losses(losses: Sequence[float], path, title: str = "DCDM training") -> None:
    """Loss curve (raw and 25-step moving average, log scale) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(y, lw=0.6, alpha=0.5, label="batch loss")
    if y.size >= 25:
        ax.semilogy(np.arange(24, y.size), np.convolve(y, np.ones(25) / 25, mode="valid"),
                    lw=1.5, label="moving average (25)")
    ax.set_xlabel("step")
    ax.set_ylabel("one-step residual (loss)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_checkpoint(path, device: str = "cpu") -> tuple[DCDMNet, TrainConfig, dict]:
    """Rebuild the network and config stored in a training checkpoint."""
    state = torch.load(path, map_location=device, weights_only=True)
    cfg = TrainConfig(**json.loads(state["config"]))
    net = DCDMNet(**json.loads(state["net_config"]))
    net.load_state_dict(state["model"])
    net.eval()
    return net, cfg, state



# --------------------------------------------------------------------------------------------
# measuring a trained model
# --------------------------------------------------------------------------------------------
def evaluation_problems(dim: int, n: int, seed: int = 0) -> list:
    """Unseen gallery geometries for measuring a model: ``(name, PoissonSystem)`` pairs.

    Obstacles the training never used (fixed seeds far from the training seeds), with and
    without air, right-hand sides from :func:`~neurosolve.problems.poisson.rhs_blobs`.
    """
    from neurosolve.problems import poisson

    shape = (n,) * dim
    grids = [
        ("sphere", poisson.sphere(shape, center=[0.42 * n] * dim, radius=0.22 * n)),
        ("ellipsoids", poisson.ellipsoids(shape, n=3, seed=9001 + seed)),
        ("pool+obstacles", poisson.pool(shape, depth=0.7, obstacles=2, seed=9002 + seed,
                                        waves=0.1)),
    ]
    return [(name, g.system(poisson.rhs_blobs(g, seed=seed))) for name, g in grids]


def evaluate_model(model, dim: int, sizes: Sequence[int] | None = None,
                   rtols: Sequence[float] = (1e-4, 1e-6), maxiter: int = 2000,
                   progress: bool = False) -> list[dict]:
    """Iterations of CG and of DCDM with ``model`` on :func:`evaluation_problems`.

    Returns one row per (geometry, size, rtol): ``cg``, ``dcdm``, their ratio, whether
    DCDM converged, SpMVs of both, network evaluations and the iteration at which the
    stall switch turned the network off (``None``: never).
    """
    from neurosolve.core import solve
    from neurosolve.solvers.cg import CG
    from neurosolve.solvers.dcdm import DCDM

    sizes = sizes if sizes is not None else ((256,) if dim == 2 else (32,))
    rows = []
    for n in sizes:
        for name, prob in evaluation_problems(dim, n):
            for rtol in rtols:
                cg = solve(prob, CG(rtol=rtol, maxiter=maxiter))
                dc = solve(prob, DCDM(model=model, rtol=rtol, maxiter=maxiter))
                rows.append({"geometry": name, "grid": [n] * dim, "rtol": rtol,
                             "cg": cg.n_iter, "dcdm": dc.n_iter,
                             "ratio": round(cg.n_iter / max(dc.n_iter, 1), 2),
                             "converged": bool(dc.success),
                             "cg_matvecs": int(cg.stats.get("matvecs", 0)),
                             "dcdm_matvecs": int(dc.stats.get("matvecs", 0)),
                             "network_evaluations": int(dc.stats.get("network_evaluations", 0)),
                             "network_switched_off_at": dc.stats.get("network_switched_off_at")})
                if progress:
                    print(rows[-1], flush=True)
    return rows
