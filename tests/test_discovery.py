"""mDNS discovery: resolved services read into peers, events, and real nodes finding each other in a LanBox.

zeroconf never runs in the pytest process (that is the real network namespace): the
integration tests run each node as a child process inside a LanBox host.
"""

import json
import signal
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceInfo

from gossipnet.errors import UserError
from gossipnet.net import browser as browser_module
from gossipnet.net.advert import SERVICE_TYPE, Advertisement, RejectReason
from gossipnet.net.browser import Browser
from gossipnet.net.discovery import Discovery, DiscoveryConfig, PeerChange, PeerEvent
from tests.conftest import skip_or_fail
from tests.lanbox import LanBox, lanbox_available

SWARM = "ab" * 8
ADVERT = Advertisement(SWARM, "node-self", 7001, 8001, "convnet", 1)


def good_txt(**changes):
    txt = {"swarm": SWARM, "node": "node-peer", "udp": "7002", "http": "8002", "learner": "convnet", "proto": "1"}
    txt.update(changes)
    return {k: v for k, v in txt.items() if v is not None}


def service(properties, addresses=("198.18.0.2",)):
    name = f"gossipnet-peer-7002.{SERVICE_TYPE}"
    return name, AsyncServiceInfo(SERVICE_TYPE, name, port=7002, properties=properties,
                                  parsed_addresses=list(addresses))


def parse(properties, addresses=("198.18.0.2",)):
    discovery = Discovery(ADVERT, "127.0.0.1")  # no sockets until start()
    return discovery._peer_from(*service(properties, addresses))


# -- resolved records reach the TXT rules (tests/test_advert.py) and never raise --


def test_a_well_formed_peer_of_our_swarm_is_reported():
    peer, reason = parse(good_txt())
    assert reason is None
    assert (peer.node_id, peer.address, peer.udp_port, peer.http_port) == ("node-peer", "198.18.0.2", 7002, 8002)
    assert peer.udp_addr == ("198.18.0.2", 7002)
    assert peer.txt["learner"] == "convnet"


def test_non_utf8_txt_is_rejected():
    props = {k.encode(): v.encode() for k, v in good_txt().items()}
    props[b"node"] = b"\xff\xfe"
    assert parse(props) == (None, RejectReason.BAD_TXT)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([b"swarm", b"node", b"udp", b"http", b"learner", b"proto", b"\xff"]),
                       st.one_of(st.none(), st.binary(max_size=40)), max_size=7))
def test_arbitrary_txt_bytes_never_raise(props):
    peer, reason = parse(props)
    assert (peer is None) != (reason is None)


async def test_interface_that_is_not_an_address_is_a_user_error():
    with pytest.raises(UserError, match="not an IP address"):
        Discovery(ADVERT, "eth0")
    # 203.0.113.7 (TEST-NET-3) is on no interface: refused before any socket joins mDNS.
    with pytest.raises(UserError, match="not an address of this host"):
        await Discovery(ADVERT, "203.0.113.7").start()


async def test_events_end_on_stop_and_overflow_drops_the_oldest_counted():
    discovery = Discovery(ADVERT, "127.0.0.1", config=DiscoveryConfig(event_queue=2))
    peers = [parse(good_txt(node=f"node-{i}"))[0] for i in range(5)]
    for peer in peers:
        discovery._emit(PeerEvent(PeerChange.ADDED, peer))
    await discovery.stop()  # never started: still ends the iterator
    got = [event.peer.node_id async for event in discovery.events()]
    assert got == ["node-3", "node-4"]
    assert discovery.events_dropped == 3
    with pytest.raises(RuntimeError, match="new Discovery"):
        await discovery.start()


def test_a_failing_callback_is_logged_not_raised(caplog):
    def broken(event):
        raise KeyError("bug in the caller")

    discovery = Discovery(ADVERT, "127.0.0.1", on_event=broken)
    discovery._emit(PeerEvent(PeerChange.ADDED, parse(good_txt())[0]))
    assert "on_event callback failed" in caplog.text


async def test_a_service_already_cached_when_browsing_starts_is_taken(monkeypatch):
    """zeroconf calls the handler from inside AsyncServiceBrowser's constructor for services
    already in its cache (a node started after its peers); that crashed a daemon at startup."""
    name = f"late-peer.{SERVICE_TYPE}"

    class CachedServiceBrowser:  # what zeroconf does when its cache already holds the service
        def __init__(self, zc, service_type, handlers):
            for handler in handlers:
                handler(zeroconf=zc, service_type=service_type, name=name, state_change=ServiceStateChange.Added)

        async def async_cancel(self):
            pass

    monkeypatch.setattr(browser_module, "AsyncServiceBrowser", CachedServiceBrowser)
    # own_name = the cached service: resolving it stops at "that is us", without the network
    browser = Browser(SimpleNamespace(zeroconf=None), IPVersion.V4Only, lambda *a: (None, None), lambda e: None,
                      DiscoveryConfig.local(), own_name=name)
    await browser.settle()
    assert browser.rejected[RejectReason.SELF] == 1
    await browser.stop()


# -- real nodes in a LAN in a box --

