"""Data-parallel training throughput: samples/s of ``train_preconditioner`` on 1 and 2
processes (torchrun, gloo), the all-reduce's bytes and time per step.

Run::

    pytest benchmarks/bench_ddp.py --benchmark-only --benchmark-json /tmp/ddp.json

The workload: the paper's DCDM network (``DCDMNet(dim=3, variant="64")``, 16 channels) with
the DCDM loss on two 32^3 gallery geometries, global batch 8, float32, on the CPU. Each
configuration runs in fresh processes: 3 warm-up steps, then ``STEPS`` timed steps (the
sample generation, forward, backward, the all-reduce and the Adam step; no checkpoints).

Configurations (the same two cores in every one, except ``1x1``):

* ``1x1``: one process, one thread (the per-core baseline);
* ``1x2``: one process, two threads (torch's intra-op parallelism: the peer);
* ``2x1``: two processes of one thread each, gradients averaged by one all-reduce per step.

``extra_info``: ``samples_per_s`` (global), ``samples_per_s_per_process``, ``step_s``,
``allreduce_bytes`` (float32 gradients plus the loss: 4 bytes per parameter + 4),
``allreduce_s`` (mean of 50 all-reduces of that buffer after training, 0 for one process),
``parameters``; ``2x1`` adds ``step_time_ratio_vs_1x2`` (2 processes / 1 process with 2
threads: below 1, data parallelism is faster) and ``scaling_efficiency`` (samples/s of 2
processes over twice those of ``1x1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
import torch  # noqa: E402

if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

STEPS = int(os.environ.get("NEUROSOLVE_BENCH_DDP_STEPS", "20"))
_RUNS: dict = {}

WORKER = textwrap.dedent('''
    import json, sys, time

    import torch

    from neurosolve.neural import DCDMNet, train_preconditioner
    from neurosolve.neural.distributed import World
    from neurosolve.problems import poisson

    steps, threads, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    world = World.from_env()
    grids = [poisson.sphere((32, 32, 32)), poisson.pool((32, 32, 32), obstacles=2, seed=1)]
    torch.manual_seed(0)
    net = DCDMNet(dim=3, variant="64", channels=16)
    kw = dict(batch=8, lr=1e-3, seed=0, progress=False, world=world, shards=2)
    train_preconditioner(net, grids, steps=3, **kw)               # warm-up
    world.barrier()
    t = time.perf_counter()
    train_preconditioner(net, grids, steps=steps, **kw)
    world.barrier()
    elapsed = time.perf_counter() - t
    n = sum(p.numel() for p in net.parameters())
    buf = torch.zeros(n + 1)
    t = time.perf_counter()
    for _ in range(50):
        world.average([buf])
    allreduce = (time.perf_counter() - t) / 50 if world.size > 1 else 0.0
    if world.is_main:
        with open(out, "w") as f:
            json.dump({"elapsed": elapsed, "parameters": n, "allreduce_s": allreduce,
                       "world": world.size}, f)
''')


def _run(tmp_path, nproc: int, threads: int) -> dict:
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    out = tmp_path / f"ddp_{nproc}x{threads}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    args = [str(STEPS), str(threads), str(out)]
    cmd = ([sys.executable, str(script), *args] if nproc == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", str(script), *args])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("config", ["1x1", "1x2", "2x1"])
def test_ddp_throughput(benchmark, tmp_path, config):
    nproc, threads = (int(v) for v in config.split("x"))
    box: dict = {}
    benchmark.pedantic(lambda: box.update(_run(tmp_path, nproc, threads)), rounds=1,
                       iterations=1)
    batch = 8
    info = {
        "samples_per_s": round(STEPS * batch / box["elapsed"], 2),
        "samples_per_s_per_process": round(STEPS * batch / box["elapsed"] / nproc, 2),
        "step_s": round(box["elapsed"] / STEPS, 4),
        "allreduce_bytes": 4 * (box["parameters"] + 1),
        "allreduce_s": round(box["allreduce_s"], 6),
        "parameters": box["parameters"],
        "processes": nproc,
        "threads_per_process": threads,
    }
    _RUNS[config] = info
    if config == "2x1" and {"1x1", "1x2"} <= _RUNS.keys():
        info["step_time_ratio_vs_1x2"] = round(info["step_s"] / _RUNS["1x2"]["step_s"], 3)
        info["scaling_efficiency"] = round(
            info["samples_per_s"] / (2 * _RUNS["1x1"]["samples_per_s"]), 3)
    benchmark.extra_info.update(info)
    print(config, json.dumps(info))
