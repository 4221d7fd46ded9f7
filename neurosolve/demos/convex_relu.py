"""Demo: convex training of two-layer ReLU networks on scikit-learn's bundled data.

Trains on digits "2 vs 8" (the pair of Bai, Gautam and Sojoudi's experiments; 8 -> +1,
2 -> -1) and breast_cancer with ADMM, next to cvxpy + Clarabel (the same convex program)
and an Adam-trained network of the same width (2P neurons) on the same non-convex
objective; prints train/test accuracy, the objective gap to Clarabel and the time. A last
row solves the convex program over the Adam network's own activation patterns: it contains
that network, so its optimum is never above Adam's objective. The gap column is the
non-convex objective of each network relative to the sampled program's optimum (negative
values are possible: a network of width 2P is not restricted to the P sampled patterns).
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

__all__ = ["run"]

SEED = 20220518  # the authors' seed


def _datasets():
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    dg = load_digits()
    keep = np.isin(dg.target, (2, 8))
    Xd, yd = dg.data[keep], np.where(dg.target[keep] == 8, 1.0, -1.0)
    bc = load_breast_cancer()
    Xb, yb = bc.data, np.where(bc.target == 1, 1.0, -1.0)
    out = []
    for name, X, y in (("digits 2 vs 8", Xd, yd), ("breast_cancer", Xb, yb)):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=SEED, stratify=y)
        out.append((name, Xtr, Xte, ytr, yte))
    return out


def run(small: bool = False, outdir: pathlib.Path = pathlib.Path("neurosolve-report"),
        progress: bool = True) -> list[dict]:
    """Run the demo and return summary rows (one per dataset and method).

    Parameters
    ----------
    small : bool
        Fewer patterns and Adam epochs (finishes in well under a minute on 2 cores).
    outdir : pathlib.Path
        Where the convergence plot ``convex_relu.png`` is written.
    progress : bool
        Show progress bars and print the table.
    """
    import scipy.linalg  # noqa: F401  (load the BLAS libraries before limiting them)
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401
    from threadpoolctl import threadpool_limits

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # one BLAS thread: the solves are small, and on a busy 2-core machine extra BLAS
    # threads spin and slow every triangular solve down several times
    with threadpool_limits(1):
        rows, curves = _run(small, progress)
    _plot(curves, outdir / "convex_relu.png")
    if progress:
        _print(rows)
    return rows


def _run(small, progress):
    import neurosolve as ns
    from neurosolve.neural.relu_network import train_nonconvex
    from neurosolve.problems import ConvexReLU

    P = 8 if small else 24
    epochs = 300 if small else 2000
    rows: list[dict] = []
    curves = []
    for name, Xtr, Xte, ytr, yte in _datasets():
        beta = 1e-2 * len(ytr)
        prob = ConvexReLU(Xtr, ytr, beta=beta, loss="squared", patterns=P, seed=SEED)
        label = f"{name} (n={prob.n}, d={prob.d}, P={prob.P}, beta={beta:g})"

        t0 = time.perf_counter()
        rc = ns.solve(prob, ns.solvers.CvxpyReLU())
        t_cvx = time.perf_counter() - t0
        p_ref = rc.certificate["objective"]

        t0 = time.perf_counter()
        ra = ns.solve(prob, ns.solvers.ADMM(maxiter=5000 if small else 20000), progress=progress)
        t_admm = time.perf_counter() - t0
        curves.append((name, ra.history["objective"], p_ref))

        t0 = time.perf_counter()
        adam = train_nonconvex(prob, width=2 * prob.P, epochs=epochs, lr=1e-2, seed=0)
        t_adam = time.perf_counter() - t0

        # the convex program over Adam's own patterns contains Adam's network, so its
        # optimum can only be lower: the convex solver certifies/improves the Adam result
        prob_a = ConvexReLU(Xtr, ytr, beta=beta, loss="squared", patterns="from_network",
                            network=adam)
        t0 = time.perf_counter()
        ra2 = ns.solve(prob_a, ns.solvers.ADMM(maxiter=5000 if small else 20000))
        t_admm2 = time.perf_counter() - t0

        def accs(net):
            return (float(np.mean(net.predict(Xtr) == ytr)), float(np.mean(net.predict(Xte) == yte)))

        for solver, res_t, net, obj in (
            ("ADMM", (ra, t_admm), prob.network(ra), ra.certificate["objective"]),
            ("cvxpy+Clarabel", (rc, t_cvx), prob.network(rc), p_ref),
            ("Adam (width 2P)", (None, t_adam), adam, None),
            ("ADMM, Adam's patterns", (ra2, t_admm2), prob_a.network(ra2),
             ra2.certificate["objective"]),
        ):
            res, t = res_t
            tr, te = accs(net)
            nc = prob.nc_objective(net)
            if res is not None:
                c = res.certificate
                cert = (f"obj={c['objective']:.6g} gap_vs_clarabel={(obj - p_ref) / p_ref:+.1e} "
                        f"viol={c['relative_cone_violation']:.1e} neurons={int(c['active_neurons'])}")
                iters = res.n_iter
            else:
                cert = f"nc_obj={nc:.6g} ({(nc - p_ref) / p_ref:+.1e} vs convex optimum)"
                iters = epochs
            rows.append({
                "family": "convex_relu", "problem": label, "solver": solver,
                "iterations": int(iters), "time_s": float(t), "certificate": cert,
                "peer": "cvxpy+Clarabel",
                "peer_ratio": float(t / t_cvx) if solver != "cvxpy+Clarabel" else 1.0,
                "train_accuracy": tr, "test_accuracy": te, "nc_objective": float(nc),
                "objective_gap_vs_clarabel": float((nc - p_ref) / p_ref),
                "adam_nc_objective": float(prob.nc_objective(adam)),
            })
    return rows, curves


def _print(rows):
    print(f"{'problem':58s} {'solver':22s} {'iters':>6s} {'time':>7s} {'train':>6s} "
          f"{'test':>6s} {'gap':>9s}")
    for r in rows:
        print(f"{r['problem'][:58]:58s} {r['solver']:22s} {r['iterations']:6d} "
              f"{r['time_s']:7.2f} {r['train_accuracy']:6.3f} {r['test_accuracy']:6.3f} "
              f"{r['objective_gap_vs_clarabel']:+9.1e}")


def _plot(curves, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, h, p in curves:
        ax.semilogy(np.maximum(np.abs(h - p) / p, 1e-12), label=name)
    ax.set_xlabel("ADMM iteration")
    ax.set_ylabel("|objective(u) - p*| / p*  (p* from Clarabel)")
    ax.set_title("Convex ReLU training: ADMM convergence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
