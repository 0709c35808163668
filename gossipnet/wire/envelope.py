"""The signed envelope shared by the UDP and HTTP planes, and the Sealer that makes one.

Layout (big-endian; see docs/WIRE.md):

    magic "GSN" | version u8 | type u8 | flags u8 | swarm id 8 | recipient 8 |
    sender key 32 | incarnation u64 | seq u64 | timestamp ms u64 | body length u32 |
    [certificate 72, if flags & HAS_CERT] | body | Ed25519 signature 64

The signature covers the plane's context string plus every byte before it, so a
datagram cannot be replayed as an HTTP request or vice versa. The recipient (the
first 8 bytes of the receiver's node-id hash) binds a unicast message to the one
node it was sent to: replay windows are per receiver, so without it a message
sniffed on its way to A could be replayed, once, to every other node. Only a join
SYNC to a seed address, whose owner is not known yet, goes to ``ANY_RECIPIENT``.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, replace
from typing import Any

from gossipnet.trust.credentials import Credentials
from gossipnet.trust.identity import Identity
from gossipnet.trust.swarm import CERT_LEN
from gossipnet.wire.body import BodyLimits, BodyTooLarge, encode_body
from gossipnet.wire.types import MsgType

MAGIC = b"GSN"
VERSION = 2  # 2 added the recipient
FLAG_HAS_CERT = 0x01
HEADER = struct.Struct(">3sBBB8s8s32sQQQI")
HEADER_LEN = HEADER.size  # 82
RECIPIENT_LEN = 8
ANY_RECIPIENT = bytes(RECIPIENT_LEN)
SIG_LEN = 64
MAX_DATAGRAM = 1400  # memberlist's UDP budget: fits a 1,500-byte Ethernet MTU with IP/UDP headers
OVERHEAD = HEADER_LEN + CERT_LEN + SIG_LEN  # worst case: certificate-mode envelope
MAX_UDP_BODY = MAX_DATAGRAM - OVERHEAD  # 1,182 bytes of msgpack in any swarm mode
U64_MAX = 2**64 - 1


def recipient_tag(node_id: str | None) -> bytes:
    """The header's recipient field for ``node_id`` (its sha256 prefix); None = any recipient.

    A node id is base32 of sha256(public key)[:10] (``trust.identity.node_id_of``), so the
    sender needs only the id membership already knows, not the receiver's key.
    """
    if node_id is None:
        return ANY_RECIPIENT
    try:
        raw = base64.b32decode(node_id.upper())
    except (ValueError, TypeError):
        raise ValueError(f"{node_id!r} is not a node id") from None
    if len(raw) < RECIPIENT_LEN:
        raise ValueError(f"{node_id!r} is not a node id")
    return raw[:RECIPIENT_LEN]


@dataclass(frozen=True)
class WireLimits:
    """Size limits and signing context for one plane; ``udp()`` and ``http()`` are the presets."""

    plane: str = "udp"
    max_envelope: int = MAX_DATAGRAM
    body: BodyLimits = BodyLimits.udp()

    @property
    def context(self) -> bytes:
        return b"gossipnet/wire/v1/" + self.plane.encode() + b"\x00"

    @classmethod
    def udp(cls) -> WireLimits:
        return cls()

    @classmethod
    def http(cls, max_envelope: int = 1 << 20) -> WireLimits:
        """Signed HTTP requests/responses (e.g. blob requests, status with proof of origin)."""
        return cls("http", max_envelope, BodyLimits.http(max_envelope - OVERHEAD))

    def max_body(self, with_cert: bool = True) -> int:
        return self.max_envelope - HEADER_LEN - SIG_LEN - (CERT_LEN if with_cert else 0)


@dataclass(frozen=True)
class Header:
    version: int
    msg_type: int
    flags: int
    swarm_id: bytes
    recipient: bytes
    sender: bytes
    incarnation: int
    seq: int
    timestamp_ms: int
    body_len: int


def parse_header(data: bytes) -> Header:
    """Unpack the fixed header; raises struct.error if ``data`` is shorter than it."""
    magic, version, mtype, flags, swarm, rcpt, sender, inc, seq, ts, blen = HEADER.unpack_from(data)
    return Header(version, mtype, flags, swarm, rcpt, sender, inc, seq, ts, blen)


class Sealer:
    """Signs this node's outgoing messages: identity, swarm, incarnation and a seq counter.

    One Sealer per plane (its limits pick the context string). The sequence number
    starts at 1 and never repeats within an incarnation; that is what the receiver's
    replay window relies on.
    """

    def __init__(self, identity: Identity, credentials: Credentials, incarnation: int,
                 limits: WireLimits | None = None) -> None:
        if not 0 <= incarnation <= U64_MAX:
            raise ValueError(f"incarnation {incarnation} outside u64")
        self.identity = identity
        self.credentials = credentials
        self.incarnation = incarnation
        self.limits = limits or WireLimits.udp()
        self.seq = 0
        cert = credentials.cert
        if cert is not None and len(cert) != CERT_LEN:
            raise ValueError(f"compact certificate must be {CERT_LEN} bytes")
        self._cert = cert or b""
        self._flags = FLAG_HAS_CERT if cert else 0
        self.max_body = self.limits.max_body(with_cert=cert is not None)
        self._body_limits = replace(self.limits.body, max_bytes=min(self.limits.body.max_bytes, self.max_body))

    def seal(self, msg_type: MsgType, body: Any, now_ms: int, to: str | None = None) -> bytes:
        """Encode ``body`` (plain data) and return the envelope, signed for node ``to``."""
        try:
            data = encode_body(body, self._body_limits)
        except BodyTooLarge as exc:
            raise BodyTooLarge(f"{MsgType(msg_type).name} {exc}") from None
        return self.seal_raw(msg_type, data, now_ms, to)

    def seal_raw(self, msg_type: MsgType, body: bytes, now_ms: int, to: str | None = None) -> bytes:
        """Sign an already encoded body (the benchmark, and callers that cache bodies)."""
        if len(body) > self.max_body:
            raise BodyTooLarge(
                f"{MsgType(msg_type).name} body is {len(body)} bytes, {len(body) - self.max_body} over "
                f"the {self.limits.plane} limit of {self.max_body}; send fewer items per message"
            )
        if not 0 <= now_ms <= U64_MAX:
            raise ValueError(f"timestamp {now_ms} ms is outside u64; pass wall-clock milliseconds")
        recipient = recipient_tag(to)
        self.seq += 1
        head = HEADER.pack(MAGIC, VERSION, int(msg_type), self._flags, self.credentials.swarm_id,
                           recipient, self.identity.pubkey, self.incarnation, self.seq, int(now_ms), len(body))
        signed = head + self._cert + body
        return signed + self.identity.sign(self.limits.context + signed)
