"""The ``neurosolve`` command: demo, solve, train, bench."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["CLIError", "build_parser", "main"]

POISSON_SOLVERS = ("cg", "pcg-jacobi", "pcg-ic0", "pcg-ssor", "pcg-amg", "pcg-gmg", "dcdm", "fft")
GEOMETRIES = ("box", "sphere", "cylinder", "ellipsoids", "pool")
MATRIX_SOLVERS = ("cg", "pcg-jacobi", "pcg-ic0", "pcg-ssor", "pcg-amg")
BACKENDS = ("auto", "numpy", "numba", "torch", "cuda")


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


class CLIError(Exception):
    """A mistake on the command line: :func:`main` prints it as one line on stderr,
    ``neurosolve: error: <what was wrong>; <the fix>``, and returns exit status 2."""


#: Exit statuses of ``neurosolve solve`` (also in its ``--help``).
SOLVE_EPILOG = """\
exit status:
  0  the solve converged (result.success)
  1  the solve ran but did not converge (its status and message are printed on stderr,
     e.g. MAX_ITER with the residual reached)
  2  a usage error: a bad option, file or combination, reported as one line on stderr
"""

_PRECONDITIONERS = {"pcg-jacobi": "Jacobi", "pcg-ic0": "IC0", "pcg-ssor": "SSOR",
                    "pcg-amg": "AMG", "pcg-gmg": "GMG"}
#: Preconditioners that build a torch operator from a torch system (found by trying each
#: on a torch PoissonSystem: IC0, SSOR, AMG and GMG build numpy operators, which CG
#: rejects on torch data). A preconditioner not listed is refused on --backend torch/cuda
#: before its setup runs; the array library of the built operator is checked as well.
_TORCH_PRECONDITIONERS = ("pcg-jacobi",)
_MATRIX_SUFFIXES = (".mtx", ".mtx.gz", ".npz")
_RHS_SUFFIXES = (".npy", ".mtx", ".txt")


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line:
    ``neurosolve: error: <message>; see '<prog> --help'`` (exit status 2)."""

    def error(self, message: str):  # argparse's hook for every usage error
        self.exit(2, f"neurosolve: error: {message}; see '{self.prog} --help'\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (a None default is described by the help text itself),
    the description's and epilog's line breaks kept."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _suffix(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.endswith(".mtx.gz"):
        return ".mtx.gz"
    return os.path.splitext(name)[1]


def _target(backend: str) -> tuple[str | None, str]:
    """``(torch device or None, backend for neurosolve.solve)`` of a ``--backend`` value.

    ``auto``, ``numpy`` and ``numba`` keep numpy data; ``torch`` puts the system on the
    CPU as torch tensors, ``cuda`` on the GPU (both run the torch kernels).
    """
    if backend in ("auto", "numpy", "numba"):
        return None, backend
    try:
        import torch
    except ModuleNotFoundError:
        raise CLIError(f"--backend {backend} needs PyTorch, which is not installed; "
                       "install torch or use --backend numpy") from None
    if backend == "cuda" and not torch.cuda.is_available():
        raise CLIError("--backend cuda: CUDA is not available on this machine "
                       "(torch.cuda.is_available() is False); use --backend torch or numpy")
    return ("cpu" if backend == "torch" else "cuda"), "torch"


def _numpy_only(solver: str) -> CLIError:
    return CLIError(f"{solver} runs on numpy only; use --backend numpy or --solver pcg-jacobi")


def _preconditioner(name: str, problem, grid=None):
    """The preconditioner ``--solver name`` asks for (None for cg and dcdm)."""
    import neurosolve as ns

    if name not in _PRECONDITIONERS:
        return None
    torch_data = problem.array_library == "torch"
    if torch_data and name not in _TORCH_PRECONDITIONERS:
        raise _numpy_only(name)
    make = getattr(ns.solvers.preconditioners, _PRECONDITIONERS[name])
    try:
        M = make(grid) if name == "pcg-gmg" else make(problem)
    except ValueError as exc:  # the library's check of its input (its message names it)
        raise CLIError(f"--solver {name}: {exc}") from None
    if getattr(M, "array_library", "numpy") != problem.array_library:
        raise _numpy_only(name)
    return M


def _cg(args, M):
    import neurosolve as ns

    try:
        return ns.solvers.CG(rtol=args.rtol, maxiter=args.maxiter, M=M)
    except ValueError as exc:
        raise CLIError(f"{exc}; check --rtol and --maxiter") from None


def _report(res) -> int:
    """Exit status 0 for a converged solve, 1 (with status and message on stderr) otherwise."""
    if res.success:
        return 0
    rel = res.certificate.get("relative_residual")
    at = f" with relative residual {rel:.3g}" if rel is not None else ""
    print(f"neurosolve: not converged: {res.status.name} after {res.n_iter} iterations{at}: "
          f"{res.message}", file=sys.stderr)
    return 1


def _check_grid(grid: list[int]) -> tuple[int, ...]:
    shape = tuple(grid)
    if len(shape) not in (2, 3):
        raise CLIError(f"--grid takes 2 or 3 sizes, got {len(shape)} ({' '.join(map(str, shape))}); "
                       "give e.g. --grid 64 64 64 or --grid 128 128")
    if min(shape) < 1:
        raise CLIError(f"--grid sizes must be positive, got {' '.join(map(str, shape))}; "
                       "give e.g. --grid 64 64 64")
    return shape


def _solve_poisson(args) -> int:
    import numpy as np

    import neurosolve as ns
    from neurosolve.problems import poisson

    shape = _check_grid(args.grid)
    device, backend = _target(args.backend)
    if args.solver is None:  # GMG is numpy-only; Jacobi runs on torch tensors too
        args.solver = "pcg-gmg" if device is None else "pcg-jacobi"
    if args.solver == "fft":
        if args.geometry != "box":
            raise CLIError(f"--solver fft needs an empty box, but --geometry {args.geometry} has "
                           "solid/air cells; use --geometry box or a CG solver "
                           "(e.g. --solver pcg-gmg)")
        if device is not None:
            raise CLIError(f"--solver fft runs on numpy only; use --backend numpy or a CG solver "
                           f"with --backend {args.backend}")
    make = {"box": poisson.box, "sphere": poisson.sphere, "cylinder": poisson.cylinder,
            "ellipsoids": poisson.ellipsoids, "pool": poisson.pool}[args.geometry]
    kwargs = {"walls": args.walls}
    if args.geometry in ("ellipsoids", "pool"):
        kwargs["seed"] = args.seed
    try:
        grid = make(shape, **kwargs)
    except ValueError as exc:
        raise CLIError(f"--geometry {args.geometry} on --grid {' '.join(map(str, shape))}: "
                       f"{exc}; try a larger --grid") from None
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
    if device is None:
        problem = grid.system(rhs)
    else:
        problem = grid.system(rhs, library="torch", device=device)
    if args.solver == "dcdm":
        try:
            from neurosolve.solvers import DCDM
        except ModuleNotFoundError as exc:
            if exc.name != "torch":
                raise
            raise CLIError("--solver dcdm needs PyTorch, which is not installed; install torch "
                           "or use --solver pcg-gmg") from None
        try:
            solver = DCDM(rtol=args.rtol, maxiter=args.maxiter, device=device)
            solver.preconditioner(problem)  # the network's checks of the grid, before solving
        except ValueError as exc:  # e.g. a side not divisible by the pooling factor
            raise CLIError(f"--solver dcdm: {exc}") from None
    else:
        solver = _cg(args, _preconditioner(args.solver, problem, grid))
    res = ns.solve(problem, solver, backend=backend, progress=not args.no_progress)
    print(f"{args.solver} on {args.geometry} {'x'.join(map(str, shape))}: {res.summary()}")
    print("stats:", {k: v for k, v in res.stats.items()})
    return _report(res)


def _read_matrix(path: str):
    """A square float64 CSR matrix from a MatrixMarket or scipy ``.npz`` file."""
    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    suffix = _suffix(path)
    if suffix not in _MATRIX_SUFFIXES:
        raise CLIError(f"--matrix {path}: unsupported file type {suffix or '(no extension)'}; "
                       f"use one of {', '.join(_MATRIX_SUFFIXES)} (MatrixMarket or "
                       "scipy.sparse.save_npz)")
    if not os.path.isfile(path):
        raise CLIError(f"--matrix {path}: no such file; check the path")
    try:
        A = scipy.sparse.load_npz(path) if suffix == ".npz" else scipy.io.mmread(path)
    except (ValueError, OSError, KeyError, EOFError) as exc:
        writer = "scipy.sparse.save_npz" if suffix == ".npz" else "scipy.io.mmwrite"
        raise CLIError(f"--matrix {path}: cannot read it ({type(exc).__name__}: {exc}); "
                       f"write it with {writer}") from None
    if not sp.issparse(A):
        A = np.atleast_2d(np.asarray(A))
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise CLIError(f"--matrix {path}: the matrix has shape {tuple(A.shape)}, it is not square; "
                       "CG solves square symmetric positive definite systems")
    if np.iscomplexobj(A.data if sp.issparse(A) else A):
        raise CLIError(f"--matrix {path}: the matrix is complex; CG here solves real symmetric "
                       "positive definite systems")
    A = sp.csr_matrix(A, dtype=np.float64)
    return A


def _read_vector(path: str, n: int):
    """The right-hand side from a ``.npy``, MatrixMarket or text file, checked against n."""
    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    suffix = _suffix(path)
    if suffix not in _RHS_SUFFIXES:
        raise CLIError(f"--rhs {path}: unsupported file type {suffix or '(no extension)'}; use "
                       f"one of {', '.join(_RHS_SUFFIXES)}")
    if not os.path.isfile(path):
        raise CLIError(f"--rhs {path}: no such file; check the path")
    try:
        if suffix == ".npy":
            b = np.load(path, allow_pickle=False)
        elif suffix == ".mtx":
            b = scipy.io.mmread(path)
        else:
            b = np.loadtxt(path)
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"--rhs {path}: cannot read it ({type(exc).__name__}: {exc}); write it "
                       "with numpy.save, scipy.io.mmwrite or numpy.savetxt") from None
    if sp.issparse(b):
        b = b.toarray()
    b = np.atleast_1d(np.asarray(b))
    if b.ndim == 2 and 1 in b.shape:
        b = b.reshape(-1)
    if b.ndim != 1:
        raise CLIError(f"--rhs {path}: expected a vector, got an array of shape {tuple(b.shape)}; "
                       "give one value per unknown")
    if not np.issubdtype(b.dtype, np.floating) and not np.issubdtype(b.dtype, np.integer):
        raise CLIError(f"--rhs {path}: expected real numbers, got dtype {b.dtype}; "
                       "give a real vector")
    if b.shape[0] != n:
        raise CLIError(f"--rhs {path} has {b.shape[0]} entries but the matrix is {n} x {n}; "
                       f"give a vector of length {n}")
    return b.astype(np.float64)


