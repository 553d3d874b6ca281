"""Open-loop replay of held-out real episodes through the world model (``rehearse
eval-simulator``): metrics per horizon beside the copy-last-frame baseline, and a video."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from simulator_service.fidelity import (
    HORIZONS,
    frame_metrics,
    summarize,
    tabletop_segmenter,
    write_side_by_side,
)
from simulator_service.model import WorldModel
from simulator_service.rollout import ImaginedRollout


def evaluate_open_loop(
    model: WorldModel,
    data: list[str | Path],
    *,
    horizons: tuple[int, ...] = HORIZONS,
    starts: tuple[int, ...] = (0, 10),
    max_episodes: int = 32,
    steps: int | None = None,
    use_kinematics: bool = True,
    seed: int = 0,
    video: str | Path | None = None,
    batch: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay episodes open loop and measure fidelity.

    Args:
        model: trained world model (eval mode).
        data: held-out episode stores.
        horizons: steps after the start at which to measure.
        starts: start steps t0 (the real frames o_0..o_t0 fill the memory bank).
        max_episodes: episodes used (first ones in store order).
        steps: denoising steps (None = config).
        use_kinematics: next proprio from ``envs.kinematics`` as in RL (else the recorded one).
        seed: sampling seed.
        video: GIF path for real | imagined of the first rollout (None = no video).
        batch: rollouts imagined together.
    Returns:
        {"horizons": {h: {"model": {...}, "copy_last_frame": {...}, "n": ...}}, "rollouts",
         "seconds", "sample_steps"}.
    """
    from tqdm import tqdm

    from envs.kinematics import ControllerLimits
    from trajectories.store import EpisodeStore

    size = model.cfg.image_size
    jobs: list[tuple[Any, int]] = []  # (episode, t0)
    camera = None
    limits = None
    env_name = None
    n_episodes = 0
    for d in data:
        store = EpisodeStore(d)
        camera = store.camera()
        env_name = store.meta.get("env")
        cl = store.meta.get("controller_limits")
        limits = ControllerLimits.from_dict(cl) if cl else None
        if store.meta.get("image_size") not in (None, size):
            raise ValueError(
                f"episode store {d} has {store.meta['image_size']} px frames, the "
                f"simulator works at {size}"
            )
        for info in store.episode_info[: max_episodes - n_episodes]:
            ep = store.load_episode(info["episode_id"])
            n_episodes += 1
            jobs.extend((ep, t0) for t0 in starts if t0 < ep.num_steps)
    if not jobs:
        raise ValueError(f"no episode in {list(map(str, data))} is long enough for starts {starts}")
    assert camera is not None
    segmenter = tabletop_segmenter() if env_name == "tabletop" else None
    h_max = max(horizons)
    per_h: dict[int, dict[str, list[np.ndarray]]] = {h: {} for h in horizons}
    video_pair = None
    t_start = time.time()
    for i in tqdm(range(0, len(jobs), batch), desc="eval-simulator", disable=not progress):
        chunk = jobs[i : i + batch]
        # group by t0 so one memory-bank reset covers the chunk
        for t0 in sorted({t for _, t in chunk}):
            group = [ep for ep, t in chunk if t == t0]
            ctx = np.stack([ep.images[: t0 + 1] for ep in group])  # (B, t0+1, H, W, 3)
            roll = ImaginedRollout(model, camera, limits=limits, seed=seed + i)
            roll.reset(ctx, np.stack([ep.proprio[t0] for ep in group]))
            imagined = []
            for h in range(1, h_max + 1):
                rows = [min(t0 + h - 1, ep.num_steps - 1) for ep in group]
                if use_kinematics:
                    acts = np.stack([ep.actions[r] for ep, r in zip(group, rows, strict=True)])
                    imagined.append(roll.step(acts, steps=steps))
                else:
                    nxt = np.stack([ep.proprio[r + 1] for ep, r in zip(group, rows, strict=True)])
                    imagined.append(roll.step(next_proprio=nxt, steps=steps))
            imagined_arr = np.stack(imagined, axis=1)  # (B, H, ...)
            for h in horizons:
                valid = [j for j, ep in enumerate(group) if t0 + h <= ep.num_steps]
                if not valid:
                    continue
                real = np.stack([group[j].images[t0 + h] for j in valid])
                start = np.stack([group[j].images[t0] for j in valid])
                pred = imagined_arr[valid, h - 1]
                for who, frames in (("model", pred), ("copy_last_frame", start)):
                    m = frame_metrics(frames, real, start, segmenter=segmenter)
                    for k, v in m.items():
                        per_h[h].setdefault(f"{who}:{k}", []).append(v)
            if video_pair is None:
                ep = group[0]
                n = min(h_max, ep.num_steps - t0)
                video_pair = (
                    ep.images[t0 : t0 + n + 1],
                    np.concatenate([ep.images[t0 : t0 + 1], imagined_arr[0, :n]]),
                )
    result = {
        "horizons": summarize(per_h),
        "rollouts": len(jobs),
        "starts": list(starts),
        "sample_steps": steps or model.cfg.sample_steps,
        "sampler": model.cfg.sampler,
        "proprio": "kinematics" if use_kinematics else "recorded",
        "seconds": round(time.time() - t_start, 1),
    }
    if video is not None and video_pair is not None:
        result["video"] = str(write_side_by_side(video, *video_pair))
    return result


def write_report(path: str | Path, result: dict[str, Any]) -> Path:
    """Write the result as JSON atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return path


__all__ = ["evaluate_open_loop", "write_report"]
