"""``neurosolve bench`` and its report (neurosolve.bench_report): one ratio convention."""

import ast
import json
import pathlib
import re

import pytest

from neurosolve import bench_report as br
from neurosolve.cli import main as cli_main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench(fullname, stats=(1.0, 2.0, 3), group=None, **info):
    name = fullname.split("::")[-1]
    return {"name": name, "fullname": fullname, "group": group,
            "stats": {"min": stats[0], "median": stats[1], "mean": 99.0, "rounds": stats[2]},
            "extra_info": info}


DATA = {"benchmarks": [
    _bench("benchmarks/bench_cg.py::test_cg_ours[a]", group="cg", iterations=10,
           peer="scipy cg", time_ratio=0.5, per_iteration_ratio=0.25, residual_history=[1, 0.1],
           certificate={"r": 1e-7}),
    _bench("benchmarks/bench_cg.py::test_pcg_gmg[a]", ratio_vs_amg_sa=0.3, gmg_pcg_ratio_vs_fft=4.0),
    _bench("benchmarks/bench_gns.py::test_gns[x]", peer="trust-exact", ratio=2.0, iter_ratio=0.5),
    _bench("benchmarks/bench_lvhba.py::test_speed", speedup_vs_sparse_loop=4.0,
           numba_cost_ratio_n10000_over_n1000=9.0),
    _bench("benchmarks/bench_implicit.py::test_mode", backward_over_forward=3.0,
           iteration_growth=1.1),
]}


def test_parse_ratio_key():
    assert br.parse_ratio_key("ratio") == ("time", None)
    assert br.parse_ratio_key("time_ratio") == ("time", None)
    assert br.parse_ratio_key("per_iteration_ratio") == ("per_iteration", None)
    assert br.parse_ratio_key("ratio_vs_clarabel") == ("time", "clarabel")
    assert br.parse_ratio_key("memory_ratio_vs_unrolled") == ("memory", "unrolled")
    for k in ("backward_over_forward", "iteration_growth", "iterations", "ratio_to_x",
              "numba_cost_ratio_n10000_over_n1000", "speedup_vs_loop", "peer"):
        assert br.parse_ratio_key(k) is None, k


def test_summarize_min_median_peer_ratio_and_every_family():
    rows = {r["name"]: r for r in br.summarize(DATA)}
    ours = rows["test_cg_ours[a]"]
    assert ours["family"] == "cg" and ours["min_s"] == 1.0 and ours["median_s"] == 2.0
    assert "mean_s" not in ours and ours["rounds"] == 3
    assert ours["peer"] == "scipy cg" and ours["peer_ratio"] == 0.5
    assert "residual_history" not in ours and "certificate" not in ours  # scalars only
    assert {(q["key"], q["metric"]) for q in ours["ratios"]} == {
        ("time_ratio", "time"), ("per_iteration_ratio", "per_iteration")}
    gmg = rows["test_pcg_gmg[a]"]
    assert gmg["peer"] == "amg_sa" and gmg["peer_ratio"] == 0.3
    assert rows["test_gns[x]"]["peer_ratio"] == 2.0
    # a legacy speedup (peer / ours) becomes the ratio ours / peer
    lv = rows["test_speed"]
    assert lv["peer_ratio"] == pytest.approx(0.25) and lv["peer"] == "sparse_loop"
    assert lv["ratio_vs_sparse_loop"] == pytest.approx(0.25) and "speedup_vs_sparse_loop" not in lv
    assert [q["key"] for q in lv["ratios"]] == ["ratio_vs_sparse_loop"]
    # self-ratios are plain columns, never peer ratios
    imp = rows["test_mode"]
    assert imp["ratios"] == [] and imp["peer_ratio"] is None and imp["backward_over_forward"] == 3

    summ = {(s["family"], s["metric"]): s for s in br.ratio_summary(list(rows.values()))}
    assert summ["cg", "time"]["count"] == 2 and summ["cg", "time"]["min"] == 0.3
    assert summ["cg", "time"]["median"] == pytest.approx((0.3 + 0.5) / 2)
    assert {f for f, _ in summ} == {"cg", "gns", "lvhba"}


