"""``neurosolve bench``: run the pytest-benchmark suites and summarize them.

Benchmarks put their facts in ``benchmark.extra_info`` (the ``convergence`` fixture of
:mod:`neurosolve.pytest_plugin` records the convergence ones). This module runs the suites
(``benchmarks/bench_<family>.py`` of a source checkout; see :func:`find_benchmarks`), reads
the JSON that pytest-benchmark writes, and writes ``summary.md`` (per family: min and
median times, ratios, convergence facts; ratio minima and medians) and ``ratios.png``
(one panel per family).

**The ratio convention** (one direction everywhere: ours / peer, < 1 means we are faster
or smaller). An ``extra_info`` key is a peer ratio when it matches one of

* ``ratio`` -- our wall time / the peer's, the peer named by the row's ``peer`` key;
* ``<metric>_ratio`` -- the same for another metric (``time_ratio``, ``per_iteration_ratio``,
  ``iter_ratio``, ``memory_ratio``...), against the row's ``peer``;
* ``ratio_vs_<peer>`` and ``<metric>_ratio_vs_<peer>`` -- the same against a named peer.

``<metric>`` absent or ``time`` means wall time. No other key may end in ``_ratio`` or
contain ``ratio_vs_`` (name self-ratios like ``backward_over_forward`` or
``iteration_growth``). The legacy ``speedup_vs_<peer>`` (peer / ours) is read as
``ratio_vs_<peer>`` = 1 / speedup. ``peer_ratio`` (in ``summary.md``, and in ``neurosolve
demo``'s table) is the row's headline wall-time ratio: our time / the peer's time on the
same instance in the same run.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys

__all__ = ["run_bench", "summarize", "write_report", "find_benchmarks", "parse_ratio_key",
           "RATIO_CONVENTION", "PEER_RATIO_NOTE"]

PEER_RATIO_NOTE = ("`peer_ratio` = our wall time / the peer's wall time (column `peer`), "
                   "measured on the same instance in the same run: < 1 means we are faster.")
RATIO_CONVENTION = (
    "Every ratio is **ours / peer** (< 1: we are faster, or smaller). Keys: `ratio` and "
    "`<metric>_ratio` (against the row's `peer`), `ratio_vs_<peer>` and "
    "`<metric>_ratio_vs_<peer>`; no metric or `time` means wall time. " + PEER_RATIO_NOTE)

_RATIO_RE = re.compile(r"^(?:(?P<metric>[A-Za-z0-9_]+?)_)?ratio(?:_vs_(?P<peer>[A-Za-z0-9_]+))?$")
_SPEEDUP_RE = re.compile(r"^speedup_vs_(?P<peer>[A-Za-z0-9_]+)$")
ENV_BENCHMARKS = "NEUROSOLVE_BENCHMARKS"


def parse_ratio_key(key: str) -> tuple[str, str | None] | None:
    """``(metric, peer)`` when ``key`` is a peer ratio under the convention (``peer`` None:
    the row's ``peer``), else None. ``metric`` is ``"time"`` for wall time."""
    m = _RATIO_RE.match(key)
    if m is None:
        return None
    metric = m.group("metric") or "time"
    return metric, m.group("peer")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _family(b: dict) -> str:
    """``cg`` for ``benchmarks/bench_cg.py::test_x``; the group or ``other`` otherwise."""
    path = (b.get("fullname") or "").split("::", 1)[0]
    stem = pathlib.PurePosixPath(path.replace("\\", "/")).stem
    if stem.startswith("bench_"):
        return stem[len("bench_"):]
    return stem or b.get("group") or "other"


def _ratios(info: dict) -> list[dict]:
    out = []
    for k, v in info.items():
        m = _SPEEDUP_RE.match(k)
        if m is not None:
            if _number(v) and v > 0:
                out.append({"key": f"ratio_vs_{m.group('peer')}", "metric": "time",
                            "peer": m.group("peer"), "value": 1.0 / v, "from": k})
            continue
        parsed = parse_ratio_key(k)
        if parsed is None or not _number(v):
            continue
        metric, peer = parsed
        out.append({"key": k, "metric": metric, "peer": peer or info.get("peer") or "peer",
                    "value": float(v)})
    return out


def summarize(data: dict) -> list[dict]:
    """Rows from pytest-benchmark's JSON: ``name``, ``family``, ``group``, ``min_s``,
    ``median_s``, ``rounds``, ``peer``, ``peer_ratio`` (the headline wall-time ratio), the
    scalar ``extra_info`` entries, and ``ratios`` (every peer ratio of the row, parsed)."""
    rows = []
    for b in data.get("benchmarks", []):
        st = b.get("stats") or {}
        info = b.get("extra_info") or {}
        row = {"name": b["name"], "family": _family(b), "group": b.get("group") or "",
               "min_s": st.get("min"), "median_s": st.get("median"), "rounds": st.get("rounds")}
        ratios = _ratios(info)
        head = next((r for r in ratios if r["metric"] == "time"), None)
        row["peer"] = head["peer"] if head else info.get("peer")
        row["peer_ratio"] = head["value"] if head else None
        for k, v in info.items():
            if k in row or k == "peer":
                continue
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        for r in ratios:  # a legacy speedup shows as the ratio it stands for
            if "from" in r:
                row.pop(r["from"], None)
                row[r["key"]] = r["value"]
        row["ratios"] = ratios
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v).replace("|", "/")


