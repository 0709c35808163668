"""Prometheus metrics for one node, read from its status document at scrape time.

Each node gets its own ``CollectorRegistry`` (several nodes share one process in
tests and in ``sim.py``, so the global default registry would mix them up), and
one custom collector that turns the current ``/api/status`` dict into metric
families. Nothing is updated on the hot path: the counters the node already
keeps are read when Prometheus asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gossipnet.status.schema import PEER_STATES, well_known

StatusFn = Callable[[], Mapping[str, Any]]


class StatusCollector(Collector):
    """Yields gossipnet_* families from ``status_fn()``, called once per scrape."""

    def __init__(self, status_fn: StatusFn) -> None:
        self._status_fn = status_fn

    def collect(self) -> Iterator[Metric]:
        s = self._status_fn()
        node, learner, counters = s["node"], s["learner"], s["counters"]
        metrics = learner["metrics"]

        info = GaugeMetricFamily("gossipnet_node_info", "Constant 1, labelled with who this node is.",
                                 labels=["node", "swarm", "learner", "version"])
        info.add_metric([node["id"], node["swarm"], learner["kind"], s["gossipnet_version"]], 1.0)
        yield info
        yield GaugeMetricFamily("gossipnet_uptime_seconds", "Seconds since this node started.",
                                value=node["uptime_s"])
        yield GaugeMetricFamily("gossipnet_incarnation", "Restart counter of this node.",
                                value=node["incarnation"])
        yield CounterMetricFamily("gossipnet_steps", "Training steps (batches or generations) so far.",
                                  value=learner["step"])

        for name, help_text in (
            ("images_per_s", "Training throughput in images per second."),
            ("env_steps_per_s", "Environment steps per second (neuroevolution)."),
            ("loss", "Latest training loss."),
        ):
            value = _number(well_known(metrics, name))
            if value is not None:
                yield GaugeMetricFamily(f"gossipnet_{name.replace('_per_s', '_per_second')}", help_text,
                                        value=value)

        accuracy = GaugeMetricFamily("gossipnet_accuracy", "Latest accuracy by split.", labels=["split"])
        for split in ("train", "test"):
            value = _number(well_known(metrics, f"{split}_accuracy"))
            if value is not None:
                accuracy.add_metric([split], value)
        if accuracy.samples:
            yield accuracy
        fitness = GaugeMetricFamily("gossipnet_fitness", "Latest population fitness.", labels=["stat"])
        for stat in ("best", "mean"):
            value = _number(well_known(metrics, f"{stat}_fitness"))
            if value is not None:
                fitness.add_metric([stat], value)
        if fitness.samples:
            yield fitness

        learner_metric = GaugeMetricFamily("gossipnet_learner_metric",
                                           "Every numeric metric the learner reports, by name.",
                                           labels=["name"])
        for name, value in sorted(metrics.items()):
            value = _number(value)
            if value is not None:
                learner_metric.add_metric([name], value)
        yield learner_metric

        peers = GaugeMetricFamily("gossipnet_peers", "Known peers by membership state.", labels=["state"])
        for state in PEER_STATES:
            peers.add_metric([state], float(sum(1 for p in s["peers"] if p["state"] == state)))
        yield peers

        yield _labelled_counter("gossipnet_exchanges", "Snapshot exchanges by action (sent, pulled, absorbed, ...).",
                                "action", counters.get("exchange", {}))
        rejections = CounterMetricFamily("gossipnet_rejections", "Rejected peer data by stage and reason.",
                                         labels=["stage", "reason"])
        for stage, group in s["rejections"].items():
            for reason, n in sorted(group.items()):
                rejections.add_metric([stage, reason], n)
        yield rejections
        messages = CounterMetricFamily("gossipnet_messages", "UDP messages by direction and type.",
                                       labels=["direction", "type"])
        for direction, group in (("in", "messages_in"), ("out", "messages_out")):
            for kind, n in sorted(counters.get(group, {}).items()):
                messages.add_metric([direction, kind], n)
        yield messages
        yield _labelled_counter("gossipnet_bytes", "Bytes received and sent, all planes.",
                                "direction", counters.get("bytes", {}))
        volunteer = counters.get("volunteer", {})
        if volunteer:
            now_values = ("clients", "images_per_s", "open_leases", "banned")
            yield _labelled_counter("gossipnet_volunteer", "Browser volunteers: leases, accepted and refused "
                                    "updates, spot checks, merged images.", "what",
                                    {k: v for k, v in volunteer.items() if k not in now_values})
            gauge = GaugeMetricFamily("gossipnet_volunteer_now", "Browser volunteers now: addresses seen in "
                                      "the last minute, their images/s, open leases, banned addresses.",
                                      labels=["what"])
            for k in now_values:
                gauge.add_metric([k], float(volunteer.get(k, 0)))
            yield gauge


def _labelled_counter(name: str, help_text: str, label: str, group: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, n in sorted(group.items()):
        family.add_metric([key], n)
    return family


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def make_registry(status_fn: StatusFn) -> CollectorRegistry:
    """A registry of its own for one node, holding only that node's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status_fn))
    return registry


def render_metrics(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its Content-Type, negotiated from the scraper's Accept header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
