"""Limits on who may hold the HTTP server's connections, and for how long.

aiohttp keeps an idle connection 3,630 s by default and has no connection cap and
no time limit on request headers, so a few hundred idle or half-sent requests from
one host exhausted a node's file descriptors (and with them its next checkpoint
write). aiohttp offers no hook for this, so ``GuardedSite`` wraps each connection's
protocol: connections are capped per source IP (IPv6 per /64, as the UDP budgets)
and in total, request headers must arrive within ``header_timeout`` of their first
byte, and an idle keep-alive connection closes after ``keepalive``. The routes that cost
real work per request have a token bucket per IP on top: ``/blob`` downloads
(``blob_allowed``) and the model routes, ``POST /classify`` and ``GET /model.onnx``
(``model_allowed``: a decode and a forward pass, or an ONNX export, on the node's CPU).

Loopback clients are exempt from the per-IP limits (not from the total cap): no LAN host
can send from 127.0.0.1, and ``gossipnet demo`` runs a whole swarm on that one address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from gossipnet.wire.guards import TokenBuckets, source_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """Connection and download budgets of one node's HTTP server."""

    # Far below the usual 1,024 descriptors, so UDP, checkpoints and pulls keep theirs.
    max_connections: int = 128
    # A browser opens 6 per host; a peer pulling a blob needs 1.
    max_per_ip: int = 8
    # Request headers are a few hundred bytes: 5 s is ample on any LAN (slowloris sends
    # them a byte at a time for minutes).
    header_timeout: float = 5.0
    # Idle keep-alive (aiohttp's default is 3,630 s); the status page polls every few
    # seconds, so 5 s still reuses its connection.
    keepalive: float = 5.0
    # A peer pulls from us at most once per announce it hears (one every ~2 s per peer
    # with fanout 2); 2/s with a burst of 6 leaves room and stops a download loop.
    blob_per_ip_per_s: float = 2.0
    blob_burst: float = 6.0
    # A person trying pictures uploads a few a minute; a script looping on /classify would
    # take the node's CPU from training (one decode + forward pass each).
    model_per_ip_per_s: float = 0.5
    model_burst: float = 10.0
    max_tracked_ips: int = 4096
    # See the module docstring; tests of the per-IP limits turn it off.
    exempt_loopback: bool = True


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class ConnectionGuard:
    """Counts open connections per IP and decides whether another may open (no I/O)."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.open_by_ip: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._blobs = TokenBuckets(self.limits.blob_per_ip_per_s, self.limits.blob_burst,
                                   self.limits.max_tracked_ips)
        self._models = TokenBuckets(self.limits.model_per_ip_per_s, self.limits.model_burst,
                                    self.limits.max_tracked_ips)
        self._protocols: dict[object, _GuardedProtocol] = {}  # transport -> its guarded protocol

        @web.middleware
        async def middleware(request: web.Request, handler):
            """A request is being handled: no header deadline until it is done (POST bodies
            are read inside handlers, and a handler may take longer than the deadline)."""
            proto = self._protocols.get(request.transport)
            if proto is None:
                return await handler(request)
            proto.request_begins()
            try:
                return await handler(request)
            finally:
                proto.request_ends()

        self.middleware = middleware

    @property
    def open_connections(self) -> int:
        return sum(self.open_by_ip.values())

    def admit(self, ip: str, loopback: bool = False) -> bool:
        if self.open_connections >= self.limits.max_connections:
            self.counters["refused_total_cap"] += 1
            return False
        if self.open_by_ip[ip] >= self.limits.max_per_ip and not loopback:
            self.counters["refused_per_ip_cap"] += 1
            return False
        self.open_by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.open_by_ip[ip] -= 1
        if self.open_by_ip[ip] <= 0:
            del self.open_by_ip[ip]

    def blob_allowed(self, host: str, now_ms: int) -> bool:
        """Take one download token for ``host``'s IP (or /64); False = answer 429."""
        return self._take(self._blobs, "blob_rate_limited", host, now_ms)

    def model_allowed(self, host: str, now_ms: int) -> bool:
        """Take one classify/export token for ``host``'s IP (or /64); False = answer 429."""
        return self._take(self._models, "model_rate_limited", host, now_ms)

    def _take(self, buckets: TokenBuckets, refusal: str, host: str, now_ms: int) -> bool:
        exempt = self.limits.exempt_loopback and is_loopback(host)
        if exempt or buckets.allow(source_key(host), now_ms):
            return True
        self.counters[refusal] += 1
        return False


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's per-connection protocol behind the guard's admission and header deadline."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._ip: str | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else "unknown"
        ip = source_key(host)
        exempt = self._guard.limits.exempt_loopback and is_loopback(host)
        if not self._guard.admit(ip, loopback=exempt):
            transport.abort()  # never reaches aiohttp: costs one accept() and one close()
            return
        self._ip = ip
        self._transport = transport  # type: ignore[assignment]
        self._guard._protocols[transport] = self
        self._in_request = False
        self._arm()
        self._inner.connection_made(transport)

    def _arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._guard.limits.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._guard.counters["header_timeouts"] += 1
        if self._transport is not None:
            self._transport.abort()

    def request_begins(self) -> None:
        self._in_request = True
        self._disarm()

    def request_ends(self) -> None:
        self._in_request = False

    def data_received(self, data: bytes) -> None:
        if not self._in_request:
            # Headers of a request are arriving (a POST body is read while in_request).
            seen = self._tail + data
            end = seen.rfind(b"\r\n\r\n")
            if end >= 0 and end + 4 == len(seen):
                self._disarm()  # headers complete; the handler (or keep-alive) takes over
            else:
                self._arm()
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._ip is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ip is None:
            return  # refused at the door: aiohttp never saw it
        self._disarm()
        self._guard._protocols.pop(self._transport, None)
        self._guard.release(self._ip)
        self._ip = None
        self._inner.connection_lost(exc)


class GuardedSite(web.SockSite):
    """A listening socket whose connections pass ``guard`` before aiohttp sees them."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard) -> None:
        super().__init__(runner, sock)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # register with the runner, as SockSite.start does
        server = self._runner.server
        assert server is not None
        guard = self._guard
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _GuardedProtocol(server(), guard),
                                                sock=self._sock, backlog=self._backlog)


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (raises OSError as bind would)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


def raise_open_file_limit(want: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want``, within the hard limit.

    The soft limit is often 1,024 while the hard limit allows far more; a node holding
    sockets, HTTP connections and checkpoint files should not fail at the lower one.
    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft
