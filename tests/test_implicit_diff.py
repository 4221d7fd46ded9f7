"""Implicit adjoints through solve(..., adjoint="implicit"): the gradients against closed
forms, torch.autograd.gradcheck (finite differences), dense inverses and unrolled
autograd; the refusals (unconverged forward or adjoint, double backward, unsupported
problems)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

import neurosolve as ns  # noqa: E402
from neurosolve.adjoint import Implicit, ImplicitDiffError  # noqa: E402
from neurosolve.problems import FixedPointProblem, LinearSystem, Minimize, Nullspace  # noqa: E402
from neurosolve.solvers import CG, FixedPoint, GNSNewton  # noqa: E402

D = torch.float64


def spd(n, seed=0, shift=None):
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(n, n, dtype=D, generator=g)
    return Q @ Q.T + (n if shift is None else shift) * torch.eye(n, dtype=D)


def rand(n, seed=1):
    return torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(seed))


def lin_solve(A, b, rtol=1e-13, **kw):
    return ns.solve(LinearSystem(A, b), CG(rtol=rtol, **kw), adjoint="implicit").x


# -- LinearSystem ---------------------------------------------------------------------

def test_gradcheck_dense_b_and_symmetric_A():
    n = 5
    S = (spd(n) / n).requires_grad_(True)
    b = rand(n).requires_grad_(True)

    def f(S, b):
        A = 0.5 * (S + S.T) + torch.eye(n, dtype=D)  # a symmetric parameterization
        return lin_solve(A, b)

    assert torch.autograd.gradcheck(f, (S, b), eps=1e-6, atol=1e-7)


def test_closed_forms_b_and_A():
    n = 7
    A = spd(n).requires_grad_(True)
    b = rand(n).requires_grad_(True)
    w = rand(n, seed=3)
    x = lin_solve(A, b)
    (x @ w).backward()
    lam = torch.linalg.solve(A.detach(), w)
    xs = torch.linalg.solve(A.detach(), b.detach())
    assert torch.allclose(b.grad, lam, rtol=1e-10, atol=1e-12)
    assert torch.allclose(A.grad, -torch.outer(lam, xs), rtol=1e-9, atol=1e-12)


def test_default_adjoint_records_no_graph():
    A = spd(4)
    b = rand(4).requires_grad_(True)
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12))
    assert res.x.grad_fn is None and not res.x.requires_grad


def _csr(dense):
    C = sp.csr_matrix(dense.detach().numpy())
    return (torch.as_tensor(C.indptr, dtype=torch.int64),
            torch.as_tensor(C.indices, dtype=torch.int64), C)


def test_csr_gradient_on_the_stored_pattern_only():
    n = 8
    dense = sp.diags([-1.0, 3.0, -1.0], [-1, 0, 1], shape=(n, n)).toarray()
    # store an explicit zero at (0, 3) and (3, 0): the pattern, not the values, decides
    pattern = dense.copy()
    pattern[0, 3] = pattern[3, 0] = 1.0
    C = sp.csr_matrix(pattern)
    C.data[:] = dense[pattern != 0]  # row-major order, as CSR stores its entries
    crow = torch.as_tensor(C.indptr, dtype=torch.int64)
    col = torch.as_tensor(C.indices, dtype=torch.int64)
    vals = torch.as_tensor(C.data, dtype=D)
    A = torch.sparse_csr_tensor(crow, col, vals, size=(n, n)).requires_grad_(True)
    b = rand(n).requires_grad_(True)
    w = rand(n, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = lin_solve(A, b)
        (x @ w).backward()
    G = A.grad
    assert G.layout == torch.sparse_csr
    assert torch.equal(G.crow_indices(), crow) and torch.equal(G.col_indices(), col)
    dense_t = torch.as_tensor(dense, dtype=D)
    lam = torch.linalg.solve(dense_t, w)
    xs = torch.linalg.solve(dense_t, b.detach())
    full = -torch.outer(lam, xs)
    rows = torch.repeat_interleave(torch.arange(n), crow.diff())
    assert torch.allclose(G.values(), full[rows, col], rtol=1e-9, atol=1e-12)
    # the stored zero at (0, 3) receives its gradient, which is not zero
    k = int(crow[0]) + int(torch.nonzero(col[crow[0]:crow[1]] == 3)[0])
    assert vals[k] == 0.0 and abs(float(G.values()[k])) > 1e-6


def test_csr_built_from_a_values_parameter():
    n = 6
    C = sp.csr_matrix(sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n)))
    vals = torch.as_tensor(C.data, dtype=D).requires_grad_(True)
    crow = torch.as_tensor(C.indptr, dtype=torch.int64)
    col = torch.as_tensor(C.indices, dtype=torch.int64)
    b = rand(n)
    w = rand(n, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A = torch.sparse_csr_tensor(crow, col, vals, size=(n, n))
        (lin_solve(A, b) @ w).backward()
    dense = torch.as_tensor(C.toarray(), dtype=D)
    lam, xs = torch.linalg.solve(dense, w), torch.linalg.solve(dense, b)
    rows = torch.repeat_interleave(torch.arange(n), crow.diff())
    assert torch.allclose(vals.grad, -lam[rows] * xs[col], rtol=1e-9, atol=1e-12)


def test_callable_operator_reaches_captured_tensors():
    n = 5
    d = (torch.rand(n, dtype=D, generator=torch.Generator().manual_seed(0)) + 1).requires_grad_()
    K = spd(n, seed=4)
    b = rand(n)
    res = ns.solve(LinearSystem(lambda v: K @ v + d * v, b), CG(rtol=1e-13),
                   adjoint="implicit")
    res.x.sum().backward()
    A = K + torch.diag(d.detach())
    lam, xs = torch.linalg.solve(A, torch.ones(n, dtype=D)), torch.linalg.solve(A, b)
    assert torch.allclose(d.grad, -lam * xs, rtol=1e-9, atol=1e-12)


def test_preconditioners_do_not_change_the_gradient():
    """Same gradient (relative 1e-8) with no M, Jacobi, IC(0), SSOR, AMG and GMG: M changes
    the iterates, not the root."""
    from neurosolve.problems import poisson
    from neurosolve.solvers import preconditioners as PC

    grid = poisson.sphere((16, 16), walls="dirichlet")
    b = poisson.rhs_noise(grid, seed=1)
    A = grid.matrix()
    w = np.linspace(0.0, 1.0, grid.n)
    grads = {}
    for name, M in [("none", None), ("jacobi", PC.Jacobi(A)), ("ic0", PC.IC0(A)),
                    ("ssor", PC.SSOR(A)), ("amg", PC.AMG(A)), ("gmg", PC.GMG(grid))]:
        prob = grid.system(b)
        solver = CG(M=M, rtol=1e-12)
        res = ns.solve(prob, solver)
        grads[name] = ns.adjoint.linear_vjp(prob, res, w, solver=solver)
    ref = grads["none"]
    for name, d in grads.items():
        assert np.linalg.norm(d["b"] - ref["b"]) <= 1e-8 * np.linalg.norm(ref["b"]), name
        assert abs(d["A"] - ref["A"]).max() <= 1e-8 * abs(ref["A"]).max(), name
        assert d["A"].nnz == A.nnz
    # the torch path agrees with the numpy one; the gradient vanishes off the fluid cells
    bt = torch.as_tensor(b)
    prob = grid.system(bt.clone())
    prob.b.requires_grad_(True)
    res = ns.solve(prob, CG(rtol=1e-12, M=PC.Jacobi(prob.A.matrix)), adjoint="implicit")
    (res.x * torch.as_tensor(w)).sum().backward()
    gb = prob.b.grad.numpy()
    assert np.linalg.norm(gb - ref["b"]) <= 1e-8 * np.linalg.norm(ref["b"])
    assert np.all(gb[~grid.fluid.reshape(-1)] == 0.0)


def test_dropped_preconditioner_is_caught():
    """The transpose-solve guard: an ill-conditioned system whose exact-inverse M makes
    the adjoint converge in 1 iteration; with M dropped the capped adjoint fails loudly."""
    n = 40
    d = torch.logspace(0, 6, n, dtype=D)
    A = torch.diag(d)
    b = rand(n).requires_grad_(True)
    Minv = lambda r: r / d  # noqa: E731
    cfg = Implicit(max_iter=3)
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12, M=Minv), adjoint=cfg)
    res.x.sum().backward()
    assert torch.allclose(b.grad, 1 / d, rtol=1e-10)
    assert res.stats["adjoint"]["n_iter"] <= 3
    b.grad = None
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12, M=Minv),
                   adjoint=Implicit(max_iter=3, solver=CG(rtol=1e-12, maxiter=3)))
    with pytest.raises(ImplicitDiffError, match="MAX_ITER"):
        res.x.sum().backward()


def test_agreement_with_unrolled_cg():
    n = 6
    A0, b0 = spd(n), rand(n)
    grads = {}
    for mode in ("implicit", "unrolled"):
        A = A0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        x = ns.solve(LinearSystem(A, b), CG(rtol=1e-14), adjoint=mode).x
        gA, gb = torch.autograd.grad((x ** 2).sum(), (A, b))
        grads[mode] = (gA + gA.T, gb)  # CG sees only symmetric changes of A
    assert torch.allclose(grads["implicit"][1], grads["unrolled"][1], atol=1e-8)
    assert torch.allclose(grads["implicit"][0], grads["unrolled"][0], atol=1e-8)


def test_neumann_nullspace_gradient():
    """Graph Laplacian of a path (singular, constants in the null space): the b-gradient
    sums to zero and equals pinv(A) g projected; the edge-weight gradient matches central
    differences (perturbations that keep the null space)."""
    n = 8
    wts = (torch.linspace(1.0, 2.0, n - 1, dtype=D)).requires_grad_(True)
    b = rand(n)
    b = b - b.mean()
    g = rand(n, seed=7)

    def laplacian(w):
        L = torch.zeros(n, n, dtype=D)
        i = torch.arange(n - 1)
        L = L.index_put((i, i), w, accumulate=True).index_put((i + 1, i + 1), w, accumulate=True)
        return L.index_put((i, i + 1), -w, accumulate=True).index_put((i + 1, i), -w,
                                                                     accumulate=True)

    def solve(w, bb):
        prob = LinearSystem(laplacian(w), bb, nullspace=Nullspace(labels=np.zeros(n, int)))
        return ns.solve(prob, CG(rtol=1e-13), adjoint="implicit").x

    bv = b.clone().requires_grad_(True)
    x = solve(wts, bv)
    (x @ g).backward()
    assert abs(float(bv.grad.sum())) < 1e-10
    P = torch.eye(n, dtype=D) - 1.0 / n
    ref = torch.linalg.pinv(laplacian(wts.detach())) @ (P @ g)
    assert torch.allclose(bv.grad, ref, atol=1e-9)
    # edge weights: central differences of g^T x(w)
    h = 1e-6
    for k in range(n - 1):
        e = torch.zeros(n - 1, dtype=D)
        e[k] = h
        with torch.no_grad():
            fd = (solve(wts.detach() + e, b) @ g - solve(wts.detach() - e, b) @ g) / (2 * h)
        assert abs(float(wts.grad[k]) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_unconverged_forward_refuses_backward():
    A, b = spd(30, shift=0.01), rand(30).requires_grad_(True)
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12, maxiter=2), adjoint="implicit")
    assert res.status is ns.Status.MAX_ITER
    with pytest.raises(ImplicitDiffError, match="MAX_ITER"):
        res.x.sum().backward()
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12, maxiter=2),
                   adjoint=Implicit(on_unconverged="warn"))
    with pytest.warns(RuntimeWarning, match="MAX_ITER"):
        res.x.sum().backward()
    assert b.grad is not None and res.stats["adjoint"]["exact"] is False


def test_unconverged_adjoint_raises_with_the_report():
    A, b = spd(30, shift=0.01), rand(30).requires_grad_(True)
    res = ns.solve(LinearSystem(A, b), CG(rtol=1e-12), adjoint=Implicit(max_iter=1))
    with pytest.raises(ImplicitDiffError, match="adjoint solve") as info:
        res.x.sum().backward()
    assert info.value.report["n_iter"] == 1
    assert info.value.report["relative_residual"] > 1e-12


def test_double_backward_is_refused_first_order_grad_works():
    A, b = spd(4), rand(4).requires_grad_(True)
    x = lin_solve(A, b)
    (g,) = torch.autograd.grad(x.sum(), b)
    assert torch.allclose(g, torch.linalg.solve(A, torch.ones(4, dtype=D)))
    x = lin_solve(A, b)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        torch.autograd.grad(x.sum(), b, create_graph=True)


def test_float32_close_to_float64():
    A64, b64 = spd(10), rand(10)
    out = {}
    for dt in (torch.float32, torch.float64):
        b = b64.to(dt).requires_grad_(True)
        x = ns.solve(LinearSystem(A64.to(dt), b), CG(rtol=1e-6 if dt == torch.float32 else 1e-12),
                     adjoint="implicit").x
        assert x.dtype == dt
        x.sum().backward()
        out[dt] = b.grad.to(D)
    assert torch.allclose(out[torch.float32], out[torch.float64], rtol=1e-3, atol=1e-5)


def test_bad_arguments_are_refused_before_any_work():
    A, b = spd(3), rand(3)
    with pytest.raises(ValueError, match="adjoint must be"):
        ns.solve(LinearSystem(A, b), CG(), adjoint="forward")
    with pytest.raises(TypeError, match="numpy"):
        ns.solve(LinearSystem(A.numpy(), b.numpy()), CG(), adjoint="implicit")
    with pytest.raises(ValueError, match="rtol"):
        Implicit(rtol=2.0)
    with pytest.raises(ValueError, match="on_unconverged"):
        Implicit(on_unconverged="ignore")


def test_bilevel_and_unsupported_problems_are_refused():
    from neurosolve.problems import bilevel_gallery as bg

    with pytest.raises(NotImplementedError, match="Bilevel"):
        ns.solve(bg.toy_a(4), adjoint="implicit")

    class Other:
        pass

    from neurosolve.adjoint.rules import rule_for

    with pytest.raises(NotImplementedError, match="implicit_root"):
        rule_for(Other(), None, Implicit())


# -- Minimize -------------------------------------------------------------------------

def _ridge(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=D, generator=g), torch.randn(n, dtype=D, generator=g)


def ridge_solve(X, y, alpha):
    f = lambda w: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * alpha * (w @ w)  # noqa: E731
    prob = Minimize(f, x0=torch.zeros(X.shape[1], dtype=D))
    return ns.solve(prob, GNSNewton(gtol=1e-12), adjoint="implicit")


def test_ridge_closed_form_dw_dalpha():
    X, y = _ridge()
    alpha = torch.tensor(0.7, dtype=D, requires_grad=True)
    res = ridge_solve(X, y, alpha)
    w = res.x
    J = torch.stack([torch.autograd.grad(w[i], alpha, retain_graph=True)[0]
                     for i in range(w.numel())])
    H = X.T @ X + 0.7 * torch.eye(X.shape[1], dtype=D)
    assert torch.allclose(J, -torch.linalg.solve(H, w.detach()), rtol=1e-8, atol=1e-12)
    assert res.adjoint_report()["solver"] == "CG"
    assert res.adjoint_report()["status"] is ns.Status.CONVERGED


def test_ridge_gradcheck_X_y():
    X, y = _ridge(n=12, d=3)
    X.requires_grad_(True)
    y.requires_grad_(True)
    alpha = torch.tensor(0.5, dtype=D)
    assert torch.autograd.gradcheck(lambda X, y: ridge_solve(X, y, alpha).x, (X, y),
                                    eps=1e-6, atol=1e-6)


def test_minimize_agrees_with_the_reference_hypergradient():
    """Logistic regression: d w*/d mu from the adjoint vs a dense IFT with torch's Hessian."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, dtype=D, generator=g)
    t = (torch.rand(50, generator=g, dtype=D) < 0.5).to(D)
    mu = torch.tensor(0.3, dtype=D, requires_grad=True)

    def f(w, mu=mu):
        z = X @ w
        return (torch.nn.functional.softplus(z) - t * z).mean() + 0.5 * mu * (w @ w)

    res = ns.solve(Minimize(f, x0=torch.zeros(4, dtype=D)), GNSNewton(gtol=1e-12),
                   adjoint="implicit")
    v = rand(4, seed=9)
    (gmu,) = torch.autograd.grad(res.x @ v, mu)
    w = res.x.detach()
    H = torch.autograd.functional.hessian(lambda w: f(w, mu.detach()), w)
    ref = -(v @ torch.linalg.solve(H, w))  # d grad/d mu = w
    assert abs(float(gmu) - float(ref)) <= 1e-8 * abs(float(ref))


