"""``gossipnet train`` for images: one numpy convnet on one data set, alone.

Shows progress on stderr, evaluates on the test split every epoch, writes an atomic
safetensors checkpoint (net, optimizer and trainer state), and with ``--json`` ends with
one line of JSON on stdout for scripts (test_accuracy, epochs, images_per_s, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys

from gossipnet.errors import UserError
from gossipnet.learners.convnet import default_net_for
from gossipnet.model import ModelCard
from gossipnet.nn import PRESETS, Net, Trainer, cosine_lr, evaluate, fit_preset, get_preset, make_optimizer
from gossipnet.nn.parallel import DataParallel, WorkerDied, available_cores, check_cores
from gossipnet.nn.state import save_state, with_prefix

# Default preset per data set: the 28x28 grey sets get the stronger "fashion" net.
DEFAULT_NET = {"embedded": "fashion", "fashion-mnist": "fashion", "mnist": "fashion",
               "cifar10": "convnetjs-cifar10", "folder": "fashion"}  # folder: chosen from the data
# Default passes over the training set. embedded: ~85-87% test accuracy in well under
# 5 minutes on 2 shared cores (docs/CONVNET.md); fashion-mnist: >= 91% in 5 epochs.
DEFAULT_EPOCHS = {"embedded": 3.0, "fashion-mnist": 5.0, "mnist": 3.0, "cifar10": 10.0, "folder": 10.0}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
EVALS_PER_EPOCH = 1


def list_nets() -> str:
    lines = []
    for p in PRESETS.values():
        c, h, w = p.input_shape
        net = Net(p.spec, p.input_shape)
        lines.append(f"{p.name:<18} input {c}x{h}x{w}, {net.num_params:,} params, "
                     f"{p.optimizer} lr {p.lr:g} batch {p.batch_size}\n{'':<19}{p.summary}")
    return "\n".join(lines)


def _positive(name: str, value, kind=float):
    if value is None:
        return None
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"--{name} must be a positive number, got {value}")
    return kind(value)


class Progress:
    """tqdm's progress bar on a terminal; in a log file, one plain line per evaluation.

    The bar is tqdm's (rate, remaining time, terminal width). It is not drawn when stderr
    is not a terminal, because its carriage-return redraws turn a log into one long line.
    """

    def __init__(self, enabled: bool, total_steps: int):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            sized = shutil.get_terminal_size((0, 0)).columns > 0  # some ptys report 0 columns
            self.bar = tqdm(total=max(1, total_steps), unit="step", file=sys.stderr, dynamic_ncols=sized,
                            ncols=None if sized else 100, nrows=None if sized else 40,
                            mininterval=0.2, leave=True)

    def update(self, step: int, epoch: float, ips: float, loss: float, test_acc: float | None,
               force: bool = False) -> None:
        if not self.enabled:
            return
        test = f"  test {test_acc:.2%}" if test_acc is not None else ""
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {epoch:.2f}, {ips:.0f} img/s, loss {loss:.4f}{test}", refresh=False)
            self.bar.update(step - self.bar.n)
        elif force:
            print(f"epoch {epoch:5.2f}  {ips:6.0f} img/s  loss {loss:.4f}{test}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load(dataset: str, args: argparse.Namespace):
    from gossipnet.commands.learner_factory import load_data

    return load_data(dataset, args.data_dir, args.net, args.image_size, args.color_mode, args.test_fraction)


def _report_skipped(ds, quiet: bool) -> None:
    """Undecodable pictures are named on stderr (also with --quiet: data is being left out)."""
    if not ds.skipped:
        return
    print(f"gossipnet train: skipped {len(ds.skipped)} picture(s) that could not be decoded:", file=sys.stderr)
    for path, reason in ds.skipped[: 20 if quiet else 100]:
        print(f"  {path}: {reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.list_nets:
        print(list_nets())
        return 0
    from gossipnet.nn import blas

    blas.use_one_thread()
    blas_line = blas.describe()  # printed below and kept in the JSON result

    dataset = args.dataset or "embedded"
    epochs = _positive("epochs", args.epochs) or DEFAULT_EPOCHS[dataset]
    lr = _positive("lr", args.lr)
    batch = _positive("batch-size", args.batch_size, int)
    limit = _positive("limit-train", args.limit_train, int)
    preset = get_preset(args.net or DEFAULT_NET[dataset])

    ds = _load(dataset, args)
    if dataset == "folder":
        if not args.net:
            preset = get_preset(default_net_for(ds))
        spec = fit_preset(preset, ds.input_shape, ds.num_classes, "the image folder")
        _report_skipped(ds, args.quiet)
    else:
        if tuple(ds.input_shape) != preset.input_shape:
            fits = [p.name for p in PRESETS.values() if p.input_shape == tuple(ds.input_shape)]
            raise UserError(f"net {preset.name!r} takes {preset.input_shape} images but {dataset} has "
                            f"{tuple(ds.input_shape)}; use --net with one of: {', '.join(fits) or 'none'}")
        spec = list(preset.spec)
    net = Net(spec, ds.input_shape, seed=args.seed)
    if ds.num_classes != net.num_classes:
        raise UserError(f"net {preset.name!r} predicts {net.num_classes} classes but {dataset} "
                        f"has {ds.num_classes}")
    x_train, y_train = ds.x_train, ds.y_train
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]

    opt_kind = args.optimizer or preset.optimizer
    if lr is None:
        lr = preset.lr if opt_kind == preset.optimizer else DEFAULT_LR[opt_kind]
    batch = batch or preset.batch_size
    optimizer = make_optimizer(opt_kind, net.params(), lr, preset.weight_decay, preset.momentum)
    steps_per_epoch = math.ceil(len(x_train) / batch)
    total = max(1, round(epochs * steps_per_epoch))
    warmup = min(200, total // 10)
    trainer = Trainer(net, optimizer, batch, seed=args.seed,
                      lr_schedule=lambda s: cosine_lr(lr, s, total, warmup))
    cores = available_cores() if getattr(args, "cores", None) is None else check_cores(args.cores)

    meta = {"net": preset.name, "dataset": dataset, "spec": net.spec,
            "input_shape": list(net.input_shape), "fingerprint": net.fingerprint,
            "optimizer": opt_kind, "lr": lr, "batch_size": batch, "seed": args.seed,
            "model": ModelCard(tuple(net.spec), net.input_shape, tuple(ds.classes), tuple(ds.pixel_mean),
                               tuple(ds.pixel_std), dataset).to_json()}

    def checkpoint(test_acc: float | None) -> None:
        if args.checkpoint:
            tensors = {**with_prefix("net.", net.state_dict()), **optimizer.state_dict(),
                       **trainer.state_dict()}
            save_state(args.checkpoint, tensors,
                       {**meta, "epoch": trainer.epoch + trainer.position / len(x_train),
                        "test_accuracy": test_acc})

    quiet = args.quiet
    if not quiet:
        print(f"gossipnet train: {preset.name} ({net.num_params:,} params) on {dataset}: "
              f"{len(x_train):,} train / {len(ds.x_test):,} test images, {epochs:g} epochs, "
              f"{opt_kind} lr {lr:g}, batch {batch}, {cores} core{'s' if cores > 1 else ''}",
              file=sys.stderr)
        print(f"  BLAS: {blas_line}", file=sys.stderr)
    progress = Progress(not quiet, total)
    eval_every = max(1, steps_per_epoch // EVALS_PER_EPOCH)
    chunk = max(1, min(eval_every, 2048 // batch))  # ~a second between progress updates
    history = []
    test_acc = None
    train_secs = 0.0
    images = 0
    loss_ema = None
    try:
        if cores > 1:
            trainer.parallel = DataParallel(net, cores, batch)
        while trainer.step < total:
            todo = min(chunk, total - trainer.step, eval_every - trainer.step % eval_every)
            r = trainer.train(x_train, y_train, todo)
            train_secs += r["seconds"]
            images += round(r["images_per_s"] * r["seconds"])
            loss_ema = r["loss"] if loss_ema is None else 0.8 * loss_ema + 0.2 * r["loss"]
            ev = None
            if trainer.step % eval_every == 0 or trainer.step == total:
                ev = evaluate(net, ds.x_test, ds.y_test)
                test_acc = ev["accuracy"]
                history.append({"epoch": round(r["epoch"], 3), "test_accuracy": test_acc,
                                "test_loss": ev["loss"], "train_loss": loss_ema})
                checkpoint(test_acc)
            progress.update(trainer.step, r["epoch"], images / max(train_secs, 1e-9), loss_ema,
                            test_acc, force=ev is not None)
    except KeyboardInterrupt:
        progress.close()
        checkpoint(test_acc)
        raise
    except WorkerDied as exc:  # one line, as a UserError, with the model kept as far as it got
        progress.close()
        checkpoint(test_acc)
        saved = f"; the model as of step {trainer.step} is in {args.checkpoint}" if args.checkpoint else ""
        raise UserError(f"{exc}{saved}") from None
    finally:
        if trainer.parallel is not None:
            trainer.parallel.close()
    progress.close()
    result = {
        "test_accuracy": test_acc,
        "test_loss": history[-1]["test_loss"],
        "epochs": round(trainer.epoch + trainer.position / len(x_train), 4),
        "steps": trainer.step,
        "images_per_s": round(images / train_secs, 1) if train_secs else 0.0,
        "train_seconds": round(train_secs, 2),
        "net": preset.name,
        "dataset": dataset,
        "fingerprint": net.fingerprint,
        "train_images": len(x_train),
        "test_images": len(ds.x_test),
        "classes": list(ds.classes),
        "input_shape": list(net.input_shape),
        "skipped": [{"path": p, "reason": r} for p, r in ds.skipped],
        "optimizer": opt_kind,
        "lr": lr,
        "batch_size": batch,
        "cores": cores,
        "blas": blas_line,  # images_per_s depends on OpenBLAS's kernels as much as on cores
        "seed": args.seed,
        "history": history,
        "checkpoint": args.checkpoint,
    }
    if not quiet:
        print(f"test accuracy {test_acc:.2%} after {result['epochs']:g} epochs "
              f"({result['images_per_s']:.0f} img/s, {train_secs:.0f} s training)", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=float))
    return 0
