"""Demo: equilibrium propagation with Jacobian homeostasis on scikit-learn digits.

A 2-hidden-layer recurrent MLP (64 -> H <-> H <-> 10, sigmoid(4z-2), softmax readout)
with independent feedback weights (angle 90 degrees) is trained three ways: by the exact
implicit gradient (BP / RBP adjoint), by generalized EP with the exact response
(``ep_exact``, the paper's N = 0 mode) and by the same EP plus the homeostatic loss. It
reports accuracy, the alignment ``cos(delta_EP, delta_BP)`` of the first hidden layer and
the fraction of converged fixed points, and plots both over training.

All runs share one recipe (``RECIPE``): AdamW lr 1e-3 with a 10x readout learning rate,
cosine decay of every rate to 0.1x over the run, batch 20, recurrent kernels scaled by 0.6
at init, the contraction penalty (weight 100, target gain 0.8) as the explicit stabilizer
(see :mod:`neurosolve.neural.ep.stability`), and no step from a batch whose phases did not
all converge (``skip_unconverged``). The last three settings are what keep training
stable: at a constant rate, or with the gain allowed up to 0.9, the loop gain of some
batches drifts past 1, their fixed points are not reached, and the estimate of such a
batch can undo an epoch (docs/ep_homeostasis.md has the studies and the ablation).

``python -m neurosolve.demos.ep --study`` runs the 5-seed comparison of the docs
(BP, symmetric-init EP, asymmetric EP with and without homeostasis) and writes
``ep_digits_study.json``.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import numpy as np

__all__ = ["run", "RECIPE", "STUDY_CONFIGS", "CONV_RECIPE", "CONV_NET", "CONV_LAYER_LR",
           "CONV_STUDY_CONFIGS", "digits_study", "max_drop", "layer_lr_scales", "load_conv_digits",
           "reference_net", "tables", "main"]

RECIPE: dict[str, Any] = dict(optimizer="adamw", lr=1e-3, readout_lr_scale=10.0, batch_size=20,
                              contraction=100.0, contraction_target=0.8,
                              lr_schedule="cosine", lr_final=0.1, skip_unconverged=True)
NET: dict[str, Any] = dict(recurrent_scale=0.6)

STUDY_CONFIGS: dict[str, dict] = {
    "BP (angle 90)": dict(method="bp", angle=90.0),
    "EP symmetric init (angle 0)": dict(method="ep_exact", angle=0.0),
    "EP asymmetric (angle 90), lambda 0": dict(method="ep_exact", angle=90.0),
    "EP asymmetric (angle 90), lambda 10": dict(method="ep_exact", angle=90.0, homeostasis=10.0),
}


#: The convolutional case: ``conv_net((1, 8, 8), channels)`` on the digits images
#: standardized with the training set's mean and 1.5x its standard deviation (the
#: reference's normalization), AdamW with a 10x readout rate and a cosine decay to 0.01x.
#: Forward and feedback kernels are scaled by 1.5 at init: with LeCun init the dsilu
#: layers lose most of the input's variation (the output layer of a 3-layer net varies by
#: 1e-3 across digits) and nothing trains; equal scales keep the Jacobian's two triangles
#: of one size, which the homeostatic loss would otherwise spend its effort equalizing.
CONV_RECIPE: dict[str, Any] = dict(optimizer="adamw", lr=1e-3, readout_lr_scale=10.0,
                                   batch_size=20, lr_schedule="cosine", lr_final=0.01,
                                   homeostasis_method="probe", n_probes=5)
CONV_NET: dict[str, Any] = dict(channels=(16, 32), forward_scale=1.5, feedback_scale=1.5)
#: learning-rate multipliers per layer from the input up (``layer_lr_scales``); None: none.
#: The reference CIFAR recipe (SGD) uses 25, 15, 10, 8; with AdamW they are not needed.
CONV_LAYER_LR: tuple[float, ...] | None = None

CONV_STUDY_CONFIGS: dict[str, dict] = {
    "BP (angle 90)": dict(method="bp", angle=90.0),
    "EP asymmetric (angle 90), lambda 0": dict(method="ep_exact", angle=90.0),
    "EP asymmetric (angle 90), lambda 5": dict(method="ep_exact", angle=90.0, homeostasis=5.0),
}


def layer_lr_scales(net, factors) -> dict:
    """``TrainConfig.lr_scales`` giving every parameter of layer ``l`` (its forward kernel
    and bias, and the feedback kernel from it) the factor ``factors[l - 1]``."""
    names = ["input"] + list(net.names)
    if len(factors) != len(names) - 1:
        raise ValueError(f"factors must have one entry per layer ({len(names) - 1}), "
                         f"got {len(factors)}")
    out = {}
    for i, f in enumerate(factors):
        lo, hi = names[i], names[i + 1]
        out.update({f"W_{lo}_{hi}": float(f), f"b_{hi}": float(f)})
        if f"B_{hi}_{lo}" in net.params:
            out[f"B_{hi}_{lo}"] = float(f)
    return out


def load_conv_digits():
    """The digits split as ``(N, 1, 8, 8)`` torch images, standardized with the training
    set's mean and 1.5x its standard deviation."""
    from neurosolve.neural.ep import load_digits_split

    Xtr, ytr, Xte, yte = load_digits_split(library="torch", images=True)
    mu, sd = Xtr.mean(), 1.5 * Xtr.std()
    return (Xtr - mu) / sd, ytr, (Xte - mu) / sd, yte


