"""Browsing mDNS for gossipnet nodes: the one browser a node's ``Discovery`` and ``gossipnet status`` share.

``Browser`` follows ``_gossipnet._udp.local.`` on a running ``AsyncZeroconf`` and resolves
each added or updated service with ``AsyncServiceInfo``; python-zeroconf's state changes
arrive as callbacks on the event loop. What a TXT record may say is decided in
``gossipnet.net.advert`` (pure code); refusals are counted here, and nothing here ever
raises because of what a peer sent. ``browse()`` only browses, for nodes of any swarm.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from zeroconf import BadTypeInNameException, Error as ZeroconfError, InterfaceChoice, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from gossipnet.errors import UserError
from gossipnet.net.advert import SERVICE_TYPE, Peer, RejectReason, read_peer

log = logging.getLogger(__name__)

MAX_PEERS = 1024  # far above a LAN swarm; bounds memory against a flood of fake services
MAX_PENDING = 64  # services being resolved at once; a flood beyond this is counted and skipped


class PeerChange(enum.Enum):
    """How a discovered peer changed (not membership's EventKind: mDNS only hints)."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True)
class PeerEvent:
    kind: PeerChange
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


Accept = Callable[[str, Mapping[str, str | None], Iterable[str]], tuple[Peer | None, RejectReason | None]]


class Browser:
    """Follows ``_gossipnet._udp.local.`` on a running zeroconf and keeps the peers ``accept`` takes.

    ``accept(name, txt, addresses)`` reads a resolved service (``advert.read_peer`` or
    ``peer_from_txt``); refusals are counted in ``rejected``. Changes go to ``emit``.
    Callbacks run on the event loop and never raise, whatever a service says.
    """

    def __init__(self, zc: AsyncZeroconf, version: IPVersion, accept: Accept,
                 emit: Callable[[PeerEvent], None], config: DiscoveryConfig, own_name: str | None = None) -> None:
        self._zc = zc
        self._version = version
        self._accept = accept
        self._emit = emit
        self.config = config
        self._own_name = own_name.lower() if own_name else None
        self.peers: dict[str, Peer] = {}
        self.rejected: dict[RejectReason, int] = {r: 0 for r in RejectReason}
        self._pending: dict[str, asyncio.Task] = {}
        self._stopped = False
        # Last: zeroconf calls the handler from inside this constructor for services already
        # in its cache (a node started after its peers), so everything it reads must exist.
        self._browser = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change])

    async def settle(self) -> None:
        """Wait for the services being resolved right now (each is bounded by resolve_timeout)."""
        if self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Stop browsing and cancel pending resolutions; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._browser.async_cancel()
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._pending.clear()

    def _on_state_change(self, zeroconf: object, service_type: str, name: str,
                         state_change: ServiceStateChange) -> None:
        """Browser callback, on the event loop: never raises, never blocks."""
        if self._stopped:
            return
        if state_change is ServiceStateChange.Removed:
            task = self._pending.pop(name, None)
            if task is not None:
                task.cancel()
            peer = self.peers.pop(name, None)
            if peer is not None:
                self._emit(PeerEvent(PeerChange.REMOVED, peer))
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
        if self._own_name is not None and name.lower() == self._own_name:
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
        peer, reason = self.read(name, info)
        if peer is None:
            self._reject(reason, name)
            # A known peer whose advertisement turned bad, or moved swarm, is gone for us.
            old = self.peers.pop(name, None)
            if old is not None:
                self._emit(PeerEvent(PeerChange.REMOVED, old))
            return
        old = self.peers.get(name)
        if old is None and len(self.peers) >= MAX_PEERS:
            self._reject(RejectReason.TOO_MANY, name)
            return
        self.peers[name] = peer
        if old is None:
            self._emit(PeerEvent(PeerChange.ADDED, peer))
        elif old != peer:
            self._emit(PeerEvent(PeerChange.UPDATED, peer))

    def read(self, name: str, info: AsyncServiceInfo) -> tuple[Peer | None, RejectReason | None]:
        """Decode a resolved service's records for ``accept``."""
        return read_service(self._accept, self._version, name, info)

    def _reject(self, reason: RejectReason, name: str) -> None:
        self.rejected[reason] += 1
        log.debug("mDNS service %s ignored: %s", name, reason.value)


def read_service(accept: Accept, version: IPVersion, name: str,
                 info: AsyncServiceInfo) -> tuple[Peer | None, RejectReason | None]:
    """A resolved service's decoded TXT and addresses of ``version``, read by ``accept``."""
    try:
        props = info.decoded_properties
    except (UnicodeDecodeError, ValueError):
        return None, RejectReason.BAD_TXT
    return accept(name, props, info.parsed_scoped_addresses(version))


async def browse(wait: float, interface: str | None = None, config: DiscoveryConfig | None = None) -> list[Peer]:
    """Every gossipnet node (of any swarm) that answers mDNS within ``wait`` seconds; registers nothing.

    ``interface``: browse on that address's interface only (default: all). Raises
    UserError if mDNS cannot start there.
    """
    version = IPVersion.V4Only
    if interface is not None:
        try:
            version = IPVersion.V6Only if ipaddress.ip_address(interface).version == 6 else IPVersion.V4Only
        except ValueError:
            raise UserError(f"--interface {interface!r} is not an IP address; give this host's LAN "
                            "address, e.g. --interface 192.168.1.20") from None
    try:
        zc = AsyncZeroconf(interfaces=[interface] if interface else InterfaceChoice.Default, ip_version=version)
    except (OSError, ZeroconfError) as exc:
        where = f"--interface {interface}" if interface else "this host's interfaces"
        raise UserError(f"mDNS could not start on {where} ({exc}); use --no-mdns with "
                        "--peer HOST:HTTP_PORT, or pick another --interface") from None
    browser = None
    try:
        browser = Browser(zc, version, read_peer, lambda event: None, config or DiscoveryConfig.lan())
        await asyncio.sleep(wait)
        await browser.settle()
        return list(browser.peers.values())
    finally:
        if browser is not None:
            await browser.stop()
        await zc.async_close()
