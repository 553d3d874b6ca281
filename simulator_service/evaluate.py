"""Open-loop replay of held-out real episodes through the world model (``rehearse
eval-simulator``): metrics per horizon beside the copy-last-frame baseline, and a video."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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


class _Store(NamedTuple):
    camera: Any
    limits: Any
    env: str | None
    episodes: list[Any]


def _held_out(data: list[str | Path], max_episodes: int, size: int) -> list[_Store]:
    """The first ``max_episodes`` episodes of the stores, with each store's camera, controller
    limits and env name. Raises ValueError for a store of another frame size."""
    from envs.kinematics import ControllerLimits
    from trajectories.store import EpisodeStore

    out, n = [], 0
    for d in data:
        store = EpisodeStore(d)
        if store.meta.get("image_size") not in (None, size):
            raise ValueError(
                f"episode store {d} has {store.meta['image_size']} px frames, the "
                f"simulator works at {size}"
            )
        cl = store.meta.get("controller_limits")
        eps = [
            store.load_episode(info["episode_id"])
            for info in store.episode_info[: max_episodes - n]
        ]
        n += len(eps)
        out.append(
            _Store(
                store.camera(),
                ControllerLimits.from_dict(cl) if cl else None,
                store.meta.get("env"),
                eps,
            )
        )
    return out


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

    stores = _held_out(data, max_episodes, model.cfg.image_size)
    jobs = [(ep, t0) for st in stores for ep in st.episodes for t0 in starts if t0 < ep.num_steps]
    if not jobs:
        raise ValueError(f"no episode in {list(map(str, data))} is long enough for starts {starts}")
    camera, limits, env_name = stores[-1].camera, stores[-1].limits, stores[-1].env
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


class Replay(NamedTuple):
    """One held-out episode replayed open loop: the real ``episode``, the name of the store it
    came from, and ``imagined`` (n + 1, H, W, 3) uint8: its real first frame and the world
    model's n frames for its first n recorded actions (``episode.images[: n + 1]`` is the real
    counterpart)."""

    episode: Any
    store: str
    imagined: np.ndarray


def imagine_episodes(
    model: WorldModel,
    data: list[str | Path],
    *,
    max_episodes: int = 32,
    max_steps: int = 48,
    seed: int = 0,
    batch: int = 16,
    progress: bool = True,
    desc: str = "imagine",
) -> list[Replay]:
    """Replay episodes from their first frame open loop with the recorded actions (up to
    ``max_steps`` each), ``batch`` episodes of one store imagined together.

    Args:
        model: trained world model (eval mode).
        data: held-out episode stores (never the world model's training data).
        max_episodes: episodes used (first ones in store order).
        max_steps: imagined steps per episode at most (the RL rollout horizon).
        seed, batch: sampling seed (batch i samples with ``seed + i``); episodes imagined
            together.
    Returns:
        one Replay per episode, in store order.
    Raises:
        ValueError: no episode in ``data``, or a store of another frame size.
    """
    from tqdm import tqdm

    stores = _held_out(data, max_episodes, model.cfg.image_size)
    if not any(st.episodes for st in stores):
        raise ValueError(f"no episodes in {list(map(str, data))}")
    groups = [
        (str(d), st.camera, st.limits, st.episodes[i : i + batch])  # one store per batch
        for d, st in zip(data, stores, strict=True)
        for i in range(0, len(st.episodes), batch)
    ]
    out: list[Replay] = []
    for i, (name, camera, limits, group) in enumerate(
        tqdm(groups, desc=desc, disable=not progress)
    ):
        lengths = [min(max_steps, ep.num_steps) for ep in group]  # actions replayed
        roll = ImaginedRollout(model, camera, limits=limits, seed=seed + i)
        roll.reset(
            np.stack([ep.images[0] for ep in group]), np.stack([ep.proprio[0] for ep in group])
        )
        imagined = [np.stack([ep.images[0] for ep in group])]
        for t in range(max(lengths)):
            acts = np.stack(
                [ep.actions[min(t, n - 1)] for ep, n in zip(group, lengths, strict=True)]
            )
            imagined.append(roll.step(acts))
        arr = np.stack(imagined, axis=1)  # (B, T + 1, H, W, 3)
        out += [
            Replay(ep, name, arr[j, : n + 1])
            for j, (ep, n) in enumerate(zip(group, lengths, strict=True))
        ]
    return out


def reward_agreement(
    model: WorldModel,
    data: list[str | Path],
    score: Callable[[np.ndarray, str], np.ndarray],
    *,
    eta: float,
    max_episodes: int = 32,
    max_steps: int = 48,
    seed: int = 0,
    batch: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Does success look like success in imagination? Replays episodes open loop with their
    recorded actions (``imagine_episodes``), scores the real and the imagined frames with a
    reward model, and counts how often R crosses ``eta`` on each, apart for the episodes that
    really succeed within those steps and those that do not. A world model whose imagined
    successes the reward model misses gives RL in imagination no signal, however good its pixel
    metrics.

    Args:
        model: trained world model (eval mode).
        data: held-out episode stores.
        score: (T, H, W, 3) uint8 frames, instruction -> (T,) rewards (e.g. a reflector's R).
        eta: the termination threshold (R > eta counts as success).
        max_episodes, max_steps, seed, batch: as ``imagine_episodes``.
    Returns:
        {"successful" | "failed": {"episodes", "real_detected", "imagined_detected",
         "real_max_reward", "imagined_max_reward"}, "eta", "max_steps"}.
    """
    replays = imagine_episodes(
        model,
        data,
        max_episodes=max_episodes,
        max_steps=max_steps,
        seed=seed,
        batch=batch,
        progress=progress,
        desc="reward agreement",
    )
    rows: dict[str, list[tuple[float, float]]] = {"successful": [], "failed": []}
    for ep, _, imagined in replays:
        n = len(imagined) - 1
        real_r = score(ep.images[: n + 1], ep.instruction)
        imag_r = score(imagined, ep.instruction)
        outcome = "successful" if bool(np.asarray(ep.success[: n + 1]).any()) else "failed"
        rows[outcome].append((float(np.max(real_r)), float(np.max(imag_r))))
    result: dict[str, Any] = {"eta": eta, "max_steps": max_steps}
    for outcome, pairs in rows.items():
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        result[outcome] = {
            "episodes": len(pairs),
            "real_detected": float(np.mean(arr[:, 0] > eta)) if len(pairs) else None,
            "imagined_detected": float(np.mean(arr[:, 1] > eta)) if len(pairs) else None,
            "real_max_reward": float(arr[:, 0].mean()) if len(pairs) else None,
            "imagined_max_reward": float(arr[:, 1].mean()) if len(pairs) else None,
        }
    return result


def write_report(path: str | Path, result: dict[str, Any]) -> Path:
    """Write the result as JSON atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return path


__all__ = ["Replay", "evaluate_open_loop", "imagine_episodes", "reward_agreement", "write_report"]
