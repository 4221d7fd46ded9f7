"""Training loop for layered fixed-point networks with EP/BP estimators and homeostasis.

One step on a mini-batch:

1. free phase (:func:`~neurosolve.neural.ep.estimators.free_phase`), then the chosen
   estimator (``"bp"``, ``"ep"`` with ``n_points``/``beta``, ``"ep_exact"``);
2. if ``homeostasis > 0``: add ``lambda`` times the gradient of the homeostatic loss at the
   free state (parameters only);
3. an optimizer step (SGD with momentum and L2 weight decay, or AdamW), unless the
   estimate is non-finite (the step is then *skipped* and counted, never zeroed); phases
   that ended without converging are counted in the history.

Per epoch the history records losses, accuracies, the fraction of samples whose free phase
converged, the estimator's alignment with the BP adjoint per layer (on the epoch's last
batch), the spectral radius of ``H' D`` at the fixed point (power iteration, JVPs), the
weight angle, the Jacobian symmetry ``jac_sym`` (small nets) and the homeostatic loss.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
.. [2] I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np

from neurosolve.core import Status
from neurosolve.backends import ops as xp
from neurosolve.neural.ep.diagnostics import (
    dense_jacobian, jac_sym, layer_cosines, spectral_radius, weight_angle,
)
from neurosolve.neural.ep.estimators import (
    METHODS, bp_adjoint, estimate_gradient, exact_response, free_phase,
)
from neurosolve.neural.ep.homeostasis import homeostatic_loss
from neurosolve.neural.ep.networks import DenseNetwork, LayeredNetwork
from neurosolve.neural.ep.stability import contraction_penalty
from neurosolve.solvers.fixed_point import FixedPoint

__all__ = ["TrainConfig", "lr_factor", "TrainResult", "SGD", "AdamW", "train", "evaluate", "plot_histories",
           "plot_training"]


class SGD:
    """SGD with heavy-ball momentum and classic L2 weight decay (``g + wd * p``)."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        self.lr, self.momentum, self.wd = lr, momentum, weight_decay
        self.buf: dict = {}

    def step(self, params: dict, grads: dict, scales: dict | None = None) -> None:
        for k, g in grads.items():
            lr = self.lr * (scales.get(k, 1.0) if scales else 1.0)
            if self.wd:
                g = g + self.wd * params[k]
            b = self.buf.get(k)
            b = g if b is None else self.momentum * b + g
            self.buf[k] = b
            params[k] = params[k] - lr * b


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, betas[0], betas[1], eps, weight_decay
        self.m: dict = {}
        self.v: dict = {}
        self.t = 0

    def step(self, params: dict, grads: dict, scales: dict | None = None) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            m = self.m.get(k)
            v = self.v.get(k)
            m = (1 - self.b1) * g if m is None else self.b1 * m + (1 - self.b1) * g
            v = (1 - self.b2) * g * g if v is None else self.b2 * v + (1 - self.b2) * g * g
            self.m[k], self.v[k] = m, v
            upd = (m / c1) / ((v / c2) ** 0.5 + self.eps)
            lr = self.lr * (scales.get(k, 1.0) if scales else 1.0)
            p = params[k]
            if self.wd:
                p = p * (1 - lr * self.wd)
            params[k] = p - lr * upd


def _param_lr_scales(params: dict, cfg: "TrainConfig") -> dict:
    """The learning-rate multiplier of each parameter (see ``TrainConfig.lr_scales``)."""
    from fnmatch import fnmatchcase

    pats = dict(cfg.lr_scales or {})
    unused = [p for p in pats if not any(fnmatchcase(k, p) for k in params)]
    if unused:
        raise ValueError(f"lr_scales pattern(s) {unused} match no parameter of the network; "
                         f"its parameters are {sorted(params)}")
    out = {}
    for k in params:
        f = next((v for p, v in pats.items() if fnmatchcase(k, p)), None)
        if f is None and k.startswith("readout_"):
            f = cfg.readout_lr_scale
        if f is not None:
            out[k] = float(f)
    return out


def _default_solver() -> FixedPoint:
    return FixedPoint(method="anderson", damping=0.5, rtol=1e-7, atol=1e-9, maxiter=400)


