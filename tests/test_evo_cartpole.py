"""CartPole-v1 is solved by every algorithm on one island, and the CLI reports it.

Smaller scale than examples/solve_cartpole.py (which checks 100 evaluation
episodes): here the best policy must average >= 475 over 20 evaluation
episodes within 30 generations.
"""

import json

import pytest

from gossipnet.cli import main
from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner


@pytest.mark.parametrize("algo", ["ga", "es", "cmaes"])
def test_cartpole_is_solved_within_30_generations(algo):
    learner = EvolutionLearner(EvolutionConfig.for_task("cartpole", algo, seed=0, eval_episodes=20))
    result = {"solved": 0.0}
    for _ in range(30):
        learner.train(1)
        if learner.metrics()["best_fitness"] >= 475:
            result = learner.evaluate()
            if result["solved"]:
                break
    assert result["solved"] == 1.0 and result["eval_mean"] >= 475, (algo, learner.history()["best"])
    assert learner.step <= 30


def test_train_command_prints_a_json_summary_and_writes_a_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "island.safetensors"
    argv = ["train", "--task", "cartpole", "--algo", "ga", "--generations", "2", "--population", "8", "--json", "--quiet"]
    assert main(argv + ["--checkpoint", str(ckpt)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"best_fitness", "mean_fitness", "generations", "env_steps", "solved", "eval_mean"} <= set(first)
    assert first["generations"] == 2 and first["env_steps"] > 0 and first["eval_episodes"] == 100
    assert ckpt.exists()
    assert main(argv + ["--checkpoint", str(ckpt)]) == 0  # resumes: two more generations
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["generations"] == 4 and second["env_steps"] > first["env_steps"]


def test_unknown_task_exits_with_a_message_listing_the_tasks(capsys):
    assert main(["train", "--task", "mountaincar"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'mountaincar'" in err and "lunarlander" in err
