#!/usr/bin/env python3
"""Build gossipnet's embedded data set: a class-balanced Fashion-MNIST subset.

Picks ``--train-per-class`` training and ``--test-per-class`` test images of
each of the 10 classes with a fixed seed, keeps them in their original order,
and writes them as gzipped IDX files (readable by ``gossipnet.data.idx``) into
``gossipnet/data/embedded/``, together with the indices they were taken from,
the licence notice, and a README. The output is byte-for-byte reproducible:
``--check`` rebuilds in memory and compares with what is committed.

    python scripts/build_embedded.py [--source DIR] [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gossipnet.data.idx import encode_idx, read_idx  # noqa: E402
from gossipnet.data.mnist import FASHION_CLASSES, FILES  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "fashion-mnist"
DEFAULT_OUT = REPO / "gossipnet" / "data" / "embedded"
SEED = 20170825  # Fashion-MNIST's release date (arXiv:1708.07747), an arbitrary fixed choice
TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200
INDEX_FILES = ("train-source-indices-idx1-int.gz", "t10k-source-indices-idx1-int.gz")


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` items of every class, drawn without replacement."""
    picks = []
    for cls in range(len(FASHION_CLASSES)):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise SystemExit(f"class {cls} has only {len(members)} items, fewer than {per_class}")
        picks.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def select(
    train_labels: np.ndarray, test_labels: np.ndarray, train_per_class: int, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The source indices of the subset: training split first, then test, from one generator."""
    rng = np.random.default_rng(seed)
    return balanced_subset(train_labels, train_per_class, rng), balanced_subset(test_labels, test_per_class, rng)


def build(source: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, bytes]:
    """File name -> bytes of every generated file (README and COPYRIGHT included)."""
    arrays = {stem: read_idx(source / f"{stem}.gz") for stem in FILES}
    raw_sha = {stem: hashlib.sha256(encode_idx(a)).hexdigest() for stem, a in arrays.items()}
    train, test = select(
        arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"], train_per_class, test_per_class, seed
    )
    chosen = {"train": train, "t10k": test}
    out: dict[str, bytes] = {}
    for stem, array in arrays.items():
        out[f"{stem}.gz"] = _gzip(encode_idx(array[chosen[stem.split("-")[0]]]))
    out[INDEX_FILES[0]] = _gzip(encode_idx(train.astype(np.int32)))
    out[INDEX_FILES[1]] = _gzip(encode_idx(test.astype(np.int32)))
    out["COPYRIGHT"] = (source / "COPYRIGHT").read_bytes()
    out["README.md"] = _readme(raw_sha, len(train), len(test), train_per_class, test_per_class, seed).encode()
    return out


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)  # mtime 0: reproducible bytes


def _readme(raw_sha: dict[str, str], n_train: int, n_test: int, per_train: int, per_test: int, seed: int) -> str:
    sums = "\n".join(f"    {digest}  {stem}" for stem, digest in raw_sha.items())
    return f"""# Embedded data set: a Fashion-MNIST subset

gossipnet's default data set, so a node can train with no network and no data
directory. It is real Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017,
arXiv:1708.07747; https://github.com/zalandoresearch/fashion-mnist), MIT
licensed: see `COPYRIGHT` beside this file, copied from the source.

- `train-*`: {n_train:,} of the 60,000 training images, {per_train:,} of each class.
- `t10k-*`: {n_test:,} of the 10,000 test images, {per_test:,} of each class.
- Same IDX format as the original release, gzipped; 28x28 uint8, labels 0-9 in
  the original order (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal,
  Shirt, Sneaker, Bag, Ankle boot).
- `*-source-indices-idx1-int.gz`: for each image, its index in the original
  file (int32 IDX), so anyone can check the subset against the source.

## How it was built

`python scripts/build_embedded.py` (in the gossipnet repository): for each
class, numpy's `default_rng({seed})` draws the images without replacement
(training split first, then test); the chosen indices are sorted, so images
keep their original relative order. Gzip headers carry no timestamp, so
`python scripts/build_embedded.py --check` reproduces these files byte for byte.

sha256 of the uncompressed source IDX files it was built from:

{sums}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Fashion-MNIST IDX .gz directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the subset")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = parser.parse_args(argv)

    files = build(args.source, args.train_per_class, args.test_per_class, args.seed)
    if args.check:
        stale = [n for n, data in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != data]
        for name in stale:
            print(f"differs: {args.out / name}", file=sys.stderr)
        print("up to date" if not stale else f"{len(stale)} file(s) differ; rerun without --check")
        return 1 if stale else 0
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)  # replace the whole directory, so no stale file survives
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files, {total:,} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