def test_write_report_and_the_convention_in_summary_md(tmp_path):
    pytest.importorskip("matplotlib")
    written = br.write_report(DATA, tmp_path)
    assert written == [tmp_path / "summary.md", tmp_path / "ratios.png"]
    md = (tmp_path / "summary.md").read_text()
    assert "ours / peer" in md and "`peer_ratio` = our wall time / the peer's" in md
    assert "min_s" in md and "median_s" in md and "mean_s" not in md
    for fam in ("## cg", "## gns", "## lvhba", "## implicit"):
        assert fam in md
    rows = br.summarize(DATA)
    assert br._plot(rows, tmp_path / "again.png") == ["cg", "gns", "lvhba"]  # every family

    # no ratio at all: no plot, and a stale one is removed, not reported
    no_ratio = {"benchmarks": [_bench("benchmarks/bench_ep.py::t", iterations=3)]}
    assert br.write_report(no_ratio, tmp_path) == [tmp_path / "summary.md"]
    assert not (tmp_path / "ratios.png").exists()


def _extra_info_keys(path: pathlib.Path) -> set[str]:
    """Keys the benchmark writes into extra_info: keywords of ``*.update(...)`` and
    ``_record(...)`` calls, keys of dict literals passed to them, and ``info[k] = ...`` /
    ``extra[k] = ...`` / ``extra_info[k] = ...`` (f-string parts become ``x``)."""
    def key(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
        return None

    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in ("update", "_record"):
                keys |= {kw.arg for kw in node.keywords if kw.arg}
                for a in node.args:
                    if isinstance(a, ast.Dict):
                        keys |= {k for k in map(key, a.keys) if k}
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Subscript):
                    base = t.value
                    bname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                    if bname in ("info", "extra", "extra_info") and key(t.slice):
                        keys.add(key(t.slice))
    return keys


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("bench_*.py")),
                         ids=lambda p: p.name)
def test_benchmarks_follow_the_ratio_convention(path):
    keys = _extra_info_keys(path)
    assert keys, "no extra_info keys found: the scan is broken"
    bad = sorted(k for k in keys if "speedup" in k
                 or ("ratio" in k.split("_") and br.parse_ratio_key(k) is None))
    assert not bad, f"{path.name}: keys outside the ratio convention: {bad}"


TINY = '''
import neurosolve as ns
from neurosolve.problems import poisson as P


def _prob():
    g = P.sphere((12, 12), walls={"y+": "dirichlet"})
    return g.system(P.rhs_blobs(g, seed=0))


def test_peer(benchmark):
    benchmark.pedantic(lambda: ns.solve(_prob(), ns.solvers.CG(rtol=1e-6)), rounds=1)


def test_ours(benchmark, convergence):
    convergence(_prob(), ns.solvers.CG(rtol=1e-6), rounds=2)
    benchmark.extra_info.update(peer="twin", ratio=0.9)
'''


def test_cli_bench_from_a_benchmarks_folder_with_pytest_args(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pytest_benchmark")
    bdir = tmp_path / "mybench"
    bdir.mkdir()
    (bdir / "bench_tiny.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)  # not a checkout: no ./benchmarks here
    out = tmp_path / "out"
    rc = cli_main(["bench", "--benchmarks", str(bdir), "--family", "tiny", "--out", str(out),
                   "--", "-k", "ours", "-o", "addopts="])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["test_ours"]  # -k reached pytest
    info = data["benchmarks"][0]["extra_info"]
    assert info["iterations"] > 0 and 0 < info["rate"] < 1 and info["ratio"] == 0.9
    text = capsys.readouterr().out
    written = re.search(r"written: (.*)", text).group(1).split(", ")
    assert all(pathlib.Path(p).exists() for p in written)
    assert {pathlib.Path(p).name for p in written} == {"bench.json", "summary.md", "ratios.png"}

    # summarize again from the JSON; compare against itself: no regression
    out2 = tmp_path / "out2"
    assert cli_main(["bench", "--from-json", str(out / "bench.json"), "--out", str(out2),
                     "--compare", str(out / "bench.json")]) == 0
    text = capsys.readouterr().out
    assert "0 convergence regression(s)" in text
    assert "bench.json" not in re.search(r"written: (.*)", text).group(1)


def test_cli_bench_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(br.ENV_BENCHMARKS, str(tmp_path / "nowhere"))
    monkeypatch.setattr(br, "__file__", str(tmp_path / "pkg" / "bench_report.py"))
    assert cli_main(["bench", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--benchmarks DIR" in err
    assert cli_main(["bench", "--benchmarks", str(ROOT / "benchmarks"), "--family", "nope",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cg" in err
    assert not (tmp_path / "o" / "summary.md").exists()


def test_find_benchmarks_defaults_to_the_source_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(br.ENV_BENCHMARKS, raising=False)
    assert br.find_benchmarks() == ROOT / "benchmarks"
    assert br.find_benchmarks(tmp_path / "missing") is None
    monkeypatch.setenv(br.ENV_BENCHMARKS, str(ROOT / "benchmarks"))
    assert br.find_benchmarks() == ROOT / "benchmarks"
