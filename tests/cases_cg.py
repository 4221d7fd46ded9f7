"""Contract cases for the Krylov family."""

import numpy as np
import scipy.sparse as sp

from contract import ContractCase
from neurosolve.problems import LinearSystem
from neurosolve.solvers import CG


def _system(torch_=False):
    n = 15
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    A = (sp.kron(T, sp.identity(n)) + sp.kron(sp.identity(n), T)).tocsr()
    b = np.random.default_rng(0).standard_normal(n * n)
    if torch_:
        import torch

        return LinearSystem(torch.as_tensor(A.toarray()), torch.as_tensor(b))
    return LinearSystem(A, b)


CASES = [
    ContractCase("cg-numpy", _system, lambda: CG(rtol=1e-8), "relative_residual", 1e-8, "numpy"),
    ContractCase("cg-numba", _system, lambda: CG(rtol=1e-8), "relative_residual", 1e-8, "numba"),
    ContractCase("cg-torch", lambda: _system(True), lambda: CG(rtol=1e-8), "relative_residual",
                 1e-8, "torch"),
    ContractCase("flexible-cg", _system,
                 lambda: CG(rtol=1e-8, M=lambda r: r / (1.0 + 0.1 * np.abs(r))),
                 "relative_residual", 1e-8, "numpy"),
]
