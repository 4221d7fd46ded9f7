"""``neurosolve solve poisson`` and ``neurosolve solve matrix``: exit statuses, one-line
usage errors, the torch backend, the matrix files and the option help."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from neurosolve.cli import build_parser, main


def _run(capsys, argv):
    """``(exit status, stdout, stderr)`` of ``neurosolve argv`` run in this process."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own exits (choices, --help)
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str) -> str:
    """The stderr of a usage error: exactly one non-warning line, no traceback."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("neurosolve: error: "), lines[0]
    return lines[0]


def _relative_residual(out: str) -> float:
    m = re.search(r"relative_residual=([0-9.eE+-]+)", out)
    assert m, out
    return float(m.group(1))


POISSON = ["solve", "poisson", "--no-progress"]


def _spd(n=30, seed=0):
    """A small sparse SPD matrix: a 1-D Laplacian plus a random diagonal shift."""
    rng = np.random.default_rng(seed)
    A = sp.diags([-np.ones(n - 1), 2.0 + rng.random(n), -np.ones(n - 1)], [-1, 0, 1])
    return sp.csr_matrix(A)


@pytest.fixture
def mtx(tmp_path):
    A = _spd()
    path = tmp_path / "A.mtx"
    scipy.io.mmwrite(str(path), A)
    return A, path


@pytest.fixture
def npz(tmp_path):
    A = _spd()
    path = tmp_path / "A.npz"
    sp.save_npz(path, A)
    return A, path


# -- usage errors: one line, exit status 2 ------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["--grid", "16"], ["--grid", "2 or 3"]),
    (["--grid", "8", "8", "8", "8"], ["--grid", "2 or 3"]),
    (["--grid", "8", "0", "8"], ["--grid", "positive"]),
    (["--grid", "8", "8", "8", "--solver", "fft", "--geometry", "sphere"],
     ["fft", "use --geometry box or a CG solver"]),
    (["--grid", "33", "33", "--solver", "dcdm"], ["divisible by", "pad the domain"]),
    (["--grid", "8", "8", "8", "--backend", "torch", "--solver", "pcg-ic0"],
     ["pcg-ic0 runs on numpy only", "--backend numpy", "--solver pcg-jacobi"]),
    (["--grid", "8", "8", "8", "--backend", "torch", "--solver", "pcg-ssor"],
     ["pcg-ssor runs on numpy only"]),
    (["--grid", "8", "8", "8", "--backend", "torch", "--solver", "pcg-amg"],
     ["pcg-amg runs on numpy only"]),
    (["--grid", "8", "8", "8", "--backend", "torch", "--solver", "pcg-gmg"],
     ["pcg-gmg runs on numpy only"]),
    (["--grid", "8", "8", "8", "--backend", "torch", "--solver", "fft", "--geometry", "box"],
     ["fft runs on numpy only"]),
    (["--grid", "8", "8", "8", "--rtol", "-1"], ["rtol"]),
    (["--grid", "8", "8", "8", "--backend", "gpu"], ["--backend", "invalid choice", "cuda"]),
    (["--grid", "8", "8", "8", "--solver", "lu"], ["--solver", "invalid choice"]),
    (["--grid", "8", "8", "8", "--tol", "1e-3"], ["unrecognized arguments: --tol 1e-3"]),
])
def test_poisson_usage_errors(capsys, argv, words):
    rc, _, err = _run(capsys, POISSON + argv)
    assert rc == 2
    line = _error_line(err)
    for w in words:
        assert w in line, line


def test_cuda_not_available(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, _, err = _run(capsys, POISSON + ["--grid", "8", "8", "8", "--backend", "cuda"])
    assert rc == 2
    line = _error_line(err)
    assert "CUDA is not available" in line and "--backend torch or numpy" in line


def test_error_through_the_console_script():
    """The real process: exit status 2, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "neurosolve.cli", *POISSON, "--grid", "16"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--grid takes 2 or 3 sizes" in _error_line(proc.stderr)
    assert proc.stdout == ""


def test_matrix_missing_option(capsys):
    rc, _, err = _run(capsys, ["solve", "matrix", "--no-progress"])
    assert rc == 2
    assert "--matrix" in _error_line(err)


def test_genuine_bug_keeps_its_traceback(capsys, monkeypatch):
    """Only the known user mistakes become one line: an error inside the solve propagates."""
    import neurosolve

    def broken(*args, **kwargs):
        raise ValueError("a bug inside the solver")

    monkeypatch.setattr(neurosolve, "solve", broken)
    with pytest.raises(ValueError, match="a bug inside the solver"):
        main(POISSON + ["--grid", "8", "8", "8", "--solver", "cg"])


