"""A node's state against faults: full disks, NaN weights, refused checkpoints, changed data, two processes."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gossipnet.checkpoint import Checkpoint, CheckpointStore
from gossipnet.config import build_config
from gossipnet.data import load_dataset
from gossipnet.errors import UserError
from gossipnet.fsutil import atomic_write_bytes
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.node import Node
from gossipnet.nn.train import Diverged
from gossipnet.persistence import StateKeeper, non_finite
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import claim_state_dir, load_or_create_identity, next_incarnation
from tests.daemon_box import new_swarm_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data():
    return load_dataset("embedded")


def learner(data, indices=None, seed=0, name=None):
    idx = np.arange(200) if indices is None else indices
    return ConvnetLearner(data, idx, ConvnetConfig(net="tiny", seed=seed, eval_images=50))


def poison(lrn: ConvnetLearner) -> None:
    for p in lrn.net.params().values():
        p[...] = np.nan


class FlakyStore(CheckpointStore):
    """A store whose disk is full until ``heal()``."""

    def __init__(self, d):
        super().__init__(d)
        self.full = True

    def save(self, ckpt):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().save(ckpt)


def test_a_full_disk_is_counted_and_retried_with_backoff(tmp_path, data):
    store = FlakyStore(tmp_path)
    keeper = StateKeeper(store, interval=60.0)
    lrn = learner(data)
    assert not keeper.save(lrn, {}, {}, now=100.0)
    first = keeper.next_due - 100.0
    assert not keeper.save(lrn, {}, {}, now=keeper.next_due)
    assert keeper.counters["write_failures"] == 2 and first == 5.0
    assert keeper.next_due - (100.0 + first) == 10.0  # doubled
    store.full = False
    assert keeper.save(lrn, {}, {}, now=200.0) and keeper.next_due == 260.0
    assert store.load() is not None


def test_a_non_finite_state_is_never_saved_and_rolls_back(tmp_path, data):
    store = CheckpointStore(tmp_path)
    keeper = StateKeeper(store, interval=60.0)
    lrn = learner(data)
    keeper.restore(lrn)  # fresh: the initial weights are the good state
    lrn.train(2)
    assert keeper.save(lrn, {}, {}, 0.0)
    good = {k: v.copy() for k, v in lrn.net.params().items()}
    saved = store.current.read_bytes()
    poison(lrn)
    assert not keeper.save(lrn, {}, {}, 1.0)
    assert store.current.read_bytes() == saved
    assert keeper.counters["non_finite_not_saved"] == 1 and keeper.counters["rollbacks"] == 1
    assert all(np.array_equal(good[k], v) for k, v in lrn.net.params().items())


def test_restart_falls_back_to_prev_when_the_newest_checkpoint_is_refused(tmp_path, data):
    store = CheckpointStore(tmp_path)
    lrn = learner(data)
    lrn.train(3)
    state = lrn.state_dict()
    store.save(Checkpoint({f"learner/{k}": v for k, v in state.items()}, {}))
    bad = {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v) for k, v in state.items()}
    store.save(Checkpoint({f"learner/{k}": v for k, v in bad.items()}, {}))  # written by an old version
    fresh = learner(data)
    ckpt = StateKeeper(store, 60.0).restore(fresh)
    assert ckpt is not None and ckpt.meta["recovered_from"] == str(store.previous)
    assert fresh.step == 3 and not non_finite(fresh.state_dict())
    # both refused: an error that names the files, never a silent fresh start
    os.replace(store.current, store.previous)
    store.save(Checkpoint({f"learner/{k}": v for k, v in bad.items()}, {}))
    with pytest.raises(UserError, match="no usable checkpoint"):
        StateKeeper(store, 60.0).restore(learner(data))


def test_changed_shard_keeps_weights_and_age_and_starts_a_new_epoch(data, caplog):
    old = learner(data, np.arange(300))
    old.train(5)  # mid-epoch
    state = old.state_dict()
    new = learner(data, np.arange(300, 500))  # another shard, another size
    new.load_state_dict(state)
    assert "training data differs" in caplog.text
    assert new.age == old.age and new.trainer.position == 0
    assert all(np.array_equal(a, b) for a, b in zip(new.net.params().values(), old.net.params().values()))
    new.train(2)  # no "changed size mid-epoch" crash
    same = learner(data, np.arange(300))
    same.load_state_dict(state)
    assert same.trainer.position == old.trainer.position  # same data: exact resume


def test_the_checkpoint_seed_does_not_override_ours(data, caplog):
    old = learner(data, seed=7)
    old.train(2)
    new = learner(data, seed=8)
    new.load_state_dict(old.state_dict())
    assert new.trainer.seed == 8 and "keeping 8" in caplog.text


def test_a_divergence_while_training_rolls_back_and_the_node_keeps_going(tmp_path, data):
    class Diverging(ConvnetLearner):
        calls = 0

        def train(self, budget):
            Diverging.calls += 1
            if Diverging.calls == 3:
                poison(self)
                raise Diverged("training diverged (loss is NaN or infinite)")
            return super().train(budget)

    cfg = build_config({}, {"state_dir": str(tmp_path / "n"), "host": "127.0.0.1", "interface": "127.0.0.1",
                            "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
                            "train_chunk": 1, "eval_interval": 600.0, "checkpoint_interval": 600.0})
    ident = load_or_create_identity(cfg.state_dir)
    creds = load_credentials(ident, int(time.time() * 1000), swarm_token=new_swarm_token())
    node = Node(cfg, Diverging(data, np.arange(200), ConvnetConfig(net="tiny")), ident, creds, incarnation=1)

    async def go():
        task = asyncio.create_task(node.run())
        deadline = time.monotonic() + 60
        while Diverging.calls < 6:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        node.stop()
        await task

    asyncio.run(go())
    assert node.host.keeper.counters["diverged"] == 1 and node.host.keeper.counters["rollbacks"] == 1
    assert node.learner.trainer.epoch >= 1  # moved on to a new order, not the same batches again
    assert not non_finite(node.learner.state_dict())
    assert node.status()["counters"]["checkpoint"]["diverged"] == 1
    assert CheckpointStore(cfg.state_dir).load() is not None  # the final checkpoint is finite


def test_a_second_process_on_one_state_dir_is_refused_naming_the_first(tmp_path):
    lock = claim_state_dir(tmp_path)
    try:
        code = ("import sys; from gossipnet.trust.identity import claim_state_dir\n"
                "from gossipnet.errors import UserError\n"
                f"try: claim_state_dir({str(tmp_path)!r})\n"
                "except UserError as e: print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert out.returncode == 3 and f"pid {os.getpid()}" in out.stdout
    finally:
        lock.release()
    claim_state_dir(tmp_path).release()  # free again once released


def test_temp_files_left_by_a_crash_are_removed_on_start(tmp_path):
    atomic_write_bytes(tmp_path / "checkpoint.safetensors", b"x")
    stale = tmp_path / ".checkpoint.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    (tmp_path / "swarm").mkdir()
    (tmp_path / "swarm" / ".swarm.key.zz.tmp").write_bytes(b"half")
    claim_state_dir(tmp_path).release()
    assert not stale.exists() and not (tmp_path / "swarm" / ".swarm.key.zz.tmp").exists()
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == b"x"


def test_an_incarnation_raised_by_refutation_survives_a_restart(tmp_path):
    from gossipnet.trust.identity import save_incarnation

    first = next_incarnation(tmp_path, 1000)
    save_incarnation(tmp_path, first + 10**9)  # what the node does after refuting a rumour
    assert next_incarnation(tmp_path, 2000) == first + 10**9 + 1


def test_a_running_node_persists_the_incarnation_its_refutation_raised(tmp_path, data):
    from gossipnet.membership.codec import Update, encode_update
    from gossipnet.membership.types import State
    from gossipnet.trust.identity import INCARNATION_FILE
    from gossipnet.wire.types import MsgType

    cfg = build_config({}, {"state_dir": str(tmp_path / "n"), "host": "127.0.0.1", "interface": "127.0.0.1",
                            "udp_port": 0, "http_port": 0, "mdns": False, "preset": "local",
                            "train_chunk": 1, "eval_interval": 600.0, "checkpoint_interval": 600.0})
    ident = load_or_create_identity(cfg.state_dir)
    creds = load_credentials(ident, int(time.time() * 1000), swarm_token=new_swarm_token())
    start = next_incarnation(cfg.state_dir, 1000)
    node = Node(cfg, learner(data), ident, creds, incarnation=start)
    path = tmp_path / "n" / INCARNATION_FILE

    async def go():
        task = asyncio.create_task(node.run())
        await asyncio.wait_for(node.ready.wait(), 30)
        # a peer's rumour that we are suspect: membership refutes it with a higher incarnation
        rumour = {"u": [encode_update(Update(State.SUSPECT, node.node_id, start, origin="bbbbbbbbbbbbbbbb"))]}
        node.core.membership.handle("aaaaaaaaaaaaaaaa", ("127.0.0.1", 9), MsgType.GOSSIP, rumour, time.monotonic())
        assert node.core.membership.incarnation > start
        deadline = time.monotonic() + 30
        while int(path.read_text()) <= start:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        node.stop()
        await task

    asyncio.run(go())
    assert next_incarnation(cfg.state_dir, 1000) > node.core.membership.incarnation