@dataclass
class TrainConfig:
    """Training settings.

    Attributes
    ----------
    method : {"bp", "ep", "ep_exact"}
    beta, n_points, conjugate_shortcut
        Cauchy estimator settings (``method="ep"``).
    optimizer : {"sgd", "adamw"}
    lr, momentum, weight_decay
    readout_lr_scale : float
        Learning-rate multiplier of the readout (the reference CNN recipe uses 5).
    lr_scales : dict or None
        Per-parameter learning-rate multipliers ``{pattern: factor}``; a pattern is an
        :mod:`fnmatch` pattern on parameter names (``"W_input_*"``, ``"*conv1_conv2"``) and
        the first pattern that matches a parameter sets its factor (``readout_lr_scale``
        applies to ``readout_*`` parameters no pattern matches). Deep convolutional nets
        need it: their layers' signals shrink with depth, and the reference CNN recipe
        scales the layers' rates by 25, 15, 10 and 8 from the input up. A pattern that
        matches no parameter is an error.
    homeostasis : float
        ``lambda``, the weight of the homeostatic loss (0 = off).
    homeostasis_method : {"auto", "exact", "probe"}
    n_probes : int
    batch_size, epochs, seed
        ``seed`` drives the batch order and the probes.
    solver : FixedPoint
        For every phase (default Anderson, damping 0.5, ``rtol=1e-7``, 400 iterations).
    init : {"zero", "forward"}
        Free-phase start.
    contraction, contraction_target, contraction_iters
        Weight, target gain and power iterations of the stabilizing contraction penalty
        (:func:`~neurosolve.neural.ep.stability.contraction_penalty`; 0 = off).
    grad_clip : float or None
        Clip the global gradient norm (off by default).
    lr_schedule : {"constant", "cosine", "step"}
        Learning-rate factor as a function of the global optimizer step ``t`` (see
        :func:`lr_factor`): ``"cosine"`` decays from 1 to ``lr_final`` over the run,
        ``"step"`` is 1 for the first half, ``sqrt(lr_final)`` for the third quarter and
        ``lr_final`` after. The factor multiplies every learning rate (readout included).
    lr_final : float
        End factor of the schedule (default 0.1).
    lr_schedule_steps : int or None
        Length of the schedule in optimizer steps; default ``epochs * ceil(n / batch_size)``
        (then a checkpoint only resumes with the same ``epochs``).
    skip_unconverged : bool
        Skip the optimizer step of a batch in which a phase (free, nudged or linear
        response) ended unconverged, instead of applying its estimate: away from a fixed
        point the EP estimate is not the gradient of anything, and a few such steps can
        undo an epoch of training (measured on digits: one batch series with 5 failed
        phases took a run from 88% to 74% test accuracy). Counted in
        ``history["skipped_steps"]``.
    strict : bool
        Raise on a non-finite estimate instead of skipping the step.
    max_steps : int or None
        Stop after this many optimizer steps (smoke tests).
    diagnostics : bool
        Per-epoch alignment / spectral radius / Jacobian symmetry (extra linear solves).
    """

    method: str = "ep_exact"
    beta: float = 0.1
    n_points: int = 2
    conjugate_shortcut: bool = True
    optimizer: str = "adamw"
    lr: float = 1e-3
    readout_lr_scale: float = 1.0
    lr_scales: dict | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    homeostasis: float = 0.0
    homeostasis_method: str = "auto"
    n_probes: int = 5
    batch_size: int = 50
    epochs: int = 10
    seed: int = 0
    solver: FixedPoint = field(default_factory=_default_solver)
    init: str = "zero"
    contraction: float = 0.0
    contraction_target: float = 0.9
    contraction_iters: int = 10
    grad_clip: float | None = None
    lr_schedule: str = "constant"
    lr_final: float = 0.1
    lr_schedule_steps: int | None = None
    skip_unconverged: bool = False
    strict: bool = False
    max_steps: int | None = None
    diagnostics: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for name in ("lr", "homeostasis", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (isinstance(self.lr_final, (int, float)) and 0 < self.lr_final <= 1):
            raise ValueError(f"lr_final must be in (0, 1], got {self.lr_final!r}")
        if self.lr_schedule_steps is not None and (not isinstance(self.lr_schedule_steps, int)
                                                   or self.lr_schedule_steps < 1):
            raise ValueError(f"lr_schedule_steps must be a positive integer or None, "
                             f"got {self.lr_schedule_steps!r}")
        if self.lr_scales is not None:
            if not isinstance(self.lr_scales, dict):
                raise TypeError(f"lr_scales must be a dict {{pattern: factor}} or None, got "
                                f"{type(self.lr_scales).__name__}")
            for pat, f in self.lr_scales.items():
                if not isinstance(pat, str):
                    raise TypeError(f"lr_scales keys must be parameter-name patterns (str), "
                                    f"got {pat!r}")
                if not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0:
                    raise ValueError(f"lr_scales[{pat!r}] must be a finite non-negative "
                                     f"number, got {f!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")


LR_SCHEDULES = ("constant", "cosine", "step")


def lr_factor(schedule: str, step: int, total: int, final: float = 0.1) -> float:
    """Learning-rate factor at global optimizer step ``step`` (0-based) of ``total``.

    ``"constant"``: 1. ``"cosine"``: ``final + (1 - final) (1 + cos(pi t / total)) / 2``
    with ``t = min(step, total)``. ``"step"``: 1 for ``t < total/2``, ``sqrt(final)`` for
    ``t < 3 total/4``, ``final`` after. A pure function of the step, so a resumed run
    continues the schedule exactly.

    >>> lr_factor("cosine", 0, 100), lr_factor("cosine", 50, 100), lr_factor("cosine", 100, 100)
    (1.0, 0.55, 0.1)
    """
    if schedule == "constant":
        return 1.0
    t = min(max(step, 0), total)
    if schedule == "cosine":
        return float(final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t / total)))
    if schedule == "step":
        return 1.0 if 2 * t < total else (math.sqrt(final) if 4 * t < 3 * total else float(final))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


