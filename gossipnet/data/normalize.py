"""Turn raw uint8 images into a normalised float32 ``Dataset``.

Statistics come from the training split only, so nothing about the test set
leaks into training. They are accumulated in chunks, so CIFAR-10's 150 M pixels
never need a float64 copy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gossipnet.data.dataset import Dataset
from gossipnet.errors import UserError


_CHUNK = 4096  # images per step of the statistics pass


class RawData(NamedTuple):
    """What a file reader returns: uint8 NCHW images, integer labels, class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float64) of uint8 NCHW images.

    A channel with no variation gets std 1, so normalising it gives zeros, not NaN.
    """
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty uint8 NCHW images, got {x.dtype} {x.shape}")
    means, stds = [], []
    for c in range(x.shape[1]):
        total = square = 0.0
        for start in range(0, len(x), _CHUNK):
            part = x[start : start + _CHUNK, c].reshape(-1).astype(np.float64)
            total += part.sum()
            square += part @ part  # integers below 2**53: exact in float64
        count = x[:, c].size
        mean = total / count
        var = max(square / count - mean * mean, 0.0)
        means.append(mean)
        stds.append(float(np.sqrt(var)) if var > 1e-12 else 1.0)
    return np.array(means), np.array(stds)


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 ``(x - mean) / std`` per channel, without a float64 temporary."""
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[1]):
        np.subtract(x[:, c], np.float32(mean[c]), out=out[:, c], dtype=np.float32)
        out[:, c] *= np.float32(1.0 / std[c])
    return out


def to_dataset(name: str, raw: RawData) -> Dataset:
    """Check a reader's output for consistency, then normalise it."""
    classes = tuple(raw.classes)
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if x.dtype != np.uint8 or x.ndim != 4:
            raise UserError(f"{name}: {split} images must be uint8 N x C x H x W, got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{name}: {len(x)} {split} images but {y.shape} labels; the files do not match")
        if len(x) == 0:
            raise UserError(f"{name}: the {split} split is empty")
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(classes):
            raise UserError(
                f"{name}: {split} labels must be 0 to {len(classes) - 1}, found {y.min()} to {y.max()}"
            )
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise UserError(
            f"{name}: train images are {raw.x_train.shape[1:]} but test images are {raw.x_test.shape[1:]}"
        )
    mean, std = channel_stats(raw.x_train)
    return Dataset(
        name=name,
        x_train=normalise(raw.x_train, mean, std),
        y_train=raw.y_train.astype(np.int64),
        x_test=normalise(raw.x_test, mean, std),
        y_test=raw.y_test.astype(np.int64),
        classes=classes,
        pixel_mean=tuple(float(m) for m in mean),
        pixel_std=tuple(float(v) for v in std),
    )
