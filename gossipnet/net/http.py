"""The node's HTTP server: status page, progress PNG, JSON, Prometheus metrics, blobs.

The server knows nothing about nodes: it serves whatever a ``StatusProvider``
gives it, so it is tested with a fake provider and the node only has to
implement five members. It is read-only: GET and HEAD are the only methods;
anything else gets 405 whatever the path, except the two volunteer POSTs
(gossipnet.net.volunteer_http) when a node takes browser volunteers, and POST /classify
(the picture classifier, gossipnet.net.model_http) when the provider offers a model.

The PNG costs a few hundred milliseconds of matplotlib, so it is rendered in a
dedicated worker thread (never on the event loop, never in the executor the node
trains in), cached, and re-rendered in the background at most once per
``render_interval`` and only when the history's version has changed.

Connections pass ``net.http_guard`` first (caps per IP and in total, a header
deadline, a short keep-alive), and ``/blob`` downloads are rate-limited per IP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from gossipnet.errors import UserError
from gossipnet.net import model_http
from gossipnet.net.model_http import ModelService, add_model_routes
from gossipnet.net.http_guard import ConnectionGuard, GuardedSite, HttpLimits, listen_socket
from gossipnet.net.volunteer_http import POST_PATHS
from gossipnet.status.history import MetricsHistory
from gossipnet.status.metrics import make_registry, render_metrics
from gossipnet.status.page import CONTENT_SECURITY_POLICY, render_page
from gossipnet.status.plots import render_progress_png

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ALLOWED = ("GET", "HEAD")


@runtime_checkable
class StatusProvider(Protocol):
    """What the server needs from a node.

    ``status()`` is called on the event loop and must be cheap (no numpy work);
    it returns a document built by ``gossipnet.status.schema.build_status``.
    ``visuals()`` is called from the PNG worker thread, so it must not touch a
    learner that is training: return arrays cached after the last training chunk.
    ``blob()`` returns the bytes of the snapshot currently announced under that
    sha256 (lowercase hex), or None once it is no longer current.
    """

    kind: str
    history: MetricsHistory

    def status(self) -> dict[str, Any]: ...

    def visuals(self) -> Mapping[str, Any]: ...

    def blob(self, sha256_hex: str) -> bytes | None: ...


class ProgressImage:
    """The cached progress PNG of one provider, refreshed in the background.

    Only the very first request waits for a render. Later ones get the cached
    image at once; if the history has changed and the last render is older than
    ``render_interval``, they also start one background re-render (never two at
    a time), so a browser polling every few seconds sees an image at most one
    interval plus one render old, and never waits on matplotlib.
    """

    def __init__(self, provider: StatusProvider, executor: ThreadPoolExecutor, render_interval: float = 1.0,
                 clock=time.monotonic) -> None:
        self._provider = provider
        self._executor = executor
        self._interval = render_interval
        self._clock = clock
        self._png: bytes | None = None
        self._version = -1
        self._rendered_at = -float("inf")
        self._pending: asyncio.Future[bytes] | None = None
        self.renders = 0  # how many times the PNG was drawn (tests and the benchmark read it)

    async def get(self) -> bytes:
        version = self._provider.history.version
        stale = version != self._version and self._clock() - self._rendered_at >= self._interval
        if self._pending is None and (self._png is None or stale):
            self._pending = asyncio.ensure_future(self._render(version))
        if self._png is None:
            return await asyncio.shield(self._pending)
        return self._png

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait for a background render in progress, if any (for tests and shutdown)."""
        if self._pending is not None:
            await asyncio.wait([self._pending], timeout=timeout)

    async def _render(self, version: int) -> bytes:
        try:
            title = str(self._provider.status()["node"]["id"])
            loop = asyncio.get_running_loop()
            png = await loop.run_in_executor(self._executor, self._draw, self._provider.kind, title)
        except Exception:
            if self._png is None:
                raise  # the first request reports it (500); aiohttp logs the traceback
            log.exception("progress PNG re-render failed; serving the previous image")
            self._rendered_at = self._clock()  # retry after an interval, not on every request
            return self._png
        finally:
            self._pending = None
        self._png, self._version, self._rendered_at = png, version, self._clock()
        self.renders += 1
        return png

    def _draw(self, kind: str, title: str) -> bytes:
        # worker thread: visuals() is documented as callable from here
        return render_progress_png(self._provider.history, self._provider.visuals(), kind, title=title)


