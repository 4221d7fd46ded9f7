"""The one training loop for learned preconditioners and direction generators.

:func:`train_preconditioner` trains any ``torch.nn.Module`` that maps a grid-shaped vector
``(batch, 1, *grid)`` to a vector of the same shape (the convention of
:class:`~neurosolve.neural.TorchPreconditioner` and of ``DCDM(model=...)``), on gallery
problems or on any sampler of right-hand sides, with one of three losses:

``"dcdm"``
    The scale-invariant one-step loss of Kaneda et al. (2023, section 4): for a unit-norm
    ``b`` and ``f = module(b)``, the squared residual after one exact line search along
    ``f`` from ``x0 = 0``, ``|| b - (f.b / f.Af) A f ||^2``. It needs no reference
    solutions and does not see the scale of ``f``: the module learns ``A^{-1}`` up to a
    constant, which is all DCDM's line search needs.
``"energy"``
    The error-energy reduction of one preconditioned Richardson step, the quantity a
    multigrid cycle is built to shrink: with a sampled error ``e0`` and its residual
    ``r0 = A e0``, ``e1 = e0 - M r0`` and the loss is ``(e1.A e1) / (e0.A e0)``. Unlike
    ``"dcdm"`` it sees the scale of the output, so the module learns an approximate inverse
    that can serve as a PCG preconditioner as it is (the loss of learned multigrid,
    Greenfeld et al. 2019; Katrutsa et al. 2020).
``"unrolled:K"``
    ``||r_K||^(2/K)`` after ``K`` DCDM steps (two directions kept); ``"unrolled:1"`` is
    ``"dcdm"``.

Or a callable ``loss(batch) -> per-sample tensor`` taking a :class:`LossBatch`.

Training is deterministic in ``seed``: the samples are a function of ``(seed, step)``, so a
run resumed from its checkpoint sees the same samples as one that was never interrupted.

References
----------
.. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate Direction
   Method for Iteratively Solving Linear Systems", ICML 2023, arXiv:2205.10763.
.. [2] D. Greenfeld, M. Galun, R. Kimmel, I. Yavneh, R. Basri, "Learning to Optimize
   Multigrid PDE Solvers", ICML 2019, arXiv:1902.10248.
.. [3] A. Katrutsa, T. Daulbaev, I. Oseledets, "Black-box learning of multigrid parameters",
   J. Comput. Appl. Math. 368 (2020), arXiv:1711.03825.
.. [4] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "train_preconditioner",
    "training_data",
    "TrainingData",
    "LossBatch",
    "TrainResult",
    "StencilGeometry",
    "dcdm_loss",
    "energy_loss",
    "unrolled_loss",
    "stencil_apply",
    "plot_losses",
]


# --------------------------------------------------------------------------------------------
# operators inside the losses
# --------------------------------------------------------------------------------------------
def stencil_apply(f: torch.Tensor, diag: torch.Tensor, fluid: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
    """``A f`` for a 5/7-point Laplacian given its diagonal and fluid mask, batched.

    ``(A f)_i = scale * fluid_i * (diag_i f_i - sum_{j ~ i} fluid_j f_j)`` (off-diagonals
    ``-scale`` between neighbouring fluid cells; non-fluid rows and columns empty).
    ``f``, ``diag`` and ``fluid`` have shape ``(batch, 1, *grid)`` (``diag`` and ``fluid``
    may broadcast over the batch).
    """
    dim = f.dim() - 2
    g = f * fluid
    nb = torch.zeros_like(g)
    for ax in range(2, 2 + dim):
        n = g.shape[ax]
        nb.narrow(ax, 1, n - 1).add_(g.narrow(ax, 0, n - 1))
        nb.narrow(ax, 0, n - 1).add_(g.narrow(ax, 1, n - 1))
    return scale * fluid * (diag * g - nb)


def _bdot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample dot products, shaped to broadcast against ``u``."""
    return (u * v).flatten(1).sum(1).view(-1, *([1] * (u.dim() - 1)))


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


