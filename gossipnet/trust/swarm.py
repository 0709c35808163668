"""Swarm admission: the swarm key, swarm ids, certificates, and the policies that check senders.

A swarm is defined by its credentials, and its 8-byte swarm id is a hash of them,
so two swarms on one LAN never accept each other's messages (see docs/SECURITY.md
for the threat model):

- ``cert``: a swarm key pair; a node is admitted by a certificate, the swarm key's
  signature over (context, swarm id, node key, expiry). The compact form (expiry +
  signature, 72 bytes) rides in every envelope, so admission is stateless; verified
  certificates are cached per sender key. A join token carries the swarm key itself
  and lets a node issue its own certificate (one-line joining, for a trusted LAN);
  ``gossipnet swarm admit`` issues a certificate per node and keeps the key on one box.
- ``allow``: a fixed list of node public keys; the swarm id hashes the sorted list.
- ``open``: any key may speak (messages are still signed); only behind --insecure-open.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gossipnet.errors import UserError
from gossipnet.trust.identity import (
    PREFIX_CERT,
    PREFIX_TOKEN,
    decode_text,
    encode_text,
    load_private_key,
    pubkey_bytes,
    save_private_key,
    write_private_file,
)

SWARM_ID_LEN = 8
CERT_LEN = 8 + 64  # compact certificate in an envelope: expiry (u64 s) + swarm signature
CERT_CONTEXT = b"gossipnet/cert/v1\x00"
SWARM_ID_CONTEXT = b"gossipnet/swarm-id/v1\x00"
SWARM_KEY_FILE = "swarm.key"
SWARM_INFO_FILE = "swarm.json"


# --- swarm ids and certificates ----------------------------------------------------------


def swarm_id_for(mode: str, material: bytes) -> bytes:
    return hashlib.sha256(SWARM_ID_CONTEXT + mode.encode() + b"\x00" + material).digest()[:SWARM_ID_LEN]


def cert_signed_bytes(swarm_id: bytes, node_pubkey: bytes, expiry_s: int) -> bytes:
    return CERT_CONTEXT + swarm_id + node_pubkey + struct.pack(">Q", expiry_s)


@dataclass(frozen=True)
class Certificate:
    """The swarm key's statement "node_pubkey belongs to this swarm until expiry_s"."""

    swarm_pubkey: bytes
    node_pubkey: bytes
    expiry_s: int
    signature: bytes

    @property
    def swarm_id(self) -> bytes:
        return swarm_id_for("cert", self.swarm_pubkey)

    @property
    def compact(self) -> bytes:
        """The 72 bytes carried in every envelope (the swarm key is implied by the swarm id)."""
        return struct.pack(">Q", self.expiry_s) + self.signature

    def to_text(self) -> str:
        payload = self.swarm_pubkey + self.node_pubkey + struct.pack(">Q", self.expiry_s) + self.signature
        return encode_text(PREFIX_CERT, payload)

    @classmethod
    def from_text(cls, text: str) -> Certificate:
        raw = decode_text(text, PREFIX_CERT, 32 + 32 + 8 + 64)
        (expiry,) = struct.unpack(">Q", raw[64:72])
        return cls(raw[:32], raw[32:64], expiry, raw[72:])

    def is_valid(self, now_ms: int) -> bool:
        if self.expiry_s * 1000 <= now_ms:
            return False
        key = Ed25519PublicKey.from_public_bytes(self.swarm_pubkey)
        try:
            key.verify(self.signature, cert_signed_bytes(self.swarm_id, self.node_pubkey, self.expiry_s))
        except InvalidSignature:
            return False
        return True


def issue_certificate(swarm_key: Ed25519PrivateKey, node_pubkey: bytes, expiry_s: int) -> Certificate:
    swarm_pub = pubkey_bytes(swarm_key)
    sid = swarm_id_for("cert", swarm_pub)
    sig = swarm_key.sign(cert_signed_bytes(sid, node_pubkey, expiry_s))
    return Certificate(swarm_pub, node_pubkey, expiry_s, sig)


# --- admission policies -------------------------------------------------------------------


class CertPolicy:
    """Admit senders whose envelope carries a valid certificate from the swarm key."""

    mode = "cert"

    def __init__(self, swarm_pubkey: bytes, cache_size: int = 4096) -> None:
        self.swarm_pubkey = swarm_pubkey
        self.swarm_id = swarm_id_for("cert", swarm_pubkey)
        self._key = Ed25519PublicKey.from_public_bytes(swarm_pubkey)
        self._cache_size = cache_size
        self._verified: OrderedDict[bytes, bytes] = OrderedDict()  # sender key -> compact cert

    def precheck(self, sender: bytes, cert: bytes | None, now_ms: int) -> bool | None:
        """Cheap part: False = not admitted, True = known good, None = signature to check."""
        if cert is None or len(cert) != CERT_LEN:
            return False
        (expiry_s,) = struct.unpack_from(">Q", cert)
        if expiry_s * 1000 <= now_ms:
            return False
        if self._verified.get(sender) == cert:
            self._verified.move_to_end(sender)
            return True
        return None

    def verify(self, sender: bytes, cert: bytes) -> bool:
        """Costly part (one Ed25519 verify); a success is cached for this sender."""
        (expiry_s,) = struct.unpack_from(">Q", cert)
        try:
            self._key.verify(cert[8:], cert_signed_bytes(self.swarm_id, sender, expiry_s))
        except InvalidSignature:
            return False
        self._verified[sender] = cert
        self._verified.move_to_end(sender)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return True


