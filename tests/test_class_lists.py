"""Nodes agree on the class list before they merge: it is in the fingerprint and named when it differs."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from gossipnet import exchange
from gossipnet.data import load_dataset
from gossipnet.gossip import Gossip, GossipConfig, Skip
from gossipnet.learners.base import Snapshot
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner


@pytest.fixture(scope="module")
def two_learners():
    """The same net on the same pictures, once under other class names (as MNIST's digits)."""
    data = load_dataset("embedded")
    small = dataclasses.replace(data, x_train=data.x_train[:64], y_train=data.y_train[:64])
    renamed = dataclasses.replace(small, classes=tuple(f"digit {i}" for i in range(10)))
    return (ConvnetLearner(small, config=ConvnetConfig(net="tiny")),
            ConvnetLearner(renamed, config=ConvnetConfig(net="tiny")))


def test_learners_on_data_with_other_class_names_have_other_fingerprints_and_refuse_by_name(two_learners):
    a, b = two_learners
    assert a.net.fingerprint == b.net.fingerprint  # the same net ...
    assert a.fingerprint != b.fingerprint and a.classes_digest != b.classes_digest  # ... other meanings
    snap = b.snapshot()
    before = {k: v.copy() for k, v in a.net.params().items()}
    result = a.absorb(snap, "peer-b")
    assert not result.accepted and result.reason == "other_classes"
    assert all(np.array_equal(before[k], v) for k, v in a.net.params().items())
    same = Snapshot(snap.kind, a.fingerprint, snap.age, snap.tensors, {**snap.meta, "classes": a.classes_digest})
    assert a.absorb(same, "peer-b").accepted  # the same list (and net) merges as before


def test_gossip_skips_a_manifest_of_another_class_list_as_other_classes(two_learners):
    a, b = two_learners
    g = Gossip(a.wire.blob_kind, a.fingerprint, GossipConfig(), random.Random(0))
    g.classes = a.classes_digest
    offer = exchange.publish(b.snapshot(), b.wire, b.step)
    assert g.wants("peer-b", offer.manifest, 0.0) is Skip.OTHER_CLASSES
    unlabelled = dataclasses.replace(offer.manifest, meta={})  # a peer that does not say: the old reason
    assert g.wants("peer-c", unlabelled, 0.0) is Skip.OTHER_FINGERPRINT
    assert g.counters["skipped.other_classes"] == 1 and g.counters["skipped.other_fingerprint"] == 1
