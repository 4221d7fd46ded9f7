"""Shared fixtures: the backend fixture, the cuda marker, deterministic seeds."""

import os

import numpy as np
import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


BACKENDS = ["numpy", "numba", "torch-cpu"] + (["torch-cuda"] if _cuda_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    """One of numpy / numba / torch-cpu / torch-cuda (when a GPU is present).

    Yields a small helper with ``name`` (the ``solve(..., backend=)`` value), ``library``,
    ``device`` and ``asarray(np_array)`` converting test data to that backend's arrays.
    """
    return BackendCase(request.param)


class BackendCase:
    def __init__(self, param: str):
        self.param = param
        self.library = "torch" if param.startswith("torch") else "numpy"
        self.name = "torch" if self.library == "torch" else param
        self.device = "cuda" if param == "torch-cuda" else "cpu"

    def asarray(self, a, dtype=None):
        if self.library == "numpy":
            return np.asarray(a, dtype=dtype)
        import torch

        return torch.as_tensor(np.asarray(a), dtype=dtype or torch.float64, device=self.device)

    def to_numpy(self, a):
        if self.library == "numpy":
            return np.asarray(a)
        return a.detach().cpu().numpy()

    def __repr__(self):
        return self.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module (``pytestmark = usefixtures(...)``): the
    small tensors of these tests only gain contention from more threads on 2 shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _check_spd_on_fluid(M, grid, rng, trials=3):
    """``x^T M y = y^T M x`` (to 1e-11) and ``x^T M x > 0`` for random vectors supported on
    the grid's fluid cells."""
    fl = grid.fluid.ravel()
    for _ in range(trials):
        x, y = rng.standard_normal(grid.n) * fl, rng.standard_normal(grid.n) * fl
        xMy, yMx = x @ M(y), y @ M(x)
        assert abs(xMy - yMx) <= 1e-11 * (abs(xMy) + np.linalg.norm(x) * np.linalg.norm(y))
        assert x @ M(x) > 0


@pytest.fixture
def check_spd_on_fluid():
    """The preconditioner symmetry/positivity check on fluid-supported random vectors."""
    return _check_spd_on_fluid
