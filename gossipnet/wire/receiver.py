"""Opening envelopes from peers: every check in cost order, every rejection named and counted.

Order (cheapest first, so a flood of junk never reaches Ed25519 verification):
size and magic -> version -> swarm id -> per-source-IP rate limit -> layout ->
recipient -> admitted sender (allowlist lookup, or certificate expiry and cache) ->
timestamp skew -> replay window -> failed-signature budget of (sender, source IP) ->
global budget for verifying unknown certificates -> certificate signature on a cache
miss -> message signature -> advance the replay window -> decode the body with hard
limits -> schema.

Every budget is keyed by source IP (IPv6 by /64), never by port, and the two Ed25519
steps have budgets of their own, so an outsider rotating ports, keys or certificates
spends at most a bounded share of the event loop on verification.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gossipnet.trust.identity import node_id_of
from gossipnet.trust.swarm import CERT_LEN, Policy
from gossipnet.wire.body import BodyError, decode_body, validate
from gossipnet.wire.envelope import (ANY_RECIPIENT, FLAG_HAS_CERT, HEADER, HEADER_LEN, MAGIC, SIG_LEN,
                                     VERSION, WireLimits, recipient_tag)
from gossipnet.wire.guards import ReplayWindows, TokenBuckets, source_key
from gossipnet.wire.types import MsgType

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a peer's envelope was dropped; the values are the status page's counter names."""

    TOO_LARGE = "too_large"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    WRONG_SWARM = "wrong_swarm"
    RATE_LIMITED = "rate_limited"
    MALFORMED = "malformed"
    WRONG_RECIPIENT = "wrong_recipient"  # signed for another node: a replay or a stale address
    NOT_ADMITTED = "not_admitted"
    STALE = "stale"
    REPLAYED = "replayed"
    CERT_BUDGET = "cert_budget"  # too many unknown certificates to verify this second
    SIG_BUDGET = "sig_budget"  # this sender failed its signature too often from this source
    BAD_SIGNATURE = "bad_signature"

# A join SYNC goes to a seed address before its owner's id is known: the only message
# that may name no recipient. Its reply goes to the (authenticated) sender.
ANY_RECIPIENT_TYPES = frozenset({MsgType.SYNC})


@dataclass(frozen=True)
class Accepted:
    """An authentic, fresh, well-formed message from an admitted sender."""

    msg_type: MsgType
    sender: bytes
    incarnation: int
    seq: int
    timestamp_ms: int
    body: Any
    source: tuple[str, int]

    @property
    def node_id(self) -> str:
        return node_id_of(self.sender)


@dataclass(frozen=True)
class Rejected:
    reason: Reason
    source: tuple[str, int]
    detail: str = ""


@dataclass(frozen=True)
class ReceiverConfig:
    """Receiver knobs; ``udp()`` for datagrams, ``http()`` for signed HTTP bodies."""

    limits: WireLimits = field(default_factory=WireLimits.udp)
    # Clocks of LAN machines agree within seconds under NTP; 60 s tolerates a stray
    # laptop and bounds how long a message is replayable should its window be evicted.
    max_skew_ms: int = 60_000
    # memberlist LAN traffic is a few messages/s per peer (1 s probes, 200 ms gossip,
    # fanout 3); 200/s with a burst of 400 leaves room for a full sync.
    rate_per_s: float = 200.0
    burst: float = 400.0
    # Verifying an unknown certificate costs 115-250 us on the event loop; 100/s is at
    # most 2.5% of a core, and a 100-node swarm starting at once fits in the burst.
    cert_verify_per_s: float = 100.0
    cert_verify_burst: float = 200.0
    # An honest sender never fails a signature (UDP checksums catch bit errors); a few
    # per minute from one (sender, source IP) is an attacker, who then gets no more verifies.
    sig_failures_per_s: float = 0.2
    sig_failures_burst: float = 5.0
    max_sources: int = 4096  # token buckets kept (LRU)
    max_senders: int = 4096  # replay windows kept (LRU); only verified senders get one
    window: int = 1024  # sequence numbers remembered per sender (RFC 4303 uses 32-64)

    @classmethod
    def udp(cls) -> ReceiverConfig:
        return cls()

    @classmethod
    def http(cls, max_envelope: int = 1 << 20) -> ReceiverConfig:
        return cls(limits=WireLimits.http(max_envelope), rate_per_s=20.0, burst=40.0)


