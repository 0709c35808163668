"""The node's UDP endpoint: asyncio-dgram with a bounded receive queue and an optional fault layer.

asyncio-dgram 3.0 hands every datagram to an unbounded ``asyncio.Queue`` and
re-raises socket errors (ICMP unreachable, a failed ``sendto``) on the *next*
``send`` or ``recv``, whichever comes first. So one reader task drains its queue
at once into our own bounded queue (tail drop, counted), and socket errors are
counted instead of surfacing at an unrelated call. asyncio-dgram's ``send`` also
closes the whole transport when given an address of the wrong shape (asyncio
treats a ``TypeError`` from ``sendto`` as fatal), so ``send`` validates addresses
first.

The optional fault layer (``gossipnet.net.faults``) applies seeded drop, delay,
duplication and reordering on send, on receive, or both.

Known members' datagrams never queue behind junk: the owner sets ``priority`` to a
predicate over source addresses (the node: "an alive member's IP"), and those
datagrams go to a second bounded queue that ``recv`` always drains first, so a flood
from outsiders fills only its own queue while probes and acks are answered on time.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncio_dgram

from gossipnet.errors import UserError
from gossipnet.net.faults import FaultConfig, FaultPlan

log = logging.getLogger(__name__)

# DESIGN.md section 3: UDP datagrams are at most 1,400 bytes (memberlist's UDP
# buffer size; it fits a 1,500-byte Ethernet MTU with room for IP/UDP headers).
MAX_DATAGRAM = 1400


class UdpClosed(Exception):
    """The endpoint was closed: ``recv`` and ``send`` raise this from then on."""


class DropReason(enum.Enum):
    """Why a datagram was not delivered; each reason has its own counter."""

    OVERSIZE = "oversize"  # received datagram longer than max_datagram
    EMPTY = "empty"  # zero-length datagram: never a valid message
    QUEUE_FULL = "queue_full"  # the consumer fell behind; newest datagram dropped
    PRIORITY_QUEUE_FULL = "priority_queue_full"  # even known members' datagrams piled up
    FAULT = "fault"  # dropped on purpose by the fault layer
    # dropped by the kernel before this process read it: the socket's receive buffer was full
    # (a flood faster than the node reads); Linux only, from /proc/net/udp (kernel_drops)
    KERNEL = "kernel"


@dataclass(frozen=True)
class UdpConfig:
    """Limits and faults of one endpoint."""

    max_datagram: int = MAX_DATAGRAM
    # 1,024 datagrams of at most 1,400 bytes: under 1.5 MB held for a slow consumer.
    queue_size: int = 1024
    send_faults: FaultConfig | None = None
    recv_faults: FaultConfig | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_datagram <= 65507:  # 65,535 minus IPv4 and UDP headers
            raise UserError(f"max_datagram is {self.max_datagram}; give 1..65507 bytes")
        if self.queue_size < 1:
            raise UserError(f"queue_size is {self.queue_size}; give at least 1")

    @classmethod
    def lan(cls) -> UdpConfig:
        """What a node uses on a real LAN: no faults."""
        return cls()

    @classmethod
    def faulty(cls, faults: FaultConfig) -> UdpConfig:
        """Apply ``faults`` on receive only, so each datagram meets them exactly once per receiver."""
        return cls(recv_faults=faults)


@dataclass
class UdpStats:
    """Counters since the endpoint opened; ``datagrams_in`` counts everything the socket delivered,
    ``datagrams_out`` every copy handed to the kernel (duplicates included)."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    socket_errors: int = 0
    dropped: dict[DropReason, int] = field(default_factory=lambda: {r: 0 for r in DropReason})

    def copy(self) -> UdpStats:
        return UdpStats(
            self.datagrams_in,
            self.bytes_in,
            self.datagrams_out,
            self.bytes_out,
            self.socket_errors,
            dict(self.dropped),
        )


def kernel_drops(proc_net_udp: str, inode: int) -> int | None:
    """The ``drops`` column of the line for the socket with this inode in the text of
    /proc/net/udp or /proc/net/udp6 (Linux's own count for that socket: receive buffer full,
    or a bad checksum), or None if no line is that socket's."""
    for line in proc_net_udp.splitlines()[1:]:
        fields = line.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if len(fields) >= 13 and fields[9] == str(inode):
            return int(fields[12])
    return None