class _Operator:
    """One training matrix as seen by the losses: ``apply`` (batched), ``diag``, ``fluid``."""

    def __init__(self, matrix: Any, grid: tuple, device, dtype):
        self.grid = grid
        if isinstance(matrix, StencilGeometry):
            self.stencil = True
            self.scale = float(matrix.scale)
            self.diag = torch.as_tensor(matrix.diag * matrix.scale, dtype=dtype, device=device)
            self.fluid = torch.as_tensor(matrix.fluid, dtype=dtype, device=device)
            self._unit_diag = torch.as_tensor(matrix.diag, dtype=dtype, device=device)
            return
        import scipy.sparse as sp

        from neurosolve.operators import scipy_to_torch_csr

        A = getattr(getattr(matrix, "A", None), "matrix", matrix)  # a LinearSystem or a matrix
        if torch.is_tensor(A):
            from neurosolve.operators import _torch_sparse_to_scipy

            A = _torch_sparse_to_scipy(A) if A.is_sparse or A.layout == torch.sparse_csr \
                else A.detach().cpu().numpy()
        A = sp.csr_matrix(A)
        n = int(np.prod(grid))
        if A.shape != (n, n):
            raise ValueError(f"a training matrix has shape {A.shape}; the sampler's grid {grid} "
                             f"needs ({n}, {n})")
        self.stencil = False
        d = np.asarray(A.diagonal(), dtype=np.float64)
        self.diag = torch.as_tensor(d.reshape(grid), dtype=dtype, device=device)
        self.fluid = torch.as_tensor(((np.diff(A.indptr) > 0) & (d != 0)).reshape(grid),
                                     dtype=dtype, device=device)
        self.matrix = scipy_to_torch_csr(A, dtype=dtype, device=device)

    def apply(self, f: torch.Tensor) -> torch.Tensor:
        if self.stencil:
            return stencil_apply(f, self._unit_diag, self.fluid, self.scale)
        k = f.shape[0]
        return (self.matrix @ f.reshape(k, -1).T).T.reshape(f.shape)


class _BatchOperator:
    """``A f`` for a batch whose samples belong to different training matrices."""

    def __init__(self, ops: Sequence[_Operator], which: np.ndarray, device):
        self.ops = ops
        self.which = np.asarray(which)
        self.groups = [(int(g), torch.as_tensor(np.nonzero(self.which == g)[0], device=device))
                       for g in np.unique(self.which)]
        self.fluid = torch.stack([ops[g].fluid for g in self.which]).unsqueeze(1)
        self.diag = torch.stack([ops[g].diag for g in self.which]).unsqueeze(1)
        self.all_stencil = all(op.stencil for op in ops)
        if self.all_stencil:
            self._unit = torch.stack([ops[g]._unit_diag for g in self.which]).unsqueeze(1)
            self._scale = torch.as_tensor([ops[g].scale for g in self.which],
                                          dtype=self.diag.dtype, device=device).view(
                -1, *([1] * (self.diag.dim() - 1)))

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        if self.all_stencil:
            return stencil_apply(f, self._unit, self.fluid) * self._scale
        if len(self.groups) == 1:
            return self.ops[self.groups[0][0]].apply(f)
        out = torch.zeros_like(f)
        for g, idx in self.groups:
            out = out.index_copy(0, idx, self.ops[g].apply(f.index_select(0, idx)))
        return out


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
@dataclass
class LossBatch:
    """What a loss sees: the batch, the matrices and the module.

    Attributes
    ----------
    b : torch.Tensor, shape (batch, 1, *grid)
        Unit-norm samples (zero on non-fluid cells).
    apply_A : callable
        ``f -> A f`` for a tensor shaped like ``b`` (each sample with its own matrix).
    fluid : torch.Tensor, shape (batch, 1, *grid)
        1 on cells with an equation, 0 elsewhere.
    diag : torch.Tensor, shape (batch, 1, *grid)
        The diagonal of each sample's matrix.
    module : torch.nn.Module
    geometry : numpy.ndarray of int
        The index of each sample's matrix (into the training data's operators), for a
        module that depends on the geometry (e.g. multigrid hierarchies).
    """

    b: torch.Tensor
    apply_A: Callable
    fluid: torch.Tensor
    diag: torch.Tensor
    module: torch.nn.Module
    geometry: Any = None

    def direction(self, r: torch.Tensor) -> torch.Tensor:
        """``module(r)`` on the fluid cells (with geometry channels for a network that takes
        them)."""
        return self.module(_module_input(self.module, r, self.diag, self.fluid)) * self.fluid


