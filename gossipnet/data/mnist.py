"""MNIST-style data sets: four IDX files in a directory (MNIST, Fashion-MNIST, embedded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gossipnet.data.idx import read_idx
from gossipnet.data.normalize import RawData
from gossipnet.errors import UserError

# The four files of the original releases; each may be gzipped (``.gz``) or not.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_CLASSES = tuple(str(d) for d in range(10))
# Label order from https://github.com/zalandoresearch/fashion-mnist#labels
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

WHERE = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of http://yann.lecun.com/exdb/mnist/)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist "
    "(files at http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)",
}

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def find_files(data_dir: Path, name: str) -> list[Path]:
    """The four IDX files in ``data_dir``, by their usual names, gzipped or not."""
    data_dir = Path(data_dir).expanduser()
    where = WHERE.get(name, "the package (reinstall gossipnet)")
    if not data_dir.is_dir():
        raise UserError(
            f"{name} data directory {data_dir} does not exist; it must hold {', '.join(FILES)} "
            f"(each optionally .gz), from {where}"
        )
    found, missing = [], []
    for stem in FILES:
        # Some mirrors (e.g. Kaggle's) write "train-images.idx3-ubyte" with a dot.
        dotted = stem.replace("-idx", ".idx")
        candidates = [data_dir / n for n in (stem + ".gz", stem, dotted + ".gz", dotted)]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(stem)
        else:
            found.append(hit)
    if missing:
        raise UserError(
            f"{name}: {data_dir} lacks {', '.join(m + '[.gz]' for m in missing)}; "
            f"it must hold all of {', '.join(FILES)} (each optionally .gz), from {where}"
        )
    return found


def read_idx_set(data_dir: str | Path, name: str, classes: tuple[str, ...]) -> RawData:
    """Read an MNIST-style directory into uint8 NCHW images (one channel) and labels."""
    train_images, train_labels, test_images, test_labels = find_files(Path(data_dir), name)
    x_train = _images(train_images)
    y_train = _labels(train_labels, x_train, train_images)
    x_test = _images(test_images)
    y_test = _labels(test_labels, x_test, test_images)
    return RawData(x_train, y_train, x_test, y_test, classes)


def _images(path: Path) -> np.ndarray:
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise UserError(
            f"{path}: expected uint8 images of shape (N, rows, cols), got {array.dtype} {array.shape}"
        )
    return array[:, None]


def _labels(path: Path, images: np.ndarray, images_path: Path) -> np.ndarray:
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise UserError(f"{path}: expected uint8 labels of shape (N,), got {array.dtype} {array.shape}")
    if len(array) != len(images):
        raise UserError(
            f"{path} has {len(array):,} labels but {images_path.name} has {len(images):,} images; "
            "the files come from different releases"
        )
    return array
