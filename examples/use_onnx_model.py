"""Classify pictures with a model exported by `gossipnet export --onnx`, without gossipnet.

Needs only numpy, Pillow and onnxruntime (pip install numpy pillow onnxruntime), so it
runs on any machine, a Raspberry Pi included. Everything it needs to know about the
model is inside the file: the input's shape and the class names in its metadata.

    python examples/use_onnx_model.py model.onnx cat.jpg dog.png [--top-k 3] [--json]

The preprocessing is gossipnet's (gossipnet/data/images.py): let a JPEG decode at a reduced
scale no smaller than the input, apply the EXIF orientation,
convert to grey ("L") or RGB, squash to the input's side with bilinear resampling, and
feed float32 pixel values 0-255 in NCHW order. The graph normalises by itself.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load(path: str) -> tuple[ort.InferenceSession, list[str], tuple[int, int, int]]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"])
    _, c, h, w = session.get_inputs()[0].shape  # ("N", C, H, W)
    return session, classes, (int(c), int(h), int(w))


def picture(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    with Image.open(path) as img:
        img.draft(img.mode, (w, h))  # JPEG: decode at a reduced scale, as gossipnet does
        img = ImageOps.exif_transpose(img).convert("L" if c == 1 else "RGB")
        img = img.resize((w, h), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
    return x[None] if c == 1 else x.transpose(2, 0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON line per picture, like gossipnet predict --json")
    args = p.parse_args(argv)
    session, classes, shape = load(args.model)
    batch = np.stack([picture(path, shape) for path in args.images])
    (probs,) = session.run(["probabilities"], {"image": batch})
    for path, row in zip(args.images, probs):
        best = np.argsort(-row, kind="stable")[: args.top_k]
        preds = [{"label": classes[i], "probability": float(row[i])} for i in best]
        if args.json:
            print(json.dumps({"image": path, "predictions": preds}))
        else:
            print(f"{path}: " + ", ".join(f"{q['label']} {q['probability']:.1%}" for q in preds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
