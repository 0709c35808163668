"""Headless Chromium for tests and benchmarks: open a page, wait for what it posts back.

The page reports to the aiohttp server that served it (loopback only); the caller
awaits a future its POST handler resolves, then the browser is stopped. No DevTools
protocol: a page that posts its results is the whole interface, and a page that
fails posts its error (window.onerror), so a test fails with the browser's message
instead of a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

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
async def browser(url: str, log_path: str | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """A headless Chromium showing ``url`` with a fresh profile, killed on exit."""
    chromium = chromium_path()
    with tempfile.TemporaryDirectory(prefix="gossipnet-chromium-") as profile:
        log = open(log_path or os.devnull, "wb")
        proc = await asyncio.create_subprocess_exec(
            chromium, *FLAGS, f"--user-data-dir={profile}", url,
            stdout=log, stderr=log, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # its own session: renderer and GPU children too
                await proc.wait()
            log.close()
