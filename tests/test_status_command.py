"""`gossipnet status`: finds nodes, fetches their status concurrently, distrusts what comes back."""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from aiohttp import web

from gossipnet.commands import status as cmd
from gossipnet.errors import UserError
from gossipnet.net.http import StatusServer
from gossipnet.status.demo import DemoProvider
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def loop():
    """An event loop in a thread, for servers that must run while `run()` blocks the test thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def on(loop, coro):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=20)


def parse(argv):
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["status", *argv])


def peer(node_id, url, state="alive"):
    return {"node_id": node_id, "address": "127.0.0.1:1", "state": state, "incarnation": 0,
            "last_exchange": None, "http_url": url}


@pytest.fixture
def swarm(loop):
    """Two live nodes; alpha lists beta, a dead node, and a live-but-unreachable gamma."""
    alpha, beta = DemoProvider(node_id="alpha"), DemoProvider(node_id="beta\x1b[2J", kind="evolution")
    servers = [StatusServer(alpha), StatusServer(beta)]
    for s in servers:
        on(loop, s.start("127.0.0.1", 0))
    alpha.peers = [peer("beta\x1b[2J", servers[1].url), peer("gamma", "http://127.0.0.1:9/"),
                   peer("delta", "http://127.0.0.1:10/", state="dead"),
                   peer("alpha-again", servers[0].url)]
    beta.peers = [peer("alpha", servers[0].url)]
    alpha.rejections = {"wire": {"bad_signature": 3, "replayed": 0}, "learner": {"shape_mismatch": 1}}
    alpha.last_merge = {"at": time.time() - 30, "peer": "beta", "accepted": True, "reason": "ok"}
    alpha.advance(12)
    beta.advance(5)
    yield servers
    for s in servers:
        on(loop, s.stop())


def test_one_address_is_enough_to_see_the_swarm(swarm, capsys):
    assert cmd.run(parse(["--no-mdns", "--peer", swarm[0].url.removeprefix("http://").rstrip("/")])) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["node", "address", "learner", "step", "acc/fit", "peers", "last", "merge", "rejected"]
    alpha = next(line for line in lines if line.startswith("alpha "))
    assert "convnet" in alpha and " 12 " in alpha and "4 (wire:bad_signature 3)" in alpha and "30s ago" in alpha
    beta = next(line for line in lines if line.startswith("beta"))
    assert "evolution" in beta and "\x1b" not in out and "beta?[2J" in beta
    gamma = next(line for line in lines if line.startswith("gamma"))
    assert "NO STATUS: unreachable" in gamma
    assert "delta" not in out  # dead peers are not chased
    assert sum(line.startswith("alpha") for line in lines) == 1  # one line per node, whatever its addresses
    assert lines[-1].startswith("2 of 3 nodes answered")


def test_json_output_lists_every_node_with_its_validated_status(swarm, capsys):
    assert cmd.run(parse(["--no-mdns", "--peer", swarm[1].url, "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    by_id = {n["status"]["node"]["id"]: n for n in doc["nodes"] if n["ok"]}
    assert set(by_id) == {"alpha", "beta\x1b[2J"}
    assert by_id["alpha"]["status"]["learner"]["step"] == 12
    unreachable = [n for n in doc["nodes"] if not n["ok"]]
    assert [n["listed_as"] for n in unreachable] == ["gamma"] and unreachable[0]["error"]


def test_no_follow_asks_only_the_given_node(swarm, capsys):
    cmd.run(parse(["--no-mdns", "--no-follow", "--peer", swarm[0].url, "--json"]))
    assert [n["status"]["node"]["id"] for n in json.loads(capsys.readouterr().out)["nodes"]] == ["alpha"]


def test_watch_refreshes_the_given_number_of_times(swarm, capsys):
    assert cmd.run(parse(["--no-mdns", "--no-follow", "--peer", swarm[0].url, "--json",
                          "--watch", "0.5", "--count", "2"])) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == 2 and docs[1]["queried_at"] > docs[0]["queried_at"]


def test_exit_status_is_1_when_no_node_answers(capsys):
    assert cmd.run(parse(["--no-mdns", "--peer", "127.0.0.1:9", "--timeout", "2"])) == 1
    assert "NO STATUS" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["--no-mdns"], "--peer HOST:HTTP_PORT"),
    (["--no-mdns", "--peer", "nohost"], "expected HOST:HTTP_PORT"),
    (["--no-mdns", "--peer", "ftp://x:21"], "expected HOST:HTTP_PORT"),
    (["--no-mdns", "--peer", "h:99999"], "expected HOST:HTTP_PORT"),
    (["--no-mdns", "--peer", "h:1", "--timeout", "0"], "--timeout"),
    (["--no-mdns", "--peer", "h:1", "--watch", "0.1"], "--watch"),
    (["--interface", "eth0", "--mdns-wait", "0"], "--interface 'eth0' is not an IP address"),
])
def test_bad_flags_say_what_to_do(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        cmd.run(parse(argv))


def hostile_app():
    """Nodes that answer badly, each in its own way."""
    async def huge(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):  # 4 MiB, no Content-Length
            await resp.write(b" " * 65536)
        return resp

    async def slow(request):
        await asyncio.Event().wait()  # never answers (cancelled at cleanup)
        return web.Response(text="{}")

    def fixed(make):
        async def handler(request):
            return make()
        return handler

    def redirect():
        raise web.HTTPFound("http://127.0.0.1:9/")

    app = web.Application()
    app.router.add_get("/huge/api/status", huge)
    app.router.add_get("/declared/api/status", fixed(lambda: web.Response(body=b"x" * (2 << 20))))
    app.router.add_get("/slow/api/status", slow)
    app.router.add_get("/notjson/api/status", fixed(lambda: web.Response(text="<html>hi</html>")))
    app.router.add_get("/deep/api/status", fixed(lambda: web.Response(text="[" * 100_000 + "]" * 100_000)))
    app.router.add_get("/schema/api/status", fixed(lambda: web.json_response({"schema": 1, "node": "x"})))
    app.router.add_get("/redirect/api/status", fixed(redirect))
    return app


async def test_hostile_responses_are_capped_timed_out_and_validated():
    runner = web.AppRunner(hostile_app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            # Only the silent node gets a short timeout: the others must fail for what they
            # sent, however slowly a loaded machine serves it.
            reports = await asyncio.gather(*(cmd.fetch_status(session, f"{base}/{name}/", 1.0 if name == "slow" else 30.0)
                                             for name in ("huge", "declared", "slow", "notjson", "deep", "schema",
                                                          "redirect")))
    finally:
        await runner.cleanup()
    errors = [r.error for r in reports]
    assert all(r.status is None for r in reports)
    assert "exceeds" in errors[0] and "exceeds" in errors[1]
    assert errors[2] == "no answer within 1 s"
    assert errors[3].startswith("not JSON") and errors[4].startswith(("not JSON", "invalid"))
    assert errors[5].startswith("invalid status: $")
    assert errors[6] == "HTTP 302"


MDNS_SCRIPT = textwrap.dedent("""
    import argparse, asyncio, json, sys, threading
    from gossipnet.commands import status as cmd
    from gossipnet.net.advert import Advertisement
    from gossipnet.net.discovery import Discovery, DiscoveryConfig
    from gossipnet.net.http import StatusServer
    from gossipnet.status.demo import DemoProvider

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    on = lambda c: asyncio.run_coroutine_threadsafe(c, loop).result(timeout=20)
    nodes = []
    for i in range(2):
        p = DemoProvider(node_id=f"mdns-{i}", swarm="ab" * 8)
        p.advance(3)
        server = StatusServer(p)
        port = on(server.start("127.0.0.1", 0))
        ad = Advertisement(swarm_id="ab" * 8, node_id=f"mdns-{i}", udp_port=7000 + i, http_port=port,
                           learner="convnet", protocol=1)
        disc = Discovery(ad, "127.0.0.1", config=DiscoveryConfig.local())
        on(disc.start())
        nodes.append((server, disc))
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    code = cmd.run(parser.parse_args(["status", "--interface", "127.0.0.1", "--mdns-wait", "1.5",
                                      "--no-follow", "--swarm", "ab" * 8, "--json"]))
    for server, disc in nodes:
        on(disc.stop()); on(server.stop())
    sys.exit(code)
""")


def test_nodes_are_found_by_mdns_in_a_private_network_namespace():
    setup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", setup], capture_output=True, timeout=10)
    if probe.returncode != 0:
        skip_or_fail(f"cannot create a private network namespace: {probe.stderr.decode().strip()}")
    proc = subprocess.run(["unshare", "-rn", "sh", "-c", f"{setup} && exec {sys.executable} -c \"$0\"",
                           MDNS_SCRIPT], capture_output=True, timeout=45, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    doc = json.loads(proc.stdout)
    assert sorted(n["status"]["node"]["id"] for n in doc["nodes"] if n["ok"]) == ["mdns-0", "mdns-1"]
