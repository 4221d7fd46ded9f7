"""Packaging facts: a light import, the public names, the console command."""

import subprocess
import sys

import pytest


def test_import_is_light():
    code = ("import sys, neurosolve; heavy = [m for m in ('torch', 'cvxpy', 'pyamg', 'numba', "
            "'sklearn', 'matplotlib') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", ["solve", "Result", "Status", "cg", "compat", "problems",
                                  "solvers", "operators", "SolveError"])
def test_public_names(name):
    import neurosolve

    assert getattr(neurosolve, name) is not None


def test_stable_foundation_names():
    import neurosolve
    from neurosolve.operators import aslinearoperator
    from neurosolve.problems import LinearSystem
    from neurosolve.solvers import CG

    assert callable(neurosolve.compat.cg) and callable(aslinearoperator)
    assert LinearSystem.__name__ == "LinearSystem" and CG.__name__ == "CG"


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "neurosolve.cli", "--help"],
                         capture_output=True, text=True, check=True)
    for cmd in ("demo", "solve", "train", "bench"):
        assert cmd in out.stdout
