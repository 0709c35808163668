"""Your own pictures as a data set: ``DIR/<class>/*.png|jpg|...``, the ImageFolder convention.

Two layouts, as torchvision's ``ImageFolder`` and Keras's ``image_dataset_from_directory``
read them: ``DIR/<class>/...`` (a held-out test split is drawn per class by a seeded
fraction, so every node of a swarm draws the same one), or ``DIR/train/<class>/...`` with
``DIR/test/<class>/...``. Classes are the sub-directory names, sorted; files are found
recursively by suffix; hidden entries (``.name``) are ignored.

Decoding is the slow part, so it happens once: the decoded uint8 arrays go to a cache file
named by a sha256 over every image's relative path and bytes plus the preprocessing
settings. The cache lives in ``DIR/.gossipnet-cache/`` when the folder is writable (a second
node on the same share then finds it) and in ``~/.cache/gossipnet/folders/`` otherwise; it
is written atomically and a damaged one is rebuilt. Hashing reads every file, which costs a
small fraction of decoding it; a stat-based key (size, mtime) would be cheaper but misses
copies and in-place edits with a preserved mtime.

A picture that cannot be decoded is skipped and reported with its path and reason; it never
stops training. An empty class, a single class, or train and test folders whose class
lists differ are ``UserError``s naming the folder and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy as stn

from gossipnet.data.download import default_cache_dir
from gossipnet.data.images import COLOR_MODES, SUFFIXES, BadImage, decode_image, is_colour
from gossipnet.data.normalize import RawData
from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".gossipnet-cache"
CACHE_FORMAT = "gossipnet-folder-cache/1"
# Without --image-size: the side the built-in presets take, so a preset fits the data as it
# is (fashion and tiny: 28x28 grey; convnetjs-cifar10: 32x32 colour).
DEFAULT_SIZE = {1: 28, 3: 32}
DEFAULT_TEST_FRACTION = 0.2
MAX_IMAGES = 2_000_000  # refuse a mistyped --data-dir=/ before hashing the disk
_HEADER_SAMPLE = 200  # headers read per class to guess grey or colour


@dataclass(frozen=True)
class FolderData:
    """Decoded images of one folder, plus what was skipped and where the cache is."""

    raw: RawData
    skipped: tuple[tuple[str, str], ...]  # (path relative to DIR, reason)
    cache_path: Path | None
    from_cache: bool
    key: str = field(default="")

    @property
    def channels(self) -> int:
        return int(self.raw.x_train.shape[1])


def read_folder(data_dir: str | os.PathLike, *, image_size: int | None = None,
                color_mode: str = "auto", test_fraction: float = DEFAULT_TEST_FRACTION,
                seed: int = 0, cache_dir: str | os.PathLike | None = None) -> FolderData:
    """Scan, split, decode (or read the cache of) an image folder."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} {'is not a directory' if root.exists() else 'does not exist'}; "
                        "--data-dir must hold one sub-directory of pictures per class")
    if color_mode not in ("auto", *COLOR_MODES):
        raise UserError(f"colour mode {color_mode!r} unknown: use auto, {', '.join(COLOR_MODES)}")
    if image_size is not None and not (isinstance(image_size, int) and 4 <= image_size <= 512):
        raise UserError(f"--image-size must be an integer from 4 to 512 pixels, got {image_size!r}")
    if not 0 < test_fraction < 1:
        raise UserError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    train, test, classes = _layout(root, test_fraction, seed)
    every = [p for part in (train, test) for ps in part for p in ps]
    key = _cache_key(root, every, image_size, color_mode, test_fraction, seed)
    locations = _cache_locations(root, key, cache_dir)
    for path in locations:
        cached = _read_cache(path, key)
        if cached is not None:
            log.info("image folder %s: decoded images from the cache %s", root, path)
            return FolderData(cached[0], cached[1], path, True, key)
    channels = COLOR_MODES.get(color_mode) or _guess_channels(train)
    size = image_size or DEFAULT_SIZE[channels]
    skipped: list[tuple[str, str]] = []
    x_train, y_train = _decode_split(root, train, size, channels, skipped)
    x_test, y_test = _decode_split(root, test, size, channels, skipped)
    for split, y in (("train", y_train), ("test", y_test)):
        counts = np.bincount(y, minlength=len(classes))
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise UserError(f"image folder {root}: no readable {split} image in class "
                            f"{', '.join(map(repr, empty))} ({len(skipped)} pictures could not be decoded: "
                            f"{_examples(skipped)}); add pictures that open in an image viewer")
    raw = RawData(x_train, y_train, x_test, y_test, classes)
    written = None
    for path in locations:
        if _write_cache(path, key, raw, skipped):
            written = path
            break
    return FolderData(raw, tuple(skipped), written, False, key)


