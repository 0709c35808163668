"""``gossipnet predict MODEL IMAGE...``: classify pictures with a trained model.

MODEL is a ``gossipnet train --checkpoint`` file, a node's state directory (or its
``checkpoint.safetensors``), or a ``model.safetensors`` downloaded from a status page.
Each picture is decoded and resized exactly as the training folder was. A picture that
cannot be decoded is reported (on stderr, or as ``{"image": PATH, "error": REASON}`` with
``--json``) and the exit status is 1; the others are still classified.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gossipnet.data.images import BadImage
from gossipnet.errors import UserError
from gossipnet.model import load_model

BATCH = 64  # pictures per forward pass: bounded memory for any number of arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify pictures with a trained model (top-k labels)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("model", metavar="MODEL", help="train checkpoint, node state directory, or model file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="pictures to classify (png, jpg, ...)")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="labels to show per picture (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON line per picture")


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    model = load_model(args.model)
    k = min(args.top_k, len(model.card.classes))
    failed = 0
    for start in range(0, len(args.images), BATCH):
        paths = args.images[start:start + BATCH]
        decoded: list[tuple[str, np.ndarray]] = []
        for path in paths:
            try:
                decoded.append((path, model.decode(path)))
            except BadImage as exc:
                failed += 1
                _emit(args, {"image": path, "error": str(exc)})
        if not decoded:
            continue
        probs = model.probabilities(np.stack([x for _, x in decoded]))
        for (path, _), row in zip(decoded, probs):
            _emit(args, {"image": path, "predictions": model.top_k(row, k)})
    return 1 if failed else 0


def _emit(args: argparse.Namespace, result: dict) -> None:
    if args.json:
        print(json.dumps(result), flush=True)
    elif "error" in result:
        print(f"{result['image']}: cannot classify: {result['error']}", file=sys.stderr, flush=True)
    else:
        best = ", ".join(f"{p['label']} {p['probability']:.1%}" for p in result["predictions"])
        print(f"{result['image']}: {best}", flush=True)
