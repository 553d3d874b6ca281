"""The real and imagined worlds as Gymnasium environments (``cluster.gym_envs``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from actors.config import CollectConfig
from cluster.collect import collect, episode_specs
from cluster.gym_envs import ImaginedEnv, ImaginedVectorEnv, RealEnv, register
from envs.base import Camera
from envs.config import EnvConfig
from reflector_service.fake import FakeReflector
from simulator_service.fake import FakeWorldSimulator
from trajectories.store import EpisodeStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("gym") / "demos"
    specs = episode_specs(["lift_red", "place_red_on_blue"], 1, seed=0, source="expert")
    collect(EnvConfig(image_size=32), CollectConfig(), specs, path, progress=False)
    return path


def _fakes(store):
    camera = Camera.from_dict(EpisodeStore(store).camera().to_dict())
    return FakeWorldSimulator(camera), FakeReflector()


def test_the_real_env_passes_gymnasiums_checker():
    env = RealEnv({"image_size": 32}, max_steps=5)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3, options={"task": "lift_red"})
    assert obs["image"].shape == (32, 32, 3) and info["instruction"] == "lift the red block"
    for _ in range(5):
        obs, r, term, trunc, info = env.step(np.zeros(7, np.float32))
    assert (r, term, trunc) == (0.0, False, True)  # truncated at max_steps, never success


def test_the_imagined_env_passes_gymnasiums_checker(store):
    sim, refl = _fakes(store)
    env = ImaginedEnv(sim, refl, str(store), max_steps=4, eta=2.0)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["proprio"].dtype == np.float32
    assert info["instruction"] in {"lift the red block", "put the red block on the blue plate"}


def test_the_vector_env_steps_all_envs_in_one_call_and_resets_ended_ones_next(store):
    sim, refl = _fakes(store)
    vec = ImaginedVectorEnv(sim, refl, [str(store)], num_envs=3, max_steps=2, eta=2.0, seed=0)
    obs, info = vec.reset(seed=1)
    assert obs["image"].shape == (3, 32, 32, 3) and len(info["instruction"]) == 3
    first = obs["image"].copy()
    calls = sim.calls
    actions = np.tile(np.array([0.5, 0, 0, 0, 0, 0, -1], np.float32), (3, 1))
    _, r, term, trunc, _ = vec.step(actions)
    assert sim.calls == calls + 1 and not trunc.any()  # one batched world-model call
    _, r, term, trunc, _ = vec.step(actions)
    assert trunc.all() and not term.any()  # max_steps reached
    obs, r, term, trunc, _ = vec.step(actions)  # next-step autoreset: the start frames again
    np.testing.assert_array_equal(r, 0.0)
    assert not (term | trunc).any() and sim.calls == calls + 2
    again, _ = vec.reset(seed=1)
    np.testing.assert_array_equal(again["image"], first)  # the same seed, the same starts
    vec.close()


def test_registered_ids_make_both_worlds(store):
    register()
    register()  # twice is fine
    env = gym.make("rehearse/Real-v0", env={"image_size": 32}, max_steps=3)
    assert env.reset(seed=0)[0]["image"].shape == (32, 32, 3)
    vec = gym.make_vec(
        "rehearse/Imagined-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        simulator="fake",
        reflector="fake",
        data=str(store),
    )
    obs, _ = vec.reset(seed=0)
    assert obs["proprio"].shape == (2, 8)
    vec.close()
