"""Identities, key files, incarnations, certificates and credential loading."""

from __future__ import annotations

import argparse
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossipnet.errors import UserError
from gossipnet.trust.credentials import credentials_from_args, load_credentials
from gossipnet.trust.identity import (
    PREFIX_CERT,
    Identity,
    decode_text,
    encode_text,
    load_or_create_identity,
    next_incarnation,
    node_id_of,
    parse_pubkey,
)
from gossipnet.trust.swarm import (
    CERT_LEN,
    AllowlistPolicy,
    Certificate,
    CertPolicy,
    OpenPolicy,
    Swarm,
    create_swarm,
    load_swarm,
)

NOW = 1_800_000_000_000


def test_identity_is_created_once_with_mode_0600_and_reloaded(tmp_path):
    first = load_or_create_identity(tmp_path / "state")
    key_file = tmp_path / "state" / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = load_or_create_identity(tmp_path / "state")
    assert again.pubkey == first.pubkey and again.node_id == first.node_id
    assert len(first.node_id) == 16 and first.node_id.isalnum() and first.node_id.islower()
    assert first.node_id == node_id_of(first.pubkey)
    assert not list((tmp_path / "state").glob(".*tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused_with_the_fix(tmp_path, mode):
    load_or_create_identity(tmp_path)
    os.chmod(tmp_path / "node.key", mode)
    with pytest.raises(UserError, match=r"chmod 600 .*node.key"):
        load_or_create_identity(tmp_path)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_corrupt_key_file_is_refused_with_the_fix(tmp_path, content):
    path = tmp_path / "node.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(UserError, match="corrupt.*delete it"):
        load_or_create_identity(tmp_path)


def test_key_of_another_algorithm_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "node.key").write_bytes(pem)
    os.chmod(tmp_path / "node.key", 0o600)
    with pytest.raises(UserError, match="not an Ed25519 key"):
        load_or_create_identity(tmp_path)


def test_unwritable_state_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="writable --state-dir"):
        load_or_create_identity(blocker / "state")
    with pytest.raises(UserError, match="writable --state-dir"):
        next_incarnation(blocker / "state", NOW)


def test_incarnation_increases_across_restarts_even_if_the_clock_steps_back(tmp_path):
    a = next_incarnation(tmp_path, NOW)
    b = next_incarnation(tmp_path, NOW - 3_600_000)  # clock stepped back an hour
    c = next_incarnation(tmp_path, NOW + 5)
    assert a == NOW and b == NOW + 1 and c == NOW + 5
    assert stat.S_IMODE((tmp_path / "incarnation").stat().st_mode) == 0o600


def test_lost_state_dir_still_gets_a_fresh_incarnation_from_the_clock(tmp_path):
    assert next_incarnation(tmp_path / "one", NOW) < next_incarnation(tmp_path / "two", NOW + 1)


def test_corrupt_incarnation_file_is_a_user_error(tmp_path):
    (tmp_path / "incarnation").write_text("twelve")
    with pytest.raises(UserError, match="incarnation file .* corrupt"):
        next_incarnation(tmp_path, NOW)


def test_printable_forms_catch_truncation_and_edits():
    text = encode_text("gpk1", bytes(range(32)))
    assert decode_text(text, "gpk1", 32) == bytes(range(32))
    for broken in (text[:-1], text[:-3] + "AAA", "gst1" + text[4:], text.replace(".", "")):
        with pytest.raises(ValueError):
            decode_text(broken, "gpk1", 32)


def test_public_key_accepts_printed_and_hex_forms():
    ident = Identity.generate()
    assert parse_pubkey(ident.pubkey_text) == ident.pubkey
    assert parse_pubkey(ident.pubkey.hex()) == ident.pubkey
    with pytest.raises(UserError, match="swarm whoami"):
        parse_pubkey(ident.pubkey_text[:-2])


def test_certificate_binds_swarm_node_and_expiry():
    swarm = Swarm(Ed25519PrivateKey.generate(), "t")
    node = Identity.generate()
    cert = swarm.admit(node.pubkey, NOW, days=30)
    assert cert.is_valid(NOW) and not cert.is_valid(NOW + 31 * 86_400_000)
    assert len(cert.compact) == CERT_LEN
    assert Certificate.from_text(cert.to_text()) == cert
    assert cert.to_text().startswith(PREFIX_CERT + ".")
    policy = CertPolicy(swarm.pubkey)
    assert policy.precheck(node.pubkey, cert.compact, NOW) is None  # not yet verified
    assert policy.verify(node.pubkey, cert.compact)
    assert policy.precheck(node.pubkey, cert.compact, NOW) is True  # cached
    assert policy.precheck(node.pubkey, cert.compact, NOW + 31 * 86_400_000) is False  # expired
    assert not policy.verify(Identity.generate().pubkey, cert.compact)  # someone else's
    other = CertPolicy(Swarm(Ed25519PrivateKey.generate(), "u").pubkey)
    assert not other.verify(node.pubkey, cert.compact)  # another swarm's


