"""Long EP runs: checkpoint and exact resume, the per-epoch JSON log, the plot, and
data-parallel training under torchrun (2 processes = 1 process).

Oracle: the same run without interruption, in one process.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from neurosolve.neural.ep import load_digits_split, mlp, train


def _data():
    Xtr, ytr, Xte, yte = load_digits_split()
    return Xtr[:120], ytr[:120], Xte[:60], yte[:60]


def _net():
    return mlp([64, 16, 10], angle=90, seed=0, recurrent_scale=0.6)


KW = dict(epochs=3, batch_size=20, homeostasis=1.0, progress=False, method="ep",
          optimizer="sgd")


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    Xtr, ytr, Xte, yte = _data()
    full = train(_net(), Xtr, ytr, Xte, yte, **KW)
    # stopped by its callback after epoch 1, then resumed in a fresh network object
    part = train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz",
                 callback=lambda ep, h: ep == 1, **KW)
    assert part.history["epoch"] == [0, 1]
    rest = train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz", resume=True,
                 log=tmp_path / "log.jsonl", plot=tmp_path / "run.png", **KW)
    assert rest.history["epoch"] == [0, 1, 2, 3] and rest.steps == full.steps
    for k, v in full.net.params.items():
        np.testing.assert_allclose(rest.net.params[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    for k in ("test_acc", "train_loss", "cos_h1", "rho_max"):
        np.testing.assert_allclose(rest.history[k], full.history[k], rtol=1e-10, err_msg=k)
    # the log of the resumed run holds the epochs it ran; the plot was written
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2, 3]
    assert rows[-1]["test_acc"] == pytest.approx(full.history["test_acc"][-1])
    assert (tmp_path / "run.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="different config"):
        train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz", resume=True,
              **dict(KW, homeostasis=2.0))


def test_log_of_a_fresh_run_has_every_epoch(tmp_path):
    Xtr, ytr, Xte, yte = _data()
    res = train(_net(), Xtr, ytr, Xte, yte, log=tmp_path / "log.jsonl",
                **dict(KW, epochs=2))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert [r["test_acc"] for r in rows] == res.history["test_acc"]


WORKER = textwrap.dedent('''
    import json, pathlib, sys

    import numpy as np
    import torch

    from neurosolve.neural.distributed import World
    from neurosolve.neural.ep import load_digits_split, mlp, train

    torch.set_num_threads(1)
    world = World.from_env()
    Xtr, ytr, Xte, yte = load_digits_split()
    net = mlp([64, 16, 10], angle=90, seed=0, recurrent_scale=0.6)
    res = train(net, Xtr[:120], ytr[:120], epochs=2, batch_size=20, progress=False,
                world=world, method="ep", diagnostics=False,
                checkpoint=pathlib.Path(sys.argv[1]).with_suffix(".npz"))
    if world.is_main:
        pathlib.Path(sys.argv[1]).write_text(json.dumps(
            {"world": world.size, "steps": res.steps,
             "params": {k: np.asarray(v).tolist() for k, v in res.net.params.items()}}))
''')


def test_two_processes_equal_one(tmp_path):
    pytest.importorskip("torch")
    import torch

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    runs = {}
    for name, cmd in (("one", [sys.executable, str(script)]),
                      ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node=2", str(script)])):
        out = tmp_path / f"{name}.json"
        proc = subprocess.run(cmd + [str(out)], capture_output=True, text=True, timeout=240,
                              env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = json.loads(out.read_text())
    assert runs["one"]["world"] == 1 and runs["two"]["world"] == 2
    assert runs["two"]["steps"] == runs["one"]["steps"] == 12
    for k, v in runs["one"]["params"].items():  # each rank: half of every mini-batch
        np.testing.assert_allclose(runs["two"]["params"][k], v, rtol=1e-9, atol=1e-12,
                                   err_msg=k)
    # only rank 0 wrote: one checkpoint, no temporary files
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == ["one.npz",
                                                                               "two.npz"]
