"""``gossipnet status``: one table for the whole swarm, from every node's /api/status.

Nodes are found by mDNS (unless ``--no-mdns``), from ``--peer HOST:HTTP_PORT``
addresses, and by following the ``http_url`` of the peers each node lists, so
one address is enough to see a swarm without multicast. Every document comes
from another machine and is untrusted: responses are capped in size and time,
validated against the schema, and their text is stripped of control
characters before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from gossipnet.errors import UserError
from gossipnet.status.page import format_ago
from gossipnet.status.schema import StatusSchemaError, validate_status, well_known

MAX_RESPONSE_BYTES = 1 << 20  # a status document with 1,024 peers is ~250 KB
MAX_NODES = 256  # never query more nodes than this in one round, whatever peers claim
MAX_FOLLOW_ROUNDS = 4  # how many hops of peers' peers to follow


@dataclass
class NodeReport:
    """What one address answered: a valid status document, or why not."""

    url: str
    status: dict[str, Any] | None = None
    error: str | None = None
    listed_as: str | None = None  # the node id a peer gave this address, if we learned it that way
    elapsed_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.status is not None, "error": self.error,
                "listed_as": self.listed_as, "elapsed_ms": round(self.elapsed_ms, 1), "status": self.status}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gossipnet status`` and its flags."""
    p = subparsers.add_parser(
        "status",
        help="show every node of the swarm: step, accuracy or fitness, peers, merges, rejections",
        description="Find the swarm's nodes (mDNS, --peer, and the peers they list), fetch each "
        "node's /api/status concurrently and print one line per node.",
    )
    p.add_argument("--peer", action="append", default=[], metavar="HOST:HTTP_PORT",
                   help="a node's status address (repeatable), e.g. 192.168.1.20:8730")
    p.add_argument("--no-mdns", action="store_true", help="do not browse mDNS; use only --peer addresses")
    p.add_argument("--interface", default=None, metavar="ADDR",
                   help="browse mDNS on this address's interface only (default: all interfaces)")
    p.add_argument("--mdns-wait", type=float, default=2.0, metavar="SECONDS",
                   help="how long to listen for mDNS announcements (default 2)")
    p.add_argument("--no-follow", action="store_true",
                   help="ask only the nodes found or given, not the peers they list")
    p.add_argument("--swarm", default=None, help="show only nodes of this swarm id")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="per-node request timeout (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON (one document per refresh) for scripts")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--count", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes")
    return p


def run(args: argparse.Namespace) -> int:
    """Exit status 0 if at least one node answered, 1 if none did."""
    seeds = [parse_address(a) for a in args.peer]
    if args.timeout <= 0 or args.mdns_wait < 0:
        raise UserError("--timeout must be above 0 and --mdns-wait at least 0 seconds")
    if args.watch is not None and args.watch < 0.5:
        raise UserError(f"--watch {args.watch}: refresh at most twice a second (--watch 0.5 or more)")
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    if args.no_mdns and not seeds:
        raise UserError("no nodes to ask: give --peer HOST:HTTP_PORT, or drop --no-mdns to find them by mDNS")
    rounds = 0
    while True:
        reports = asyncio.run(survey(seeds, mdns=not args.no_mdns, mdns_wait=args.mdns_wait,
                                     follow=not args.no_follow, timeout=args.timeout,
                                     interface=args.interface, swarm=args.swarm))
        if args.swarm is not None:
            reports = [r for r in reports if r.status is None or r.status["node"]["swarm"] == args.swarm]
        if args.json:
            print(json.dumps({"queried_at": time.time(), "nodes": [r.to_json() for r in reports]}), flush=True)
        else:
            if args.watch is not None and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            print(format_table(reports), flush=True)
        rounds += 1
        if args.watch is None or (args.count is not None and rounds >= args.count):
            return 0 if any(r.status is not None for r in reports) else 1
        time.sleep(args.watch)


