"""mDNS discovery: advertise this node as ``_gossipnet._udp.local.`` and report peers of our swarm.

What the advertisement says, and how a peer's is parsed and rejected, lives in
``gossipnet.net.advert`` (pure code). This module does the I/O: rejected services
are counted, and nothing here ever raises because of what a peer sent.

python-zeroconf's ``AsyncZeroconf`` is pinned to one interface address (the node's
``--interface ADDR``); the browser's state changes arrive as callbacks on the event
loop, and each added or updated service is resolved with ``AsyncServiceInfo``.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from zeroconf import (
    BadTypeInNameException,
    Error as ZeroconfError,
    IPVersion,
    NonUniqueNameException,
    NotRunningException,
    ServiceStateChange,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from gossipnet.errors import UserError
from gossipnet.net.advert import SERVICE_TYPE, Advertisement, Peer, RejectReason, peer_from_txt

log = logging.getLogger(__name__)

MDNS_GROUP_V4 = "224.0.0.251"  # RFC 6762 section 3
MDNS_PORT = 5353

MAX_PEERS = 1024  # far above a LAN swarm; bounds memory against a flood of fake services
MAX_PENDING = 64  # services being resolved at once; a flood beyond this is counted and skipped


class EventKind(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True)
class PeerEvent:
    kind: EventKind
    peer: Peer


@dataclass(frozen=True)
class DiscoveryConfig:
    """Timings and bounds of discovery."""

    resolve_timeout: float = 3.0  # seconds to wait for SRV/TXT/A (zeroconf's own default)
    stop_timeout: float = 2.0  # seconds to wait for goodbyes to be sent on stop
    event_queue: int = 256  # events buffered for ``events()``; oldest dropped, counted

    @classmethod
    def lan(cls) -> DiscoveryConfig:
        return cls()

    @classmethod
    def local(cls) -> DiscoveryConfig:
        """Loopback tests: everything answers in milliseconds."""
        return cls(resolve_timeout=1.0, stop_timeout=1.0)


def interface_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The subnet ``ip`` sits on, read from the kernel (Linux), else its /24 or /64.

    Discovered addresses on it are preferred: a forged mDNS record that points a node
    at some other network (to make it send joins there) then loses to a real neighbour.
    """
    if ip.version == 4:
        try:
            import fcntl
            import struct

            siocgifaddr, siocgifnetmask = 0x8915, 0x891B  # linux/sockios.h
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _, name in socket.if_nameindex():
                    req = struct.pack("256s", name.encode()[:15])
                    try:
                        addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifaddr, req)[20:24])
                        if addr != str(ip):
                            continue
                        mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifnetmask, req)[20:24])
                    except OSError:
                        continue
                    return ipaddress.IPv4Network(f"{ip}/{mask}", strict=False)
        except (ImportError, OSError):
            pass
        return ipaddress.IPv4Network(f"{ip}/24", strict=False)
    return ipaddress.IPv6Network(f"{ip}/64", strict=False)


