"""``neurosolve.compat`` is a drop-in for scipy's ``cg`` and ``minimize``; scipy is the oracle.

The central test runs one scipy user's script twice, changing only its import line: once
with ``scipy.sparse.linalg.cg`` / ``scipy.optimize.minimize`` and once with
``neurosolve.compat``, and compares the answers.
"""

import warnings

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import OptimizeResult, rosen, rosen_der, rosen_hess

import neurosolve as ns
from neurosolve import compat
from neurosolve.solvers.hessian_approx import QuasiNewton

# -- one scipy user's script, run against both libraries -----------------------------------

SCIPY_IMPORTS = "from scipy.sparse.linalg import cg\nfrom scipy.optimize import minimize\n"
OUR_IMPORTS = "from neurosolve.compat import cg, minimize\n"

SCRIPT = '''
import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult, rosen, rosen_der, rosen_hess

n = 30
T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
A = (sp.kron(sp.eye(n), T) + sp.kron(T, sp.eye(n))).tocsr()
b = np.sin(np.arange(A.shape[0]) + 1.0)

residuals = []
x, info = cg(A, b, rtol=1e-10, callback=lambda xk: residuals.append(np.linalg.norm(b - A @ xk)))
assert info == 0
out["cg"] = (x, info, residuals)

Minv = sp.diags(1.0 / A.diagonal())
x, info = cg(A, b.reshape(-1, 1), x0=np.zeros_like(b), rtol=1e-8, atol=0.0, maxiter=1000, M=Minv)
out["pcg"] = (x, info)
x, info = cg(A, b, maxiter=5)
if info > 0:
    print(f"cg did not converge in {info} iterations")
out["cg_limit"] = (x, info)

x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])
seen = []
res = minimize(rosen, x0, jac=rosen_der, hess=rosen_hess, tol=1e-9,
               callback=lambda xk: seen.append(np.copy(xk)))
assert isinstance(res, OptimizeResult) and res.success, res.message
out["newton"] = res
out["newton_seen"] = len(seen)

def scaled(x, a):
    return a * rosen(x)

res = minimize(scaled, x0, args=(3.0,), jac=lambda x, a: a * rosen_der(x),
               hess=lambda x, a: a * rosen_hess(x), options={"gtol": 1e-9, "maxiter": 500})
out["args"] = res

def stop(intermediate_result):
    if intermediate_result.fun < 1.0:
        raise StopIteration

out["stopped"] = minimize(rosen, x0, jac=rosen_der, hess=rosen_hess, callback=stop)
out["limit"] = minimize(rosen, x0, jac=rosen_der, hess=rosen_hess, options={"maxiter": 3})
out["disp"] = minimize(rosen, x0, jac=rosen_der, hess=rosen_hess, options={"disp": True})

out["trust-exact"] = minimize(rosen, x0, method="trust-exact", jac=rosen_der, hess=rosen_hess)
out["BFGS"] = minimize(rosen, x0, method="BFGS", jac=rosen_der, options={"gtol": 1e-8})
out["L-BFGS-B"] = minimize(rosen, x0, method="L-BFGS-B", jac=rosen_der,
                           bounds=[(-2.0, 0.5)] * 5)
out["default"] = minimize(rosen, x0)
for key in ("newton", "args", "stopped", "limit", "trust-exact", "BFGS", "L-BFGS-B",
            "default"):
    r = out[key]
    out[key + "/fields"] = (r.x.shape, float(r.fun), r.jac.shape, int(r.nit), int(r.nfev),
                            int(r.status), bool(r.success), str(r.message))
'''


def run_script(imports: str) -> tuple[dict, str]:
    import contextlib
    import io

    env: dict = {"out": {}}
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        # scipy's BFGS (its default method) warns that it ignores hess=
        warnings.simplefilter("ignore", RuntimeWarning)
        exec(compile(imports + SCRIPT, "<scipy user script>", "exec"), env)
    return env["out"], buf.getvalue()


@pytest.fixture(scope="module")
def both():
    return run_script(SCIPY_IMPORTS), run_script(OUR_IMPORTS)