def _read_only(post_paths: frozenset[str] = frozenset()):
    """GET and HEAD only, except POST on ``post_paths`` (the volunteer routes, when on)."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if request.method not in _ALLOWED and not (request.method == "POST" and request.path in post_paths):
            raise web.HTTPMethodNotAllowed(request.method, _ALLOWED)
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return middleware


def create_app(provider: StatusProvider, progress: ProgressImage,
               volunteer_routes: Callable[[web.Application], None] | None = None,
               guard: ConnectionGuard | None = None,
               models: ModelService | None = None) -> web.Application:
    """The aiohttp application for one node (routes in the module docstring and docs/API.md).

    ``volunteer_routes`` installs gossipnet.net.volunteer_http's routes; ``models`` the model
    downloads and ``POST /classify`` (gossipnet.net.model_http).
    """
    registry = make_registry(provider.status)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=render_page(provider.status()), content_type="text/html",
                            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    async def progress_png(request: web.Request) -> web.Response:
        return web.Response(body=await progress.get(), content_type="image/png")

    async def api_status(request: web.Request) -> web.Response:
        body = json.dumps(provider.status(), allow_nan=False, separators=(",", ":"))
        return web.Response(text=body, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = render_metrics(registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def blob(request: web.Request) -> web.Response:
        digest = request.match_info["sha256_hex"]
        if not _SHA256_HEX.fullmatch(digest):
            raise web.HTTPBadRequest(text="expected /blob/<sha256 as 64 lowercase hex digits>\n")
        if guard is not None and not guard.blob_allowed(request.remote or "", int(time.time() * 1000)):
            raise web.HTTPTooManyRequests(text="too many downloads from your address; retry later\n",
                                          headers={"Retry-After": "1"})
        data = provider.blob(digest)
        if data is None:
            raise web.HTTPNotFound(text="this node no longer offers that snapshot\n")
        return web.Response(body=data, content_type="application/octet-stream")

    post_paths = (POST_PATHS if volunteer_routes is not None else frozenset()) | (
        model_http.POST_PATHS if models is not None else frozenset())
    middlewares = ([guard.middleware] if guard is not None else []) + [_read_only(post_paths)]
    app = web.Application(middlewares=middlewares, client_max_size=1024)
    if volunteer_routes is not None:
        volunteer_routes(app)
    app.router.add_get("/", page)
    app.router.add_get("/progress.png", progress_png)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/blob/{sha256_hex}", blob)
    if models is not None:  # a provider with a model() to offer (gossipnet/net/model_http.py)
        add_model_routes(app, models)
    return app


class StatusServer:
    """One node's HTTP server; ``await start(host, port)``, later ``await stop()``."""

    def __init__(self, provider: StatusProvider, *, render_interval: float = 1.0,
                 volunteer_routes: Callable[[web.Application], None] | None = None,
                 limits: HttpLimits | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gossipnet-png")
        self.progress = ProgressImage(provider, self._executor, render_interval)
        self.guard = ConnectionGuard(limits)
        self.models = ModelService(provider, self.guard) if callable(getattr(provider, "model", None)) else None
        self.app = create_app(provider, self.progress, volunteer_routes, self.guard, self.models)
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int = 0) -> int:
        """Listen on ``host`` only (port 0 picks a free one); return the bound port.

        A busy port or a foreign address raises ``UserError`` saying what to change.
        """
        if self._runner is not None:
            raise RuntimeError("StatusServer already started")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               keepalive_timeout=self.guard.limits.keepalive)
        await runner.setup()
        try:
            site = GuardedSite(runner, listen_socket(host, port), self.guard)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserError(f"cannot serve the status page on {host}:{port} ({exc.strerror or exc}); "
                            "choose a free HTTP port (0 picks one) or an address of this host") from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        log.info("status page on %s", self.url)
        return self.port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8731/``."""
        if self.port is None:
            raise RuntimeError("StatusServer not started")
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        """Close the listening socket and open connections, then the PNG worker."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.progress.settle()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.models is not None:
            self.models.close()