def _run_one(cfg: dict, *, hidden: int, epochs: int, seed: int, data, progress: bool,
             n_train: int | None = None, network: str = "mlp"):
    from neurosolve.neural.ep import conv_net, mlp, train

    Xtr, ytr, Xte, yte = data
    if n_train is not None:
        Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    cfg = dict(cfg)
    angle = cfg.pop("angle", 90.0)
    if network == "conv":
        net = conv_net((1, 8, 8), angle=angle, seed=seed, **CONV_NET)
        kw = dict(CONV_RECIPE)
        if CONV_LAYER_LR is not None:
            kw["lr_scales"] = layer_lr_scales(net, CONV_LAYER_LR)
    else:
        tied = cfg.pop("tied", False)
        net = mlp([64, hidden, hidden, 10], angle=angle, tied=tied, seed=seed, **NET)
        kw = dict(RECIPE)
    kw.update(cfg)
    t = time.perf_counter()
    res = train(net, Xtr, ytr, Xte, yte, epochs=epochs, seed=seed, progress=progress, **kw)
    return res, time.perf_counter() - t


def _summ(h: dict) -> dict:
    keys = ["test_acc", "cos_h1", "cos_conv1", "cos_all", "free_converged", "test_converged",
            "rho_max", "angle", "jac_sym", "homeo"]
    return {k: float(h[k][-1]) for k in keys if k in h and h[k]}


