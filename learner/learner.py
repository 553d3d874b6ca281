"""The learner: LOOP updates (RLOO advantages + PPO-clip) of a policy's LoRA adapters and heads.

Plain PyTorch, no Ray: a Ray actor wraps this class elsewhere. One ``update`` call takes a batch
of trajectories grouped by initial state, computes RLOO (or GRPO) advantages per group, trains
on the groups the rollout stage selected (dynamic sampling) or on every group whose rewards are
not all equal, and runs PPO epochs over minibatches of trajectories with gradient accumulation
and clipping; one PPO ratio covers a chunk, an action or a dimension (``learner.ratio``); or,
with ``learner.objective: filtered_l1``, regresses the mean action toward the actions of the
trajectories with a positive advantage (filtered self-imitation) in the same loop. An
optimizer step whose loss or gradients are not finite is never applied, and one that would
leave a weight non-finite is undone; both are counted in ``learner/skipped_updates``.
``publish`` hands out the trainable weights with a new version number for rollout workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from tqdm import tqdm

from learner.batch import TrajectoryBatch
from learner.config import LearnerConfig
from learner.loop import (
    ADVANTAGES,
    filtered_l1_loss,
    nonconstant_group_mask,
    ppo_clip_loss,
    ratio_log_probs,
    termination_mask,
)
from policy.distribution import laplace_entropy, laplace_log_density

PARAM_GROUPS = ("lora", "heads")  # optimizer groups; the policy's "scale_head" joins "heads"
_STAT_KEYS = ("loss", "approx_kl", "clip_frac", "ratio_mean", "entropy")


def data_parallel_rank() -> tuple[int, int]:
    """(rank, world size) of this process's torch.distributed group; (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _flat_collective(
    tensors: Sequence[torch.Tensor], collective: Callable[[torch.Tensor], Any]
) -> None:
    """Run one collective on the tensors joined into a flat float32 buffer, then copy the
    result back into each tensor in place (one call instead of one per tensor)."""
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    collective(flat)
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over the data-parallel workers, in place, in one collective call."""
    _flat_collective(tensors, torch.distributed.all_reduce)


class TrainablePolicy(Protocol):
    """What the learner needs from a policy (``policy.policy.Policy`` implements it).

    ``param_groups`` returns {"lora": [...], "heads": [...], "scale_head": [...]} (a group may
    be empty or absent), every parameter trainable and in one group only. ``log_density(obs,
    actions)`` scores N action chunks: ``obs`` is the batch's obs dict with leading dim N
    instead of (B, T), ``actions`` is (N, chunk, A); it returns the per-dimension
    log-densities (N, chunk, A) and the Laplace log_scale (broadcastable to (N, chunk, A)) for
    the entropy metric; ``policy(obs)`` returns the Laplace mean and log_scale (N, chunk, A)
    (the ``filtered_l1`` objective regresses the mean). It must be deterministic (dropout
    off) so that the first PPO ratio is exactly 1. ``trainable_state_dict`` returns the
    trainable weights (LoRA + heads) by name, ``load_trainable_state_dict`` copies such weights
    back in place. With ``scale_gradient`` False the log-densities must carry no gradient
    through the scale (b a constant in them).
    """

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]: ...

    def __call__(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_density(
        self, obs: dict[str, torch.Tensor], actions: torch.Tensor, *, scale_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def trainable_state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class Learner:
    """AdamW on two parameter groups (LoRA at ``lr_lora``, heads at ``lr_heads``) with LOOP.

    Args:
        policy: the policy to train, see ``TrainablePolicy``.
        config: the learner config.
        anchor: a supervised loss of the policy on a random minibatch drawn with the generator
            it is given (the SFT's L1 on its demos), added times ``config.anchor_weight`` to
            every optimizer step; needed when that weight is > 0.
        seed: seed of the minibatch shuffling.
    Attributes:
        version: weights version of the last ``publish`` (0 before the first).
        skipped_updates: optimizer steps skipped for non-finite loss or gradients, in total.
        optimizer_steps: optimizer steps applied, in total.
    """

    def __init__(
        self,
        policy: TrainablePolicy,
        config: LearnerConfig,
        *,
        seed: int = 0,
        anchor: Callable[[torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        self.policy = policy
        self.config = config
        if config.anchor_weight > 0 and anchor is None:
            raise ValueError("learner.anchor_weight > 0 needs an anchor loss (the SFT's demos)")
        self.anchor = anchor if config.anchor_weight > 0 else None
        self._anchor_gen = torch.Generator().manual_seed(seed + 1)
        self._anchor_losses: list[float] = []
        groups = dict(policy.param_groups())
        scale_head = list(groups.pop("scale_head", []))
        if config.scale_gradient == "all":
            groups["heads"] = [*groups.get("heads", []), *scale_head]
        else:  # frozen: out of the optimizer and without gradients, so bit for bit unchanged
            for p in scale_head:
                p.requires_grad_(False)
        unknown = sorted(set(groups) - set(PARAM_GROUPS))
        if unknown:
            raise ValueError(
                f"policy.param_groups() returned unknown group(s) {unknown}; "
                f"expected keys among {[*PARAM_GROUPS, 'scale_head']}"
            )
        seen: set[int] = set()
        self._params: list[torch.nn.Parameter] = []
        opt_groups: list[dict[str, Any]] = []
        for name in PARAM_GROUPS:
            params = list(groups.get(name, []))
            for p in params:
                if not p.requires_grad:
                    raise ValueError(f"policy.param_groups()[{name!r}] holds a frozen parameter")
                if id(p) in seen:
                    raise ValueError(
                        f"a parameter appears twice in policy.param_groups() ({name!r})"
                    )
                seen.add(id(p))
            self._params.extend(params)
            if params:
                opt_groups.append({"params": params, "name": name})
        if not opt_groups:
            raise ValueError("policy.param_groups() holds no parameters: nothing to train")
        self.device = self._params[0].device
        self._groups = [g["params"] for g in opt_groups]
        self.optimizer = torch.optim.AdamW(opt_groups, lr=config.lr_lora)
        self._apply_hyperparameters()
        self.version = 0
        self.skipped_updates = 0
        self.rolled_back = 0  # publishes that found the policy broken and restored the last good
        self._probe: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        self._last_good = {k: v.detach().clone() for k, v in policy.trainable_state_dict().items()}
        self.optimizer_steps = 0
        self._generator = torch.Generator().manual_seed(seed)

    def _apply_hyperparameters(self, lr_factor: float = 1.0) -> None:
        """Set each group's AdamW settings from the config (the one place they live), its
        learning rate times ``lr_factor`` (``learner.lr_schedule``)."""
        lrs = {"lora": self.config.lr_lora, "heads": self.config.lr_heads}
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[group["name"]] * lr_factor
            group["betas"] = tuple(self.config.betas)
            group["eps"] = self.config.adam_eps
            group["weight_decay"] = self.config.weight_decay

    def _lr_factor(self, step: int, num_steps: int) -> float:
        """The learning rate's share at optimizer step ``step`` of ``num_steps`` in one update:
        1 throughout ("constant"), or a cosine from 1 at the first step to ``lr_min_ratio`` at
        the last ("cosine")."""
        if self.config.lr_schedule == "constant" or num_steps <= 1:
            return 1.0
        r = self.config.lr_min_ratio
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * step / (num_steps - 1)))

    def advantages(
        self, batch: TrajectoryBatch, groups: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages per group (``config.advantage``) and which trajectories to train on.

        Args:
            batch: B trajectories in groups of the same size N >= 2 (any order).
            groups: the group ids to train on (dynamic sampling chose them); None: every group,
                less the all-equal-reward ones when ``config.skip_constant_groups`` is on.
        Returns:
            advantages: (B,) e.g. RLOO's A_n = R_n - mean of the other rewards of its group.
            keep: (B,) bool, the trajectories to train on.
        Raises:
            ValueError: if the groups do not all hold the same number N >= 2 of trajectories.
        """
        gids, inverse, counts = torch.unique(
            batch.group_ids, return_inverse=True, return_counts=True
        )
        bad = (counts != counts[0]).nonzero().flatten()
        if len(bad) > 0:
            i = int(bad[0])
            raise ValueError(
                f"groups do not hold the same number of trajectories: group {int(gids[0])} holds "
                f"{int(counts[0])} trajectories, group {int(gids[i])} holds {int(counts[i])}; "
                f"every initial state needs rollout.group_size rollouts"
            )
        n = int(counts[0])
        if n < 2:
            raise ValueError(
                f"groups hold {n} trajectory each: RLOO and GRPO need rollout.group_size >= 2"
            )
        order = torch.argsort(inverse, stable=True)  # (B,): trajectories grouped together
        rewards = batch.rewards[order].reshape(len(gids), n)  # (G, N)
        advantages = torch.empty_like(batch.rewards)
        advantages[order] = ADVANTAGES[self.config.advantage](rewards).flatten()
        if groups is not None:
            keep_group = torch.isin(gids, torch.as_tensor(list(groups), device=gids.device))
            missing = set(groups) - set(gids.tolist())
            if missing:
                raise ValueError(f"groups {sorted(missing)} to train on are not in the batch")
        elif self.config.skip_constant_groups:
            keep_group = nonconstant_group_mask(rewards, self.config.constant_reward_atol)  # (G,)
        else:
            keep_group = torch.ones(len(gids), dtype=torch.bool, device=rewards.device)
        return advantages, keep_group[inverse]

    def update(
        self,
        batch: TrajectoryBatch,
        *,
        groups: Sequence[int] | None = None,
        progress: bool = False,
    ) -> dict[str, float]:
        """Run ``ppo_epochs`` epochs of PPO-clip over the batch.

        Args:
            batch: the trajectories, collected by policy versions <= ``self.version``.
            groups: train on these group ids only (see ``advantages``).
            progress: show a tqdm bar over optimizer steps.
        Returns:
            metrics: ``learner/loss``, ``approx_kl``, ``clip_frac``, ``ratio_mean``,
                ``grad_norm`` (before clipping) and ``entropy`` (Laplace, per action chunk):
                means over the applied optimizer steps (NaN when none was applied);
                ``skipped_updates`` and ``optimizer_steps`` in this call;
                ``kept_trajectories``, ``dropped_constant_groups``, ``reward_mean``,
                ``advantage_abs_mean`` (over kept trajectories), ``staleness`` (mean of
                version - policy_version) and ``stale_dropped`` (trajectories beyond
                ``max_staleness``, not trained on); with ``config.gradient_signal``
                also ``grad_half_cosine`` and ``grad_signal_share``, measured before the
                first step.
        """
        batch = batch.to(self.device)
        advantages, keep = self.advantages(batch, groups)  # (B,), (B,)
        stale = (self.version - batch.policy_version) > self.config.max_staleness  # (B,)
        keep = keep & ~stale
        # the steps to score: valid (up to termination) and with a sampled action that ran (a
        # rollout that explores at one step only, ``rollout.explore: one_step``, has one)
        mask = termination_mask(batch.done) & batch.executed.bool().any(dim=-1)  # (B, T)
        kept = keep.nonzero().flatten()  # (K,)
        probe = kept[: self.config.micro_batch_size]
        b_idx, t_idx = mask[probe].nonzero(as_tuple=True)
        if len(b_idx):  # else keep the last update's probe (nothing trained now)
            sub = batch.index(probe)
            self._probe = (
                {k: v[b_idx, t_idx] for k, v in sub.obs.items()},
                sub.actions[b_idx, t_idx],
            )
        signal = self._gradient_signal(batch, mask, advantages, kept)
        mb = self.config.minibatch_size
        num_steps = self.config.ppo_epochs * math.ceil(len(kept) / mb)
        if self.config.reset_optimizer:  # a fresh cycle: AdamW's moments start again
            self.optimizer.state.clear()
        sums = dict.fromkeys((*_STAT_KEYS, "grad_norm"), 0.0)
        applied = skipped = 0
        bar = tqdm(total=num_steps, desc="learner", disable=not progress, leave=False)
        for _ in range(self.config.ppo_epochs):
            perm = torch.randperm(len(kept), generator=self._generator).to(kept.device)
            for start in range(0, len(kept), mb):
                idx = kept[perm[start : start + mb]]  # (<= minibatch_size,)
                self._apply_hyperparameters(self._lr_factor(applied + skipped, num_steps))
                stats = self._optimizer_step(batch, mask, advantages, idx=idx)
                bar.update(1)
                if stats is None:
                    skipped += 1
                    continue
                applied += 1
                for k, v in stats.items():
                    sums[k] += v
        bar.close()
        self._apply_hyperparameters()  # the configured rates between updates (checkpoints)
        self.skipped_updates += skipped
        self.optimizer_steps += applied
        metrics = {f"learner/{k}": (v / applied if applied else math.nan) for k, v in sums.items()}
        if self.anchor is not None:
            losses, self._anchor_losses = self._anchor_losses, []
            metrics["learner/anchor_l1"] = sum(losses) / len(losses) if losses else math.nan
        num_groups = len(torch.unique(batch.group_ids))
        metrics.update(
            {
                "learner/skipped_updates": float(skipped),
                "learner/rolled_back": float(self.rolled_back),
                "learner/optimizer_steps": float(applied),
                "learner/kept_trajectories": float(len(kept)),
                "learner/dropped_constant_groups": float(
                    num_groups - len(torch.unique(batch.group_ids[kept]))
                ),
                "learner/reward_mean": batch.rewards.mean().item(),
                "learner/advantage_abs_mean": (
                    advantages[kept].abs().mean().item() if len(kept) else 0.0
                ),
                "learner/staleness": (self.version - batch.policy_version).float().mean().item(),
                "learner/stale_dropped": float(stale.sum().item()),
                **signal,
            }
        )
        return metrics

    def _gradient_signal(
        self,
        batch: TrajectoryBatch,
        mask: torch.Tensor,
        advantages: torch.Tensor,
        kept: torch.Tensor,
    ) -> dict[str, float]:
        """Gradient of the kept trajectories' loss in two halves of their groups (the sorted
        group ids alternate between the halves, so no initial state is in both) at the
        current weights; ``config.gradient_signal`` explains the two metrics. Empty when
        the option is off, NaN when fewer than two groups are kept. The weights and the
        optimizer are untouched."""
        if not self.config.gradient_signal:
            return {}
        gids = batch.group_ids[kept]  # (K,)
        groups = torch.unique(gids)  # sorted
        if len(groups) < 2:
            return {"learner/grad_half_cosine": math.nan, "learner/grad_signal_share": math.nan}
        first = torch.isin(gids, groups[0::2])  # (K,)
        halves = []
        for idx in (kept[first], kept[~first]):
            self._accumulate_gradients(batch, mask, advantages, idx)
            halves.append(torch.cat([g.reshape(-1).double() for g in self._grads()]))
        self.optimizer.zero_grad(set_to_none=True)
        if data_parallel_rank()[1] > 1:
            all_reduce_sum(halves)
        h1, h2 = halves  # (P,) each: the per-trajectory mean gradient of one half
        dot = float(h1 @ h2)
        norms = float(h1.norm() * h2.norm())
        mean_sq = float(((h1 + h2) / 2).square().sum())
        return {
            "learner/grad_half_cosine": dot / norms if norms > 0 else math.nan,
            "learner/grad_signal_share": dot / mean_sq if mean_sq > 0 else math.nan,
        }

    def _accumulate_gradients(
        self,
        batch: TrajectoryBatch,
        mask: torch.Tensor,
        advantages: torch.Tensor,
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """Zero the gradients, then backward this worker's share ``idx[rank::world]`` of the
        trajectories ``idx`` in micro-batches, each loss weighted by its share of ``idx``'s
        trajectories (so the gradients summed over workers are those of the per-trajectory
        mean over ``idx``). Returns this worker's stats (``_STAT_KEYS``: the loss, and the
        per-step stats weighted by each micro-batch's share of the valid steps)."""
        rank, world = data_parallel_rank()
        self.optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(len(_STAT_KEYS), device=self.device)  # (loss, stats...)
        num_steps = mask[idx].sum()  # valid steps in all of idx
        local = idx[rank::world]  # this worker's share
        for start in range(0, len(local), self.config.micro_batch_size):
            micro = local[start : start + self.config.micro_batch_size]  # (M,)
            traj_share = len(micro) / len(idx)
            step_share = mask[micro].sum() / num_steps
            loss, stats = self._micro_loss(batch.index(micro), mask[micro], advantages[micro])
            (loss * traj_share).backward()
            stats = {k: v * step_share for k, v in stats.items()}
            stats["loss"] = loss.detach() * traj_share
            totals += torch.stack([stats[k].float() for k in _STAT_KEYS])
        return totals

    def _optimizer_step(
        self,
        batch: TrajectoryBatch,
        mask: torch.Tensor,
        advantages: torch.Tensor,
        *,
        idx: torch.Tensor,
    ) -> dict[str, float] | None:
        """Accumulate gradients over micro-batches of ``idx``, clip, and step if all finite.

        Each micro-batch loss is weighted by its share of the minibatch's trajectories, so the
        accumulated gradient is that of the per-trajectory mean over the whole minibatch; the
        per-step stats are weighted by its share of valid steps. Under data parallelism every
        worker holds the whole batch and draws the same minibatches; worker r takes the
        trajectories ``idx[r::world]``, and the summed gradients and stats (all-reduce) are
        those of one worker doing all of it, so every worker clips, checks and steps alike.
        Returns the step's stats, or None when the step was skipped (non-finite).
        """
        totals = self._accumulate_gradients(batch, mask, advantages, idx)
        if self.anchor is not None and data_parallel_rank()[0] == 0:  # once per step
            anchor = self.anchor(self._anchor_gen)
            (self.config.anchor_weight * anchor).backward()
            self._anchor_losses.append(float(anchor.detach()))
        if data_parallel_rank()[1] > 1:
            all_reduce_sum([totals, *self._grads()])
        grad_norm = self._clip_gradients()
        values = dict(zip(_STAT_KEYS, totals.tolist(), strict=True))
        if not (math.isfinite(values["loss"]) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        before = [p.detach().clone() for p in self._params]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not all(bool(torch.isfinite(p).all()) for p in self._params):
            # finite gradients, but the step (e.g. a huge learning rate) overflowed a weight:
            # undo it, so such weights are never published or exported
            with torch.no_grad():
                for p, b in zip(self._params, before, strict=True):
                    p.copy_(b)
            return None
        values["grad_norm"] = float(grad_norm)
        return values

    @torch.no_grad()
    def outputs_finite(self) -> bool:
        """Every trainable weight finite, and the policy's log-densities and scales on the last
        update's probe (a few of its trajectories) too: weights of 1e30 are finite, what a
        network computes with them is not."""
        if not all(bool(torch.isfinite(p).all()) for p in self._params):
            return False
        if self._probe is None:
            return True
        obs, actions = self._probe
        density, log_scale = self.policy.log_density(obs, actions)
        return bool(torch.isfinite(density).all() and torch.isfinite(log_scale).all())

    def _clip_gradients(self) -> torch.Tensor:
        """Clip to ``max_grad_norm``: one global norm, or each optimizer group's own
        (``clip_per_group``). Returns the global norm before clipping."""
        if not self.config.clip_per_group:
            return torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm)
        norms = [torch.nn.utils.clip_grad_norm_(g, self.config.max_grad_norm) for g in self._groups]
        return torch.stack(norms).square().sum().sqrt()

    def _grads(self) -> list[torch.Tensor]:
        """Every trainable parameter's gradient, zeros where none was computed."""
        grads = []
        for p in self._params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        return grads

    def broadcast_parameters(self, src: int = 0) -> None:
        """Copy worker ``src``'s trainable weights to every data-parallel worker (in place)."""
        _, world = data_parallel_rank()
        if world > 1:
            _flat_collective(self._params, lambda flat: torch.distributed.broadcast(flat, src=src))

    def _micro_loss(
        self, batch: TrajectoryBatch, mask: torch.Tensor, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO-clip loss of a few trajectories: score their valid steps in one policy call."""
        b_idx, t_idx = mask.nonzero(as_tuple=True)  # (N,), (N,) valid steps
        obs = {k: v[b_idx, t_idx] for k, v in batch.obs.items()}  # (N, ...)
        actions = batch.actions[b_idx, t_idx]  # (N, chunk, A)
        mu_n = None
        if self.config.objective == "filtered_l1":  # regress mu; densities for the statistics
            mu_n, log_scale = self.policy(obs)  # (N, chunk, A) each
            density = laplace_log_density(actions.to(mu_n), mu_n, log_scale).detach()
        else:
            density, log_scale = self.policy.log_density(
                obs, actions, scale_gradient=self.config.scale_gradient != "none"
            )
        if density.shape != actions.shape:
            raise ValueError(
                f"policy.log_density returned shape {tuple(density.shape)} for action chunks "
                f"{tuple(actions.shape)}; expected the same shape"
            )
        new = torch.zeros(batch.old_log_probs.shape, dtype=torch.float32, device=density.device)
        new = new.index_put((b_idx, t_idx), density.float())  # (B, T, chunk, A)
        unit = self.config.ratio
        log_probs, unit_mask = ratio_log_probs(new, mask, batch.executed, unit)  # (B, U)
        old, _ = ratio_log_probs(batch.old_log_probs.float(), mask, batch.executed, unit)
        loss, stats = ppo_clip_loss(
            log_probs, old, advantages.float(), unit_mask, self.config.clip_eps
        )
        if mu_n is not None:
            mu = torch.zeros(batch.actions.shape, dtype=torch.float32, device=density.device)
            mu = mu.index_put((b_idx, t_idx), mu_n.float())  # (B, T, chunk, A)
            acted = batch.executed.bool() & mask.bool()[..., None]  # (B, T, chunk)
            units = acted[..., None].expand(mu.shape).flatten(1)  # (B, T * chunk * A)
            loss = filtered_l1_loss(
                mu.flatten(1), batch.actions.float().flatten(1), advantages.float(), units
            )
        log_scale = log_scale.detach().float().expand(actions.shape)  # (N, chunk, A)
        stats["entropy"] = laplace_entropy(log_scale).sum(dim=-1).mean()
        return loss, stats

    def publish(self) -> tuple[int, dict[str, torch.Tensor]]:
        """Bump the weights version and return it with a CPU copy of the trainable weights.

        If the updates since the last publish broke the policy (``outputs_finite``), its
        trainable weights go back to the last published ones first (counted in
        ``rolled_back`` and ``skipped_updates``): broken weights are never published.

        Returns:
            version: the new version number (1 after the first publish).
            weights: the policy's ``trainable_state_dict`` (LoRA + heads), detached CPU copies.
        """
        self.check_or_roll_back()
        self.version += 1
        weights = {
            k: v.detach().to("cpu", copy=True)
            for k, v in self.policy.trainable_state_dict().items()
        }
        return self.version, weights

    def check_or_roll_back(self) -> bool:
        """Restore the last published weights if the policy is broken; True when it was. Every
        data-parallel worker calls it alike (same weights, same probe, same decision)."""
        if self.outputs_finite():
            self._last_good = {
                k: v.detach().clone() for k, v in self.policy.trainable_state_dict().items()
            }
            return False
        self.policy.load_trainable_state_dict(self._last_good)
        self.rolled_back += 1
        self.skipped_updates += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Learner state for checkpoints: optimizer, counters, shuffling RNG.

        The policy's trainable weights are not included; save them with the policy.
        """
        return {
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
            "skipped_updates": self.skipped_updates,
            "optimizer_steps": self.optimizer_steps,
            "generator": self._generator.get_state(),
            **({"anchor_generator": self._anchor_gen.get_state()} if self.anchor else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output. AdamW settings stay those of the current config.

        Raises:
            ValueError: if keys are missing or the optimizer state does not match this
                policy's parameter groups.
        """
        missing = [k for k in self.state_dict() if k not in state]
        if missing:
            raise ValueError(f"learner checkpoint is missing key(s) {missing}")
        saved = [g.get("name") for g in state["optimizer"].get("param_groups", [])]
        current = [g["name"] for g in self.optimizer.param_groups]
        if saved != current:
            raise ValueError(
                f"learner checkpoint has parameter groups {saved}, this policy has {current}"
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"learner checkpoint does not match this policy's trainable parameters: {e}"
            ) from None
        self._apply_hyperparameters()
        self._last_good = {
            k: v.detach().clone() for k, v in self.policy.trainable_state_dict().items()
        }
        self.version = int(state["version"])
        self.skipped_updates = int(state["skipped_updates"])
        self.optimizer_steps = int(state["optimizer_steps"])
        self._generator.set_state(state["generator"])
        if self.anchor is not None:
            self._anchor_gen.set_state(state["anchor_generator"])


__all__ = ["Learner", "TrainablePolicy", "PARAM_GROUPS", "data_parallel_rank", "all_reduce_sum"]