def test_script_cg_answers_match_scipy(both):
    (ref, _), (ours, _) = both
    x_r, info_r, res_r = ref["cg"]
    x_o, info_o, res_o = ours["cg"]
    assert info_r == info_o == 0
    assert len(res_o) == len(res_r) > 20          # one callback per iteration, same count
    np.testing.assert_allclose(res_o, res_r, rtol=1e-6, atol=1e-12)   # same iterates
    np.testing.assert_allclose(x_o, x_r, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["pcg"][0], ref["pcg"][0], rtol=1e-8, atol=1e-10)
    assert ours["pcg"][1] == ref["pcg"][1] == 0 and ours["pcg"][0].shape == (900,)
    assert ours["cg_limit"][1] == ref["cg_limit"][1] == 5
    np.testing.assert_allclose(ours["cg_limit"][0], ref["cg_limit"][0], rtol=1e-12)


def test_script_minimize_answers_match_scipy(both):
    (ref, out_r), (ours, out_o) = both
    minimizer = np.ones(5)
    for key in ("newton", "args"):
        r, o = ref[key], ours[key]
        assert type(o) is OptimizeResult and o.success and r.success
        np.testing.assert_allclose(o.x, r.x, atol=1e-6)
        np.testing.assert_allclose(o.x, minimizer, atol=1e-8)
        assert abs(o.fun - r.fun) < 1e-10 and np.linalg.norm(o.jac) <= 3e-9
        assert o.status == 0 and o.nit > 0 and o.nfev >= o.nit and o.njev >= o.nit
    # ours ran GNS Newton with the Hessian (scipy's default BFGS ignores it)
    assert ours["newton"].nhev == ours["newton"].nit and "result" in ours["newton"]
    assert "result" not in ref["newton"]
    assert ours["newton_seen"] == ours["newton"].nit and ref["newton_seen"] == ref["newton"].nit
    # StopIteration in an intermediate_result callback, an iteration limit
    for lib in (ref, ours):
        assert lib["stopped"].status == 99 and not lib["stopped"].success
        assert lib["stopped"].fun < 1.0
        assert "StopIteration" in lib["stopped"].message
        assert lib["limit"].status == 1 and lib["limit"].nit == 3 and not lib["limit"].success
    # options={"disp": True} prints scipy's summary in both
    for text in (out_r, out_o):
        assert "Optimization terminated successfully." in text
        assert "Iterations:" in text and "Function evaluations:" in text
    assert "cg did not converge in 5 iterations" in out_r and out_r.count("\n") > 5
    # scipy's methods are scipy's, result for result
    for key in ("trust-exact", "BFGS", "L-BFGS-B", "default"):
        r, o = ref[key], ours[key]
        assert type(o) is OptimizeResult
        np.testing.assert_array_equal(o.x, r.x)
        assert o.nit == r.nit and o.nfev == r.nfev and o.message == r.message
        assert ours[key + "/fields"] == ref[key + "/fields"]
    assert np.all(ours["L-BFGS-B"].x <= 0.5)


# -- compat.minimize: dispatch, options, errors ------------------------------------------

X0 = np.array([-1.2, 1.0])


def test_methods_not_ours_go_to_scipy_unchanged():
    for kw in (dict(method="Newton-CG", jac=rosen_der, hessp=lambda x, p: rosen_hess(x) @ p),
               dict(method="nelder-mead", options={"xatol": 1e-8, "maxiter": 400}),
               dict(method=None, jac=rosen_der),
               dict(method=None, jac=rosen_der, hess=rosen_hess, bounds=[(0, 2), (0, 2)]),
               dict(method="trust-constr", jac=rosen_der, hess=so.BFGS())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = so.minimize(rosen, X0, **kw)
            o = compat.minimize(rosen, X0, **kw)
        np.testing.assert_array_equal(o.x, r.x)
        assert o.nit == r.nit and o.message == r.message and "result" not in o


def test_our_methods_by_name_and_their_result():
    for method in ("gns", "GNS", "super-newton", "cubic-newton"):
        opts = {"alpha": 1.0} if method == "super-newton" else None
        o = compat.minimize(rosen, X0, method=method, jac=rosen_der, hess=rosen_hess, tol=1e-8,
                            options=opts)
        assert o.success and isinstance(o.result, ns.Result)
        np.testing.assert_allclose(o.x, 1.0, atol=1e-6)
        assert o.nit == o.result.n_iter and o.fun == pytest.approx(rosen(o.x), abs=1e-14)
        np.testing.assert_allclose(o.jac, rosen_der(o.x), atol=1e-12)


def test_our_methods_refuse_bounds_constraints_and_missing_gradient():
    with pytest.raises(ValueError, match="does not support bounds.*L-BFGS-B"):
        compat.minimize(rosen, X0, method="gns", jac=rosen_der, bounds=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="does not support constraints.*SLSQP"):
        compat.minimize(rosen, X0, method="gns", jac=rosen_der,
                        constraints={"type": "ineq", "fun": lambda x: x[0]})
    with pytest.raises(ValueError, match="needs the gradient: pass jac="):
        compat.minimize(rosen, X0, method="gns")
    with pytest.raises(ValueError, match="jac='cs' is not supported"):
        compat.minimize(rosen, X0, method="gns", jac="cs")
    with pytest.raises(ValueError, match="hess='cs'"):
        compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess="cs")
    with pytest.raises(ValueError, match="'x0' must only have one dimension"):
        compat.minimize(rosen, np.ones((2, 2)), method="gns", jac=rosen_der)
    with pytest.raises(TypeError, match="options must be a dict"):
        compat.minimize(rosen, X0, method="gns", jac=rosen_der, options=[("maxiter", 3)])