@dataclass
class TrainResult:
    """History of a training run (lists indexed by epoch, entry 0 = before training)."""

    history: dict
    config: TrainConfig
    net: LayeredNetwork
    wall_time: float
    steps: int

    def final(self, key: str) -> float:
        return float(self.history[key][-1])


def _batches(n: int, bs: int, rng: np.random.Generator):
    idx = rng.permutation(n)
    for i in range(0, n, bs):
        yield idx[i:i + bs]


def _take(a, idx):
    if xp.lib(a) == "torch":
        import torch

        return a[torch.as_tensor(idx, device=a.device)]
    return a[idx]


def evaluate(net: LayeredNetwork, X, y, *, solver: FixedPoint | None = None,
             batch_size: int = 500, init: str = "zero") -> dict:
    """Accuracy, mean loss and fraction of converged free phases on a data set."""
    solver = solver or _default_solver()
    correct, losses, conv, iters = [], [], [], []
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i:i + batch_size], y[i:i + batch_size]
        fp = free_phase(net, xb, yb, solver=solver, init=init)
        correct.append(fp.correct())
        losses.append(xp.to_numpy(fp.loss))
        conv.append(fp.report.converged_fraction * xb.shape[0])
        iters.append(fp.report.n_iter)
    n = X.shape[0]
    return {"accuracy": float(np.concatenate(correct).mean()),
            "loss": float(np.concatenate(losses).mean()),
            "converged": float(np.sum(conv) / n),
            "iterations": float(np.mean(iters))}


def _gnorm(grads):
    return math.sqrt(sum(float(xp.sumsq(g)) for g in grads.values()))


