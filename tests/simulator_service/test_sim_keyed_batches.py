"""The keyed simulator's batches: a group's frames depend on its own key and inputs only, not on
the groups that share its model call; environments that ended leave the call and keep their last
frame, and the survivors' frames are the same as when every environment runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.config import EnvConfig
from envs.factory import make_env
from simulator_service.config import SimulatorConfig
from simulator_service.keyed import KeyedWorldSimulator
from simulator_service.model import WorldModel

N = 3


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    model = WorldModel(SimulatorConfig.preset("tiny")).eval()
    env = make_env(EnvConfig(image_size=16))
    obs = env.reset(env.task_names[0], seed=1)
    frames = np.repeat(obs.image[None, None], N, axis=0)  # (N, 1, 16, 16, 3)
    proprio = np.repeat(obs.proprio[None].astype(np.float32), N, axis=0)
    moves = np.random.default_rng(0).normal(0, 0.05, (3, N, 8)).astype(np.float32)
    return model, env.camera, frames, proprio, proprio[None] + np.cumsum(moves, axis=0)


def _sim(parts, keys):
    model, camera, frames, proprio, _ = parts
    sim = KeyedWorldSimulator(model, camera, seed=5)
    for k in keys:
        sim.reset(k, frames, proprio)
    return sim


def test_a_group_gets_the_same_frames_alone_or_beside_another(parts):
    path = parts[4]
    alone, shared = _sim(parts, ["a"]), _sim(parts, ["b", "a"])
    for p in path:
        (fa,) = alone.step_batch([("a", p)])
        fb, fa2 = shared.step_batch([("b", p + 0.01), ("a", p)])
        np.testing.assert_array_equal(fa, fa2)
    assert not np.array_equal(fa, fb)  # another key, other noise and inputs


def test_ended_environments_leave_the_batch_and_the_survivors_frames_stay(parts):
    path = parts[4]
    full, dropped = _sim(parts, ["g"]), _sim(parts, ["g"])
    active = np.array([True, False, True])
    (first_full,) = full.step_batch([("g", path[0])])
    (first_dropped,) = dropped.step_batch([("g", path[0], np.ones(N, bool))])
    np.testing.assert_array_equal(first_full, first_dropped)
    for p in path[1:]:
        (f_full,) = full.step_batch([("g", p)])
        (f_drop,) = dropped.step_batch([("g", p, active)])
        np.testing.assert_array_equal(f_drop[active], f_full[active])
        np.testing.assert_array_equal(f_drop[1], first_dropped[1])  # held still
    (none,) = dropped.step_batch([("g", path[-1], np.zeros(N, bool))])  # nothing runs
    np.testing.assert_array_equal(none, f_drop)


def test_a_bad_active_mask_is_one_clear_error(parts):
    sim = _sim(parts, ["g"])
    with pytest.raises(ValueError, match="active mask"):
        sim.step_batch([("g", parts[4][0], np.ones(N + 1, bool))])


def test_common_noise_keeps_environments_that_act_alike_in_one_state(parts):
    """``common_noise``: the group's environments share each step's noise, so the ones given
    the same actions from the same start get the same frames (one-step exploration's shared
    state), and one that acts otherwise leaves them; without it each draws its own noise."""
    model, camera, frames, proprio, _ = parts
    common, own = KeyedWorldSimulator(model, camera, seed=5), KeyedWorldSimulator(model, camera)
    common.reset("g", frames, proprio, common_noise=True)
    own.reset("g", frames, proprio)
    same = proprio + 0.02  # (N, 8): every environment moves alike
    (fc,) = common.step_batch([("g", same)])
    (fo,) = own.step_batch([("g", same)])
    assert all(np.array_equal(fc[0], fc[i]) for i in range(1, N))
    assert not np.array_equal(fo[0], fo[1])
    branch = same.copy()
    branch[2, :3] -= 0.05  # the last environment moves elsewhere (one sampled chunk)
    for _ in range(2):
        (fc,) = common.step_batch([("g", branch)])
    np.testing.assert_array_equal(fc[0], fc[1])
    assert not np.array_equal(fc[0], fc[2])
