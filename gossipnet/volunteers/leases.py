"""Leases for browser volunteers: tokens only this node can mint, single use, expiring.

A lease token is ``base64url(lease number (8 bytes) || HMAC-SHA256(secret, number)[:16])``:
the secret never leaves the node, so a forged or guessed token fails the MAC before any
lookup, and a number is consumed once (a replayed update finds it used). Minting is
rate-limited per IP (token bucket; IPv6 by /64, as the wire layer keys its budgets),
open leases are capped per IP and in total, and an IP caught cheating is banned for a
while. Sans-IO: every call takes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import struct
from dataclasses import dataclass, field

import numpy as np

_MAC_BYTES = 16
TOKEN_CHARS = 32  # base64url of 8 + 16 bytes


def ip_key(ip: str) -> str:
    """The budget key of an address: the address for IPv4, its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 4:
        return str(addr)
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.ip_network(f"{addr}/64", strict=False))


@dataclass
class Lease:
    """One unit of volunteer work: train ``steps`` batches of these images from ``version``."""

    number: int
    token: str
    client: str  # ip_key of the browser it was leased to
    version: int
    indices: np.ndarray  # positions in the node's training shard, in training order
    seed: int
    steps: int
    batch_size: int
    issued_at: float
    expires_at: float
    spot_check: bool  # decided at mint time, never revealed to the client
    used: bool = False


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class LeaseBook:
    """Mints, finds and consumes leases; counts nothing itself (the desk does)."""

    rate_per_minute: float
    burst: int
    max_open_per_client: int
    max_open: int
    ban_seconds: float
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    leases: dict[int, Lease] = field(default_factory=dict)
    banned: dict[str, float] = field(default_factory=dict)  # client -> until
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _next: int = 1

    def _mac(self, number: int) -> bytes:
        return hmac.new(self.secret, struct.pack(">Q", number), hashlib.sha256).digest()[:_MAC_BYTES]

    def token_for(self, number: int) -> str:
        raw = struct.pack(">Q", number) + self._mac(number)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def number_of(self, token: object) -> int | None:
        """The lease number a token names, or None when this node did not mint it."""
        if not isinstance(token, str) or len(token) != TOKEN_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 8 + _MAC_BYTES:
            return None
        (number,) = struct.unpack(">Q", raw[:8])
        return number if hmac.compare_digest(raw[8:], self._mac(number)) else None

    def refusal_to_mint(self, client: str, now: float) -> str | None:
        """Why ``client`` may not have a lease now (a Reason value), or None."""
        self.expire(now)
        if self.banned.get(client, -1.0) > now:
            return "banned"
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_minute / 60)
        bucket.at = now
        if bucket.tokens < 1:
            return "rate_limited"
        open_leases = [lease for lease in self.leases.values() if not lease.used and now <= lease.expires_at]
        open_here = sum(1 for lease in open_leases if lease.client == client)
        if (open_here >= self.max_open_per_client or len(open_leases) >= self.max_open
                or len(self.leases) >= 4 * self.max_open):  # used ones await their sweep
            return "busy"
        bucket.tokens -= 1
        return None

    def mint(self, client: str, version: int, indices: np.ndarray, seed: int, steps: int,
             batch_size: int, now: float, lifetime: float, spot_check: bool) -> Lease:
        """A new lease (call ``refusal_to_mint`` first)."""
        number = self._next
        self._next += 1
        lease = Lease(number, self.token_for(number), client, version, indices, seed, steps,
                      batch_size, now, now + lifetime, spot_check)
        self.leases[number] = lease
        return lease

    def find(self, token: object, now: float) -> Lease | str:
        """The open lease a token names, or why not: forged_lease, unknown_lease, replayed, expired."""
        number = self.number_of(token)
        if number is None:
            return "forged_lease"
        lease = self.leases.get(number)
        if lease is None:
            # minted here but swept (long expired, used or not), or never minted
            return "expired" if number < self._next else "unknown_lease"
        if lease.used:
            return "replayed"
        if now > lease.expires_at:
            return "expired"
        return lease

    def consume(self, lease: Lease) -> None:
        """Mark used: any later use of the token is a replay (kept until swept)."""
        lease.used = True

    def ban(self, client: str, now: float) -> None:
        self.banned[client] = now + self.ban_seconds
        for number in [n for n, lease in self.leases.items() if lease.client == client]:
            del self.leases[number]

    def expire(self, now: float) -> int:
        """Forget leases one lifetime past their expiry (until then a reuse reads as a
        replay or expiry, after it as expired) and lapsed bans; how many were forgotten."""
        gone = [n for n, lease in self.leases.items()
                if now > lease.expires_at + (lease.expires_at - lease.issued_at)]
        for n in gone:
            del self.leases[n]
        for client in [c for c, until in self.banned.items() if until <= now]:
            del self.banned[client]
        if len(self._buckets) > 4 * self.max_open:  # forget idle clients, bounded memory
            self._buckets = {c: b for c, b in self._buckets.items() if now - b.at < 300}
        return len(gone)
