"""Membership message bodies: building them and validating them strictly.

Bodies are plain msgpack-able dicts with one-letter keys (see docs/MEMBERSHIP.md).
Every incoming body is checked against an exact schema: wrong type, missing or
unknown key, out-of-range number or oversized string raises ``BadBody``, which
``Membership.handle`` counts as a rejection.  Nothing else may escape.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import msgpack

from gossipnet.membership.types import Addr, State
from gossipnet.wire.types import MsgType

MAX_ID_CHARS = 128  # node ids are derived from 32-byte keys: 64 hex or 43 base64 chars fit
MAX_HOST_CHARS = 253  # longest DNS name
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**53  # exact in every JSON/float consumer of the status page
MAX_UPDATES = 64  # per datagram; 1,200 bytes cannot hold more real ones anyway
MAX_ENTRIES = 64  # SYNC members per datagram
MAX_META_KEYS = 16
MAX_META_KEY_CHARS = 32
MAX_META_STR_CHARS = 128
MAX_META_BYTES = 256  # packed; meta rides in every alive update
PUBKEY_BYTES = 32  # Ed25519: an alive record carries its node's key and signature (records.py)
SIG_BYTES = 64


class BadBody(ValueError):
    """An incoming body does not match its schema."""


class Update(NamedTuple):
    """One piggy-backed rumour or SYNC row, parsed.

    ``state`` is ALIVE (with addr and meta), SUSPECT or DEAD (with ``origin``,
    the node that suspected or declared it), or LEFT (a dead rumour whose origin
    is the node itself, as in memberlist). ``pubkey`` and ``sig`` are the node's own
    signature over its alive record (incarnation, address, meta; see records.py),
    carried by alive rumours and SYNC rows so that only the node can raise its
    incarnation or move its address.
    """

    state: State
    node_id: str
    incarnation: int
    addr: Addr | None = None
    meta: dict[str, Any] | None = None
    origin: str | None = None
    pubkey: bytes | None = None
    sig: bytes | None = None


def packed_size(obj: Any) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


# ---------------------------------------------------------------- building


def encode_update(u: Update) -> dict[str, Any]:
    """The piggy-back form of a rumour."""
    if u.state == State.ALIVE:
        body = {"k": int(State.ALIVE), "n": u.node_id, "i": u.incarnation,
                "a": [u.addr[0], u.addr[1]], "m": u.meta or {}}
        if u.sig is not None:
            body["p"], body["g"] = u.pubkey, u.sig
        return body
    if u.state == State.LEFT:
        return {"k": int(State.DEAD), "n": u.node_id, "i": u.incarnation, "f": u.node_id}
    return {"k": int(u.state), "n": u.node_id, "i": u.incarnation, "f": u.origin}


def encode_entry(node_id: str, incarnation: int, state: State, addr: Addr,
                 meta: dict[str, Any], record: tuple[bytes, bytes] | None = None) -> dict[str, Any]:
    """One row of a SYNC body; ``record`` is the node's (pubkey, signature) of (i, a, m)."""
    row = {"n": node_id, "i": incarnation, "s": int(state), "a": [addr[0], addr[1]], "m": meta}
    if record is not None:
        row["p"], row["g"] = record
    return row


# ---------------------------------------------------------------- checking


