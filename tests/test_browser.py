"""A real browser (headless Chromium) loads a live node's status page and shows the progress PNG."""

import asyncio

import numpy as np
import pytest
from PIL import Image

from gossipnet.net.http import StatusServer
from gossipnet.status.demo import DemoProvider
from tests.chromium import browser

pytestmark = pytest.mark.timeout(120)

TAB_BLUE = np.array([31, 119, 180])  # matplotlib's tab:blue, the loss curve; nothing else on the page uses it


async def screenshot(url: str, out, profile) -> np.ndarray:
    log = out.with_suffix(".log")
    async with browser(url, log_path=str(log), profile=str(profile),
                       flags=("--hide-scrollbars", f"--screenshot={out}", "--window-size=1024,1400")) as proc:
        await asyncio.wait_for(proc.wait(), timeout=60)  # it exits once the screenshot is written
    assert out.exists(), f"Chromium wrote no screenshot: {log.read_text(errors='replace')[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def count_near(img: np.ndarray, rgb: np.ndarray) -> int:
    return int((np.abs(img - rgb).sum(axis=2) < 40).sum())


async def test_chromium_renders_the_page_with_its_progress_png(tmp_path):
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
        with_png = await screenshot(servers[0].url, tmp_path / "page.png", tmp_path / "profile-a")
        without = await screenshot(servers[1].url, tmp_path / "control.png", tmp_path / "profile-b")
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
