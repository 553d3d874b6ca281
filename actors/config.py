"""Configs of the actor roles: data collection (and, later, rollout and evaluation workers)."""

from __future__ import annotations

from dataclasses import dataclass

from core.configlib import require

REAL_REWARDS = ("success", "progress")  # what a real group rewards (``post_train.real_reward``)
# what an imagined group rewards (``post_train.imagined_reward``)
IMAGINED_REWARDS = ("reflector", "success")
EXPLORE = ("every_step", "one_step")  # where training rollouts sample (``rollout.explore``)


@dataclass
class CollectConfig:
    """Real-environment data collection (``rehearse collect``).

    Attributes:
        exploration_scale: Laplace scale b of the arm dimensions for ``--source exploration``
            (normalized action units; 0 reproduces the mean policy).
        exploration_gripper_scale: Laplace scale of the gripper dimension.
        steps_after_success: steps recorded after the first success (0: end there). Frames
            after success teach the reflector that a finished task stays finished.
        policy_execute_steps: actions of each sampled chunk executed before the policy acts
            again, in policy-driven exploration (None: the whole chunk).
        episodes_per_task: default for ``--episodes-per-task``.
        episodes_per_part: episodes per Parquet part file.
    """

    exploration_scale: float = 0.3
    exploration_gripper_scale: float = 0.3
    steps_after_success: int = 0
    policy_execute_steps: int | None = None
    episodes_per_task: int = 5
    episodes_per_part: int = 64

    def __post_init__(self) -> None:
        require(self.exploration_scale >= 0, "collect.exploration_scale must be >= 0")
        require(
            self.exploration_gripper_scale >= 0, "collect.exploration_gripper_scale must be >= 0"
        )
        require(self.episodes_per_task >= 1, "collect.episodes_per_task must be >= 1")
        require(self.steps_after_success >= 0, "collect.steps_after_success must be >= 0")
        require(
            self.policy_execute_steps is None or self.policy_execute_steps >= 1,
            "collect.policy_execute_steps must be >= 1, or null for the whole chunk",
        )
        require(self.episodes_per_part >= 1, "collect.episodes_per_part must be >= 1")


@dataclass
class RolloutConfig:
    """Imagined rollouts (rollout workers) and real-env evaluation.

    Attributes:
        group_size: N rollouts per initial state (RLOO group).
        groups_per_worker: groups each rollout worker runs per iteration.
        max_policy_steps: policy calls (action chunks) per imagined episode at most.
        execute_steps: actions of each chunk executed before the policy acts again (<= chunk).
        eta: reflector termination threshold (terminate when R > eta); None takes the eta
            stored in the reflector checkpoint, which reflector training chooses (with the
            hold) on its validation split and calibration stores
            (``reflector.train.calibrate_eta``), or, in a post-training run with
            ``post_train.eta_calibration_data``, the eta it chooses for the world model's frames.
        keyframes: start from keyframes inside real episodes (WoVR) as well as from step 0.
        context_frames: real frames before the start given as history.
        eval_episodes: real-env episodes per evaluation.
        eval_max_steps: real-env step limit in evaluation (None: the env's own).
        scale_factor: exploration width: training rollouts sample a ~ Laplace(mu, scale_factor
            x b) (RIPT-VLA: 2-5); log-probs, acting and learning alike, use the policy's own b,
            so PPO ratios compare the policy before and after an update at the same width.
        mixed_groups: dynamic sampling (RIPT-VLA): each iteration keeps drawing fresh starts,
            ``groups_per_worker`` per worker per round, until this many groups whose rewards
            are not all equal are collected, and the learner trains on exactly those (0: one
            round, every non-constant group trains).
        max_sampling_rounds: the most rounds an iteration draws before it trains on what it
            has (counted in ``rollout/sampling_rounds``; a warning says when the cap is hit).
        round_growth: with dynamic sampling, a round after the first draws as many groups as
            the missing mixed groups need at the share of mixed groups seen so far, at most
            this many times ``groups_per_worker`` per worker, so what would be several small
            rounds steps in one batch (1: every round draws ``groups_per_worker``).
        mirrored: mirrored (antithetic) sampling in the training rollouts: rollout n + N/2 of
            every group acts with the negated standard noise of rollout n at every policy step,
            so each pair's rewards differ only through the noise's sign, and the pair's
            gradient is a finite difference along its noise (the reward's part that is even in
            the noise cancels). Needs an even ``group_size`` and ``learner.advantage:
            rloo_mirrored`` (a rollout's baseline must leave out its mirror image).
        explore: where training rollouts sample. "every_step": every policy step samples from
            the policy (LOOP). "one_step": each group draws one policy step k (uniform below
            ``max_policy_steps``); its rollouts act with the mean action at every other step
            and sample only at step k. In a deterministic env, and in imagination where the
            group's rollouts then share the world model's noise (``common_noise``), they share
            their state at k and differ only by that chunk's noise, so the RLOO group estimates how
            the mean action's own reward changes there (the policy the evaluation runs), and
            the learner trains on step k alone. A group whose episode ends before k has no
            sample (and equal rewards: the learner skips it).
    """

    group_size: int = 8
    groups_per_worker: int = 1
    max_policy_steps: int = 6
    execute_steps: int = 8
    eta: float | None = None
    keyframes: bool = True
    context_frames: int = 1
    eval_episodes: int = 100
    eval_max_steps: int | None = None
    scale_factor: float = 1.0
    mixed_groups: int = 0
    max_sampling_rounds: int = 4
    round_growth: int = 4
    mirrored: bool = False
    explore: str = "every_step"

    def __post_init__(self) -> None:
        require(
            self.group_size >= 2, f"rollout.group_size must be >= 2 (RLOO), got {self.group_size}"
        )
        require(self.groups_per_worker >= 1, "rollout.groups_per_worker must be >= 1")
        require(self.max_policy_steps >= 1, "rollout.max_policy_steps must be >= 1")
        require(self.execute_steps >= 1, "rollout.execute_steps must be >= 1")
        require(
            self.eta is None or 0.0 < self.eta < 1.0,
            f"rollout.eta must be in (0, 1), or null for the reflector checkpoint's, "
            f"got {self.eta}",
        )
        require(self.context_frames >= 1, "rollout.context_frames must be >= 1")
        require(self.eval_episodes >= 1, "rollout.eval_episodes must be >= 1")
        require(
            self.eval_max_steps is None or self.eval_max_steps >= 1,
            "rollout.eval_max_steps must be >= 1, or null for the env's own limit",
        )
        require(
            self.explore in EXPLORE,
            f"rollout.explore must be one of {list(EXPLORE)}, got {self.explore!r}",
        )
        require(self.scale_factor > 0, f"rollout.scale_factor must be > 0, got {self.scale_factor}")
        require(
            self.mixed_groups >= 0, "rollout.mixed_groups must be >= 0 (0: no dynamic sampling)"
        )
        require(self.max_sampling_rounds >= 1, "rollout.max_sampling_rounds must be >= 1")
        require(
            self.round_growth >= 1,
            f"rollout.round_growth must be >= 1 (1: rounds of groups_per_worker), "
            f"got {self.round_growth}",
        )
        require(
            not self.mirrored or (self.group_size % 2 == 0 and self.group_size >= 4),
            f"rollout.mirrored pairs the rollouts of a group: rollout.group_size must be even "
            f"and >= 4, got {self.group_size}",
        )
