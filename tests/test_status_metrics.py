"""/metrics text: parses as Prometheus exposition and carries the node's counters."""

from prometheus_client.parser import text_string_to_metric_families

from gossipnet.status.metrics import make_registry, render_metrics
from gossipnet.status.schema import build_status


def status(metrics, counters, peers, rejections=None):
    return build_status(node_id="n1", swarm="s", kind="convnet", fingerprint="f", started_at=0.0, now=10.0,
                        step=123, metrics=metrics, counters=counters, peers=peers, rejections=rejections)


def scrape(doc):
    body, content_type = render_metrics(make_registry(lambda: doc))
    assert content_type.startswith("text/plain") and "version=" in content_type
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


PEERS = [{"node_id": f"p{i}", "state": state} for i, state in enumerate(["alive", "alive", "suspect", "dead"])]
COUNTERS = {
    "exchange": {"sent": 7, "pulled": 5, "absorbed": 4},
    "messages_in": {"PING": 10, "MANIFEST": 4},
    "messages_out": {"ACK": 10},
    "bytes": {"in": 1000, "out": 2500},
}
REJECTIONS = {"udp": {"queue_full": 9, "oversize": 0}, "wire": {"bad_signature": 3, "replayed": 2},
              "learner": {"bad_shape": 1}}


def test_a_convnet_nodes_metrics_carry_every_counter():
    m = scrape(status({"loss": 0.7, "train_accuracy": 0.6, "test_accuracy": 0.55, "images_per_s": 1800.0},
                      COUNTERS, PEERS, REJECTIONS))
    assert m[("gossipnet_steps_total", ())] == 123
    assert m[("gossipnet_images_per_second", ())] == 1800.0
    assert m[("gossipnet_loss", ())] == 0.7
    assert m[("gossipnet_accuracy", (("split", "test"),))] == 0.55
    assert m[("gossipnet_peers", (("state", "alive"),))] == 2
    assert m[("gossipnet_peers", (("state", "suspect"),))] == 1
    assert m[("gossipnet_peers", (("state", "dead"),))] == 1
    assert m[("gossipnet_exchanges_total", (("action", "absorbed"),))] == 4
    assert m[("gossipnet_rejections_total", (("reason", "replayed"), ("stage", "wire")))] == 2
    assert m[("gossipnet_rejections_total", (("reason", "bad_shape"), ("stage", "learner")))] == 1
    assert m[("gossipnet_rejections_total", (("reason", "queue_full"), ("stage", "udp")))] == 9
    assert m[("gossipnet_rejections_total", (("reason", "oversize"), ("stage", "udp")))] == 0  # rate() from 0
    assert m[("gossipnet_messages_total", (("direction", "in"), ("type", "MANIFEST")))] == 4
    assert m[("gossipnet_bytes_total", (("direction", "out"),))] == 2500
    assert m[("gossipnet_node_info", (("learner", "convnet"), ("node", "n1"), ("swarm", "s"),
                                      ("version", "0.1.0")))] == 1
    assert all(name.startswith("gossipnet_") for name, _ in m)


def test_an_islands_metrics_report_fitness_and_no_accuracy():
    m = scrape(status({"best_fitness": 200.0, "mean_fitness": 120.5}, {}, []))
    assert m[("gossipnet_fitness", (("stat", "best"),))] == 200.0
    assert m[("gossipnet_fitness", (("stat", "mean"),))] == 120.5
    assert not any(name == "gossipnet_accuracy" for name, _ in m)


def test_hostile_label_values_are_escaped_and_still_parse():
    m = scrape(status({}, {}, [], {"wire": {'bad"reason\n{x="1"}': 1}}))
    assert m[("gossipnet_rejections_total", (("reason", 'bad"reason\n{x="1"}'), ("stage", "wire")))] == 1


def test_each_node_has_its_own_registry():
    a = scrape(status({"loss": 1.0}, {}, []))
    b = scrape(status({"loss": 2.0}, {}, []))
    assert a[("gossipnet_loss", ())] == 1.0 and b[("gossipnet_loss", ())] == 2.0
