"""One real daemon in a LAN-in-a-box host against faults of its own machine, in one life story:

a full disk (a 4 MiB tmpfs filled up) while it trains and serves; a restart whose newest
checkpoint holds NaN weights (it resumes from checkpoint.prev); a restart with another
--shards (new epoch, same weights); a second process on the same state directory (refused,
naming the first).
"""

import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from gossipnet.checkpoint import CheckpointStore, decode, encode
from tests.conftest import skip_or_fail
from tests.daemon_box import FAST_LEARNING, new_swarm_token, start_daemon, statuses, wait_until
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def small_disk():
    """A 4 MiB tmpfs: room for the node's files, and easy to fill."""
    path = Path(tempfile.mkdtemp(prefix="smalldisk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        path.rmdir()


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        try:
            for _ in range(64):  # at most 64 MiB: far more than the disk
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def status(lan):
    return statuses(lan, 0, [0])[0]


def checkpoint_counter(lan, name):
    st = status(lan)
    return st.get("counters", {}).get("checkpoint", {}).get(name, 0) if "node" in st else 0


def test_disk_full_nan_checkpoint_changed_shards_and_a_second_process(small_disk):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    state = small_disk / "node"
    token = new_swarm_token()
    args = [*FAST_LEARNING, "--checkpoint-interval", "1", "--no-mdns"]
    with LanBox(hosts=1) as lan:
        proc = start_daemon(lan, 0, state, token, *args)
        wait_until("a first checkpoint", lambda: checkpoint_counter(lan, "saved") >= 1, timeout=90)

        # 1. disk full: counted, retried, and the node trains and serves on
        filler = fill(small_disk)
        step0 = status(lan)["learner"]["step"]
        wait_until("a failed checkpoint write", lambda: checkpoint_counter(lan, "write_failures") >= 2, timeout=60)
        wait_until("training to go on", lambda: status(lan)["learner"]["step"] > step0, timeout=60)
        assert proc.returncode is None
        saved = checkpoint_counter(lan, "saved")
        filler.unlink()
        wait_until("a checkpoint once space is back", lambda: checkpoint_counter(lan, "saved") > saved, timeout=60)

        # 2. a second process on the same state directory is refused, naming the first
        second = start_daemon(lan, 0, state, token, *args, "--udp-port", "7947", "--http-port", "8081")
        assert second.wait(60) != 0
        assert f"pid {proc.pid}" in second.stderr() + second.stdout()

        proc.kill(signal.SIGTERM)
        assert proc.wait(60) == 0

        # 3. the newest checkpoint holds NaN weights (a diverged learner of an older version):
        #    the node resumes from checkpoint.prev instead of refusing to start
        store = CheckpointStore(state)
        good_step = decode(store.previous.read_bytes()).meta["step"]
        ckpt = decode(store.current.read_bytes())
        for k, v in ckpt.tensors.items():
            if k.startswith("learner/net.") and v.dtype.kind == "f":
                ckpt.tensors[k] = np.full_like(v, np.nan)
        store.current.write_bytes(encode(ckpt))
        proc = start_daemon(lan, 0, state, token, *args)
        wait_until("the restarted node", lambda: "node" in status(lan), timeout=90)
        assert status(lan)["learner"]["step"] >= good_step
        assert status(lan)["counters"]["checkpoint"].get("refused_on_start") == 1
        proc.kill(signal.SIGTERM)
        assert proc.wait(60) == 0

        # 4. restarted with another shard layout: same weights and age, a new epoch, no crash
        proc = start_daemon(lan, 0, state, token, *args, "--shards", "3", "--shard", "2")
        wait_until("training on the new shard", lambda: "node" in (s := status(lan))
                   and s["learner"]["step"] > good_step + 5, timeout=90)
        proc.kill(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "training data differs" in proc.stderr()


def test_demo_with_three_nodes_then_two_keeps_both_nodes_running(tmp_path):
    base = [sys.executable, "-m", "gossipnet.cli", "demo", "--dir", str(tmp_path), "--net", "tiny",
            "--gossip-interval", "1", "--eval-interval", "60"]
    first = subprocess.run([*base, "--nodes", "3", "--duration", "4"], capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run([*base, "--nodes", "2", "--duration", "4"], capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training data differs" in second.stderr
    assert "node failed" not in second.stderr