def test_minimize_with_numpy_oracles_is_refused():
    prob = Minimize(lambda x: float(x @ x), lambda x: 2 * x, np.ones(3))
    with pytest.raises(TypeError, match="torch"):
        ns.solve(prob, GNSNewton(), adjoint="implicit")


# -- FixedPointProblem ----------------------------------------------------------------

def _contraction(d=5, seed=0, norm=0.5):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, dtype=D, generator=g)
    W = norm * W / torch.linalg.matrix_norm(W, 2)
    return W, torch.randn(d, dtype=D, generator=g), torch.randn(d, d, dtype=D, generator=g)


@pytest.mark.parametrize("method", ["damped", "anderson"])
def test_fixed_point_gradcheck(method):
    W, c, U = _contraction()
    u_in = rand(5, seed=4)

    def f(W, U, c, u_in):
        prob = FixedPointProblem(lambda z: torch.tanh(W @ z + U @ u_in + c),
                                 torch.zeros(5, dtype=D))
        return ns.solve(prob, FixedPoint(method=method, atol=1e-14, rtol=0.0),
                        adjoint="implicit").x

    args = tuple(a.clone().requires_grad_(True) for a in (W, U, c, u_in))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def test_fixed_point_matches_dense_adjoint_and_unrolled_damped():
    W0, c, _ = _contraction(seed=2)
    out = {}
    for mode in ("implicit", "unrolled"):
        W = W0.clone().requires_grad_(True)
        prob = FixedPointProblem(lambda z: torch.tanh(W @ z + c), torch.zeros(5, dtype=D))
        z = ns.solve(prob, FixedPoint(atol=1e-14, rtol=0.0), adjoint=mode).x
        (out[mode],) = torch.autograd.grad(z.sum(), W)
    zs = z.detach()
    d = 1 - torch.tanh(W0 @ zs + c) ** 2
    J = d[:, None] * W0
    u = torch.linalg.solve((torch.eye(5, dtype=D) - J).T, torch.ones(5, dtype=D))
    assert torch.allclose(out["implicit"], torch.outer(d * u, zs), atol=1e-11)
    assert torch.allclose(out["implicit"], out["unrolled"], atol=1e-8)


