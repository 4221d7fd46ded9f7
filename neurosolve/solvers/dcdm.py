"""DCDM: conjugate directions proposed by a convolutional network (Kaneda et al. 2023)."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neurosolve.backends.ops import to_numpy as _to_numpy
from neurosolve.core import Status, Stop, to_float
from neurosolve.operators import LinearOperator, aslinearoperator
from neurosolve.solvers.cg import CG, CGSetup, CGState
from neurosolve.solvers.conjugate_directions import (
    StallWatch,
    _kept_buffer,
    _orthogonalize,
    conjugate,
    true_residual_update,
)

__all__ = ["DCDM", "DCDMState", "default_model_name"]

#: Shipped model used by ``DCDM(model="auto")`` for each grid dimension.
DEFAULT_MODELS = {2: "dcdm2d", 3: "dcdm3d"}


def default_model_name(dim: int) -> str:
    """Name of the shipped network ``DCDM(model="auto")`` uses for a ``dim``-D grid."""
    if dim not in DEFAULT_MODELS:
        raise ValueError(f"DCDM networks exist for 2-D and 3-D grids, not {dim}-D")
    return DEFAULT_MODELS[dim]


@functools.lru_cache(maxsize=8)
def _pretrained(name: str, device: str):
    from neurosolve.neural.pretrained import load_pretrained

    return load_pretrained(name, device=device)


@dataclass(frozen=True, kw_only=True)
class DCDM(CG):
    """Deep conjugate-direction method: CG whose search directions come from a network.

    Each iteration feeds the unit-norm residual to the network ``f`` (a float32 torch
    module; the loop runs in float64), A-orthogonalizes ``f(r / ||r||)`` against the last
    ``truncate`` directions and takes an exact A-norm line search (see
    :class:`~neurosolve.solvers.CG`, whose flexible loop this configures). With an
    identity model it is CG, with a linear SPD model it is PCG, with ``c A^{-1}`` it
    converges in one step.

    Parameters
    ----------
    model : "auto", str, path, torch.nn.Module, TorchPreconditioner or callable
        ``"auto"``: the shipped network for the grid's dimension (``dcdm2d`` / ``dcdm3d``);
        a name from :func:`neurosolve.neural.available_pretrained`; a path to a trained
        DCDM network (a ``NAME.pt`` with its manifest, a training checkpoint or its folder:
        see :func:`neurosolve.neural.load_pretrained`); any torch module mapping
        ``(1, 1, *grid)`` to the same shape (wrapped in
        :class:`~neurosolve.neural.TorchPreconditioner`); or a callable / operator on flat
        vectors (e.g. a classical preconditioner, for comparison).
    grid : tuple of int or CellGrid, optional
        Grid layout of the unknowns. Default: ``problem.grid`` of a gallery
        :class:`~neurosolve.problems.poisson.PoissonSystem`. For your own matrix, pass the
        full cell grid (``prod(grid) == n``, C order; rows of non-fluid cells empty, as in
        the paper); the network's output is zeroed where the diagonal is zero.
    rtol, atol : float
        Stopping rule ``||r_k|| < max(rtol * ||r_0||, atol)`` with ``r_k = b - A x_k`` the
        true residual (recomputed every ``recompute_every`` steps; 1 = every step, as in
        the reference code). ``rtol_reference="b"`` measures against ``||b||`` instead.
    truncate : int
        Directions kept for A-orthogonalization (2 in the paper).
    augment : bool
        Each step minimizes the A-norm error over the span of the network's direction *and*
        the residual (both A-orthogonalized against the directions kept from the last
        ``truncate`` steps, which then keep both): one more SpMV per step, never a smaller
        error reduction than the network's direction alone, and a CG-like residual
        direction always in the search space. Measured with the shipped 2-D network:
        within 5% of the paper's step on solid obstacles, 28% fewer iterations on a
        free-surface pool at 64^2 (both with the stall switch off). ``False``: the
        paper's step.
    guard : float
        Only with ``augment=False``: when the network's direction reduces the A-norm
        error by less than ``guard`` times the (orthogonalized) residual would, the step
        minimizes over both (one more SpMV; counted as ``guard_steps``). 0 = the paper.
    stall_window : int or None
        Safeguard against a network that does not fit the problem (e.g. a geometry unlike
        its training data): when the relative residual has fallen by less than
        ``stall_factor`` over the last ``stall_window`` iterations, the network is switched
        off and the solve continues as plain CG from the current iterate (recorded as
        ``stats["network_switched_off_at"]`` and in the message). ``None``: never (the paper).
    stall_factor : float
        See ``stall_window``; in (0, 1).
    on_nonfinite : {"fallback", "error"}
        A network output with NaN/inf is replaced by the residual (a CG step, counted as
        ``fallbacks``; the result's message says how often), or ends the solve with
        ``Status.NONFINITE``.
    device, dtype :
        Where and in which precision the network runs (default: its parameters' device,
        float32).
    maxiter : int, optional
        Default ``min(10 n, 1000)``.

    Notes
    -----
    Counters in ``Result.stats``: ``matvecs``, ``network_evaluations``, ``fallbacks``,
    ``guard_steps``, ``network_switched_off_at`` (only when the stall switch fired).
    Iteration cost: one network evaluation, one to three SpMVs, ``truncate + 2`` dot
    products. On a CPU a network evaluation costs far more than an SpMV, so
    compare iteration *and* SpMV *and* network counts, and wall time only on a GPU.

    The network sees the geometry only through the residual's zeros in non-fluid cells and
    through ``A`` in the orthogonalization and line search: one model per grid family,
    reusable across right-hand sides, frames and grid sizes.

    References
    ----------
    .. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate
       Direction Method for Iteratively Solving Linear Systems", ICML 2023,
       arXiv:2205.10763.
    .. [2] Y. Notay, "Flexible conjugate gradients", SIAM J. Sci. Comput. 22(4), 2000.

    Examples
    --------
    >>> import neurosolve as ns
    >>> from neurosolve.problems import poisson
    >>> grid = poisson.sphere((32, 32, 32))
    >>> prob = grid.system(poisson.rhs_blobs(grid, seed=0))
    >>> res = ns.solve(prob, ns.solvers.DCDM(rtol=1e-6))
    >>> res.success
    True
    """

    model: Any = "auto"
    grid: Any = None
    flexible: bool | None = True
    rtol: float = 1e-4
    rtol_reference: str = "r0"
    truncate: int | None = 2
    recompute_every: int = 1
    augment: bool = True
    guard: float = 1.0
    stall_window: int | None = 25
    stall_factor: float = 0.5
    on_nonfinite: str = "fallback"
    device: Any = None
    dtype: Any = None

    metrics: ClassVar[tuple[str, ...]] = ("relative_residual", "residual_norm")
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        if self.M is not None:
            raise ValueError("DCDM takes its direction generator as model=..., not M=")
        if self.flexible is False:
            raise ValueError("DCDM is the flexible conjugate-direction method; flexible=False "
                             "is CG(M=...)")
        if self.on_nonfinite not in ("fallback", "error"):
            raise ValueError(f"on_nonfinite must be 'fallback' or 'error', got {self.on_nonfinite!r}")
        if not isinstance(self.guard, (int, float)) or not np.isfinite(self.guard) or self.guard < 0:
            raise ValueError(f"guard must be a finite non-negative number, got {self.guard!r}")
        if self.model is None:
            raise ValueError("model is required: 'auto', a pretrained name, a torch module or "
                             "a callable")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else min(10 * problem.n, 1000)

    # -- network adapter -------------------------------------------------------------------
    def _grid(self, problem):
        grid = self.grid if self.grid is not None else getattr(problem, "grid", None)
        return grid

    def preconditioner(self, problem) -> LinearOperator:
        """The operator ``r -> direction`` this solver uses on ``problem``."""
        import torch  # noqa: F401  (the adapter needs it)

        from neurosolve.neural.adapter import TorchPreconditioner, _grid_and_mask

        model = self.model
        grid = self._grid(problem)
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        needs_grid = isinstance(model, str) or isinstance(model, torch.nn.Module) or \
            isinstance(model, TorchPreconditioner)
        if grid is None and needs_grid:
            raise ValueError(
                "DCDM needs the grid layout of the unknowns: solve a gallery PoissonSystem "
                "(neurosolve.problems.poisson) or pass DCDM(grid=(nx, ny[, nz]))")
        shape = mask = None
        if grid is not None:
            shape, mask = _grid_and_mask(grid)
            n_grid = int(np.prod(shape))
            if n_grid != problem.n:
                raise ValueError(
                    f"the right-hand side has {problem.n} entries but the grid {shape} has "
                    f"{n_grid} cells; they must match (one unknown per cell, C order)")
            if mask is None:
                try:
                    mask = (np.asarray(_to_numpy(problem.A.diagonal())) != 0).reshape(shape)
                except NotImplementedError:
                    mask = None
        device = self.device
        if isinstance(model, str):
            name = default_model_name(len(shape)) if model == "auto" else model
            from neurosolve.neural.pretrained import _as_path, load_pretrained

            if _as_path(name, None) is not None:  # a trained file: read it afresh
                model = load_pretrained(name, device=str(device or "cpu"))
            else:  # a shipped name: cached
                model = _pretrained(name, str(device or "cpu"))
            if (getattr(model, "manifest", None) or {}).get("kind") == "learned_mg_smoother":
                raise ValueError(f"model={name!r} is a LearnedMG network (a multigrid "
                                 "preconditioner, not a DCDM direction network): use "
                                 f"CG(M=preconditioners.LearnedMG(grid, {name!r}))")
        if isinstance(model, TorchPreconditioner):
            if shape is not None and model.grid != shape:
                raise ValueError(f"the TorchPreconditioner is for grid {model.grid}, the problem's "
                                 f"grid is {shape}")
            return model
        if isinstance(model, torch.nn.Module):
            kw = {"dtype": self.dtype} if self.dtype is not None else {}
            if getattr(model, "geometry", False):
                kw["diagonal"] = _to_numpy(problem.A.diagonal())
            return TorchPreconditioner(model, grid=shape, normalize=self.normalize, mask=mask,
                                       device=device, **kw)
        return aslinearoperator(model)

    def _preconditioner(self, problem):
        Mop = self.preconditioner(problem)
        if Mop.shape is not None and tuple(Mop.shape) != (problem.n, problem.n):
            raise ValueError(f"the model acts on vectors of length {Mop.shape[1]}; the system "
                             f"has {problem.n} unknowns")
        return Mop

    # -- protocol ------------------------------------------------------------------------
    def setup(self, problem, ctx) -> CGSetup:
        su = super().setup(problem, ctx)
        inner, xp = su.Mmv, ctx.xp

        def direction(r):
            q = inner(r)
            if not xp.isfinite(q):
                ctx.count("network_nonfinite")
            return q

        return su._replace(Mmv=direction, flexible=True)

    def init(self, problem, x0, ctx) -> DCDMState:
        return _as_dcdm(super().init(problem, x0, ctx))

    def resume(self, problem, state, ctx) -> DCDMState:
        state = _as_dcdm(super().resume(problem, state, ctx))
        state.switched_off_at = None  # the (possibly new) network gets a fresh chance
        return state

    def _direction_map(self, state, ctx):
        if state.switched_off_at is None:
            return ctx.setup.Mmv
        return None if self.augment else (lambda r: r)

    def _watch_stall(self, state, ctx) -> None:
        """Switch the network off (plain CG from here) when it stopped making progress."""
        if self.stall_window is None or state.switched_off_at is not None:
            return
        watch = StallWatch(self.stall_window, self.stall_factor)
        if watch.update(state.stall, float(to_float(state.metrics["relative_residual"]))):
            state.switched_off_at = state.k
            state.kept.clear()  # restart: the next steps are CG's from the current iterate
            ctx.count("network_switched_off_at", state.k)

    def _stall(self, state, ctx):
        return None  # DCDM switches the network off instead (see _watch_stall)

    def step(self, problem, state, ctx) -> DCDMState:
        before = ctx.counters.get("preconditioner_calls", 0)
        bad_before = ctx.counters.get("network_nonfinite", 0)
        if self.augment:
            augmented_step(self, problem, state, ctx, self._direction_map(state, ctx))
            state.k += 1
            state.metrics = self._metrics(state, ctx)
        else:
            state = super().step(problem, state, ctx)
        if state.first_nonfinite is None and ctx.counters.get("network_nonfinite", 0) > bad_before:
            state.first_nonfinite = state.k - 1
        if state.switched_off_at is None:
            ctx.count("network_evaluations", ctx.counters.get("preconditioner_calls", 0) - before)
        self._watch_stall(state, ctx)
        return state

    def check(self, problem, state, ctx):
        bad = ctx.counters.get("network_nonfinite", 0)
        if bad and self.on_nonfinite == "error":
            return Stop(Status.NONFINITE, (
                f"the network returned NaN/inf at iteration {state.first_nonfinite}; check "
                "the model on a unit-norm residual (or use on_nonfinite='fallback')"))
        stop = super().check(problem, state, ctx)
        return self._annotate(stop, state, ctx)

    def on_uncertified(self, problem, state, ctx, failed):
        return self._annotate(super().on_uncertified(problem, state, ctx, failed), state, ctx)

    def _annotate(self, stop, state, ctx):
        if stop is None:
            return None
        if state.switched_off_at is not None:
            stop = stop.with_note(
                f"Note: the network stopped reducing the residual (it fell less than "
                f"{1 / self.stall_factor:g}x in {self.stall_window} iterations) and was "
                f"switched off at iteration {state.switched_off_at}; the rest are CG "
                "steps. The problem is probably unlike the network's training data.")
        bad = ctx.counters.get("network_nonfinite", 0)
        if bad:
            stop = stop.with_note(
                f"Note: the network returned NaN/inf in {bad} of {state.k} iterations; those "
                "steps fell back to the residual direction (CG).")
        return stop


@dataclass(eq=False)
class DCDMState(CGState):
    """CG's iteration data plus the network's: when it was switched off, and the first
    iteration at which it returned NaN/inf."""

    switched_off_at: int | None = None
    first_nonfinite: int | None = None


def _as_dcdm(state) -> DCDMState:
    if isinstance(state, DCDMState):
        return state
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return DCDMState(**fields)


def augmented_step(solver, problem, state, ctx, Mmv) -> None:
    """One step over span{network direction, residual}, both kept (updates ``state``).

    ``s = r`` and ``q = M(r / ||r||)`` are projected off the null space, A-orthogonalized
    against the kept directions (classical Gram-Schmidt, as the flexible loop) and ``q``
    against ``s``; the exact A-norm minimization over ``span{s, q}`` then decouples into two
    line searches. Both directions join the buffer (``2 * truncate`` vectors). A
    non-finite or (nearly) A-null ``q`` is dropped (counted as a ``fallback``: the step is
    then the residual step alone).
    """
    xp = ctx.xp
    r, x = state.r, state.x
    ns = problem.nullspace
    _kept_buffer(state, None if solver.truncate is None else 2 * int(solver.truncate))
    q = None
    parallel = False
    if Mmv is not None:
        rn = to_float(state.rnorm)
        q = Mmv(r / rn if (solver.normalize and rn > 0) else r)
        ctx.count("preconditioner_calls")
        if not xp.isfinite(q):
            q = None
    s, As, sAs = conjugate(xp, r, state, ctx, ns)
    tiny = solver.breakdown_tol * ctx.setup.anorm
    pairs = []
    if to_float(sAs) > tiny * to_float(xp.dot(s, s)):
        pairs.append((s, As, sAs))
    if q is not None:
        if ns is not None:
            q = ns.project(q)
        q, _ = _orthogonalize(xp, q, state.kept)
        q_norm = to_float(xp.norm(q))
        if pairs:
            q = q - (xp.dot(q, As) / sAs) * s
        if not to_float(xp.norm(q)) > 1e-8 * q_norm:
            # zero, in the null space, or parallel to the residual direction (a linear
            # model that is a multiple of the identity): nothing to add
            parallel = q_norm > 0
            q = None
    if q is not None:
        Aq = ctx.setup.mv(q)
        ctx.count("matvecs")
        qAq = xp.dot(q, Aq)
        if xp.isfinite(qAq) and to_float(qAq) > tiny * to_float(xp.dot(q, q)):
            pairs.append((q, Aq, qAq))
        else:
            q = None
    if q is None and Mmv is not None and not parallel:
        ctx.count("fallbacks")
    if not pairs:
        state.breakdown = True
        return
    for d, w, den in pairs:
        alpha = xp.dot(d, r) / den
        x = x + alpha * d
        r = r - alpha * w
        state.kept.append((d, w, den))
    every = solver.recompute_every
    if state.switched_off_at is not None and every:
        # plain CG steps now: the recurrence residual is trustworthy, recompute it now and
        # then (a drifted one is replaced by the certificate gate's residual replacement)
        every = max(every, 50)
    r = true_residual_update(problem, state, ctx, x, r, every)
    state.x, state.r = x, r
    state.rnorm = xp.norm(r)