def test_finite_differences_and_quasi_newton_for_our_methods():
    fd = compat.minimize(rosen, X0, method="gns", jac="3-point", hess="2-point", tol=1e-6)
    assert fd.success and np.allclose(fd.x, 1.0, atol=1e-5)
    fdh = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess="3-point", tol=1e-8)
    exact = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=rosen_hess, tol=1e-8)
    assert fdh.success and abs(fdh.nit - exact.nit) <= 2
    for hess in (None, so.BFGS(), "bfgs"):
        qn = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=hess, tol=1e-8)
        assert qn.success and qn.nhev == 0 and np.allclose(qn.x, 1.0, atol=1e-7)
    # the strategy passed in is copied, not updated
    strat = so.BFGS()
    compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=strat)
    assert strat.B is None and strat.first_iteration is None


def test_options_disp_return_all_and_unknown():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        o = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=rosen_hess,
                            options={"disp": True, "maxiter": 200, "gtol": 1e-10,
                                     "return_all": True, "max_trials": 60})
    text = buf.getvalue()
    assert o.success and f"Iterations: {o.nit}" in text and "Hessian evaluations" in text
    assert len(o.allvecs) == o.nit + 1 and np.array_equal(o.allvecs[0], X0)
    np.testing.assert_array_equal(o.allvecs[-1], o.x)
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: xtol"):
        o = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=rosen_hess,
                            options={"xtol": 1e-3})
    assert o.success
    lim = compat.minimize(rosen, X0, method="gns", jac=rosen_der, hess=rosen_hess,
                          options={"disp": False, "maxiter": 2})
    assert lim.status == 1 and lim.nit == 2 and "iteration limit" in lim.message.lower()


def test_old_style_callback_sees_every_iterate():
    seen = []
    o = compat.minimize(rosen, X0, jac=rosen_der, hess=rosen_hess, tol=1e-10,
                        callback=lambda xk: seen.append(xk.copy()))
    assert len(seen) == o.nit and np.array_equal(seen[-1], o.x)
    hist = o.result.history["f"][1:]
    np.testing.assert_allclose([rosen(x) for x in seen], hist, rtol=1e-12)


# -- compat.cg --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def poisson():
    n = 25
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    A = (sp.kron(sp.eye(n), T) + sp.kron(T, sp.eye(n))).tocsr()
    b = np.cos(np.arange(A.shape[0]) * 0.3)
    return A, b


def _iterates(f, A, b, **kw):
    xs = []
    x, info = f(A, b, callback=lambda xk: xs.append(np.array(xk, copy=True)), **kw)
    return x, info, xs


