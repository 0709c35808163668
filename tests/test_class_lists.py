"""Nodes agree on the class list before they merge: it is in the fingerprint and named when it differs."""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from gossipnet.data import load_dataset
from gossipnet.gossip import Gossip, GossipConfig, Manifest
from gossipnet.learners.base import Snapshot
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner


def test_a_manifest_for_another_class_list_is_skipped_as_other_classes_not_pulled():
    g = Gossip("weights", "fp-ours", GossipConfig(), random.Random(0))
    g.classes = "aaaa"
    theirs = Manifest("weights", "fp-theirs", 10.0, 1, b"\x01" * 32, 1000, "safetensors", 8001, "/blob/1",
                      {"dtype": "float32", "classes": "bbbb"})
    assert g.on_manifest("p1", ("10.0.0.1", 7946), theirs.to_body(), 0.0) is None
    other_net = dataclasses.replace(theirs, meta={"dtype": "float32", "classes": "aaaa"})
    assert g.on_manifest("p2", ("10.0.0.2", 7946), other_net.to_body(), 0.0) is None
    assert g.counters["skipped.other_classes"] == 1 and g.counters["skipped.other_fingerprint"] == 1


def test_learners_on_data_with_other_class_names_have_other_fingerprints_and_refuse_by_name():
    data = load_dataset("embedded")
    small = dataclasses.replace(data, x_train=data.x_train[:64], y_train=data.y_train[:64])
    renamed = dataclasses.replace(small, classes=tuple(f"digit {i}" for i in range(10)))  # MNIST-like names
    a = ConvnetLearner(small, config=ConvnetConfig(net="tiny"))
    b = ConvnetLearner(renamed, config=ConvnetConfig(net="tiny"))
    assert a.net.fingerprint == b.net.fingerprint  # the same net ...
    assert a.fingerprint != b.fingerprint and a.classes_digest != b.classes_digest  # ... other meanings
    snap = b.snapshot()
    before = {k: v.copy() for k, v in a.net.params().items()}
    result = a.absorb(snap, "peer-b")
    assert not result.accepted and result.reason == "other_classes"
    assert all(np.array_equal(before[k], v) for k, v in a.net.params().items())
    forged = Snapshot(snap.kind, a.fingerprint, snap.age, snap.tensors, {**snap.meta, "classes": a.classes_digest})
    assert a.absorb(forged, "peer-b").accepted  # the same list (and net) merges as before