def parse_address(text: str) -> str:
    """'host:port', '[v6]:port' or 'http://host:port/' -> 'http://host:port/'."""
    raw = text.strip()
    try:
        url = URL(raw if "://" in raw else f"http://{raw}")
        ok = url.scheme in ("http", "https") and bool(url.host) and url.explicit_port is not None
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"--peer {text!r}: expected HOST:HTTP_PORT, e.g. 192.168.1.20:8730 or [fe80::1]:8730")
    return _base(url)


def _base(url: URL) -> str:
    return str(URL.build(scheme=url.scheme, host=url.host, port=url.port, path="/"))


def _peer_url(text: Any) -> str | None:
    """A peer-supplied http_url, if it is a plain http(s) URL with a host and port."""
    if not isinstance(text, str):
        return None
    try:
        url = URL(text)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host or url.explicit_port is None:
        return None
    return _base(url)


async def survey(seeds: Iterable[str], *, mdns: bool = True, mdns_wait: float = 2.0, follow: bool = True,
                 timeout: float = 3.0, max_bytes: int = MAX_RESPONSE_BYTES, interface: str | None = None,
                 swarm: str | None = None) -> list[NodeReport]:
    """Ask every node we can find for its status; one report per node (or per unreachable address)."""
    pending: dict[str, str | None] = {url: None for url in seeds}
    if mdns:
        for url in await mdns_urls(mdns_wait, interface, swarm):
            pending.setdefault(url, None)
    asked: dict[str, NodeReport] = {}
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(MAX_FOLLOW_ROUNDS + 1):
            batch = [(u, hint) for u, hint in pending.items() if u not in asked][: MAX_NODES - len(asked)]
            if not batch:
                break
            pending = {}
            results = await asyncio.gather(*(fetch_status(session, u, timeout, max_bytes) for u, _ in batch))
            for (url, hint), report in zip(batch, results):
                report.listed_as = hint
                asked[url] = report
                if follow and report.status is not None:
                    for peer in report.status["peers"]:
                        peer_url = _peer_url(peer["http_url"])
                        if peer_url and peer["state"] in ("alive", "suspect") and peer_url not in asked:
                            pending.setdefault(peer_url, peer["node_id"])
            if not follow:
                break
    return _dedupe(asked.values())


def _dedupe(reports: Iterable[NodeReport]) -> list[NodeReport]:
    """One line per node: the same node may be reached at several addresses."""
    seen: set[str] = set()
    ok_ids = {r.status["node"]["id"] for r in reports if r.status is not None}
    out = []
    for r in reports:
        if r.status is not None:
            node_id = r.status["node"]["id"]
            if node_id in seen:
                continue
            seen.add(node_id)
        elif r.listed_as is not None and r.listed_as in ok_ids:
            continue  # answered at another address
        out.append(r)
    return sorted(out, key=lambda r: (r.status is None, _node_name(r)))


