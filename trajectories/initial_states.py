"""Keyframe selection and initial-state sampling for imagined rollouts.

WoVR's keyframe-initialized rollouts start imagination from real keyframes inside stored
episodes, with the frames before them as context, so imagined horizons stay short where world
model errors would pile up. Keyframes here are the episode start and the steps where the
gripper command flips (grasp / release), up to (not including) the first success.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajectories.episode import Episode
from trajectories.store import EpisodeStore


@dataclass
class InitialState:
    """A start inside a stored episode: the context frames end at row ``start``."""

    episode_id: str
    start: int
    task_id: str
    instruction: str
    frames: np.ndarray  # (T0, H, W, 3) uint8, the last one is row `start`
    proprio: np.ndarray  # (8,)


def select_keyframes(ep: Episode) -> list[int]:
    """Rows where imagination may start: 0 and each gripper-command flip before success."""
    first_success = int(np.argmax(ep.success)) if ep.success.any() else ep.num_steps + 1
    grip = np.sign(ep.actions[: ep.num_steps, 6])
    flips = np.nonzero(grip[1:] != grip[:-1])[0] + 1
    keys = [0] + [int(t) for t in flips if t < first_success]
    return sorted(set(keys))


def initial_state(ep: Episode, start: int, context_frames: int) -> InitialState:
    """The start at row ``start`` with up to ``context_frames`` frames (repeating the first)."""
    if not 0 <= start <= ep.num_steps:
        raise ValueError(f"start {start} is outside episode {ep.episode_id!r} (0..{ep.num_steps})")
    rows = np.clip(np.arange(start - context_frames + 1, start + 1), 0, None)
    return InitialState(
        episode_id=ep.episode_id,
        start=start,
        task_id=ep.task_id,
        instruction=ep.instruction,
        frames=ep.images[rows],
        proprio=ep.proprio[start].copy(),
    )


class InitialStateSampler:
    """Deterministic stream of start points from episode stores.

    Args:
        stores: where the real episodes are (typically the expert demos).
        keyframes: also start at keyframes (WoVR), else only at step 0.
        context_frames: frames given as context (history) before the start.
        seed: seed of the sampling order; ``cursor`` counts draws (saved in checkpoints).
        sources: episode sources to start from (default: all).
    """

    def __init__(
        self,
        stores: list[EpisodeStore],
        *,
        keyframes: bool = True,
        context_frames: int = 1,
        seed: int = 0,
        sources: tuple[str, ...] | None = None,
    ):
        self.stores = stores
        self.context_frames = context_frames
        self.seed = seed
        self.cursor = 0
        self.points: list[tuple[int, str, int]] = []
        for si, store in enumerate(stores):
            for info in store.episode_info:
                if sources is not None and info["source"] not in sources:
                    continue
                starts = (
                    select_keyframes(store.load_episode(info["episode_id"])) if keyframes else [0]
                )
                self.points.extend((si, info["episode_id"], s) for s in starts)
        if not self.points:
            raise ValueError("no initial states: the episode stores hold no usable episodes")

    def sample(self, n: int) -> list[InitialState]:
        """The next ``n`` start points (a seeded permutation per pass over all points)."""
        out = []
        for _ in range(n):
            epoch, i = divmod(self.cursor, len(self.points))
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.points))
            si, eid, start = self.points[int(perm[i])]
            out.append(initial_state(self.stores[si].load_episode(eid), start, self.context_frames))
            self.cursor += 1
        return out
