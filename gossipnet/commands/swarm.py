"""``gossipnet swarm init|admit|show|whoami``: create a swarm and let machines join it.

Two ways in (docs/SECURITY.md): the join token printed by ``init`` (one line; every
holder can admit others), or one certificate per machine from ``admit`` (the swarm
key stays on this machine). ``whoami`` prints a node's public key for ``admit``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from gossipnet.trust.identity import load_or_create_identity, node_id_of, parse_pubkey
from gossipnet.trust.swarm import create_swarm, load_swarm

DEFAULT_STATE_DIR = "~/.gossipnet/node"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _join_lines(swarm_dir: str, token: str) -> str:
    return (
        "Join a machine to this swarm with this one line (it holds the swarm key: keep it secret,\n"
        "and prefer GOSSIPNET_SWARM_TOKEN=... over the flag on shared machines):\n"
        f"  gossipnet run --swarm-token {token}\n"
        "Or keep the key here and admit machines one by one: run `gossipnet swarm whoami` there, then\n"
        f"  gossipnet swarm admit --dir {swarm_dir} <the gpk1.… key it prints>"
    )


def _init(args: argparse.Namespace) -> int:
    swarm = create_swarm(args.dir, args.name, _now_ms())
    print(f"created swarm {swarm.name!r}, id {swarm.swarm_id.hex()}, key in {args.dir}")
    print(_join_lines(args.dir, swarm.token))
    return 0


def _admit(args: argparse.Namespace) -> int:
    swarm = load_swarm(args.dir)
    node_key = parse_pubkey(args.node_pubkey)
    cert = swarm.admit(node_key, _now_ms(), args.days)
    expiry = datetime.fromtimestamp(cert.expiry_s, UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"admitted node {node_id_of(node_key)} to swarm {swarm.swarm_id.hex()} until {expiry}; on that node run:")
    print(f"  gossipnet run --cert {cert.to_text()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    swarm = load_swarm(args.dir)
    print(f"swarm {swarm.name!r}, id {swarm.swarm_id.hex()}, mode cert")
    print(f"swarm public key: {swarm.pubkey.hex()}")
    print(_join_lines(args.dir, swarm.token))
    return 0


def _whoami(args: argparse.Namespace) -> int:
    ident = load_or_create_identity(getattr(args, "state_dir", None) or DEFAULT_STATE_DIR)
    print(f"node {ident.node_id}")
    print(f"public key: {ident.pubkey_text}")
    return 0


_ACTIONS = {"init": _init, "admit": _admit, "show": _show, "whoami": _whoami}


def run(args: argparse.Namespace) -> int:
    return _ACTIONS[args.swarm_command](args)
