"""``neurosolve train dcdm``: train a DCDM network from the command line.

Examples
--------
Train the paper's network on the empty 32^3 box (DCT-sampled right-hand sides) and ship it
under a name::

    neurosolve train dcdm --dim 3 --grid 32 --variant 64 --data box --steps 500 \\
        --out runs/dcdm3d --name my_dcdm3d_32

Interrupt it and run the same command with ``--resume`` to continue from the checkpoint.

Data-parallel on two processes of this machine (torchrun; a process that dies restarts the
job from the last checkpoint, up to ``--max-restarts`` times)::

    neurosolve train dcdm --dim 3 --grid 32 --steps 500 --batch 16 --out runs/ddp --nproc 2
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

__all__ = ["add_parser", "main", "build_parser"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, choices=(2, 3), default=3, help="spatial dimension")
    p.add_argument("--grid", type=int, default=32, help="cells per side of the training grid")
    p.add_argument("--variant", choices=("64", "128", "unet"), default="64",
                   help="network: the paper's '64'/'128' or the deeper 'unet'")
    p.add_argument("--levels", type=int, default=4, help="pooling levels of the unet variant")
    p.add_argument("--channels", type=int, default=16, help="feature channels")
    p.add_argument("--geometry", action="store_true",
                   help="feed the network the geometry (fluid mask, solid-face fraction) as "
                        "two extra input channels (not in the paper; NPSDO-like)")
    p.add_argument("--data", choices=("box", "mixture", "ritz-box", "mixture-ritz"),
                   default="box",
                   help="box: empty Neumann box, DCT modes on the fly (paper recipe); "
                        "ritz-box: same matrix, Lanczos Ritz vectors; mixture: random gallery "
                        "geometries with spectrally filtered noise, plus the box; mixture-ritz: "
                        "the same geometries with Ritz vectors")
    p.add_argument("--n-geometries", type=int, default=8, help="geometries of --data mixture")
    p.add_argument("--ritz-m", type=int, default=400, help="Lanczos steps per matrix")
    p.add_argument("--low-fraction", type=float, default=0.55,
                   help="fraction of the spectrum amplified (paper: 0.55)")
    p.add_argument("--factor", type=float, default=9.0, help="low-mode amplitude (paper: 9)")
    p.add_argument("--envelope", type=float, default=0.0,
                   help="random smooth amplitude modulation of the samples (0: the paper's "
                        "stationary samples)")
    p.add_argument("--unroll", type=int, default=1,
                   help="train through this many solver steps (1: the paper's one-step loss)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--lr-final", type=float, default=1e-4, help="final learning rate (cosine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes (checkpointed; continue with --resume)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("dcdm-train"),
                   help="folder for checkpoint.pt, loss.png and summary.json")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="end after this many optimizer steps without changing the learning-rate "
                        "schedule of --steps (the rest can follow with --resume)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=pathlib.Path, default=None,
                   help="start from these weights (a checkpoint.pt or a shipped NAME.pt of the "
                        "same architecture), e.g. pretrained on a smaller grid")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--name", default=None,
                   help="also export the weights as NAME.pt + NAME.json (a pretrained model)")
    p.add_argument("--weights-dir", type=pathlib.Path, default=None,
                   help="where --name writes (default: the package's neural/weights folder)")
    p.add_argument("--evaluate", action="store_true",
                   help="measure DCDM vs CG iterations on unseen geometries for the manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine, launched with torchrun "
                        "(gloo on the CPU, NCCL on GPUs); under torchrun or a cluster "
                        "launcher that sets WORLD_SIZE/RANK the processes are already there")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="with --nproc: how often torchrun restarts the job after a process "
                        "dies (it resumes from the last checkpoint)")
    p.add_argument("--shards", type=int, default=None,
                   help="sample streams per batch (default: the number of processes); the "
                        "same --shards gives the same training whatever the process count")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosolve train dcdm",
                                description="Train a DCDM network (Kaneda et al. 2023).")
    _add_arguments(p)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dcdm`` and ``lmg`` under the ``neurosolve train`` subcommand."""
    p = subparsers.add_parser("dcdm", help="train a DCDM network (deep conjugate directions)",
                              description="Train a DCDM network (Kaneda et al. 2023) with the "
                                          "scale-invariant one-step loss.")
    _add_arguments(p)
    p.set_defaults(func=main)
    q = subparsers.add_parser(
        "lmg", help="train LearnedMG's network (smoother weights, interpolation strengths)",
        description="Train the network of LearnedMG (GMG with learned per-cell Gauss-Seidel "
                    "weights and interpolation strength factors) on random gallery geometries "
                    "with the energy loss after --pcg-steps PCG iterations; writes "
                    "OUT/smoother.pt and OUT/smoother.json, loadable with "
                    "LearnedMG(grid, model='OUT/smoother.pt'). The shipped nmg2d / nmg3d "
                    "manifests hold the exact commands that made them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_lmg_arguments(q)
    q.set_defaults(func=main)
    return p


LMG_KINDS = ("pool", "plates", "inclusions", "ellipsoids", "solids", "layered", "lognormal")


def _add_lmg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, choices=(2, 3), default=2, help="spatial dimension")
    p.add_argument("--grid", type=int, default=64, help="cells per side of the training grids")
    p.add_argument("--kinds", default="pool,plates,inclusions,layered",
                   help=f"comma-separated geometry families ({', '.join(LMG_KINDS)})")
    p.add_argument("--per-kind", type=int, default=2, help="random geometries per family")
    p.add_argument("--channels", type=int, default=8, help="feature channels of the network")
    p.add_argument("--layers", type=int, default=2, help="hidden convolutions")
    p.add_argument("--interpolation", action=argparse.BooleanOptionalAction, default=True,
                   help="also learn factors on the coarse cells' interpolation strengths")
    p.add_argument("--learned-finest", action=argparse.BooleanOptionalAction, default=True,
                   help="also learn the finest level's smoother weights (--no-learned-finest: "
                        "plain Gauss-Seidel there, and the network skips the finest level at "
                        "setup)")
    p.add_argument("--pcg-steps", type=int, default=3,
                   help="PCG iterations inside the loss (1: one steepest-descent step)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps")
    p.add_argument("--batch", type=int, default=6, help="batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="initial Adam learning rate")
    p.add_argument("--lr-final", type=float, default=3e-4, help="final learning rate (cosine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the geometries and samples")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes (checkpointed; continue with --resume)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("lmg-train"),
                   help="folder for checkpoint.pt, loss.png, smoother.pt and smoother.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--init", default=None,
                   help="start from these weights (a shipped model's name such as nmg3d, or a "
                        "smoother.pt of the same architecture) instead of plain GMG")
    p.add_argument("--table-size", type=int, action="append", default=None,
                   help="after training, measure PCG iterations of GMG and LearnedMG on the "
                        "held-out cases of neurosolve.neural.mg_evaluation at this size and "
                        "record them in the manifest (repeatable)")