class AllowlistPolicy:
    """Admit exactly a fixed set of public keys; every node must hold the same list."""

    mode = "allow"

    def __init__(self, pubkeys: frozenset[bytes]) -> None:
        self.pubkeys = frozenset(pubkeys)
        self.swarm_id = swarm_id_for("allow", b"".join(sorted(self.pubkeys)))

    def precheck(self, sender: bytes, cert: bytes | None, now_ms: int) -> bool | None:
        return sender in self.pubkeys

    def verify(self, sender: bytes, cert: bytes) -> bool:  # never reached: precheck decides
        return sender in self.pubkeys


class OpenPolicy:
    """Admit any key (still signed and replay-checked). Only behind --insecure-open."""

    mode = "open"

    def __init__(self, name: str) -> None:
        self.name = name
        self.swarm_id = swarm_id_for("open", name.encode())

    def precheck(self, sender: bytes, cert: bytes | None, now_ms: int) -> bool | None:
        return True

    def verify(self, sender: bytes, cert: bytes) -> bool:
        return True


Policy = CertPolicy | AllowlistPolicy | OpenPolicy


# --- swarm directory (the machine that ran `gossipnet swarm init`) ----------------------------


@dataclass(frozen=True)
class Swarm:
    """A swarm's signing key and its public facts."""

    key: Ed25519PrivateKey = field(repr=False)
    name: str

    @property
    def pubkey(self) -> bytes:
        return pubkey_bytes(self.key)

    @property
    def swarm_id(self) -> bytes:
        return swarm_id_for("cert", self.pubkey)

    @property
    def token(self) -> str:
        """The join token: the swarm key's seed. Whoever holds it is a member and can admit."""
        seed = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return encode_text(PREFIX_TOKEN, seed)

    @classmethod
    def from_token(cls, token: str, name: str = "") -> Swarm:
        try:
            seed = decode_text(token, PREFIX_TOKEN, 32)
        except ValueError as exc:
            raise UserError(f"bad swarm token: {exc}; copy the gst1.… token that "
                            "`gossipnet swarm show` prints on the swarm's first machine") from None
        return cls(Ed25519PrivateKey.from_private_bytes(seed), name)

    def admit(self, node_pubkey: bytes, now_ms: int, days: int) -> Certificate:
        if days <= 0:
            raise UserError(f"--days must be positive, got {days}")
        return issue_certificate(self.key, node_pubkey, now_ms // 1000 + days * 86400)


def create_swarm(swarm_dir: str | os.PathLike, name: str | None, now_ms: int) -> Swarm:
    """Make a new swarm key in ``swarm_dir`` (refusing to overwrite an existing one)."""
    d = Path(swarm_dir).expanduser()
    if (d / SWARM_KEY_FILE).exists():
        raise UserError(f"a swarm already exists in {d}; print its join line with "
                        f"`gossipnet swarm show --dir {d}`, or pick another --dir")
    key = Ed25519PrivateKey.generate()
    swarm = Swarm(key, name or "gossipnet")
    info = {"name": swarm.name, "swarm_id": swarm.swarm_id.hex(),
            "swarm_pubkey": swarm.pubkey.hex(), "created_ms": int(now_ms)}
    try:
        save_private_key(d / SWARM_KEY_FILE, key)
        write_private_file(d / SWARM_INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    except OSError as exc:
        raise UserError(f"cannot write the swarm key in {d}: {exc.strerror}; pick a writable --dir") from None
    return swarm


def load_swarm(swarm_dir: str | os.PathLike) -> Swarm:
    d = Path(swarm_dir).expanduser()
    if not (d / SWARM_KEY_FILE).exists():
        raise UserError(f"no swarm in {d}: create one with `gossipnet swarm init --dir {d}`")
    key = load_private_key(d / SWARM_KEY_FILE, "swarm key")
    name = "gossipnet"
    try:
        info = json.loads((d / SWARM_INFO_FILE).read_text())
        if isinstance(info, dict) and isinstance(info.get("name"), str):
            name = info["name"]
    except (OSError, ValueError):
        pass  # the name is cosmetic; the key alone defines the swarm
    return Swarm(key, name)