def _diagnose(net, X, y, cfg, rec: dict, rng_seed: int):
    fp = free_phase(net, X, y, solver=cfg.solver, init=cfg.init)
    if cfg.method == "ep":
        est = estimate_gradient(net, X, y, "ep", beta=cfg.beta, n_points=cfg.n_points,
                                conjugate_shortcut=cfg.conjugate_shortcut, solver=cfg.solver,
                                free=fp)
        d_est = est.delta
    else:
        d_est, _ = exact_response(net, fp, solver=cfg.solver)
    d_bp, _ = bp_adjoint(net, fp, solver=cfg.solver)
    for k, v in layer_cosines(net, d_est, d_bp).items():
        rec.setdefault(f"cos_{k}", []).append(v)
    rho = spectral_radius(net, fp, seed=rng_seed)
    rec.setdefault("rho_max", []).append(float(np.max(rho)))
    rec.setdefault("rho_mean", []).append(float(np.mean(rho)))
    rec.setdefault("angle", []).append(weight_angle(net))
    if isinstance(net, DenseNetwork) and net.n_state < 1000:
        rec.setdefault("jac_sym", []).append(jac_sym(dense_jacobian(net)))
        rec.setdefault("homeo", []).append(homeostatic_loss(net, method="exact",
                                                            with_grad=False).value)


