"""Neuroevolution, free of I/O: policies, ask/tell algorithms, tasks and rollouts.

Nothing here imports asyncio or sockets; ``EvolutionLearner`` in
``gossipnet.learners.evolution`` wraps it for the node.
"""

from gossipnet.evo.algorithm import Algorithm
from gossipnet.evo.algorithms import ALGORITHMS, make_algorithm
from gossipnet.evo.cmaes import CMAES, CMAConfig
from gossipnet.evo.es import ESConfig, OpenAIES
from gossipnet.evo.ga import GA, GAConfig
from gossipnet.evo.policy import ActionSpace, Layout, act
from gossipnet.evo.rollout import Evaluator, run_episodes
from gossipnet.evo.tasks import TASKS, Task, get_task

__all__ = [
    "ALGORITHMS",
    "CMAES",
    "GA",
    "TASKS",
    "ActionSpace",
    "Algorithm",
    "CMAConfig",
    "ESConfig",
    "Evaluator",
    "GAConfig",
    "Layout",
    "OpenAIES",
    "Task",
    "act",
    "get_task",
    "make_algorithm",
    "run_episodes",
]
