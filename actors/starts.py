"""Real-env starts: a task and a seed, for evaluation episodes and the oracle's training groups.

Seeds are kept apart by offsets: data collection uses base + 100,000 x task + episode (< 10^6
past the base seed), evaluation ``EVAL_SEED_OFFSET`` = 10^7 on, the learning curve during
post-training ``CURVE_SEED_OFFSET`` = 1.5 x 10^7 on (its own fixed starts, never the final
evaluation's), the oracle's training starts ``REAL_START_SEED_OFFSET`` = 2 x 10^7 on, the
co-evolution's real episodes ``COEVOLVE_SEED_OFFSET`` = 2.5 x 10^7 on, vision pretraining's
scenes ``PRETRAIN_SEED_OFFSET`` = 4 x 10^7 on (in their own layout too), so an evaluation never
sees a start the policy or the world model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trajectories.initial_states import InitialState

EVAL_SEED_OFFSET = 10_000_000
CURVE_SEED_OFFSET = 15_000_000
REAL_START_SEED_OFFSET = 20_000_000
COEVOLVE_SEED_OFFSET = 25_000_000
PRETRAIN_SEED_OFFSET = 40_000_000


@dataclass(frozen=True)
class EvalJob:
    """One real-env start: reset ``task`` with ``seed``."""

    task: str
    seed: int


class RealStartSampler:
    """Deterministic stream of real-env starts (task, seed), one fresh seed per draw.

    Args:
        tasks: the tasks to draw from (uniformly).
        seed: base seed; ``cursor`` counts draws (saved in checkpoints like the initial-state
            sampler's), so a resumed run continues the same stream.
    """

    def __init__(self, tasks: list[str], *, seed: int = 0):
        if not tasks:
            raise ValueError("real-env starts need at least one task")
        self.tasks = list(tasks)
        self.seed = seed
        self.cursor = 0

    def sample(self, n: int) -> list[EvalJob]:
        starts = []
        for _ in range(n):
            k = int(np.random.default_rng([self.seed, self.cursor]).integers(len(self.tasks)))
            starts.append(EvalJob(self.tasks[k], REAL_START_SEED_OFFSET + self.seed + self.cursor))
            self.cursor += 1
        return starts


def first_observations(env: Any, jobs: list[EvalJob]) -> list[InitialState]:
    """The starts of ``jobs`` as initial states (the first frame and proprio of each reset of
    ``env``), so that imagination can start where the real env does."""
    out = []
    for j in jobs:
        obs = env.reset(j.task, seed=j.seed)
        out.append(
            InitialState(
                episode_id=f"real-{j.task}-{j.seed}",
                start=0,
                task_id=j.task,
                instruction=obs.instruction,
                frames=obs.image[None],
                proprio=np.asarray(obs.proprio, dtype=np.float32),
            )
        )
    return out
