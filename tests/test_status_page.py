"""The HTML page: links the PNG, lists peers and counters, escapes everything peer-provided."""

import base64
import hashlib
import re

from gossipnet.status.page import CONTENT_SECURITY_POLICY, SCRIPT, format_duration, render_page
from gossipnet.status.schema import build_status

EVIL = '<script>alert("x")</script>'


def status(**kw):
    args = dict(
        node_id="node-<a>", swarm="swarm&co", kind="convnet", fingerprint="f" * 32, started_at=0.0, now=3725.0,
        step=77, metrics={"loss": 0.25, "test_accuracy": 0.9},
        counters={"exchange": {"sent": 11, "pulled": 9, "absorbed": 8}},
        rejections={"wire": {"bad_signature": 5, EVIL: 1}, "learner": {"shape_mismatch": 2}},
        peers=[{"node_id": EVIL, "address": "10.0.0.9:1", "state": "suspect", "incarnation": 1,
                "last_exchange": 3700.0, "http_url": "javascript:alert(1)"},
               {"node_id": "node-b", "address": "10.0.0.2:7946", "state": "alive", "incarnation": 0,
                "last_exchange": None, "http_url": "http://10.0.0.2:8730/"}],
        last_merge={"at": 3715.0, "peer": "node-b", "accepted": True, "reason": "ok"},
    )
    args.update(kw)
    return build_status(**args)


def test_the_page_links_the_png_and_lists_peers_and_counters():
    html = render_page(status())
    assert '<img id="progress" src="/progress.png"' in html
    assert "node-b" in html and "suspect" in html and "alive" in html
    assert '<a href="http://10.0.0.2:8730/">node-b</a>' in html
    assert "1h 2m 5s" in html and "77" in html and "0.25" in html
    for counter in ("sent", "pulled", "absorbed", "shape_mismatch: 2", "bad_signature: 5", "10s ago"):
        assert counter in html


def test_peer_provided_text_is_escaped_and_no_unsafe_links_are_made():
    html = render_page(status())
    assert EVIL not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "node-&lt;a&gt;" in html and "swarm&amp;co" in html
    assert "javascript:" not in html
    # the only script is the page's own
    assert re.findall(r"<script>(.*?)</script>", html, re.S) == [SCRIPT]


def test_the_page_is_self_contained_phone_friendly_and_refreshes_itself():
    html = render_page(status())
    assert 'name="viewport"' in html and 'http-equiv="refresh"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html.replace('href="http://10.0.0.2:8730/"', ""))
    assert "/progress.png?t=" in SCRIPT
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY


def test_a_fresh_node_page_says_so():
    html = render_page(status(peers=[], counters={}, metrics={}, last_merge=None))
    assert "no peers known yet" in html and "no metrics yet" in html and "none yet" in html


def test_durations_read_naturally():
    assert format_duration(5) == "5s"
    assert format_duration(65) == "1m 5s"
    assert format_duration(90061) == "1d 1h 1m 1s"