# -- exit statuses 0 and 1 -----------------------------------------------------------------

@pytest.mark.parametrize("geometry", ["box", "sphere"])
@pytest.mark.parametrize("solver", ["pcg-jacobi", "cg"])
def test_poisson_torch_backend(capsys, geometry, solver):
    pytest.importorskip("torch")
    rc, out, err = _run(capsys, POISSON + ["--grid", "8", "8", "8", "--geometry", geometry,
                                           "--solver", solver, "--backend", "torch",
                                           "--rtol", "1e-6"])
    assert rc == 0, err
    assert "Traceback" not in err
    assert "'backend': 'torch'" in out
    assert _relative_residual(out) < 1e-6


def test_poisson_torch_default_solver(capsys):
    """Without --solver, torch gets pcg-jacobi (pcg-gmg is numpy-only)."""
    pytest.importorskip("torch")
    rc, out, err = _run(capsys, POISSON + ["--grid", "8", "8", "8", "--backend", "torch"])
    assert rc == 0, err
    assert out.startswith("pcg-jacobi on sphere 8x8x8: CONVERGED")


def test_poisson_numpy_default_unchanged(capsys):
    rc, out, err = _run(capsys, POISSON + ["--grid", "8", "8", "8"])
    assert rc == 0, err
    assert out.startswith("pcg-gmg on sphere 8x8x8: CONVERGED")
    assert _relative_residual(out) < 1e-6


def test_poisson_not_converged_exits_1(capsys):
    rc, out, err = _run(capsys, POISSON + ["--grid", "8", "8", "8", "--solver", "cg",
                                           "--maxiter", "1"])
    assert rc == 1
    assert "MAX_ITER" in out
    assert "not converged: MAX_ITER" in err and "relative residual" in err
    assert "Traceback" not in err


@pytest.mark.cuda
def test_poisson_cuda_backend(capsys):
    rc, out, err = _run(capsys, POISSON + ["--grid", "8", "8", "8", "--backend", "cuda",
                                           "--solver", "pcg-jacobi"])
    assert rc == 0, err
    assert _relative_residual(out) < 1e-6


# -- solve matrix ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mtx", "npz"])
@pytest.mark.parametrize("with_rhs", [False, True])
def test_matrix_solves(capsys, tmp_path, mtx, npz, fmt, with_rhs):
    A, path = mtx if fmt == "mtx" else npz
    out_file = tmp_path / "x.npy"
    argv = ["solve", "matrix", "--matrix", str(path), "--rtol", "1e-10", "--out", str(out_file),
            "--no-progress"]
    if with_rhs:
        b = np.random.default_rng(5).standard_normal(A.shape[0])
        np.save(tmp_path / "b.npy", b)
        argv += ["--rhs", str(tmp_path / "b.npy")]
    else:
        b = A @ np.random.default_rng(0).standard_normal(A.shape[0])
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    assert "CONVERGED" in out
    assert ("relative error against x_true" in out) is not with_rhs
    x = np.load(out_file)
    ref = spla.spsolve(sp.csc_matrix(A), b)
    assert np.linalg.norm(x - ref) <= 1e-6 * np.linalg.norm(ref)


@pytest.mark.parametrize("solver", ["pcg-jacobi", "pcg-ic0", "pcg-ssor", "pcg-amg"])
def test_matrix_preconditioners(capsys, mtx, solver):
    _, path = mtx
    rc, out, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--solver", solver,
                                 "--no-progress"])
    assert rc == 0, err
    m = re.search(r"relative error against x_true \(seed 0\): ([0-9.eE+-]+)", out)
    assert m and float(m.group(1)) < 1e-4, out


def test_matrix_torch_backend(capsys, tmp_path, mtx):
    pytest.importorskip("torch")
    A, path = mtx
    out_file = tmp_path / "x.npy"
    rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--backend", "torch",
                               "--solver", "pcg-jacobi", "--rtol", "1e-10",
                               "--out", str(out_file), "--no-progress"])
    assert rc == 0, err
    b = A @ np.random.default_rng(0).standard_normal(A.shape[0])
    ref = spla.spsolve(sp.csc_matrix(A), b)
    assert np.linalg.norm(np.load(out_file) - ref) <= 1e-6 * np.linalg.norm(ref)
    rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--backend", "torch",
                               "--solver", "pcg-ic0", "--no-progress"])
    assert rc == 2
    assert "pcg-ic0 runs on numpy only; use --backend numpy or --solver pcg-jacobi" in \
        _error_line(err)


