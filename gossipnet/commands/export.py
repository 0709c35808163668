"""``gossipnet export MODEL --onnx OUT.onnx``: a trained model for other frameworks.

MODEL is anything ``gossipnet predict`` takes. The ONNX graph's input, layout, scaling and
class names are described in ``gossipnet/onnx_export.py`` and docs/MODELS.md. ``--safetensors``
writes the weights with the model description in the file's metadata instead.
"""

from __future__ import annotations

import argparse
import sys

from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes
from gossipnet.model import load_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained model as ONNX (or a safetensors model file)",
                       description="Export a trained convnet: a train checkpoint, a node's state "
                       "directory, or a model file.")
    p.add_argument("model", metavar="MODEL", help="train checkpoint, node state directory, or model file")
    p.add_argument("--onnx", metavar="OUT.onnx", default=None, help="write an ONNX graph (needs gossipnet[onnx])")
    p.add_argument("--safetensors", metavar="OUT.safetensors", default=None,
                   help="write the weights and model description as one safetensors file")


def run(args: argparse.Namespace) -> int:
    if not args.onnx and not args.safetensors:
        raise UserError("say what to write: --onnx OUT.onnx and/or --safetensors OUT.safetensors")
    model = load_model(args.model)
    outputs = []
    if args.onnx:
        from gossipnet.onnx_export import export_onnx

        outputs.append((args.onnx, export_onnx(model)))
    if args.safetensors:
        outputs.append((args.safetensors, model.to_bytes()))
    for path, data in outputs:
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(f"wrote {path} ({len(data):,} bytes; {len(model.card.classes)} classes, input "
              f"{'x'.join(map(str, model.card.input_shape))})", file=sys.stderr)
    return 0
