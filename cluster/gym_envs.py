"""The real and the imagined world as Gymnasium environments, for other RL libraries.

- ``RealEnv``: one real env (tabletop or LIBERO) as a ``gymnasium.Env``. ``reset(seed=s,
  options={"task": t})`` starts task t (or a task drawn from the seed) from start s; the reward
  is the task's success (1 at the step it is achieved, which terminates the episode), truncated
  at ``max_steps`` actions.
- ``ImaginedVectorEnv``: N imagined environments as a ``gymnasium.vector.VectorEnv``: a trained
  world model (or the fake one) predicts each next frame from the action, the reflector scores
  it; reward R, terminated at R > eta, truncated at ``max_steps``. Every reset starts from a
  real start of the episode stores (a seeded draw). All N environments step in one batched
  world-model call and one reflector call (one key per environment at the keyed backends);
  ended environments are reset at their next step (Gymnasium's next-step autoreset).
- ``ImaginedEnv``: the same with N = 1, as a ``gymnasium.Env``.

Observations are ``{"image": (H, W, 3) uint8, "proprio": (8,) float32}``; the instruction is in
``info["instruction"]`` (the policy's language input). Actions are 7-D in [-1, 1]. ``register``
adds the ids ``rehearse/Real-v0`` and ``rehearse/Imagined-v0`` (``gymnasium.make(id, ...)``
with the constructors' arguments).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import EnvConfig
from envs.kinematics import next_proprio
from trajectories.initial_states import initial_state

ACTION_SPACE = spaces.Box(-1.0, 1.0, (7,), np.float32)


# proprio: EE position (m, within reach of the base), EE axis-angle (rad), finger positions (m)
PROPRIO_HIGH = np.array([2.0, 2.0, 2.0, np.pi, np.pi, np.pi, 0.1, 0.1], np.float32)


def observation_space(size: int) -> spaces.Dict:
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "proprio": spaces.Box(-PROPRIO_HIGH, PROPRIO_HIGH, (8,), np.float32),
        }
    )


class RealEnv(gym.Env):
    """A real env (``env``: an ``EnvConfig`` or its dict) as a Gymnasium env.

    Args:
        env: the real environment's config.
        max_steps: actions per episode at most (None: the env's own limit).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env: EnvConfig | dict | None = None, *, max_steps: int | None = None):
        from envs.factory import make_env, task_names

        cfg = EnvConfig(**env) if isinstance(env, dict) else (env or EnvConfig())
        self.env = make_env(cfg)
        self.tasks = task_names(cfg)
        self.max_steps = max_steps
        self.observation_space = observation_space(cfg.image_size)
        self.action_space = ACTION_SPACE
        self.render_mode = "rgb_array"
        self._obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        task = (options or {}).get("task")
        if task is None:
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        start = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
        self._obs = self.env.reset(task, seed=start)
        self._t = 0
        return self._observation(), {"instruction": self._obs.instruction, "task": task}

    def step(self, action):
        result = self.env.step(np.asarray(action, dtype=np.float64))
        self._obs, self._t = result.obs, self._t + 1
        truncated = not result.success and (
            result.done or (self.max_steps is not None and self._t >= self.max_steps)
        )
        info = {"instruction": self._obs.instruction, "success": result.success}
        return self._observation(), float(result.success), result.success, truncated, info

    def render(self):
        return None if self._obs is None else self._obs.image

    def close(self):
        self.env.close()

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "image": np.asarray(self._obs.image, dtype=np.uint8),
            "proprio": np.asarray(self._obs.proprio, dtype=np.float32),
        }