def test_affine_fixed_point_exact():
    W, c, _ = _contraction(seed=5)
    c = c.requires_grad_(True)
    prob = FixedPointProblem(lambda z: W @ z + c, torch.zeros(5, dtype=D))
    z = ns.solve(prob, FixedPoint(method="anderson", atol=1e-14, rtol=0.0),
                 adjoint="implicit").x
    I = torch.eye(5, dtype=D)
    assert torch.allclose(z.detach(), torch.linalg.solve(I - W, c.detach()), atol=1e-12)
    v = rand(5, seed=8)
    (z @ v).backward()
    assert torch.allclose(c.grad, torch.linalg.solve((I - W).T, v), atol=1e-11)


# -- implicit_root ----------------------------------------------------------------------

def test_implicit_root_cube_root():
    calls = []

    @ns.implicit_root(lambda x, th: x ** 3 - th)
    def newton(x0, th):
        calls.append(torch.is_grad_enabled())
        x = x0
        for _ in range(60):
            x = x - (x ** 3 - th) / (3 * x ** 2)
        return x

    th = torch.tensor([2.0, 8.0, 30.0], dtype=D, requires_grad=True)
    x0 = torch.ones(3, dtype=D, requires_grad=True)
    x = newton(x0, th)
    x.sum().backward()
    assert calls == [False]  # the user's iterations are not recorded
    assert torch.allclose(th.grad, 1 / (3 * x.detach() ** 2), rtol=1e-10)
    assert x0.grad is None


