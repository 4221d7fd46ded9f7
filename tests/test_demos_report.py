"""run_demos writes report.json and summary.md, says what peer_ratio means, and records a
failing family without stopping the others (on fake families: the real demos run in CI)."""

import json
import sys
import types

import neurosolve.demos as demos


def _fake(name, rows=None, error=None):
    mod = types.ModuleType(name)

    def run(small, outdir, progress):
        if error:
            raise error
        return [dict(r) for r in rows]

    mod.run = run
    return mod


def test_summary_and_failures(tmp_path, monkeypatch):
    ok = _fake("fake_ok", rows=[{"problem": "p", "solver": "s", "iterations": 3, "time_s": 0.5,
                                 "certificate": 1e-9, "peer": "scipy", "peer_ratio": 0.8}])
    bad = _fake("fake_bad", error=RuntimeError("boom"))
    monkeypatch.setitem(sys.modules, "fake_ok", ok)
    monkeypatch.setitem(sys.modules, "fake_bad", bad)
    monkeypatch.setattr(demos, "FAMILIES", {"ok": "fake_ok", "bad": "fake_bad"})
    report = demos.run_demos(outdir=tmp_path, progress=False)
    assert [r["family"] for r in report["rows"]] == ["ok"]
    assert "boom" in report["failures"]["bad"]
    md = (tmp_path / "summary.md").read_text()
    assert "| ok | p | s | 3 | 0.5 | 1e-09 | scipy | 0.8 |" in md
    assert "`peer_ratio` = our wall time / the peer's wall time" in md
    assert json.loads((tmp_path / "report.json").read_text())["rows"][0]["peer_ratio"] == 0.8
