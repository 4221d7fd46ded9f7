"""CG, PCG and the flexible conjugate-direction method against scipy and closed forms."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import neurosolve as ns
from neurosolve.problems import LinearSystem, Nullspace
from neurosolve.solvers import CG


def laplace2d(n, shift=0.0):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    I = sp.identity(n)
    return (sp.kron(T, I) + sp.kron(I, T) + shift * sp.identity(n * n)).tocsr()


def scipy_iterates(A, b, **kw):
    xs = []
    x, info = spla.cg(A, b, callback=lambda xk: xs.append(xk.copy()), **kw)
    return xs, x, info


def our_iterates(problem, solver, backend, x0=None):
    xs = []
    res = ns.solve(problem, solver, x0, backend=backend.name,
                   callback=lambda v: xs.append(backend.to_numpy(v.x).copy()) if v.k > 0 else None)
    return xs, res


@pytest.fixture
def system(rng):
    A = laplace2d(12, shift=0.05)
    b = rng.standard_normal(A.shape[0])
    return A, b


def _system_for(backend, A, b):
    if backend.library == "torch":
        return LinearSystem(backend.asarray(A.toarray()), backend.asarray(b))
    return LinearSystem(A, b)


def test_cg_iterates_equal_scipy(backend, system):
    A, b = system
    ref, xref, info = scipy_iterates(A, b, rtol=1e-8)
    assert info == 0
    xs, res = our_iterates(_system_for(backend, A, b), CG(rtol=1e-8), backend)
    assert res.status is ns.Status.CONVERGED
    assert res.n_iter == len(ref)
    for ours, theirs in zip(xs, ref):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert res.stats["backend"] == backend.name


def test_pcg_iterates_equal_scipy_with_same_linear_M(backend, system):
    A, b = system
    d = A.diagonal() * (1.0 + 0.3 * np.cos(np.arange(A.shape[0])))  # SPD, not a scaled identity
    Minv = sp.diags(1.0 / d).tocsr()
    ref, _, info = scipy_iterates(A, b, rtol=1e-8, M=Minv)
    M = backend.asarray(Minv.toarray()) if backend.library == "torch" else Minv
    xs, res = our_iterates(_system_for(backend, A, b), CG(rtol=1e-8, M=M), backend)
    assert res.n_iter == len(ref)
    for ours, theirs in zip(xs, ref):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_pcg_with_scipy_linear_operator_and_x0(system, rng):
    A, b = system
    Mop = spla.LinearOperator(A.shape, matvec=lambda v: v / A.diagonal(), dtype=float)
    x0 = rng.standard_normal(A.shape[0])
    ref, _, _ = scipy_iterates(A, b, x0=x0, rtol=1e-9, M=Mop)
    res = ns.cg(A, b, x0, rtol=1e-9, M=Mop)
    assert res.n_iter == len(ref)
    np.testing.assert_allclose(res.x, ref[-1], rtol=1e-10, atol=1e-12)


def test_flexible_identity_reproduces_cg(system):
    A, b = system
    ref, _, _ = scipy_iterates(A, b, rtol=1e-8)
    xs, res = our_iterates(LinearSystem(A, b), CG(rtol=1e-8, M=lambda r: 2.5 * r), _Numpy())
    assert len(res.state.kept) > 0  # the flexible loop ran (PCG keeps no directions)
    assert abs(res.n_iter - len(ref)) <= 1
    np.testing.assert_allclose(res.x, ref[-1], rtol=1e-8, atol=1e-10)


def test_flexible_linear_M_reproduces_pcg(system):
    A, b = system
    dinv = 1.0 / A.diagonal()
    ref, _, _ = scipy_iterates(A, b, rtol=1e-8, M=sp.diags(dinv))
    res = ns.cg(A, b, rtol=1e-8, M=lambda r: dinv * r)  # nonlinear by default -> flexible
    assert len(res.state.kept) > 0 and res.success
    assert abs(res.n_iter - len(ref)) <= 1
    np.testing.assert_allclose(res.x, ref[-1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("c", [1.0, -0.37, 12.5])
def test_flexible_exact_inverse_converges_in_one_step(system, c):
    A, b = system
    lu = spla.splu(A.tocsc())
    res = ns.cg(A, b, rtol=1e-10, M=lambda r: c * lu.solve(r))
    assert res.success and res.n_iter == 1
    assert res.certificate["relative_residual"] < 1e-12


def test_flexible_kept_directions_are_A_orthogonal(system):
    A, b = system
    rng = np.random.default_rng(1)
    W = rng.standard_normal((A.shape[0], A.shape[0])) * 0.05

    def nonlinear(r):  # a genuinely nonlinear map
        return np.tanh(W @ r) + r

    cos = []

    def cb(view):
        kept = list(view.state.kept) if view.k > 0 else []
        for i in range(len(kept)):
            for j in range(i):
                di, wi, _ = kept[i]
                dj, wj, _ = kept[j]
                cos.append(abs(di @ wj) / np.sqrt((di @ wi) * (dj @ wj)))

    res = ns.cg(A, b, rtol=1e-8, M=nonlinear, truncate=2, callback=cb)
    assert res.success
    assert len(cos) > 10 and max(cos) <= 1e-10


def test_flexible_A_norm_error_is_monotone(system):
    A, b = system
    xstar = spla.spsolve(A.tocsc(), b)
    errs = []
    ns.cg(A, b, rtol=1e-8, M=lambda r: np.sign(r) * np.abs(r) ** 0.8,
          callback=lambda v: errs.append(float((v.x - xstar) @ (A @ (v.x - xstar)))))
    assert all(e2 <= e1 * (1 + 1e-12) for e1, e2 in zip(errs, errs[1:]))


def test_certificate_is_true_residual(system):
    A, b = system
    res = ns.cg(A, b, rtol=1e-6)
    true = np.linalg.norm(b - A @ res.x) / np.linalg.norm(b)
    assert res.certificate["relative_residual"] == pytest.approx(true, rel=1e-12)
    assert true < 1e-6


def test_b_zero_returns_x0_in_zero_iterations():
    A = laplace2d(5)
    res = ns.cg(A, np.zeros(25))
    assert res.success and res.n_iter == 0 and not res.x.any()


def test_neumann_compatible_converges_incompatible_reports_infeasible():
    n = 10
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)).tolil()
    T[0, 0] = T[-1, -1] = 1.0
    A = (sp.kron(T, sp.identity(n)) + sp.kron(sp.identity(n), T)).tocsr()
    ns_ = Nullspace(labels=np.zeros(n * n, dtype=int))
    rng = np.random.default_rng(0)
    b = rng.standard_normal(n * n)
    b -= b.mean()
    res = ns.solve(LinearSystem(A, b, nullspace=ns_), CG(rtol=1e-8))
    assert res.success and abs(res.x.mean()) < 1e-12
    assert res.certificate["relative_residual"] < 1e-8
    bad = b + 0.3
    res = ns.solve(LinearSystem(A, bad, nullspace=ns_), CG(rtol=1e-8))
    assert res.status is ns.Status.INFEASIBLE
    assert "incompatible" in res.message
    assert np.all(np.isfinite(res.x))
    res = ns.solve(LinearSystem(A, bad, nullspace=ns_, project_b=True), CG(rtol=1e-8))
    assert res.success


def test_preconditioner_returning_nan_gives_nonfinite(system):
    A, b = system
    Mnan = spla.LinearOperator(A.shape, matvec=lambda v: np.full_like(v, np.nan), dtype=float)
    res = ns.cg(A, b, M=Mnan)
    assert res.status is ns.Status.NONFINITE
    assert "preconditioner" in res.message


def test_flexible_network_nan_falls_back(system):
    A, b = system
    calls = {"n": 0}

    def flaky(r):
        calls["n"] += 1
        return np.full_like(r, np.nan) if calls["n"] % 3 == 0 else r

    res = ns.cg(A, b, rtol=1e-8, M=flaky)
    assert res.success and res.stats["fallbacks"] >= 1


def test_indefinite_matrix_reports_breakdown():
    A = sp.diags([1.0, -1.0, 2.0, 3.0]).tocsr()
    res = ns.cg(A, np.ones(4))
    assert res.status in (ns.Status.BREAKDOWN, ns.Status.CONVERGED)
    if res.status is ns.Status.BREAKDOWN:
        assert "positive definite" in res.message or "curvature" in res.message


def test_max_iter_status_and_warm_start(system):
    A, b = system
    res = ns.cg(A, b, rtol=1e-10, maxiter=5)
    assert res.status is ns.Status.MAX_ITER and res.n_iter == 5
    full = ns.cg(A, b, rtol=1e-10)
    res2 = ns.solve(LinearSystem(A, b), CG(rtol=1e-10), init=res.state)
    assert res2.success and res2.certificate["relative_residual"] <= 1e-10
    # resuming restarts CG from the true residual at x_5: close to the uninterrupted run
    assert res2.n_iter + 5 <= 1.1 * full.n_iter + 2
    assert res2.stats["matvecs"] == res2.n_iter + 1  # one SpMV for the true residual
    np.testing.assert_allclose(res2.x, full.x, rtol=1e-7, atol=1e-9)


def test_compat_cg_matches_scipy_signature(system):
    A, b = system
    seen = []
    x, info = ns.compat.cg(A, b, rtol=1e-8, callback=lambda xk: seen.append(1))
    xs, xr, info_r = scipy_iterates(A, b, rtol=1e-8)
    assert info == info_r == 0 and len(seen) == len(xs)
    np.testing.assert_allclose(x, xr, rtol=1e-10)
    x, info = ns.compat.cg(A, b, rtol=1e-12, maxiter=3)
    assert info == 3


def test_throw_raises_solve_error(system):
    A, b = system
    with pytest.raises(ns.SolveError, match="MAX_ITER"):
        ns.solve(LinearSystem(A, b), CG(maxiter=2, rtol=1e-12), throw=True)


class _Numpy:
    name = "numpy"
    library = "numpy"

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)
