"""Command-line entry point: parse flags, set up logging, dispatch to gossipnet.commands.

Nothing else lives here. A ``UserError`` is printed as one line (what was wrong and
what to do) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from gossipnet import __version__
from gossipnet.errors import UserError

# command name -> module in gossipnet.commands with a ``run(args) -> int``
_COMMANDS = {
    "train": "gossipnet.commands.train",
    "swarm": "gossipnet.commands.swarm",
    "run": "gossipnet.commands.run",
    "demo": "gossipnet.commands.demo",
    "status": "gossipnet.commands.status",
    "predict": "gossipnet.commands.predict",
    "export": "gossipnet.commands.export",
    "merge": "gossipnet.commands.merge",
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one node alone (a convnet on images, or an island on a control task)",
        description="Single-node training. Images: --dataset; control tasks: --task.",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--dataset",
        choices=["embedded", "fashion-mnist", "mnist", "cifar10", "folder"],
        default=None,
        help="image data set (default: embedded, a Fashion-MNIST subset shipped in the package; "
        "folder: your own pictures, --data-dir DIR/<class>/*.jpg)",
    )
    what.add_argument("--task", default=None, help="control task for neuroevolution, e.g. cartpole")
    p.add_argument("--data-dir", default=None, help="directory holding the data set's files")
    p.add_argument("--image-size", type=int, default=None, metavar="PIXELS",
                   help="folder: resize pictures to PIXELS x PIXELS (default: the net's, or 28 grey / 32 colour)")
    p.add_argument("--color-mode", choices=["auto", "grayscale", "rgb"], default=None,
                   help="folder: grey or colour input (default: the net's, or colour if any picture is)")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="folder without train/ and test/: share of each class held out (default 0.2)")
    p.add_argument("--net", default=None, help="network preset name (see --list-nets)")
    p.add_argument("--list-nets", action="store_true", help="list the network presets and exit")
    p.add_argument("--epochs", type=float, default=None, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--algo", choices=["ga", "es", "cmaes"], default=None, help="evolution algorithm")
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--population", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint file to write (safetensors)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training items")
    p.add_argument("--cores", type=int, default=None, metavar="N",
                   help="train on N cores, one worker process each (default: every core available)")
    p.add_argument("--json", action="store_true", help="print a final line of JSON with the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_swarm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swarm", help="create a swarm and admit machines to it")
    ssub = p.add_subparsers(dest="swarm_command", required=True, metavar="{init,admit,show,whoami}")
    init = ssub.add_parser("init", help="create a new swarm's credentials and print how to join")
    init.add_argument("--dir", default="~/.gossipnet/swarm", help="where the swarm key is written")
    init.add_argument("--name", default=None, help="human-readable swarm name")
    admit = ssub.add_parser("admit", help="sign a node's public key into a certificate")
    admit.add_argument("node_pubkey", help="the node's public key as printed by the node")
    admit.add_argument("--dir", default="~/.gossipnet/swarm", help="where the swarm key lives")
    admit.add_argument("--days", type=int, default=365, help="certificate lifetime in days")
    show = ssub.add_parser("show", help="print a swarm's id and join line")
    show.add_argument("--dir", default="~/.gossipnet/swarm")
    who = ssub.add_parser("whoami", help="print this node's id and public key (for admit)")
    who.add_argument("--state-dir", default="~/.gossipnet/node", help="the node's state directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gossipnet",
        description="Peer-to-peer training daemon: nodes on a LAN find each other by mDNS "
        "and gossip signed weights or genomes.",
    )
    parser.add_argument("--version", action="version", version=f"gossipnet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from gossipnet.commands import demo, export, merge, predict, run, status

    run.add_parser(sub)
    demo.add_parser(sub)
    _add_train(sub)
    status.add_parser(sub)
    _add_swarm(sub)
    predict.add_parser(sub)
    export.add_parser(sub)
    merge.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(_COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"gossipnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gossipnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