class Discovery:
    """Advertise this node and browse for peers of its swarm on one interface.

    ``await start()`` then either pass ``on_event`` (called on the event loop, must not block)
    or iterate ``events()``; ``peers()`` is the current view; ``await stop()`` says goodbye.
    """

    def __init__(
        self,
        advert: Advertisement,
        interface: str,
        on_event: Callable[[PeerEvent], None] | None = None,
        config: DiscoveryConfig | None = None,
    ) -> None:
        try:
            self._ip = ipaddress.ip_address(interface)
        except ValueError:
            raise UserError(f"--interface {interface!r} is not an IP address; give this host's address "
                            f"on the LAN, e.g. --interface 192.168.1.20") from None
        self.advert = advert
        self.interface = interface
        self.config = config or DiscoveryConfig()
        self.network = interface_network(self._ip)
        self._on_event = on_event
        self._events: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        self._peers: dict[str, Peer] = {}
        self._pending: dict[str, asyncio.Task] = {}
        self.rejected: dict[RejectReason, int] = {r: 0 for r in RejectReason}
        self.events_dropped = 0
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._announcing: asyncio.Future | None = None
        self._stopping = False

    # -- lifecycle --

    async def start(self) -> None:
        """Join mDNS on the interface, browse, and register (probing for name conflicts, ~1 s).

        Raises UserError if the interface has no such address, has no multicast route,
        or another node already advertises our instance name.
        """
        if self._zc is not None or self._stopping:
            raise RuntimeError("Discovery.start() called twice; make a new Discovery to start again")
        self._check_multicast_route()
        version = IPVersion.V6Only if self._ip.version == 6 else IPVersion.V4Only
        try:
            self._zc = AsyncZeroconf(interfaces=[self.interface], ip_version=version)
            await self._zc.zeroconf.async_wait_for_start()
        except (OSError, RuntimeError, NotRunningException) as exc:
            await self._close_quietly()
            raise UserError(f"mDNS could not start on --interface {self.interface}: {exc}; "
                            f"check the address belongs to this host and the interface is up") from exc
        if not self._zc.zeroconf.engine.senders:
            await self._close_quietly()
            raise UserError(f"mDNS could not join the multicast group on --interface {self.interface}: "
                            f"no interface here has that address or it lacks multicast; check `ip addr`")
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change])
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self.advert.instance_name()}.{SERVICE_TYPE}",
            port=self.advert.udp_port,
            properties=self.advert.txt(),
            parsed_addresses=[self.interface],
        )
        try:
            # Returns once probing found no conflict; the announcements go on in the background.
            self._announcing = await self._zc.async_register_service(info, allow_name_change=False)
        except NonUniqueNameException as exc:
            await self.stop()  # no goodbye: the name is the other node's
            raise UserError(f"another node on this LAN already advertises {self.advert.instance_name()!r}: "
                            f"is the same node identity (state dir) running twice? Give each node its own "
                            f"state dir or UDP port") from exc
        except ZeroconfError as exc:
            await self.stop()
            raise UserError(f"mDNS registration failed on --interface {self.interface}: {exc!r}") from exc
        except BaseException:
            await self.stop()  # cancelled while probing: leave no sockets or tasks behind
            raise
        self._info = info

    async def stop(self) -> None:
        """Withdraw our service (goodbye packets), stop browsing, close sockets; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._zc is not None:
            if self._browser is not None:
                await self._browser.async_cancel()
            pending = [*self._pending.values(), *([self._announcing] if self._announcing else [])]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._pending.clear()
            if self._info is not None:
                try:
                    goodbyes = await self._zc.async_unregister_service(self._info)
                    async with asyncio.timeout(self.config.stop_timeout):
                        await goodbyes
                except (TimeoutError, ZeroconfError, OSError) as exc:
                    log.warning("mDNS goodbye on %s not fully sent: %r", self.interface, exc)
            await self._close_quietly()
        self._events.put_nowait(None)  # ends events(); the queue is unbounded for this one sentinel

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- results --

    def peers(self) -> dict[str, Peer]:
        """Current peers by service name (a copy)."""
        return dict(self._peers)

    async def events(self) -> AsyncIterator[PeerEvent]:
        """Peer events until ``stop()``; use this or ``on_event``, not both."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    # -- internals --

    def _check_multicast_route(self) -> None:
        """Refuse early, with the fix, when the kernel has no route for mDNS from this address.

        A connected UDP socket only looks the route up; nothing is sent.
        """
        if self._ip.version != 4:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((self.interface, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise UserError(f"--interface {self.interface} is not an address of this host; "
                                    f"pick one from `ip -4 addr`") from None
                raise UserError(f"cannot use --interface {self.interface}: {exc.strerror}") from None
            try:
                probe.connect((MDNS_GROUP_V4, MDNS_PORT))
            except OSError as exc:
                raise UserError(f"no multicast route from --interface {self.interface} ({exc.strerror}); "
                                f"add one, e.g. `ip route add 224.0.0.0/4 dev <its interface>`") from None

    async def _close_quietly(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            await zc.async_close()
        except (ZeroconfError, OSError, RuntimeError) as exc:
            log.debug("closing zeroconf: %r", exc)

    def _on_state_change(self, zeroconf: object, service_type: str, name: str,
                         state_change: ServiceStateChange) -> None:
        """Browser callback, on the event loop: never raises, never blocks."""
        if self._stopping:
            return
        if state_change is ServiceStateChange.Removed:
            task = self._pending.pop(name, None)
            if task is not None:
                task.cancel()
            peer = self._peers.pop(name, None)
            if peer is not None:
                self._emit(PeerEvent(EventKind.REMOVED, peer))
            return
        previous = self._pending.get(name)
        if previous is not None:
            previous.cancel()  # resolve again: the records changed
        elif len(self._pending) >= MAX_PENDING:
            self._reject(RejectReason.TOO_MANY, name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name), name=f"mdns-resolve {name}")
        self._pending[name] = task
        task.add_done_callback(functools.partial(self._resolved, name))

    def _resolved(self, name: str, task: asyncio.Task) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("resolving mDNS service %s failed", name, exc_info=task.exception())

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        if name.lower() == f"{self.advert.instance_name()}.{SERVICE_TYPE}".lower():
            self._reject(RejectReason.SELF, name)
            return
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
        except (BadTypeInNameException, ZeroconfError, ValueError):
            self._reject(RejectReason.BAD_TXT, name)
            return
        try:
            found = await info.async_request(self._zc.zeroconf, int(self.config.resolve_timeout * 1000))
        except (ZeroconfError, OSError) as exc:
            log.debug("resolving %s: %r", name, exc)
            found = False
        if not found:
            self._reject(RejectReason.UNRESOLVED, name)
            return
        peer, reason = self._peer_from(name, info)
        if peer is None:
            self._reject(reason, name)
            # A known peer whose advertisement turned bad, or moved swarm, is gone for us.
            old = self._peers.pop(name, None)
            if old is not None:
                self._emit(PeerEvent(EventKind.REMOVED, old))
            return
        old = self._peers.get(name)
        if old is None and len(self._peers) >= MAX_PEERS:
            self._reject(RejectReason.TOO_MANY, name)
            return
        self._peers[name] = peer
        if old is None:
            self._emit(PeerEvent(EventKind.ADDED, peer))
        elif old != peer:
            self._emit(PeerEvent(EventKind.UPDATED, peer))

    def _peer_from(self, name: str, info: AsyncServiceInfo) -> tuple[Peer | None, RejectReason | None]:
        """Parse a resolved service into a Peer, or say why not: decode its records for ``peer_from_txt``."""
        try:
            props = info.decoded_properties
        except (UnicodeDecodeError, ValueError):
            return None, RejectReason.BAD_TXT
        version = IPVersion.V6Only if self._ip.version == 6 else IPVersion.V4Only
        return peer_from_txt(self.advert, name, props, info.parsed_scoped_addresses(version), self.network)

    def _reject(self, reason: RejectReason, name: str) -> None:
        self.rejected[reason] += 1
        log.debug("mDNS service %s ignored: %s", name, reason.value)

    def _emit(self, event: PeerEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a broken callback must not kill the zeroconf listener
                log.exception("discovery on_event callback failed for %s", event)
            return
        if self._events.qsize() >= self.config.event_queue:
            self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(event)
