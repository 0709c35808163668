"""``load_dataset``: one entry point from a data set's name to a normalised ``Dataset``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gossipnet.data import cifar10
from gossipnet.data.dataset import Dataset
from gossipnet.data.mnist import EMBEDDED_DIR, FASHION_CLASSES, MNIST_CLASSES, WHERE, read_idx_set
from gossipnet.data.normalize import to_dataset
from gossipnet.errors import UserError

DATASET_NAMES = ("embedded", "fashion-mnist", "mnist", "cifar10", "folder")
log = logging.getLogger(__name__)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
    image_size: int | None = None,
    color_mode: str = "auto",
    test_fraction: float | None = None,
) -> Dataset:
    """Load a data set by name: float32 NCHW, normalised with training statistics.

    ``embedded`` (a Fashion-MNIST subset shipped in the package) needs nothing.
    ``fashion-mnist`` and ``mnist`` need ``data_dir`` holding the four IDX files.
    ``cifar10`` reads ``data_dir`` if given, else the archive in ``cache_dir``
    (default ``~/.cache/gossipnet``), downloading it there first if ``download``.
    ``folder`` reads ``data_dir/<class>/*`` pictures (``gossipnet.data.folder``), resized to
    ``image_size`` in ``color_mode`` (auto, grayscale or rgb).
    """
    if name not in DATASET_NAMES:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if name == "embedded":
        if data_dir is not None:
            raise UserError("the embedded data set ships inside gossipnet; do not pass a data directory")
        return to_dataset(name, read_idx_set(EMBEDDED_DIR, name, FASHION_CLASSES))
    if name == "folder":
        return load_folder(data_dir, image_size=image_size, color_mode=color_mode,
                           test_fraction=test_fraction, cache_dir=cache_dir)
    if name == "cifar10":
        if data_dir is not None:
            return to_dataset(name, cifar10.read_cifar10(data_dir))
        archive = cifar10.cached_archive(cache_dir, fetch=download)
        try:
            raw = cifar10.read_cifar10(archive)
        except UserError as exc:
            raise UserError(f"{exc}. The cached copy is damaged: delete {archive} and download again") from None
        return to_dataset(name, raw)
    if data_dir is None:
        raise UserError(
            f"{name} needs a data directory holding its four IDX files "
            f"(train-images-idx3-ubyte.gz and friends), from {WHERE[name]}; "
            "or use the embedded data set, which needs none"
        )
    classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    return to_dataset(name, read_idx_set(data_dir, name, classes))


def load_folder(data_dir, *, image_size: int | None = None, color_mode: str = "auto",
                test_fraction: float | None = None, cache_dir=None) -> Dataset:
    """An image folder as a normalised ``Dataset`` whose ``skipped`` lists undecodable pictures."""
    from gossipnet.data.folder import DEFAULT_TEST_FRACTION, read_folder

    if data_dir is None:
        raise UserError("--dataset folder needs --data-dir DIR holding one sub-directory of pictures "
                        "per class (DIR/<class>/*.jpg), or DIR/train/<class>/ and DIR/test/<class>/")
    got = read_folder(data_dir, image_size=image_size, color_mode=color_mode, cache_dir=cache_dir,
                      test_fraction=DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction)
    for path, reason in got.skipped:
        log.warning("image folder %s: skipped %s (%s)", data_dir, path, reason)
    return dataclasses.replace(to_dataset("folder", got.raw), skipped=got.skipped)
