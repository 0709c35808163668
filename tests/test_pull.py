"""Blob pulls are bounded: size, hash, time and concurrency are enforced while streaming."""

import asyncio
import hashlib

import pytest
from aiohttp import web

from gossipnet.exchange import Manifest
from gossipnet.net.pull import BlobPuller, PullError, PullLimits

BLOB = bytes(range(256)) * 1000
SHA = hashlib.sha256(BLOB).digest()


def manifest(sha: bytes = SHA, size: int = len(BLOB)) -> Manifest:
    """What the puller checks the download against: the announced sha256 and size."""
    return Manifest("weights", "fp", 1.0, 1, sha, size, "safetensors", "float32", 1, size // 4)


@pytest.fixture
async def server():
    state = {"active": 0, "peak": 0}

    async def good(request):
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        await asyncio.sleep(0.05)
        state["active"] -= 1
        return web.Response(body=BLOB)

    async def endless(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(1000):  # bounded: 64 MB at most, the client must stop far earlier
            await resp.write(b"x" * 65536)
        return resp

    async def slow(request):
        await asyncio.sleep(1)
        return web.Response(body=BLOB)

    async def fail(request):
        return web.Response(status=500)

    async def redirect(request):
        raise web.HTTPFound("/good")

    app = web.Application()
    app.router.add_get("/good", good)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", fail)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_good_blob_is_returned(server):
    base, _ = server
    puller = BlobPuller()
    try:
        assert (await puller.fetch(f"{base}/good", manifest())).data == BLOB
    finally:
        await puller.close()


@pytest.mark.parametrize(
    "path, sha, size, reason",
    [
        ("/good", hashlib.sha256(b"other").digest(), len(BLOB), "hash_mismatch"),
        ("/good", SHA, len(BLOB) - 1, "size_mismatch"),
        ("/endless", SHA, 100_000, "size_mismatch"),
        ("/missing", SHA, len(BLOB), "gone"),
        ("/fail", SHA, len(BLOB), "http_error"),
        ("/redirect", SHA, len(BLOB), "redirect"),  # even to a good blob: never followed
        ("/good", SHA, 10**12, "too_large"),
        ("/good", SHA, 0, "too_large"),
    ],
)
async def test_bad_pulls_fail_with_a_reason(server, path, sha, size, reason):
    base, _ = server
    puller = BlobPuller()
    try:
        with pytest.raises(PullError) as info:
            await puller.fetch(base + path, manifest(sha, size))
        assert info.value.reason == reason
    finally:
        await puller.close()


async def test_slow_peer_times_out(server):
    base, _ = server
    puller = BlobPuller(PullLimits(timeout_s=0.3))
    try:
        with pytest.raises(PullError) as info:
            await puller.fetch(f"{base}/slow", manifest())
        assert info.value.reason == "timeout"
    finally:
        await puller.close()


async def test_unreachable_peer_is_a_pull_error():
    puller = BlobPuller(PullLimits(timeout_s=2))
    try:
        with pytest.raises(PullError) as info:
            await puller.fetch("http://127.0.0.1:9/blob", manifest())
        assert info.value.reason == "unreachable"
    finally:
        await puller.close()


async def test_concurrency_is_capped(server):
    base, state = server
    puller = BlobPuller(PullLimits(max_concurrent=2))
    try:
        results = await asyncio.gather(*(puller.fetch(f"{base}/good", manifest()) for _ in range(6)))
        assert all(r.data == BLOB for r in results)
        assert state["peak"] == 2
    finally:
        await puller.close()