def check_address(addr: object) -> tuple:
    """Return ``addr`` if it is an IP literal and port a datagram can go to; else raise ValueError.

    Peer-supplied addresses (TXT hints, membership updates) pass through here before
    reaching asyncio, which would close the socket on a malformed one.
    """
    if not isinstance(addr, tuple) or len(addr) not in (2, 4):
        raise ValueError(f"address must be (host, port) or (host, port, flowinfo, scope_id), got {addr!r}")
    host, port = addr[0], addr[1]
    if not isinstance(host, str):
        raise ValueError(f"address host must be an IP literal string, got {host!r}")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"address host {host!r} is not an IP literal (names are not resolved here)") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"address port must be an int in 1..65535, got {port!r}")
    return addr


class UdpEndpoint:
    """A bound UDP socket for the membership and manifest plane.

    Create with ``await UdpEndpoint.bind((host, port))``; use ``send``, ``recv`` (or
    ``async for data, addr in endpoint``); finish with ``await close()`` or ``async with``.
    """

    def __init__(self, stream: asyncio_dgram.aio.DatagramServer, config: UdpConfig) -> None:
        self._stream = stream
        self._family = stream.socket.family
        self.config = config
        self._stats = UdpStats()
        self._queue: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self._urgent: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self.priority: Callable[[tuple], bool] | None = None  # source address -> goes first?
        self._readable = asyncio.Event()
        self._closed = False  # no more send/recv (close() called, or the socket died)
        self._shut = False  # close() has run
        self._failure: Exception | None = None  # why the reader stopped, if it crashed
        self._send_faults = FaultPlan(config.send_faults) if config.send_faults else None
        self._recv_faults = FaultPlan(config.recv_faults) if config.recv_faults else None
        self._timers: set[asyncio.TimerHandle] = set()
        self._sends: set[asyncio.Task] = set()
        self._reader = asyncio.create_task(self._read_loop(), name=f"udp-reader {self.local_address}")

    @classmethod
    async def bind(cls, addr: tuple[str, int], config: UdpConfig | None = None) -> UdpEndpoint:
        """Bind ``addr`` (port 0 picks a free port); a bind failure raises UserError saying what to change."""
        config = config or UdpConfig()
        try:
            stream = await asyncio_dgram.bind(addr)
        except OSError as exc:
            hint = {
                errno.EADDRINUSE: "another process holds this port; choose another --port or stop it",
                errno.EADDRNOTAVAIL: "no interface here has this address; check --interface",
                errno.EACCES: "ports below 1024 need privileges; choose a port of 1024 or more",
            }.get(exc.errno, "check the address and port")
            raise UserError(f"cannot bind UDP {addr[0]}:{addr[1]}: {exc.strerror or exc}; {hint}") from exc
        except (OverflowError, TypeError, ValueError) as exc:
            raise UserError(f"cannot bind UDP to {addr!r}: {exc}; give (IP, port 0..65535)") from exc
        return cls(stream, config)

    @property
    def local_address(self) -> tuple:
        """The bound (host, port); useful after binding port 0."""
        return self._stream.sockname

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Datagrams waiting for ``recv``."""
        return len(self._queue) + len(self._urgent)

    @property
    def held_back(self) -> int:
        """Datagrams the fault layer is still delaying (not yet sent, or not yet delivered)."""
        return len(self._timers)

    def stats(self) -> UdpStats:
        """A snapshot of the counters, with the kernel's drops for this socket as of now."""
        if not self._shut:
            self._read_kernel_drops()
        return self._stats.copy()

    def _read_kernel_drops(self) -> None:
        """Take the kernel's count of datagrams it dropped for this socket (a total since the
        socket opened, like every counter here). A flood that fills the receive buffer is lost
        there, before ``_accept`` could count it. Where /proc/net is not Linux's, the count
        stays 0."""
        path = "/proc/net/udp6" if self._family == socket.AF_INET6 else "/proc/net/udp"
        try:
            inode = os.fstat(self._stream.socket.fileno()).st_ino
            with open(path) as f:
                drops = kernel_drops(f.read(), inode)
        except (OSError, ValueError):
            return
        if drops is not None:
            self._stats.dropped[DropReason.KERNEL] = drops

    async def send(self, data: bytes, addr: tuple) -> None:
        """Send one datagram; socket errors are counted, not raised (UDP promises nothing anyway).

        Raises ValueError for oversize or empty data or a malformed address (a bug in the
        caller, not the network) and UdpClosed after ``close``.
        """
        if self._closed:
            raise UdpClosed("send on a closed UDP endpoint")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        if not 0 < len(data) <= self.config.max_datagram:
            raise ValueError(f"datagram of {len(data)} bytes; it must be 1..{self.config.max_datagram} bytes")
        check_address(addr)
        if (ipaddress.ip_address(addr[0].split("%", 1)[0]).version == 6) != (self._family == socket.AF_INET6):
            raise ValueError(f"address {addr!r} does not match this endpoint's address family")
        data = bytes(data)
        if self._send_faults is None:
            await self._send_now(data, addr)
            return
        delays = self._send_faults.fate()
        if not delays:
            self._stats.dropped[DropReason.FAULT] += 1
        for delay in delays:
            if delay == 0:
                await self._send_now(data, addr)
            else:
                task = asyncio.create_task(self._send_later(delay, data, addr))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def recv(self) -> tuple[bytes, tuple]:
        """The next datagram and its sender's address; raises UdpClosed once closed and drained."""
        while True:
            if self._urgent:
                return self._urgent.popleft()
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise UdpClosed("recv on a closed UDP endpoint") from self._failure
            self._readable.clear()
            await self._readable.wait()

    def __aiter__(self) -> AsyncIterator[tuple[bytes, tuple]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[bytes, tuple]]:
        while True:
            try:
                yield await self.recv()
            except UdpClosed:
                return

    async def close(self) -> None:
        """Stop reading, cancel pending fault-layer deliveries, close the socket; idempotent."""
        if self._shut:
            return
        self._shut = True
        self._closed = True
        self._readable.set()  # wake recv() waiters so they see the closed flag
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        pending = [self._reader, *self._sends]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._read_kernel_drops()  # the last count, kept for stats() after the socket is gone
        self._stream.close()

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals --

    async def _send_now(self, data: bytes, addr: tuple) -> None:
        if self._closed:
            return
        try:
            await self._stream.send(data, addr)
            # asyncio reports a failed sendto (EACCES, ENETUNREACH ...) through the protocol,
            # and asyncio-dgram keeps it for the next call; collect it now, while we know
            # which datagram it belongs to.
            self._stream.exception  # noqa: B018 - the property raises the pending error
        except asyncio_dgram.TransportClosed as exc:
            raise UdpClosed("the UDP socket was closed underneath the endpoint") from exc
        except OSError as exc:
            self._stats.socket_errors += 1
            log.debug("UDP send to %s: %s", addr, exc)
            return
        self._stats.datagrams_out += 1
        self._stats.bytes_out += len(data)

    async def _send_later(self, delay: float, data: bytes, addr: tuple) -> None:
        await asyncio.sleep(delay)
        try:
            await self._send_now(data, addr)
        except UdpClosed:
            pass

    async def _read_loop(self) -> None:
        try:
            await self._read_datagrams()
        except Exception as exc:  # a bug here must not leave recv() waiting forever
            log.exception("UDP reader on %s failed", self.local_address)
            self._failure = exc
            self._closed = True
            self._readable.set()

    async def _read_datagrams(self) -> None:
        while True:
            try:
                data, addr = await self._stream.recv()
            except asyncio_dgram.TransportClosed:
                if not self._closed:
                    log.warning("UDP socket %s closed unexpectedly", self.local_address)
                    self._closed = True
                    self._readable.set()
                return
            except OSError as exc:
                self._stats.socket_errors += 1
                log.debug("UDP socket error: %s", exc)
                continue
            self._accept(data, addr)

    def _accept(self, data: bytes, addr: tuple) -> None:
        self._stats.datagrams_in += 1
        self._stats.bytes_in += len(data)
        if not data:
            self._stats.dropped[DropReason.EMPTY] += 1
            return
        if len(data) > self.config.max_datagram:
            self._stats.dropped[DropReason.OVERSIZE] += 1
            log.debug("dropped %d-byte datagram from %s: over %d bytes", len(data), addr, self.config.max_datagram)
            return
        if self._recv_faults is None:
            self._enqueue(data, addr)
            return
        delays = self._recv_faults.fate()
        if not delays:
            self._stats.dropped[DropReason.FAULT] += 1
        for delay in delays:
            if delay == 0:
                self._enqueue(data, addr)
            else:
                self._enqueue_later(delay, data, addr)

    def _enqueue_later(self, delay: float, data: bytes, addr: tuple) -> None:
        handle: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(handle[0])
            self._enqueue(data, addr)

        handle.append(asyncio.get_running_loop().call_later(delay, fire))
        self._timers.add(handle[0])

    def _enqueue(self, data: bytes, addr: tuple) -> None:
        if self._closed:
            return
        urgent = self.priority is not None and self.priority(addr)
        queue = self._urgent if urgent else self._queue
        if len(queue) >= self.config.queue_size:
            self._stats.dropped[DropReason.PRIORITY_QUEUE_FULL if urgent else DropReason.QUEUE_FULL] += 1
            return
        queue.append((data, addr))
        self._readable.set()
