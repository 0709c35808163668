"""Swarm timings of real daemons in a LAN in a box: discovery, failure detection, rejoin.

Runs 3 ``python daemon.py`` processes in network namespaces (needs root and iproute2; see
docs/TESTING.md), several times, and prints the median and range of:
  - discovery: all status pages up -> every node lists the other two alive (mDNS only)
  - first merge: -> every node has absorbed a snapshot from both others
  - detection: SIGKILL of one node -> both survivors mark it dead
  - rejoin: restarted node's page answers -> both survivors see it alive again

    sudo python benchmarks/lan_swarm.py --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon_box import (FAST_LEARNING, new_swarm_token, node_ids, peer_states,  # noqa: E402
                              start_daemon, statuses, wait_until)
from tests.lanbox import LanBox, lanbox_available  # noqa: E402

HOSTS = [0, 1, 2]


def one_run(root: Path) -> dict[str, float]:
    token = new_swarm_token()
    with LanBox(hosts=3) as lan:
        procs = {i: start_daemon(lan, i, root / f"n{i}", token, *FAST_LEARNING) for i in HOSTS}
        ids = node_ids(lan, HOSTS)

        def all_alive():
            got = statuses(lan, 0, HOSTS)
            return all(peer_states(got[h]).get(ids[o]) == "alive" for h in HOSTS for o in HOSTS if o != h)

        _, discovery = wait_until("discovery", all_alive, 60, interval=0.2)

        def merged():
            got = statuses(lan, 0, HOSTS)
            return all({p["node_id"] for p in got[h]["peers"] if p["last_exchange"]} ==
                       {ids[o] for o in HOSTS if o != h} for h in HOSTS)

        _, first_merge = wait_until("merges", merged, 120, interval=0.2)
        time.sleep(3)  # let a checkpoint land
        procs[2].kill(signal.SIGKILL)
        procs[2].wait(10)
        _, detection = wait_until("detection", lambda: all(
            peer_states(s).get(ids[2]) == "dead" for s in statuses(lan, 0, [0, 1]).values()), 60, interval=0.2)
        procs[2] = start_daemon(lan, 2, root / "n2", token, *FAST_LEARNING)
        wait_until("restart", lambda: "node" in statuses(lan, 2, [2])[2], 60, interval=0.2)
        _, rejoin = wait_until("rejoin", lambda: all(
            peer_states(s).get(ids[2]) == "alive" for s in statuses(lan, 0, [0, 1]).values()), 60, interval=0.2)
    return {"discovery_s": discovery, "first_merge_s": first_merge, "detection_s": detection, "rejoin_s": rejoin}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ok, reason = lanbox_available()
    if not ok:
        print(f"cannot build a LAN in a box here: {reason}", file=sys.stderr)
        return 2
    runs = []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"run {r + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()), flush=True)
    summary = {k: {"median": statistics.median(x[k] for x in runs), "min": min(x[k] for x in runs),
                   "max": max(x[k] for x in runs)} for k in runs[0]}
    print(f"{'figure':<16}{'median':>8}{'min':>8}{'max':>8}   (seconds, {args.runs} runs, status polled every 0.2 s)")
    for k, v in summary.items():
        print(f"{k:<16}{v['median']:>8.1f}{v['min']:>8.1f}{v['max']:>8.1f}")
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