def test_matrix_rhs_formats(capsys, tmp_path, mtx):
    A, path = mtx
    b = np.arange(1.0, A.shape[0] + 1)
    ref = spla.spsolve(sp.csc_matrix(A), b)
    np.savetxt(tmp_path / "b.txt", b)
    scipy.io.mmwrite(str(tmp_path / "b.mtx"), b.reshape(-1, 1))
    for name in ("b.txt", "b.mtx"):
        out_file = tmp_path / f"x_{name}.npy"
        rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path),
                                   "--rhs", str(tmp_path / name), "--rtol", "1e-10",
                                   "--out", str(out_file), "--no-progress"])
        assert rc == 0, err
        assert np.linalg.norm(np.load(out_file) - ref) <= 1e-6 * np.linalg.norm(ref)


def test_matrix_not_square(capsys, tmp_path):
    path = tmp_path / "R.mtx"
    scipy.io.mmwrite(str(path), sp.random(4, 6, density=0.5, random_state=0, format="csr"))
    rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--no-progress"])
    assert rc == 2
    line = _error_line(err)
    assert "(4, 6)" in line and "not square" in line


def test_matrix_rhs_length_mismatch(capsys, tmp_path, mtx):
    _, path = mtx
    np.save(tmp_path / "b.npy", np.ones(7))
    rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path),
                               "--rhs", str(tmp_path / "b.npy"), "--no-progress"])
    assert rc == 2
    line = _error_line(err)
    assert "7 entries" in line and "30 x 30" in line


def test_matrix_file_errors(capsys, tmp_path, mtx):
    _, path = mtx
    (tmp_path / "A.csv").write_text("1,0\n0,1\n")
    (tmp_path / "bad.mtx").write_text("not a matrix market file\n")
    np.save(tmp_path / "b.npy", np.ones(30))
    cases = [
        (["--matrix", str(tmp_path / "A.csv")], [".mtx", ".npz", "unsupported"]),
        (["--matrix", str(tmp_path / "missing.mtx")], ["no such file"]),
        (["--matrix", str(tmp_path / "bad.mtx")], ["cannot read"]),
        (["--matrix", str(path), "--rhs", str(tmp_path / "b.csv")], [".npy", ".txt", "unsupported"]),
        (["--matrix", str(path), "--rhs", str(tmp_path / "nope.npy")], ["no such file"]),
        (["--matrix", str(path), "--out", str(tmp_path / "x.txt")], [".npy"]),
        (["--matrix", str(path), "--out", str(tmp_path / "no" / "dir" / "x.npy")],
         ["cannot write"]),
    ]
    for argv, words in cases:
        rc, _, err = _run(capsys, ["solve", "matrix", *argv, "--no-progress"])
        assert rc == 2, (argv, err)
        line = _error_line(err)
        for w in words:
            assert w in line, (argv, line)


def test_matrix_not_symmetric(capsys, tmp_path):
    path = tmp_path / "N.npz"
    sp.save_npz(path, sp.csr_matrix(np.array([[2.0, 1.0], [0.0, 2.0]])))
    rc, _, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--no-progress"])
    assert rc == 2
    assert "not symmetric" in _error_line(err)


def test_matrix_not_converged_exits_1(capsys, mtx):
    _, path = mtx
    rc, out, err = _run(capsys, ["solve", "matrix", "--matrix", str(path), "--maxiter", "1",
                                 "--no-progress"])
    assert rc == 1
    assert "MAX_ITER" in out and "not converged: MAX_ITER" in err
    assert "Traceback" not in err


# -- help ----------------------------------------------------------------------------------

def _solve_subparsers():
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    solve = top.choices["solve"]
    sub = next(a for a in solve._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("problem", ["poisson", "matrix"])
def test_every_option_has_help(capsys, problem):
    sub = _solve_subparsers()[problem]
    for action in sub._actions:
        assert action.help and action.help.strip(), action.option_strings
    rc, out, _ = _run(capsys, ["solve", problem, "--help"])
    assert rc == 0
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in out
    assert "exit status" in out and "did not converge" in out
    assert "(default: 1e-06)" in out and "(default: auto)" in out


def test_solve_help_lists_exit_statuses(capsys):
    rc, out, _ = _run(capsys, ["solve", "--help"])
    assert rc == 0
    assert "exit status" in out and "matrix" in out and "poisson" in out
