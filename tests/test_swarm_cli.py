"""``gossipnet swarm init|admit|show`` end to end through the real CLI entry point."""

from __future__ import annotations

import argparse
import os
import re
import time

from gossipnet.cli import main
from gossipnet.commands import swarm as swarm_cmd
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import load_or_create_identity
from gossipnet.wire import Accepted, MsgType, Receiver, Sealer


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def join_line(out: str, flag: str) -> str:
    match = re.search(rf"gossipnet run {flag} (\S+)", out)
    assert match, out
    return match.group(1)


def test_init_prints_a_join_line_that_admits_a_new_machine(tmp_path, capsys):
    code, out, err = run_cli(capsys, "swarm", "init", "--dir", str(tmp_path / "swarm"), "--name", "lab")
    assert code == 0 and err == ""
    swarm_id = re.search(r"id ([0-9a-f]{16})", out).group(1)
    token = join_line(out, "--swarm-token")

    now = int(time.time() * 1000)
    laptop = load_or_create_identity(tmp_path / "laptop")
    desktop = load_or_create_identity(tmp_path / "desktop")
    a = load_credentials(laptop, now, swarm_token=token)
    b = load_credentials(desktop, now, swarm_token=token)
    assert a.swarm_id.hex() == swarm_id == b.swarm_id.hex()
    msg = Sealer(laptop, a, 1).seal(MsgType.PING, {"hello": "lab"}, now)
    assert isinstance(Receiver(b.policy).open(msg, ("127.0.0.1", 1), now), Accepted)


def test_show_repeats_the_swarm_id_and_join_line(tmp_path, capsys):
    d = str(tmp_path / "swarm")
    _, init_out, _ = run_cli(capsys, "swarm", "init", "--dir", d)
    code, show_out, _ = run_cli(capsys, "swarm", "show", "--dir", d)
    assert code == 0
    assert join_line(show_out, "--swarm-token") == join_line(init_out, "--swarm-token")
    assert re.search(r"id ([0-9a-f]{16})", show_out).group(1) == re.search(r"id ([0-9a-f]{16})", init_out).group(1)


def test_admit_issues_a_certificate_only_that_node_can_use(tmp_path, capsys):
    d = str(tmp_path / "swarm")
    run_cli(capsys, "swarm", "init", "--dir", d)
    node_dir = tmp_path / "node"
    assert swarm_cmd.run(argparse.Namespace(swarm_command="whoami", state_dir=str(node_dir))) == 0
    whoami = capsys.readouterr().out
    pubkey = re.search(r"(gpk1\.\S+)", whoami).group(1)

    code, out, _ = run_cli(capsys, "swarm", "admit", pubkey, "--dir", d, "--days", "7")
    assert code == 0
    cert = join_line(out, "--cert")
    now = int(time.time() * 1000)
    node = load_or_create_identity(node_dir)
    assert node.node_id in whoami and node.node_id in out
    creds = load_credentials(node, now, cert=cert)

    # A member that joined with the token accepts the admitted node's messages.
    _, show_out, _ = run_cli(capsys, "swarm", "show", "--dir", d)
    peer = load_or_create_identity(tmp_path / "peer")
    peer_creds = load_credentials(peer, now, swarm_token=join_line(show_out, "--swarm-token"))
    msg = Sealer(node, creds, 1).seal(MsgType.LEAVE, {}, now)
    assert isinstance(Receiver(peer_creds.policy).open(msg, ("127.0.0.1", 2), now), Accepted)


def test_cli_errors_are_one_line_with_the_fix_and_exit_2(tmp_path, capsys):
    d = str(tmp_path / "swarm")
    code, _, err = run_cli(capsys, "swarm", "show", "--dir", d)
    assert code == 2 and "swarm init" in err and "Traceback" not in err
    run_cli(capsys, "swarm", "init", "--dir", d)
    code, _, err = run_cli(capsys, "swarm", "init", "--dir", d)
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(capsys, "swarm", "admit", "gpk1.nonsense", "--dir", d)
    assert code == 2 and "bad node public key" in err
    code, _, err = run_cli(capsys, "swarm", "admit", "ab" * 32, "--dir", d, "--days", "0")
    assert code == 2 and "--days must be positive" in err
    os.chmod(os.path.join(d, "swarm.key"), 0o644)
    code, _, err = run_cli(capsys, "swarm", "show", "--dir", d)
    assert code == 2 and "chmod 600" in err and err.count("\n") == 1
