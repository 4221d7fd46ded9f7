"""train_preconditioner: the one training loop for a user's own module; loading by path.

Oracles: numpy closed forms of the losses (Jacobi's energy reduction, the exact inverse's
zero), the gallery's CSR matrices, the DCDM solver run on the same weights loaded twice.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import neurosolve as ns
from neurosolve.neural import (DCDMNet, LossBatch, TrainingData, dcdm_loss, energy_loss,
                               load_pretrained, train_preconditioner, training_data)
from neurosolve.neural.dcdm_train import reference_losses
from neurosolve.neural.training import StencilGeometry, stencil_apply
from neurosolve.problems import poisson

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SmallNet(torch.nn.Module):
    """A user's own module: two convolutions and a coarse-grid branch."""

    def __init__(self, c=8):
        super().__init__()
        self.a = torch.nn.Conv2d(1, c, 5, padding=2)
        self.b = torch.nn.Conv2d(c, c, 3, padding=1)
        self.c = torch.nn.Conv2d(c, 1, 5, padding=2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h + torch.nn.functional.interpolate(
            torch.relu(self.b(torch.nn.functional.avg_pool2d(h, 2))), scale_factor=2)
        return self.c(h)


def _grids():
    return [poisson.sphere((16, 16)), poisson.pool((16, 16), obstacles=1, seed=1)]


def test_training_a_users_module_beats_classical_one_step_directions():
    torch.manual_seed(0)
    net = SmallNet()
    td = training_data(_grids(), seed=0)
    before = reference_losses(td.sampler, td.operators, net=net)
    res = train_preconditioner(net, td, steps=300, batch=8, lr=3e-3, progress=False)
    after = reference_losses(td.sampler, td.operators, net=res.model)
    assert res.steps_done == 300 and len(res.losses) == 300 and not res.stopped_early
    assert res.model is net and not net.training
    # held-out samples (another step index): the trained directions beat a steepest-descent
    # step and a Jacobi step, and the untrained network
    assert after["network"] < 0.6 * min(after["identity"], after["jacobi"])
    assert after["network"] < 0.5 * before["network"]


def test_energy_loss_closed_forms():
    """Jacobi: (e1.A e1)/(e0.A e0) computed in numpy; the exact inverse: zero."""
    grid = poisson.sphere((12, 12), walls="dirichlet")
    A = grid.matrix().toarray()
    fl = np.array(grid.fluid.ravel())
    rng = np.random.default_rng(0)
    e0 = rng.standard_normal(A.shape[0]) * fl
    e0 /= np.linalg.norm(e0)
    d = np.where(fl, np.diag(A), 1.0)
    e1 = e0 - (A @ e0) / d
    want = (e1 @ A @ e1) / (e0 @ A @ e0)
    At = torch.as_tensor(A)
    fluid = torch.as_tensor(fl.reshape(1, 1, 12, 12), dtype=torch.float64)
    diag = torch.as_tensor(np.diag(A).copy().reshape(1, 1, 12, 12))

    class Jacobi(torch.nn.Module):
        def forward(self, r):
            return r / torch.where(diag > 0, diag, torch.ones_like(diag))

    class Exact(torch.nn.Module):
        def forward(self, r):  # A^{-1} on the fluid block (A is nonsingular: Dirichlet walls)
            sub = torch.linalg.solve(At[fl][:, fl], r.reshape(-1)[fl])
            out = torch.zeros(A.shape[0], dtype=r.dtype)
            out[fl] = sub
            return out.reshape(r.shape)

    def apply_A(f):
        return (At @ f.reshape(-1)).reshape(f.shape)

    b = torch.as_tensor(e0.reshape(1, 1, 12, 12))
    got = energy_loss(LossBatch(b, apply_A, fluid, diag, Jacobi()))
    assert float(got) == pytest.approx(want, rel=1e-10)
    assert float(energy_loss(LossBatch(b, apply_A, fluid, diag, Exact()))) < 1e-20
    # the DCDM loss of the exact inverse is zero too, and it ignores the output's scale
    f = Exact()(b)
    assert float(dcdm_loss(3.0 * f, b, apply_A(3.0 * f))) < 1e-20


def test_energy_loss_trains_a_module_that_reduces_the_error():
    torch.manual_seed(1)
    net = SmallNet()
    res = train_preconditioner(net, poisson.sphere((16, 16)), loss="energy", steps=120,
                               lr=3e-3, progress=False)
    assert res.losses[0] > 1.0  # an untrained module amplifies the error
    assert res.final_loss < 0.25  # trained: each application removes most of its energy


def test_csr_operators_match_the_stencil():
    """Training matrices given as scipy CSR give the losses of the matrix-free stencil."""
    grid = poisson.pool((16, 16), obstacles=1, seed=2)
    A = grid.matrix()
    td = training_data(grid, seed=3)
    assert isinstance(td.operators[0], StencilGeometry)
    losses = {}
    for kind, ops in (("stencil", td.operators), ("csr", [A])):
        torch.manual_seed(0)
        net = SmallNet()
        res = train_preconditioner(net, TrainingData(td.sampler, ops), steps=3, batch=4,
                                   progress=False)
        losses[kind] = res.losses
    np.testing.assert_allclose(losses["csr"], losses["stencil"], rtol=1e-5)
    # and the stencil is A itself
    geom = StencilGeometry.from_matrix(A, (16, 16))
    v = np.random.default_rng(0).standard_normal(256)
    d, m = geom.tensors("cpu", torch.float64)
    got = stencil_apply(torch.as_tensor(v).reshape(1, 1, 16, 16), d, m, geom.scale)
    np.testing.assert_allclose(got.reshape(-1).numpy(), A @ v, rtol=1e-12, atol=1e-12)


def test_variable_coefficients_train_through_the_csr_path():
    grid = poisson.box((16, 16)).with_coefficients(poisson.lognormal_field((16, 16), seed=0))
    td = training_data(grid)
    assert sp.issparse(td.operators[0])
    torch.manual_seed(0)
    res = train_preconditioner(SmallNet(), td, steps=30, lr=3e-3, progress=False)
    assert np.isfinite(res.losses).all() and res.final_loss < res.losses[0]


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    def run(**kw):
        torch.manual_seed(5)
        return train_preconditioner(SmallNet(), _grids(), steps=8, batch=2, seed=4,
                                    progress=False, **kw)

    full = run(checkpoint=tmp_path / "a.pt")
    part = run(checkpoint=tmp_path / "b.pt", stop_after=5)
    assert part.stopped_early and part.steps_done == 5
    torch.manual_seed(99)  # a different initialization: the checkpoint must override it
    rest = train_preconditioner(SmallNet(), _grids(), steps=8, batch=2, seed=4,
                                progress=False, checkpoint=tmp_path / "b.pt", resume=True,
                                loss_png=tmp_path / "loss.png")
    assert rest.steps_done == 8
    np.testing.assert_allclose(rest.losses, full.losses, rtol=1e-5)
    for k, v in full.model.state_dict().items():
        np.testing.assert_allclose(rest.model.state_dict()[k].numpy(), v.numpy(), rtol=1e-4,
                                   atol=1e-6)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="different config"):
        train_preconditioner(SmallNet(), _grids(), steps=8, batch=3, seed=4, progress=False,
                             checkpoint=tmp_path / "b.pt", resume=True)