def lmg_training_grid(kind: str, shape: tuple, seed: int):
    """One training geometry of family ``kind`` (see :data:`LMG_KINDS`)."""
    from neurosolve.problems import poisson as P

    if kind == "pool":
        return P.pool(shape, obstacles=2, seed=seed)
    if kind == "plates":
        return P.plates(shape, seed=seed)
    if kind == "ellipsoids":
        return P.ellipsoids(shape, n=3, seed=seed)
    if kind == "solids":  # solid bodies in a Dirichlet box (the benchmarks' plain solids)
        return P.ellipsoids(shape, n=3, seed=seed, walls="dirichlet")
    if kind == "layered":  # free surface over SPE10-style layers, contrast 1e4
        return P.pool(shape, obstacles=2, seed=seed).with_coefficients(
            P.layered_field(shape, contrast=1e4, seed=seed))
    if kind == "lognormal":  # free surface over a log-normal field, sigma 2
        return P.pool(shape, obstacles=2, seed=seed).with_coefficients(
            P.lognormal_field(shape, sigma=2.0, seed=seed))
    return P.box(shape, walls="dirichlet").with_coefficients(P.inclusions_field(shape, seed=seed))


def main_lmg(args) -> int:
    """``neurosolve train lmg``: train, then write the network and its manifest."""
    import torch

    from neurosolve.neural.mg_weights import train_learned_mg

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in LMG_KINDS]
    if bad or not kinds:
        raise SystemExit(f"neurosolve train lmg: error: --kinds {args.kinds!r}: unknown "
                         f"{', '.join(bad) or 'empty list'}; choose from {', '.join(LMG_KINDS)}")
    shape = (args.grid,) * args.dim
    grids = [lmg_training_grid(k, shape, args.seed * 1000 + i) for k in kinds
             for i in range(args.per_kind)]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        net, res = train_learned_mg(
            grids, dim=args.dim, channels=args.channels, layers=args.layers,
            interpolation=args.interpolation, learned_finest=args.learned_finest,
            pcg_steps=args.pcg_steps, steps=args.steps, batch=args.batch, lr=args.lr,
            lr_final=args.lr_final, seed=args.seed, progress=not args.no_progress,
            checkpoint=out / "checkpoint.pt", checkpoint_every=args.checkpoint_every,
            resume=args.resume, max_minutes=args.max_minutes, loss_png=out / "loss.png",
            init=args.init)
    except ValueError as exc:  # bad settings, a grid too small, a mismatched checkpoint
        print(f"neurosolve train lmg: error: {exc}", file=sys.stderr)
        return 2
    torch.save({k: v.detach().float() for k, v in net.state_dict().items()}, out / "smoother.pt")
    info = {"kind": "learned_mg_smoother", "architecture": net.config(),
            "data": {"kinds": kinds, "per_kind": args.per_kind, "grid": list(shape),
                     "seed": args.seed},
            "training": {"steps": res.steps_done, "batch": args.batch, "lr": args.lr,
                         "lr_final": args.lr_final, "pcg_steps": args.pcg_steps,
                         "init": args.init, "seconds": round(res.wall_time, 1), "torch": torch.__version__},
            "first_loss": res.losses[0] if res.losses else None, "final_loss": res.final_loss,
            "stopped_early": res.stopped_early,
            "command": shlex.join(["neurosolve", "train", "lmg", "--dim", str(args.dim),
                                   "--grid", str(args.grid), "--kinds", ",".join(kinds),
                                   "--per-kind", str(args.per_kind), "--channels",
                                   str(args.channels), "--layers", str(args.layers)]
                                  + (["--interpolation"] if args.interpolation
                                     else ["--no-interpolation"])
                                  + ([] if args.learned_finest else ["--no-learned-finest"])
                                  + [
                                   "--pcg-steps", str(args.pcg_steps), "--steps",
                                   str(args.steps), "--batch", str(args.batch), "--lr",
                                   str(args.lr), "--lr-final", str(args.lr_final), "--seed",
                                   str(args.seed), "--out", str(args.out)]
                                  + (["--init", str(args.init)] if args.init else []))}
    if args.init:  # how the starting weights were made, so the chain can be rerun
        from neurosolve.neural.mg_smoother import load_smoother

        start = load_smoother(args.init).manifest
        info["init"] = {"name": str(args.init), "command": start.get("command"),
                        "data": start.get("data"), "training": start.get("training"),
                        "init": start.get("init")}
    if args.table_size:
        from neurosolve.neural.mg_evaluation import iteration_table, manifest_table

        net.eval()
        rows = [r for n in args.table_size for r in iteration_table(net, n, dim=args.dim)]
        info["iterations"] = manifest_table(rows, args.table_size, "OUT/smoother.pt")
        info["command"] += "".join(f" --table-size {n}" for n in args.table_size)
    (out / "smoother.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({k: info[k] for k in ("first_loss", "final_loss")} |
                     {"steps": res.steps_done, "seconds": info["training"]["seconds"]}))
    if res.stopped_early:
        print(f"stopped after {res.steps_done}/{args.steps} steps (--max-minutes); rerun with "
              "--resume to continue", file=sys.stderr)
    print(f"wrote {out / 'smoother.pt'} and {out / 'smoother.json'}")
    return 0


