"""Bad input gets a clear error naming the argument (issue 2's list)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import neurosolve as ns
from neurosolve.operators import aslinearoperator
from neurosolve.problems import LinearSystem
from neurosolve.solvers import CG


def spd(n=6):
    rng = np.random.default_rng(0)
    B = rng.standard_normal((n, n))
    return B @ B.T + n * np.eye(n)


def test_non_square_A():
    with pytest.raises(ValueError, match="A must be square"):
        LinearSystem(np.ones((3, 4)), np.ones(3))


def test_shape_mismatch_b():
    with pytest.raises(ValueError, match="b has length 5 but A has shape"):
        LinearSystem(spd(6), np.ones(5))


def test_b_not_vector():
    with pytest.raises(ValueError, match="b must be a 1-D vector"):
        LinearSystem(spd(4), np.ones((4, 1)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_A_and_b(bad):
    A = spd(4)
    A[1, 2] = A[2, 1] = bad
    with pytest.raises(ValueError, match="A contains NaN or inf"):
        LinearSystem(A, np.ones(4))
    with pytest.raises(ValueError, match="A contains NaN or inf"):
        LinearSystem(sp.csr_matrix(A), np.ones(4))
    b = np.ones(4)
    b[0] = bad
    with pytest.raises(ValueError, match="b contains NaN or inf"):
        LinearSystem(spd(4), b)


def test_nonsymmetric_matrix_passed_as_spd():
    A = spd(5)
    A[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        LinearSystem(A, np.ones(5))
    LinearSystem(A, np.ones(5), spd=False)  # allowed when not claimed SPD


def test_nonsymmetric_preconditioner():
    M = np.eye(5)
    M[0, 1] = 0.5
    with pytest.raises(ValueError, match="M must be symmetric positive definite"):
        ns.cg(spd(5), np.ones(5), M=M)


def test_module_without_adapter():
    net = torch.nn.Linear(5, 5)
    with pytest.raises(TypeError, match="TorchPreconditioner"):
        aslinearoperator(net)
    with pytest.raises(TypeError, match="TorchPreconditioner"):
        ns.cg(spd(5), np.ones(5), M=net)


def test_mixed_numpy_torch():
    with pytest.raises(TypeError, match="mix array libraries"):
        LinearSystem(spd(4), torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="mix array libraries"):
        LinearSystem(torch.as_tensor(spd(4)), np.ones(4))
    prob = LinearSystem(spd(4), np.ones(4))
    with pytest.raises(TypeError, match="x0 is a torch array"):
        ns.solve(prob, CG(), torch.zeros(4, dtype=torch.float64))


def test_impossible_backend_choices():
    prob = LinearSystem(torch.as_tensor(spd(4)), torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="cannot run on torch tensors"):
        ns.solve(prob, CG(), backend="numba")
    with pytest.raises(TypeError, match="needs torch tensors"):
        ns.solve(LinearSystem(spd(4), np.ones(4)), CG(), backend="torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        ns.solve(LinearSystem(spd(4), np.ones(4)), CG(), backend="jax")


def test_x0_shape_and_solver_options():
    prob = LinearSystem(spd(4), np.ones(4))
    with pytest.raises(ValueError, match="x0 has shape"):
        ns.solve(prob, CG(), np.zeros(3))
    with pytest.raises(ValueError, match="rtol must be"):
        CG(rtol=-1.0)
    with pytest.raises(ValueError, match="maxiter must be"):
        CG(maxiter=-3)
    with pytest.raises(ValueError, match="truncate must be"):
        CG(truncate=-1)
    with pytest.raises(ValueError, match="check_every must be"):
        ns.solve(prob, CG(), check_every=0)


def test_wrong_problem_type_names_accepted_types():
    with pytest.raises(TypeError, match="CG solves LinearSystem problems"):
        ns.solve(object(), CG())


def test_nonlinear_M_forbidden_in_pcg_mode():
    with pytest.raises(ValueError, match="PCG needs a linear M"):
        ns.cg(spd(4), np.ones(4), M=lambda r: r, flexible=False)


def test_M_shape_mismatch():
    with pytest.raises(ValueError, match="M has shape"):
        ns.cg(spd(4), np.ones(4), M=np.eye(3))
