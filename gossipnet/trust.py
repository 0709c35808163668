"""Who may speak in a swarm: node identities, swarm keys, certificates, admission policies.

Every node owns an Ed25519 key pair kept in its state directory; its node id is a
short hash of the public key. A swarm is defined by its credentials, and its 8-byte
swarm id is a hash of them, so two swarms on one LAN never accept each other's
messages (see docs/SECURITY.md for the threat model):

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

import base64
import hashlib
import json
import os
import stat
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes

PUBKEY_LEN = 32
SWARM_ID_LEN = 8
CERT_LEN = 8 + 64  # compact certificate in an envelope: expiry (u64 s) + swarm signature
CERT_CONTEXT = b"gossipnet/cert/v1\x00"
SWARM_ID_CONTEXT = b"gossipnet/swarm-id/v1\x00"
NODE_KEY_FILE = "node.key"
INCARNATION_FILE = "incarnation"
SWARM_KEY_FILE = "swarm.key"
SWARM_INFO_FILE = "swarm.json"
TOKEN_CERT_DAYS = 3650  # a token holder can mint certificates at will; expiry adds nothing
TOKEN_ENV = "GOSSIPNET_SWARM_TOKEN"

# Printable forms: "<prefix>.<base64url(payload + 4-byte checksum)>"; the checksum
# catches a truncated copy-paste before it becomes a confusing signature failure.
PREFIX_PUBKEY = "gpk1"
PREFIX_TOKEN = "gst1"
PREFIX_CERT = "gsc1"


# --- printable encodings ---------------------------------------------------------


def encode_text(prefix: str, payload: bytes) -> str:
    check = hashlib.sha256(prefix.encode() + payload).digest()[:4]
    return f"{prefix}.{base64.urlsafe_b64encode(payload + check).decode().rstrip('=')}"


def decode_text(text: str, prefix: str, length: int) -> bytes:
    """Inverse of encode_text; raises ValueError saying what is wrong with the string."""
    text = text.strip()
    head, dot, body = text.partition(".")
    if not dot or head != prefix:
        raise ValueError(f"expected a string starting with '{prefix}.'")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise ValueError("not valid base64url (was it cut or edited?)") from None
    payload, check = raw[:-4], raw[-4:]
    if len(payload) != length or hashlib.sha256(prefix.encode() + payload).digest()[:4] != check:
        raise ValueError("checksum mismatch (was it cut or edited?)")
    return payload


def node_id_of(pubkey: bytes) -> str:
    """A node's short printable name: 16 base32 characters of sha256(public key)."""
    digest = hashlib.sha256(pubkey).digest()[:10]
    return base64.b32encode(digest).decode().lower()


def parse_pubkey(text: str) -> bytes:
    """A node public key as printed by ``gossipnet swarm whoami`` (gpk1.…) or 64 hex digits."""
    text = text.strip()
    if len(text) == 2 * PUBKEY_LEN and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        return decode_text(text, PREFIX_PUBKEY, PUBKEY_LEN)
    except ValueError as exc:
        raise UserError(f"bad node public key {text[:20]!r}…: {exc}; copy the gpk1.… line "
                        "that `gossipnet swarm whoami` prints on that machine") from None


# --- key files ---------------------------------------------------------------------


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600 (in a 0700 directory if it has to make one)."""
    atomic_write_bytes(path, data, mode=0o600, dir_mode=0o700)


def save_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)


def load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 key, refusing files that group or others can read, or corrupt ones."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise UserError(
            f"the {what} {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"a private key must be mode 0600: run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise UserError(f"the {what} {path} is corrupt ({exc}); restore it from a backup, "
                        "or delete it to create a new key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"the {what} {path} is not an Ed25519 key; delete it to create a new one")
    return key


def pubkey_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


# --- node identity -------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A node's signing key and the names derived from its public key."""

    private_key: Ed25519PrivateKey = field(repr=False)
    pubkey: bytes
    node_id: str

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        pub = pubkey_bytes(key)
        return cls(key, pub, node_id_of(pub))

    @classmethod
    def generate(cls) -> Identity:
        """A fresh in-memory identity (tests, simulations)."""
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @property
    def pubkey_text(self) -> str:
        return encode_text(PREFIX_PUBKEY, self.pubkey)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def load_or_create_identity(state_dir: str | os.PathLike) -> Identity:
    """The node's identity from ``state_dir/node.key``, created (0600) on first run."""
    path = Path(state_dir).expanduser() / NODE_KEY_FILE
    if not path.exists():
        try:
            save_private_key(path, Ed25519PrivateKey.generate())
        except OSError as exc:
            raise UserError(f"cannot create the node key {path}: {exc.strerror}; "
                            "pass a writable --state-dir") from None
    return Identity.from_private_key(load_private_key(path, "node key"))


def next_incarnation(state_dir: str | os.PathLike, now_ms: int) -> int:
    """This run's incarnation: above every earlier one, persisted before use.

    max(last + 1, wall clock in ms): the clock keeps it fresh if the state directory is
    lost, the counter keeps it increasing if the clock steps back.
    """
    path = Path(state_dir).expanduser() / INCARNATION_FILE
    last = 0
    if path.exists():
        try:
            last = int(path.read_text().strip())
            if not 0 <= last < 2**63:
                raise ValueError("out of range")
        except (ValueError, OSError) as exc:
            raise UserError(f"the incarnation file {path} is corrupt ({exc}); delete it "
                            "(the clock then supplies a fresh incarnation)") from None
    incarnation = max(last + 1, int(now_ms))
    try:
        write_private_file(path, f"{incarnation}\n".encode())
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; pass a writable --state-dir") from None
    return incarnation


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


