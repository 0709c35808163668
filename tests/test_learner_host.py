"""The learner host keeps the daemon alive whatever a peer's snapshot trips in the learner."""

from __future__ import annotations

import numpy as np

from gossipnet import exchange
from gossipnet.checkpoint import CheckpointStore
from gossipnet.learner_host import LearnerHost
from gossipnet.learners.base import AbsorbResult, LearnerWire
from gossipnet.learners.stand_in import SimLearner
from gossipnet.status.history import MetricsHistory


def host_of(learner, tmp_path, clock=None, *, eval_interval=1e9, publish_interval=5.0,
            checkpoint_interval=1e9) -> LearnerHost:
    """A host with one-step chunks, on a fake clock if given."""
    return LearnerHost(learner, MetricsHistory(), CheckpointStore(tmp_path), train_chunk=1,
                       eval_interval=eval_interval, publish_interval=publish_interval,
                       checkpoint_interval=checkpoint_interval,
                       **({"clock": lambda: clock[0]} if clock is not None else {}))


class Tripping(SimLearner):
    def absorb(self, snapshot, peer):
        raise ValueError("could not broadcast input array from shape (3,256) into shape (10,256)")


def test_an_exception_inside_absorb_is_a_counted_refusal_not_a_crash(tmp_path):
    publisher, receiver = SimLearner(), Tripping()
    host = host_of(receiver, tmp_path)
    offer = exchange.publish(publisher.snapshot(), publisher.wire, publisher.step)
    gate = exchange.Gate(receiver.kind, receiver.offer_shapes())
    assert gate.check(offer.manifest) is None
    result = host.absorb(gate, exchange.Download.whole(offer.manifest, offer.data), "peer-1")
    assert isinstance(result, AbsorbResult) and not result.accepted
    assert result.reason == "absorb_failed" and "broadcast" in result.detail


class Counting(SimLearner):
    """Counts what the host asks of it: snapshots (one per encoded offer) and visuals."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = self.drawn = 0

    def snapshot(self):
        self.snapshots += 1
        return super().snapshot()

    def visuals(self):
        self.drawn += 1
        return {"step": self.step}


def test_offers_are_encoded_only_when_someone_could_pull_them_and_the_model_moved(tmp_path):
    """A lone node encoded and hashed its snapshot every few seconds for nobody (issue 17)."""
    clock = [0.0]
    learner = Counting()
    host = host_of(learner, tmp_path, clock)
    host.restore()
    host.record(peers=0)  # as the node does after every chunk
    assert host.shelf.newest().manifest.step == 0 and learner.snapshots == 1

    def chunk(train=True, peers=0, dt=6.0):
        clock[0] += dt
        host.work(train, dict)
        host.record(peers=peers)

    for _ in range(3):  # alone: due every chunk, never encoded
        chunk()
    assert learner.snapshots == 1 and host.shelf.newest().manifest.step == 0
    chunk(peers=1)  # a peer arrived during this chunk ...
    chunk(dt=0.1)  # ... so the next chunk offers the current model, before the interval is up
    assert host.shelf.newest().manifest.step == 5 and learner.snapshots == 2
    chunk(train=False, peers=1)  # due, but nothing moved: the old offer stands
    assert learner.snapshots == 2
    chunk(peers=1)
    assert host.shelf.newest().manifest.step == 6 and learner.snapshots == 3
    # a merge moves the model without a step: offered again
    offer = exchange.publish(SimLearner().snapshot(), learner.wire, 0)
    gate = exchange.Gate(learner.kind, learner.offer_shapes())
    assert host.absorb(gate, exchange.Download.whole(offer.manifest, offer.data), "peer-1").accepted
    before = learner.snapshots
    chunk(train=False, peers=1, dt=0.1)
    assert learner.snapshots == before + 1

    # the pictures are drawn at restore and then only once someone has looked at them
    drawn = learner.drawn
    chunk(peers=1)
    assert learner.drawn == drawn
    assert host.visuals == {"step": 0}  # the status page reads them (as of restore) ...
    chunk(peers=1)
    assert learner.drawn == drawn + 1 and host.visuals == {"step": learner.step}  # ... so redrawn


def test_with_the_announcement_time_known_one_offer_is_encoded_just_before_each(tmp_path):
    clock = [0.0]
    learner = Counting()
    host = host_of(learner, tmp_path, clock, publish_interval=1.0)
    host.restore()
    published = learner.snapshots
    trained = learner.train

    def half_a_second(budget):  # each chunk takes 0.5 s (the host times it itself)
        clock[0] += 0.5
        return trained(budget)

    learner.train = half_a_second

    def chunk(announce_at):
        host.work(True, lambda: {})
        host.record(peers=2, announce_at=announce_at)

    host.record(peers=2, announce_at=10.0)
    for _ in range(16):  # up to t = 8.0: the announcement is further than two chunks away
        chunk(10.0)
    assert learner.snapshots == published  # the publish interval (1 s) passed 8 times: no offer
    chunk(10.0)  # t = 8.5, within two chunks of 10.0 ...
    chunk(10.0)  # t = 9.0: this chunk ends within two chunks of 10.0: offered
    assert learner.snapshots == published + 1
    step = host.shelf.newest().manifest.step
    for _ in range(2):
        chunk(10.0)  # the same announcement: no second offer
    assert learner.snapshots == published + 1
    for _ in range(7):
        chunk(15.0)  # the core announced and set its next time; t = 13.5: not yet
    assert learner.snapshots == published + 1
    chunk(15.0)
    assert learner.snapshots == published + 2 and host.shelf.newest().manifest.step > step


class Overflowing(SimLearner):
    """Its one weight leaves float16's range once its age passes 1 (a merge gone wrong)."""

    wire = LearnerWire(blob_kind="weights", dtype="float16", default_chunk=1, merge_event="merge")

    def snapshot(self):
        snap = super().snapshot()
        return type(snap)(snap.kind, snap.fingerprint, snap.age, {"w": np.array([self.age * 1e5], np.float32)})


def test_an_own_model_that_cannot_be_sent_is_rolled_back_not_a_crash(tmp_path):
    learner = Overflowing()
    host = host_of(learner, tmp_path)
    host.restore()  # age 0: offered, and remembered as the last good state
    assert host.checkpoint({}) and host.shelf.newest().manifest.age == 0
    learner.age = 3.0  # 3e5 > 65504: inf once cast to float16
    host.publish()
    assert host.keeper.counters["diverged"] == 1 and learner.age == 0.0  # rolled back
    assert host.shelf.newest().manifest.age == 0  # the last good offer stands
