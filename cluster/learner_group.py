"""The learner role on the cluster: one or more data-parallel ``LearnerWorker`` actors.

With ``cluster.learners = K > 1`` the K workers form a torch.distributed group (gloo on CPU,
NCCL on GPU; rank 0's node hosts the rendezvous). Every worker receives the same trajectory
batches by reference and trains on its share of each minibatch; gradients are all-reduced, so
the K workers hold identical weights and rank 0 speaks for the group (metrics, published
weights, checkpoints). With K = 1 this is a thin wrapper over one actor.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from cluster.placement import start_actor
from learner.config import LearnerConfig
from learner.worker import LearnerWorker


def _rendezvous_address(_worker: Any) -> str:
    """Runs inside rank 0's actor: "tcp://<node ip>:<free port>" on that node."""
    import ray

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"tcp://{ray.util.get_node_ip_address()}:{port}"


class LearnerGroup:
    """Starts and drives the learner workers; the driver's handle on the learner role.

    Args:
        policy_factory: builds the training policy inside each worker.
        config: learner settings (the same for every worker, seed included, so that every
            worker draws the same minibatches).
        num_learners: K, data-parallel workers.
        num_gpus / num_cpus: resources per worker.
        seed: minibatch shuffling seed.
        name: actor name prefix.
        anchor_split: (val_fraction, seed) of the SFT's demo split (``LearnerWorker``).
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        config: LearnerConfig,
        *,
        num_learners: int,
        num_gpus: float,
        num_cpus: float,
        seed: int,
        name: str,
        anchor_split: tuple[float, int] = (0.2, 0),
    ):
        import ray

        self.workers = [
            start_actor(
                LearnerWorker,
                policy_factory,
                config,
                seed=seed,
                anchor_split=anchor_split,
                num_gpus=num_gpus,
                num_cpus=num_cpus,
                name=f"{name}-{rank}",
            )
            for rank in range(num_learners)
        ]
        if num_learners > 1:
            address = ray.get(self.workers[0].__ray_call__.remote(_rendezvous_address))
            ray.get(
                [
                    w.join_group.remote(address, rank, num_learners)
                    for rank, w in enumerate(self.workers)
                ]
            )

    @property
    def lead(self) -> Any:
        """Rank 0's actor handle."""
        return self.workers[0]

    def update(self, *batches: Any, groups: list[int] | None = None) -> dict[str, float]:
        """LOOP on the batches (ObjectRefs) on every worker, only on ``groups`` when given;
        rank 0's metrics."""
        import ray

        return ray.get([w.update.remote(*batches, groups=groups) for w in self.workers])[0]

    def publish(self) -> Any:
        """Bump every worker's version; an ObjectRef of rank 0's (version, weights)."""
        published = self.lead.publish.remote()
        for w in self.workers[1:]:
            w.publish.remote(with_weights=False)  # ordered after update on each actor
        return published

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint into every worker; returns the restored version."""
        import ray

        return ray.get([w.restore.remote(state) for w in self.workers])[0]

    def kill(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)


__all__ = ["LearnerGroup"]
