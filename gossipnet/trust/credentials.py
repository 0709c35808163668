"""What a node runs with: its admission policy and own certificate, chosen from flags, files or env.

This is where user input becomes a policy: exactly one of --swarm-token, --cert,
--allow or --insecure-open, each given literally or as a file, the token also
from $GOSSIPNET_SWARM_TOKEN. Every mistake here is a UserError that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gossipnet.errors import UserError
from gossipnet.trust.identity import (PREFIX_CERT, PREFIX_PUBKEY, PREFIX_TOKEN, Identity, check_private_file,
                                     node_id_of, parse_pubkey)
from gossipnet.trust.swarm import AllowlistPolicy, Certificate, CertPolicy, OpenPolicy, Policy, Swarm

TOKEN_CERT_DAYS = 3650  # a token holder can mint certificates at will; expiry adds nothing
TOKEN_ENV = "GOSSIPNET_SWARM_TOKEN"


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


def _read_value(value: str, prefix: str, what: str, secret: bool = False) -> str:
    """A credential given literally (starts with ``prefix.``) or as a path to a file holding it.

    A ``secret`` file (the join token, which lets its holder admit anyone) gets the node
    key's permission check."""
    if value.strip().startswith(prefix + "."):
        return value.strip()
    path = Path(value).expanduser()
    if secret and path.exists():
        check_private_file(path, f"{what} file")
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
        swarm = Swarm.from_token(_read_value(swarm_token, PREFIX_TOKEN, "--swarm-token", secret=True))
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
