"""LV-HBA convergence on problems with known answers (spec section 10, tests 6-11, 14)."""

import warnings

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import bilevel_gallery
from neurosolve.solvers import LVHBA
from neurosolve.solvers.bilevel_reference import brute_force, sklearn_svm_baseline


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_toy_b_converges_tightly():
    p = bilevel_gallery.toy_b(n=10)
    res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=50000), backend="numba")
    x, y = res.x[:2]
    assert rel(x, p.meta["x_star"]) < 1e-3          # spec calibration: 7.5e-5
    assert rel(y, p.meta["y_star"]) < 1e-3
    assert abs(res.x.lam[0] - 1.0) < 1e-2
    assert x.sum() + y.sum() >= -1e-10
    assert abs(res.certificate["ll_gap"]) < 1e-5


def test_toy_a_within_penalty_bias_and_bias_shrinks_with_c():
    p = bilevel_gallery.toy_a(n=10)
    kw = p.meta["solver_kwargs"]
    res = ns.solve(p, LVHBA(**kw, maxiter=30000), backend="numba")
    err = rel(res.x.x, p.meta["x_star"])
    assert err < 3e-2                                # bias-limited (spec: 1.1e-2 at 30k and 50k)
    assert abs(res.x.lam[0] - 1.0) < 1e-2
    errs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # p = 0 (constant penalty) warns
        for c in (25.0, 100.0):   # constant penalties, larger steps to reach the plateau sooner
            r = ns.solve(p, LVHBA(**dict(kw, c0=c, p=0.0, alpha=1e-2, beta=1e-2, eta=1e-2),
                                  maxiter=10000), backend="numba")
            errs[c] = rel(r.x.x, p.meta["x_star"])
    assert errs[100.0] < 0.5 * errs[25.0]            # measured 3.2e-3 vs 1.26e-2
    assert errs[100.0] < 5e-3


def test_toy_d_lower_level_error():
    p = bilevel_gallery.toy_d(n=20, n_eq=18, n_ul=9)
    res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=5000))
    x, y = res.x[:2]
    ystar = p.meta["y_star"](x)
    assert rel(y, ystar) < 1e-3                      # measured 2.3e-4
    F = res.history["upper_objective"]
    assert F[-1] < F[0] - 1.0
    assert res.certificate["constraint_violation"] < 1e-9


def test_coupled_qp_matches_brute_force():
    p = bilevel_gallery.coupled_qp()
    bf = brute_force(p, restarts=1, xatol=1e-7, fatol=1e-11)
    res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=6000))
    assert rel(res.x.x, bf["x"]) < 1e-2              # measured 4.5e-3
    assert res.certificate["ll_gap"] < 1e-3


def _cleaning_run(seed, iters, n_train):
    p = bilevel_gallery.hyper_cleaning("breast_cancer", corruption=0.4, seed=seed, n_train=n_train)
    res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=iters))
    acc = p.meta["accuracy"](res.x.x, res.x.y, "test")
    base = sklearn_svm_baseline(p.meta["data"])["test_accuracy"]
    return acc, base


def test_hyper_cleaning_beats_svm_on_noisy_labels_fast():
    # fast version: 2 seeds, 80 iterations, 100 training samples (measured with the issue-18
    # defaults: 0.852 vs 0.640; 0.890 with the old ones, which do better this early but
    # worse at 300 iterations). The 10-seed run at 300 samples / 300 iterations is the
    # slow test below and the benchmark (LVHBA_BENCH_FULL=1).
    accs, bases = zip(*[_cleaning_run(s, 80, 100) for s in (0, 1)])
    assert np.mean(accs) > np.mean(bases) + 0.05


@pytest.mark.slow
def test_hyper_cleaning_ten_seeds():
    accs, bases = map(np.array, zip(*[_cleaning_run(s, 300, 300) for s in range(10)]))
    print(f"LV-HBA {accs.mean():.4f} +- {accs.std():.4f}; noisy SVM {bases.mean():.4f} +- {bases.std():.4f}")
    assert accs.mean() > bases.mean() + 0.05
