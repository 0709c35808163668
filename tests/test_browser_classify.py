"""A real browser uses the "try an image" box: headless Chromium, driven over its DevTools protocol,
picks a file in the page's form, submits it, and reads the answer page."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass

import aiohttp
import pytest

from gossipnet.data import load_dataset
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.model import TrainedModel
from gossipnet.net.http import StatusServer
from gossipnet.status.demo import DemoProvider
from tests.chromium import browser
from tests.image_folders import write_folder

pytestmark = pytest.mark.timeout(120)


@dataclass
class ModelProvider(DemoProvider):
    current: TrainedModel | None = None

    def model(self) -> TrainedModel | None:
        return self.current


class DevTools:
    """The few DevTools calls this test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.ids, self.events = ws, itertools.count(1), []

    async def call(self, method: str, **params):
        my_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=30)).data)
            if msg.get("id") == my_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg.get("method"))

    async def wait_event(self, method: str) -> None:
        while method not in self.events:
            msg = json.loads((await self.ws.receive(timeout=30)).data)
            self.events.append(msg.get("method"))
        self.events.remove(method)

    async def text(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"]["value"]


async def test_chromium_uploads_a_picture_through_the_form_and_sees_the_top_label(tmp_path):
    root = write_folder(tmp_path / "pics", n=12, seed=6)
    data = load_dataset("folder", root, image_size=16, color_mode="grayscale")
    learner = ConvnetLearner(data, config=ConvnetConfig(net="tiny"))
    learner.train(30)
    model = learner.model()
    picture = sorted((root / "left").iterdir())[2]
    best = model.top_k(model.probabilities(model.decode(picture)[None])[0], 1)[0]["label"]
    server = StatusServer(ModelProvider(node_id="browser-model", current=model))
    await server.start("127.0.0.1", 0)
    profile = tmp_path / "profile"
    devtools = ("--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")
    try:
        async with browser("about:blank", flags=devtools, profile=str(profile)):
            port_file = profile / "DevToolsActivePort"
            for _ in range(300):  # up to 30 s for Chromium to start
                if port_file.exists() and port_file.read_text().count("\n") >= 1:
                    break
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    page = next(t for t in await r.json() if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    dt = DevTools(ws)
                    await dt.call("Page.enable")
                    await dt.call("Page.navigate", url=server.url)
                    await dt.wait_event("Page.loadEventFired")
                    doc = await dt.call("DOM.getDocument")
                    node = await dt.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="input[type=file]")
                    await dt.call("DOM.setFileInputFiles", files=[str(picture)], nodeId=node["nodeId"])
                    await dt.call("Runtime.evaluate", expression="document.querySelector('form button').click()")
                    await dt.wait_event("Page.loadEventFired")
                    title = await dt.text("document.querySelector('h1').textContent")
                    first_label = await dt.text("document.querySelector('table td').textContent")
    finally:
        await server.stop()
    assert title == picture.name  # the browser sent the file's name and bytes as a form upload
    assert first_label == best
    assert server.models.classified == 1
