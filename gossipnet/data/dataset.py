"""The in-memory form every data set loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A labelled image data set, ready for the convnet.

    Images are float32 in NCHW layout, normalised (zero mean, unit variance per
    channel, with statistics taken from the training split only); labels are
    int64 class indices.
    """

    name: str
    x_train: np.ndarray  # (N, C, H, W) float32
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, C, H, W) float32
    y_test: np.ndarray  # (M,) int64
    classes: tuple[str, ...]
    # Per-channel statistics the images were normalised with, (u8 - mean) / std: a browser
    # volunteer gets uint8 pixels and normalises them bit for bit as the node did. Empty
    # for data sets built directly from floats (volunteers then cannot be served).
    pixel_mean: tuple[float, ...] = ()
    pixel_std: tuple[float, ...] = ()
    # Pictures of an image folder that could not be decoded: (path, reason).
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
