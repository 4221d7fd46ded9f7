"""The iteration table of a LearnedMG model: PCG iterations with GMG and with LearnedMG on
held-out geometries, the table each shipped manifest records and
``tests/test_learned_mg_weights.py`` replays.

Run::

    python -m neurosolve.neural.mg_evaluation nmg2d            # the table, as JSON lines
    python -m neurosolve.neural.mg_evaluation path/smoother.pt --size 128

Cases (seeds 11 and 12; the shipped weights were trained on seeds 0 and 1 of
``neurosolve train lmg``'s families):
``pool`` (free surface, two obstacles), ``plates`` (thin plates with slits), ``inclusions``
(the pool with 1e4 / 1e-4 inclusions), ``layered`` (the pool over SPE10-style layers,
contrast 1e4), ``lognormal`` (the pool with a log-normal field, sigma 2), ``solids``
(four solid ellipsoids in a Dirichlet box: plain solids, where GMG is already good and a
learned cycle must not be worse). PCG to
``rtol = 1e-8`` from ``x0 = 0`` on a blob right-hand side.

References
----------
.. [1] D. Greenfeld, M. Galun, R. Kimmel, I. Yavneh, R. Basri, "Learning to Optimize
   Multigrid PDE Solvers", ICML 2019, arXiv:1902.10248 (evaluating learned multigrid on
   held-out problems against the classical cycle).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["EVAL_CASES", "eval_grid", "iteration_table", "manifest_table"]

EVAL_CASES = ("pool", "plates", "inclusions", "layered", "lognormal", "solids")
EVAL_SEEDS = (11, 12)
RTOL = 1e-8


def eval_grid(case: str, shape: tuple, seed: int):
    """The held-out geometry of one case (see the module docstring)."""
    from neurosolve.problems import poisson as P

    if case not in EVAL_CASES:
        raise ValueError(f"case must be one of {', '.join(EVAL_CASES)}, got {case!r}")
    if case == "plates":
        return P.plates(shape, seed=seed)
    if case == "solids":
        return P.ellipsoids(shape, n=4, seed=seed, walls="dirichlet")
    base = P.pool(shape, obstacles=2, seed=seed)
    if case == "pool":
        return base
    if case == "inclusions":
        return base.with_coefficients(P.inclusions_field(shape, contrast=1e4, seed=seed))
    if case == "layered":
        return base.with_coefficients(P.layered_field(shape, contrast=1e4, seed=seed))
    return base.with_coefficients(P.lognormal_field(shape, sigma=2.0, seed=seed))


def iteration_table(model, size: int, dim: int | None = None, cases=EVAL_CASES,
                    seeds=EVAL_SEEDS) -> list[dict]:
    """PCG iterations of GMG and of ``LearnedMG(grid, model)`` per case and seed.

    Parameters
    ----------
    model : str, path or torch.nn.Module
        Anything :class:`~neurosolve.solvers.preconditioners.LearnedMG` accepts.
    size : int
        Cells per side.
    dim : int, optional
        The grid dimension (default: the model's).

    Returns
    -------
    list of dict
        Per row ``case``, ``seed``, ``shape``, ``gmg`` and ``lmg`` (iterations),
        ``gmg_status`` and ``lmg_status`` (the :class:`~neurosolve.Status` names: at
        1024^2 with a 1e8 contrast, 1e-8 lies below what double precision attains and both
        end STAGNATION with the floor in the message) and ``ratio`` (lmg / gmg when both
        converged: below 1, LearnedMG needs fewer).
    """
    import neurosolve as ns
    from neurosolve.problems import poisson as P
    from neurosolve.solvers.preconditioners import GMG, LearnedMG

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from neurosolve.neural.mg_smoother import load_smoother

        model = load_smoother(model)
    dim = dim or model.dim
    shape = (int(size),) * dim
    rows = []
    for case in cases:
        for seed in seeds:
            g = eval_grid(case, shape, seed)
            prob = g.system(P.rhs_blobs(g, seed=3))
            row = {"case": case, "seed": seed, "shape": list(shape)}
            for name, M in (("gmg", GMG(g)), ("lmg", LearnedMG(g, model))):
                res = ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=2000, M=M), progress=False)
                row[name] = int(res.n_iter)
                row[f"{name}_status"] = res.status.name
            both = row["gmg_status"] == row["lmg_status"] == "CONVERGED"
            row["ratio"] = round(row["lmg"] / row["gmg"], 3) if both else None
            rows.append(row)
    return rows


def manifest_table(rows: list[dict], sizes, model_label: str) -> dict:
    """The ``iterations`` entry of a manifest: the rows, the tolerance and the command that
    measures them again for ``model_label`` (a shipped name or a path)."""
    return {"rtol": RTOL, "rows": rows,
            "replay": f"python -m neurosolve.neural.mg_evaluation {model_label} "
                      + " ".join(f"--size {n}" for n in sizes)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m neurosolve.neural.mg_evaluation",
                                description="PCG iterations of GMG and LearnedMG on held-out "
                                            "geometries.")
    p.add_argument("model", help="a shipped model's name (nmg2d, nmg3d) or a smoother.pt")
    p.add_argument("--size", type=int, action="append",
                   help="cells per side (repeatable; default 128 in 2-D, 32 in 3-D)")
    p.add_argument("--write-manifest", action="store_true",
                   help="store the rows as the 'iterations' table of the model's manifest "
                        "(the .json beside the .pt)")
    args = p.parse_args(argv)
    from neurosolve.neural.mg_smoother import load_smoother

    model = load_smoother(args.model)
    sizes = args.size or [128 if model.dim == 2 else 32]
    rows = []
    for size in sizes:
        for row in iteration_table(model, size):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.write_manifest:
        import pathlib

        from neurosolve.neural.pretrained import WEIGHTS_DIR, available_pretrained

        path = (WEIGHTS_DIR / f"{args.model}.json" if args.model in available_pretrained()
                else pathlib.Path(args.model).with_suffix(".json"))
        info = json.loads(path.read_text())
        label = args.model if args.model in available_pretrained() else "MODEL.pt"
        info["iterations"] = manifest_table(rows, sizes, label)
        path.write_text(json.dumps(info, indent=2) + "\n")
        print(f"wrote the table into {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
