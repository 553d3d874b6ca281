"""Fixtures of the simulator tests: a tiny synthetic episode store with a camera."""

from __future__ import annotations

import numpy as np
import pytest

from envs.base import Camera
from envs.kinematics import next_proprio

SIZE = 16


def synthetic_camera(size: int = SIZE) -> Camera:
    """Looks straight down the world z axis from z = 1 (camera z = world z + 1)."""
    k = np.array([[size, 0, (size - 1) / 2], [0, size, (size - 1) / 2], [0, 0, 1.0]])
    e = np.eye(4)
    e[2, 3] = 1.0
    return Camera(k, e, size, size)


def synthetic_episodes(n: int, steps: int, *, seed: int = 0, size: int = SIZE):
    """Episodes where a white 3x3 square sits at the projected EE position."""
    from trajectories.episode import Episode

    cam = synthetic_camera(size)
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        p = np.zeros(8, np.float32)
        p[:2] = rng.uniform(-0.2, 0.2, 2)
        p[2] = 0.05
        p[6], p[7] = 0.04, -0.04
        props, acts = [p], []
        for _ in range(steps):
            a = np.zeros(7, np.float32)
            a[:2] = rng.uniform(-1, 1, 2)
            acts.append(a)
            props.append(next_proprio(props[-1], a).astype(np.float32))
        acts.append(np.zeros(7, np.float32))
        props = np.stack(props)
        uv, _ = cam.project(props[:, :3])
        imgs = np.zeros((steps + 1, size, size, 3), np.uint8)
        for t, (u, v) in enumerate(np.round(uv).astype(int)):
            imgs[t, max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2] = 255
        eps.append(
            Episode(
                episode_id=f"ep{i}",
                task_id="move",
                instruction="move",
                images=imgs,
                proprio=props,
                actions=np.stack(acts),
                success=np.zeros(steps + 1, bool),
                source="expert" if i % 2 == 0 else "exploration",
            )
        )
    return eps


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    from trajectories.store import write_episodes

    path = tmp_path_factory.mktemp("sim") / "store"
    meta = {"env": "synthetic", "image_size": SIZE, "camera": synthetic_camera().to_dict()}
    write_episodes(path, synthetic_episodes(6, 8), meta)
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads spinning against other
    processes made a tiny U-Net pass ~100x slower (measured 5 s vs 0.06 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_episodes():
    """The synthetic episode generator (tests cannot import conftest in importlib mode)."""
    return synthetic_episodes
