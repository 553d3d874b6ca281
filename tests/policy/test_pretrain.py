"""Vision pretraining: labelled scenes match the env's state, pretraining changes only the vision
towers and lowers the held-out localization error, and a frozen-vision SFT keeps the towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.config import EnvConfig
from envs.tabletop import TabletopEnv
from envs.tabletop_scenes import random_scenes
from policy.config import PretrainConfig
from policy.pretrain import pretrain_vision


def test_scenes_are_labelled_with_the_env_state():
    cfg = EnvConfig(image_size=32, layout="uniform")
    a = random_scenes(cfg, 6, seed=40_000_000, max_random_steps=0)
    assert a.images.shape == (6, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.targets.shape == (6, 11) and len(a.names) == 11 and a.names[-1] == "ee_z"
    env = TabletopEnv(cfg)
    obs = env.reset(env.task_names[2], seed=40_000_002)  # scene 2, no random steps
    np.testing.assert_array_equal(a.images[2], obs.image)
    pos = env.object_positions()
    np.testing.assert_allclose(a.targets[2, :2], pos[sorted(pos)[0]][:2], atol=1e-6)
    np.testing.assert_allclose(a.targets[2, 8:], obs.proprio[:3], atol=1e-6)
    b = random_scenes(cfg, 6, seed=40_000_000, max_random_steps=0)
    np.testing.assert_array_equal(a.targets, b.targets)  # a seed gives the same scenes
    moved = random_scenes(cfg, 6, seed=40_000_000, max_random_steps=5)
    assert len(moved.actions) == len(moved.proprio) > 0
    with pytest.raises(ValueError, match="tabletop env"):
        random_scenes(EnvConfig(name="libero"), 2, seed=0)


def test_pretraining_moves_only_the_vision_towers_and_learns(make_policy):
    policy = make_policy(image_size=32)
    scenes = random_scenes(EnvConfig(image_size=32, layout="uniform"), 160, seed=7)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = PretrainConfig(scenes=160, val_scenes=32, steps=60, batch_size=32, lr=2e-3)
    m = pretrain_vision(policy, scenes.images, scenes.targets, cfg, progress=False, log_every=30)
    after = policy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("vla.vision.") for k in changed)
    assert not any(p.requires_grad for p in policy.vla.vision.parameters())
    assert [h[0] for h in m["history"]] == [30, 60]
    # what the towers learned beyond the layout: below predicting the training mean
    assert np.mean(m["val_abs_error_m"]) < 0.9 * np.mean(m["baseline_abs_error_m"])
    with pytest.raises(ValueError, match="pretrain.val_scenes"):
        pretrain_vision(policy, scenes.images[:20], scenes.targets[:20], cfg, progress=False)


def test_config_refuses_impossible_values():
    with pytest.raises(ValueError, match="pretrain.val_scenes"):
        PretrainConfig(scenes=10, val_scenes=10)
    with pytest.raises(ValueError, match="pretrain.layout"):
        PretrainConfig(layout="grid")
