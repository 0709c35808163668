"""Alive records signed by the node they describe: only a node speaks for itself.

SWIM lets anyone relay "Y is alive at incarnation i, address a": a member with valid
credentials could then move Y's address to its own, or raise Y's incarnation to the
codec's maximum so that Y can never refute a rumour again (issue 12). Here Y signs
(node id, incarnation, address, meta) with its own Ed25519 key; the record travels
with the key, and the node id is a hash of that key (``trust.identity.node_id_of``),
so any member can check a relayed record without having met Y, and nobody but Y can
make one. Suspect and dead rumours stay unsigned (anyone may accuse), but they may not
name an incarnation above the highest signed one we know.

Verification (about 110 us) happens only when a record would change what we believe.
"""

from __future__ import annotations

from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gossipnet.membership.codec import Update
from gossipnet.membership.types import Addr
from gossipnet.trust.identity import node_id_of

CONTEXT = b"gossipnet/alive-record/v1\0"


def record_bytes(node_id: str, incarnation: int, addr: Addr, meta: dict[str, Any]) -> bytes:
    """The signed payload: canonical (meta sorted by key), so re-encoding cannot change it."""
    return CONTEXT + msgpack.packb([node_id, incarnation, addr[0], addr[1], sorted(meta.items())],
                                   use_bin_type=True)


class RecordSigner:
    """Signs this node's own alive records; the key is the node's identity key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.pubkey = key.public_key().public_bytes_raw()
        self.node_id = node_id_of(self.pubkey)

    def sign(self, u: Update) -> Update:
        assert u.node_id == self.node_id and u.addr is not None and u.meta is not None
        sig = self._key.sign(record_bytes(u.node_id, u.incarnation, u.addr, u.meta))
        return u._replace(pubkey=self.pubkey, sig=sig)


def verify(u: Update) -> bool:
    """True if ``u`` is an alive record its own node signed (key hashes to the id)."""
    if u.pubkey is None or u.sig is None or u.addr is None or u.meta is None:
        return False
    if node_id_of(u.pubkey) != u.node_id:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(u.pubkey).verify(
            u.sig, record_bytes(u.node_id, u.incarnation, u.addr, u.meta))
    except (InvalidSignature, ValueError):
        return False
    return True
