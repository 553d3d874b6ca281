"""Configs of the actor roles: data collection (and, later, rollout and evaluation workers)."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.configlib import require


@dataclass
class CollectConfig:
    """Real-environment data collection (``rehearse collect``).

    Attributes:
        exploration_scale: Laplace scale b of the arm dimensions for ``--source exploration``
            (normalized action units; 0 reproduces the mean policy).
        exploration_gripper_scale: Laplace scale of the gripper dimension.
        stop_on_success: end an episode at the first success (else at the step limit).
        episodes_per_task: default for ``--episodes-per-task``.
        episodes_per_part: episodes per Parquet part file.
    """

    exploration_scale: float = 0.3
    exploration_gripper_scale: float = 0.3
    stop_on_success: bool = True
    episodes_per_task: int = 5
    episodes_per_part: int = 64

    def __post_init__(self) -> None:
        require(self.exploration_scale >= 0, "collect.exploration_scale must be >= 0")
        require(self.exploration_gripper_scale >= 0, "collect.exploration_gripper_scale must be >= 0")
        require(self.episodes_per_task >= 1, "collect.episodes_per_task must be >= 1")
        require(self.episodes_per_part >= 1, "collect.episodes_per_part must be >= 1")
