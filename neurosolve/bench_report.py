"""``neurosolve bench``: run the pytest-benchmark suites and summarize them.

Benchmarks put their convergence facts in ``benchmark.extra_info``; by convention a
benchmark that times our solver records ``peer`` (the peer's name), ``peer_time_s``
and ``ratio`` (ours / peer, from the same run). This module runs the suites, reads the
JSON that pytest-benchmark writes, and writes ``bench.md`` (a table of ratios and
convergence facts) and ``ratios.png``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

__all__ = ["run_bench", "summarize"]


def summarize(data: dict) -> list[dict]:
    """Rows (name, group, mean_s, extra_info...) from pytest-benchmark's JSON."""
    rows = []
    for b in data.get("benchmarks", []):
        row = {"name": b["name"], "group": b.get("group") or "", "mean_s": b["stats"]["mean"]}
        for k, v in (b.get("extra_info") or {}).items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    keys = ["name", "group", "mean_s"]
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _plot(rows: list[dict], path: pathlib.Path) -> None:
    ratios = [(r["name"], r["ratio"]) for r in rows if isinstance(r.get("ratio"), (int, float))]
    if not ratios:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ratios) + 1.5))
    names = [n for n, _ in ratios]
    ax.barh(range(len(ratios)), [v for _, v in ratios], color="tab:blue")
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(ratios)), names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("time ratio ours / peer (< 1: we are faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(families: list[str] | None = None, outdir: str = "neurosolve-bench",
              extra: list[str] | None = None) -> int:
    """Run ``benchmarks/bench_<family>.py`` (all when None) from the current directory."""
    bench_dir = pathlib.Path("benchmarks")
    if not bench_dir.is_dir():
        print("neurosolve bench runs from the repository root (the folder with benchmarks/)",
              file=sys.stderr)
        return 2
    files = ([str(bench_dir / f"bench_{f}.py") for f in families] if families
             else [str(bench_dir)])
    for f in files:
        if not pathlib.Path(f).exists():
            print(f"no benchmark file {f}", file=sys.stderr)
            return 2
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "bench.json"
    cmd = [sys.executable, "-m", "pytest", *files, "--benchmark-only", "-p", "no:cacheprovider",
           f"--benchmark-json={js}", "-q", *(extra or [])]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if js.exists():
        rows = summarize(json.loads(js.read_text()))
        (out / "bench.md").write_text(_table(rows) + "\n")
        _plot(rows, out / "ratios.png")
        print(_table(rows))
        print(f"\nwritten: {out}/bench.md, {out}/bench.json, {out}/ratios.png")
    return rc
