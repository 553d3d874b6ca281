"""Fixtures of the policy tests: tiny statistics, policy and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics

INSTRUCTIONS = ["pick up the red block", "put the yellow block on the green plate"]


def tiny_stats(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-0.8, 0.8, (200, 7)).astype(np.float32)
    actions[:, -1] = np.sign(actions[:, -1])
    return compute_statistics(actions, rng.normal(size=(200, 8)), num_trajectories=4)


def tiny_policy(**overrides):
    return build_policy(PolicyConfig(**overrides), instructions=INSTRUCTIONS, stats=tiny_stats())


def tiny_batch(b: int = 3, *, size: int = 32, seed: int = 0, wrist: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "image": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(b, 8)).astype(np.float32),
        "instruction": [INSTRUCTIONS[i % 2] for i in range(b)],
    }
    if wrist:
        batch["wrist_image"] = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    return batch


@pytest.fixture
def make_policy():
    return tiny_policy


@pytest.fixture
def make_batch():
    return tiny_batch


@pytest.fixture
def stats():
    return tiny_stats()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
