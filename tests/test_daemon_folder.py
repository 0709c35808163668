"""Daemons in a LAN in a box train on one image folder and merge; another class list is refused.

Hosts 0 and 1 run `daemon.py --dataset folder` on the same folder (a share both machines
mount); host 2 runs on a folder whose class names differ but whose net has the same shape.
Everything is checked through /api/status, then `gossipnet predict` reads host 0's state
directory as a user would.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import skip_or_fail
from tests.daemon_box import (FAST_LEARNING, REPO, new_swarm_token, node_ids, start_daemon, statuses,
                              stderr_on_timeout, wait_until)
from tests.image_folders import CLASSES, write_corrupt, write_folder
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(240)]
FOLDER_FLAGS = ["--dataset", "folder", "--image-size", "16", *FAST_LEARNING]


def test_same_folder_nodes_merge_and_a_node_with_other_classes_is_refused_by_name(tmp_path):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    shared = write_folder(tmp_path / "share", n=12, seed=3)
    write_corrupt(shared / "top" / "torn.jpg")
    other = write_folder(tmp_path / "other", n=12, seed=3, classes=("cats", "dogs", "owls"))
    token = new_swarm_token()
    with LanBox(hosts=3) as lan:
        procs = [start_daemon(lan, i, tmp_path / f"node{i}", token, *FOLDER_FLAGS, "--data-dir", str(folder))
                 for i, folder in enumerate((shared, shared, other))]
        with stderr_on_timeout(procs):
            ids = node_ids(lan, [0, 1, 2], timeout=90)

            def merged_and_refused():
                got = statuses(lan, 0, [0, 1, 2])
                if any("error" in s for s in got.values()):
                    print("status not ready:", {h: s["error"] for h, s in got.items() if "error" in s})
                    return None  # a node still starting (or busy): ask again
                exchanged = {h: {p["node_id"] for p in got[h]["peers"] if p["last_exchange"] is not None}
                             for h in (0, 1)}
                refused = [got[h]["counters"].get("gossip", {}).get("skipped.other_classes", 0) for h in range(3)]
                if exchanged[0] == {ids[1]} and exchanged[1] == {ids[0]} and all(refused):
                    return got
                return None

            got, _ = wait_until("nodes 0 and 1 to merge and everyone to refuse the other class list",
                                merged_and_refused, timeout=150)
        assert got[0]["learner"]["fingerprint"] == got[1]["learner"]["fingerprint"] != got[2]["learner"]["fingerprint"]
        assert got[2]["counters"]["exchange"].get("absorbed", 0) == 0  # nothing crossed the class boundary
        assert [got[h]["learner"]["metrics"]["skipped_images"] for h in range(3)] == [1, 1, 0]
        assert all(p["last_exchange"] is None for p in got[2]["peers"])
        wait_until("node 0 to write a checkpoint", lambda: (tmp_path / "node0" / "checkpoint.safetensors").exists(),
                   timeout=30)
    picture = sorted((shared / "top").iterdir())[0]
    done = subprocess.run([sys.executable, "-c", "import sys; from gossipnet.cli import main; sys.exit(main())",
                           "predict", str(tmp_path / "node0"), str(picture), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    preds = json.loads(done.stdout)["predictions"]
    assert [p["label"] for p in preds] and {p["label"] for p in preds} <= set(CLASSES)
