"""Config of the learner: LOOP (RLOO + PPO-clip) updates of the policy's LoRA and heads."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.configlib import require
from learner.loop import ADVANTAGES, OBJECTIVES, RATIO_UNITS

SCALE_GRADIENTS = ("none", "trunk", "all")  # how the Laplace scale enters the update
LR_SCHEDULES = ("constant", "cosine")  # the learning rate across one update's optimizer steps


@dataclass
class LearnerConfig:
    """How the learner turns groups of imagined rollouts into policy updates.

    Attributes:
        lr_lora: AdamW learning rate of the LoRA adapters (World-Env: 1e-4).
        lr_heads: AdamW learning rate of the action and scale heads (World-Env: 1e-5).
        weight_decay: AdamW decoupled weight decay, both parameter groups.
        betas: AdamW (beta1, beta2).
        adam_eps: AdamW epsilon.
        clip_eps: PPO clip range eps (LOOP: 0.1).
        ppo_epochs: passes over one batch of trajectories per update call.
        minibatch_size: trajectories per optimizer step.
        micro_batch_size: trajectories per forward/backward pass; gradients of
            minibatch_size / micro_batch_size passes are accumulated before each step.
        max_grad_norm: gradients are clipped to this global L2 norm before each step.
        skip_constant_groups: drop groups whose rewards are all equal (zero advantage),
            "dynamic sampling" of RIPT-VLA.
        constant_reward_atol: rewards within this spread count as equal.
        ratio: what one PPO ratio covers: "chunk" (a whole action chunk, chunk x A Laplace
            dimensions in one ratio), "action" (one executed action, its A dimensions summed:
            RIPT-VLA) or "dim" (one dimension of an executed action, like a token ratio).
            Clipping, masking and the per-trajectory mean all work on these units.
        advantage: "rloo" (R_n minus the mean of the other rollouts of its group, LOOP),
            "grpo" (group mean and standard deviation, RLinf / SimpleVLA-RL) or
            "rloo_mirrored" (R_n minus the mean of the rollouts outside n's mirrored pair; the
            advantage of mirrored rollouts, ``rollout.mirrored``).
        scale_gradient: how the Laplace scale b enters the update. "none": the loss treats b as
            a constant (the scale head frozen, and no gradient through b into the shared trunk);
            "trunk": the scale head frozen, but the gradient through b reaches the LoRA trunk
            that feeds it (how the learner worked until session 17); "all": the scale head
            trained with the heads. RIPT-VLA freezes the head in every OpenVLA-OFT config: the
            easiest way to a higher sampled success is a narrower scale, and through the trunk
            the gradient still takes it (at 2x sampling width, 97% of a batch gradient's
            energy pointed there; docs/RESULTS.md, session 17).
        clip_per_group: clip the gradient norm of the LoRA and the head parameters each to
            ``max_grad_norm`` (RIPT-VLA) instead of one global norm over both.
        max_staleness: trajectories acted by a policy more than this many published versions
            behind the learner's are dropped, never trained on (counted in
            ``learner/stale_dropped``); overlapped rollouts (``post_train.overlap``) are one
            version behind.
        objective: what an update minimizes. "ppo": LOOP's PPO-clip surrogate on the
            advantages. "filtered_l1": the mean action regressed (L1, as SFT's first stage)
            toward the sampled actions of the trajectories with a positive advantage in the
            groups kept, nothing for the others (filtered self-imitation; with
            ``rollout.explore: one_step`` it imitates the chunks that turned a group's shared
            state into a better outcome). ``ratio``, ``clip_eps`` and ``scale_gradient`` do not
            enter it (the ratio statistics are still reported).
        anchor_weight: weight of a supervised anchor added to every optimizer step: the L1
            loss of the mean action on a minibatch of the SFT's own training demos
            (``anchor_data``), as SFT's first stage computes it (0: none). It keeps the
            policy near what the demos taught while it imitates its own search
            (``objective: filtered_l1``): without it, that imitation gained nothing
            measurable (docs/RESULTS.md, session 20).
        anchor_data: episode stores of the demos (the SFT's ``--data``).
        anchor_demos_per_task: expert demos per task the SFT trained on; the anchor uses the
            same training split (``policy.sft.split_demos`` with ``sft.val_fraction`` and
            ``sft.seed``).
        anchor_batch_size: demo samples per anchor minibatch.
        lr_schedule: the learning rates across the optimizer steps of one update call:
            "constant", or "cosine" from ``lr_lora`` / ``lr_heads`` down to ``lr_min_ratio``
            times them at its last step (each update one cosine, like an SFT cycle).
        lr_min_ratio: the cosine's final learning rate as a share of the initial one.
        reset_optimizer: start every update call with fresh AdamW moments (with ``cosine``,
            each update is a fresh fine-tuning cycle from the last weights: what session 20's
            search-and-distill rounds did).
        gradient_signal: before each update, also compute the policy gradient of the kept
            trajectories in two halves, their initial-state groups alternating between them,
            and report how much of the batch gradient is signal rather than sampling noise:
            ``learner/grad_half_cosine`` (the halves' cosine) and ``learner/grad_signal_share``
            (h1 . h2 / |(h1 + h2) / 2|^2, an estimate of |E g|^2 / E|g|^2 for the whole batch;
            near 0 or below when the batch's gradient is noise). One more forward and
            backward pass over the batch; off by default.

    How many learner workers share the work (data parallelism) is placement, set in the
    cluster section (``cluster.learners``); the update is the same for any number of them. The
    group size (N rollouts per initial state) is the rollouts' (``rollout.group_size``): the
    learner reads the groups from the batch's group ids.
    """

    lr_lora: float = 1e-4
    lr_heads: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    clip_eps: float = 0.1
    ppo_epochs: int = 1
    minibatch_size: int = 8
    micro_batch_size: int = 8
    max_grad_norm: float = 1.0
    skip_constant_groups: bool = True
    constant_reward_atol: float = 1e-6
    ratio: str = "action"
    advantage: str = "rloo"
    scale_gradient: str = "none"
    clip_per_group: bool = True
    max_staleness: int = 1
    objective: str = "ppo"
    anchor_weight: float = 0.0
    anchor_data: list[str] = field(default_factory=list)
    anchor_demos_per_task: int = 5
    anchor_batch_size: int = 16
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.1
    reset_optimizer: bool = False
    gradient_signal: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]  # YAML gives a list
        require(self.lr_lora >= 0, f"lr_lora must be >= 0, got {self.lr_lora}")
        require(self.max_staleness >= 0, f"max_staleness must be >= 0, got {self.max_staleness}")
        require(self.lr_heads >= 0, f"lr_heads must be >= 0, got {self.lr_heads}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas}",
        )
        require(self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}")
        require(0.0 < self.clip_eps < 1.0, f"clip_eps must be in (0, 1), got {self.clip_eps}")
        require(self.ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        require(self.minibatch_size >= 1, f"minibatch_size must be >= 1, got {self.minibatch_size}")
        require(
            self.micro_batch_size >= 1,
            f"micro_batch_size must be >= 1, got {self.micro_batch_size}",
        )
        require(
            self.minibatch_size % self.micro_batch_size == 0,
            f"minibatch_size ({self.minibatch_size}) must be a multiple of micro_batch_size "
            f"({self.micro_batch_size})",
        )
        require(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        require(
            self.constant_reward_atol >= 0,
            f"constant_reward_atol must be >= 0, got {self.constant_reward_atol}",
        )
        require(
            self.ratio in RATIO_UNITS,
            f"learner.ratio must be one of {list(RATIO_UNITS)}, got {self.ratio!r}",
        )
        require(
            self.scale_gradient in SCALE_GRADIENTS,
            f"learner.scale_gradient must be one of {list(SCALE_GRADIENTS)}, "
            f"got {self.scale_gradient!r}",
        )
        require(self.anchor_weight >= 0, f"anchor_weight must be >= 0, got {self.anchor_weight}")
        require(
            self.anchor_weight == 0 or bool(self.anchor_data),
            "learner.anchor_weight needs learner.anchor_data: the episode stores of the SFT's "
            "demos",
        )
        require(self.anchor_demos_per_task >= 1, "learner.anchor_demos_per_task must be >= 1")
        require(self.anchor_batch_size >= 1, "learner.anchor_batch_size must be >= 1")
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"learner.lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        require(
            0 <= self.lr_min_ratio <= 1,
            f"learner.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}",
        )
        require(
            self.objective in OBJECTIVES,
            f"learner.objective must be one of {list(OBJECTIVES)}, got {self.objective!r}",
        )
        require(
            self.advantage in ADVANTAGES,
            f"learner.advantage must be one of {sorted(ADVANTAGES)}, got {self.advantage!r}",
        )
