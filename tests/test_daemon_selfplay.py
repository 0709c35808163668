"""Two slime volleyball island daemons in a LAN in a box trade signed champions; a third
member with valid credentials lies (a forged claim, then an absurd champion), and both
honest islands refuse and count it."""

import pytest

from tests.conftest import skip_or_fail
from tests.daemon_box import (REPO, new_swarm_token, node_ids, start_daemon, statuses, stderr_on_timeout,
                              wait_until)
from tests.lanbox import LanBox, lanbox_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]
HONEST = [0, 1]
LIAR = 2
SMALL = ["--task", "slimevolley", "--population", "6", "--gossip-interval", "1", "--eval-interval", "600"]

# A member that lies: its offers alternate between a champion whose claim is 1.5 points
# above what it replays to, and a finite but absurd champion (|gene| = 1e6).
_LIAR = r"""
import sys
import numpy as np
from dataclasses import replace
from gossipnet.cli import main
from gossipnet.learners.selfplay import SelfPlayLearner

calls = [0]

def lying_snapshot(self):
    calls[0] += 1
    genome = self.layout.init(np.random.default_rng(calls[0]), 1)
    meta = {"count": 1, "generation": calls[0], "algo": "ga", "fitness_0": 9.5, "seed_0": 1, "seed_1": 2}
    if calls[0] % 2 == 0:
        genome = np.full_like(genome, 1e6)
    snap = SelfPlayLearner.honest_snapshot(self)
    return replace(snap, tensors={"genomes": genome.astype(np.float32)}, meta=meta)

SelfPlayLearner.honest_snapshot = SelfPlayLearner.snapshot
SelfPlayLearner.snapshot = lying_snapshot
sys.exit(main(sys.argv[1:]))
"""


def _compile_the_game_engine_once() -> None:
    """Compile (or load) the numba game engine here, so the daemons find it in numba's
    cache instead of each compiling it at once on a loaded machine."""
    import numpy as np

    from gossipnet.evo.slime_compiled import play_against_baseline, play_genome_games
    from gossipnet.evo.slime_players import slime_layout

    layout = slime_layout(16)
    genomes = np.zeros((2, layout.size), np.float32)
    play_genome_games(layout, genomes, [0], [1], [0])
    play_against_baseline(layout, genomes, [0], [0])


def test_island_daemons_trade_champions_and_refuse_a_liar(tmp_path):
    ok, reason = lanbox_available()
    if not ok:
        skip_or_fail(reason)
    _compile_the_game_engine_once()
    token = new_swarm_token()
    with LanBox(hosts=3) as lan:
        procs = [start_daemon(lan, i, tmp_path / f"island{i}", token, *SMALL) for i in HONEST]
        liar_args = ["run", "--state-dir", str(tmp_path / "liar"), "--swarm-token", token,
                     "--interface", lan.address(LIAR), "--udp-port", "7946", "--http-port", "8080", *SMALL]
        procs.append(lan.spawn_python(LIAR, _LIAR, *liar_args,
                                      env={"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}))
        with stderr_on_timeout(procs):
            ids = node_ids(lan, HONEST + [LIAR], timeout=90)

            def traded_and_refused():
                got = statuses(lan, 0, HONEST)
                for h in HONEST:
                    m = got[h].get("learner", {}).get("metrics", {})
                    if ids[1 - h] not in str(m.get("hall_peers", "")).split(","):
                        return None
                    if m.get("forged_claims", 0) < 1 or m.get("rejected_absurd_magnitude", 0) < 1:
                        return None
                return got

            got, _ = wait_until("each hall to hold the other's champion and the liar to be refused",
                                traded_and_refused, timeout=400, interval=3)
        for h in HONEST:
            m = got[h]["learner"]["metrics"]
            assert ids[LIAR] not in m["hall_peers"]  # nothing the liar sent got in
            assert m["hall_foreign"] >= 1 and m["migrants_accepted"] >= 1
            assert m["task"] == "slimevolley"
