"""Image folders written by tests: PNG and JPEG, grey and colour, odd sizes, learnable classes.

Each class is a place where the picture is bright: the left half, the top half, or a centre
square, on noise. That survives grey or colour, any size and the squash to a square, so a
small net learns it in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("centre", "left", "top")


def picture(cls: str, rng: np.random.Generator, height: int, width: int, colour: bool) -> Image.Image:
    a = rng.integers(0, 90, (height, width), dtype=np.int64)
    if cls == "left":
        a[:, : width // 2] += 140
    elif cls == "top":
        a[: height // 2] += 140
    else:
        a[height // 4: 3 * height // 4, width // 4: 3 * width // 4] += 140
    a = np.clip(a, 0, 255).astype(np.uint8)
    if not colour:
        return Image.fromarray(a, "L")
    tint = rng.integers(0, 60, 3)
    rgb = np.clip(a[..., None].astype(np.int64) + tint - 30, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def write_class(folder: Path, cls: str, n: int, seed: int, colour: bool | None = None) -> list[Path]:
    """``n`` pictures of ``cls`` in ``folder``: alternately PNG and JPEG, grey and colour, odd sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, CLASSES.index(cls) if cls in CLASSES else 99])
    paths = []
    for i in range(n):
        h, w = int(rng.integers(19, 61)), int(rng.integers(19, 61))
        is_colour = (i % 3 != 0) if colour is None else colour
        img = picture(cls if cls in CLASSES else "centre", rng, h, w, is_colour)
        path = folder / (f"{cls}_{i:03d}.png" if i % 2 else f"{cls}_{i:03d}.JPG")
        img.save(path, format="PNG" if i % 2 else "JPEG", quality=92)
        paths.append(path)
    return paths


def write_folder(root: Path, n: int = 40, seed: int = 0, classes=CLASSES, colour: bool | None = None) -> Path:
    for cls in classes:
        write_class(root / cls, cls, n, seed, colour)
    return root


def write_corrupt(path: Path) -> Path:
    """A file named like a PNG that stops after the signature and a few bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    return path


def train_folder_model(pictures: Path, out: Path, epochs: int = 6) -> Path:
    """``gossipnet train`` the tiny net on a picture folder (16 px) into checkpoint ``out``."""
    from gossipnet.cli import main

    assert main(["train", "--dataset", "folder", "--data-dir", str(pictures), "--net", "tiny", "--image-size",
                 "16", "--epochs", str(epochs), "--quiet", "--cores", "1", "--checkpoint", str(out)]) == 0
    return out
