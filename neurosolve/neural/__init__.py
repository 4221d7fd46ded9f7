"""Neural components: networks, adapters, training loops and shipped weights (torch)."""

from neurosolve._lazy import lazy_getattr

__all__ = [
    "TorchPreconditioner",
    "DCDMNet",
    "load_pretrained",
    "available_pretrained",
    "ep",
]

__getattr__ = lazy_getattr(__name__, {
    "TorchPreconditioner": "neurosolve.neural.adapter",
    "DCDMNet": "neurosolve.neural.dcdm_net",
    "load_pretrained": "neurosolve.neural.pretrained",
    "available_pretrained": "neurosolve.neural.pretrained",
    "ep": "neurosolve.neural.ep",
})