def test_swarm_ids_differ_by_credentials_and_mode():
    a, b = Identity.generate(), Identity.generate()
    ids = {
        CertPolicy(Swarm(Ed25519PrivateKey.generate(), "x").pubkey).swarm_id,
        CertPolicy(Swarm(Ed25519PrivateKey.generate(), "x").pubkey).swarm_id,
        AllowlistPolicy(frozenset({a.pubkey})).swarm_id,
        AllowlistPolicy(frozenset({a.pubkey, b.pubkey})).swarm_id,
        OpenPolicy("lab").swarm_id,
        OpenPolicy("lab2").swarm_id,
    }
    assert len(ids) == 6
    ab, ba = AllowlistPolicy(frozenset({a.pubkey, b.pubkey})), AllowlistPolicy(frozenset({b.pubkey, a.pubkey}))
    assert ab.swarm_id == ba.swarm_id


def test_no_credentials_refuses_to_start_and_says_how_to_join():
    with pytest.raises(UserError, match="swarm init"):
        load_credentials(Identity.generate(), NOW)


def test_two_ways_to_join_at_once_is_refused():
    with pytest.raises(UserError, match="choose one"):
        load_credentials(Identity.generate(), NOW, insecure_open=True, allow="gpk1.x")


def test_token_credentials_admit_this_node(tmp_path):
    swarm = create_swarm(tmp_path / "swarm", "lab", NOW)
    node = Identity.generate()
    creds = load_credentials(node, NOW, swarm_token=swarm.token)
    assert creds.mode == "cert" and creds.swarm_id == swarm.swarm_id and len(creds.cert) == CERT_LEN
    token_file = tmp_path / "token"
    token_file.write_text(swarm.token + "\n")
    token_file.chmod(0o644)  # the token admits anyone: readable by others, it is refused
    with pytest.raises(UserError, match="chmod 600"):
        load_credentials(node, NOW, swarm_token=str(token_file))
    token_file.chmod(0o600)
    assert load_credentials(node, NOW, swarm_token=str(token_file)).swarm_id == swarm.swarm_id
    with pytest.raises(UserError, match="bad swarm token"):
        load_credentials(node, NOW, swarm_token=swarm.token[:-4])


def test_certificate_for_another_node_is_refused():
    swarm = Swarm(Ed25519PrivateKey.generate(), "t")
    cert = swarm.admit(Identity.generate().pubkey, NOW, days=1).to_text()
    with pytest.raises(UserError, match="issued for node"):
        load_credentials(Identity.generate(), NOW, cert=cert)


def test_expired_own_certificate_is_refused():
    swarm = Swarm(Ed25519PrivateKey.generate(), "t")
    node = Identity.generate()
    cert = swarm.admit(node.pubkey, NOW - 5 * 86_400_000, days=1).to_text()
    with pytest.raises(UserError, match="expired"):
        load_credentials(node, NOW, cert=cert)


def test_allowlist_must_include_this_node(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    with pytest.raises(UserError, match="not in the --allow list"):
        load_credentials(a, NOW, allow=b.pubkey_text)
    listing = tmp_path / "allow.txt"
    listing.write_text(f"# lab machines\n{a.pubkey_text}  # desk\n\n{b.pubkey.hex()}\n")
    creds = load_credentials(a, NOW, allow=str(listing))
    assert creds.policy.pubkeys == {a.pubkey, b.pubkey} and creds.cert is None
    with pytest.raises(UserError, match="neither"):
        load_credentials(a, NOW, allow=str(tmp_path / "missing.txt"))


def test_credentials_from_run_flags_and_token_environment(monkeypatch):
    swarm = Swarm(Ed25519PrivateKey.generate(), "t")
    node = Identity.generate()
    args = argparse.Namespace(swarm_token=None, cert=None, allow=None, insecure_open=False, swarm_name=None)
    monkeypatch.setenv("GOSSIPNET_SWARM_TOKEN", swarm.token)
    assert credentials_from_args(args, node, NOW).swarm_id == swarm.swarm_id
    args.insecure_open = True  # an explicit flag wins over the environment
    assert credentials_from_args(args, node, NOW).mode == "open"
    monkeypatch.delenv("GOSSIPNET_SWARM_TOKEN")
    args.insecure_open = False
    with pytest.raises(UserError, match="no swarm credentials"):
        credentials_from_args(args, node, NOW)


def test_swarm_key_file_is_private_and_not_overwritten(tmp_path):
    swarm = create_swarm(tmp_path, "lab", NOW)
    assert stat.S_IMODE((tmp_path / "swarm.key").stat().st_mode) == 0o600
    assert load_swarm(tmp_path).swarm_id == swarm.swarm_id and load_swarm(tmp_path).name == "lab"
    with pytest.raises(UserError, match="already exists"):
        create_swarm(tmp_path, "again", NOW)
    os.chmod(tmp_path / "swarm.key", 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_swarm(tmp_path)
    with pytest.raises(UserError, match="swarm init"):
        load_swarm(tmp_path / "nowhere")
