"""Envelope bodies: msgpack restricted to plain data, decoded with hard limits.

A body comes from a peer, so decoding must be bounded in bytes, nesting depth and
container lengths, and yield only nil/bool/int/float/str/bin/array/map-with-str-keys.
No ext types (msgpack's Timestamp, and msgpack-numpy, whose decoder calls pickle).

``validate(value, schema)`` checks a decoded body against a small schema written
as plain Python values, so consumers (membership.py, gossip.py) state the shape of
their messages in one place and a mismatch becomes a counted ``malformed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


class BodyError(ValueError):
    """A body that cannot be encoded or that a peer sent in a shape we do not accept."""


class BodyTooLarge(BodyError):
    """An outgoing body that does not fit its envelope; the message says by how much."""


@dataclass(frozen=True)
class BodyLimits:
    """Hard limits applied while decoding a body; sized for one UDP datagram by default."""

    max_bytes: int = 1400
    max_depth: int = 8  # membership updates nest 3-4 deep; 8 leaves room, not abuse
    max_items: int = 512  # per array or map; a 1,400-byte datagram cannot hold more anyway
    max_str: int = 1400

    @classmethod
    def udp(cls) -> BodyLimits:
        return cls()

    @classmethod
    def http(cls, max_bytes: int = 1 << 20) -> BodyLimits:
        """Signed HTTP requests/responses: larger bodies, same shape rules."""
        return cls(max_bytes=max_bytes, max_depth=8, max_items=1 << 16, max_str=max_bytes)


_SCALARS = (type(None), bool, int, float, str, bytes)


def _check_tree(value: Any, limits: BodyLimits) -> None:
    """Iterative walk (no recursion on peer data): types, depth, str keys."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        if depth > limits.max_depth:
            raise BodyError(f"body nests deeper than {limits.max_depth}")
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise BodyError(f"map key of type {type(k).__name__}; only str keys")
                stack.append((v, depth + 1))
        else:
            raise BodyError(f"value of type {type(item).__name__} is not plain data")


def encode_body(value: Any, limits: BodyLimits | None = None) -> bytes:
    """Pack plain data; tuples become arrays. Raises BodyError for anything else."""
    limits = limits or BodyLimits.http(max_bytes=1 << 30)
    if isinstance(value, tuple):
        value = list(value)
    try:
        data = msgpack.packb(value, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BodyError(f"body is not plain data: {exc}") from None
    if len(data) > limits.max_bytes:
        raise BodyTooLarge(f"body is {len(data)} bytes, {len(data) - limits.max_bytes} over the "
                           f"limit of {limits.max_bytes}; send fewer items per message")
    # Tuples are packed as arrays, so check what the peer will decode, not the input.
    decode_body(data, limits)
    return data


def decode_body(data: bytes, limits: BodyLimits) -> Any:
    """Unpack a peer's body under ``limits``; raises BodyError for anything off."""
    if len(data) > limits.max_bytes:
        raise BodyError(f"body of {len(data)} bytes exceeds {limits.max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.StackError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise BodyError(f"undecodable body: {type(exc).__name__}: {exc}") from None
    _check_tree(value, limits)
    return value


# --- schemas -------------------------------------------------------------------


@dataclass(frozen=True)
class Optional:
    """In a dict schema: this key may be absent (if present, it must match ``schema``)."""

    schema: Any


@dataclass(frozen=True)
class ListOf:
    """An array whose items all match ``schema``, with at most ``max_len`` items."""

    schema: Any
    max_len: int = 512


@dataclass(frozen=True)
class Range:
    """An int (or float, if ``kind`` is float) within [lo, hi]."""

    lo: float
    hi: float
    kind: type = int


@dataclass(frozen=True)
class Bytes:
    """A bin value of length within [min_len, max_len] (e.g. a 32-byte key)."""

    min_len: int = 0
    max_len: int = 1 << 20


def validate(value: Any, schema: Any, path: str = "body") -> None:
    """Check ``value`` against ``schema``; raise BodyError naming the first bad path.

    Schema forms: a type (``int`` excludes bool; ``float`` accepts int; ``None`` is nil),
    a tuple of alternatives, ``ListOf(s)``, a dict ``{key: s}`` (extra keys allowed so
    fields can be added without breaking older nodes; ``Optional(s)`` marks a key that
    may be absent), ``Range(lo, hi)``, ``Bytes(lo, hi)``.
    """
    if isinstance(schema, tuple):
        errors = []
        for alternative in schema:
            try:
                validate(value, alternative, path)
                return
            except BodyError as exc:
                errors.append(str(exc))
        raise BodyError(" or ".join(errors) if errors else f"{path}: no alternatives")
    if schema is None:
        if value is not None:
            raise BodyError(f"{path}: expected nil, got {type(value).__name__}")
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BodyError(f"{path}: expected int, got {type(value).__name__}")
    elif schema is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BodyError(f"{path}: expected float, got {type(value).__name__}")
    elif schema in (bool, str, bytes):
        if not isinstance(value, schema):
            raise BodyError(f"{path}: expected {schema.__name__}, got {type(value).__name__}")
    elif isinstance(schema, Range):
        validate(value, schema.kind, path)
        if not schema.lo <= value <= schema.hi:
            raise BodyError(f"{path}: {value} outside [{schema.lo}, {schema.hi}]")
    elif isinstance(schema, Bytes):
        validate(value, bytes, path)
        if not schema.min_len <= len(value) <= schema.max_len:
            raise BodyError(f"{path}: {len(value)} bytes, expected {schema.min_len}..{schema.max_len}")
    elif isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise BodyError(f"{path}: expected array, got {type(value).__name__}")
        if len(value) > schema.max_len:
            raise BodyError(f"{path}: {len(value)} items, at most {schema.max_len}")
        for i, item in enumerate(value):
            validate(item, schema.schema, f"{path}[{i}]")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise BodyError(f"{path}: expected map, got {type(value).__name__}")
        for key, sub in schema.items():
            if key not in value:
                if isinstance(sub, Optional):
                    continue
                raise BodyError(f"{path}: missing key {key!r}")
            inner = sub.schema if isinstance(sub, Optional) else sub
            validate(value[key], inner, f"{path}.{key}")
    else:
        raise TypeError(f"not a schema: {schema!r}")
