"""Headless Chromium for tests and benchmarks: open a page, wait for what it posts back.

The page reports to the aiohttp server that served it (loopback only): ``run_page``
serves an app, opens the page and awaits the future its POST handlers resolve, then
the browser is stopped. No DevTools protocol: a page that posts its results is the
whole interface, and a page that fails posts its error (``POST /error``, from
window.onerror), so a test fails with the browser's message instead of a timeout.
The one copy of this for the browser tests and benchmarks/volunteer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

from aiohttp import web

from tests.conftest import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-background-timer-throttling",
         "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows")


def chromium_path() -> str:
    """The Chromium binary, or skip (fail in CI) when it is not installed."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        skip_or_fail("headless Chromium is not installed (apt-get install chromium)")
    return path  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def browser(url: str, log_path: str | None = None, cpus: str | None = None,
                  flags: tuple[str, ...] = (), profile: str | None = None,
                  ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A headless Chromium showing ``url``, killed on exit. ``cpus`` (taskset's list, e.g.
    "1") pins it and its children to those cores; ``flags`` adds switches (a screenshot, a
    DevTools port); ``profile`` is its profile directory (where it writes
    DevToolsActivePort), a fresh temporary one by default."""
    chromium = chromium_path()
    pin = ["taskset", "-c", cpus] if cpus else []
    given = contextlib.nullcontext(profile) if profile else tempfile.TemporaryDirectory(prefix="gossipnet-chromium-")
    with given as profile_dir:
        log = open(log_path or os.devnull, "wb")
        proc = await asyncio.create_subprocess_exec(
            *pin, chromium, *FLAGS, *flags, f"--user-data-dir={profile_dir}", url,
            stdout=log, stderr=log, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # its own session: renderer and GPU children too
                await proc.wait()
            log.close()


async def run_page(app: web.Application, path: str, done: asyncio.Future, timeout: float,
                   log_path: str | None = None):
    """Serve ``app`` on loopback, open ``path`` in Chromium and return what ``done``
    resolves to (the app's handlers resolve it); a ``POST /error`` from the page fails it."""

    async def error(request):
        if not done.done():
            done.set_exception(AssertionError(f"the page failed: {await request.text()}"))
        return web.Response(text="ok")

    app.router.add_post("/error", error)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with browser(f"http://127.0.0.1:{port}{path}", log_path=log_path):
            return await asyncio.wait_for(done, timeout=timeout)
    finally:
        await runner.cleanup()
