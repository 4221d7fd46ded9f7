"""Training DCDM networks: configuration, data, the stencil of the loss, evaluation.

The loop itself (Adam, checkpoints, resume, progress) is
:func:`neurosolve.neural.train_preconditioner`; :func:`train` builds the paper's network and
data from a :class:`TrainConfig` and hands them to it.

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
import pathlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from neurosolve.neural.dcdm_data import BoxSampler, FilterSampler, MixtureSampler, RitzSampler
from neurosolve.neural.dcdm_net import DCDMNet
from neurosolve.neural.training import (StencilGeometry, TrainingData, TrainResult,
                                        _module_input, dcdm_loss, stencil_apply,
                                        train_preconditioner)

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
            dirs["network"] = net(_module_input(net, b, diag, fluid).float()).double()
        net.train(was)
    for name, f in dirs.items():
        f = f * fluid
        out[name] = float(dcdm_loss(f, b, stencil_apply(f, diag, fluid)).item())
    return out


def train(cfg: TrainConfig, *, checkpoint: str | pathlib.Path | None = None,
          checkpoint_every: int = 50, resume: bool = False, device: str | None = "auto",
          progress: bool = True, loss_png: str | pathlib.Path | None = None,
          data=None, log_every: int = 10, stop_after: int | None = None,
          stop_at: int | None = None,
          init: str | pathlib.Path | dict | None = None, shards: int | None = None,
          world=None) -> TrainResult:
    """Train the :class:`~neurosolve.neural.DCDMNet` that ``cfg`` describes.

    Builds the network (seeded by ``cfg.seed``) and the data of :func:`build_data`, then
    runs :func:`~neurosolve.neural.train_preconditioner` with the DCDM loss (or the
    ``cfg.unroll``-step loss).

    Parameters
    ----------
    cfg : TrainConfig
    checkpoint, checkpoint_every, resume, device, progress, loss_png, log_every,
    stop_after, stop_at, shards, world
        As in :func:`~neurosolve.neural.train_preconditioner`; a resumed run must have
        the same ``cfg`` (``max_minutes`` may differ) and ``shards``.
    data : (sampler, geometries), optional
        Prebuilt :func:`build_data` output (otherwise built from ``cfg``).
    init : path or state dict, optional
        Start from these weights (a training checkpoint, a shipped ``NAME.pt`` or a state
        dict of the same architecture) instead of a random initialization: e.g. pretrain
        on a small grid, then fine-tune on the target grid (the network is resolution
        independent). A geometry-free network may start a ``geometry=True`` one (the new
        input channels start at zero weight).

    Returns
    -------
    TrainResult
        ``config`` is ``cfg``.
    """
    torch.manual_seed(cfg.seed)
    net = cfg.network()
    if init is not None:
        net.load_state_dict(_widen_stem(_init_state(init), net))
    sampler, geoms = data if data is not None else build_data(cfg, progress=progress)
    res = train_preconditioner(
        net, TrainingData(sampler, geoms),
        loss="dcdm" if cfg.unroll == 1 else f"unrolled:{cfg.unroll}", steps=cfg.steps,
        batch=cfg.batch, lr=cfg.lr, lr_final=cfg.lr_final, seed=cfg.seed, device=device,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        max_minutes=cfg.max_minutes, stop_after=stop_after, stop_at=stop_at,
        progress=progress, loss_png=loss_png, log_every=log_every,
        config=dataclasses.asdict(cfg),
        desc=f"DCDM {cfg.dim}D {cfg.grid} {cfg.variant} {cfg.data}", shards=shards,
        world=world)
    res.config = cfg
    return res


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

    Returns one row per (geometry, size, rtol): ``cg``, ``dcdm``, ``iteration_ratio``
    (DCDM / CG: below 1, DCDM takes fewer iterations), whether
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
                             "iteration_ratio": round(dc.n_iter / max(cg.n_iter, 1), 3),
                             "converged": bool(dc.success),
                             "cg_matvecs": int(cg.stats.get("matvecs", 0)),
                             "dcdm_matvecs": int(dc.stats.get("matvecs", 0)),
                             "network_evaluations": int(dc.stats.get("network_evaluations", 0)),
                             "network_switched_off_at": dc.stats.get("network_switched_off_at")})
                if progress:
                    print(rows[-1], flush=True)
    return rows
