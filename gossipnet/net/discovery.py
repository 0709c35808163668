"""mDNS discovery: advertise this node as ``_gossipnet._udp.local.`` and report peers of our swarm.

What the advertisement says, and how a peer's is parsed and rejected, lives in
``gossipnet.net.advert`` (pure code). This module does the I/O: rejected services
are counted, and nothing here ever raises because of what a peer sent.

A node's ``Discovery`` pins ``AsyncZeroconf`` to one interface address (``--interface
ADDR``), registers itself, and browses for peers of its swarm with the ``Browser`` of
``gossipnet.net.browser``, which ``gossipnet status`` uses too (``browse()``).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable

from zeroconf import Error as ZeroconfError, IPVersion, NonUniqueNameException, NotRunningException
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from gossipnet.errors import UserError
from gossipnet.net.advert import SERVICE_TYPE, Advertisement, Peer, RejectReason, on_subnet, peer_from_txt
from gossipnet.net.browser import Browser, DiscoveryConfig, PeerChange, PeerEvent, browse, read_service

__all__ = ["Discovery", "DiscoveryConfig", "PeerChange", "PeerEvent", "browse"]

log = logging.getLogger(__name__)

MDNS_GROUP_V4 = "224.0.0.251"  # RFC 6762 section 3
MDNS_PORT = 5353


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


async def start_discovery(advert: Advertisement, interface: str) -> Discovery | None:
    """A started ``Discovery`` for a node, or None (logged) when mDNS cannot start there:
    a node without mDNS still works through --peer seeds and membership gossip. A bad
    ``interface`` is the operator's error and still raises ``UserError``."""
    discovery = Discovery(advert, interface)
    try:
        await discovery.start()
    except UserError as exc:
        log.warning("mDNS discovery is off: %s", exc)
        return None
    return discovery


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
        self.events_dropped = 0
        self._zc: AsyncZeroconf | None = None
        self._browser: Browser | None = None
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
        version = self._version
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
        self._browser = Browser(self._zc, version, functools.partial(peer_from_txt, self.advert, subnet=self.network), self._emit,
                                self.config, own_name=f"{self.advert.instance_name()}.{SERVICE_TYPE}")
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
                await self._browser.stop()
            if self._announcing is not None:
                self._announcing.cancel()
                await asyncio.gather(self._announcing, return_exceptions=True)
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

    @property
    def rejected(self) -> dict[RejectReason, int]:
        """Services not reported as peers, by reason (zeros before start)."""
        return dict(self._browser.rejected) if self._browser else {r: 0 for r in RejectReason}

    def peers(self) -> dict[str, Peer]:
        """Current peers by service name (a copy)."""
        return dict(self._browser.peers) if self._browser else {}

    async def events(self) -> AsyncIterator[PeerEvent]:
        """Peer events until ``stop()``; use this or ``on_event``, not both."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def arrivals(self) -> AsyncIterator[tuple[Peer, bool]]:
        """Peers that appeared or changed, until ``stop()``, each with whether its address is on
        our interface's subnet (membership prefers those: a routed address may be unreachable)."""
        async for event in self.events():
            if event.kind in (PeerChange.ADDED, PeerChange.UPDATED):
                yield event.peer, on_subnet(event.peer.address, self.network)

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

    @property
    def _version(self) -> IPVersion:
        return IPVersion.V6Only if self._ip.version == 6 else IPVersion.V4Only

    def _peer_from(self, name: str, info: AsyncServiceInfo) -> tuple[Peer | None, RejectReason | None]:
        """Read a resolved service as this node's browser does (tests feed it records directly)."""
        return read_service(functools.partial(peer_from_txt, self.advert, subnet=self.network), self._version, name, info)

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
