"""Built-in data for EP experiments: scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["load_digits_split"]


def load_digits_split(*, test_size: float = 0.2, split_seed: int = 0, library: str = "numpy",
                      dtype: Any = None, images: bool = False):
    """Digits 8x8 (1797 samples, 10 classes), pixels scaled to [0, 1], stratified split.

    Parameters
    ----------
    test_size : float
        Fraction held out (default 0.2: 1437 train / 360 test).
    split_seed : int
        Seed of the split (fixed across training seeds so runs share one test set).
    library : {"numpy", "torch"}
    dtype
        Default float64.
    images : bool
        Return inputs of shape ``(N, 1, 8, 8)`` (for the convolutional network) instead of
        ``(N, 64)``.

    Returns
    -------
    X_train, y_train, X_test, y_test
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=split_seed,
                                          stratify=y)
    if images:
        Xtr, Xte = Xtr.reshape(-1, 1, 8, 8), Xte.reshape(-1, 1, 8, 8)
    if library == "torch":
        import torch

        dt = dtype or torch.float64
        return (torch.as_tensor(Xtr, dtype=dt), torch.as_tensor(ytr),
                torch.as_tensor(Xte, dtype=dt), torch.as_tensor(yte))
    if library != "numpy":
        raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")
    dt = dtype or np.float64
    return Xtr.astype(dt), ytr, Xte.astype(dt), yte
