"""The volunteer routes over real HTTP: bodies of any size arrive whole or are refused as
too large, refusals are 4xx JSON with a reason, and only the two volunteer POSTs exist."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from gossipnet.data.loaders import load_dataset
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.net.volunteer_http import add_volunteer_routes
from gossipnet.nn import blas
from gossipnet.volunteers import TrainingSetup, VolunteerConfig, VolunteerDesk
from gossipnet.volunteers.scripted import honest_update, update_body

pytestmark = pytest.mark.timeout(120)


async def _run_heavy(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_a_fashion_sized_update_arrives_whole_and_bad_requests_get_reasons():
    blas.set_threads(1)
    learner = ConvnetLearner(load_dataset("embedded"), np.arange(2000), ConvnetConfig(net="fashion", seed=1))
    desk = VolunteerDesk(VolunteerConfig(spot_check_rate=1.0), TrainingSetup.of(learner), seed=1)
    desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), 10**6, 0.0)
    app = web.Application()
    add_volunteer_routes(app, desk, _run_heavy, clock=lambda: 1.0)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/volunteer") as r:
                assert r.status == 200 and "Content-Security-Policy" in r.headers
            async with http.get(base + "/volunteer/web/net.js") as r:
                assert r.status == 200 and r.content_type == "text/javascript"
            async with http.get(base + "/volunteer/web/..%2Fvolunteers%2Fdesk.py") as r:
                assert r.status == 404
            async with http.post(base + "/volunteer/lease") as r:
                doc = await r.json()
            async with http.get(base + doc["weights_url"]) as r:
                weights = await r.read()
            async with http.get(base + doc["images_url"]) as r:
                images = await r.read()
            delta, loss = honest_update(doc, weights, images)
            body = update_body(doc, delta, loss)
            assert len(body) > 1_000_000  # fashion: 420k parameters, many TCP reads
            async with http.post(base + "/volunteer/update", data=body) as r:
                out = await r.json()
                assert r.status == 200 and out["accepted"] and out["spot_checked"], out
            async with http.post(base + "/volunteer/update", data=body) as r:
                assert r.status == 409 and (await r.json())["reason"] == "replayed"
            async with http.post(base + "/volunteer/update", data=b"\0" * (desk.max_update_bytes + 10)) as r:
                assert r.status == 413 and (await r.json())["reason"] == "too_large"

            async def chunks():  # no Content-Length: the limit holds while reading
                for _ in range(desk.max_update_bytes // 65536 + 2):
                    yield b"\0" * 65536
            async with http.post(base + "/volunteer/update", data=chunks()) as r:
                assert r.status == 413
            async with http.get(base + "/volunteer/images/" + "A" * 32) as r:
                assert r.status == 403 and (await r.json())["reason"] == "forged_lease"
            async with http.get(base + "/volunteer/weights/999") as r:
                assert r.status == 409
        assert desk.refused == {"replayed": 1, "too_large": 2, "forged_lease": 1, "stale_base": 1}
    finally:
        await runner.cleanup()
