"""The u-step linear system of ADMM for convex ReLU training, three ways.

The system (section 3.3 of the spec, generalized to separate penalties) is ::

    A u = r,   A = aF F^T F + rho1 I + rho2 (I_2P kron (X^T X + diag(sc^2)))
                   + aH H^T H

with ``F = [D_1 X ... D_P X, -D_1 X ... -D_P X]`` (the network output), ``X^T X`` the
repeated block of ``G^T G`` (``G_i = (2 D_i - I) X`` and ``G_i^T G_i = X^T X``), and, for the
robust program only, the ``diag(sc^2)`` block of the split ``r_g = sc * u_g`` and ``H``
mapping u to the per-sample input gradients ``b_k = sc * sum_i d_ik (u_i - z_i)``.

Unknowns are stored as ``(d, 2P, c)`` arrays (coordinate-major: entry ``(j, g, o)`` is
coordinate j of block g for output o), so ``X @ U.reshape(d, -1)`` gives all block outputs
at once and the ``c`` outputs are extra right-hand sides of the same system.

In the coordinates ``p = u_v + u_w`` and ``m = u_v - u_w`` the system splits into
``P`` copies of one ``d x d`` system (for p) and one ``dP x dP`` system (for m), which is
where all three solvers work (see :class:`_Decoupled`):

* :class:`CholeskyUStep` -- the dense ``dP x dP`` matrix, inverted once through its
  Cholesky factor (setup ``O(n d^2 P^2 + (dP)^3)``, per solve one ``O((dP)^2)`` symmetric
  matrix-vector product); memory ``2 (dP)^2`` floats.
* :class:`WoodburyUStep` -- the ``n x n`` Hadamard form (non-robust only):
  ``S = I/(2 aF) + (X B^-1 X^T) * (D D^T)`` with ``B = rho1 I + rho2 X^T X``;
  per solve ``O(n d P + n^2)``, memory ``O(n^2)``. Pays off when ``n < dP``.
* :class:`CGUStep` -- matrix-free conjugate gradients (the library's
  :class:`~neurosolve.solvers.cg.CG`), preconditioned by the exact diagonal blocks (one
  ``d x d`` Cholesky per pattern), warm started.

All three work on numpy arrays and torch tensors (CPU or CUDA).

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965, section 3.
.. [2] M. A. Woodbury, "Inverting modified matrices", 1950; M. R. Hestenes, E. Stiefel,
   "Methods of conjugate gradients for solving linear systems", 1952.
"""

from __future__ import annotations

import numpy as np

__all__ = ["UStepSystem", "CholeskyUStep", "WoodburyUStep", "CGUStep", "make_ustep",
           "choose_ustep"]


def _is_torch(a) -> bool:
    return not isinstance(a, np.ndarray)


def _eye(d, like):
    if _is_torch(like):
        import torch

        return torch.eye(d, dtype=like.dtype, device=like.device)
    return np.eye(d, dtype=like.dtype)


def _zeros(shape, like):
    if _is_torch(like):
        import torch

        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return np.zeros(shape, dtype=like.dtype)


def _chol(A):
    if _is_torch(A):
        import torch

        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            raise np.linalg.LinAlgError("u-step matrix is not positive definite")
        return L
    import scipy.linalg as sla

    return sla.cho_factor(A, lower=True, check_finite=False)


