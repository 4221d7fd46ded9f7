"""Shipped DCDM weights: ``load_pretrained(name)`` and ``available_pretrained()``.

Each model is two files in ``neurosolve/neural/weights/``: ``NAME.pt`` (a plain state dict,
loaded with ``torch.load(..., weights_only=True)``, which cannot execute code) and
``NAME.json``, the manifest: architecture, training grid, data recipe, seed, steps, final
loss, measured iterations and the exact command that regenerates the file. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

from neurosolve.neural.dcdm_net import DCDMNet

__all__ = ["load_pretrained", "available_pretrained", "save_pretrained", "manifest", "WEIGHTS_DIR"]

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"


def available_pretrained(directory: str | pathlib.Path | None = None) -> list[str]:
    """Names of the shipped models (those with both ``NAME.pt`` and ``NAME.json``).

    Examples
    --------
    >>> from neurosolve.neural import available_pretrained
    >>> isinstance(available_pretrained(), list)
    True
    """
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.pt").exists())


def manifest(name: str, directory: str | pathlib.Path | None = None) -> dict:
    """The JSON manifest of a shipped model."""
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    path = d / f"{name}.json"
    if not path.exists():
        names = ", ".join(available_pretrained(d)) or "none"
        raise ValueError(f"no pretrained model named {name!r}; available: {names}")
    return json.loads(path.read_text())


def load_pretrained(name: str, *, device: str | torch.device = "cpu",
                    directory: str | pathlib.Path | None = None) -> DCDMNet:
    """Load a shipped DCDM network (float32, eval mode) with its manifest attached.

    Parameters
    ----------
    name : str
        One of :func:`available_pretrained`.
    device : str or torch.device
    directory : path, optional
        Look here instead of the package's ``weights/`` folder.

    Returns
    -------
    DCDMNet
        With ``.manifest`` (the JSON manifest as a dict) and ``.pretrained_name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the available ones).

    Examples
    --------
    >>> from neurosolve.neural import load_pretrained, available_pretrained
    >>> net = load_pretrained(available_pretrained()[0])
    >>> net.training
    False
    """
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    info = manifest(name, d)
    arch = info["architecture"]
    net = DCDMNet(**{k: arch[k] for k in ("dim", "variant", "channels", "levels",
                                          "blocks_per_level", "input_norm", "geometry")
                     if k in arch})
    state = torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    net = net.to(device)
    net.eval()
    net.manifest = info
    net.pretrained_name = name
    return net


def save_pretrained(model: DCDMNet, name: str, info: dict[str, Any], *,
                    directory: str | pathlib.Path | None = None, half: bool = True) -> pathlib.Path:
    """Write ``NAME.pt`` (state dict, float16 by default to keep the file small) and
    ``NAME.json`` (``info`` plus the architecture).

    With ``half=True`` the network is evaluated with float16-rounded weights afterwards
    (:func:`load_pretrained` upcasts them to float32), so measure iterations on the
    reloaded model.
    """
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().cpu().to(dtype).contiguous() for k, v in model.state_dict().items()}
    torch.save(state, d / f"{name}.pt")
    info = dict(info)
    info["architecture"] = model.config() | {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "stored_dtype": str(dtype).replace("torch.", ""),
    }
    (d / f"{name}.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return d / f"{name}.pt"