# --- what a node runs with ---------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """How this node checks others (policy) and what it shows them (compact cert, if any)."""

    policy: Policy
    cert: bytes | None
    summary: str

    @property
    def swarm_id(self) -> bytes:
        return self.policy.swarm_id

    @property
    def mode(self) -> str:
        return self.policy.mode


def _read_value(value: str, prefix: str, what: str) -> str:
    """A credential given literally (starts with ``prefix.``) or as a path to a file holding it."""
    if value.strip().startswith(prefix + "."):
        return value.strip()
    path = Path(value).expanduser()
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise UserError(f"{what} {value!r} is neither a {prefix}.… string nor a readable file "
                        f"({exc.strerror})") from None


def _parse_allowlist(value: str) -> frozenset[bytes]:
    """Comma-separated keys, or a file with one key per line (``#`` starts a comment)."""
    if "," in value or value.strip().startswith(PREFIX_PUBKEY + "."):
        items = value.split(",")
    else:
        try:
            text = Path(value).expanduser().read_text()
        except OSError as exc:
            raise UserError(f"--allow {value!r} is neither a list of gpk1.… keys nor a readable "
                            f"file ({exc.strerror})") from None
        items = [line.split("#", 1)[0] for line in text.splitlines()]
    keys = frozenset(parse_pubkey(item) for item in items if item.strip())
    if not keys:
        raise UserError(f"--allow {value!r} lists no keys; give one gpk1.… key per line")
    return keys


def load_credentials(
    identity: Identity,
    now_ms: int,
    *,
    swarm_token: str | None = None,
    cert: str | None = None,
    allow: str | None = None,
    insecure_open: bool = False,
    swarm_name: str | None = None,
) -> Credentials:
    """Build the node's credentials from exactly one of token, cert, allowlist or open.

    ``swarm_token``/``cert`` may be the printed string or a path to a file holding it.
    Secure by default: with none of them the node refuses to start.
    """
    chosen = [n for n, v in (("--swarm-token", swarm_token), ("--cert", cert), ("--allow", allow),
                             ("--insecure-open", insecure_open)) if v]
    if not chosen:
        raise UserError(
            "no swarm credentials: run `gossipnet swarm init` on one machine and start this one "
            "with the --swarm-token line it prints, or use --cert (from `gossipnet swarm admit`), "
            "--allow KEYS, or --insecure-open for a throw-away open swarm"
        )
    if len(chosen) > 1:
        raise UserError(f"choose one way to join a swarm, got {' and '.join(chosen)}")
    if swarm_token:
        swarm = Swarm.from_token(_read_value(swarm_token, PREFIX_TOKEN, "--swarm-token"))
        mine = swarm.admit(identity.pubkey, now_ms, TOKEN_CERT_DAYS)
        return Credentials(CertPolicy(swarm.pubkey), mine.compact,
                           f"swarm {swarm.swarm_id.hex()} (certificates; joined by token)")
    if cert:
        text = _read_value(cert, PREFIX_CERT, "--cert")
        try:
            c = Certificate.from_text(text)
        except ValueError as exc:
            raise UserError(f"bad certificate: {exc}; copy the gsc1.… string that "
                            "`gossipnet swarm admit` printed for this node") from None
        if c.node_pubkey != identity.pubkey:
            raise UserError(f"the certificate was issued for node {node_id_of(c.node_pubkey)}, "
                            f"but this node is {identity.node_id} ({identity.pubkey_text}); "
                            "have it admitted with `gossipnet swarm admit <that key>`")
        if not c.is_valid(now_ms):
            raise UserError("the certificate has expired or its signature is wrong; "
                            "issue a new one with `gossipnet swarm admit`")
        return Credentials(CertPolicy(c.swarm_pubkey), c.compact,
                           f"swarm {c.swarm_id.hex()} (certificates; ours expires at {c.expiry_s} s)")
    if allow:
        keys = _parse_allowlist(allow)
        if identity.pubkey not in keys:
            raise UserError(f"this node's key {identity.pubkey_text} is not in the --allow list; "
                            "every node must hold the same list, including itself")
        policy = AllowlistPolicy(keys)
        return Credentials(policy, None, f"swarm {policy.swarm_id.hex()} (allowlist of {len(keys)} keys)")
    name = swarm_name or "open"
    policy = OpenPolicy(name)
    return Credentials(policy, None, f"swarm {policy.swarm_id.hex()} (INSECURE open swarm {name!r})")


def credentials_from_args(args, identity: Identity, now_ms: int) -> Credentials:
    """``load_credentials`` from ``gossipnet run`` flags; the token may also come from
    $GOSSIPNET_SWARM_TOKEN, which, unlike argv, other local users cannot see in ``ps``."""
    token = getattr(args, "swarm_token", None)
    cert = getattr(args, "cert", None)
    allow = getattr(args, "allow", None)
    insecure_open = bool(getattr(args, "insecure_open", False))
    if not (token or cert or allow or insecure_open):
        token = os.environ.get(TOKEN_ENV) or None
    return load_credentials(identity, now_ms, swarm_token=token, cert=cert, allow=allow,
                            insecure_open=insecure_open, swarm_name=getattr(args, "swarm_name", None))