def _layout(root: Path, test_fraction: float, seed: int):
    """(train files per class, test files per class, class names) from the folder's layout."""
    subdirs = _subdirs(root)
    names = {d.name for d in subdirs}
    if {"train", "test"} <= names:
        train_classes, test_classes = _subdirs(root / "train"), _subdirs(root / "test")
        a, b = [d.name for d in train_classes], [d.name for d in test_classes]
        if a != b:
            only_train, only_test = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            raise UserError(
                f"image folder {root}: train/ and test/ must hold the same classes; only in train/: "
                f"{', '.join(only_train) or 'none'}; only in test/: {', '.join(only_test) or 'none'}. "
                "Add or rename sub-directories so both lists match")
        classes = _check_classes(root / "train", a)
        train = [_images(d) for d in train_classes]
        test = [_images(d) for d in test_classes]
        for d, files in zip(train_classes + test_classes, train + test):
            if not files:
                raise _empty_class(d)
        return train, test, classes
    if names & {"train", "test"} and len(names) == 1:
        have = next(iter(names))
        raise UserError(f"image folder {root} holds {have}/ but no {'test' if have == 'train' else 'train'}/; "
                        "give both train/<class>/ and test/<class>/, or put the class folders directly in "
                        f"{root} to hold out a seeded fraction for testing")
    classes = _check_classes(root, [d.name for d in subdirs])
    train, test = [], []
    for i, d in enumerate(subdirs):
        files = _images(d)
        if not files:
            raise _empty_class(d)
        if len(files) < 2:
            raise UserError(f"class {d.name!r} ({d}) has a single picture; a held-out split needs at least 2 "
                            "per class (add pictures, or give train/ and test/ folders)")
        order = np.random.default_rng([seed, i]).permutation(len(files))
        n_test = min(len(files) - 1, max(1, round(test_fraction * len(files))))
        test.append(sorted(files[j] for j in order[:n_test]))
        train.append(sorted(files[j] for j in order[n_test:]))
    return train, test, classes


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted((d for d in folder.iterdir() if not d.name.startswith(".") and d.is_dir()),
                      key=lambda d: d.name)
    except OSError as exc:
        raise UserError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _check_classes(root: Path, names: list[str]) -> tuple[str, ...]:
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise UserError(f"image folder {root} needs at least 2 class sub-directories (found {found}): "
                        f"DIR/<class>/*{'|*'.join(SUFFIXES[:3])}, one folder per label")
    return tuple(names)


def _images(folder: Path) -> list[Path]:
    out, count = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                out.append(Path(dirpath) / name)
                count += 1
                if count > MAX_IMAGES:
                    raise UserError(f"{folder} holds more than {MAX_IMAGES:,} pictures; is --data-dir right?")
    return out


def _empty_class(d: Path) -> UserError:
    return UserError(f"class folder {d} holds no pictures ({', '.join(SUFFIXES)}); "
                     "add some, or remove the folder if it is not a class")


def _cache_key(root: Path, files: list[Path], size, mode, fraction, seed) -> str:
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, size, mode, fraction, seed]).encode())
    for path in files:
        h.update(b"\0" + str(path.relative_to(root)).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        except OSError as exc:
            h.update(f"unreadable {exc.errno}".encode())  # decoding reports it; the key stays defined
    return h.hexdigest()


def _cache_locations(root: Path, key: str, cache_dir) -> list[Path]:
    name = f"{key[:32]}.safetensors"
    user = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "folders"
    return [root / CACHE_DIRNAME / name, user / name]


def _read_cache(path: Path, key: str) -> tuple[RawData, list[tuple[str, str]]] | None:
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
        meta = json.loads(stn_metadata(data).get("gossipnet", "{}"))
        tensors = stn.load(data)
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise ValueError("written for other files or settings")
        raw = RawData(tensors["x_train"], tensors["y_train"].astype(np.int64), tensors["x_test"],
                      tensors["y_test"].astype(np.int64), tuple(meta["classes"]))
        for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y) or len(x) == 0:
                raise ValueError("arrays do not fit together")
            if y.min() < 0 or y.max() >= len(raw.classes):
                raise ValueError("labels out of range")
        return raw, [tuple(s) for s in meta["skipped"]]
    except Exception as exc:  # any defect means: decode again and overwrite
        log.warning("image cache %s is unusable (%s); decoding the folder again", path, exc)
        return None


def stn_metadata(data: bytes) -> dict:
    """The ``__metadata__`` map of safetensors bytes (json header after an 8-byte length)."""
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, 1 << 24):
        raise ValueError("header length does not fit the file")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def _write_cache(path: Path, key: str, raw: RawData, skipped) -> bool:
    meta = {"format": CACHE_FORMAT, "key": key, "classes": list(raw.classes), "skipped": skipped}
    tensors = {"x_train": raw.x_train, "y_train": raw.y_train.astype(np.int32),
               "x_test": raw.x_test, "y_test": raw.y_test.astype(np.int32)}
    try:
        atomic_write_bytes(path, stn.save(tensors, metadata={"gossipnet": json.dumps(meta)}))
    except OSError as exc:
        log.info("cannot write the image cache %s (%s); trying the next place", path, exc.strerror or exc)
        return False
    return True


def _guess_channels(train: list[list[Path]]) -> int:
    """3 if any sampled header declares colour, else 1 (a folder of grey scans stays grey)."""
    for files in train:
        for path in files[:_HEADER_SAMPLE]:
            if is_colour(path):
                return 3
    return 1


def _decode_split(root: Path, per_class: list[list[Path]], size: int, channels: int,
                  skipped: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    jobs = [(label, path) for label, files in enumerate(per_class) for path in files]

    def one(job):
        try:
            return decode_image(job[1], size, channels)
        except BadImage as exc:
            return str(exc)

    # Pillow releases the GIL while it decodes and resizes, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, jobs))
    images, labels = [], []
    for (label, path), out in zip(jobs, results):
        if isinstance(out, str):
            rel = str(path.relative_to(root))
            skipped.append((rel, out))
        else:
            images.append(out)
            labels.append(label)
    x = np.stack(images) if images else np.zeros((0, channels, size, size), np.uint8)
    return x, np.asarray(labels, dtype=np.int64)


def _examples(skipped: list[tuple[str, str]], k: int = 3) -> str:
    shown = "; ".join(f"{p}: {r}" for p, r in skipped[:k])
    return shown + (f"; and {len(skipped) - k} more" if len(skipped) > k else "") if skipped else "none"
