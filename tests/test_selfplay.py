"""Self-play islands: the arena, tournament selection, hall of fame, ratings, the migrant
door, checkpoints, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gossipnet.cli import main as cli_main
from gossipnet.evo.hall_of_fame import HallOfFame, elo
from gossipnet.errors import UserError
from gossipnet.evo import selfplay
from gossipnet.evo.selfplay import payoff_matrix, reference_score
from gossipnet.evo.slime_tournament import Tournament, TournamentConfig
from gossipnet.learners.base import Snapshot
from gossipnet.learners.selfplay import SelfPlayConfig, SelfPlayLearner

# small islands: 8 members (4 games a generation, 3 at once), a champion every 2 generations
SMALL = SelfPlayConfig(population=8, hidden=8, champion_interval=2, candidates=2, round_robin_size=2,
                       admit_games=2, eval_episodes=20, rating_size=4, hall_share=0.25)


def test_tournament_replaces_losers_with_mutants_of_winners():
    t = Tournament(dim=5, config=TournamentConfig(population=5, sigma=0.1), seed=0)
    pairs = t.pairs(np.arange(5))
    assert pairs.shape == (2, 2) and len(set(pairs.ravel().tolist())) == 4  # disjoint, one left out
    a, b = (int(x) for x in pairs[0])
    t.streak[a] = 3
    winner = t.members[a].copy()
    t.settle(right=a, left=b, score=2.0)
    assert t.streak[a] == 4 and t.streak[b] == 3  # the clone inherits the winner's streak
    assert 0 < np.abs(t.members[b] - winner).max() < 1.0 and np.array_equal(t.members[a], winner)
    before = t.members[b].copy()
    t.settle(right=a, left=b, score=0.0)  # a tie: noise on the left member only
    assert t.ties == 1 and not np.array_equal(t.members[b], before)
    champion = np.full(5, 7.0, np.float32)
    t.settle_frozen(a, champion, -1.0)  # lost to a hall champion: becomes its mutant
    assert t.streak[a] == 0 and np.abs(t.members[a] - 7.0).max() < 1.0
    assert t.leaders(1)[0] == b  # the longest streak now
    copy = Tournament(dim=5, config=TournamentConfig(population=5), seed=9)
    copy.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(copy.members, t.members)
    np.testing.assert_array_equal(copy.pairs(np.arange(5)), t.pairs(np.arange(5)))


def test_hall_of_fame_is_capped_keeps_the_newest_and_round_trips():
    hall = HallOfFame(dim=3, capacity=5, keep_recent=2)
    for i in range(40):
        hall.add(np.full(3, i, np.float32), origin="a" if i % 2 else "b", generation=i)
    assert len(hall) == 5 and hall.admitted == 40
    assert hall.generation[-2:] == [38, 39]  # the newest are never the ones dropped
    assert min(hall.generation) < 30  # older history is thinned, not cut off
    np.testing.assert_array_equal(hall.genomes[:, 0], hall.generation)
    rng = np.random.default_rng(0)
    assert set(hall.sample(50, rng, recent=1.0)[:, 0]) <= {38.0, 39.0}  # the newest only
    assert len(set(hall.sample(50, rng)[:, 0])) == 5  # uniform: the whole hall
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
    assert reference_score(layout, genomes[0], seeds) == (alone, steps)  # a replay is remembered
    learner.train(SMALL.champion_interval)  # a champion, offered with its claim
    assert learner.offer is not None and learner.offer[0] is learner.champion
    selfplay._REPLAYS.clear()
    replayed, _ = reference_score(layout, learner.champion, learner.offer[2])
    assert abs(replayed - learner.offer[1]) < 1e-9 and -5 <= alone <= 5


@pytest.fixture(scope="module")
def trained_pair() -> tuple[SelfPlayLearner, SelfPlayLearner]:
    a, b = SelfPlayLearner(SMALL, name="a"), SelfPlayLearner(replace(SMALL, seed=1), name="b")
    a.train(2)  # a champion after round 2, offered with its claim
    b.train(2)
    return a, b


def test_champions_cross_and_join_the_other_hall(trained_pair):
    a, b = trained_pair
    snap = a.snapshot()
    assert snap.tensors["genomes"].shape == (1, a.layout.size) and "fitness_0" in snap.meta
    assert "a" not in b.hall.origin
    result = b.absorb(snap, "a")  # claim replayed, then re-scored against b's own opponents
    assert result.accepted, result
    assert b.migrants_accepted + b.hall_refused == 1
    champion = snap.tensors["genomes"][0]
    near = np.abs(b.tournament.members - champion).max(axis=1) < 6 * SMALL.sigma  # its mutants
    if b.migrants_accepted:
        assert b.hall.origin.count("a") == 1
        np.testing.assert_array_equal(b.hall.genomes[b.hall.origin.index("a")], champion)
        assert near.sum() == SMALL.migrants_in > 0  # and migrates into the population
    else:
        assert not near.any()


def test_an_injecting_island_replaces_its_shortest_streaks_with_the_champions_mutants():
    t = Tournament(dim=5, config=TournamentConfig(population=6), seed=3)
    t.streak[:] = [4, 0, 7, 1, 9, 2]
    champion = np.full(5, 3.0, np.float32)
    before = t.members.copy()
    t.immigrate(champion, 2)
    for slot in (1, 3):  # the two shortest streaks
        assert t.streak[slot] == 0 and np.abs(t.members[slot] - champion).max() < 1.0
    for slot in (0, 2, 4, 5):
        np.testing.assert_array_equal(t.members[slot], before[slot])
    assert replace(SMALL, population=32, migration_share=0.375).migrants_in == 12
    assert replace(SMALL, migration_share=0.01).migrants_in == 1 and replace(SMALL, migration_share=0).migrants_in == 0
    with pytest.raises(UserError, match="migration share"):
        replace(SMALL, migration_share=1.0).check()


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
    assert m["migrants_rejected"] == before["migrants_rejected"] + 8  # "two" held two genomes
    assert "mallory" not in b.hall.origin


def test_checkpoint_round_trip_continues_identically(trained_pair):
    a, _ = trained_pair
    copy = SelfPlayLearner(SMALL, name="a")
    copy.load_state_dict(a.state_dict())
    a.train(1)
    copy.train(1)
    np.testing.assert_array_equal(copy.tournament.members, a.tournament.members)
    np.testing.assert_array_equal(copy.tournament.streak, a.tournament.streak)
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
    with pytest.raises(UserError, match="hall share"):
        SelfPlayLearner(replace(SMALL, hall_share=1.0))


def test_nodes_and_the_demo_build_self_play_islands(tmp_path):
    from gossipnet.config import NodeConfig
    from gossipnet.commands.learner_factory import build_learner

    cfg = NodeConfig(state_dir=tmp_path, learner="evolution", task="slimevolley", population=6, seed=3)
    learner = build_learner(cfg, "node-x")
    assert isinstance(learner, SelfPlayLearner)
    assert learner.config.population == 6 and learner.name == "node-x" and learner.kind == "evolution"
    assert learner.fingerprint.startswith("slimevolley:")
    assert learner.offer_shapes() == {"genomes": (1, learner.layout.size)}