def test_cg_iterates_are_scipys(poisson):
    A, b = poisson
    pyamg = pytest.importorskip("pyamg")
    ml = pyamg.smoothed_aggregation_solver(A)
    for kw in (dict(rtol=1e-9), dict(rtol=1e-7, M=sp.diags(1 / A.diagonal())),
               dict(rtol=1e-10, M=ml.aspreconditioner()), dict(atol=1e-4, rtol=0.0),
               dict(x0=np.ones(A.shape[0]), rtol=1e-8), dict(x0="Mb", M=ml.aspreconditioner()),
               dict(maxiter=7)):
        xr, ir, xsr = _iterates(spla.cg, A, b, **kw)
        xo, io, xso = _iterates(compat.cg, spla.aslinearoperator(A), b, **kw)
        assert io == ir and len(xso) == len(xsr), kw
        np.testing.assert_allclose(np.array(xso), np.array(xsr), rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(xo, xr, rtol=1e-9, atol=1e-12)


def test_cg_info_codes_and_inputs(poisson):
    A, b = poisson
    n = A.shape[0]
    x, info = compat.cg(A, b.reshape(-1, 1))
    assert info == 0 and x.shape == (n,)
    x, info = compat.cg(A, np.zeros(n))
    assert info == 0 and not x.any()
    # not converged: the number of iterations, as scipy
    assert compat.cg(A, b, rtol=1e-12, maxiter=4)[1] == spla.cg(A, b, rtol=1e-12, maxiter=4)[1] == 4
    # documented deviation: scipy calls maxiter=0 a success
    assert spla.cg(A, b, maxiter=0)[1] == 0 and compat.cg(A, b, maxiter=0)[1] == 1
    # breakdown: an indefinite matrix (p^T A p < 0 at the second step)
    x, info = compat.cg(np.diag([1.0, -1.0, 2.0]), np.ones(3))
    assert info == -1
    # illegal input: non-finite b or x0 -> -1 with a warning; shapes -> ValueError (scipy)
    bad = b.copy()
    bad[3] = np.nan
    with pytest.warns(RuntimeWarning, match="b contains NaN"):
        x, info = compat.cg(A, bad)
    assert info == -1 and not x.any()
    with pytest.warns(RuntimeWarning, match="x0 contains NaN"):
        assert compat.cg(A, b, x0=bad)[1] == -1
    for f in (spla.cg, compat.cg):
        with pytest.raises(ValueError):
            f(A, b[:-1])
    with pytest.raises(ValueError, match="x0 has shape"):
        compat.cg(A, b, x0=np.ones(n - 1))
    with pytest.raises(ValueError, match=r"b must have shape \(N,\) or \(N, 1\)"):
        compat.cg(A, np.ones((n, 2)))
    with pytest.raises(ValueError, match="x0 must be an array, None or 'Mb'"):
        compat.cg(A, b, x0="zeros")
    with pytest.raises(TypeError, match="callback must be callable"):
        compat.cg(A, b, callback=3)


# -- neurosolve.minimize: fun/nit/jac, quasi-Newton default, named approximations ---------

def test_result_fun_nit_jac():
    res = ns.minimize(rosen, X0, rosen_der, rosen_hess, gtol=1e-10)
    assert res.nit == res.n_iter > 0
    assert res.fun == res.certificate["f"] == pytest.approx(rosen(res.x), abs=1e-15)
    np.testing.assert_allclose(res.jac, rosen_der(res.x), atol=1e-14)
    lin = ns.cg(np.diag([1.0, 2.0]), np.ones(2))
    assert lin.nit == lin.n_iter and not hasattr(lin, "fun") and not hasattr(lin, "jac")
    with pytest.raises(AttributeError, match="no objective value 'fun'"):
        _ = lin.fun


def test_quasi_newton_default_without_hessian():
    x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])
    res = ns.minimize(rosen, x0, rosen_der, gtol=1e-8)
    ref = so.minimize(rosen, x0, jac=rosen_der, method="BFGS", options={"gtol": 1e-8})
    assert res.success and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert res.stats.get("nhev", 0) == 0
    # the approximation reuses the solver's gradients: one gradient per function value
    assert res.stats["ngev"] == res.stats["nfev"]
    # an explicit "exact" without a Hessian is still an error naming what is missing
    with pytest.raises(ValueError, match="needs the 'hessp' oracle"):
        ns.minimize(rosen, x0, rosen_der, "exact")
    sr1 = ns.minimize(rosen, x0, rosen_der, "sr1", gtol=1e-6, maxiter=2000)
    assert sr1.success and np.allclose(sr1.x, ref.x, atol=1e-5)
    with pytest.raises(ValueError, match="update must be one of bfgs, sr1"):
        QuasiNewton("dfp")


