"""The two kinds of environment groups the acting loop runs on, and the worlds that make them.

``ImaginedGroup``: N copies of each of some real starts rolled forward in imagination in one
batch: the next proprio state by kinematics (no network), the next frame from the world
simulator, the reward R from the reflector, ended when R > eta. ``RealGroup``: real envs, each
reset to its own start (task, seed); reward 1.0 at the env's success (or, with the progress
reward, ``PROGRESS_WEIGHT`` x the best task progress reached so far until then), ended at
success (or, with a reflector, at R > eta), or at the step limit. The world model is an
environment like the real one: the training rollouts of both worlds, the oracle and the
evaluations are one loop (``actors.rollout.act_in_chunks``) over these groups.

A world (``ImaginedWorld``, ``RealWorld``) turns starts into one group for a rollout worker; it
is built by the driver and sent to the worker, and makes its clients or envs in the worker's
process on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from actors.clients import (
    LocalReflectorClient,
    LocalSimulatorClient,
    RayReflectorClient,
    RaySimulatorClient,
    ReflectorClient,
    SimulatorClient,
)
from actors.config import IMAGINED_REWARDS, REAL_REWARDS
from actors.rollout import Step
from actors.starts import EvalJob
from envs.base import observation_batch
from envs.kinematics import next_proprio
from trajectories.initial_states import InitialState

PROGRESS_WEIGHT = 0.5  # a failure's progress reward stays <= this, below every success's 1.0


def _check_reward(world: str, reward: str, allowed: tuple[str, ...]) -> None:
    """Refuse a reward the ``world`` ("real", "imagined") groups do not give."""
    if reward not in allowed:
        raise ValueError(f"{world} reward must be one of {list(allowed)}, got {reward!r}")


class ImaginedGroup:
    """Imagined rollouts of one or more real starts, ``n`` per start, stepped as one batch
    (``actors.rollout.EnvGroup``): the services see every start's environments in each call
    (one batched model call where the models are in this process).

    Args:
        sim, reflector: clients of the world simulator and the reflector.
        inits: the starts (context frames, proprio, instruction), one group of ``n`` each.
        n: environments per start.
        keys: each start's group name at the services (unique while it runs).
        eta: the reflector's termination threshold (R > eta ends a rollout).
        limits: controller limits for the kinematics (None: the tabletop defaults).
        common_noise: a start's environments share the world model's noise, so they stay in
            one imagined state while they act alike (one-step exploration).
        reward: "reflector" (the reflector's R) or "success" (1.0 at R > eta, else 0.0).
    """

    def __init__(
        self,
        sim: SimulatorClient,
        reflector: ReflectorClient,
        inits: list[InitialState],
        n: int,
        *,
        keys: list[str],
        eta: float,
        limits: Any = None,
        common_noise: bool = False,
        reward: str = "reflector",
    ):
        if len(inits) != len(keys) or not inits:
            raise ValueError(f"{len(inits)} starts for {len(keys)} group keys")
        _check_reward("imagined", reward, IMAGINED_REWARDS)
        self.sim, self.reflector, self.inits, self.keys = sim, reflector, inits, keys
        self.per_start, self.n = n, n * len(inits)
        self.eta, self.limits, self.common_noise = eta, limits, common_noise
        self.reward = reward
        self._open = False
        # seconds inside step(): kinematics, world-model and reflector calls (client side:
        # model compute plus batching wait and transport)
        self.timings = {"kinematics_s": 0.0, "sim_s": 0.0, "reflector_s": 0.0}

    def _split(self, x: np.ndarray) -> list[np.ndarray]:
        """(G * n, ...) -> G arrays (n, ...), one per start."""
        return [x[i * self.per_start : (i + 1) * self.per_start] for i in range(len(self.keys))]

    def reset(self) -> dict[str, Any]:
        n = self.per_start
        frames = [np.repeat(init.frames[None], n, axis=0) for init in self.inits]  # (n, T0, ...)
        proprio = [
            np.repeat(init.proprio[None].astype(np.float32), n, axis=0) for init in self.inits
        ]
        self._open = True
        for key, f, p in zip(self.keys, frames, proprio, strict=True):
            self.sim.reset(key, f, p, common_noise=self.common_noise)
        frames0 = np.concatenate(frames)  # (G * n, T0, H, W, 3)
        self.proprio = np.concatenate(proprio)
        self.instructions = [init.instruction for init in self.inits for _ in range(n)]
        # the reflector has nothing per group: every environment of the batch is one of its
        # episodes, all advancing in lockstep, so the batch is one reflector group
        self.reflector.reset(self.keys[0], self.instructions, frames0)
        return {"image": frames0[:, -1], "proprio": self.proprio, "instruction": self.instructions}

    def step(self, actions: np.ndarray, active: np.ndarray) -> Step:
        # the services step every running environment in one batch; ended ones hold still
        t0 = time.perf_counter()
        moved = next_proprio(self.proprio, actions, limits=self.limits).astype(np.float32)
        self.proprio = np.where(active[:, None], moved, self.proprio)
        t1 = time.perf_counter()
        requests = zip(self.keys, self._split(self.proprio), self._split(active), strict=True)
        image = np.concatenate(self.sim.step_many(list(requests)))
        t2 = time.perf_counter()
        r = np.asarray(self.reflector.score(self.keys[0], image), dtype=np.float64)
        t3 = time.perf_counter()
        tm = self.timings
        tm["kinematics_s"] += t1 - t0
        tm["sim_s"] += t2 - t1
        tm["reflector_s"] += t3 - t2
        obs = {"image": image, "proprio": self.proprio, "instruction": self.instructions}
        done = r > self.eta
        return Step(
            obs=obs, reward=done.astype(np.float64) if self.reward == "success" else r, done=done
        )

    def close(self) -> None:
        if self._open:
            for key in self.keys:
                self.sim.release(key)
            self.reflector.release(self.keys[0])
            self._open = False


class RealGroup:
    """N real envs, each reset to its own start (``actors.rollout.EnvGroup``).

    Without a reflector an env ends at its success (ground-truth termination) or at ``limit``.
    With one, the env's success signal is hidden from termination: an env ends when R > eta
    (or at ``limit``) and counts as a success only if the task is achieved at that moment
    (World-Env's setting without ground-truth termination).

    Args:
        envs: one real env per start.
        starts: (task, seed) of each env.
        limit: env steps per episode at most (None: no limit of its own; the loop's horizon).
        reflector: a reflector client, or None.
        eta: the reflector's threshold.
        key: the group's name at the reflector.
        reward: "success" (1.0 at the task achieved, else 0.0) or "progress" (1.0 at success,
            else ``PROGRESS_WEIGHT`` x the best ``progress`` of the env's step info so far: a
            dense version of the same goal, for the oracle; the env must report it).
    Attributes (after a run): ``success`` (N,) bool, the task achieved at the last step;
        ``ended_by`` N strings: "success", "reflector", "limit", or "" (the loop's horizon);
        ``grasped`` (N,) bool, the task's own object held at some step, or None where the env
        does not say (its step info has no ``grasped_target``: LIBERO).
    """

    def __init__(
        self,
        envs: list[Any],
        starts: list[EvalJob],
        *,
        limit: int | None = None,
        reflector: ReflectorClient | None = None,
        eta: float = 0.5,
        key: str = "eval",
        reward: str = "success",
    ):
        if len(envs) != len(starts):
            raise ValueError(f"{len(starts)} starts for {len(envs)} envs")
        _check_reward("real", reward, REAL_REWARDS)
        self.envs, self.starts, self.n = envs, starts, len(envs)
        self.limit, self.reflector, self.eta, self.key = limit, reflector, eta, key
        self.reward = reward
        self._open = False

    def reset(self) -> dict[str, Any]:
        self.obs = [
            env.reset(s.task, seed=s.seed) for env, s in zip(self.envs, self.starts, strict=True)
        ]
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.success = np.zeros(self.n, dtype=bool)
        self.ended_by = [""] * self.n
        self.grasped: np.ndarray | None = None
        self.progress = np.zeros(self.n)  # (N,) best task progress so far (progress reward)
        if self.reflector is not None:
            frames = np.stack([o.image for o in self.obs])[:, None]
            self.reflector.reset(self.key, [o.instruction for o in self.obs], frames)
            self._open = True
        return observation_batch(self.obs)

    def step(self, actions: np.ndarray, active: np.ndarray) -> Step:
        done = np.zeros(self.n, dtype=bool)
        for i in np.nonzero(active)[0]:
            res = self.envs[i].step(actions[i])
            self.obs[i] = res.obs
            self.steps[i] += 1
            self.success[i] = res.success  # success *now*
            if "grasped_target" in res.info:
                if self.grasped is None:
                    self.grasped = np.zeros(self.n, dtype=bool)
                self.grasped[i] |= bool(res.info["grasped_target"])
            if self.reward == "progress":
                if "progress" not in res.info:
                    raise ValueError(
                        f"post_train.real_reward: progress needs an env that reports its task "
                        f"progress; {type(self.envs[i]).__name__} does not (use success)"
                    )
                self.progress[i] = max(self.progress[i], float(res.info["progress"]))
            if self.reflector is None and res.success:
                done[i], self.ended_by[i] = True, "success"
            elif self.limit is not None and self.steps[i] >= self.limit:
                done[i], self.ended_by[i] = True, "limit"
        if self.reflector is not None:
            # every env of the group is scored each step (finished ones with their last frame)
            frames = np.stack([o.image for o in self.obs])
            r = np.asarray(self.reflector.score(self.key, frames))
            self.score = r  # (N,) the reflector's R of this step
            for i in np.nonzero(active & ~done & (r > self.eta))[0]:
                done[i], self.ended_by[i] = True, "reflector"
        reward = self.success.astype(np.float64)
        if self.reward == "progress":
            reward = np.where(self.success, 1.0, PROGRESS_WEIGHT * self.progress)
        return Step(obs=observation_batch(self.obs), reward=reward, done=done)

    def close(self) -> None:
        if self._open:
            self.reflector.release(self.key)
            self._open = False


class EnvPool:
    """Real envs built once and reused across groups (a LIBERO scene takes tens of seconds to
    build; resetting one to another task or init state is much cheaper)."""

    def __init__(self, make_env: Callable[[], Any]):
        self.make_env = make_env
        self.envs: list[Any] = []

    def take(self, n: int) -> list[Any]:
        while len(self.envs) < n:
            self.envs.append(self.make_env())
        return self.envs[:n]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class ImaginedWorld:
    """Imagined groups from real starts (``InitialState``), through the services or through
    models held in the worker's own process (``cluster.placement: colocated``).

    Args:
        sim, reflector: clients; lists of Ray actor handles of the service replicas; or
            picklable factories of keyed backends (``cluster.backends``), built in the worker's
            process: clients are made in the process that first uses the world.
        eta: the reflector's termination threshold.
        limits: controller limits for the kinematics (None: tabletop defaults).
        reward: what the groups reward (``post_train.imagined_reward``): "reflector", the
            reflector's R, or "success", 1.0 where R > eta ended the rollout, else 0.0.
    """

    def __init__(
        self,
        sim: SimulatorClient | list[Any] | Callable[[], Any],
        reflector: ReflectorClient | list[Any] | Callable[[], Any],
        *,
        eta: float,
        limits: Any = None,
        reward: str = "reflector",
    ):
        _check_reward("imagined", reward, IMAGINED_REWARDS)
        if not 0.0 < eta < 1.0:
            raise ValueError(
                f"imagined rollouts need a termination eta in (0, 1), got {eta}: resolve the "
                "reflector checkpoint's with reflector_service.checkpoint.termination_eta first"
            )
        self._sim, self._reflector, self.eta, self.limits = sim, reflector, eta, limits
        self.reward = reward

    def _clients(self) -> tuple[SimulatorClient, ReflectorClient]:
        if isinstance(self._sim, list):
            self._sim = RaySimulatorClient(self._sim)
        elif callable(self._sim):  # a backend factory: the world model in this process
            self._sim = LocalSimulatorClient(self._sim())
        if isinstance(self._reflector, list):
            self._reflector = RayReflectorClient(self._reflector)
        elif callable(self._reflector):
            self._reflector = LocalReflectorClient(self._reflector())
        return self._sim, self._reflector

    def group(
        self, starts: list[InitialState], n: int, keys: list[str], *, common_noise: bool = False
    ) -> ImaginedGroup:
        """One batch of ``n`` imagined rollouts per start (``common_noise``: each start's
        rollouts share the world model's noise)."""
        sim, reflector = self._clients()
        return ImaginedGroup(
            sim,
            reflector,
            starts,
            n,
            keys=keys,
            eta=self.eta,
            limits=self.limits,
            common_noise=common_noise,
            reward=self.reward,
        )

    def reflector_client(self) -> ReflectorClient:
        """The reflector's client (also what judges real frames in ``actors.search_check``)."""
        return self._clients()[1]

    def describe(self, start: InitialState) -> tuple[str, str]:
        """(task, instruction) of a start."""
        return start.task_id, start.instruction

    def succeeded(self, rewards: np.ndarray) -> np.ndarray:
        """(N,) bool: the final rewards that count as success (the reflector's R > eta)."""
        return rewards > self.eta

    @property
    def recoveries(self) -> int:
        """Times a group's state was re-sent to a restarted service replica."""
        sim, reflector = self._clients()
        return sim.recoveries + reflector.recoveries

    def close(self) -> None:
        pass


class RealWorld:
    """Real-env groups from real starts (``EvalJob``): the oracle's training groups, rewarded by
    the env's own success (or its dense task progress).

    Args:
        env_factory: builds one real env (the world keeps a pool of them).
        reward: what the groups reward, one of ``REAL_REWARDS`` (``RealGroup``).
    """

    recoveries = 0

    def __init__(self, env_factory: Callable[[], Any], *, reward: str = "success"):
        _check_reward("real", reward, REAL_REWARDS)
        self.env_factory, self.reward = env_factory, reward
        self._pool: EnvPool | None = None

    @property
    def pool(self) -> EnvPool:
        if self._pool is None:
            self._pool = EnvPool(self.env_factory)
        return self._pool

    def group(
        self, starts: list[EvalJob], n: int, keys: list[str], *, common_noise: bool = False
    ) -> RealGroup:
        """One batch of ``n`` real envs per start (``common_noise`` changes nothing: envs reset
        to one start and given the same actions are in the same state already)."""
        jobs = [s for s in starts for _ in range(n)]
        return RealGroup(self.pool.take(len(jobs)), jobs, key=keys[0], reward=self.reward)

    def describe(self, start: EvalJob) -> tuple[str, str]:
        return start.task, self.pool.take(1)[0].instruction(start.task)

    def succeeded(self, rewards: np.ndarray) -> np.ndarray:
        """(N,) bool: the env's own success (reward 1.0; a failure's is <= ``PROGRESS_WEIGHT``)."""
        return rewards > 0.5

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
