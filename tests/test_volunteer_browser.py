"""A live node and a headless Chromium on its /volunteer page, over loopback.

The browser leases work, trains with gossipnet/web in a Web Worker, and posts updates;
the node's first leases are all spot-checked (recomputed with numpy), so an accepted
update here also shows the two engines agree inside the real protocol.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from gossipnet.config import build_config
from gossipnet.data import load_dataset
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.nn import blas
from gossipnet.nn.train import evaluate
from gossipnet.node import Node
from gossipnet.status.schema import validate_status
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import load_or_create_identity
from tests.chromium import browser
from tests.daemon_box import new_swarm_token

pytestmark = pytest.mark.timeout(180)


def _node(tmp_path, data) -> Node:
    learner = ConvnetLearner(data, np.arange(4000), ConvnetConfig(net="tiny", seed=1))
    config = build_config({}, {"state_dir": str(tmp_path / "node"), "host": "127.0.0.1", "interface": "127.0.0.1",
                               "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
                               "eval_interval": 4.0, "train_chunk": 5, "volunteers": True})
    identity = load_or_create_identity(config.state_dir)
    creds = load_credentials(identity, int(time.time() * 1000), swarm_token=new_swarm_token())
    return Node(config, learner, identity, creds, incarnation=int(time.time() * 1000))


async def test_a_browser_on_the_volunteer_page_trains_for_the_node(tmp_path):
    before = blas.get_threads()
    blas.set_threads(1)
    data = load_dataset("embedded")
    node = _node(tmp_path, data)
    assert node.volunteers is not None
    # the whole test set, before and after: the node's own status figure is a small, noisy sample
    untrained = evaluate(node.learner.net, data.x_test, data.y_test)["accuracy"]
    task = asyncio.create_task(node.run())
    try:
        await asyncio.wait_for(node.ready.wait(), 30)
        url = f"http://127.0.0.1:{node.http_port}/"
        async with aiohttp.ClientSession() as http, browser(url + "volunteer?autostart=1",
                                                            log_path=str(tmp_path / "chromium.log")):
            async with http.get(url + "volunteer") as r:  # the page itself: served with its policy
                assert r.status == 200 and "wasm-unsafe-eval" in r.headers["Content-Security-Policy"]
            deadline = time.monotonic() + 60
            status: dict = {}
            while time.monotonic() < deadline:
                assert not task.done(), task.result()
                async with http.get(url + "api/status") as r:
                    status = validate_status(await r.json())
                vol = status["counters"].get("volunteer", {})
                if vol.get("accepted", 0) >= 2:
                    break
                await asyncio.sleep(0.5)
    finally:
        node.stop()
        await task
        if before:
            blas.set_threads(before)
    vol, refused = status["counters"]["volunteer"], status["rejections"]["volunteer"]
    assert vol["accepted"] >= 1, (vol, refused, (tmp_path / "chromium.log").read_text()[-2000:])
    assert vol["spot_checks"] >= 1 and refused["spot_check_mismatch"] == 0, refused
    assert vol["clients"] == 1 and vol["merged_images"] >= 256
    # merged into the model: its age counts the volunteers' images beside its own
    assert node.learner.age >= node.learner.trainer.images + 256
    trained = evaluate(node.learner.net, data.x_test, data.y_test)["accuracy"]
    assert trained > untrained + 0.2, (untrained, trained)  # the merged model still learns: 2,000 images