def _command_line(args) -> str:
    parts = ["neurosolve", "train", "dcdm"]
    for key in ("dim", "grid", "variant", "levels", "channels", "data", "n_geometries", "ritz_m",
                "low_fraction", "factor", "envelope", "unroll", "steps", "batch", "lr", "lr_final", "seed"):
        parts += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.geometry:
        parts += ["--geometry"]
    if args.stop_at_step is not None:
        parts += ["--stop-at-step", str(args.stop_at_step)]
    parts += ["--out", str(args.out)]
    if args.init:
        parts += ["--init", str(args.init)]
    if args.name:
        parts += ["--name", args.name]
    if getattr(args, "shards", None) not in (None, 1):
        parts += ["--shards", str(args.shards)]
    return shlex.join(parts)


def _relaunch_with_torchrun(args) -> int:
    """Run this same command in ``args.nproc`` processes under torchrun; its exit code."""
    import subprocess

    parser = build_parser()
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "nproc", "max_restarts"):
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif value is not None and action.dest != "shards":
            argv += [flag, str(value)]
    argv += ["--shards", str(args.shards or args.nproc)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={args.nproc}", f"--max-restarts={args.max_restarts}",
           "-m", "neurosolve.cli", "train", "dcdm", *argv]
    print("launching:", shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode


def main(args) -> int:
    """Run the training described by parsed ``args``; returns an exit code."""
    if getattr(args, "model", "dcdm") == "lmg":
        return main_lmg(args)
    import torch

    from neurosolve.neural.dcdm_train import TrainConfig, reference_losses, train, build_data

    import os

    from neurosolve.neural.distributed import World

    if args.nproc < 1:
        raise SystemExit("neurosolve train dcdm: error: --nproc must be >= 1")
    if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return _relaunch_with_torchrun(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = World.from_env(device=None if args.device == "auto" else args.device)
    if world.restart > 0:  # torchrun restarted the job after a process died
        args.resume = True
    if world.size > 1 and args.shards is None:
        args.shards = world.size
    quiet = args.no_progress or not world.is_main
    cfg = TrainConfig(dim=args.dim, grid=args.grid, variant=args.variant, levels=args.levels,
                      channels=args.channels, geometry=args.geometry, data=args.data,
                      n_geometries=args.n_geometries,
                      ritz_m=args.ritz_m, low_fraction=args.low_fraction, factor=args.factor,
                      envelope=args.envelope, unroll=args.unroll,
                      steps=args.steps, batch=args.batch, lr=args.lr, lr_final=args.lr_final,
                      seed=args.seed, max_minutes=args.max_minutes)
    out = pathlib.Path(args.out)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = build_data(cfg, progress=not quiet)
    t_data = time.perf_counter() - t0
    res = train(cfg, checkpoint=out / "checkpoint.pt", checkpoint_every=args.checkpoint_every,
                resume=args.resume, device=args.device, progress=not quiet,
                loss_png=out / "loss.png", data=data, init=args.init, stop_at=args.stop_at_step,
                shards=args.shards, world=world)
    if not world.is_main:  # rank 0 writes the summary and the manifest
        return 0
    refs = reference_losses(*data, net=res.model.cpu())
    summary = {
        "config": cfg.__dict__,
        "steps_done": res.steps_done,
        "stopped_early": res.stopped_early,
        "final_loss": res.final_loss,
        "heldout_loss": refs,
        "train_seconds": round(res.wall_time, 1),
        "data_seconds": round(t_data, 1),
        "device": str(next(res.model.parameters()).device),
        "processes": world.size,
        "command": _command_line(args),
    }
    if args.init is not None:
        prev = pathlib.Path(args.init).parent / "summary.json"
        if prev.exists():  # the chain of commands that regenerates these weights
            before = json.loads(prev.read_text())
            summary["init_commands"] = before.get("init_commands", []) + [before["command"]]
    if args.evaluate:
        from neurosolve.neural.dcdm_train import evaluate_model

        summary["measured"] = evaluate_model(res.model, dim=cfg.dim)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("steps_done", "final_loss", "heldout_loss",
                                               "train_seconds")}, indent=None))
    planned = args.stop_at_step is not None and res.steps_done == args.stop_at_step
    if res.stopped_early and not planned:
        print(f"stopped after {res.steps_done}/{cfg.steps} steps (--max-minutes); "
              "rerun with --resume to continue", file=sys.stderr)
    if args.name and (planned or not res.stopped_early):
        from neurosolve.neural.pretrained import save_pretrained

        info = {
            "name": args.name,
            "description": f"DCDM network, {cfg.dim}D, trained at {cfg.grid}^{cfg.dim} on "
                           f"'{cfg.data}' data",
            "grid": [cfg.grid] * cfg.dim,
            "data": {"kind": cfg.data, "low_fraction": cfg.low_fraction, "factor": cfg.factor,
                     "envelope": cfg.envelope,
                     "ritz_m": cfg.ritz_m if "ritz" in cfg.data else None,
                     "n_geometries": cfg.n_geometries if cfg.data == "mixture" else None},
            "training": {"steps": res.steps_done, "batch": cfg.batch, "lr": cfg.lr,
                         "lr_final": cfg.lr_final, "optimizer": "Adam, cosine decay",
                         "seed": cfg.seed, "seconds": round(res.wall_time, 1),
                         "device": summary["device"], "torch": torch.__version__},
            "final_loss": res.final_loss,
            "heldout_loss": refs,
            "command": summary["command"],
        }
        if "init_commands" in summary:
            info["init_commands"] = summary["init_commands"]
        if "measured" in summary:
            info["measured_iterations"] = summary["measured"]
        path = save_pretrained(res.model, args.name, info, directory=args.weights_dir)
        print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(build_parser().parse_args()))
