"""Bad and adversarial inputs for the Krylov family (CG, PCG, flexible CG, DCDM, compat)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import neurosolve as ns
from neurosolve.problems import LinearSystem, poisson
from neurosolve.solvers import CG

rng = np.random.default_rng(0)
N = 30
_T = sp.diags([-1.0, 2.05, -1.0], [-1, 0, 1], shape=(N, N)).tocsr()
_b = rng.standard_normal(N)


def lap():
    return LinearSystem(_T, _b)


def true_rel(res, A, b):
    A = A.toarray() if sp.issparse(A) else np.asarray(A, dtype=float)
    x = np.asarray(res.x, dtype=float)
    return np.linalg.norm(b - A @ x) / np.linalg.norm(b)


def converged_truly(A, b, rtol):
    return lambda res: true_rel(res, A, b) <= rtol * (1 + 1e-9)


def _ill(n, cond, seed=0):
    r = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(r.standard_normal((n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    return (A + A.T) / 2, r.standard_normal(n)


A_ILL, B_ILL = _ill(60, 1e10)
D3 = np.diag([1.0, 1e-14, 1e14])


def _warm_foreign():
    r = ns.solve(lap(), CG(maxiter=3))
    return ns.solve(LinearSystem(_T.copy(), _b), CG(), init=r.state)


def _short_matvec_numba():
    n = 2_000_000
    b = np.ones(n)
    return ns.solve(LinearSystem(lambda x: x[:-1], b), CG(maxiter=2), backend="numba")


def _random_direction_M():
    g = np.random.default_rng(1)
    return ns.solve(lap(), CG(rtol=1e-8, M=lambda r: g.standard_normal(r.shape), maxiter=5000))


CASES = {
    # -- the problem: shapes, dtypes, values -----------------------------------------------
    "A-not-square": (lambda: LinearSystem(np.ones((3, 4)), np.ones(3)), (ValueError, "A must be square")),
    "b-wrong-length": (lambda: LinearSystem(np.eye(3), np.ones(4)), (ValueError, "b has length 4")),
    "b-2d": (lambda: LinearSystem(np.eye(3), np.ones((3, 1))), (ValueError, "b must be a 1-D")),
    "b-empty": (lambda: LinearSystem(np.eye(0), np.ones(0)), (ValueError, "b is empty")),
    "A-nan": (lambda: LinearSystem(np.diag([1.0, np.nan]), np.ones(2)), (ValueError, "A contains NaN")),
    "b-inf": (lambda: LinearSystem(np.eye(2), np.array([1.0, np.inf])), (ValueError, "b contains NaN")),
    "A-nonsymmetric": (lambda: LinearSystem(np.array([[2.0, 1.0], [0.0, 2.0]]), np.ones(2)),
                       (ValueError, "not symmetric")),
    "A-complex-not-hermitian": (lambda: LinearSystem(np.array([[2.0, 1j], [1j, 2.0]]), np.ones(2)),
                                (ValueError, "not symmetric")),
    "b-strings": (lambda: LinearSystem(np.eye(2), "ab"), (TypeError, "b must be a numpy array")),
    "A-string": (lambda: LinearSystem("A", np.ones(2)), (TypeError, "cannot interpret")),
    "A-object-array": (lambda: LinearSystem(np.array([[object()]]), np.ones(1)), (TypeError, "numeric")),
    "torch-dtype-mismatch": (lambda: LinearSystem(torch.eye(3, dtype=torch.float32),
                                                  torch.ones(3, dtype=torch.float64)),
                             (TypeError, "A has dtype torch.float32 but b has torch.float64")),
    "mixed-libraries": (lambda: LinearSystem(torch.eye(2, dtype=torch.float64), np.ones(2)),
                        (TypeError, "mix array libraries")),
    "nullspace-wrong-type": (lambda: LinearSystem(np.eye(2), np.ones(2), nullspace="x"),
                             (TypeError, "nullspace must be")),
    # -- the solver's configuration --------------------------------------------------------
    "rtol-nan": (lambda: CG(rtol=float("nan")), (ValueError, "rtol must be a finite")),
    "rtol-negative": (lambda: CG(rtol=-1e-3), (ValueError, "rtol must be a finite")),
    "rtol-one": (lambda: CG(rtol=1.0), (ValueError, "rtol must be below 1")),
    "rtol-string": (lambda: CG(rtol="1e-6"), (ValueError, "rtol must be a finite")),
    "atol-inf": (lambda: CG(atol=float("inf")), (ValueError, "atol must be a finite")),
    "maxiter-negative": (lambda: CG(maxiter=-1), (ValueError, "maxiter must be")),
    "maxiter-float": (lambda: CG(maxiter=2.5), (ValueError, "maxiter must be")),
    "maxiter-bool": (lambda: CG(maxiter=True), (ValueError, "maxiter must be")),
    "truncate-negative": (lambda: CG(truncate=-1), (ValueError, "truncate must be")),
    "rtol-reference": (lambda: CG(rtol_reference="x0"), (ValueError, "rtol_reference")),
    "recompute-negative": (lambda: CG(recompute_every=-2), (ValueError, "recompute_every")),
    "stall-window-zero": (lambda: CG(stall_window=0), (ValueError, "stall_window")),
    "stall-factor-one": (lambda: CG(stall_factor=1.0), (ValueError, "stall_factor")),
    "callback-not-callable": (lambda: CG(callback=3), (TypeError, "callback must be callable")),
    # -- solve()'s arguments ---------------------------------------------------------------
    "solver-not-a-solver": (lambda: ns.solve(lap(), "cg"), (TypeError, "solver must be")),
    "backend-cuda": (lambda: ns.solve(lap(), CG(), backend="cuda"), (ValueError, "backend must be")),
    "backend-torch-on-numpy": (lambda: ns.solve(lap(), CG(), backend="torch"),
                               (TypeError, "needs torch tensors")),
    "check-every-zero": (lambda: ns.solve(lap(), CG(), check_every=0), (ValueError, "check_every")),
    "record-every-float": (lambda: ns.solve(lap(), CG(), record_every=0.5), (ValueError, "record_every")),
    "x0-wrong-shape": (lambda: ns.solve(lap(), CG(), np.ones(N + 1)), (ValueError, "x0 has shape")),
    "x0-torch-on-numpy": (lambda: ns.solve(lap(), CG(), torch.ones(N, dtype=torch.float64)),
                          (TypeError, "x0 is a torch")),
    "init-not-a-state": (lambda: ns.solve(lap(), CG(), init={"x": 1}), (TypeError, "init must be")),
    "init-foreign-problem": (_warm_foreign, (ValueError, "different problem")),
    "wrong-problem-type": (lambda: ns.solve(object(), CG()), (TypeError, "CG solves LinearSystem")),
    # -- user callables --------------------------------------------------------------------
    "A-callable-short": (lambda: ns.solve(LinearSystem(lambda x: x[:-1], np.ones(5)), CG()),
                         (ValueError, r"A\(x\) returned shape \(4,\); expected \(5,\)")),
    "A-callable-list": (lambda: ns.solve(LinearSystem(lambda x: list(x), np.ones(5)), CG()),
                        (TypeError, r"A\(x\) returned a list")),
    "A-callable-complex": (lambda: ns.solve(LinearSystem(lambda x: x + 0j, np.ones(5)), CG()),
                           (TypeError, r"A\(x\) returned dtype complex")),
    "A-callable-int": (lambda: ns.solve(LinearSystem(lambda x: np.ones(5, dtype=int), np.ones(5)), CG()),
                       (TypeError, r"A\(x\) returned dtype int")),
    "A-callable-nan": (lambda: ns.solve(LinearSystem(lambda x: x * np.nan, np.ones(5)),
                                        CG(), np.ones(5)), (ValueError, r"A\(x\) returned NaN")),
    "A-callable-torch-on-numpy": (lambda: ns.solve(LinearSystem(lambda x: torch.as_tensor(x), np.ones(5)),
                                                   CG(), np.ones(5)),
                                  (TypeError, r"A\(x\) returned a Tensor")),
    "A-callable-short-2e6-numba": (_short_matvec_numba, (ValueError, r"A\(x\) returned shape")),
    "M-callable-short": (lambda: ns.solve(lap(), CG(M=lambda r: r[:-1])),
                         (ValueError, r"M\(x\) returned shape")),
    "M-matrix-wrong-shape": (lambda: ns.solve(lap(), CG(M=np.eye(N + 1))), (ValueError, "M has shape")),
    "M-matrix-nonsymmetric": (lambda: ns.solve(lap(), CG(M=np.triu(np.ones((N, N))))),
                              (ValueError, "M must be symmetric")),
    "M-nonlinear-with-pcg": (lambda: ns.solve(lap(), CG(M=lambda r: r ** 3, flexible=False)),
                             (ValueError, "M is nonlinear")),
    "M-torch-module": (lambda: ns.solve(lap(), CG(M=torch.nn.Identity())), (TypeError, "nn.Module")),
    # -- numerically hard or hopeless systems: a status, never a wrong CONVERGED -----------
    "indefinite": (lambda: ns.cg(np.diag([1.0, -2.0, 3.0]), np.ones(3), rtol=1e-10),
                   converged_truly(np.diag([1.0, -2.0, 3.0]), np.ones(3), 1e-10)),
    "zero-matrix": (lambda: ns.cg(np.zeros((3, 3)), np.ones(3)), "fail"),
    "cond-1e10": (lambda: ns.solve(LinearSystem(A_ILL, B_ILL), CG(rtol=1e-10, maxiter=20000)),
                  converged_truly(A_ILL, B_ILL, 1e-10)),
    "cond-1e10-numba": (lambda: ns.solve(LinearSystem(A_ILL, B_ILL), CG(rtol=1e-10, maxiter=20000),
                                         backend="numba"), converged_truly(A_ILL, B_ILL, 1e-10)),
    "diag-1e-14-1e14-numpy": (lambda: ns.cg(D3, np.ones(3), rtol=1e-12, backend="numpy"),
                              converged_truly(D3, np.ones(3), 1e-12)),
    "diag-1e-14-1e14-numba": (lambda: ns.cg(D3, np.ones(3), rtol=1e-12, backend="numba"),
                              converged_truly(D3, np.ones(3), 1e-12)),
    "rtol-zero": (lambda: ns.solve(lap(), CG(rtol=0.0, maxiter=60)), converged_truly(_T, _b, 0.0)),
    "maxiter-zero": (lambda: ns.solve(lap(), CG(maxiter=0)), "fail"),
    "random-direction-M-stalls": (_random_direction_M, "fail"),
    "M-returns-nan": (lambda: ns.solve(lap(), CG(M=sp.linalg.LinearOperator((N, N), matvec=lambda r: r * np.nan))),
                      "fail"),
    "incompatible-neumann": (lambda: ns.solve(poisson.box((8, 8), walls="neumann").system(np.ones(64)), CG()),
                             "fail"),
    "int-b-gives-float-answer": (lambda: ns.cg(np.diag([1.0, 2.0]), np.array([1, 2])),
                                 lambda r: r.x.dtype == np.float64 and np.allclose(r.x, [1.0, 1.0])),
    "bool-A": (lambda: ns.cg(np.eye(3, dtype=bool), np.ones(3)),
               lambda r: np.allclose(r.x, 1.0)),
    "float32-torch": (lambda: ns.solve(LinearSystem(torch.eye(4, dtype=torch.float32) * 2,
                                                    torch.ones(4, dtype=torch.float32)), CG(rtol=1e-5)),
                      lambda r: r.x.dtype == torch.float32 and torch.allclose(r.x, torch.full((4,), 0.5))),
    "b-zero": (lambda: ns.cg(np.eye(3), np.zeros(3)), lambda r: np.all(r.x == 0)),
    # -- gallery and DCDM ------------------------------------------------------------------
    "poisson-shape-4d": (lambda: poisson.box((4, 4, 4, 4)), (ValueError, "shape must be 2 or 3")),
    "poisson-shape-zero": (lambda: poisson.box((0, 4)), (ValueError, "shape must be 2 or 3")),
    "dcdm-grid-mismatch": (lambda: ns.solve(lap(), ns.solvers.DCDM(model=lambda r: r, grid=(5, 5))),
                           (ValueError, "grid")),
    "dcdm-M-given": (lambda: ns.solvers.DCDM(M=np.eye(2)), (ValueError, "model=")),
    "compat-maxiter-zero": (lambda: ns.compat.cg(np.diag([1.0, 2.0]), np.ones(2), maxiter=0)[1] > 0,
                            None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_linear(name, fuzz_judge):
    thunk, expect = CASES[name]
    if expect is None:  # a plain predicate
        assert thunk()
        return
    fuzz_judge(thunk, expect)
