"""Self-play islands: hall of fame, ratings, the migrant door, checkpoints, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gossipnet.cli import main as cli_main
from gossipnet.evo.hall_of_fame import HallOfFame, elo
from gossipnet.evo import selfplay
from gossipnet.evo.selfplay import payoff_matrix, reference_score
from gossipnet.learners.base import Snapshot
from gossipnet.learners.selfplay import SelfPlayConfig, SelfPlayLearner

# small islands: 8 members, one sibling round and one hall game each, a champion every 2
SMALL = SelfPlayConfig(population=8, hidden=8, sibling_rounds=1, hall_games=1, champion_interval=2,
                       candidates=2, round_robin_size=2, round_robin_games=1, admit_games=2,
                       eval_episodes=20, rating_size=4)


def test_hall_of_fame_is_capped_keeps_the_newest_and_round_trips():
    hall = HallOfFame(dim=3, capacity=5, keep_recent=2)
    for i in range(40):
        hall.add(np.full(3, i, np.float32), origin="a" if i % 2 else "b", generation=i)
    assert len(hall) == 5 and hall.admitted == 40
    assert hall.generation[-2:] == [38, 39]  # the newest are never the ones dropped
    assert min(hall.generation) < 30  # older history is thinned, not cut off
    np.testing.assert_array_equal(hall.genomes[:, 0], hall.generation)
    other = HallOfFame(dim=3, capacity=5)
    other.load_state_dict(hall.state_dict())
    assert other.origin == hall.origin and other.generation == hall.generation
    np.testing.assert_array_equal(other.genomes, hall.genomes)
    with pytest.raises(ValueError):
        HallOfFame(dim=4, capacity=5).load_state_dict(hall.state_dict())


def test_elo_orders_a_transitive_payoff_and_ignores_unplayed_pairs():
    payoff = np.array([[0, 2, 4], [-2, 0, 2], [-4, -2, 0]], dtype=float)
    r = elo(payoff)
    assert r[0] > r[1] > r[2] and abs(r.mean() - 1000) < 1e-6
    payoff[0, 2] = payoff[2, 0] = np.nan
    r2 = elo(payoff)
    assert r2[0] > r2[1] > r2[2]


def test_payoff_is_antisymmetric_and_reference_claims_replay_exactly():
    learner = SelfPlayLearner(SMALL)
    layout = learner.layout
    genomes = layout.init(np.random.default_rng(0), 3)
    payoff, steps = payoff_matrix(layout, genomes, 2, seed=1)
    np.testing.assert_array_equal(payoff, -payoff.T)
    assert steps > 0
    selfplay._REPLAYS.clear()
    seeds = np.array([5, 6])
    alone, steps = reference_score(layout, genomes[0], seeds)
    # an island measures its claim inside a generation's batch: the same games, the same score
    plans = [selfplay.pairings(genomes, genomes, 1, np.random.default_rng(1)),
             selfplay.reference_plan(layout, genomes[0], seeds)]
    in_batch = selfplay.play_plans(layout, plans)[1]
    assert float(in_batch.score.mean()) == alone and in_batch.steps == steps


@pytest.fixture(scope="module")
def trained_pair() -> tuple[SelfPlayLearner, SelfPlayLearner]:
    a, b = SelfPlayLearner(SMALL, name="a"), SelfPlayLearner(replace(SMALL, seed=1), name="b")
    a.train(3)  # a champion at generation 2, its claim measured in generation 3
    b.train(3)
    return a, b


def test_champions_cross_and_join_the_other_hall(trained_pair):
    a, b = trained_pair
    snap = a.snapshot()
    assert snap.tensors["genomes"].shape == (1, a.layout.size) and "fitness_0" in snap.meta
    result = b.absorb(snap, "a")
    assert result.accepted, result
    assert "a" not in b.hall.origin
    b.train(1)  # the re-scoring games ride in the next generation's batch
    assert b.migrants_accepted + b.hall_refused == 1
    if b.migrants_accepted:
        assert b.hall.origin.count("a") == 1
        np.testing.assert_array_equal(b.hall.genomes[b.hall.origin.index("a")], snap.tensors["genomes"][0])


def test_forged_claims_and_malformed_champions_are_refused_and_counted(trained_pair):
    a, b = trained_pair
    honest = a.snapshot()
    forged = replace(honest, meta={**honest.meta, "fitness_0": honest.meta["fitness_0"] + 1.0})
    nan = replace(honest, tensors={"genomes": np.full((1, a.layout.size), np.nan, np.float32)})
    short = replace(honest, tensors={"genomes": np.zeros((1, 5), np.float32)})
    two = replace(honest, tensors={"genomes": np.zeros((2, a.layout.size), np.float32)})
    no_seeds = replace(honest, meta={"fitness_0": 1.0})
    alien = Snapshot("evolution", "cartpole:0000", 0.0, honest.tensors, honest.meta)
    before = dict(b.metrics())
    outcomes = {name: b.absorb(snap, "mallory") for name, snap in
                [("forged", forged), ("nan", nan), ("short", short), ("two", two),
                 ("no_seeds", no_seeds), ("alien", alien), ("junk", object())]}
    assert not any(r.accepted for r in outcomes.values())
    assert outcomes["forged"].reason == "forged_claim"
    m = b.metrics()
    assert m["forged_claims"] == before["forged_claims"] + 1
    assert m["rejected_non_finite"] == before["rejected_non_finite"] + 1
    assert m["rejected_wrong_genome_length"] == before["rejected_wrong_genome_length"] + 1
    assert m["rejected_too_many_migrants"] == before["rejected_too_many_migrants"] + 1
    assert m["rejected_wrong_fingerprint"] == before["rejected_wrong_fingerprint"] + 1
    assert m["rejected_malformed"] == before["rejected_malformed"] + 2
    assert m["migrants_rejected"] == before["migrants_rejected"] + 7
    assert len(b._pending) == 0  # nothing refused is waiting to be re-scored


def test_checkpoint_round_trip_continues_identically(trained_pair):
    a, _ = trained_pair
    copy = SelfPlayLearner(SMALL, name="a")
    copy.load_state_dict(a.state_dict())
    a.train(1)
    copy.train(1)
    np.testing.assert_array_equal(copy.algo.members, a.algo.members)
    np.testing.assert_array_equal(copy.hall.genomes, a.hall.genomes)
    assert copy.games == a.games and copy.metrics()["best_fitness"] == a.metrics()["best_fitness"]


def test_evaluate_measures_against_the_baseline_and_rates_the_hall(trained_pair):
    a, _ = trained_pair
    for _ in range(2 * SMALL.champion_interval):  # a second champion, so there is a hall to rate
        if len(a.hall) >= 2:
            break
        a.train(1)
    out = a.evaluate()
    assert out["eval_episodes"] == SMALL.eval_episodes and -5 <= out["score_vs_baseline"] <= 5
    assert "hall_elo_spread" in out and a.metrics()["score_vs_baseline"] == out["score_vs_baseline"]
    frames = a.visuals()["rollout"]
    assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.dtype == np.uint8


def test_train_command_reports_score_games_and_generations(capsys):
    code = cli_main(["train", "--task", "slimevolley", "--generations", "2", "--population", "4",
                     "--json", "--quiet"])
    assert code in (0, None)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["generations"] == 2 and out["games"] > 0 and -5 <= out["score_vs_baseline"] <= 5
    assert out["eval_episodes"] == 1000


def test_bad_settings_are_user_errors():
    from gossipnet.errors import UserError
    with pytest.raises(UserError, match="algo ga"):
        SelfPlayLearner(replace(SMALL, algo="cmaes"))
    with pytest.raises(UserError, match="population"):
        SelfPlayLearner(replace(SMALL, population=2))


def test_nodes_and_the_demo_build_self_play_islands(tmp_path):
    from gossipnet.config import NodeConfig
    from gossipnet.commands.learner_factory import build_learner

    cfg = NodeConfig(state_dir=tmp_path, learner="evolution", task="slimevolley", population=6, seed=3)
    learner = build_learner(cfg, "node-x")
    assert isinstance(learner, SelfPlayLearner)
    assert learner.config.population == 6 and learner.name == "node-x" and learner.kind == "evolution"
    assert learner.fingerprint.startswith("slimevolley:")
    assert learner.offer_shapes() == {"genomes": (1, learner.layout.size)}