def _solve_matrix(args) -> int:
    import numpy as np
    import scipy.sparse.linalg as spla

    import neurosolve as ns
    from neurosolve.backends.ops import to_numpy
    from neurosolve.problems import LinearSystem

    if args.out is not None and not args.out.lower().endswith(".npy"):
        raise CLIError(f"--out {args.out}: the solution is written with numpy.save; "
                       "give a file name ending in .npy")
    device, backend = _target(args.backend)
    A = _read_matrix(args.matrix)
    n = A.shape[0]
    x_true = None
    if args.rhs is not None:
        b = _read_vector(args.rhs, n)
    else:
        x_true = np.random.default_rng(args.seed).standard_normal(n)
        b = A @ x_true
    scale, asym = spla.norm(A), spla.norm(A - A.T)  # LinearSystem's own test and tolerance
    if scale > 0 and asym > 1e-10 * scale:
        raise CLIError(f"--matrix {args.matrix} is not symmetric (||A - A^T|| / ||A|| = "
                       f"{asym / scale:.2e}); CG needs a symmetric positive definite matrix")
    try:
        problem = LinearSystem(A, b)
    except ValueError as exc:  # NaN/inf entries and the like
        raise CLIError(f"{exc}; check --matrix and --rhs") from None
    if device is not None:
        problem = problem.to("torch", device=device)
    solver = _cg(args, _preconditioner(args.solver, problem))
    res = ns.solve(problem, solver, backend=backend, progress=not args.no_progress)
    x = np.asarray(to_numpy(res.x), dtype=np.float64)
    print(f"{args.solver} on {os.path.basename(args.matrix)} ({n} x {n}, {A.nnz} nonzeros): "
          f"{res.summary()}")
    if x_true is not None:
        err = np.linalg.norm(x - x_true) / max(np.linalg.norm(x_true), np.finfo(float).tiny)
        print(f"relative error against x_true (seed {args.seed}): {err:.3e}")
    if args.out is not None:
        try:
            np.save(args.out, x)
        except OSError as exc:
            raise CLIError(f"--out {args.out}: cannot write it ({exc}); check the folder "
                           "exists and is writable") from None
        print(f"solution written to {args.out}")
    return _report(res)


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

    s = sub.add_parser(
        "solve", help="solve a gallery problem or a linear system from a file",
        description="Solve a Poisson system of the gallery (solve poisson) or A x = b with A\n"
                    "read from a file (solve matrix).",
        epilog=SOLVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = s.add_subparsers(dest="problem", required=True, parser_class=_OneLineParser)
    fmt = _HelpFormatter
    backend_help = ("array library and kernels: auto (numba kernels where the solver has "
                    "them, else numpy), numpy, numba, torch (torch tensors on the CPU) or cuda "
                    "(torch tensors on the GPU); the preconditioners other than pcg-jacobi run "
                    "on numpy only")
    sp = ssub.add_parser(
        "poisson", help="a Poisson system on a cell grid", formatter_class=fmt, epilog=SOLVE_EPILOG,
        description="Build a Poisson system of the gallery (neurosolve.problems.poisson) and\n"
                    "solve it; prints the result's summary and stats.")
    sp.add_argument("--grid", type=int, nargs="+", default=[64, 64, 64], metavar="N",
                    help="cells per axis, 2 or 3 sizes (e.g. --grid 128 128)")
    sp.add_argument("--geometry", choices=GEOMETRIES, default="sphere",
                    help="the domain: box (all fluid), sphere, cylinder, ellipsoids (random, "
                         "--seed), pool (random, --seed)")
    sp.add_argument("--walls", choices=("neumann", "dirichlet"), default="dirichlet",
                    help="condition on the domain boundary")
    sp.add_argument("--rhs", choices=("blobs", "noise", "lowfreq"), default="blobs",
                    help="right-hand side generator (seeded by --seed)")
    sp.add_argument("--solver", choices=POISSON_SOLVERS, default=None,
                    help="cg, CG with a preconditioner (pcg-jacobi, pcg-ic0, pcg-ssor, pcg-amg, "
                         "pcg-gmg), dcdm (the shipped network; every side divisible by its "
                         "pooling factor) or fft (exact, --geometry box only) (default: pcg-gmg; "
                         "pcg-jacobi with --backend torch or cuda)")
    sp.add_argument("--rtol", type=float, default=1e-6,
                    help="stop when ||b - A x|| <= rtol ||b||")
    sp.add_argument("--maxiter", type=int, default=None,
                    help="iteration limit (default: the solver's own, 10 n for CG)")
    sp.add_argument("--backend", choices=BACKENDS, default="auto", help=backend_help)
    sp.add_argument("--seed", type=int, default=0,
                    help="seed of the right-hand side and of the random geometries")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_solve_poisson)

    sm = ssub.add_parser(
        "matrix", help="A x = b with A from a .mtx or .npz file", formatter_class=fmt,
        epilog=SOLVE_EPILOG,
        description="Solve A x = b with (preconditioned) CG, A symmetric positive definite read\n"
                    "from a MatrixMarket .mtx (scipy.io.mmread) or scipy .npz\n"
                    "(scipy.sparse.load_npz) file. Without --rhs, b = A @ x_true with x_true\n"
                    "standard normal (numpy default_rng(--seed)), and the relative error\n"
                    "against x_true is printed too.")
    sm.add_argument("--matrix", required=True, metavar="FILE",
                    help="the matrix: .mtx, .mtx.gz (MatrixMarket) or .npz (scipy.sparse.save_npz)")
    sm.add_argument("--rhs", default=None, metavar="FILE",
                    help="the right-hand side: .npy, .mtx or .txt (one value per unknown); "
                         "default: b = A @ x_true with a random x_true")
    sm.add_argument("--solver", choices=MATRIX_SOLVERS, default="cg",
                    help="cg or CG with a preconditioner")
    sm.add_argument("--rtol", type=float, default=1e-6,
                    help="stop when ||b - A x|| <= rtol ||b||")
    sm.add_argument("--maxiter", type=int, default=None,
                    help="iteration limit (default: the solver's own, 10 n for CG)")
    sm.add_argument("--backend", choices=BACKENDS, default="auto", help=backend_help)
    sm.add_argument("--seed", type=int, default=0, help="seed of x_true (without --rhs)")
    sm.add_argument("--out", default=None, metavar="FILE.npy",
                    help="write the solution x here (numpy.save); default: not written")
    sm.add_argument("--no-progress", action="store_true", help="no progress bar")
    sm.set_defaults(func=_solve_matrix)

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


def _solve_subparser(parser: argparse.ArgumentParser, problem: str) -> argparse.ArgumentParser:
    """The parser of ``neurosolve solve <problem>``."""
    def sub(p):
        return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))

    return sub(sub(parser).choices["solve"]).choices[problem]


def main(argv: list[str] | None = None) -> int:
    """Run the ``neurosolve`` command; returns its exit status.

    Usage errors (:class:`CLIError`) are printed as one line on stderr,
    ``neurosolve: error: <what was wrong>; <the fix>``, with exit status 2; argparse's own
    errors exit with status 2 as well (``SystemExit``).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # what parse_args does, with the one-line message for the solve subcommands
        owner = _solve_subparser(parser, args.problem) if args.command == "solve" else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"neurosolve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
