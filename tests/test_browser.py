"""A real browser (headless Chromium) loads a live node's status page and shows the progress PNG."""

import asyncio
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gossipnet.net.http import StatusServer
from gossipnet.status.demo import DemoProvider
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
TAB_BLUE = np.array([31, 119, 180])  # matplotlib's tab:blue, the loss curve; nothing else on the page uses it


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        skip_or_fail("headless Chromium is not installed (apt-get install chromium)")
    return path


async def screenshot(chromium: str, url: str, out, profile) -> np.ndarray:
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--hide-scrollbars", f"--screenshot={out}", "--window-size=1024,1400",
        url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert out.exists(), f"Chromium wrote no screenshot: {output.decode(errors='replace')[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def count_near(img: np.ndarray, rgb: np.ndarray) -> int:
    return int((np.abs(img - rgb).sum(axis=2) < 40).sum())


async def test_chromium_renders_the_page_with_its_progress_png(tmp_path):
    chromium = _chromium()
    good = DemoProvider(node_id="browser-node")
    good.advance(60)
    broken = DemoProvider(node_id="browser-node")
    broken.advance(60)

    def no_image():
        raise RuntimeError("this control page's PNG fails on purpose")

    broken.visuals = no_image  # the page renders, its image does not
    servers = [StatusServer(good), StatusServer(broken)]
    for server in servers:
        await server.start("127.0.0.1", 0)
    try:
        with_png = await screenshot(chromium, servers[0].url, tmp_path / "page.png", tmp_path / "profile-a")
        without = await screenshot(chromium, servers[1].url, tmp_path / "control.png", tmp_path / "profile-b")
    finally:
        for server in servers:
            await server.stop()
    assert with_png.shape[:2] == (1400, 1024)
    # the loss curve's blue shows in the page, and only when the PNG loaded
    assert count_near(with_png, TAB_BLUE) > 200, "the progress PNG did not render in the browser"
    assert count_near(without, TAB_BLUE) == 0
    # the page itself rendered in both (text is there, not a blank window)
    assert (without < 100).all(axis=2).sum() > 500
    assert servers[0].progress.renders == 1