def train(net: LayeredNetwork, X, y, X_test=None, y_test=None, config: TrainConfig | None = None,
          *, progress: bool = True, callback: Callable[[int, dict], Any] | None = None,
          checkpoint: str | pathlib.Path | None = None, resume: bool = False,
          log: str | pathlib.Path | None = None, plot: str | pathlib.Path | None = None,
          world: Any = None, **overrides) -> TrainResult:
    """Train ``net`` in place on ``(X, y)``; evaluate on ``(X_test, y_test)`` each epoch.

    Parameters
    ----------
    net : LayeredNetwork
        Trained in place (``net.params`` is updated).
    X, y : arrays
        Training inputs and integer labels (same library as the network).
    X_test, y_test : arrays, optional
    config : TrainConfig, optional
    progress : bool
        tqdm bar over epochs with loss / accuracy / alignment.
    callback : callable, optional
        ``callback(epoch, history)`` after each epoch; returning True stops training.
    checkpoint : path, optional
        An ``.npz`` written after every epoch (atomically): parameters, optimizer state,
        the random generators' states, the history, the epoch and step counts.
    resume : bool
        Continue from ``checkpoint`` when it exists (same config required): the run then
        ends with the parameters and history of an uninterrupted one.
    log : path, optional
        One JSON line per epoch (the epoch's entries of the history), appended as the
        epoch ends, so a long run can be followed with ``tail -f``.
    plot : path, optional
        A PNG of test accuracy, alignment with BP and spectral radius, rewritten after every
        epoch (:func:`plot_training`).
    world : neurosolve.neural.distributed.World, optional
        Data-parallel processes (default: from the ``torchrun`` environment; one process
        without it). Each rank takes every ``size``-th sample of each mini-batch, the
        gradient estimates are averaged with one all-reduce per step, only rank 0 writes
        files and shows the bar.
    **overrides
        Fields of :class:`TrainConfig` (``train(net, X, y, method="bp", lr=1e-3)``).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from neurosolve.neural.ep import mlp, train, load_digits_split
    >>> Xtr, ytr, Xte, yte = load_digits_split()
    >>> net = mlp([64, 16, 16, 10], angle=90, seed=0, recurrent_scale=0.6)
    >>> res = train(net, Xtr[:200], ytr[:200], epochs=2, batch_size=20, homeostasis=10.0,
    ...             contraction=100.0, progress=False)
    >>> res.steps, res.history["cos_h1"][-1] > res.history["cos_h1"][0]
    (20, True)
    """
    cfg = config or TrainConfig()
    if overrides:
        cfg = replace(cfg, **overrides)
    net.check_input(X, y)  # every label and sample, once, before the first batch
    if (X_test is None) != (y_test is None):
        raise ValueError("pass both X_test and y_test, or neither")
    if X_test is not None:
        net.check_input(X_test, y_test)
    if world is None:
        from neurosolve.neural.distributed import World

        world = World.from_env()
    rng = np.random.default_rng(cfg.seed)
    # the probes of the homeostatic and contraction terms: a disjoint stream per rank
    probe_rng = np.random.default_rng([cfg.seed + 7919] + ([world.rank] if world.rank else []))
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay) if cfg.optimizer == "sgd" else \
        AdamW(cfg.lr, weight_decay=cfg.weight_decay)
    hist: dict = {"epoch": [], "train_loss": [], "train_acc": [], "test_acc": [], "test_loss": [],
                  "test_converged": [], "free_converged": [], "free_iters": [],
                  "failed_phases": [], "skipped_steps": [], "time": []}
    diag_idx = np.arange(min(X.shape[0], 100))
    Xd, yd = _take(X, diag_idx), _take(y, diag_idx)

    def record_epoch(ep, losses, accs, conv, iters, failed, skipped, t):
        hist["epoch"].append(ep)
        hist["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        hist["train_acc"].append(float(np.mean(accs)) if accs else float("nan"))
        hist["free_converged"].append(float(np.mean(conv)) if conv else float("nan"))
        hist["free_iters"].append(float(np.mean(iters)) if iters else float("nan"))
        hist["failed_phases"].append(failed)
        hist["skipped_steps"].append(skipped)
        hist["time"].append(t)
        if X_test is not None:
            ev = evaluate(net, X_test, y_test, solver=cfg.solver, init=cfg.init)
            hist["test_acc"].append(ev["accuracy"])
            hist["test_loss"].append(ev["loss"])
            hist["test_converged"].append(ev["converged"])
        if cfg.diagnostics:
            _diagnose(net, Xd, yd, cfg, hist, cfg.seed + ep)

    t0 = time.perf_counter()
    ckpt = pathlib.Path(checkpoint) if checkpoint is not None else None
    first, steps, elapsed0 = 1, 0, 0.0
    if resume and ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt, net, opt, rng, probe_rng, cfg, world.rank)
        hist.clear()
        hist.update(saved["history"])
        first, steps, elapsed0 = saved["epoch"] + 1, saved["steps"], saved["wall_time"]
    else:
        ev0 = evaluate(net, X, y, solver=cfg.solver, init=cfg.init)
        record_epoch(0, [ev0["loss"]], [ev0["accuracy"]], [ev0["converged"]],
                     [ev0["iterations"]], 0, 0, 0.0)
        if log is not None and world.is_main:
            _append_log(log, hist, 0, fresh=True)
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=first - 1, unit="epoch",
                   desc=f"train[{cfg.method}, lambda={cfg.homeostasis:g}]", leave=False)
    lr_scales = _param_lr_scales(net.params, cfg)
    sched_total = cfg.lr_schedule_steps or max(1, cfg.epochs * -(-X.shape[0] // cfg.batch_size))
    stop = False
    try:
        for ep in range(first, cfg.epochs + 1):
            losses, accs, conv, iters = [], [], [], []
            failed = skipped = 0
            for idx in _batches(X.shape[0], cfg.batch_size, rng):
                idx = idx[world.rank::world.size]
                xb, yb = _take(X, idx), _take(y, idx)
                est = estimate_gradient(net, xb, yb, cfg.method, beta=cfg.beta,
                                        n_points=cfg.n_points,
                                        conjugate_shortcut=cfg.conjugate_shortcut,
                                        solver=cfg.solver, init=cfg.init)
                losses.append(est.loss)
                accs.append(est.accuracy)
                conv.append(est.free.report.converged_fraction)
                iters.append(est.free.report.n_iter)
                n_failed = sum(not p.ok for p in est.phases)
                failed += n_failed
                grads = est.grads
                if cfg.homeostasis > 0:
                    h = homeostatic_loss(net, est.free.r, method=cfg.homeostasis_method,
                                         n_probes=cfg.n_probes, rng=probe_rng)
                    grads = dict(grads)
                    for k, g in h.grads.items():
                        grads[k] = grads[k] + cfg.homeostasis * g
                if cfg.contraction > 0:
                    cp = contraction_penalty(net, est.free, target=cfg.contraction_target,
                                             iters=cfg.contraction_iters, rng=probe_rng)
                    grads = dict(grads)
                    for k, g in cp.grads.items():
                        grads[k] = grads[k] + cfg.contraction * g
                bad = est.status is Status.NONFINITE or \
                    not all(xp.isfinite_all(g) for g in grads.values())
                if cfg.skip_unconverged and n_failed and not bad:
                    if world.size > 1:  # every rank must skip together
                        grads, _ = _average_grads(world, grads, True)
                    skipped += 1
                    continue
                if world.size > 1:
                    grads, bad = _average_grads(world, grads, bad)
                if bad:
                    if cfg.strict:
                        raise RuntimeError(f"non-finite gradient estimate at step {steps}: {est.message}")
                    skipped += 1
                    continue
                if cfg.grad_clip is not None:
                    gn = _gnorm(grads)
                    if gn > cfg.grad_clip:
                        grads = {k: g * (cfg.grad_clip / gn) for k, g in grads.items()}
                opt.lr = cfg.lr * lr_factor(cfg.lr_schedule, steps, sched_total, cfg.lr_final)
                opt.step(net.params, grads, lr_scales)
                steps += 1
                if cfg.max_steps is not None and steps >= cfg.max_steps:
                    stop = True
                    break
            record_epoch(ep, losses, accs, conv, iters, failed, skipped,
                         elapsed0 + time.perf_counter() - t0)
            if world.is_main:
                if ckpt is not None:
                    _save_checkpoint(ckpt, net, opt, rng, probe_rng, cfg, hist, ep, steps,
                                     elapsed0 + time.perf_counter() - t0)
                if log is not None:
                    _append_log(log, hist, ep)
                if plot is not None:
                    plot_training(hist, plot, title=f"{cfg.method}, lambda={cfg.homeostasis:g}")
            world.barrier()
            if bar is not None:
                post = {"loss": f"{hist['train_loss'][-1]:.3f}"}
                if hist["test_acc"]:
                    post["test"] = f"{hist['test_acc'][-1]:.3f}"
                if "cos_all" in hist:
                    post["cos"] = f"{hist['cos_all'][-1]:.2f}"
                bar.set_postfix(post)
                bar.update(1)
            if callback is not None and callback(ep, hist):
                break
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(history=hist, config=cfg, net=net,
                       wall_time=elapsed0 + time.perf_counter() - t0, steps=steps)


# --------------------------------------------------------------------------------------------
# long runs: data parallelism, checkpoints, the log and the plot
# --------------------------------------------------------------------------------------------
def _average_grads(world, grads: dict, bad: bool) -> tuple[dict, bool]:
    """The ranks' mean gradient estimates (one all-reduce), and whether any rank's was bad."""
    import torch

    keys = sorted(grads)
    flat = [torch.as_tensor(xp.to_numpy(grads[k]), dtype=torch.float64).reshape(-1)
            for k in keys]
    flag = torch.tensor([1.0 if bad else 0.0], dtype=torch.float64)
    buf = torch.cat(flat + [flag])
    if bool(bad):  # keep the sum finite; the flag says the step is skipped everywhere
        buf = torch.nan_to_num(buf, nan=0.0, posinf=0.0, neginf=0.0)
    world.average([buf])
    out, offset = {}, 0
    for k, f in zip(keys, flat):
        n = f.numel()
        out[k] = _like(buf[offset:offset + n].numpy().reshape(tuple(grads[k].shape)), grads[k])
        offset += n
    return out, bool(buf[-1] > 0)


def _like(a: np.ndarray, ref):
    """``a`` in the array library, dtype and device of ``ref``."""
    if xp.lib(ref) == "torch":
        import torch

        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
    return np.asarray(a, dtype=ref.dtype)


def _config_key(cfg: TrainConfig) -> dict:
    d = asdict(replace(cfg, solver=None))
    d["solver"] = repr(cfg.solver)
    keys = ("max_steps", "epochs")  # a resumed run may stop elsewhere or go on longer ...
    if cfg.lr_schedule != "constant" and cfg.lr_schedule_steps is None:
        keys = ("max_steps",)  # ... unless the schedule's length is set by epochs
    for key in keys:
        d.pop(key, None)
    return json.loads(json.dumps(d, default=str))


def _optimizer_arrays(opt) -> dict:
    if isinstance(opt, SGD):
        return {f"buf:{k}": v for k, v in opt.buf.items()}
    return {**{f"m:{k}": v for k, v in opt.m.items()}, **{f"v:{k}": v for k, v in opt.v.items()}}


def _save_checkpoint(path: pathlib.Path, net, opt, rng, probe_rng, cfg, hist, epoch: int,
                     steps: int, wall_time: float) -> None:
    arrays = {f"param:{k}": xp.to_numpy(v) for k, v in net.params.items()}
    arrays.update({k: xp.to_numpy(v) for k, v in _optimizer_arrays(opt).items()})
    meta = {"epoch": epoch, "steps": steps, "wall_time": wall_time, "config": _config_key(cfg),
            "adam_t": getattr(opt, "t", 0), "rng": rng.bit_generator.state,
            "probe_rng": probe_rng.bit_generator.state, "history": hist}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, default=float)), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: pathlib.Path, net, opt, rng, probe_rng, cfg, rank: int) -> dict:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files if k != "meta"}
    want = _config_key(cfg)
    diff = {k: (meta["config"].get(k), v) for k, v in want.items() if meta["config"].get(k) != v}
    if diff:
        raise ValueError(f"checkpoint {path} was written with a different config (saved, "
                         f"requested): {diff}; use another checkpoint path or resume=False")
    for k in net.params:
        if f"param:{k}" not in arrays:
            raise ValueError(f"checkpoint {path} has no parameter {k!r}: a different network")
        net.params[k] = _like(arrays[f"param:{k}"], net.params[k])
    for key, a in arrays.items():
        kind, _, name = key.partition(":")
        if kind == "buf":
            opt.buf[name] = _like(a, net.params[name])
        elif kind in ("m", "v"):
            getattr(opt, kind)[name] = _like(a, net.params[name])
    if isinstance(opt, AdamW):
        opt.t = int(meta["adam_t"])
    rng.bit_generator.state = meta["rng"]
    if rank == 0:  # other ranks' probe streams are their own; they restart them
        probe_rng.bit_generator.state = meta["probe_rng"]
    return meta


