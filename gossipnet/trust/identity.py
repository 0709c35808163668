"""A node's identity: its Ed25519 key file, its node id, its incarnation, and printable key forms.

Every node owns an Ed25519 key pair kept in its state directory; its node id is a
short hash of the public key. Everything that lives in the state directory or
names one node is here; what a swarm admits is ``gossipnet.trust.swarm``. The
printable encodings are here too because every key, token and certificate that a
user copies between machines goes through them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossipnet.errors import UserError
from gossipnet.fsutil import DirectoryLock, DirectoryLocked, atomic_write_bytes, remove_stale_temp_files

PUBKEY_LEN = 32
NODE_KEY_FILE = "node.key"
INCARNATION_FILE = "incarnation"

log = logging.getLogger(__name__)

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


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that group or others can access (as ssh does for its keys)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise UserError(
            f"the {what} {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"a secret must be mode 0600: run `chmod 600 {path}`"
        )


def load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 key, refusing files that group or others can read, or corrupt ones."""
    check_private_file(path, what)
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


def claim_state_dir(state_dir: str | os.PathLike) -> DirectoryLock:
    """Lock ``state_dir`` for this process and clear what a crash left mid-write.

    Two processes on one node key would sign with one identity and overwrite each
    other's checkpoints; the second is refused with the first one's pid.
    """
    path = Path(state_dir).expanduser()
    try:
        lock = DirectoryLock(path)
    except DirectoryLocked as exc:
        raise UserError(f"another gossipnet process (pid {exc.pid if exc.pid is not None else 'unknown'}) "
                        f"is running on the state directory {path}; stop it, or give this node "
                        "another --state-dir") from None
    except OSError as exc:
        raise UserError(f"cannot lock the state directory {path}: {exc.strerror}; "
                        "pass a writable --state-dir") from None
    for directory in (path, path / "swarm"):
        if directory.is_dir():
            remove_stale_temp_files(directory)
    return lock


def save_incarnation(state_dir: str | os.PathLike, incarnation: int) -> None:
    """Persist an incarnation raised while running (a refutation), so a restart starts above it."""
    write_private_file(Path(state_dir).expanduser() / INCARNATION_FILE, f"{incarnation}\n".encode())


class IncarnationRecord:
    """The incarnation persisted in a running node's state directory.

    A refutation raises the node's incarnation while it runs: a restart must start above
    it, so ``raise_to`` persists every rise. A failed write (a full disk) is logged, not
    fatal, and retried on the next call.
    """

    def __init__(self, state_dir: str | os.PathLike, saved: int) -> None:
        self.state_dir = state_dir
        self.saved = saved

    def raise_to(self, incarnation: int) -> None:
        if incarnation <= self.saved:
            return
        try:
            save_incarnation(self.state_dir, incarnation)
            self.saved = incarnation
        except OSError as exc:  # retried on the next call
            log.warning("cannot persist incarnation %d: %s", incarnation, exc.strerror or exc)


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
