"""Evaluation worker: a policy copy and real environments, for success rates.

Wrap with ``ray.remote(**resources)(EvalWorker)`` where it is created (``cluster/evaluate.py``).
Seeds of evaluation episodes are offset from training seeds (``actors.starts.EVAL_SEED_OFFSET``)
so no evaluation episode reuses a start that data collection or the oracle saw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from actors.evaluation import evaluate_jobs
from actors.starts import EvalJob, first_observations
from actors.worlds import EnvPool
from trajectories.initial_states import InitialState


class StaleWeights(RuntimeError):
    """The worker does not hold the weights version a call asked for (it was restarted)."""


class EvalWorker:
    """Runs evaluation episodes of one policy.

    Args:
        policy_factory: builds the policy.
        env_factory: builds one real env.
        reflector_factory: builds a keyed reflector backend (for reflector termination), or None.
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        env_factory: Callable[[], Any],
        reflector_factory: Callable[[], Any] | None = None,
    ):
        torch.set_num_threads(1)
        self.policy = policy_factory().eval()
        self.envs = EnvPool(env_factory)
        self.reflector = reflector_factory() if reflector_factory is not None else None
        self.version: int | None = None  # of loaded weights (None: the factory's)

    def evaluate(
        self,
        jobs: list[EvalJob],
        *,
        use_reflector: bool = False,
        version: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Records of ``jobs`` (``actors.evaluation.evaluate_jobs``); with ``version``, refused
        (``StaleWeights``) unless the policy holds that version of loaded weights."""
        if version is not None and version != self.version:
            raise StaleWeights(f"holds weights version {self.version}, asked for {version}")
        if use_reflector and self.reflector is None:
            raise ValueError("reflector termination asked for, but no reflector was given")
        return evaluate_jobs(
            self.policy,
            self.envs,
            jobs,
            reflector=self.reflector if use_reflector else None,
            **kwargs,
        )

    def load_weights(self, published: tuple[int, dict[str, torch.Tensor]]) -> int:
        """Copy published (version, trainable weights) into the policy (the learning curve
        evaluates the current policy of a post-training run); returns the version."""
        version, state = published
        self.policy.load_trainable_state_dict(state)
        self.version = int(version)
        return self.version

    def ping(self) -> int:
        """Answers once the actor is up (the driver waits on it after a restart)."""
        return 0

    def first_observations(self, jobs: list[EvalJob]) -> list[InitialState]:
        """The starts of ``jobs`` as initial states (``actors.starts.first_observations``)."""
        return first_observations(self.envs.take(1)[0], jobs)

    def close(self) -> None:
        """Free the envs (call before the process ends)."""
        self.envs.close()
