"""The volunteer routes on a node's HTTP server: the page, its scripts, leases, updates.

Thin: every decision is the sans-IO ``VolunteerDesk``'s; this module reads bounded
bodies, runs the desk's expensive checks where the node trains (``run_heavy``, never on
the event loop), and turns refusals into 4xx JSON ``{"reason", "detail"}``.

    GET  /volunteer                     the page (gossipnet/web/volunteer.html)
    GET  /volunteer/web/<name>.js       the engine and page scripts (a fixed list)
    POST /volunteer/lease               a lease (JSON), or 403/429 with the reason
    GET  /volunteer/weights/<version>   safetensors: weights and optimiser state
    GET  /volunteer/images/<token>      safetensors: the lease's uint8 images and labels
    POST /volunteer/update              safetensors delta; 200 accepted or 4xx reason
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gossipnet.volunteers import Refusal, VolunteerDesk

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SCRIPTS = frozenset(p.name for p in WEB_DIR.glob("*.js"))
POST_PATHS = frozenset({"/volunteer/lease", "/volunteer/update"})
# The page runs WebAssembly (gemm.wat) and a module worker, from this origin only.
PAGE_CSP = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
            "connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def _refused(refusal: Refusal) -> web.Response:
    return web.json_response({"reason": refusal.reason, "detail": refusal.detail}, status=refusal.status)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def add_volunteer_routes(app: web.Application, desk: VolunteerDesk,
                         run_heavy: Callable[..., Awaitable], clock: Callable[[], float] = time.monotonic) -> None:
    """Install the routes above; ``run_heavy(fn, *args)`` runs ``fn`` off the event loop."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=(WEB_DIR / "volunteer.html").read_bytes(), content_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP})

    async def script(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in SCRIPTS:
            raise web.HTTPNotFound(text="no such script\n")
        return web.Response(body=(WEB_DIR / name).read_bytes(), content_type="text/javascript",
                            headers={"Cache-Control": "no-cache"})

    async def lease(request: web.Request) -> web.Response:
        out = desk.lease(_client(request), clock())
        return _refused(out) if isinstance(out, Refusal) else web.json_response(out)

    async def weights(request: web.Request) -> web.Response:
        try:
            version = int(request.match_info["version"])
        except ValueError:
            raise web.HTTPBadRequest(text="expected /volunteer/weights/<version number>\n") from None
        blob = desk.weights(version)
        if blob is None:
            return _refused(desk.refuse("stale_base", f"version {version} is not held; take a new lease"))
        return web.Response(body=blob, content_type="application/octet-stream")

    async def images(request: web.Request) -> web.Response:
        out = desk.images(_client(request), request.match_info["token"], clock())
        if isinstance(out, Refusal):
            return _refused(out)
        return web.Response(body=out, content_type="application/octet-stream")

    async def update(request: web.Request) -> web.Response:
        limit = desk.max_update_bytes
        if request.content_length is not None and request.content_length > limit:
            return _refused(desk.refuse("too_large", f"{request.content_length} bytes; an update of this "
                                                     f"net is at most {limit}"))
        chunks, size = [], 0
        while chunk := await request.content.read(1 << 16):  # bounded whatever the headers claimed
            size += len(chunk)
            if size > limit:
                return _refused(desk.refuse("too_large", f"more than {limit} bytes"))
            chunks.append(chunk)
        body = b"".join(chunks)
        pending = desk.check(_client(request), body, clock())
        if isinstance(pending, Refusal):
            return _refused(pending)
        out = await run_heavy(desk.finish, pending, clock())
        return _refused(out) if isinstance(out, Refusal) else web.json_response(out)

    app.router.add_get("/volunteer", page)
    app.router.add_get("/volunteer/web/{name}", script)
    app.router.add_post("/volunteer/lease", lease)
    app.router.add_get("/volunteer/weights/{version}", weights)
    app.router.add_get("/volunteer/images/{token}", images)
    app.router.add_post("/volunteer/update", update)
