"""Labelled scenes of the tabletop env for vision pretraining: frames with the true positions.

``random_scenes`` resets the env (any layout; pretraining uses ``uniform``, where objects may be
anywhere in the spawn area, a different distribution from the ``homes`` layout the tasks are
evaluated on) and moves the arm by a random number of random actions, so frames show the arm and
the objects in many places. Each label is the (x, y) of every object (objects sorted by name)
and the end effector's (x, y, z), in meters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.config import EnvConfig


@dataclass
class Scenes:
    """images: (N, H, W, 3) uint8; targets: (N, 2 * objects + 3) float32 (see ``names``);
    actions, proprio: the random actions taken and the states they came from (statistics)."""

    images: np.ndarray
    targets: np.ndarray
    names: list[str]
    actions: np.ndarray
    proprio: np.ndarray


def random_scenes(
    cfg: EnvConfig, n: int, *, seed: int, max_random_steps: int = 25, progress: bool = False
) -> Scenes:
    """``n`` scenes of the tabletop env ``cfg``, scene i from env seed ``seed + i``.

    Args:
        cfg: the env config (its ``layout`` decides where objects start).
        n: number of scenes.
        seed: the first env seed; the random actions come from a generator seeded with it.
        max_random_steps: each scene follows 0 .. this many random actions (gripper too).
        progress: show a tqdm bar.
    """
    from tqdm import tqdm

    from envs.tabletop import TabletopEnv

    if cfg.name != "tabletop":
        raise ValueError(f"labelled scenes come from the tabletop env, not env.name={cfg.name!r}")
    if n < 1 or max_random_steps < 0:
        raise ValueError(f"need n >= 1 and max_random_steps >= 0, got {n}, {max_random_steps}")
    env = TabletopEnv(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    tasks = env.task_names
    images, targets, actions, proprio = [], [], [], []
    names: list[str] = []
    for i in tqdm(range(n), desc="scenes", disable=not progress):
        obs = env.reset(tasks[i % len(tasks)], seed=seed + i)
        for _ in range(int(rng.integers(0, max_random_steps + 1))):
            a = np.zeros(7)
            a[:3] = rng.uniform(-1.0, 1.0, 3)
            a[6] = rng.choice([-1.0, 1.0])
            actions.append(a)
            proprio.append(obs.proprio)
            obs = env.step(a).obs
        pos = env.object_positions()
        names = sorted(pos)
        xy = [np.asarray(pos[k], dtype=np.float64)[:2] for k in names]
        targets.append(np.concatenate([*xy, obs.proprio[:3]]))
        images.append(obs.image)
    env.close()
    return Scenes(
        images=np.stack(images),
        targets=np.stack(targets).astype(np.float32),
        names=[f"{k}_{c}" for k in names for c in "xy"] + ["ee_x", "ee_y", "ee_z"],
        actions=np.array(actions, dtype=np.float32).reshape(-1, 7),
        proprio=np.array(proprio, dtype=np.float32).reshape(-1, 8),
    )
