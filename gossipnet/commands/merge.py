"""``gossipnet merge``: average checkpoints of one preset, aligning their hidden units first.

Reads checkpoints written by ``gossipnet train --checkpoint`` (or by this command),
refuses files of different architectures, evaluates each input and the result on the
data set's test split, and writes the merged net as a checkpoint ``gossipnet train``
and ``gossipnet merge`` can read again. ``--match weights`` (the default) aligns every
net to a common unit order before averaging (Git Re-Basin's weight matching, MergeMany
for more than two; ``activations`` lines units up by their responses to training
images instead); ``--repair`` rescales the merged units to the parents' activation
statistics measured on a few hundred training images (REPAIR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gossipnet.errors import UserError
from gossipnet.nn import Net, evaluate
from gossipnet.nn.state import load_state, save_state, strip_prefix, with_prefix
from gossipnet.rebasin import (
    match_many, match_many_activations, merge_aligned, permutation_spec, repair,
)

DATASETS = ("embedded", "fashion-mnist", "mnist", "cifar10")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge checkpoints of one network preset into one model (weight matching + averaging)",
        description="Average two or more checkpoints written by `gossipnet train --checkpoint`. "
        "Nets trained from different seeds have their hidden units in different orders: "
        "--match weights lines them up first.",
    )
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT", help="two or more .safetensors files")
    p.add_argument("-o", "--output", required=True, help="where to write the merged checkpoint")
    p.add_argument("--match", choices=["none", "weights", "activations"], default="weights",
                   help="align hidden units before averaging: by their weights (default), or by "
                   "their activations on --sample-images training images (better for nets "
                   "trained only briefly)")
    p.add_argument("--repair", action="store_true",
                   help="rescale merged units to the parents' activation statistics (REPAIR)")
    p.add_argument("--sample-images", type=int, default=500,
                   help="training images REPAIR and activation matching measure (default 500)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="data set to evaluate on (default: the one the inputs were trained on)")
    p.add_argument("--data-dir", default=None, help="directory holding the data set's files")
    p.add_argument("--json", action="store_true", help="print a final line of JSON with the results")


def read_net_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, net weights) of a checkpoint written by ``gossipnet train`` or ``merge``."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist (or is not a file); "
                        "write one with `gossipnet train --checkpoint PATH`")
    tensors, meta = load_state(path)
    weights = strip_prefix("net.", tensors)
    if not weights or not isinstance(meta.get("spec"), list) or "input_shape" not in meta:
        raise UserError(f"{path} is a gossipnet file but not a network checkpoint (no net.* "
                        "weights or no spec); merge files written by `gossipnet train --checkpoint`")
    return meta, weights


def _describe(meta: dict) -> str:
    return f"preset {meta.get('net', '?')!r} (fingerprint {meta.get('fingerprint', '?')})"


def load_inputs(paths: list[str]) -> tuple[Net, list[dict], list[dict[str, np.ndarray]]]:
    """A net of the inputs' architecture and every input's (meta, weights), all checked."""
    if len(paths) < 2:
        raise UserError("give at least two checkpoints to merge")
    if len(set(map(str, paths))) != len(paths):
        raise UserError("the same checkpoint is given twice; merge distinct files")
    metas, weights = [], []
    for path in paths:
        meta, w = read_net_checkpoint(path)
        metas.append(meta)
        weights.append(w)
    first = metas[0]
    try:
        net = Net(first["spec"], tuple(first["input_shape"]))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{paths[0]}: its network spec does not build ({exc})") from None
    for path, meta, w in zip(paths, metas, weights):
        if meta.get("net") != first.get("net") or meta.get("fingerprint") != first.get("fingerprint"):
            raise UserError(f"{path} holds {_describe(meta)} but {paths[0]} holds {_describe(first)}: "
                            "only checkpoints of one network preset can be merged")
        try:
            net.load_state_dict(w)  # names, shapes, dtypes, finiteness
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
    return net, metas, weights


def run(args: argparse.Namespace) -> int:
    from gossipnet.data import load_dataset

    net, metas, inputs = load_inputs(args.inputs)
    dataset = args.dataset or metas[0].get("dataset") or "embedded"
    if dataset not in DATASETS:
        raise UserError(f"{args.inputs[0]} names data set {dataset!r}; pass --dataset")
    if dataset == "embedded" and args.data_dir is not None:
        args.data_dir = None
    ds = load_dataset(dataset, args.data_dir)
    if tuple(ds.input_shape) != net.input_shape:
        raise UserError(f"the inputs take {net.input_shape} images but {dataset} has "
                        f"{tuple(ds.input_shape)}; pass the --dataset they were trained on")
    if args.repair and args.match == "none":
        raise UserError("--repair corrects a matched merge; use it with --match weights")
    if args.sample_images < 1:
        raise UserError(f"--sample-images must be at least 1, got {args.sample_images}")
    sample = ds.x_train[: args.sample_images]

    def accuracy(weights) -> float:
        net.load_state_dict(weights)
        return evaluate(net, ds.x_test, ds.y_test)["accuracy"]

    spec = permutation_spec(net)
    if args.match == "weights":
        aligned = match_many(spec, inputs)
    elif args.match == "activations":
        aligned = match_many_activations(net, spec, inputs, sample)
    else:
        aligned = list(inputs)
    merged = merge_aligned(aligned)
    if args.repair:
        merged = repair(net, merged, aligned, sample, spec)
    report = {
        "inputs": [{"path": p, "test_accuracy": accuracy(w), "seed": m.get("seed")}
                   for p, w, m in zip(args.inputs, inputs, metas)],
        "result": {"path": args.output, "test_accuracy": accuracy(merged)},
        "match": args.match, "repair": args.repair, "net": metas[0].get("net"),
        "dataset": dataset, "test_images": len(ds.y_test),
    }
    report["inputs_mean_accuracy"] = float(np.mean([r["test_accuracy"] for r in report["inputs"]]))
    meta = {k: metas[0][k] for k in ("net", "spec", "input_shape", "fingerprint") if k in metas[0]}
    save_state(args.output, with_prefix("net.", merged),
               {**meta, "dataset": dataset, "test_accuracy": report["result"]["test_accuracy"],
                "merged_from": list(args.inputs), "match": args.match, "repair": args.repair})
    how = {"none": "plain average", "weights": "weight matching",
           "activations": "activation matching"}[args.match] + (" + REPAIR" if args.repair else "")
    for r in report["inputs"]:
        print(f"{r['path']}: test accuracy {r['test_accuracy']:.2%}")
    print(f"merged ({how}) -> {args.output}: test accuracy {report['result']['test_accuracy']:.2%} "
          f"(inputs' mean {report['inputs_mean_accuracy']:.2%})")
    if args.json:
        sys.stdout.flush()
        print(json.dumps(report))
    return 0
