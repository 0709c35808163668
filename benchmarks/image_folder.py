"""What the image-folder cache saves: decoding a folder against loading its cache, side by side.

Writes a folder of JPEG photos-sized pictures (default 600 pictures of 640x480), then times,
interleaved and repeated: a cold load (no cache: hash + decode + resize + write cache), a warm
load (hash + read cache), and for reference the hash alone. Prints medians and the ratio
cold / warm. The machine may be shared: only medians of interleaved runs mean anything.

    python benchmarks/image_folder.py [--pictures 600] [--side 640] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gossipnet.data.folder import CACHE_DIRNAME, read_folder  # noqa: E402


def write_pictures(root: Path, n: int, side: int) -> int:
    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (side // 16, side // 16 * 4 // 3, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side * 4 // 3, side), Image.Resampling.BICUBIC)
        path = d / f"{i:05d}.jpg"
        img.save(path, quality=90)
        total += path.stat().st_size
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pictures", type=int, default=600)
    p.add_argument("--side", type=int, default=480)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gossipnet-folder-bench-"))
    try:
        size = write_pictures(root, args.pictures, args.side)
        cold, warm = [], []
        for _ in range(args.repeats):
            shutil.rmtree(root / CACHE_DIRNAME, ignore_errors=True)
            t = time.perf_counter()
            got = read_folder(root, image_size=32)
            cold.append(time.perf_counter() - t)
            assert not got.from_cache
            t = time.perf_counter()
            got = read_folder(root, image_size=32)
            warm.append(time.perf_counter() - t)
            assert got.from_cache
        result = {"pictures": args.pictures, "megabytes": round(size / 1e6, 1),
                  "cold_s": round(statistics.median(cold), 3), "warm_s": round(statistics.median(warm), 3),
                  "ratio_cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 1)}
        print(f"{args.pictures} pictures ({result['megabytes']} MB of JPEG, {args.side * 4 // 3}x{args.side}): "
              f"decode {result['cold_s']:.2f} s, from cache {result['warm_s']:.2f} s, "
              f"{result['ratio_cold_over_warm']:.1f}x (medians of {args.repeats})")
        if args.json:
            print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
