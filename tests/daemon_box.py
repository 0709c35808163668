"""Helpers to run real gossipnet daemons in a LanBox and read what a user would see.

The pytest process lives in the machine's real network namespace, which has no route
into the box: every status request is made from inside a box host, by a small Python
child that fetches the node's ``/api/status`` and prints it.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from gossipnet.trust.swarm import Swarm
from tests.lanbox import LanBox, Process

REPO = Path(__file__).resolve().parent.parent
UDP_PORT = 7946
HTTP_PORT = 8080

# Fast enough to learn something in a test, small enough for 3 daemons on 2 cores.
FAST_LEARNING = ["--net", "tiny", "--train-chunk", "5", "--announce-interval", "1",
                 "--eval-interval", "15", "--checkpoint-interval", "2"]

_FETCH = r"""
import json, sys, urllib.request
out = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            out[url] = json.load(r)
    except Exception as exc:
        out[url] = {"error": repr(exc)}
print(json.dumps(out))
"""


def new_swarm_token() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Swarm(Ed25519PrivateKey.generate(), "test").token


def start_daemon(lan: LanBox, i: int, state_dir: Path, token: str, *extra: str) -> Process:
    """``python daemon.py`` on host ``i``, joined by token, with the box address as interface."""
    argv = [sys.executable, str(REPO / "daemon.py"), "--state-dir", str(state_dir),
            "--swarm-token", token, "--interface", lan.address(i),
            "--udp-port", str(UDP_PORT), "--http-port", str(HTTP_PORT), "--cores", "1", *extra]
    # Three daemons share two cores here: one BLAS thread and no training workers each
    # keeps them from thrashing (a later --cores in ``extra`` wins).
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return lan.spawn(i, argv, env=env)


def statuses(lan: LanBox, via: int, hosts: list[int]) -> dict[int, dict[str, Any]]:
    """Each host's /api/status, fetched from inside host ``via`` (errors as {"error": ...})."""
    urls = {h: f"http://{lan.address(h)}:{HTTP_PORT}/api/status" for h in hosts}
    done = lan.run(via, [sys.executable, "-c", _FETCH, *urls.values()], timeout=20)
    got = json.loads(done.stdout)
    return {h: got[u] for h, u in urls.items()}


def peer_states(status: dict[str, Any]) -> dict[str, str]:
    """node id -> membership state, as a node reports its peers."""
    return {p["node_id"]: p["state"] for p in status.get("peers", [])}


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> tuple[Any, float]:
    """Poll ``check`` until it returns something truthy; (value, seconds taken) or AssertionError."""
    t0 = time.monotonic()
    last: Any = None
    while True:
        last = check()
        if last:
            return last, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def stderr_on_timeout(procs: Sequence[Process] | Mapping[int, Process]) -> Iterator[None]:
    """On a failed wait, print the tail of each daemon's stderr before re-raising: a timeout
    alone does not say why a node never got there."""
    try:
        yield
    except AssertionError:
        for i, p in (procs.items() if isinstance(procs, Mapping) else enumerate(procs)):
            print(f"--- host {i} stderr ---\n{p.stderr()[-3000:]}")
        raise


def node_ids(lan: LanBox, hosts: list[int], timeout: float = 60) -> dict[int, str]:
    """Wait for every host's status page to answer; its node id."""

    def all_up():
        got = statuses(lan, hosts[0], hosts)
        if all("node" in s for s in got.values()):
            return {h: s["node"]["id"] for h, s in got.items()}
        return None

    ids, _ = wait_until("every status page to answer", all_up, timeout)
    return ids