def test_quasi_newton_object_restarts_for_every_solve():
    prob = ns.problems.Minimize(rosen, rosen_der, X0)
    solver = ns.solvers.GNSNewton(hessian=QuasiNewton(), gtol=1e-8)
    a, b = ns.solve(prob, solver), ns.solve(prob, solver)
    assert a.success and a.n_iter == b.n_iter
    np.testing.assert_array_equal(a.x, b.x)
    # without the memo (a plain problem) the gradient at x_k is evaluated once more
    assert a.stats["ngev"] == a.stats["nfev"] + a.n_iter


def _separable():
    c = np.linspace(-1.0, 2.0, 6)
    f = lambda x: float(np.sum(np.cosh(x - c)) + 0.25 * np.sum((x - c) ** 4))
    g = lambda x: np.sinh(x - c) + (x - c) ** 3
    d = lambda x: np.cosh(x - c) + 3 * (x - c) ** 2
    return f, g, d, c


def test_named_diagonal_and_hutchinson_approximations():
    f, g, d, c = _separable()
    x0 = np.zeros(6)
    diag = ns.minimize(f, x0, g, "diag", hess_diag=d, gtol=1e-10)
    assert diag.success and np.allclose(diag.x, c, atol=1e-9)
    assert diag.stats["nhev"] == diag.n_iter
    dense = ns.minimize(f, x0, g, lambda x: np.diag(d(x)), hessian="diag", gtol=1e-10)
    assert dense.success and dense.n_iter == diag.n_iter
    hut = ns.minimize(f, x0, g, "hutchinson", hessp=lambda x, v: d(x) * v, gtol=1e-10)
    assert hut.success and np.allclose(hut.x, c, atol=1e-9)
    with pytest.raises(ValueError, match="hess='diag' needs hess_diag=callable"):
        ns.minimize(f, x0, g, "diag")
    with pytest.raises(ValueError, match="hess='hutchinson' needs hessp="):
        ns.minimize(f, x0, g, "hutchinson")


def test_named_fisher_and_gauss_newton_approximations():
    rng = np.random.default_rng(0)
    m, dim, mu = 80, 5, 1e-2
    Z = rng.standard_normal((m, dim))
    y = np.sign(Z @ rng.standard_normal(dim) + 0.3 * rng.standard_normal(m))

    def f(x):
        return float(np.mean(np.logaddexp(0.0, -y * (Z @ x))) + 0.5 * mu * x @ x)

    def g(x):
        s = -y / (1.0 + np.exp(y * (Z @ x)))
        return Z.T @ s / m + mu * x

    def sample_grads(x):
        s = -y / (1.0 + np.exp(y * (Z @ x)))
        return Z * s[:, None]

    ref = so.minimize(f, np.zeros(dim), jac=g, method="BFGS", options={"gtol": 1e-10})
    fis = ns.minimize(f, np.zeros(dim), g, "fisher", sample_grads=sample_grads, fisher_reg=mu,
                      gtol=1e-9)
    assert fis.success and fis.stats["nhev"] == fis.n_iter
    np.testing.assert_allclose(fis.x, ref.x, atol=1e-7)
    with pytest.raises(ValueError, match="hess='fisher' needs sample_grads="):
        ns.minimize(f, np.zeros(dim), g, "fisher")
    # least squares by Gauss-Newton: f = 1/2 ||Z x - t||^2
    t = rng.standard_normal(m)
    gn = ns.minimize(lambda x: 0.5 * float(np.sum((Z @ x - t) ** 2)), np.zeros(dim),
                     lambda x: Z.T @ (Z @ x - t), "gauss-newton",
                     residual=lambda x: Z @ x - t, residual_jac=lambda x: Z, power=2.0,
                     gtol=1e-9)
    assert gn.success
    np.testing.assert_allclose(gn.x, np.linalg.lstsq(Z, t, rcond=None)[0], atol=1e-9)
    with pytest.raises(ValueError, match="hess='gauss-newton' needs residual="):
        ns.minimize(lambda x: 0.0, np.zeros(dim), lambda x: 0 * x, "gauss-newton")


def test_docs_core_scipy_block_runs(capsys):
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "core.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if "neurosolve.compat" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/core.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["0", "True", "True", "True"]
