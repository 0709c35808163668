"""The receiver's bounded per-peer state: token buckets per source, replay windows per sender.

Both tables have a fixed capacity and evict the least recently used entry, so a flood
of spoofed sources or keys costs memory only up to that capacity.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass


def source_key(host: str) -> str:
    """The budget key of a source address: its IPv4 address, or its IPv6 /64.

    Never the port: one host rotating source ports must share one budget. An IPv6
    host is given a whole /64 by SLAAC and may pick any address in it (RFC 4941), so
    the /64 is what one host controls (libp2p and Cloudflare limit IPv6 per /64 too).
    """
    if ":" not in host:
        return host  # IPv4: the fast path, no parsing
    try:
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


class TokenBuckets:
    """A token bucket per key (source address): ``rate`` per second, up to ``burst``."""

    def __init__(self, rate: float, burst: float, capacity: int) -> None:
        if rate <= 0 or burst < 1 or capacity < 1:
            raise ValueError("rate > 0, burst >= 1 and capacity >= 1 required")
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[object, list[float]] = OrderedDict()  # key -> [tokens, last ms]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: object, now_ms: int) -> bool:
        """Take one token for ``key`` if it has one."""
        bucket = self._refill(key, now_ms, create=True)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def has(self, key: object, now_ms: int) -> bool:
        """Whether ``key`` has a token, without taking it (an unknown key has a full bucket)."""
        bucket = self._refill(key, now_ms, create=False)
        return bucket is None or bucket[0] >= 1.0

    def _refill(self, key: object, now_ms: int, create: bool) -> list[float] | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            if not create:
                return None
            bucket = [self.burst, now_ms]
            self._buckets[key] = bucket
            if len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(key)
        elapsed = max(0, now_ms - bucket[1])  # a clock stepping back refills nothing
        bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate / 1000.0)
        bucket[1] = max(bucket[1], now_ms)
        return bucket


@dataclass
class _Window:
    incarnation: int
    top: int  # highest sequence number accepted
    bits: int  # bit i set: seq (top - i) was accepted


class ReplayWindows:
    """Per sender: the current incarnation and a sliding bitmap of accepted sequence numbers.

    The IPsec/DTLS anti-replay window (RFC 4303 section 3.4.3), keyed by sender key and
    reset on a higher incarnation. ``check`` is pure; ``accept`` is called only after
    the signature verified, so an unsigned datagram can neither create nor move a window.
    """

    OK = "ok"
    STALE = "stale"  # an older incarnation: a message from before the sender restarted
    REPLAYED = "replayed"  # seen already, or older than the window

    def __init__(self, size: int, capacity: int) -> None:
        if size < 1 or capacity < 1:
            raise ValueError("size and capacity must be >= 1")
        self.size = size
        self.capacity = capacity
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, sender: bytes, incarnation: int, seq: int) -> str:
        w = self._windows.get(sender)
        if w is None or incarnation > w.incarnation:
            return self.OK
        if incarnation < w.incarnation:
            return self.STALE
        if seq > w.top:
            return self.OK
        offset = w.top - seq
        if offset >= self.size or (w.bits >> offset) & 1:
            return self.REPLAYED
        return self.OK

    def accept(self, sender: bytes, incarnation: int, seq: int) -> None:
        """Record (incarnation, seq) as seen; call only for a message ``check`` passed."""
        w = self._windows.get(sender)
        if w is None or incarnation > w.incarnation:
            self._windows[sender] = _Window(incarnation, seq, 1)
            self._windows.move_to_end(sender)
            if len(self._windows) > self.capacity:
                self._windows.popitem(last=False)
            return
        self._windows.move_to_end(sender)
        if seq > w.top:
            shift = seq - w.top
            w.bits = ((w.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            w.top = seq
        else:
            w.bits |= 1 << (w.top - seq)