async def fetch_status(session: aiohttp.ClientSession, base_url: str, timeout: float,
                       max_bytes: int = MAX_RESPONSE_BYTES) -> NodeReport:
    """GET base_url + api/status with a total timeout and a size cap; validate what comes back."""
    report = NodeReport(url=base_url)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with session.get(URL(base_url) / "api" / "status", allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _Bad(f"HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise _Bad(f"response of {resp.content_length} bytes exceeds {max_bytes}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise _Bad(f"response exceeds {max_bytes} bytes")
        report.status = validate_status(json.loads(body))
    except TimeoutError:
        report.error = f"no answer within {timeout:g} s"
    except aiohttp.ClientConnectorError as exc:
        report.error = f"unreachable: {(exc.os_error.strerror or 'cannot connect').lower()}"
    except aiohttp.ClientError as exc:
        report.error = f"broken response ({type(exc).__name__})"
    except OSError as exc:
        report.error = f"unreachable: {exc.strerror or type(exc).__name__}"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and StatusSchemaError are ValueErrors
        kind = "invalid status" if isinstance(exc, StatusSchemaError) else "not JSON"
        report.error = f"{kind}: {str(exc)[:120]}"
    except _Bad as exc:
        report.error = str(exc)
    report.elapsed_ms = (time.perf_counter() - start) * 1000.0
    return report


class _Bad(Exception):
    """A response we refuse to read further."""


async def mdns_urls(wait: float, interface: str | None = None, swarm: str | None = None) -> list[str]:
    """Status URLs of gossipnet nodes that answer mDNS within ``wait`` seconds.

    Browse only, through the nodes' own browser (``net.browser.browse``, which reads
    TXT with ``net.advert.read_peer``): TXT records are hints from strangers, so only a
    valid HTTP port and a routable address are taken from them, for at most ``MAX_NODES``.
    """
    from gossipnet.net.browser import browse

    urls = set()
    for peer in await browse(wait, interface):
        if swarm is not None and peer.txt.get("swarm") != swarm:
            continue
        ip = ipaddress.ip_address(peer.address.split("%")[0])
        if not (ip.is_multicast or ip.is_unspecified or ip.is_link_local) and len(urls) < MAX_NODES:
            urls.add(_base(URL.build(scheme="http", host=peer.address, port=peer.http_port)))
    return sorted(urls)


# ---- the table ---------------------------------------------------------------

_COLUMNS = ("node", "address", "learner", "step", "acc/fit", "peers", "last merge", "rejected")


def format_table(reports: list[NodeReport]) -> str:
    """A plain-text table, one line per node; unreachable nodes say why."""
    if not reports:
        return "no nodes found (is mDNS blocked? try --peer HOST:HTTP_PORT)"
    rows = [_row(r) for r in reports]
    widths = [max([len(c)] + [len(row[i]) for row in rows if len(row) == len(_COLUMNS) or i < 2])
              for i, c in enumerate(_COLUMNS)]
    widths = [min(w, 40) for w in widths]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths)).rstrip()]
    for row in rows:
        if len(row) == 3:  # unreachable: node, address, the reason across the rest
            lines.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]))
        else:
            lines.append("  ".join(_clip(c, w).ljust(w) for c, w in zip(row, widths)).rstrip())
    ok = sum(r.status is not None for r in reports)
    swarms = sorted({_clean(r.status["node"]["swarm"]) for r in reports if r.status is not None})
    lines.append(f"{ok} of {len(reports)} nodes answered" + (f"; swarm {', '.join(swarms)}" if swarms else ""))
    return "\n".join(lines)


def _row(r: NodeReport) -> list[str]:
    address = str(URL(r.url).origin()).removeprefix("http://")
    if r.status is None:
        return [_node_name(r), address, f"NO STATUS: {_clean(r.error or '')}"]
    s = r.status
    learner, peers = s["learner"], s["peers"]
    alive = sum(p["state"] == "alive" for p in peers)
    merge = s["last_merge"]
    last_merge = "-" if merge is None else format_ago(s["now"] - merge["at"])
    rejected = {f"{stage}:{k}": v for stage, group in s["rejections"].items() for k, v in group.items()}
    total = sum(rejected.values())
    top = max(rejected.items(), key=lambda kv: kv[1]) if total else None
    return [
        _node_name(r), address, _clean(learner["kind"]), str(learner["step"]), _score(learner["metrics"]),
        f"{alive}/{len(peers)}", last_merge,
        "0" if not total else f"{total} ({_clean(top[0])} {top[1]})",
    ]


def _score(metrics: dict[str, Any]) -> str:
    acc = well_known(metrics, "test_accuracy")
    if acc is None:
        acc = well_known(metrics, "train_accuracy")
    if isinstance(acc, (int, float)) and not isinstance(acc, bool):
        return f"{100 * acc:.1f}%"
    fit = well_known(metrics, "best_fitness")
    if isinstance(fit, (int, float)) and not isinstance(fit, bool):
        return f"{fit:.1f}"
    return "-"


def _node_name(r: NodeReport) -> str:
    if r.status is not None:
        return _clean(r.status["node"]["id"])
    return _clean(r.listed_as) if r.listed_as else "?"


def _clean(text: str) -> str:
    """Peer text for a terminal: no escape sequences or other control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"