class Receiver:
    """Checks envelopes for one plane against a swarm's admission policy (sans-IO)."""

    def __init__(self, policy: Policy, config: ReceiverConfig | None = None,
                 schemas: Mapping[int, Any] | None = None, node_id: str | None = None) -> None:
        """``node_id``: ours, to refuse messages signed for another node; None (tools and
        tests that are no node) accepts any recipient."""
        self.policy = policy
        self.config = config or ReceiverConfig.udp()
        self.schemas = dict(schemas or {})
        self._context = self.config.limits.context
        self._recipient = None if node_id is None else recipient_tag(node_id)
        c = self.config
        self._buckets = TokenBuckets(c.rate_per_s, c.burst, c.max_sources)
        self._cert_budget = TokenBuckets(c.cert_verify_per_s, c.cert_verify_burst, 1)
        self._sig_failures = TokenBuckets(c.sig_failures_per_s, c.sig_failures_burst, c.max_sources)
        self._windows = ReplayWindows(self.config.window, self.config.max_senders)
        self._counts = {"accepted": 0, **{r.value: 0 for r in Reason}}

    @property
    def counters(self) -> dict[str, int]:
        """Accepted and per-reason rejection counts, for the status page and metrics."""
        return dict(self._counts)

    def table_sizes(self) -> dict[str, int]:
        return {"sources": len(self._buckets), "senders": len(self._windows)}

    def _reject(self, reason: Reason, source: tuple[str, int], detail: str = "") -> Rejected:
        self._counts[reason.value] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rejected %s from %s: %s", reason.value, source, detail)
        return Rejected(reason, source, detail)

    def open(self, datagram: bytes, source: tuple[str, int], now_ms: int) -> Accepted | Rejected:
        """Check one envelope; never raises for any input bytes."""
        data = bytes(datagram)
        n = len(data)
        if n > self.config.limits.max_envelope:
            return self._reject(Reason.TOO_LARGE, source, f"{n} bytes")
        if data[:3] != MAGIC:
            return self._reject(Reason.BAD_MAGIC, source)
        if n < HEADER_LEN + SIG_LEN:
            return self._reject(Reason.MALFORMED, source, f"truncated at {n} bytes")
        _, version, mtype, flags, swarm_id, recipient, sender, inc, seq, ts, body_len = HEADER.unpack_from(data)
        if version != VERSION:
            return self._reject(Reason.BAD_VERSION, source, f"version {version}")
        if swarm_id != self.policy.swarm_id:
            return self._reject(Reason.WRONG_SWARM, source, swarm_id.hex())
        ip = source_key(source[0])
        if not self._buckets.allow(ip, now_ms):
            return self._reject(Reason.RATE_LIMITED, source)

        cert_len = CERT_LEN if flags & FLAG_HAS_CERT else 0
        if flags & ~FLAG_HAS_CERT or n != HEADER_LEN + cert_len + body_len + SIG_LEN:
            return self._reject(Reason.MALFORMED, source, "flags or length do not match")
        try:
            msg_type = MsgType(mtype)
        except ValueError:
            return self._reject(Reason.MALFORMED, source, f"unknown message type {mtype}")
        if self._recipient is not None and recipient != self._recipient and not (
                recipient == ANY_RECIPIENT and msg_type in ANY_RECIPIENT_TYPES):
            return self._reject(Reason.WRONG_RECIPIENT, source, f"{msg_type.name} for {recipient.hex()}")
        cert = data[HEADER_LEN:HEADER_LEN + cert_len] if cert_len else None

        admitted = self.policy.precheck(sender, cert, now_ms)
        if admitted is False:
            return self._reject(Reason.NOT_ADMITTED, source, node_id_of(sender))
        if abs(ts - now_ms) > self.config.max_skew_ms:
            return self._reject(Reason.STALE, source, f"timestamp {ts - now_ms:+d} ms off")
        verdict = self._windows.check(sender, inc, seq)
        if verdict == ReplayWindows.STALE:
            return self._reject(Reason.STALE, source, f"old incarnation {inc}")
        if verdict == ReplayWindows.REPLAYED:
            return self._reject(Reason.REPLAYED, source, f"seq {seq}")
        failures_key = (sender, ip)
        if not self._sig_failures.has(failures_key, now_ms):
            return self._reject(Reason.SIG_BUDGET, source, node_id_of(sender))
        if admitted is None:
            if not self._cert_budget.allow(None, now_ms):
                return self._reject(Reason.CERT_BUDGET, source, node_id_of(sender))
            if not self.policy.verify(sender, cert):
                self._sig_failures.allow(failures_key, now_ms)
                return self._reject(Reason.NOT_ADMITTED, source, f"bad certificate for {node_id_of(sender)}")

        signed_end = n - SIG_LEN
        try:
            Ed25519PublicKey.from_public_bytes(sender).verify(
                data[signed_end:], self._context + data[:signed_end]
            )
        except (InvalidSignature, ValueError):
            self._sig_failures.allow(failures_key, now_ms)
            return self._reject(Reason.BAD_SIGNATURE, source, node_id_of(sender))
        self._windows.accept(sender, inc, seq)

        body_start = HEADER_LEN + cert_len
        try:
            body = decode_body(data[body_start:signed_end], self.config.limits.body)
            schema = self.schemas.get(msg_type)
            if schema is not None:
                validate(body, schema, msg_type.name)
        except BodyError as exc:
            return self._reject(Reason.MALFORMED, source, str(exc))
        self._counts["accepted"] += 1
        return Accepted(msg_type, sender, inc, seq, ts, body, source)
