"""Imagined replays written as episode stores: training data for a reward model of imagined frames.

The reflector learns what success looks like on real frames; on a world model's frames a success
looks blurrier and fainter, and R stays low (the imagined replays in ``evaluate.reward_agreement``
and ``cluster.imagined_eta`` measure it). Replaying real episodes open loop through the world
model with their recorded actions gives frames in the world model's own rendering, each labeled
with the real success of the step it stands for; written as stores (source ``imagined``), they
train the reflector beside the real episodes (``rehearse train-reflector --data``). The world
model refuses them as training data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simulator_service.model import WorldModel


def imagined_episode(replay: Any) -> Any:
    """One ``evaluate.Replay`` as an Episode of source "imagined": the imagined frames, the
    recorded states and actions of the steps they stand for, and their real success labels.
    The wrist camera is not imagined and is left out."""
    from trajectories.episode import Episode

    ep, frames = replay.episode, replay.imagined
    n = len(frames)  # (n, H, W, 3): the real first frame and n - 1 imagined ones
    actions = np.zeros((n, 7), dtype=np.float32)
    actions[: n - 1] = ep.actions[: n - 1]
    return Episode(
        episode_id=ep.episode_id,
        task_id=ep.task_id,
        instruction=ep.instruction,
        images=np.ascontiguousarray(frames),
        proprio=ep.proprio[:n],
        actions=actions,
        success=ep.success[:n],
        source="imagined",
        policy_version=ep.policy_version,
    )


def write_imagined_stores(
    model: WorldModel,
    data: list[str | Path],
    out: str | Path,
    *,
    simulator: str,
    max_steps: int,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Replay every episode of each store in ``data`` through ``model`` and write the replays
    as one store per input store, ``out / <store name>`` (same camera and controller metadata,
    plus ``imagined_by`` and ``imagined_steps``).

    Args:
        model: trained world model (eval mode).
        data: real episode stores (store names must differ).
        out: folder that receives the stores (must not hold them yet).
        simulator: the checkpoint ``model`` came from (recorded in the stores' metadata).
        max_steps: imagined steps per episode at most (the rollout horizon).
        seed: sampling seed of the first store (the next ones use seed + 1000 i).
        overwrite: replace stores of the same names in ``out``.
    Returns:
        the written store folders, in ``data`` order.
    Raises:
        ValueError: two stores of one name, a store holding imagined episodes, or one of
            another frame size than the world model's.
        FileExistsError: a store of that name in ``out`` and ``overwrite`` off.
    """
    from simulator_service.evaluate import imagine_episodes
    from trajectories.store import EpisodeStore, write_episodes

    names = [Path(d).name for d in data]
    if len(set(names)) != len(names):
        raise ValueError(f"imagined stores are named after their input stores: {names} repeat")
    out = Path(out)
    written = []
    for i, (d, name) in enumerate(zip(data, names, strict=True)):
        store = EpisodeStore(d)
        if any(info["source"] == "imagined" for info in store.episode_info):
            raise ValueError(f"episode store {d} already holds imagined episodes; replay real ones")
        replays = imagine_episodes(
            model,
            [d],
            max_episodes=10**9,
            max_steps=max_steps,
            seed=seed + 1000 * i,
            progress=progress,
            desc=f"imagine {name}",
        )
        meta = {**store.meta, "imagined_by": simulator, "imagined_steps": max_steps}
        path = write_episodes(
            out / name, [imagined_episode(r) for r in replays], meta, overwrite=overwrite
        )
        n_ok = sum(bool(r.episode.success[: len(r.imagined)].any()) for r in replays)
        log(f"{path}: {len(replays)} imagined replays ({n_ok} succeed within {max_steps} steps)")
        written.append(path)
    return written


__all__ = ["imagined_episode", "write_imagined_stores"]