def _spd_inverse(A):
    """The inverse of an SPD matrix, through its Cholesky factor.

    The u-step matrices are factorized once per penalty change and applied at every
    iteration, so they are stored inverted: one (symmetric) matrix product per solve is
    memory-bound, where the two triangular solves of a Cholesky solve are latency-bound
    (6-12x slower on one core at ``dP = 1600``; the snippet is in docs/convex_relu.md,
    "The certificate's cost"). All of them have
    their smallest eigenvalue bounded below by a penalty, so the inverse loses no accuracy
    that matters here. On numpy only the lower triangle is valid (for :func:`_spd_apply`).
    """
    if _is_torch(A):
        import torch

        return torch.cholesky_inverse(_chol(A))
    import scipy.linalg as sla

    L, _ = _chol(A)
    Ai, info = sla.lapack.dpotri(L, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("u-step matrix is not positive definite")
    return Ai


def _spd_apply(Ai, B):
    """``A^-1 B`` for ``Ai = _spd_inverse(A)`` and a 2-D ``B``."""
    if _is_torch(Ai):
        return Ai @ B
    import scipy.linalg as sla

    B = np.asarray(B, dtype=np.float64)
    if B.shape[1] == 1:
        return sla.blas.dsymv(1.0, Ai, B[:, 0], lower=1)[:, None]
    return sla.blas.dsymm(1.0, Ai, B, side=0, lower=1)


class UStepSystem:
    """The operator of the u-step and its pieces (shared by the three solvers).

    Parameters
    ----------
    X : (n, d) array, D : (n, P) 0/1 array, c : int
    aF : float
        Coefficient of ``F^T F`` (1 when the squared loss sits in the u-step, the loss
        penalty when the loss is split off).
    rho1, rho2 : float
        Penalties of ``u = v`` and of the cone split.
    sc : (d,) array or None
        Robust feature scale (None: non-robust).
    aH : float
        Coefficient of ``H^T H`` (robust loss split).
    """

    def __init__(self, X, D, c, *, aF=1.0, rho1=1.0, rho2=1.0, sc=None, aH=0.0):
        self.X, self.D, self.c = X, D, c
        self.n, self.d = X.shape
        self.P = D.shape[1]
        self.aF, self.rho1, self.rho2 = float(aF), float(rho1), float(rho2)
        self.sc, self.aH = sc, float(aH)
        self.XtX = X.T @ X
        self.sc2 = None if sc is None else sc * sc

    # -- building blocks -----------------------------------------------------------------
    def F(self, U):
        """``F u``: (n, c) network output of U (d, 2P, c)."""
        d, P, c = self.d, self.P, self.c
        XU = (self.X @ U.reshape(d, 2 * P * c)).reshape(self.n, 2 * P, c)
        return ((XU[:, :P] - XU[:, P:]) * self.D[:, :, None]).sum(1)

    def Ft(self, t):
        """``F^T t`` for t (n, c): (d, 2P, c)."""
        n, P, c = self.n, self.P, self.c
        M = (self.D[:, :, None] * t[:, None, :]).reshape(n, P * c)
        half = (self.X.T @ M).reshape(self.d, P, c)
        return _cat([half, -half], like=half)

    def H(self, U):
        """Per-sample input gradients ``b`` (n, d, c) of U (robust only)."""
        P = self.P
        dlt = U[:, :P] - U[:, P:]  # (d, P, c)
        B = _einsum("np,dpc->ndc", self.D, dlt)
        return B * self.sc[None, :, None]

    def Ht(self, B):
        """Adjoint of :meth:`H`: (d, 2P, c)."""
        half = _einsum("np,ndc->dpc", self.D, B * self.sc[None, :, None])
        return _cat([half, -half], like=half)

    def block_diag_term(self, U):
        """``rho2 (X^T X + diag(sc^2)) u_g + rho1 u_g`` for every block."""
        d = self.d
        out = (self.XtX @ U.reshape(d, -1)).reshape(U.shape) * self.rho2 + self.rho1 * U
        if self.sc2 is not None:
            out = out + self.rho2 * self.sc2[:, None, None] * U
        return out

    def matvec(self, U):
        out = self.block_diag_term(U) + self.aF * self.Ft(self.F(U))
        if self.aH:
            out = out + self.aH * self.Ht(self.H(U))
        return out

    def set_penalties(self, *, aF=None, rho1=None, rho2=None, aH=None):
        changed = False
        for name, val in (("aF", aF), ("rho1", rho1), ("rho2", rho2), ("aH", aH)):
            if val is not None and float(val) != getattr(self, name):
                setattr(self, name, float(val))
                changed = True
        return changed


def _cat(parts, like):
    if _is_torch(like):
        import torch

        return torch.cat(parts, dim=1)
    return np.concatenate(parts, axis=1)


def _einsum(spec, *ops):
    if _is_torch(ops[0]):
        import torch

        return torch.einsum(spec, *ops)
    return np.einsum(spec, *ops, optimize=True)


def _split_pm(R, P):
    """``(R_v + R_w, R_v - R_w)`` of a (d, 2P, c) array."""
    return R[:, :P] + R[:, P:], R[:, :P] - R[:, P:]


def _join_pm(p, m):
    """``u_v = (p + m)/2``, ``u_w = (p - m)/2`` as one (d, 2P, c) array."""
    return _cat([0.5 * (p + m), 0.5 * (p - m)], like=p)


class _Decoupled:
    """Common part of the three solvers.

    In the coordinates ``p = u_v + u_w``, ``m = u_v - u_w`` the system decouples (the loss
    and the robust H terms only see ``m``)::

        Bd p = R_v + R_w,      (Bd + 2 K) m = R_v - R_w,

    where ``Bd = I_P kron B`` with the d x d block ``B = rho1 I + rho2 (X^T X + diag(sc^2))``
    and ``K = aF Kt^T Kt + aH Ht^T Ht`` (``Kt = [D_1 X ... D_P X]``). So every solver
    factorizes one d x d block and works on a dP (not 2dP) system.
    """

    def _factor_B(self):
        s = self.sys
        B = s.rho2 * s.XtX + s.rho1 * _eye(s.d, s.X)
        if s.sc2 is not None:
            B = B + s.rho2 * _diagm(s.sc2)
        self.B = B
        self.Binv = _spd_inverse(B)

    def _Binv(self, R):
        s = self.sys
        return _spd_apply(self.Binv, R.reshape(s.d, -1)).reshape(R.shape)

    def update(self, **pen):
        if self.sys.set_penalties(**pen):
            self.factor()
            return True
        return False

    def solve(self, R, U0=None):
        s = self.sys
        rp, rm = _split_pm(R, s.P)
        m0 = None if U0 is None else U0[:, :s.P] - U0[:, s.P:]
        return _join_pm(self._Binv(rp), self.solve_m(rm, m0))


class CholeskyUStep(_Decoupled):
    """The dense ``dP x dP`` difference system, inverted through its Cholesky factor
    (cached; recomputed only when a penalty changes; see :func:`_spd_inverse`)."""

    name = "cholesky"

    def __init__(self, system: UStepSystem, chunk_rows: int = 4096):
        self.sys = system
        s = system
        X, D, d, P = s.X, s.D, s.d, s.P
        KK = _zeros((d * P, d * P), X)
        for a in range(0, s.n, chunk_rows):
            Xc, Dc = X[a:a + chunk_rows], D[a:a + chunk_rows]
            K = (Xc[:, :, None] * Dc[:, None, :]).reshape(Xc.shape[0], d * P)
            KK = KK + K.T @ K
        self.KK = KK.reshape(d, P, d, P)
        self.DtD = D.T @ D if s.sc is not None else None
        self.factor()

    def matrix_m(self):
        """The dP x dP matrix ``Bd + 2K`` in (coordinate, pattern) order."""
        s = self.sys
        d, P = s.d, s.P
        A = 2.0 * s.aF * self.KK
        if s.aH:
            A = A + (2.0 * s.aH) * self.DtD[None, :, None, :] * _diag4(s.sc2, d)
        A = A + self.B[:, None, :, None] * _eye(P, s.X)[None, :, None, :]
        return A.reshape(d * P, d * P)

    def matrix(self):
        """The full 2dP x 2dP u-step matrix (for checks; solves use the decoupled form)."""
        s = self.sys
        d, P = s.d, s.P
        K = (self.matrix_m().reshape(d, P, d, P)
             - self.B[:, None, :, None] * _eye(P, s.X)[None, :, None, :]) * 0.5
        A = _zeros((d, 2 * P, d, 2 * P), s.X)
        A[:, :P, :, :P] = K
        A[:, P:, :, P:] = K
        A[:, :P, :, P:] = -K
        A[:, P:, :, :P] = -K
        Bd = self.B[:, None, :, None] * _eye(2 * P, s.X)[None, :, None, :]
        return (A + Bd).reshape(2 * d * P, 2 * d * P)

    def factor(self):
        self._factor_B()
        self.Minv = _spd_inverse(self.matrix_m())

    def solve_m(self, rm, m0=None):
        s = self.sys
        return _spd_apply(self.Minv, rm.reshape(s.d * s.P, s.c)).reshape(rm.shape)


def _diagm(v):
    if _is_torch(v):
        import torch

        return torch.diag(v)
    return np.diag(v)


def _diag4(sc2, d):
    """(d, 1, d, 1) array with sc2 on the (j, j) diagonal."""
    M = _diagm(sc2)
    return M[:, None, :, None]


class WoodburyUStep(_Decoupled):
    """The ``n x n`` Hadamard-form Woodbury solve of the difference system (non-robust)::

        (Bd + 2 aF Kt^T Kt)^-1 = Bd^-1 - Bd^-1 Kt^T S^-1 Kt Bd^-1,
        S = I / (2 aF) + (X B^-1 X^T) * (D D^T).
    """

    name = "woodbury"

    def __init__(self, system: UStepSystem):
        if system.sc is not None or system.aH:
            raise ValueError("the Woodbury u-step does not support the robust program; use "
                             "u_step='cholesky' or 'cg'")
        self.sys = system
        self.DDt = system.D @ system.D.T
        self.factor()

    def factor(self):
        s = self.sys
        self._factor_B()
        Z = _spd_apply(self.Binv, s.X.T)  # B^-1 X^T  (d, n)
        S = (s.X @ Z) * self.DDt + _eye(s.n, s.X) / (2.0 * s.aF)
        self.Sinv = _spd_inverse(S)

    def _Kt(self, M):
        """``sum_i D_i X m_i``: (n, c)."""
        s = self.sys
        XM = (s.X @ M.reshape(s.d, -1)).reshape(s.n, s.P, s.c)
        return (XM * s.D[:, :, None]).sum(1)

    def _Ktt(self, t):
        s = self.sys
        Mt = (s.D[:, :, None] * t[:, None, :]).reshape(s.n, s.P * s.c)
        return (s.X.T @ Mt).reshape(s.d, s.P, s.c)

    def solve_m(self, rm, m0=None):
        Y = self._Binv(rm)
        t = _spd_apply(self.Sinv, self._Kt(Y))
        return Y - self._Binv(self._Ktt(t))


class CGUStep(_Decoupled):
    """Block-Jacobi preconditioned conjugate gradients on the difference system
    (matrix-free, warm started); the sum system is solved exactly.

    Parameters
    ----------
    rtol : float
        Stop when ``||r|| <= rtol ||rhs||`` (all outputs together).
    maxiter : int
    """

    name = "cg"

    def __init__(self, system: UStepSystem, rtol: float = 1e-10, maxiter: int = 500):
        self.sys = system
        self.rtol, self.maxiter = rtol, maxiter
        s = system
        # X^T D_i X for every pattern: (P, d, d)
        self.XDX = _einsum("ni,nj,np->pij", s.X, s.X, s.D)
        self.Dsum = s.D.sum(0)
        self.iters = 0
        self.factor()

    def factor(self):
        s = self.sys
        self._factor_B()
        Bi = 2.0 * s.aF * self.XDX + self.B[None]
        if s.aH:
            Bi = Bi + (2.0 * s.aH * self.Dsum)[:, None, None] * _diagm(s.sc2)[None]
        if _is_torch(Bi):
            import torch

            self.Binv_blocks = torch.cholesky_inverse(torch.linalg.cholesky(Bi))
        else:
            Li = np.linalg.inv(np.linalg.cholesky(Bi))
            self.Binv_blocks = np.matmul(np.swapaxes(Li, 1, 2), Li)

    def matvec_m(self, M):
        s = self.sys
        d, P, c = s.d, s.P, s.c
        out = (self.B @ M.reshape(d, -1)).reshape(M.shape)
        XM = (s.X @ M.reshape(d, -1)).reshape(s.n, P, c)
        t = (XM * s.D[:, :, None]).sum(1)
        Mt = (s.D[:, :, None] * t[:, None, :]).reshape(s.n, P * c)
        out = out + (2.0 * s.aF) * (s.X.T @ Mt).reshape(d, P, c)
        if s.aH:
            Bk = _einsum("np,dpc->ndc", s.D, M) * s.sc[None, :, None]
            out = out + (2.0 * s.aH) * _einsum("np,ndc->dpc", s.D, Bk * s.sc[None, :, None])
        return out

    def precond(self, R):
        s = self.sys
        _P, _c = s.P, s.c
        Rb = R.permute(1, 0, 2) if _is_torch(R) else R.transpose(1, 0, 2)  # (P, d, c)
        Z = self.Binv_blocks @ Rb
        return Z.permute(1, 0, 2) if _is_torch(R) else Z.transpose(1, 0, 2)

    def solve_m(self, R, U0=None):
        from neurosolve.solvers.cg import spd_solve

        shape = R.shape
        x, k, _, _ = spd_solve(lambda v: self.matvec_m(v.reshape(shape)).reshape(-1),
                               R.reshape(-1), rtol=self.rtol, maxiter=self.maxiter,
                               M=lambda v: self.precond(v.reshape(shape)).reshape(-1),
                               x0=None if U0 is None else U0.reshape(-1))
        self.iters += k
        return x.reshape(shape)


def choose_ustep(n: int, d: int, P: int, robust: bool, memory_bytes: float = 1.5e9,
                 itemsize: int = 8) -> str:
    """Pick a u-step for an (n, d, P) problem.

    With ``m = dP`` (the size of the difference system): Cholesky when ``m <= 2500`` and its
    two ``m x m`` matrices fit in ``memory_bytes``; else Woodbury when ``n < m``, the
    program is not robust and the ``n x n`` matrices fit; else Cholesky up to
    ``m = 5000``; else CG.
    """
    m = d * P
    chol_mem = 2 * m * m * itemsize
    if m <= 2500 and chol_mem <= memory_bytes:
        return "cholesky"
    if not robust and n < m and 2 * n * n * itemsize <= memory_bytes:
        return "woodbury"
    if m <= 5000 and chol_mem <= memory_bytes:
        return "cholesky"
    return "cg"


def make_ustep(kind: str, system: UStepSystem, **kw):
    if kind == "cholesky":
        return CholeskyUStep(system)
    if kind == "woodbury":
        return WoodburyUStep(system)
    if kind == "cg":
        return CGUStep(system, **kw)
    raise ValueError(f"u_step must be 'auto', 'cholesky', 'woodbury', 'cg' or 'rbcd', got {kind!r}")
