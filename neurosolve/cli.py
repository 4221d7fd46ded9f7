"""The ``neurosolve`` command: demo, solve, train, bench."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

POISSON_SOLVERS = ("cg", "pcg-jacobi", "pcg-ic0", "pcg-ssor", "pcg-amg", "pcg-gmg", "dcdm", "fft")
GEOMETRIES = ("box", "sphere", "cylinder", "ellipsoids", "pool")


def _demo(args) -> int:
    from neurosolve.demos import format_table, run_demos

    only = args.only.split(",") if args.only else None
    report = run_demos(small=args.small, outdir=args.out, progress=not args.no_progress, only=only)
    print()
    print(format_table(report["rows"]))
    print(f"\nreport written to {args.out}/ (report.json, summary.md, plots); "
          f"total {report['total_time_s']:.1f} s")
    if report["not_installed"]:
        print("families without a demo module:", ", ".join(report["not_installed"]))
    if report["failures"]:
        print("FAILED families:", ", ".join(report["failures"]), file=sys.stderr)
        return 1
    return 0


def _solve_poisson(args) -> int:
    import numpy as np

    import neurosolve as ns
    from neurosolve.problems import poisson

    shape = tuple(args.grid)
    if len(shape) not in (2, 3):
        raise SystemExit("--grid takes 2 or 3 sizes, e.g. --grid 64 64 64")
    make = {"box": poisson.box, "sphere": poisson.sphere, "cylinder": poisson.cylinder,
            "ellipsoids": poisson.ellipsoids, "pool": poisson.pool}[args.geometry]
    kwargs = {"walls": args.walls}
    if args.geometry in ("ellipsoids", "pool"):
        kwargs["seed"] = args.seed
    grid = make(shape, **kwargs)
    rhs = {"blobs": poisson.rhs_blobs, "noise": poisson.rhs_noise,
           "lowfreq": poisson.rhs_lowfreq}[args.rhs](grid, seed=args.seed)
    if args.solver == "fft":
        import time

        from neurosolve.solvers.fast_poisson import fast_poisson_solve

        t = time.perf_counter()
        x = fast_poisson_solve(grid, rhs)
        A = grid.matrix()
        rel = np.linalg.norm(rhs - A @ x) / np.linalg.norm(rhs)
        print(f"fft: exact solve in {time.perf_counter() - t:.3g} s, relative residual {rel:.2e}")
        return 0
    problem = grid.system(rhs)
    M = None
    P = ns.solvers.preconditioners
    if args.solver == "pcg-jacobi":
        M = P.Jacobi(problem)
    elif args.solver == "pcg-ic0":
        M = P.IC0(problem)
    elif args.solver == "pcg-ssor":
        M = P.SSOR(problem)
    elif args.solver == "pcg-amg":
        M = P.AMG(problem)
    elif args.solver == "pcg-gmg":
        M = P.GMG(grid)
    if args.solver == "dcdm":
        from neurosolve.solvers import DCDM

        solver = DCDM(rtol=args.rtol, maxiter=args.maxiter)
    else:
        solver = ns.solvers.CG(rtol=args.rtol, maxiter=args.maxiter, M=M)
    res = ns.solve(problem, solver, backend=args.backend, progress=not args.no_progress)
    print(f"{args.solver} on {args.geometry} {'x'.join(map(str, shape))}: {res.summary()}")
    print("stats:", {k: v for k, v in res.stats.items()})
    return 0 if res.success else 2


def _train(args) -> int:
    cli_train = importlib.import_module("neurosolve.cli_train")
    return int(cli_train.main(args) or 0)


def _bench(args) -> int:
    from neurosolve.bench_report import run_bench

    return run_bench(families=args.family, outdir=args.out, extra=args.pytest_args,
                     benchmarks=args.benchmarks, from_json=args.from_json,
                     compare_with=args.compare)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosolve", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run every family end to end on built-in problems")
    d.add_argument("--small", action="store_true", help="small sizes (about a minute; used by CI)")
    d.add_argument("--out", default="neurosolve-report", help="report folder (default ./neurosolve-report)")
    d.add_argument("--only", default=None, help="comma-separated families to run")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

    s = sub.add_parser("solve", help="solve a gallery problem")
    ssub = s.add_subparsers(dest="problem", required=True)
    sp = ssub.add_parser("poisson", help="a Poisson system on a cell grid")
    sp.add_argument("--grid", type=int, nargs="+", default=[64, 64, 64])
    sp.add_argument("--geometry", choices=GEOMETRIES, default="sphere")
    sp.add_argument("--walls", choices=("neumann", "dirichlet"), default="dirichlet")
    sp.add_argument("--rhs", choices=("blobs", "noise", "lowfreq"), default="blobs")
    sp.add_argument("--solver", choices=POISSON_SOLVERS, default="pcg-gmg")
    sp.add_argument("--rtol", type=float, default=1e-6)
    sp.add_argument("--maxiter", type=int, default=None)
    sp.add_argument("--backend", default="auto")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=_solve_poisson)

    t = sub.add_parser("train", help="train a neural component")
    tsub = t.add_subparsers(dest="model", required=True)
    try:
        cli_train = importlib.import_module("neurosolve.cli_train")
    except ModuleNotFoundError as exc:  # pragma: no cover - only before the DCDM module exists
        if exc.name != "neurosolve.cli_train":
            raise
    else:
        cli_train.add_parser(tsub)
    t.set_defaults(func=_train)

    b = sub.add_parser(
        "bench", help="run the benchmark suite and write a ratio table and plots",
        description="Run benchmarks/bench_<family>.py with pytest-benchmark and write "
                    "OUT/bench.json, OUT/summary.md (min and median times, ratios ours / peer: "
                    "< 1 means we are faster) and OUT/ratios.png (one panel per family). "
                    "Arguments after -- go to pytest: neurosolve bench --family cg -- -k ours")
    b.add_argument("--family", action="append", default=None,
                   help="benchmark file stem under the benchmarks folder (e.g. cg); repeatable; "
                        "default: every bench_*.py")
    b.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="the benchmarks folder (default: $NEUROSOLVE_BENCHMARKS, ./benchmarks, "
                        "or the benchmarks/ of the source checkout neurosolve is installed from)")
    b.add_argument("--out", default="neurosolve-bench", help="output folder")
    b.add_argument("--from-json", default=None, metavar="FILE",
                   help="summarize this --benchmark-json file instead of running the benchmarks")
    b.add_argument("--compare", default=None, metavar="SAVED_JSON",
                   help="flag convergence regressions (rate, iterations, status) against this "
                        "saved --benchmark-json file; exit status 1 when there is one")
    b.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="extra pytest arguments, after -- (e.g. -- -k cg -x)")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