def _dict(body: Any, keys: set[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadBody("body is not a map")
    have = set(body)
    if not keys <= have or not have <= keys | optional:
        raise BadBody(f"keys {sorted(map(str, have))} != {sorted(keys)}")
    return body


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise BadBody(f"{what} is not an int in [{lo}, {hi}]")
    return value


def _str(value: Any, max_chars: int, what: str) -> str:
    if type(value) is not str or not 1 <= len(value) <= max_chars or not value.isprintable():
        raise BadBody(f"{what} is not a printable string of 1..{max_chars} chars")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise BadBody(f"{what} is not a bool")
    return value


def node_id(value: Any) -> str:
    return _str(value, MAX_ID_CHARS, "node id")


def seq(value: Any) -> int:
    return _int(value, 0, MAX_SEQ, "seq")


def incarnation(value: Any) -> int:
    return _int(value, 0, MAX_INCARNATION, "incarnation")


def addr(value: Any) -> Addr:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadBody("address is not [host, port]")
    return (_str(value[0], MAX_HOST_CHARS, "host"), _int(value[1], 1, 65535, "port"))


def meta(value: Any) -> dict[str, Any]:
    """Small flat map of str -> str/int/float/bool/None (http port, learner kind, ...)."""
    if not isinstance(value, dict) or len(value) > MAX_META_KEYS:
        raise BadBody(f"meta is not a map of at most {MAX_META_KEYS} keys")
    bound = 3  # an upper bound of the packed size; pack only when it might be too big
    for key, item in value.items():
        _str(key, MAX_META_KEY_CHARS, "meta key")
        bound += 4 * len(key) + 5 + (4 * len(item) + 5 if type(item) is str else 9)
        if type(item) is str:
            if len(item) > MAX_META_STR_CHARS:
                raise BadBody("meta string too long")
        elif type(item) is float:
            if not math.isfinite(item):
                raise BadBody("meta float is not finite")
        elif type(item) is int:
            if not -(2**63) <= item < 2**64:
                raise BadBody("meta int out of msgpack range")
        elif item is not None and type(item) is not bool:
            raise BadBody(f"meta value of type {type(item).__name__}")
    if bound > MAX_META_BYTES and packed_size(value) > MAX_META_BYTES:
        raise BadBody(f"meta packs to more than {MAX_META_BYTES} bytes")
    return dict(value)


def _bytes(value: Any, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise BadBody(f"{what} is not {size} bytes")
    return value


def _record(body: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """The optional (pubkey, signature) pair of an alive record: both or neither."""
    if "p" not in body and "g" not in body:
        return None, None
    if "p" not in body or "g" not in body:
        raise BadBody("an alive record needs both its key (p) and signature (g)")
    return _bytes(body["p"], PUBKEY_BYTES, "record key"), _bytes(body["g"], SIG_BYTES, "record signature")


def update(value: Any) -> Update:
    body = _dict(value, {"k", "n", "i"}, frozenset({"a", "m", "f", "p", "g"}))
    kind = _int(body["k"], 0, 2, "update kind")
    nid, inc = node_id(body["n"]), incarnation(body["i"])
    if kind == State.ALIVE:
        _dict(body, {"k", "n", "i", "a", "m"}, frozenset({"p", "g"}))
        pubkey, sig = _record(body)
        return Update(State.ALIVE, nid, inc, addr(body["a"]), meta(body["m"]), pubkey=pubkey, sig=sig)
    _dict(body, {"k", "n", "i", "f"})
    origin = node_id(body["f"])
    if kind == State.DEAD and origin == nid:
        return Update(State.LEFT, nid, inc)
    return Update(State(kind), nid, inc, origin=origin)


def entry(value: Any) -> Update:
    body = _dict(value, {"n", "i", "s", "a", "m"}, frozenset({"p", "g"}))
    state = State(_int(body["s"], 0, 3, "state"))
    pubkey, sig = _record(body)
    return Update(state, node_id(body["n"]), incarnation(body["i"]), addr(body["a"]),
                  meta(body["m"]), pubkey=pubkey, sig=sig)


def _list(value: Any, max_items: int, what: str) -> list[Any]:
    if not isinstance(value, (list, tuple)) or len(value) > max_items:
        raise BadBody(f"{what} is not a list of at most {max_items} items")
    return list(value)


def updates(value: Any) -> list[Update]:
    return [update(v) for v in _list(value, MAX_UPDATES, "updates")]


# Schemas per message type: the exact key set and how to parse the body.
class Ping(NamedTuple):
    seq: int
    target: str
    updates: list[Update]


class Ack(NamedTuple):
    seq: int
    updates: list[Update]


class PingReq(NamedTuple):
    seq: int
    target: str
    target_addr: Addr
    nack: bool
    updates: list[Update]


class Nack(NamedTuple):
    seq: int


class Sync(NamedTuple):
    entries: list[Update]
    reply: bool


class Leave(NamedTuple):
    incarnation: int


class Gossip(NamedTuple):
    updates: list[Update]


def parse(msg_type: MsgType, body: Any) -> Any:
    """Validate ``body`` for ``msg_type``; raise BadBody if it is anything but exact."""
    if msg_type == MsgType.PING:
        b = _dict(body, {"q", "t", "u"})
        return Ping(seq(b["q"]), node_id(b["t"]), updates(b["u"]))
    if msg_type == MsgType.ACK:
        b = _dict(body, {"q", "u"})
        return Ack(seq(b["q"]), updates(b["u"]))
    if msg_type == MsgType.PING_REQ:
        b = _dict(body, {"q", "t", "a", "k", "u"})
        return PingReq(seq(b["q"]), node_id(b["t"]), addr(b["a"]), _bool(b["k"], "nack flag"),
                       updates(b["u"]))
    if msg_type == MsgType.NACK:
        b = _dict(body, {"q"})
        return Nack(seq(b["q"]))
    if msg_type == MsgType.SYNC:
        b = _dict(body, {"m", "r"})
        return Sync([entry(v) for v in _list(b["m"], MAX_ENTRIES, "members")],
                    _bool(b["r"], "reply flag"))
    if msg_type == MsgType.SYNC_REPLY:
        b = _dict(body, {"m"})
        return Sync([entry(v) for v in _list(b["m"], MAX_ENTRIES, "members")], False)
    if msg_type == MsgType.LEAVE:
        b = _dict(body, {"i"})
        return Leave(incarnation(b["i"]))
    if msg_type == MsgType.GOSSIP:
        b = _dict(body, {"u"})
        return Gossip(updates(b["u"]))
    raise BadBody(f"{msg_type!r} is not a membership message")


def fit_list(base: dict[str, Any], key: str, items: list[tuple[int, Any]],
             max_bytes: int) -> list[Any]:
    """Greedy: the items (``(packed_size, item)``, in order) that fit in ``base[key]``.

    A msgpack array header is 1 byte up to 15 items and 3 bytes up to 65,535,
    so the budget is exact without re-packing the body for every item.
    """
    room = max_bytes - packed_size({**base, key: []})
    chosen: list[Any] = []
    used = 0
    for size, item in items:
        header_growth = 2 if len(chosen) + 1 > 15 else 0
        if used + size + header_growth > room:
            continue
        chosen.append(item)
        used += size
        if len(chosen) >= MAX_UPDATES:
            break
    return chosen


def chunk_rows(rows: list[dict[str, Any]], max_bytes: int, reply_flag: bool) -> list[dict[str, Any]]:
    """SYNC bodies carrying ``rows`` in order, each within ``max_bytes``.

    With ``reply_flag`` the bodies get an "r" key, true only in the first, so
    the peer answers a multi-datagram sync once.
    """
    bodies: list[dict[str, Any]] = []
    rows = list(rows)
    start = 0
    while start < len(rows):
        base: dict[str, Any] = {"m": []}
        if reply_flag:
            base["r"] = not bodies
        room = max_bytes - packed_size(base)
        end, used = start, 0
        while end < len(rows) and end - start < MAX_ENTRIES:
            size = packed_size(rows[end]) + (2 if end - start == 15 else 0)
            if used + size > room and end > start:
                break
            used += size
            end += 1
        base["m"] = rows[start:end]
        bodies.append(base)
        start = end
    return bodies