class ImaginedVectorEnv(VectorEnv):
    """N imagined environments stepped together (see the module docstring).

    Args:
        simulator, reflector: keyed backends (``KeyedWorldSimulator`` / ``KeyedReflector`` or
            the fakes), or checkpoint folders (or "fake") to build them from.
        data: episode stores whose real starts begin the episodes.
        num_envs: N.
        eta: termination threshold on R (None: the reflector checkpoint's).
        max_steps: actions per episode at most.
        keyframes: also start at the episodes' keyframes (WoVR), else only at their first step.
        seed: the world model's sampling noise.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        simulator: Any,
        reflector: Any,
        data: str | list[str],
        *,
        num_envs: int = 1,
        eta: float | None = None,
        max_steps: int = 48,
        keyframes: bool = False,
        seed: int = 0,
    ):
        from reflector_service.checkpoint import termination_eta
        from trajectories.initial_states import InitialStateSampler
        from trajectories.store import EpisodeStore

        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"num_envs and max_steps must be >= 1, got {num_envs}, {max_steps}")
        stores = [EpisodeStore(p) for p in ([data] if isinstance(data, str) else data)]
        if isinstance(simulator, str):
            from cluster.backends import SimulatorFactory
            from cluster.world_setup import check_world_model

            if simulator != "fake":
                check_world_model(simulator, stores)
            simulator = SimulatorFactory(simulator, stores[0].camera().to_dict(), seed=seed)()
        if isinstance(reflector, str):
            from cluster.backends import ReflectorFactory

            eta = termination_eta(eta, reflector)
            reflector = ReflectorFactory(reflector)()
        self.sim, self.reflector = simulator, reflector
        self.eta = 0.5 if eta is None else float(eta)
        self.sampler = InitialStateSampler(stores, keyframes=keyframes)
        self.limits = stores[0].controller_limits()
        size = int(stores[0].meta.get("image_size") or self.sampler.sample(1)[0].frames.shape[1])
        self.sampler.cursor = 0
        self.num_envs, self.max_steps = num_envs, max_steps
        self.single_observation_space = observation_space(size)
        self.single_action_space = ACTION_SPACE
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.keys = [f"gym-{id(self)}-{i}" for i in range(num_envs)]
        self.image = np.zeros((num_envs, size, size, 3), np.uint8)
        self.proprio = np.zeros((num_envs, 8), np.float32)
        self.instruction = np.array([""] * num_envs, dtype=object)
        self.t = np.zeros(num_envs, np.int64)
        self.ended = np.zeros(num_envs, bool)
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        for i in range(self.num_envs):
            self._reset_one(i)
        self.ended[:] = False
        return self._obs(), {"instruction": self.instruction.copy()}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, 7)
        restart = self.ended.copy()
        for i in np.flatnonzero(restart):  # next-step autoreset: this step is a reset
            self._reset_one(i)
        live = np.flatnonzero(~restart)
        reward = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        if len(live):
            moved = next_proprio(self.proprio[live], actions[live], limits=self.limits)
            self.proprio[live] = moved.astype(np.float32)
            keys = [self.keys[i] for i in live]
            frames = self.sim.step_batch(list(zip(keys, self.proprio[live, None], strict=True)))
            self.image[live] = np.concatenate(frames)
            r = np.concatenate(self.reflector.score_batch(list(zip(keys, frames, strict=True))))
            reward[live] = r
            terminated[live] = r > self.eta
            self.t[live] += 1
        truncated = ~terminated & ~restart & (self.t >= self.max_steps)
        self.ended = terminated | truncated
        info = {"instruction": self.instruction.copy()}
        return self._obs(), reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        for key in self.keys:
            self.sim.release(key)
            self.reflector.release(key)

    def _reset_one(self, i: int) -> None:
        si, eid, start = self.sampler.points[int(self._rng.integers(len(self.sampler.points)))]
        init = initial_state(self.sampler.stores[si].load_episode(eid), start, 1)
        frames = init.frames[None]  # (1, T0, H, W, 3)
        self.sim.reset(self.keys[i], frames, init.proprio[None].astype(np.float32))
        self.reflector.reset(self.keys[i], [init.instruction], frames)
        self.image[i], self.proprio[i] = init.frames[-1], init.proprio
        self.instruction[i], self.t[i] = init.instruction, 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"image": self.image.copy(), "proprio": self.proprio.copy()}


class ImaginedEnv(gym.Env):
    """One imagined environment (``ImaginedVectorEnv`` with N = 1) as a ``gymnasium.Env``;
    the same arguments but ``num_envs``."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, simulator: Any, reflector: Any, data: str | list[str], **kwargs: Any):
        self.vec = ImaginedVectorEnv(simulator, reflector, data, num_envs=1, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.render_mode = "rgb_array"

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.vec.reset(seed=seed if seed is not None else _draw(self.np_random))
        return _first(obs), {"instruction": info["instruction"][0]}

    def step(self, action):
        obs, r, term, trunc, info = self.vec.step(np.asarray(action)[None])
        self.vec.ended[:] = False  # a single env is reset by its caller, not automatically
        return (
            _first(obs),
            float(r[0]),
            bool(term[0]),
            bool(trunc[0]),
            {"instruction": info["instruction"][0]},
        )

    def render(self):
        return self.vec.image[0].copy()

    def close(self):
        self.vec.close()


def _first(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in obs.items()}


def _draw(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def register() -> None:
    """Register ``rehearse/Real-v0`` and ``rehearse/Imagined-v0`` (and the vector entry of the
    imagined one) with Gymnasium; safe to call more than once."""
    if "rehearse/Real-v0" in gym.registry:
        return
    gym.register("rehearse/Real-v0", entry_point="cluster.gym_envs:RealEnv")
    gym.register(
        "rehearse/Imagined-v0",
        entry_point="cluster.gym_envs:ImaginedEnv",
        vector_entry_point="cluster.gym_envs:ImaginedVectorEnv",
    )
