"""The HTTP server against idle, half-sent and greedy clients: caps, deadlines, 429s."""

from __future__ import annotations

import asyncio
import hashlib
import resource
from dataclasses import replace

import aiohttp
import pytest

from gossipnet.net.http import StatusServer
from gossipnet.net.http_guard import ConnectionGuard, HttpLimits, raise_open_file_limit
from gossipnet.status.demo import DemoProvider

pytestmark = pytest.mark.timeout(60)

BLOB = b"x" * 1000


class BlobProvider(DemoProvider):
    def blob(self, sha256_hex):
        return BLOB if sha256_hex == hashlib.sha256(BLOB).hexdigest() else None


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True if the server closes the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
        return True
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


async def serve(limits: HttpLimits) -> StatusServer:
    server = StatusServer(BlobProvider(), limits=replace(limits, exempt_loopback=False))
    await server.start("127.0.0.1", 0)
    return server


def test_guard_counts_per_ip_and_in_total():
    g = ConnectionGuard(HttpLimits(max_connections=3, max_per_ip=2))
    assert g.admit("a") and g.admit("a") and not g.admit("a")
    assert g.admit("b") and not g.admit("c")
    g.release("a")
    assert g.admit("c")
    assert g.counters == {"refused_per_ip_cap": 1, "refused_total_cap": 1}
    g.release("c")
    assert g.admit("127.0.0.1", loopback=True) and not g.admit("b", loopback=True)  # total cap holds


async def test_connections_beyond_the_per_ip_cap_are_closed_and_the_page_still_answers():
    server = await serve(HttpLimits(max_per_ip=4, max_connections=8, header_timeout=30))
    conns = []
    try:
        for _ in range(10):
            conns.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0)
        refused = [await closed_by_server(r, 1.0) for r, _ in conns[4:]]
        assert all(refused)
        assert server.guard.counters["refused_per_ip_cap"] == 6
        for _, w in conns[:2]:  # two idlers leave: a real client gets in again
            w.close()
        async with aiohttp.ClientSession() as s:
            async with asyncio.timeout(10):
                while True:
                    try:
                        async with s.get(server.url + "healthz") as resp:
                            assert resp.status == 200
                            break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
    finally:
        for _, w in conns:
            w.close()
        await server.stop()


async def test_half_sent_headers_are_cut_off_at_the_deadline():
    server = await serve(HttpLimits(header_timeout=0.3, keepalive=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes
        assert await closed_by_server(reader, 10.0)
        assert server.guard.counters["header_timeouts"] == 1
        # an idle connection that never sent a byte is cut off too
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed_by_server(reader, 10.0)
        assert server.guard.counters["header_timeouts"] == 2
        assert server.guard.open_connections == 0
    finally:
        await server.stop()


async def test_idle_keep_alive_connections_close_after_a_complete_request():
    server = await serve(HttpLimits(header_timeout=30, keepalive=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_server(reader, 10.0)  # aiohttp's keep-alive timer, not ours
        assert server.guard.counters["header_timeouts"] == 0
    finally:
        await server.stop()


async def test_blob_downloads_are_rate_limited_per_ip():
    server = await serve(HttpLimits(blob_per_ip_per_s=0.01, blob_burst=3))
    url = server.url + "blob/" + hashlib.sha256(BLOB).hexdigest()
    try:
        async with aiohttp.ClientSession() as s:
            codes = []
            for _ in range(6):
                async with s.get(url) as resp:
                    codes.append(resp.status)
                    if resp.status == 200:
                        assert await resp.read() == BLOB
        assert codes == [200, 200, 200, 429, 429, 429]
        assert server.guard.counters["blob_rate_limited"] == 3
    finally:
        await server.stop()


async def test_loopback_clients_are_exempt_from_per_ip_limits_by_default():
    server = StatusServer(BlobProvider(), limits=HttpLimits(blob_per_ip_per_s=0.01, blob_burst=1))
    await server.start("127.0.0.1", 0)
    url = server.url + "blob/" + hashlib.sha256(BLOB).hexdigest()
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(3):  # a demo swarm on one machine pulls from 127.0.0.1 only
                async with s.get(url) as resp:
                    assert resp.status == 200
    finally:
        await server.stop()


def test_open_file_limit_is_raised_within_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_open_file_limit(4096)
        expect = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        assert got == expect == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