# argv: address node_id swarm udp_port [iterate]; prints JSON lines: events, rejection counts, errors.
NODE = """
import asyncio, json, signal, sys
from gossipnet.errors import UserError
from gossipnet.net.advert import Advertisement
from gossipnet.net.discovery import Discovery, DiscoveryConfig

address, node, swarm, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
iterate = len(sys.argv) > 5

def say(**fields):
    print(json.dumps(fields), flush=True)

def emit(ev):
    p = ev.peer
    say(event=ev.kind.value, node=p.node_id, address=p.address, udp=p.udp_port, http=p.http_port)

async def main():
    d = Discovery(Advertisement(swarm, node, port, port + 1000, "convnet", 1), address,
                  on_event=None if iterate else emit, config=DiscoveryConfig.local())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await d.start()
    except UserError as exc:
        say(error=str(exc))
        sys.exit(2)
    say(ready=True)

    async def consume():
        async for ev in d.events():
            emit(ev)

    consumer = asyncio.create_task(consume()) if iterate else None
    seen = None
    async with asyncio.timeout(60):
        while not stop.is_set():
            rejected = {r.value: n for r, n in d.rejected.items() if n}
            if rejected != seen:
                say(rejected=rejected)
                seen = rejected
            await asyncio.sleep(0.05)
    await d.stop()
    if consumer:
        await asyncio.wait_for(consumer, 5)
    say(stopped=True)

asyncio.run(main())
"""

# argv: address; advertises services of another swarm and with broken TXT, as a rogue would.
ROGUE = """
import asyncio, signal, sys
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

address = sys.argv[1]
T = "_gossipnet._udp.local."
SWARM = "ab" * 8

async def main():
    zc = AsyncZeroconf(interfaces=[address])
    good = {"swarm": SWARM, "node": "rogue", "udp": "7009", "http": "8009", "learner": "convnet", "proto": "1"}
    services = {
        "other-swarm": dict(good, swarm="cd" * 8, node="stranger"),
        "bad-port": dict(good, udp="99999"),
        "no-node": {k: v for k, v in good.items() if k != "node"},
    }
    for name, props in services.items():
        info = AsyncServiceInfo(T, f"{name}.{T}", port=7009, properties=props, parsed_addresses=[address])
        await zc.async_register_service(info)
    print('{"ready": true}', flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.wait_for(stop.wait(), 60)
    await zc.async_close()

asyncio.run(main())
"""


@pytest.fixture
def need_lanbox():
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)


def records(proc):
    return [json.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]


def wait_for_record(proc, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in records(proc):
            if predicate(rec):
                return rec
        if proc.returncode is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no matching record within {timeout} s; stdout:\n{proc.stdout()}\n"
                         f"stderr:\n{proc.stderr()[-3000:]}")


def start_node(lan, host, node, port, address=None, swarm=SWARM, iterate=False):
    argv = [address or lan.address(host), node, swarm, str(port)] + (["iterate"] if iterate else [])
    return lan.spawn_python(host, NODE, *argv)


@pytest.mark.netns
def test_nodes_on_different_hosts_find_each_other_and_ignore_strangers(need_lanbox):
    with LanBox(hosts=3) as lan:
        a = start_node(lan, 0, "node-a", 7001)
        b = start_node(lan, 1, "node-b", 7002)
        rogue = lan.spawn_python(2, ROGUE, lan.address(2))
        for proc in (a, b, rogue):
            wait_for_record(proc, lambda r: "ready" in r or "error" in r)

        seen_b = wait_for_record(a, lambda r: r.get("event") == "added")
        assert seen_b == {"event": "added", "node": "node-b", "address": lan.address(1), "udp": 7002, "http": 8002}
        seen_a = wait_for_record(b, lambda r: r.get("event") == "added")
        assert (seen_a["node"], seen_a["address"], seen_a["udp"]) == ("node-a", lan.address(0), 7001)

        # The rogue's services arrive and are counted, never reported.
        rejected = wait_for_record(a, lambda r: r.get("rejected", {}).get("other_swarm", 0) >= 1
                                   and r["rejected"].get("bad_txt", 0) >= 2)["rejected"]
        assert rejected.get("self", 0) >= 1  # our own advertisement comes back and is ignored

        b.kill(signal.SIGTERM)
        assert b.wait(10) == 0
        gone = wait_for_record(a, lambda r: r.get("event") == "removed", timeout=5)
        assert gone["node"] == "node-b"

        added = [r["node"] for r in records(a) if r.get("event") == "added"]
        assert added == ["node-b"]  # never the stranger or the rogue


@pytest.mark.netns
def test_two_nodes_on_one_host_pinned_to_loopback_find_each_other(need_lanbox):
    # A node without --interface advertises 127.0.0.1: discovery must work on loopback alone.
    with LanBox(hosts=1) as lan:
        a = start_node(lan, 0, "node-a", 7001, address="127.0.0.1", iterate=True)
        b = start_node(lan, 0, "node-b", 7002, address="127.0.0.1")
        for proc in (a, b):
            wait_for_record(proc, lambda r: "ready" in r)
        seen = wait_for_record(a, lambda r: r.get("event") == "added")
        assert (seen["node"], seen["address"], seen["udp"]) == ("node-b", "127.0.0.1", 7002)
        b.kill(signal.SIGTERM)
        assert b.wait(10) == 0
        assert wait_for_record(a, lambda r: r.get("event") == "removed", timeout=5)["node"] == "node-b"
        a.kill(signal.SIGTERM)
        assert a.wait(10) == 0
        assert any(r.get("stopped") for r in records(a))  # the events() iterator ended cleanly


@pytest.mark.netns
def test_the_same_node_started_twice_is_a_clear_error(need_lanbox):
    with LanBox(hosts=2) as lan:
        first = start_node(lan, 0, "node-a", 7001)
        wait_for_record(first, lambda r: "ready" in r)
        twin = start_node(lan, 1, "node-a", 7001)
        error = wait_for_record(twin, lambda r: "error" in r)["error"]
        assert "running twice" in error
        assert twin.wait(10) == 2
