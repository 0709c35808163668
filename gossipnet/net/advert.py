"""What a node advertises over mDNS, and how a peer's advertisement is read back.

Everything a TXT record says is a hint: it only tells membership where to send a
first ping. Trust comes from signed envelopes (DESIGN.md section 3). So TXT values
are parsed with hard limits, peers of other swarms or protocol versions are
rejected with a reason, and nothing here ever raises because of what a peer sent.

No sockets and no zeroconf here: ``gossipnet.net.discovery`` resolves services and
hands their decoded TXT and addresses to ``peer_from_txt``, so every rule about
hostile records is testable with plain dicts.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gossipnet.errors import UserError

SERVICE_TYPE = "_gossipnet._udp.local."

# TXT keys; short because every announcement repeats them.
TXT_SWARM, TXT_NODE, TXT_UDP, TXT_HTTP, TXT_LEARNER, TXT_PROTO = "swarm", "node", "udp", "http", "learner", "proto"

MAX_NODE_ID = 128  # same bound as membership's node ids (64 hex chars of a key fit twice)
MAX_TXT_VALUE = 255  # RFC 6763 section 6.1: one TXT string is at most 255 bytes
MAX_TXT_KEYS = 32  # we publish 6; keep a few unknown ones, drop the rest
_LEARNER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


class RejectReason(enum.Enum):
    """Why a discovered service was not reported as a peer; counted."""

    SELF = "self"  # our own advertisement, seen through multicast loopback
    OTHER_SWARM = "other_swarm"
    OTHER_PROTOCOL = "other_protocol"  # protocol version differs: we could not talk anyway
    BAD_TXT = "bad_txt"  # missing or malformed TXT values, or a malformed service name
    NO_ADDRESS = "no_address"  # no usable address of our IP version
    UNRESOLVED = "unresolved"  # SRV/TXT/A did not arrive in time
    TOO_MANY = "too_many"  # discovery's MAX_PEERS known or MAX_PENDING being resolved


@dataclass(frozen=True)
class Advertisement:
    """What this node publishes. ``swarm_id`` is the swarm's id as hex (the envelope's 8 bytes)."""

    swarm_id: str
    node_id: str
    udp_port: int
    http_port: int
    learner: str
    protocol: int

    def __post_init__(self) -> None:
        if not self.swarm_id or len(self.swarm_id) > 64 or not all(c in "0123456789abcdef" for c in self.swarm_id):
            raise UserError(f"swarm id {self.swarm_id!r} is not lowercase hex (at most 64 chars); use bytes.hex()")
        if not _valid_node_id(self.node_id):
            raise UserError(f"node id {self.node_id!r} must be 1..{MAX_NODE_ID} printable ASCII characters")
        for name in ("udp_port", "http_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise UserError(f"advertised {name} {getattr(self, name)} must be 1..65535: bind first, then advertise the real port")
        if not _LEARNER_RE.fullmatch(self.learner):
            raise UserError(f"learner kind {self.learner!r} must be a short lowercase word like 'convnet'")
        if not 0 <= self.protocol <= 255:
            raise UserError(f"protocol version {self.protocol} must be 0..255 (the envelope's version byte)")

    def txt(self) -> dict[str, str]:
        return {
            TXT_SWARM: self.swarm_id,
            TXT_NODE: self.node_id,
            TXT_UDP: str(self.udp_port),
            TXT_HTTP: str(self.http_port),
            TXT_LEARNER: self.learner,
            TXT_PROTO: str(self.protocol),
        }

    def instance_name(self) -> str:
        """A DNS-SD instance name unique per node and port: two daemons on one host both fit."""
        safe = _INSTANCE_UNSAFE.sub("", self.node_id)[:32] or "node"
        return f"gossipnet-{safe}-{self.udp_port}"


@dataclass(frozen=True)
class Peer:
    """A node of our swarm as mDNS describes it; every field is an unverified hint."""

    name: str  # mDNS service instance name, the key for updates and removals
    node_id: str
    address: str
    udp_port: int
    http_port: int
    learner: str
    protocol: int
    txt: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def udp_addr(self) -> tuple[str, int]:
        return (self.address, self.udp_port)


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def read_peer(
    name: str, props: Mapping[str, str | None], addresses: Iterable[str], subnet: Subnet | None = None,
) -> tuple[Peer | None, RejectReason | None]:
    """Read any gossipnet node's resolved service into a Peer (of whatever swarm), or say why not.

    ``props`` is its decoded TXT record, ``addresses`` its IP literals (most recent first);
    one on ``subnet`` (our interface's) is preferred, since a peer we reach directly is there.
    A pure function of the records: no TXT content makes it raise. ``gossipnet status``
    uses it as it is; a node filters further with ``peer_from_txt``.
    """
    txt = {k: v for k, v in list(props.items())[:MAX_TXT_KEYS]
           if isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_TXT_VALUE and len(v) <= MAX_TXT_VALUE}
    swarm, node_id, proto = txt.get(TXT_SWARM, ""), txt.get(TXT_NODE), txt.get(TXT_PROTO, "")
    if not swarm or len(swarm) > 64 or not _valid_node_id(node_id) or not proto.isdigit() or len(proto) > 3:
        return None, RejectReason.BAD_TXT
    udp_port, http_port = _port(txt.get(TXT_UDP)), _port(txt.get(TXT_HTTP))
    learner = txt.get(TXT_LEARNER, "")
    if udp_port is None or http_port is None or not _LEARNER_RE.fullmatch(learner):
        return None, RejectReason.BAD_TXT
    usable = [a for a in addresses
              if not (ip := ipaddress.ip_address(a.split("%")[0])).is_multicast and not ip.is_unspecified]
    if not usable:
        return None, RejectReason.NO_ADDRESS
    if subnet is not None:
        usable.sort(key=lambda a: not on_subnet(a, subnet))  # stable: keeps recency within each
    return Peer(name, node_id, usable[0], udp_port, http_port, learner, int(proto),
                MappingProxyType(txt)), None


def peer_from_txt(
    ours: Advertisement, name: str, props: Mapping[str, str | None], addresses: Iterable[str],
    subnet: Subnet | None = None,
) -> tuple[Peer | None, RejectReason | None]:
    """Read a resolved service named ``name`` into a Peer of our swarm, or say why not.

    ``props`` is its decoded TXT record, ``addresses`` its IP literals of our IP version
    (most recent first). A pure function of the records: no TXT content makes it raise.
    """
    if props.get(TXT_SWARM) != ours.swarm_id:
        return None, RejectReason.OTHER_SWARM
    peer, reason = read_peer(name, props, addresses, subnet)
    if peer is None:
        return None, reason
    if peer.node_id == ours.node_id:
        return None, RejectReason.SELF
    if peer.protocol != ours.protocol:
        return None, RejectReason.OTHER_PROTOCOL
    return peer, None


def _valid_node_id(value: object) -> bool:
    return (isinstance(value, str) and 1 <= len(value) <= MAX_NODE_ID
            and value.isascii() and value.isprintable())


def _port(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 5:
        return None
    port = int(value)
    return port if 1 <= port <= 65535 else None


def on_subnet(address: str, subnet: Subnet | None) -> bool:
    """Whether the IP literal ``address`` lies in ``subnet`` (False for junk or None)."""
    if subnet is None:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]) in subnet
    except ValueError:
        return False
