"""The node's HTML status page, rendered from its status document.

One self-contained page: no external assets (the LAN may have no internet), a
viewport meta tag and a narrow single-column layout so it reads on a phone.
The progress image reloads itself every few seconds through a tiny inline
script with a cache-busting query; the whole page reloads less often so the
tables stay current, and also works with scripts disabled.

Everything that comes from a peer or from configuration goes through
``html.escape``: node ids, addresses and reasons are untrusted text.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from html import escape
from typing import Any

PNG_PATH = "/progress.png"
IMAGE_REFRESH_S = 3
PAGE_REFRESH_S = 30

# The one inline script; its hash goes into the Content-Security-Policy so no
# other script (say, one smuggled in a peer's id) could ever run.
SCRIPT = (
    "setInterval(function(){var i=document.getElementById('progress');"
    f"i.src='{PNG_PATH}?t='+Date.now();}},{IMAGE_REFRESH_S * 1000});"
)
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'"
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:0.8em;max-width:62em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0.2em 0}h2{font-size:1.05em;margin:1.2em 0 0.4em}
table{border-collapse:collapse;width:100%;font-size:0.9em}
td,th{text-align:left;padding:0.25em 0.5em;border-bottom:1px solid #ddd;overflow-wrap:anywhere}
.kv td:first-child{color:#666;width:11em}
img{width:100%;height:auto;border:1px solid #ddd;background:#fff}
.alive{color:#1a7f37}.suspect{color:#b58900}.dead,.left{color:#c62828}
.muted{color:#777}
"""


def render_page(status: Mapping[str, Any]) -> str:
    """The whole HTML document for a (valid) status dict."""
    node, learner = status["node"], status["learner"]
    now = float(status["now"])
    title = f"gossipnet {node['id']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH_S}">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _overview(status, now),
        "<h2>Progress</h2>",
        f'<a href="{PNG_PATH}"><img id="progress" src="{PNG_PATH}" '
        f'alt="training progress of {escape(node["id"])}"></a>',
        "<h2>Metrics</h2>",
        _metrics(learner["metrics"]),
        f"<h2>Peers ({len(status['peers'])})</h2>",
        _peers(status["peers"], now),
        "<h2>Exchanges</h2>",
        _counters(status["counters"], status["rejections"]),
        _model_section(learner),
        '<p class="muted">JSON: <a href="/api/status">/api/status</a> &middot; '
        'Prometheus: <a href="/metrics">/metrics</a></p>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _overview(status: Mapping[str, Any], now: float) -> str:
    node, learner = status["node"], status["learner"]
    rows = [
        ("node", node["id"]),
        ("swarm", node["swarm"]),
        ("learner", f"{learner['kind']} ({learner['fingerprint'][:16]})"),
        ("uptime", format_duration(node["uptime_s"])),
        ("step", str(learner["step"]) + ("" if learner["epoch"] is None else f" (epoch {learner['epoch']:.2f})")),
        ("incarnation", str(node["incarnation"])),
    ]
    rows += [(f"{k} address", v) for k, v in sorted(node["addresses"].items())]
    merge = status["last_merge"]
    if merge is not None:
        outcome = "accepted" if merge["accepted"] else f"rejected ({merge['reason']})"
        rows.append(("last merge", f"{format_ago(now - merge['at'])} with {merge['peer']}, {outcome}"))
    else:
        rows.append(("last merge", "none yet"))
    return _kv_table(rows)


def _metrics(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return '<p class="muted">no metrics yet</p>'
    return _kv_table([(k, _fmt(v)) for k, v in sorted(metrics.items())])


def _peers(peers: list[Mapping[str, Any]], now: float) -> str:
    if not peers:
        return '<p class="muted">no peers known yet</p>'
    rows = ["<table><tr><th>node</th><th>address</th><th>state</th><th>last exchange</th></tr>"]
    order = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
    for p in sorted(peers, key=lambda p: (order.get(p["state"], 9), p["node_id"])):
        node = escape(p["node_id"])
        if p["http_url"] and p["http_url"].startswith(("http://", "https://")):
            node = f'<a href="{escape(p["http_url"])}">{node}</a>'
        last = "never" if p["last_exchange"] is None else format_ago(now - p["last_exchange"])
        state = escape(p["state"])
        rows.append(f'<tr><td>{node}</td><td>{escape(p["address"])}</td>'
                    f'<td class="{state}">{state}</td><td>{escape(last)}</td></tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _counters(counters: Mapping[str, Mapping[str, int]], rejections: Mapping[str, Mapping[str, int]]) -> str:
    exchange = counters.get("exchange", {})
    rows = [(k, str(exchange.get(k, 0))) for k in ("sent", "pulled", "absorbed")]
    rows += [(k, str(v)) for k, v in sorted(exchange.items()) if k not in ("sent", "pulled", "absorbed")]
    for stage, items in rejections.items():  # in the order data meets the stages: udp, wire, gate, ...
        text = ", ".join(f"{k}: {v}" for k, v in sorted(items.items()) if v) or "none"
        rows.append((f"rejected ({stage})", text))
    volunteer = counters.get("volunteer")
    if volunteer:  # refusals are in rejections, stage "volunteer"
        rows.append(("volunteers (/volunteer)",
                     f"{volunteer.get('clients', 0)} browsers, {volunteer.get('images_per_s', 0)} images/s, "
                     f"{volunteer.get('accepted', 0)} accepted, {volunteer.get('spot_checks', 0)} spot checks"))
    traffic = counters.get("bytes", {})
    if traffic:
        rows.append(("bytes in / out", f"{traffic.get('in', 0):,} / {traffic.get('out', 0):,}"))
    return _kv_table(rows)


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """3725 -> '1h 2m 5s': uptimes are read by people, not parsed."""
    s = int(max(0.0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(h or d) + [f"{m}m"] * bool(m or h or d) + [f"{s}s"]
    return " ".join(parts)


def format_ago(seconds: float) -> str:
    """Seconds in the past as '12s ago'; clock skew between nodes can make it negative."""
    return "just now" if seconds < 1 else f"{format_duration(seconds)} ago"



def _model_section(learner: Mapping[str, Any]) -> str:
    """Downloads and the "try an image" form (no script: a plain form post, see net/model_http.py)."""
    if learner["kind"] != "convnet":
        return ""
    return (
        "<h2>Model</h2>"
        '<p>Download the current model: <a href="/model.onnx" download>ONNX</a> &middot; '
        '<a href="/model.safetensors" download>safetensors</a> '
        '<span class="muted">(use it with <code>gossipnet predict</code> or any ONNX runtime)</span></p>'
        '<form method="post" action="/classify" enctype="multipart/form-data">'
        '<label>Try an image: <input type="file" name="image" accept="image/*" required></label> '
        "<button>Classify</button></form>"
    )


def render_classification(filename: str, predictions: list[Mapping[str, Any]]) -> str:
    """The answer page of the "try an image" box: the best labels with their probabilities."""
    rows = "".join(f"<tr><td>{escape(str(p['label']))}</td><td>{float(p['probability']):.1%}</td></tr>"
                   for p in predictions)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gossipnet: {escape(filename)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(filename)}</h1>",
        f"<table><tr><th>label</th><th>probability</th></tr>{rows}</table>",
        '<p><a href="/">back to the status page</a></p>',
        "</body></html>",
    ])
