"""``gossipnet train``: one node alone. Images go to the convnet, --task to neuroevolution."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    if args.task is not None:
        from gossipnet.commands import train_evo

        return train_evo.run(args)
    from gossipnet.commands import train_convnet

    return train_convnet.run(args)
