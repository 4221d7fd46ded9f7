"""Demo: a 3-D Poisson pressure problem with a sphere obstacle, CG vs preconditioned CG.

A closed box (Neumann walls, singular: constants are the null space) with a solid sphere
and a smoke-like divergence right-hand side, solved to relative residual 1e-6 by CG and
by PCG with IC(0), pyamg smoothed aggregation and the geometric multigrid V-cycle. Each
row's peer runs on the same instance: scipy's ``cg`` (with the same preconditioner where
there is one) or pyamg's own solver. Writes ``poisson_convergence.png``.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

__all__ = ["run"]


def _scipy_cg(A, b, M, rtol):
    import scipy.sparse.linalg as spla

    its = []
    t = time.perf_counter()
    x, info = spla.cg(A, b, rtol=rtol, atol=0.0, M=M, maxiter=5000, callback=lambda xk: its.append(1))
    return time.perf_counter() - t, len(its), x


def run(small: bool = False, outdir: pathlib.Path = pathlib.Path("neurosolve-report/poisson"),
        progress: bool = True) -> list[dict]:
    """Solve the sphere problem with CG, PCG-IC0, PCG-AMG, PCG-GMG and PCG-LearnedMG (the
    shipped ``nmg3d`` weights); return summary rows.

    BLAS runs on one thread during the demo (ours and the peers alike): on a shared 2-core
    machine threaded OpenBLAS dot products were measured 1000x slower under load.

    Parameters
    ----------
    small : bool
        32^3 instead of 64^3.
    outdir : path
        Where the convergence plot goes.
    progress : bool
        Show progress bars.
    """
    from threadpoolctl import threadpool_limits  # a dependency of neurosolve

    with threadpool_limits(1, user_api="blas"):
        return _run(small, pathlib.Path(outdir), progress)


def _run(small: bool, outdir: pathlib.Path, progress: bool) -> list[dict]:
    import neurosolve as ns
    from neurosolve.problems import poisson as P
    from neurosolve.solvers import preconditioners as PC

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    n = 32 if small else 64
    rtol = 1e-6
    grid = P.sphere((n, n, n))
    b = P.rhs_blobs(grid, seed=0)
    prob = grid.system(b)
    A = prob.A.matrix
    label = f"sphere {n}^3, Neumann walls (singular), blob rhs"

    # warm the numba kernels on a tiny grid so timings exclude compilation
    tiny = P.sphere((8, 8, 8))
    tp = tiny.system(P.rhs_blobs(tiny))
    for M in (None, PC.IC0(tp), PC.GMG(tiny)):
        ns.solve(tp, ns.solvers.CG(rtol=rtol, M=M))

    rows, curves = [], {}

    def add(name, make_M, peer_name, peer_fn):
        t0 = time.perf_counter()
        M = make_M() if make_M else None
        res = ns.solve(prob, ns.solvers.CG(rtol=rtol, M=M, maxiter=5000), progress=progress)
        t = time.perf_counter() - t0
        peer_t, peer_its = peer_fn(M)
        curves[name] = res.history["relative_residual"]
        rows.append({
            "problem": label,
            "solver": name,
            "iterations": int(res.n_iter),
            "time_s": t,
            "setup_s": getattr(M, "setup_time", 0.0),
            "certificate": f"rel.res {res.certificate['relative_residual']:.1e}",
            "status": res.status.name,
            "peer": peer_name,
            "peer_iterations": peer_its,
            "peer_ratio": t / peer_t if peer_t else None,
        })

    def scipy_peer(M):
        t, its, _ = _scipy_cg(A, prob.b, None if M is None else M.as_scipy(), rtol)
        return t, its

    def scipy_peer_with_setup(make):
        def peer(_M):
            t0 = time.perf_counter()
            M = make()
            setup = time.perf_counter() - t0
            t, its, _ = _scipy_cg(A, prob.b, M.as_scipy(), rtol)
            return setup + t, its
        return peer

    def pyamg_peer(_M):
        import pyamg

        f = np.flatnonzero(grid.fluid.ravel())
        Af = A[f][:, f].tocsr()
        t0 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(Af, max_coarse=500)
        res = []
        ml.solve(prob.b[f], tol=rtol, maxiter=500, accel="cg", residuals=res)
        return time.perf_counter() - t0, len(res) - 1

    add("CG", None, "scipy cg", scipy_peer)
    add("PCG-IC0", lambda: PC.IC0(prob), "scipy cg + same IC0", scipy_peer_with_setup(lambda: PC.IC0(prob)))
    try:
        import pyamg  # noqa: F401

        add("PCG-AMG(SA)", lambda: PC.AMG(prob, max_coarse=500), "pyamg SA solve(accel=cg)", pyamg_peer)
    except ImportError:  # pragma: no cover - pyamg is a test dependency
        pass
    add("PCG-GMG", lambda: PC.GMG(grid), "scipy cg + same GMG", scipy_peer_with_setup(lambda: PC.GMG(grid)))

    def gmg_peer(_M):  # the classical cycle LearnedMG starts from, in the same CG loop
        t0 = time.perf_counter()
        res = ns.solve(prob, ns.solvers.CG(rtol=rtol, M=PC.GMG(grid), maxiter=5000),
                       progress=False)
        return time.perf_counter() - t0, int(res.n_iter)

    try:
        from neurosolve.neural import available_pretrained
    except ImportError:  # pragma: no cover - torch is a dependency
        available_pretrained = list
    if "nmg3d" in available_pretrained():
        ns.solve(tp, ns.solvers.CG(rtol=rtol, M=PC.LearnedMG(tiny, "nmg3d")))  # warm torch
        add("PCG-LearnedMG(nmg3d)", lambda: PC.LearnedMG(grid, "nmg3d"), "PCG-GMG (ours)",
            gmg_peer)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, h in curves.items():
        ax.semilogy(np.arange(len(h)), h, marker="." if len(h) < 40 else None, label=name)
    ax.axhline(rtol, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual ||b - Ax|| / ||b||")
    ax.set_title(label, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(outdir / "poisson_convergence.png", dpi=120)
    plt.close(fig)
    return rows