def _module_input(module, r, diag, fluid):
    """``r`` plus, for a ``geometry=True`` network, its geometry channels."""
    if not getattr(module, "geometry", False):
        return r
    from neurosolve.neural.dcdm_net import geometry_channels

    g = geometry_channels(diag[:, 0], fluid[:, 0], r.dim() - 2).transpose(0, 1)
    return torch.cat([r, g.to(r.dtype)], dim=1)


def dcdm_loss(f: torch.Tensor, b: torch.Tensor, Af: torch.Tensor,
              reduction: str = "mean") -> torch.Tensor:
    """The DCDM loss ``|| b - (f.b / f.Af) A f ||^2`` (per sample, or their mean).

    The squared residual after one exact line search along ``f`` from ``x0 = 0``;
    invariant to ``f -> c f``.

    Parameters
    ----------
    f, b, Af : torch.Tensor, shape (batch, ...)
        Directions, unit-norm right-hand sides and ``A f``.
    reduction : {"mean", "none"}

    Examples
    --------
    >>> import torch
    >>> from neurosolve.neural import dcdm_loss
    >>> b = torch.tensor([[1.0, 0.0]])
    >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> float(dcdm_loss(b @ torch.linalg.inv(A), b, b))  # f = A^{-1} b: zero residual
    0.0
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    fb = (f * b).flatten(1).sum(1)
    fAf = (f * Af).flatten(1).sum(1)
    tiny = torch.finfo(f.dtype).tiny
    alpha = fb / fAf.clamp_min(tiny)
    r = b - alpha.view(-1, *([1] * (b.dim() - 1))) * Af
    per = (r * r).flatten(1).sum(1)
    return per.mean() if reduction == "mean" else per


def energy_loss(batch: LossBatch) -> torch.Tensor:
    """``(e1.A e1) / (e0.A e0)`` per sample, ``e0 = batch.b``, ``e1 = e0 - M A e0``.

    ``M`` is the module applied to the unit-norm residual and scaled back (the convention
    of :class:`~neurosolve.neural.TorchPreconditioner`), so a linear module is the linear
    operator ``M``. Below 1 the module reduces the error in the energy norm; 0 means
    ``M = A^{-1}`` on the sample.
    """
    tiny = torch.finfo(batch.b.dtype).tiny
    e0 = batch.b
    r0 = batch.apply_A(e0)
    rn = torch.sqrt(_bdot(r0, r0)).clamp_min(tiny)
    e1 = e0 - batch.direction(r0 / rn) * rn
    return (_bdot(e1, batch.apply_A(e1)).flatten() /
            _bdot(e0, r0).flatten().clamp_min(tiny))


def unrolled_loss(batch: LossBatch, steps: int, truncate: int = 2) -> torch.Tensor:
    """``||r_k||^(2/k)`` after ``k = steps`` DCDM steps from ``x0 = 0`` (``truncate``
    directions kept), per sample; ``steps = 1`` is the DCDM loss.

    Training through several steps rewards directions that keep working on the residuals
    the solver itself produces (one-step training only sees the data distribution).
    """
    b = batch.b
    tiny = torch.finfo(b.dtype).tiny
    r = b
    kept: list = []
    for _ in range(steps):
        rn = r / torch.sqrt(_bdot(r, r)).clamp_min(tiny)
        f = batch.direction(rn)
        for d, Ad, dAd in kept[-truncate:] if truncate else []:
            f = f - _bdot(f, Ad) / dAd * d
        Af = batch.apply_A(f)
        fAf = _bdot(f, Af).clamp_min(tiny)
        r = r - _bdot(f, r) / fAf * Af
        kept.append((f, Af, fAf))
    rr = (r * r).flatten(1).sum(1) / (b * b).flatten(1).sum(1)
    return rr.clamp_min(tiny) ** (1.0 / steps)


def _dcdm_batch_loss(batch: LossBatch) -> torch.Tensor:
    f = batch.direction(batch.b)
    return dcdm_loss(f, batch.b, batch.apply_A(f), reduction="none")


def _resolve_loss(loss) -> tuple[Callable, str]:
    if callable(loss):
        return loss, getattr(loss, "__name__", type(loss).__name__)
    if loss == "dcdm":
        return _dcdm_batch_loss, "dcdm"
    if loss == "energy":
        return energy_loss, "energy"
    if isinstance(loss, str) and loss.startswith("unrolled:"):
        try:
            k = int(loss.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return (_dcdm_batch_loss if k == 1 else (lambda batch: unrolled_loss(batch, k))), loss
    raise ValueError(f"loss must be 'dcdm', 'energy', 'unrolled:K' (K >= 1) or a callable "
                     f"loss(batch) -> per-sample tensor; got {loss!r}")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """A sampler of right-hand sides and the matrices its samples belong to.

    Parameters
    ----------
    sampler : object
        ``sampler.sample(batch, step)`` returns a
        :class:`~neurosolve.neural.dcdm_data.DataBatch` (``b`` of shape
        ``(batch, *grid)``, unit norm; ``geometry``: the index of each sample's matrix),
        deterministic in ``step``; ``sampler.grid`` is the grid shape. The samplers of
        :mod:`neurosolve.neural.dcdm_data` (``BoxSampler``, ``FilterSampler``,
        ``RitzSampler``, ``MixtureSampler``) qualify.
    operators : list
        One per geometry index: a ``StencilGeometry`` (fast, matrix-free), a scipy sparse
        matrix, or a problem with an explicit matrix.
    """

    sampler: Any
    operators: Sequence[Any]

    def __post_init__(self):
        if not callable(getattr(self.sampler, "sample", None)):
            raise TypeError(f"sampler must have a sample(batch, step) method, got "
                            f"{type(self.sampler).__name__}")
        grid = getattr(self.sampler, "grid", None)
        if grid is None:
            raise TypeError("sampler must have a .grid attribute (the grid shape)")
        self.grid = tuple(int(s) for s in grid)
        self.operators = list(self.operators)
        if not self.operators:
            raise ValueError("operators must list at least one matrix")


def training_data(problems: Any, *, low_fraction: float = 0.55, factor: float = 9.0,
                  envelope: float = 0.0, seed: int = 0) -> TrainingData:
    """Spectrally biased samples on gallery problems (one or a list, same grid shape).

    Each problem contributes filtered white noise ``h(A) g`` that amplifies the lowest
    ``low_fraction`` of the spectrum by ``factor`` (the paper's bias towards the modes
    CG resolves last; :class:`~neurosolve.neural.dcdm_data.FilterSampler`), projected off
    the null space and normalized; samples are drawn from the problems uniformly.

    Parameters
    ----------
    problems : CellGrid, PoissonSystem, or a list of them
        Gallery geometries (``neurosolve.problems.poisson``), all on one grid shape.
    low_fraction, factor : float
        Part of the spectrum amplified and by how much (0.55 and 9 in the paper).
    envelope : float
        Random smooth amplitude modulation (0: stationary samples).
    seed : int

    Returns
    -------
    TrainingData
    """
    from neurosolve.neural.dcdm_data import FilterSampler, MixtureSampler

    items = list(problems) if isinstance(problems, (list, tuple)) else [problems]
    if not items:
        raise ValueError("problems is empty: pass a gallery grid or problem, or a list of them")
    samplers, ops = [], []
    for i, item in enumerate(items):
        grid = getattr(item, "grid", item)  # a PoissonSystem carries its CellGrid
        if not hasattr(grid, "matrix") or not hasattr(grid, "shape"):
            raise TypeError(f"problems[{i}] is a {type(item).__name__}; expected a gallery "
                            "CellGrid or PoissonSystem (neurosolve.problems.poisson), or pass "
                            "TrainingData(sampler, operators) for other matrices")
        A = grid.matrix()
        shape = tuple(grid.shape)
        samplers.append(FilterSampler(A, shape, nullspace=grid.nullspace(),
                                      low_fraction=low_fraction, factor=factor,
                                      seed=seed * 1000 + i, envelope=envelope))
        try:
            ops.append(StencilGeometry.from_matrix(A, shape, f"problem-{i}"))
        except ValueError:  # variable coefficients: not a constant stencil
            ops.append(A)
    return TrainingData(MixtureSampler(samplers, seed=seed), ops)


def _as_training_data(data: Any) -> TrainingData:
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, tuple) and len(data) == 2 and callable(getattr(data[0], "sample", None)):
        return TrainingData(*data)
    if callable(getattr(data, "sample", None)):
        raise TypeError("a sampler alone does not say which matrix its samples belong to: pass "
                        "TrainingData(sampler, operators) or (sampler, operators)")
    return training_data(data)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train_preconditioner` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained module (eval mode, on the training device).
    config : dict or TrainConfig
        What defined the run (stored in the checkpoint; checked on resume).
    losses : list of float
        Batch loss per optimizer step (all steps, including those before a resume).
    steps_done : int
    wall_time : float
        Seconds of training, summed over resumed runs.
    stopped_early : bool
        Ended by ``max_minutes``, ``stop_after`` or ``stop_at`` before ``steps``.
    final_loss : float
        Mean of the last (up to) 50 batch losses.
    """

    model: torch.nn.Module
    config: Any
    losses: list = field(default_factory=list)
    steps_done: int = 0
    wall_time: float = 0.0
    stopped_early: bool = False
    final_loss: float = float("nan")


def cosine_lr(lr: float, lr_final: float, steps: int, step: int) -> float:
    """Cosine decay from ``lr`` (step 0) to ``lr_final`` (step ``steps - 1``)."""
    t = min(step / max(steps - 1, 1), 1.0)
    return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * t))