def test_load_by_path_and_dcdm_model_path(tmp_path):
    grid = poisson.sphere((16, 16))
    prob = grid.system(poisson.rhs_blobs(grid, seed=0))
    # a user's module: load_pretrained needs the architecture
    torch.manual_seed(0)
    mine = train_preconditioner(SmallNet(), grid, steps=5, progress=False,
                                checkpoint=tmp_path / "mine" / "checkpoint.pt").model
    with pytest.raises(ValueError, match="model="):
        load_pretrained(tmp_path / "mine" / "checkpoint.pt")
    again = load_pretrained(tmp_path / "mine", model=SmallNet())
    assert again.manifest["step"] == 5 and again.manifest["run"]["loss"] == "dcdm"
    for k, v in mine.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    # a DCDMNet checkpoint carries its architecture: a path is enough, also for DCDM
    torch.manual_seed(0)
    net = train_preconditioner(DCDMNet(dim=2, channels=4), grid, steps=5, progress=False,
                               checkpoint=tmp_path / "dcdm.pt").model
    loaded = load_pretrained(str(tmp_path / "dcdm.pt"))
    assert isinstance(loaded, DCDMNet) and loaded.config() == net.config()
    by_module = ns.solve(prob, ns.solvers.DCDM(model=net, rtol=1e-8), progress=False)
    by_path = ns.solve(prob, ns.solvers.DCDM(model=tmp_path / "dcdm.pt", rtol=1e-8),
                       progress=False)
    assert by_path.success and by_path.n_iter == by_module.n_iter
    np.testing.assert_allclose(by_path.x, by_module.x, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="no such file"):
        load_pretrained(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no pretrained model named"):
        load_pretrained("no-such-model")


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "l2"}, "loss must be"),
    ({"loss": "unrolled:0"}, "loss must be"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"batch": 2.5}, "batch must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_preconditioner(SmallNet(), poisson.sphere((16, 16)), progress=False, **kwargs)


def test_bad_module_and_data_are_explained():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        train_preconditioner(lambda x: x, poisson.sphere((16, 16)))
    with pytest.raises(TypeError, match="TrainingData"):
        train_preconditioner(SmallNet(), training_data(poisson.sphere((16, 16))).sampler)
    with pytest.raises(TypeError, match="gallery"):
        train_preconditioner(SmallNet(), [np.eye(4)])

    class Shrinks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.w * x[..., :-1]

    with pytest.raises(ValueError, match="shape of its input"):
        train_preconditioner(Shrinks(), poisson.sphere((16, 16)), steps=2, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_preconditioner(SmallNet(), poisson.sphere((16, 16)), device="cuda")