def test_implicit_root_symmetric_matches_gmres():
    A = spd(4)
    b = rand(4).requires_grad_(True)
    grads = []
    for symmetric in (True, False):
        x = ns.adjoint.attach(torch.linalg.solve(A, b.detach()), lambda x, b: A @ x - b, b,
                              symmetric=symmetric)
        (g,) = torch.autograd.grad(x.sum(), b)
        grads.append(g)
    ref = torch.linalg.solve(A, torch.ones(4, dtype=D))
    assert torch.allclose(grads[0], ref, atol=1e-9) and torch.allclose(grads[1], ref, atol=1e-9)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    A, b = spd(16), rand(16)
    out = []
    for dev in ("cpu", "cuda"):
        bb = b.to(dev).requires_grad_(True)
        x = ns.solve(LinearSystem(A.to(dev), bb), CG(rtol=1e-13), adjoint="implicit").x
        assert x.device.type == dev
        x.sum().backward()
        W, c, _ = _contraction()
        W = W.to(dev).requires_grad_(True)
        z = ns.solve(FixedPointProblem(lambda z: torch.tanh(W @ z + c.to(dev)),
                                       torch.zeros(5, dtype=D, device=dev)),
                     FixedPoint(atol=1e-14, rtol=0.0), adjoint="implicit").x
        (gW,) = torch.autograd.grad(z.sum(), W)
        out.append((bb.grad.cpu(), gW.cpu()))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-10)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-10)


