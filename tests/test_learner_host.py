"""The learner host keeps the daemon alive whatever a peer's snapshot trips in the learner."""

from __future__ import annotations

from gossipnet import exchange
from gossipnet.checkpoint import CheckpointStore
from gossipnet.learner_host import LearnerHost
from gossipnet.learners.base import AbsorbResult
from gossipnet.learners.stand_in import SimLearner
from gossipnet.status.history import MetricsHistory


class Tripping(SimLearner):
    def absorb(self, snapshot, peer):
        raise ValueError("could not broadcast input array from shape (3,256) into shape (10,256)")


def test_an_exception_inside_absorb_is_a_counted_refusal_not_a_crash(tmp_path):
    publisher, receiver = SimLearner(), Tripping()
    host = LearnerHost(receiver, MetricsHistory(), CheckpointStore(tmp_path), train_chunk=1,
                       eval_interval=60.0, publish_interval=5.0, checkpoint_interval=60.0)
    offer = exchange.publish(publisher.snapshot(), publisher.wire, publisher.step)
    gate = exchange.Gate(receiver.kind, receiver.offer_shapes())
    assert gate.check(offer.manifest) is None
    result = host.absorb(gate, exchange.Download.whole(offer.manifest, offer.data), "peer-1")
    assert isinstance(result, AbsorbResult) and not result.accepted
    assert result.reason == "absorb_failed" and "broadcast" in result.detail