def run(small: bool = False, outdir: pathlib.Path = pathlib.Path("neurosolve-report"),
        progress: bool = True) -> list[dict]:
    """Train BP, asymmetric EP and asymmetric EP + homeostasis on digits; plot; summarize.

    ``small=True``: hidden 24, 500 training samples, 3 epochs (a smoke run: it shows the
    alignment gained by homeostasis, not final accuracies). ``small=False``: hidden 64,
    all 1437 training samples, 10 epochs (a few minutes). BLAS runs single-threaded
    (tiny matrices).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _run(small, pathlib.Path(outdir), progress)


def _run(small: bool, outdir: pathlib.Path, progress: bool) -> list[dict]:
    from neurosolve.core import solve
    from neurosolve.neural.ep import load_digits_split, plot_histories, relaxation_map
    from neurosolve.problems.fixed_point import FixedPointProblem
    from neurosolve.solvers.fixed_point import FixedPoint

    outdir.mkdir(parents=True, exist_ok=True)
    hidden, epochs, n_train = (24, 3, 500) if small else (64, 10, None)
    data = load_digits_split()
    runs = {
        "BP": dict(method="bp", angle=90.0),
        "EP angle 90": dict(method="ep_exact", angle=90.0),
        "EP angle 90 + homeostasis": dict(method="ep_exact", angle=90.0, homeostasis=10.0),
    }
    results = {}
    for label, cfg in runs.items():
        results[label] = _run_one(cfg, hidden=hidden, epochs=epochs, seed=0, data=data,
                                  progress=progress, n_train=n_train)
    plot_histories({k: v[0].history for k, v in results.items()}, outdir / "ep_digits.png",
                   layer="h1")
    bp_time = results["BP"][1]
    rows = []
    for label, (res, secs) in results.items():
        s = _summ(res.history)
        rows.append({
            "family": "ep",
            "problem": f"digits 8x8, MLP 64-{hidden}-{hidden}-10, feedback angle 90",
            "solver": {"BP": "BP (implicit adjoint)", "EP angle 90": "EP exact response",
                       "EP angle 90 + homeostasis": "EP exact + homeostasis (lambda 10)"}[label],
            "iterations": res.steps,
            "time_s": secs,
            "certificate": (f"test acc {s.get('test_acc', float('nan')):.3f}, "
                            f"cos_h1 {s.get('cos_h1', float('nan')):.2f}, "
                            f"free conv {100 * s.get('free_converged', float('nan')):.1f}%"),
            "peer": "BP (implicit adjoint)",
            "peer_ratio": secs / bp_time if bp_time > 0 else None,
            **s,
        })
    # fixed-point solver row: Anderson vs plain damped iteration on one relaxation
    net = results["EP angle 90 + homeostasis"][0].net
    Xte = data[2]
    G = relaxation_map(net, net.params, net.input_drive(net.params, Xte))
    prob = FixedPointProblem(G, np.zeros((Xte.shape[0], net.n_state)), batched=True)
    out = {}
    for name, sol in (("anderson", FixedPoint(method="anderson", rtol=1e-8, atol=1e-10)),
                      ("damped", FixedPoint(method="damped", damping=0.5, rtol=1e-8, atol=1e-10,
                                            maxiter=5000))):
        t = time.perf_counter()
        r = solve(prob, sol)
        out[name] = (r, time.perf_counter() - t)
    ra, ta = out["anderson"]
    rd, td = out["damped"]
    rows.append({
        "family": "ep",
        "problem": f"free-phase relaxation, {Xte.shape[0]} digits, n={net.n_state}",
        "solver": "FixedPoint(anderson)",
        "iterations": ra.n_iter,
        "time_s": ta,
        "certificate": f"{ra.status.name}, residual {ra.certificate['residual']:.1e}",
        "peer": f"FixedPoint(damped 0.5): {rd.n_iter} it, {rd.status.name}",
        "peer_ratio": ta / td if td > 0 else None,
    })
    with open(outdir / "ep_demo.json", "w") as fh:
        json.dump({"rows": rows, "histories": {k: v[0].history for k, v in results.items()}},
                  fh, indent=1, default=float)
    return rows


def max_drop(acc, after: int = 3) -> float:
    """Largest fall of test accuracy between consecutive epochs ``e -> e + 1`` with
    ``e >= after`` (0 when it never falls): the collapse measure of the study."""
    acc = [float(a) for a in acc]
    drops = [acc[e] - acc[e + 1] for e in range(after, len(acc) - 1)]
    return max([0.0] + drops)


def digits_study(seeds=(0, 1, 2, 3, 4), epochs: int = 10, hidden: int = 64,
                 configs: dict | None = None, out: pathlib.Path | str = "ep_digits_study.json",
                 progress: bool = False, plot: pathlib.Path | str | None = None,
                 network: str = "mlp") -> dict:
    """Multi-seed comparison on digits (CPU-heavy: 20-30 s per run on one core; BLAS is
    limited to one thread).

    Writes ``out`` after every run (JSON: per-config, per-seed final metrics, the test
    accuracy of every epoch and its largest epoch-to-epoch drop after epoch 3
    (:func:`max_drop`), and mean / std / min / max over seeds) so an interrupted study
    keeps its results.

    ``network="conv"``: the convolutional case (``CONV_RECIPE``, ``CONV_NET``,
    ``CONV_LAYER_LR``, default configs ``CONV_STUDY_CONFIGS``; torch, one thread; about
    10-20 minutes per run); ``hidden`` is then ignored.
    """
    from threadpoolctl import threadpool_limits

    if network not in ("mlp", "conv"):
        raise ValueError(f"network must be 'mlp' or 'conv', got {network!r}")
    with threadpool_limits(1):
        if network == "conv":
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return _study(seeds, epochs, hidden, configs, out, progress, plot, network)
            finally:
                torch.set_num_threads(threads)
        return _study(seeds, epochs, hidden, configs, out, progress, plot, network)


def _study(seeds, epochs, hidden, configs, out, progress, plot, network) -> dict:
    from neurosolve.neural.ep import load_digits_split, plot_histories

    conv = network == "conv"
    configs = configs or (CONV_STUDY_CONFIGS if conv else STUDY_CONFIGS)
    data = load_conv_digits() if conv else load_digits_split()
    report: dict = {"network": network, "recipe": CONV_RECIPE if conv else RECIPE,
                    "net": CONV_NET if conv else NET, "epochs": epochs,
                    "seeds": list(seeds), "runs": {}, "summary": {}}
    if conv:
        report["layer_lr"] = CONV_LAYER_LR
    else:
        report["hidden"] = hidden
    hist_by: dict = {}
    for label, cfg in configs.items():
        report["runs"][label] = []
        for seed in seeds:
            res, secs = _run_one(cfg, hidden=hidden, epochs=epochs, seed=seed, data=data,
                                 progress=progress, network=network)
            s = _summ(res.history)
            acc = [float(a) for a in res.history["test_acc"]]
            s.update(seed=seed, time_s=secs, failed_phases=int(np.sum(res.history["failed_phases"])),
                     skipped_steps=int(np.sum(res.history["skipped_steps"])),
                     min_free_converged=float(np.nanmin(res.history["free_converged"][1:])),
                     test_acc_by_epoch=acc, max_drop_after_epoch3=max_drop(acc, after=3))
            report["runs"][label].append(s)
            hist_by.setdefault(label, []).append(res.history)
            vals = report["runs"][label]
            report["summary"][label] = {
                k: {"mean": float(np.mean([v[k] for v in vals])),
                    "std": float(np.std([v[k] for v in vals])),
                    "min": float(np.min([v[k] for v in vals])),
                    "max": float(np.max([v[k] for v in vals]))}
                for k in ("test_acc", "cos_h1", "cos_conv1", "cos_all", "free_converged",
                          "test_converged", "min_free_converged", "rho_max", "angle",
                          "max_drop_after_epoch3")
                if all(k in v for v in vals)}
            with open(out, "w") as fh:
                json.dump(report, fh, indent=1, default=float)
            first = "conv1" if conv else "h1"
            print(f"[{label}] seed {seed}: test acc {s['test_acc']:.3f}, cos_{first} "
                  f"{s.get('cos_' + first, float('nan')):.3f}, {secs:.0f}s", flush=True)
    if plot is not None:
        plot_histories(hist_by, plot, layer="conv1" if conv else "h1")
    return report


def reference_net(angle: float = 0.0, seed: int = 0, target: float | None = 0.72,
                  scale: float | None = None, batch: int = 6):
    """The small reference net of the docs and tests: 20 -> 16 <-> 16 <-> 5, MSE loss,
    recurrent kernels scaled (bisection) so the largest spectral radius of ``H'D`` over a
    random batch is ``target`` (or scaled by ``scale``). Returns ``(net, x, y, free)``."""
    from neurosolve.neural.ep import dense_jacobian, free_phase, mlp
    from neurosolve.solvers.fixed_point import FixedPoint

    tight = FixedPoint(method="anderson", rtol=0, atol=1e-14, maxiter=3000)
    rng = np.random.default_rng(100 + seed)
    x = rng.random((batch, 20))
    y = rng.integers(0, 5, batch)
    base = mlp([20, 16, 16, 5], angle=angle, seed=seed, loss="mse")

    def scaled(s):
        net = base.copy()
        for k in net.params:
            if (k.startswith("W_") and not k.startswith("W_input")) or k.startswith("B_"):
                net.params[k] = s * base.params[k]
        return net

    if scale is None:
        lo, hi = 0.1, 2.0
        for _ in range(18):
            s = 0.5 * (lo + hi)
            net = scaled(s)
            fp = free_phase(net, x, y, solver=tight)
            Hp, D = dense_jacobian(net), net.activation.deriv(fp.u)
            rho = max(np.max(np.abs(np.linalg.eigvals(Hp * D[b][None, :]))) for b in range(batch))
            lo, hi = (lo, s) if rho > target else (s, hi)
        scale = lo
    net = scaled(scale)
    return net, x, y, free_phase(net, x, y, solver=tight)


def tables() -> str:
    """Markdown tables of the docs: Cauchy error vs (beta, N) and alignment vs angle."""
    from neurosolve.neural.ep import (
        bp_adjoint, cauchy_response, exact_response, homeostatic_loss, layer_cosines,
    )
    from neurosolve.solvers.fixed_point import FixedPoint

    tight = FixedPoint(method="anderson", rtol=0, atol=1e-14, maxiter=3000)
    out = []
    net, x, y, fp = reference_net(angle=0.0)
    ex, _ = exact_response(net, fp, solver=tight)
    out += ["| beta \\ N | 1 | 2 | 4 | 8 | 16 |", "|---|---|---|---|---|---|"]
    for beta in (0.02, 0.05, 0.1, 0.2):
        row = []
        for N in (1, 2, 4, 8, 16):
            d, reps, _ = cauchy_response(net, fp, beta, N, solver=tight)
            ok = all(r.ok for r in reps)
            row.append(f"{np.linalg.norm(d - ex) / np.linalg.norm(ex):.1e}" if ok else "fail")
        out.append(f"| {beta} | " + " | ".join(row) + " |")
    out.append("")
    angles = list(range(0, 91, 15))
    out += ["| angle | " + " | ".join(map(str, angles)) + " |", "|---|" + "---|" * len(angles)]
    rows: dict = {"cos h1": [], "cos all": [], "homeostatic loss": []}
    for a in angles:
        c1, ca, hl = [], [], []
        for seed in range(5):
            net, x, y, fp = reference_net(angle=float(a), seed=seed, scale=0.6)
            de, _ = exact_response(net, fp, solver=tight)
            db, _ = bp_adjoint(net, fp, solver=tight)
            c = layer_cosines(net, de, db)
            c1.append(c["h1"])
            ca.append(c["all"])
            hl.append(homeostatic_loss(net).value)
        rows["cos h1"].append(np.mean(c1))
        rows["cos all"].append(np.mean(ca))
        rows["homeostatic loss"].append(np.mean(hl))
    for k, v in rows.items():
        out.append(f"| {k} | " + " | ".join(f"{t:.3f}" for t in v) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", action="store_true", help="run the multi-seed digits study")
    p.add_argument("--conv", action="store_true",
                   help="with --study: the convolutional network instead of the MLP")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--out", default="ep_digits_study.json")
    p.add_argument("--plot", default=None)
    p.add_argument("--small", action="store_true")
    p.add_argument("--outdir", default="neurosolve-report")
    p.add_argument("--tables", action="store_true", help="print the docs' estimator tables")
    a = p.parse_args(argv)
    if a.tables:
        print(tables())
    elif a.study:
        digits_study(seeds=tuple(range(a.seeds)), epochs=a.epochs, hidden=a.hidden, out=a.out,
                     plot=a.plot, network="conv" if a.conv else "mlp")
    else:
        for row in run(small=a.small, outdir=pathlib.Path(a.outdir)):
            print({k: row[k] for k in ("solver", "iterations", "time_s", "certificate", "peer_ratio")})


if __name__ == "__main__":  # pragma: no cover
    main()