def test_from_csr_values_gradient_matches_dense():
    n = 6
    C = sp.csr_matrix(sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n)))
    vals = torch.as_tensor(C.data, dtype=D).requires_grad_(True)
    b, w = rand(n), rand(n, seed=2)
    prob = LinearSystem.from_csr(C.indptr, C.indices, vals, b)
    assert not prob.A.matrix.requires_grad  # the solver iterates on detached values
    (ns.solve(prob, CG(rtol=1e-13), adjoint="implicit").x @ w).backward()
    dense = torch.as_tensor(C.toarray(), dtype=D)
    lam, xs = torch.linalg.solve(dense, w), torch.linalg.solve(dense, b)
    rows = np.repeat(np.arange(n), np.diff(C.indptr))
    assert torch.allclose(vals.grad, -lam[rows] * xs[C.indices], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="nnz"):
        LinearSystem.from_csr(C.indptr, C.indices[:-1], vals, b)


def test_complex_fixed_point_gradcheck():
    """A holomorphic map on a complex state (as the EP relaxations are): torch's
    conjugate-transpose VJP convention gives u = J^H u + g, checked by finite differences
    with respect to a real W and a complex c."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 4, dtype=D, generator=g)
    W = (0.4 * W / torch.linalg.matrix_norm(W, 2)).requires_grad_(True)
    c = torch.randn(4, dtype=torch.complex128, generator=g).requires_grad_(True)

    def f(W, c):
        prob = FixedPointProblem(lambda z: torch.tanh(W.to(z.dtype) @ z + c),
                                 torch.zeros(4, dtype=torch.complex128))
        z = ns.solve(prob, FixedPoint(atol=1e-14, rtol=0.0), adjoint="implicit").x
        return (z * z.conj()).real.sum() + z.real.sum()

    assert torch.autograd.gradcheck(f, (W, c), eps=1e-6, atol=1e-6)


def test_warm_start_reuses_the_previous_adjoint_and_keeps_the_gradient():
    g = torch.Generator().manual_seed(0)
    n = 120
    Q = torch.randn(n, n, dtype=torch.float64, generator=g)
    A0 = Q @ Q.T / n + 0.05 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, dtype=torch.float64, generator=g)

    def run(cfg, steps=3):
        out = []
        for step in range(steps):
            th = torch.tensor(1.0 + 0.01 * step, dtype=torch.float64, requires_grad=True)
            r = ns.solve(ns.problems.LinearSystem(A0 * th, b), ns.solvers.CG(rtol=1e-11),
                         adjoint=cfg)
            (gr,) = torch.autograd.grad((r.x ** 2).sum(), th)
            rep = r.adjoint_report()
            out.append((rep["n_iter"], rep["warm_start"], float(gr)))
        return out

    cold = run(ns.adjoint.Implicit(rtol=1e-11))
    warm = run(ns.adjoint.Implicit(rtol=1e-11, warm_start=True))
    assert [w for _, w, _ in cold] == [False] * 3
    assert [w for _, w, _ in warm] == [False, True, True]
    for (kc, _, gc), (kw, _, gw) in zip(cold[1:], warm[1:]):
        assert kw < kc
        assert gw == pytest.approx(gc, rel=1e-8)
    # a change of shape drops the cache instead of failing
    cfg = ns.adjoint.Implicit(warm_start=True)
    for m in (5, 6):
        bb = torch.ones(m, dtype=torch.float64, requires_grad=True)
        r = ns.solve(ns.problems.LinearSystem(torch.eye(m, dtype=torch.float64) * 2, bb),
                     ns.solvers.CG(rtol=1e-12), adjoint=cfg)
        r.x.sum().backward()
        assert r.adjoint_report()["warm_start"] is False
        assert torch.allclose(bb.grad, torch.full((m,), 0.5, dtype=torch.float64))
    with pytest.raises(TypeError, match="warm_start"):
        ns.adjoint.Implicit(warm_start="previous")