def _table(rows: list[dict], skip=("family", "ratios")) -> str:
    keys = ["name", "group", "min_s", "median_s", "rounds", "peer", "peer_ratio"]
    for r in rows:
        for k in r:
            if k not in keys and k not in skip:
                keys.append(k)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _families(rows: list[dict]) -> dict[str, list[dict]]:
    fam: dict[str, list[dict]] = {}
    for r in rows:
        fam.setdefault(r["family"], []).append(r)
    return fam


def ratio_summary(rows: list[dict]) -> list[dict]:
    """Per (family, metric): how many ratios, their minimum, median and maximum."""
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        for q in r["ratios"]:
            acc.setdefault((r["family"], q["metric"]), []).append(q["value"])
    return [{"family": f, "metric": m, "count": len(v), "min": min(v),
             "median": statistics.median(v), "max": max(v)} for (f, m), v in acc.items()]


def markdown(rows: list[dict]) -> str:
    """The text of ``summary.md``."""
    out = ["# neurosolve bench", "", RATIO_CONVENTION, "",
           "Times: `min_s` (fastest round, the figure the docs quote) and `median_s` over "
           "`rounds` rounds.", ""]
    summ = ratio_summary(rows)
    if summ:
        out += ["## Ratios (ours / peer) by family", "",
                "| family | metric | count | min | median | max |", "|---|---|---|---|---|---|"]
        out += [f"| {s['family']} | {s['metric']} | {s['count']} | {s['min']:.4g} | "
                f"{s['median']:.4g} | {s['max']:.4g} |" for s in summ]
        out.append("")
    for fam, frows in _families(rows).items():
        out += [f"## {fam}", "", _table(frows), ""]
    return "\n".join(out)


