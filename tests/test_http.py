"""The node's HTTP server, driven through real sockets on loopback with a demo provider."""

import asyncio
import hashlib
import io
import json
import socket
import threading
import time

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gossipnet.errors import UserError
from gossipnet.net.http import StatusProvider, StatusServer
from gossipnet.status.demo import DemoProvider
from gossipnet.status.plots import figure_size
from gossipnet.status.schema import validate_status

pytestmark = pytest.mark.timeout(60)


def provider():
    p = DemoProvider(
        node_id="node-a",
        peers=[{"node_id": "<b>peer</b>", "address": "127.0.0.1:7001", "state": "alive", "incarnation": 3,
                "last_exchange": time.time() - 4, "http_url": None}],
        rejections={"wire": {"bad_signature": 1}},
        counters={"exchange": {"sent": 2, "pulled": 1, "absorbed": 1},
                  "messages_in": {"PING": 4}, "messages_out": {"ACK": 4}, "bytes": {"in": 10, "out": 20}},
    )
    p.advance(3)
    return p


async def started(p, **kw):
    server = StatusServer(p, **kw)
    await server.start("127.0.0.1", 0)
    return server


async def get(session, server, path, method="GET"):
    async with session.request(method, server.url.rstrip("/") + path) as resp:
        return resp.status, resp.headers, await resp.read()


def test_the_demo_provider_satisfies_the_protocol():
    assert isinstance(provider(), StatusProvider)


async def test_every_route_answers_with_its_content_type():
    p = provider()
    server = await started(p)
    try:
        assert server.port and server.url == f"http://127.0.0.1:{server.port}/"
        async with aiohttp.ClientSession() as s:
            status, headers, body = await get(s, server, "/")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert "Content-Security-Policy" in headers
            assert b'src="/progress.png"' in body and b"&lt;b&gt;peer&lt;/b&gt;" in body and b"<b>peer" not in body

            status, headers, body = await get(s, server, "/api/status")
            assert status == 200 and headers["Content-Type"].startswith("application/json")
            doc = validate_status(json.loads(body))
            assert doc["node"]["id"] == "node-a" and doc["learner"]["step"] == 3

            status, headers, body = await get(s, server, "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
            names = {f.name for f in text_string_to_metric_families(body.decode())}
            assert {"gossipnet_steps", "gossipnet_peers", "gossipnet_rejections", "gossipnet_bytes"} <= names

            status, headers, body = await get(s, server, "/progress.png")
            assert status == 200 and headers["Content-Type"] == "image/png"
            assert Image.open(io.BytesIO(body)).size == figure_size({})

            status, _, body = await get(s, server, "/healthz")
            assert status == 200 and body == b"ok\n"
    finally:
        await server.stop()


async def test_unknown_paths_are_404_and_other_methods_405():
    server = await started(provider())
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/nope", "/api", "/api/status/extra", "/progress.png.bak", "/../etc/passwd"):
                assert (await get(s, server, path))[0] == 404, path
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                for path in ("/", "/api/status", "/nope"):
                    status, headers, _ = await get(s, server, path, method)
                    allowed = {m.strip() for m in headers["Allow"].split(",")}
                    assert status == 405 and allowed == {"GET", "HEAD"}, (method, path)
            status, headers, body = await get(s, server, "/", "HEAD")
            assert status == 200 and body == b""
    finally:
        await server.stop()


async def test_blobs_are_served_only_while_current():
    p = provider()
    old = p.offer_blob(b"weights v1")
    server = await started(p)
    try:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await get(s, server, f"/blob/{old}")
            assert status == 200 and body == b"weights v1"
            assert headers["Content-Type"] == "application/octet-stream"
            new = p.offer_blob(b"weights v2")
            assert (await get(s, server, f"/blob/{old}"))[0] == 404
            assert (await get(s, server, f"/blob/{new}"))[2] == b"weights v2"
            assert hashlib.sha256(b"weights v2").hexdigest() == new
            for bad in ("xyz", new.upper(), new[:-1], new + "0"):
                assert (await get(s, server, f"/blob/{bad}"))[0] == 400, bad
    finally:
        await server.stop()


async def test_the_png_is_cached_and_refreshed_in_the_background_at_most_once_per_interval():
    p = provider()
    server = await started(p, render_interval=0.3)
    png = server.progress
    try:
        async with aiohttp.ClientSession() as s:
            first = await asyncio.gather(*(get(s, server, "/progress.png") for _ in range(5)))
            assert png.renders == 1 and len({b for _, _, b in first}) == 1
            await asyncio.sleep(0.35)
            assert (await get(s, server, "/progress.png"))[2] == first[0][2]  # unchanged history
            await png.settle()
            assert png.renders == 1
            p.advance(10)
            # changed, interval passed: the cached image comes back at once, a re-render starts
            assert (await get(s, server, "/progress.png"))[2] == first[0][2]
            await png.settle()
            assert png.renders == 2
            second = (await get(s, server, "/progress.png"))[2]
            assert second != first[0][2]
            p.advance(10)
            await get(s, server, "/progress.png")  # changed, but rendered moments ago
            await png.settle()
            assert png.renders == 2
            await asyncio.sleep(0.35)
            await get(s, server, "/progress.png")
            await png.settle()
            assert png.renders == 3 and (await get(s, server, "/progress.png"))[2] != second
    finally:
        await server.stop()


async def test_a_failing_re_render_keeps_serving_the_last_good_image():
    p = provider()
    server = await started(p, render_interval=0.0)
    try:
        async with aiohttp.ClientSession() as s:
            good = (await get(s, server, "/progress.png"))[2]

            def broken():
                raise RuntimeError("visuals broke")

            p.visuals = broken
            p.advance(1)
            for _ in range(3):
                status, _, body = await get(s, server, "/progress.png")
                await server.progress.settle()
                assert status == 200 and body == good
    finally:
        await server.stop()


async def test_rendering_happens_off_the_event_loop():
    p = provider()
    release = threading.Event()
    inside = threading.Event()

    def slow_visuals():
        inside.set()
        release.wait(10)
        return {}

    p.visuals = slow_visuals
    server = await started(p)
    try:
        async with aiohttp.ClientSession() as s:
            png = asyncio.ensure_future(get(s, server, "/progress.png"))
            while not inside.is_set():
                await asyncio.sleep(0.01)
            assert (await get(s, server, "/healthz"))[0] == 200
            assert (await get(s, server, "/api/status"))[0] == 200
            assert not png.done()  # the PNG is still being drawn while the loop answered both
            release.set()
            assert (await png)[0] == 200
    finally:
        release.set()
        await server.stop()


async def test_the_server_binds_only_the_given_host_and_closes_on_stop():
    server = await started(provider())
    port = server.port
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        await server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_a_busy_port_or_foreign_address_is_a_user_error_and_starting_twice_is_refused():
    first = await started(provider())
    try:
        with pytest.raises(UserError, match=f"127.0.0.1:{first.port}.*free HTTP port"):
            await StatusServer(provider()).start("127.0.0.1", first.port)
        with pytest.raises(UserError, match="address of this host"):
            await StatusServer(provider()).start("192.0.2.1", 0)  # TEST-NET-1, never local
        with pytest.raises(RuntimeError):
            await first.start("127.0.0.1", 0)
    finally:
        await first.stop()