def _append_log(path, hist: dict, epoch: int, fresh: bool = False) -> None:
    i = hist["epoch"].index(epoch)
    row = {k: (v[i] if i < len(v) else None) for k, v in hist.items()}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w" if fresh else "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def plot_training(history: dict, path, *, title: str | None = None) -> None:
    """One run at a glance: accuracy, alignment with BP per layer, spectral radius.

    Parameters
    ----------
    history : dict
        :attr:`TrainResult.history` (or the rows of a ``log=`` file, as a dict of lists).
    path : str or pathlib.Path
        PNG file to write.
    title : str, optional
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = np.asarray(history["epoch"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k, label in (("train_acc", "train"), ("test_acc", "test")):
        if history.get(k):
            axes[0].plot(ep[:len(history[k])], history[k], label=label)
    axes[0].set_ylabel("accuracy")
    for k in sorted(history):
        if k.startswith("cos_") and history[k]:
            axes[1].plot(ep[-len(history[k]):], history[k], label=k[4:])
    axes[1].set_ylabel("cos(delta, delta_BP)")
    for k in ("rho_max", "rho_mean"):
        if history.get(k):
            axes[2].plot(ep[-len(history[k]):], history[k], label=k)
    axes[2].axhline(1.0, color="k", lw=0.6, ls="--")
    axes[2].set_ylabel("spectral radius of H'D")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histories(runs: dict, path, *, layer: str | None = None) -> None:
    """Plot test accuracy and error-vector alignment over epochs for several runs.

    Parameters
    ----------
    runs : dict
        ``label -> history`` (or a list of histories, averaged with a min-max band).
    path : str or pathlib.Path
        PNG file to write (matplotlib, Agg backend).
    layer : str, optional
        Which ``cos_<layer>`` to plot (default the first hidden layer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, hs in runs.items():
        hs = hs if isinstance(hs, (list, tuple)) else [hs]
        key = f"cos_{layer}" if layer else next((k for k in hs[0] if k.startswith("cos_")
                                                 and k != "cos_all"), "cos_all")
        for ax, k in ((axes[0], "test_acc"), (axes[1], key)):
            if k not in hs[0] or not hs[0][k]:
                continue
            a = np.array([h[k] for h in hs], dtype=float)
            ep = np.asarray(hs[0]["epoch"])[:a.shape[1]]
            ax.plot(ep, a.mean(0), label=label)
            if a.shape[0] > 1:
                ax.fill_between(ep, a.min(0), a.max(0), alpha=0.2)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("test accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("cos(delta_EP, delta_BP)" + (f" [{layer}]" if layer else " [first hidden]"))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
