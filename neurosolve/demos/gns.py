"""Demo of GNS Newton: logistic regression on breast_cancer, softmax regression on digits.

Each problem is solved by GNS Newton with the exact Hessian and with the empirical
Fisher approximation, and by scipy's Newton-type methods on the same oracles, to
``||grad f|| <= 1e-8``. Rows report iterations, factorizations, time and the time ratio
against scipy's trust-exact (the closest dense-Hessian peer).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np

__all__ = ["run", "scipy_peer", "SCIPY_METHODS"]

#: scipy methods used as peers, and which second-order oracle each receives
SCIPY_METHODS = {
    "trust-exact": "hess",
    "trust-ncg": "hessp",
    "trust-krylov": "hessp",
    "Newton-CG": "hessp",
    "L-BFGS-B": None,
}


class _GradCache:
    """Wraps ``fun_and_grad`` to remember gradient norms (for a uniform stopping rule)."""

    def __init__(self, fg):
        self.fg = fg
        self.norms: dict[bytes, float] = {}
        self.nfev = 0

    def __call__(self, x):
        f, g = self.fg(x)
        self.nfev += 1
        if len(self.norms) > 64:
            self.norms.clear()
        self.norms[np.asarray(x).tobytes()] = float(np.linalg.norm(g))
        return f, g

    def gnorm(self, x):
        key = np.asarray(x).tobytes()
        if key not in self.norms:
            self(x)
        return self.norms[key]


def scipy_peer(problem, method: str, gtol: float = 1e-8, maxiter: int = 1000,
               backend: str = "numba", time_limit: float | None = None) -> dict[str, Any]:
    """Run ``scipy.optimize.minimize(method)`` on the problem's oracles to ``||g||_2 <= gtol``.

    The trust-region methods use their own ``gtol``; Newton-CG and L-BFGS-B have no
    gradient-norm rule, so a callback stops them when the gradient norm (cached from their
    last evaluation) reaches ``gtol``. Returns ``nit, nfev, nhev, time_s, grad_norm, f,
    reached``. ``time_limit`` (seconds) stops a slow method through its callback.
    """
    from scipy.optimize import minimize

    o = problem.oracles(backend)
    fg = _GradCache(o["fun_and_grad"])
    kind = SCIPY_METHODS[method]
    kw: dict[str, Any] = {}
    if kind == "hess":
        kw["hess"] = o["hess"]
    elif kind == "hessp":
        kw["hessp"] = o["hessp"]
    opts: dict[str, Any] = {"maxiter": maxiter}
    nit = [0]
    trust = method.startswith("trust")
    t0 = [0.0]

    def cb(intermediate_result):
        nit[0] += 1
        if time_limit is not None and time.perf_counter() - t0[0] > time_limit:
            raise StopIteration
        if not trust and fg.gnorm(intermediate_result.x) <= gtol:
            raise StopIteration

    if trust:
        opts["gtol"] = gtol
    elif method == "Newton-CG":
        opts["xtol"] = 1e-300
    else:
        opts.update(gtol=0.0, ftol=0.0, maxcor=10)
    x0 = np.asarray(problem.x0, dtype=float)
    t0[0] = time.perf_counter()
    res = minimize(fg, x0, jac=True, method=method, callback=cb, options=opts, **kw)
    elapsed = time.perf_counter() - t0[0]
    f, g = problem.oracles("numpy")["fun_and_grad"](res.x)
    gn = float(np.linalg.norm(g))
    return {"method": method, "nit": int(max(nit[0], res.nit)),
            "nfev": fg.nfev, "nhev": int(getattr(res, "nhev", 0) or 0), "time_s": elapsed,
            "grad_norm": gn, "f": float(f), "reached": gn <= gtol * 1.0001, "x": res.x}


def _gns_run(problem, hessian: str, gtol: float, maxiter: int = 2000, **kw):
    import neurosolve as ns
    from neurosolve.solvers import GNSNewton

    res = ns.solve(problem, GNSNewton(hessian=hessian, gtol=gtol, maxiter=maxiter, **kw))
    return res


def _plot(curves: dict, title: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, g in curves.items():
        ax.semilogy(np.arange(len(g)), g, marker=".", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("||grad f||")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(small: bool = False, outdir: pathlib.Path = pathlib.Path("neurosolve-report/gns"),
        progress: bool = True) -> list[dict]:
    """Run the demo; returns summary rows and writes convergence plots to ``outdir``.

    ``small=True``: breast_cancer (exact and Fisher) and digits (exact), a few seconds.
    The dense products are small, so BLAS runs on one thread (threadpoolctl): on a
    loaded 2-core machine multi-threaded BLAS on 30x30 to 640x640 matrices was measured
    10x slower.
    """
    from threadpoolctl import threadpool_limits  # a dependency of neurosolve

    with threadpool_limits(1):
        return _run(small, outdir, progress)


def _run(small, outdir, progress):
    from neurosolve.problems import smooth_gallery as gal

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    gtol = 1e-8
    rows: list[dict] = []

    A, y = gal.breast_cancer()
    m = A.shape[0]
    cases = [("logistic breast_cancer (569x30, mu=1/m)", gal.logistic(A, y, 1.0 / m),
              ["exact", "fisher"] if small else ["exact", "fisher", "diag"])]
    X, lab = gal.digits()
    cases.append(("softmax digits (1797x64, 10 classes, mu=1e-3)", gal.softmax(X, lab, 10, 1e-3),
                  ["exact"]))  # Fisher on digits: 660 iterations, ~9 min here
    peers = ["trust-exact"] if small else ["trust-exact", "Newton-CG", "L-BFGS-B"]
    for title, prob, hessians in cases:
        prob.oracles("numba")["fun_and_grad"](np.asarray(prob.x0))  # compile before timing
        peer_res = {meth: scipy_peer(prob, meth, gtol) for meth in peers}
        ref = peer_res["trust-exact"]
        curves = {}
        for h in hessians:
            res = _gns_run(prob, h, gtol, maxiter=300 if small else 3000)
            curves[f"GNS {h}"] = res.history["grad_norm"]
            if progress:
                print(f"  [gns] {title}: GNS {h}: {res.status.name} in {res.n_iter} it, "
                      f"{res.stats['wall_time']:.3f} s", flush=True)
            rows.append({
                "family": "gns", "problem": title, "solver": f"GNSNewton(hessian={h!r})",
                "iterations": res.n_iter, "time_s": res.stats["wall_time"],
                "certificate": f"|g|={res.certificate['grad_norm']:.1e} {res.status.name}",
                "peer": f"scipy trust-exact ({ref['nit']} it)",
                "peer_ratio": res.stats["wall_time"] / ref["time_s"] if ref["time_s"] > 0 else None,
                "factorizations": res.stats.get("factorizations"),
                "hessian_evals": res.stats.get("nhev"),
                "f": res.certificate["f"],
                "distance_to_peer": float(np.linalg.norm(res.x - ref["x"])),
            })
        for meth, pr in peer_res.items():
            rows.append({
                "family": "gns", "problem": title, "solver": f"scipy {meth}",
                "iterations": pr["nit"], "time_s": pr["time_s"],
                "certificate": (f"|g|={pr['grad_norm']:.1e}"
                                + ("" if pr["reached"] else " (not reached)")),
                "peer": "-", "peer_ratio": None, "nfev": pr["nfev"], "hessian_evals": pr["nhev"],
            })
        safe = "".join(ch if ch.isalnum() else "_" for ch in title.split(" (")[0])
        _plot(curves, title, outdir / f"{safe}.png")
    return rows


if __name__ == "__main__":  # pragma: no cover
    for r in run(small=True):
        print(r)
