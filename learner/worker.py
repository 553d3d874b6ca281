"""The learner role: a policy, its ``Learner``, and checkpoints, as one object an actor wraps.

Wrap with ``ray.remote(**resources)(LearnerWorker)`` where it is created (``cluster/``).
Rollout workers send ``TrajectoryBatch`` pieces; ``update`` joins them, runs LOOP, and
``publish`` hands out the new trainable weights with their version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from learner.batch import TrajectoryBatch, concat_batches
from learner.config import LearnerConfig
from learner.learner import Learner


def demo_anchor(
    policy: Any, config: LearnerConfig, split: tuple[float, int]
) -> Callable[[torch.Generator], torch.Tensor]:
    """The SFT's L1 loss on a random minibatch of its training demos (``learner.anchor_*``)."""
    from policy.sft import ChunkData, l1_loss, make_data, split_demos
    from trajectories.store import EpisodeStore

    parts = []
    for path in config.anchor_data:
        store = EpisodeStore(path)
        ids, _ = split_demos(
            store,
            demos_per_task=config.anchor_demos_per_task,
            val_fraction=split[0],
            seed=split[1],
        )
        wrist = policy.cfg.num_images == 2
        parts.append(make_data(store, ids, policy.normalizer, chunk=policy.cfg.chunk, wrist=wrist))
    data = ChunkData(
        torch.cat([d.images for d in parts]),
        None if parts[0].wrist is None else torch.cat([d.wrist for d in parts]),  # type: ignore[misc]
        torch.cat([d.proprio for d in parts]),
        [s for d in parts for s in d.instructions],
        torch.cat([d.chunks for d in parts]),
        torch.cat([d.mask for d in parts]),
        torch.cat([d.first for d in parts]),
        torch.cat([d.switch for d in parts]),
    )
    size = config.anchor_batch_size

    def loss(generator: torch.Generator) -> torch.Tensor:
        return l1_loss(policy, data, torch.randint(len(data), (size,), generator=generator))

    return loss


class LearnerWorker:
    """Holds the training copy of the policy.

    Args:
        policy_factory: builds the policy (on this role's device).
        config: learner settings.
        seed: seed of the minibatch shuffling.
        pad_id: token id used to pad instruction ids when joining batches.
        anchor_split: (val_fraction, seed) of the SFT's split of its demos: the anchor
            (``learner.anchor_weight``) trains on the SFT's training demos only.
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        config: LearnerConfig,
        *,
        seed: int = 0,
        pad_id: int = 0,
        anchor_split: tuple[float, int] = (0.2, 0),
    ):
        self.policy = policy_factory()
        self.policy.eval()  # no dropout: log-probs must match the acting copies
        anchor = demo_anchor(self.policy, config, anchor_split) if config.anchor_weight else None
        self.learner = Learner(self.policy, config, seed=seed, anchor=anchor)
        self.pad_id = pad_id

    def update(
        self, *batches: TrajectoryBatch, groups: list[int] | None = None
    ) -> dict[str, float]:
        """Run LOOP on the joined batches (only on ``groups`` when given: dynamic sampling's
        choice); returns ``learner/*`` metrics (+ update time)."""
        t = time.perf_counter()
        batch = concat_batches(list(batches), pad_ids={"input_ids": self.pad_id})
        metrics = self.learner.update(batch, groups=groups)
        metrics["timers/learner_update_s"] = time.perf_counter() - t
        return metrics

    def join_group(self, init_method: str, rank: int, world_size: int) -> int:
        """Join the data-parallel group of ``world_size`` learner workers, then take rank 0's
        trainable weights so every worker starts identical.

        Args:
            init_method: torch.distributed rendezvous, e.g. "tcp://10.0.0.5:29500".
            rank: this worker's rank in [0, world_size).
            world_size: number of learner workers.
        Returns:
            the rank.
        """
        dist = torch.distributed
        if dist.is_initialized():
            raise RuntimeError("this learner worker already belongs to a process group")
        backend = "nccl" if self.learner.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
        self.learner.broadcast_parameters(src=0)
        return rank

    def publish(self, with_weights: bool = True) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, trainable weights) after bumping the version; ``with_weights=False``
        returns an empty dict (data-parallel workers other than rank 0 only count versions)."""
        if not with_weights:
            self.learner.check_or_roll_back()  # as rank 0 does, so the workers stay equal
            self.learner.version += 1
            return self.learner.version, {}
        return self.learner.publish()

    def current(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, trainable weights) without bumping: what workers load at (re)start."""
        weights = {
            k: v.detach().to("cpu", copy=True)
            for k, v in self.policy.trainable_state_dict().items()
        }
        return self.learner.version, weights

    def version(self) -> int:
        return self.learner.version

    def trainable_bytes(self) -> int:
        return sum(
            v.numel() * v.element_size() for v in self.policy.trainable_state_dict().values()
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint needs from the learner: trainable weights and learner state.

        Returned (not written) so the driver saves it on its own filesystem whatever node
        the learner runs on.
        """
        weights = {
            k: v.detach().cpu().contiguous() for k, v in self.policy.trainable_state_dict().items()
        }
        return {"trainable": weights, "learner": self.learner.state_dict()}

    def restore(self, state: dict[str, Any]) -> int:
        """Load ``checkpoint_state()`` output; returns the restored weights version."""
        missing = [k for k in ("trainable", "learner") if k not in state]
        if missing:
            raise ValueError(f"learner checkpoint lacks {missing}")
        self.policy.load_trainable_state_dict(state["trainable"])
        self.learner.load_state_dict(state["learner"])
        return self.learner.version

    def export_policy(self) -> dict[str, bytes]:
        """The files of a self-contained policy checkpoint folder (every weight, the LLM's base
        as a stock transformers folder, the peft adapter: ``policy.checkpoint``'s layout), as
        {relative path: bytes}."""
        import tempfile

        from policy.checkpoint import save_policy

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "policy"
            save_policy(self.policy, out, include_base=True)
            return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
