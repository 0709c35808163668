"""The LAN in a box itself: reachability, multicast, isolation, loss, partitions, cleanup."""

import subprocess
import sys
import time

import pytest

from tests.conftest import skip_or_fail
from tests.lanbox import LanBox, LanBoxError, _cmd, cleanup_stale, lanbox_available

pytestmark = pytest.mark.netns


@pytest.fixture
def need_lanbox():
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)


@pytest.fixture
def need_nft():
    ok, reason = lanbox_available(need_nft=True)
    if not ok:
        skip_or_fail(reason)


# Prints one "FROM <ip>" line per datagram received on UDP 7000 and echoes it back.
ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7000))
print("READY", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    print("FROM", addr[0], flush=True)
    s.sendto(data, addr)
"""

# argv: target n; sends n datagrams (paced, so no socket buffer overflows), prints the replies counted.
CLIENT = """
import socket, sys, time
target, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
replies = 0
def drain():
    global replies
    while True:
        try:
            s.recvfrom(2048)
        except BlockingIOError:
            return
        replies += 1
for i in range(n):
    s.sendto(b"%d" % i, (target, 7000))
    if i % 20 == 19:
        time.sleep(0.01)
        drain()
deadline = time.monotonic() + 0.5
while time.monotonic() < deadline and replies < n:
    time.sleep(0.02)
    drain()
print("REPLIES", replies, flush=True)
"""


def start_echo(lan, hosts):
    servers = {i: lan.spawn_python(i, ECHO) for i in hosts}
    for server in servers.values():
        server.wait_for_output("READY")
    return servers


def send(lan, src, dst, n):
    """Send n datagrams from host src to host dst's echo server; return the replies src got."""
    done = lan.run(src, [sys.executable, "-c", CLIENT, lan.address(dst), str(n)], timeout=30)
    return int(done.stdout.split()[-1])


def received_from(server, address):
    return server.stdout().split("\n").count(f"FROM {address}")


def test_hosts_reach_each_other_at_distinct_addresses(need_lanbox):
    with LanBox(hosts=3) as lan:
        servers = start_echo(lan, range(3))
        assert len({lan.address(i) for i in range(3)}) == 3
        for src in range(3):
            for dst in range(3):
                if src != dst:
                    assert send(lan, src, dst, 5) == 5
        for dst, server in servers.items():
            for src in range(3):
                if src != dst:
                    assert received_from(server, lan.address(src)) == 5


MCAST_RECV = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton(sys.argv[1])))
s.settimeout(10)
print("READY", flush=True)
data, addr = s.recvfrom(100)
print(f"GOT {addr[0]} END", flush=True)  # one string: " END" ends the address
"""

MCAST_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(100):
    s.sendto(b"hello", ("224.0.0.251", 5353))
    time.sleep(0.05)
"""


def test_mdns_multicast_reaches_every_other_host(need_lanbox):
    with LanBox(hosts=3) as lan:
        receivers = [lan.spawn_python(i, MCAST_RECV, lan.address(i)) for i in (1, 2)]
        for r in receivers:
            r.wait_for_output("READY")
        lan.spawn_python(0, MCAST_SEND, lan.address(0))
        for r in receivers:
            assert f"GOT {lan.address(0)} END" in r.wait_for_output(" END")  # the whole line


def test_hosts_see_only_the_box_network(need_lanbox):
    with LanBox(hosts=2) as lan:
        links = lan.run(0, ["ip", "-o", "link", "show"]).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == ["eth0", "lo"]
        addrs = lan.run(0, ["ip", "-o", "-4", "addr", "show"]).stdout
        assert "198.18.0.1/24" in addrs
        # No default route: anything outside the box is unreachable, refused before it is sent.
        outside = lan.run(0, ["ip", "route", "get", "192.0.2.1"], check=False)
        assert outside.returncode != 0 and "unreachable" in outside.stderr.lower()


def test_loss_drops_roughly_the_configured_share_on_each_receiving_host(need_nft):
    with LanBox(hosts=2) as lan:
        servers = start_echo(lan, [1])
        lan.set_loss(30)
        replies = send(lan, 0, 1, 1000)
        time.sleep(0.1)
        arrived = received_from(servers[1], lan.address(0))
        # One-way: 70% arrive; round trip meets the dice twice: 49%. 5 sigma bands.
        assert 630 <= arrived <= 770
        assert 0.6 * arrived <= replies <= 0.8 * arrived
        lan.clear_loss()
        assert send(lan, 0, 1, 200) == 200


def test_partition_cuts_both_directions_and_heal_restores(need_nft):
    with LanBox(hosts=3) as lan:
        servers = start_echo(lan, range(3))
        lan.partition([0], [1, 2])
        assert send(lan, 0, 1, 10) == 0
        assert send(lan, 1, 0, 10) == 0
        assert send(lan, 2, 0, 10) == 0
        assert send(lan, 1, 2, 10) == 10  # same side still talks
        assert received_from(servers[0], lan.address(1)) == 0
        assert received_from(servers[1], lan.address(0)) == 0
        lan.heal()
        assert send(lan, 0, 1, 10) == 10
        assert send(lan, 2, 0, 10) == 10


def test_bad_fault_requests_are_refused(need_lanbox):
    with LanBox(hosts=2) as lan:
        with pytest.raises(ValueError):
            lan.set_loss(120)
        with pytest.raises(ValueError):
            lan.partition([0], [0, 1])
        with pytest.raises(IndexError):
            lan.address(2)
        with pytest.raises(IndexError):
            lan.spawn(5, ["true"])


def test_spawned_process_output_and_signals(need_lanbox, tmp_path):
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print("bye"), sys.exit(3)))
        print("up", flush=True)
        print("oops", file=sys.stderr, flush=True)
        time.sleep(30)
    """
    with LanBox(hosts=1, workdir=tmp_path) as lan:
        p = lan.spawn_python(0, code)
        p.wait_for_output("up")
        p.kill()
        assert p.wait(10) == 3
        assert p.stdout().split() == ["up", "bye"]
        assert "oops" in p.stderr()
        assert p.stdout_path.parent == tmp_path
        failing = lan.spawn_python(0, "import sys; sys.exit(7)")
        with pytest.raises(LanBoxError, match="exited 7"):
            failing.wait_for_output("never", timeout=10)


def test_namespaces_and_processes_are_gone_after_a_failing_test(need_lanbox):
    with pytest.raises(RuntimeError, match="test body failed"):
        with LanBox(hosts=2) as lan:
            names = [lan.switch, *lan.names]
            sleeper = lan.spawn(1, ["sleep", "600"])
            workdir = lan.workdir
            raise RuntimeError("test body failed")
    remaining = _cmd(["ip", "netns", "list"])
    assert not any(name in remaining for name in names)
    assert sleeper.returncode is not None
    assert not workdir.exists()
    with pytest.raises(LanBoxError, match="closed"):
        lan.spawn(0, ["true"])


def test_boxes_leaked_by_a_dead_test_run_are_removed(need_lanbox):
    dead = subprocess.Popen(["true"])
    dead.wait()
    leaked = f"gnbox-{dead.pid}-dead00-h0"
    _cmd(["ip", "netns", "add", leaked])
    try:
        assert leaked in cleanup_stale()
        assert leaked not in _cmd(["ip", "netns", "list"])
    finally:
        subprocess.run(["ip", "netns", "del", leaked], capture_output=True)