def resolve_device(device: Any) -> torch.device:
    """``"auto"``/None: CUDA when present, else the CPU; anything else as torch reads it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu' or "
                         "'auto'")
    return dev


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def train_preconditioner(module: torch.nn.Module, data: Any, *, loss: Any = "dcdm",
                         steps: int = 500, batch: int = 8, lr: float = 1e-3,
                         lr_final: float = 1e-4, seed: int = 0, device: Any = "auto",
                         checkpoint: str | pathlib.Path | None = None,
                         checkpoint_every: int = 50, resume: bool = False,
                         max_minutes: float | None = None, stop_after: int | None = None,
                         stop_at: int | None = None, progress: bool = True,
                         loss_png: str | pathlib.Path | None = None, log_every: int = 10,
                         config: dict | None = None, desc: str | None = None,
                         shards: int | None = None, world: Any = None,
                         dtype: torch.dtype = torch.float32) -> TrainResult:
    """Train ``module`` as a preconditioner / direction generator (Adam, cosine schedule).

    Parameters
    ----------
    module : torch.nn.Module
        Maps ``(batch, 1, *grid)`` to the same shape (a network with ``geometry = True``
        also receives the two geometry channels of
        :func:`~neurosolve.neural.dcdm_net.geometry_channels`). Trained in ``dtype``
        (float32 by default).
    data : CellGrid, PoissonSystem, a list of them, TrainingData or (sampler, operators)
        Gallery problems get the spectrally biased samples of :func:`training_data`.
    loss : {"dcdm", "energy", "unrolled:K"} or callable
        See the module docstring. A callable takes a :class:`LossBatch` and returns one
        loss per sample.
    steps, batch : int
        Optimizer steps and samples per step.
    lr, lr_final : float
        Adam's learning rate, decayed on a cosine from ``lr`` to ``lr_final``.
    seed : int
        Seeds the samples (a function of ``(seed, step)``).
    device : str or torch.device
        ``"auto"``: CUDA when present.
    checkpoint : path, optional
        Where ``{model, optimizer, step, losses, config}`` is saved every
        ``checkpoint_every`` steps and at the end (written atomically).
    resume : bool
        Continue from ``checkpoint`` when it exists; the run's settings must match the
        saved ones (``max_minutes`` may differ).
    max_minutes : float, optional
        Stop (and checkpoint) after this much wall time.
    stop_after : int, optional
        Run at most this many steps in this call.
    stop_at : int, optional
        End once this many steps are done in all; the schedule stays that of ``steps``.
    progress : bool
        A tqdm bar over the optimizer steps, with the running loss.
    loss_png : path, optional
        Write the loss curve there at the end.
    log_every : int
        Steps between updates of the bar's loss.
    config : dict, optional
        Extra JSON-safe settings stored in the checkpoint and checked on resume (e.g. how
        the module was built).
    desc : str, optional
        Label of the progress bar.
    shards : int, optional
        Each step's batch is ``shards`` groups of ``batch // shards`` samples, each group
        from its own sample stream; default: the number of processes. Runs with the same
        ``shards`` see the same samples whatever the number of processes, so 2 processes
        reproduce 1 process with ``shards=2`` (and a resumed run may use another process
        count).
    world : neurosolve.neural.distributed.World, optional
        The processes of a data-parallel run; default: read from the environment that
        ``torchrun`` sets (one process without it). Each rank draws its own shards,
        gradients are averaged with one all-reduce per step, only rank 0 writes files.
    dtype : torch.dtype
        Precision of the module (converted in place) and of the training data.

    Returns
    -------
    TrainResult

    Raises
    ------
    TypeError
        ``module`` is not a torch module; ``data`` of an unsupported kind.
    ValueError
        Bad settings (each named), a checkpoint written by a different run, a module whose
        output shape differs from its input.

    See Also
    --------
    neurosolve.neural.load_pretrained : load the checkpoint for solving.
    neurosolve.solvers.DCDM : use the trained module (``DCDM(model=module)``).

    Examples
    --------
    A two-layer convolution trained for 20 steps with the DCDM loss on a 2-D sphere:

    >>> import torch
    >>> from neurosolve.neural import train_preconditioner
    >>> from neurosolve.problems import poisson
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(8, 1, 3, padding=1))
    >>> res = train_preconditioner(net, poisson.sphere((16, 16)), steps=20, progress=False)
    >>> res.steps_done, len(res.losses), res.final_loss < 1.0
    (20, 20, True)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    loss_fn, loss_name = _resolve_loss(loss)
    for name, value in (("steps", steps), ("batch", batch), ("log_every", log_every)):
        _check_positive_int(name, value)
    for name, value in (("stop_after", stop_after), ("stop_at", stop_at)):
        _check_positive_int(name, value, allow_none=True)
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be a non-negative integer (0: only at the "
                         f"end), got {checkpoint_every!r}")
    for name, value in (("lr", lr), ("lr_final", lr_final)):
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be positive, got {max_minutes!r}")
    td = _as_training_data(data)
    if world is None:
        from neurosolve.neural.distributed import World

        world = World.from_env(device=None if device in (None, "auto") else device)
    if device in (None, "auto") and world.size > 1 and torch.cuda.is_available():
        device = f"cuda:{world.local_rank}"
    dev = resolve_device(device)
    shards = world.size if shards is None else shards
    _check_positive_int("shards", shards)
    mine = world.my_shards(shards)
    if batch % shards:
        raise ValueError(f"batch={batch} must be a multiple of shards={shards} (the batch is "
                         f"split into equal groups, one sample stream each)")
    per_shard = batch // shards
    net = module.to(device=dev, dtype=dtype)
    world.broadcast_module(net)
    run = {"loss": loss_name, "steps": int(steps), "batch": int(batch), "lr": float(lr),
           "lr_final": float(lr_final), "seed": int(seed), "grid": list(td.grid),
           "module": type(module).__name__, "shards": int(shards)}
    stored = dict(config) if config is not None else {}
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses: list[float] = []
    start = 0
    elapsed0 = 0.0
    ckpt = pathlib.Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        saved = {"run": json.loads(state["run"]) if "run" in state else run,
                 "config": json.loads(state["config"])}
        diff = {f"{part}.{k}": (saved[part].get(k), v)
                for part, now in (("run", run), ("config", stored)) for k, v in now.items()
                if saved[part].get(k) != v and k != "max_minutes"}
        if diff:
            raise ValueError(f"checkpoint {ckpt} was written with a different config "
                             f"(saved, requested): {diff}; use another checkpoint path or "
                             f"resume=False")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        losses = [float(v) for v in state["losses"]]
        elapsed0 = float(state.get("wall_time", 0.0))
    ops = [_Operator(m, td.grid, dev, dtype) for m in td.operators]

    def save(step):
        if ckpt is None or not world.is_main:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
        extra = {"net_config": json.dumps(net.config())} if callable(
            getattr(net, "config", None)) else {}
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "losses": torch.tensor(losses, dtype=torch.float64),
                    "config": json.dumps(stored), "run": json.dumps(run),
                    "wall_time": elapsed0 + time.perf_counter() - t0, **extra}, tmp)
        tmp.replace(ckpt)

    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=desc or f"train ({loss_name} loss)",
                   unit="step", leave=True)
    t0 = time.perf_counter()
    net.train()
    stopped = False
    step = start
    checked_shape = False
    try:
        for step in range(start, steps):
            if (max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes) \
                    or (stop_after is not None and step - start >= stop_after) \
                    or (stop_at is not None and step >= stop_at):
                stopped = True
                break
            for group in opt.param_groups:
                group["lr"] = cosine_lr(lr, lr_final, steps, step)
            sample = _draw(td.sampler, per_shard, step, mine)
            bop = _BatchOperator(ops, sample.geometry, dev)
            b = torch.as_tensor(sample.b, dtype=dtype, device=dev).unsqueeze(1)
            lb = LossBatch(b, bop, bop.fluid, bop.diag, net, np.asarray(sample.geometry))
            if not checked_shape:
                with torch.no_grad():
                    out = net(_module_input(net, b[:1], bop.diag[:1], bop.fluid[:1]))
                if tuple(out.shape) != (1, 1, *td.grid):
                    raise ValueError(f"the module maps (1, 1, {', '.join(map(str, td.grid))}) "
                                     f"to {tuple(out.shape)}; it must return the shape of its "
                                     "input")
                checked_shape = True
            value = loss_fn(lb).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            logged = value.detach().reshape(1).clone()
            world.average([p.grad for p in net.parameters()] + [logged])
            if not torch.isfinite(logged).all():
                raise FloatingPointError(
                    f"the {loss_name} loss is {float(logged)} at step {step}: lower lr (now "
                    f"{opt.param_groups[0]['lr']:.3g}) or check the module's output")
            opt.step()
            losses.append(float(logged.item()))
            if bar is not None:
                bar.update(1)
                if (step + 1) % log_every == 0 or step == start:
                    bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}")
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                save(step + 1)
        else:
            step = steps
    finally:
        if bar is not None:
            bar.close()
    done = step if stopped else steps
    save(done)
    world.barrier()  # the final checkpoint exists before any rank returns
    net.eval()
    if loss_png is not None and losses and world.is_main:
        plot_losses(losses, loss_png, title=desc or f"training ({loss_name} loss)",
                    ylabel=f"{loss_name} loss")
    tail = losses[-max(1, min(50, len(losses))):]
    return TrainResult(net, stored or run, losses, done, elapsed0 + time.perf_counter() - t0,
                       stopped, float(np.mean(tail)) if tail else float("nan"))


def _draw(sampler, per_shard: int, step: int, shards: Sequence[int]):
    """This rank's samples of ``step``: its shards, each from its own stream."""
    from neurosolve.neural.dcdm_data import DataBatch
    from neurosolve.neural.distributed import shard_step

    parts = [sampler.sample(per_shard, shard_step(step, j)) for j in shards]
    if len(parts) == 1:
        return parts[0]
    return DataBatch(np.concatenate([p.b for p in parts]),
                     np.concatenate([p.geometry for p in parts]))


def plot_losses(losses: Sequence[float], path, title: str = "training",
                ylabel: str = "loss") -> None:
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
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