def _plot(rows: list[dict], path: pathlib.Path) -> list[str]:
    """Write ``path`` with one panel per family holding every peer ratio; return the
    families plotted ([] and no file when there is no ratio or no matplotlib)."""
    fams = {f: [(f"{r['name']} {q['key']}" if q["key"] != "ratio" else r["name"], q)
                for r in frows for q in r["ratios"] if q["value"] > 0]
            for f, frows in _families(rows).items()}
    fams = {f: bars for f, bars in fams.items() if bars}
    if not fams:
        return []
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [0.28 * len(b) + 0.9 for b in fams.values()]
    fig, axes = plt.subplots(len(fams), 1, figsize=(9, sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    metrics = sorted({q["metric"] for bars in fams.values() for _, q in bars})
    colors = {m: f"C{i % 10}" for i, m in enumerate(metrics)}
    for ax, (fam, bars) in zip(axes[:, 0], fams.items()):
        ax.barh(range(len(bars)), [q["value"] for _, q in bars],
                color=[colors[q["metric"]] for _, q in bars])
        ax.axvline(1.0, color="k", lw=1)
        ax.set_yticks(range(len(bars)), [n for n, _ in bars], fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(f"{fam}  (ours / peer; < 1: we are faster)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in metrics]
    axes[0, 0].legend(handles, metrics, fontsize=6, loc="best", title="metric",
                      title_fontsize=6)
    axes[-1, 0].set_xlabel("ratio ours / peer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return list(fams)


def write_report(data: dict, outdir) -> list[pathlib.Path]:
    """Write ``summary.md`` (and ``ratios.png`` when there are ratios) for pytest-benchmark
    JSON ``data`` into ``outdir``; return the paths actually written."""
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(data)
    written = []
    md = out / "summary.md"
    md.write_text(markdown(rows) + "\n")
    written.append(md)
    png = out / "ratios.png"
    if png.exists():
        png.unlink()  # never leave a stale plot next to a new summary
    if _plot(rows, png) and png.exists():
        written.append(png)
    return written


def find_benchmarks(path=None) -> pathlib.Path | None:
    """The benchmarks folder: ``path``, else ``$NEUROSOLVE_BENCHMARKS``, else
    ``./benchmarks``, else the ``benchmarks/`` next to the installed package (a source
    checkout or editable install). None when none exists."""
    if path is not None:
        p = pathlib.Path(path)
        return p if p.is_dir() else None
    candidates = []
    if os.environ.get(ENV_BENCHMARKS):
        candidates.append(pathlib.Path(os.environ[ENV_BENCHMARKS]))
    candidates += [pathlib.Path("benchmarks"),
                   pathlib.Path(__file__).resolve().parent.parent / "benchmarks"]
    for p in candidates:
        if p.is_dir() and any(p.glob("bench_*.py")):
            return p
    return None


def run_bench(families: list[str] | None = None, outdir: str = "neurosolve-bench",
              extra: list[str] | None = None, benchmarks=None, from_json=None,
              compare_with=None) -> int:
    """Run ``bench_<family>.py`` (all when None) of the benchmarks folder (see
    :func:`find_benchmarks`) with extra pytest arguments ``extra``, then write the report.
    ``from_json``: summarize that ``--benchmark-json`` file instead of running.
    ``compare_with``: a saved ``--benchmark-json`` file; convergence regressions
    (:func:`neurosolve.pytest_plugin.compare`) are printed and make the status 1."""
    out = pathlib.Path(outdir)
    extra = list(extra or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    rc = 0
    written: list[pathlib.Path] = []
    if from_json is not None:
        js = pathlib.Path(from_json)
        if not js.is_file():
            print(f"error: no such file {js}", file=sys.stderr)
            return 2
    else:
        bench_dir = find_benchmarks(benchmarks)
        if bench_dir is None:
            where = f"{benchmarks!r} is not a folder" if benchmarks is not None else \
                "no benchmarks folder found"
            print(f"error: {where}; pass --benchmarks DIR (the benchmarks/ folder of a neurosolve "
                  f"source checkout) or set {ENV_BENCHMARKS}", file=sys.stderr)
            return 2
        files = ([bench_dir / f"bench_{f}.py" for f in families] if families else [bench_dir])
        for f in files:
            if not f.exists():
                have = ", ".join(sorted(p.stem[6:] for p in bench_dir.glob("bench_*.py")))
                print(f"error: no benchmark file {f} (families: {have})", file=sys.stderr)
                return 2
        out.mkdir(parents=True, exist_ok=True)
        js = out / "bench.json"
        if js.exists():
            js.unlink()  # a failed run must not report the previous one
        cmd = [sys.executable, "-m", "pytest", *map(str, files), "--benchmark-only",
               "-p", "no:cacheprovider", f"--benchmark-json={js}", "-q", *extra]
        print(" ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if not js.exists():
            print(f"pytest wrote no {js} (exit status {rc}); nothing written", file=sys.stderr)
            return rc or 1
        written.append(js)
    data = json.loads(js.read_text())
    written += write_report(data, out)
    print(markdown(summarize(data)))
    if compare_with is not None:
        from neurosolve.pytest_plugin import compare

        regs = compare(compare_with, data)
        for r in regs:
            print(f"REGRESSION {r}")
        print(f"{len(regs)} convergence regression(s) against {compare_with}")
        if regs and rc == 0:
            rc = 1
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return rc
