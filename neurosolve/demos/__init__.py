"""End-to-end demos of every family, run by ``neurosolve demo``.

Each family has a module here with ``run(small, outdir, progress) -> list[dict]``;
the rows (family, problem, solver, iterations, time_s, certificate, peer, peer_ratio)
make the summary table and the JSON report.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import platform
import time
import traceback

__all__ = ["FAMILIES", "run_demos", "format_table"]

#: family name -> module under neurosolve.demos, in the order the demo runs them
FAMILIES = {
    "poisson": "neurosolve.demos.poisson",
    "dcdm": "neurosolve.demos.dcdm",
    "convex_relu": "neurosolve.demos.convex_relu",
    "gns": "neurosolve.demos.gns",
    "lvhba": "neurosolve.demos.lvhba",
    "ep": "neurosolve.demos.ep",
    "implicit": "neurosolve.demos.implicit",
}

COLUMNS = ("family", "problem", "solver", "iterations", "time_s", "certificate", "peer", "peer_ratio")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    """A markdown table of the demo rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def run_demos(small: bool = False, outdir: str | pathlib.Path = "neurosolve-report",
              progress: bool = True, only: list[str] | None = None) -> dict:
    """Run the demos, write ``report.json`` and ``summary.md`` to ``outdir``, return the report.

    A family whose demo raises is recorded with its traceback and the others still run.
    """
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = list(FAMILIES) if not only else only
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown demo family {unknown}; choose from {', '.join(FAMILIES)}")
    rows, failures, missing = [], {}, []
    t0 = time.perf_counter()
    for name in names:
        modname = FAMILIES[name]
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                missing.append(name)
                continue
            failures[name] = traceback.format_exc()
            continue
        fam_dir = outdir / name
        fam_dir.mkdir(exist_ok=True)
        try:
            t = time.perf_counter()
            fam_rows = mod.run(small=small, outdir=fam_dir, progress=progress)
            for r in fam_rows:
                r.setdefault("family", name)
            rows.extend(fam_rows)
            print(f"[neurosolve demo] {name}: {len(fam_rows)} rows in {time.perf_counter() - t:.1f} s",
                  flush=True)
        except Exception:  # noqa: BLE001 - reported, and the exit code says so
            failures[name] = traceback.format_exc()
            print(f"[neurosolve demo] {name} FAILED:\n{failures[name]}", flush=True)
    report = {
        "small": small,
        "total_time_s": time.perf_counter() - t0,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
        "failures": failures,
        "not_installed": missing,
    }
    (outdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    from neurosolve.bench_report import PEER_RATIO_NOTE

    (outdir / "summary.md").write_text(format_table(rows) + "\n\n" + PEER_RATIO_NOTE + "\n")
    return report
