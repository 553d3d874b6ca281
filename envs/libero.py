"""LIBERO (MuJoCo through robosuite) behind the ``envs.base.Env`` interface.

Follows OpenVLA-OFT's evaluation protocol: one LIBERO ``OffScreenRenderEnv`` per task, episodes
start from the task's stored initial states (``reset(task, seed=i)`` uses init state i) in a
scene rebuilt with the fixture placement of OFT's episode i (LIBERO's hard reset), then 10
no-op steps (arm still, gripper open) let the objects settle before the policy acts: the first
observation equals OFT's bit for bit, and a reset to the same start always gives the same
episode. The step limit per suite counts policy steps only. Images are rotated 180 degrees
(``img[::-1, ::-1]``), proprio is EE position (3) + EE axis-angle (3) + gripper finger positions
(2), actions are 7-D OSC_POSE (normalized delta pose, gripper -1 open / +1 close) and success
is the task's BDDL goal predicate.

Camera: robosuite renders in OpenGL row order, so the upright (OpenCV) view is ``raw[::-1]`` and
OFT's rotated image ``raw[::-1, ::-1]`` is that view mirrored left-right. ``camera`` describes
the observed (rotated) image exactly: intrinsics and camera pose come from robosuite's camera
utilities, the extrinsics' y row is negated (so the OpenCV projection lands in ``raw``'s row
order) and ``flip180=True`` then maps it into the observed image.

Task ids: ``"<suite>/<index>"`` (canonical, ``task_names``), ``"<suite>/<task name>"`` or a task
name of the configured suite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from envs import libero_setup
from envs.base import ACTION_DIM, Camera, Observation, StepResult, check_action
from envs.config import EnvConfig
from envs.kinematics import ControllerLimits

MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
SETTLE_STEPS = 10
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # arm still, gripper open
AGENTVIEW, WRIST = "agentview", "robot0_eye_in_hand"
PANDA_REACH = 0.855  # meters; bounds the workspace box of ``limits``
FINGER_OPEN = 0.04  # Panda finger joint at full opening (meters)
GRIPPER_RATE = 0.005  # finger travel per 20 Hz step, measured (closing peaks at ~0.0048 m)


def _import_libero():
    """Import LIBERO after seeding its config; one clear error when any piece is missing."""
    libero_setup.ensure_libero()
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        from robosuite.utils import camera_utils, transform_utils
    except ImportError as e:
        raise ValueError(f"LIBERO failed to import ({e}); {libero_setup.INSTALL_HINT}") from None
    return benchmark, get_libero_path, OffScreenRenderEnv, camera_utils, transform_utils


@contextlib.contextmanager
def _callers_rng_kept() -> Iterator[None]:
    """NumPy's global RNG state is restored after the block (LIBERO draws from it)."""
    caller = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(caller)


class LiberoEnv:
    """One LIBERO suite as an ``envs.base.Env``.

    Args:
        cfg: ``EnvConfig`` with name "libero": suite, image_size (both cameras), wrist_camera,
            max_steps (0: the suite's default).
        seed: seeds the generator that picks an init state when ``reset`` gets no seed.
        settle_steps: no-op steps after each reset (OFT: 10).
    """

    action_dim = ACTION_DIM

    def __init__(self, cfg: EnvConfig, *, seed: int = 0, settle_steps: int = SETTLE_STEPS):
        if cfg.name != "libero":
            raise ValueError(f"LiberoEnv needs env.name='libero', got {cfg.name!r}")
        tasks = libero_setup.task_map()
        if cfg.suite not in MAX_STEPS or cfg.suite not in tasks:
            raise ValueError(
                f"unknown LIBERO suite {cfg.suite!r}; valid suites: {', '.join(MAX_STEPS)}"
            )
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        mods = _import_libero()
        self._benchmark, self._get_path, self._env_cls, self._cam_utils, self._tf = mods
        self.cfg = cfg
        self.suite = cfg.suite
        self.settle_steps = settle_steps
        self.max_steps = cfg.max_steps or MAX_STEPS[cfg.suite]
        self._names = tasks[cfg.suite]
        self._all = tasks
        self._suite_obj = self._benchmark.get_benchmark_dict()[cfg.suite]()
        self._seed_rng = np.random.default_rng(seed)
        self._env: Any = None
        self._env_task: str | None = None
        self._task: str | None = None
        self._init_states: dict[str, np.ndarray] = {}
        self._placements: dict[str, list[Any]] = {}  # task -> global RNG state before reset i
        self.camera: Camera | None = None
        self.limits: ControllerLimits | None = None
        # camera and limits are known once a scene exists: build the first task's scene now
        self._ensure_env(self.task_names[0])

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        """Canonical ids ``"<suite>/<index>"`` of the suite's tasks, in LIBERO's order."""
        return [f"{self.suite}/{i}" for i in range(len(self._names))]

    @property
    def task(self) -> str | None:
        """The current episode's task id (None before the first reset)."""
        return self._task

    def task_id(self, task: str) -> str:
        """Canonical id of ``task`` (``"suite/i"``, ``"suite/name"`` or a name of this suite)."""
        suite, _, rest = task.rpartition("/")
        suite = suite or self.suite
        names = self._all.get(suite)
        if suite == self.suite and names is not None:
            if rest.isdigit() and int(rest) < len(names):
                return f"{suite}/{int(rest)}"
            if rest in names:
                return f"{suite}/{names.index(rest)}"
        raise ValueError(
            f"unknown LIBERO task {task!r} for suite {self.suite!r}; valid: "
            f"{self.suite}/0 .. {self.suite}/{len(self._names) - 1} or a task "
            f"name such as {self._names[0]!r}"
        )

    def task_name(self, task: str) -> str:
        """LIBERO's task name (BDDL file stem) of ``task``."""
        return self._names[int(self.task_id(task).rsplit("/", 1)[1])]

    def instruction(self, task: str) -> str:
        return libero_setup.task_language(self.task_name(task))

    def init_states(self, task: str) -> np.ndarray:
        """(N, D) float64 stored initial MuJoCo states of ``task`` (from the package's files)."""
        tid = self.task_id(task)
        if tid not in self._init_states:
            idx = int(tid.rsplit("/", 1)[1])
            self._init_states[tid] = np.asarray(
                self._suite_obj.get_task_init_states(idx), dtype=np.float64
            )
        return self._init_states[tid]

    def meta(self) -> dict[str, Any]:
        """JSON-able description for episode-store metadata."""
        return {
            "env": "libero",
            "suite": self.suite,
            "image_size": self.cfg.image_size,
            "wrist_camera": self.cfg.wrist_camera,
            "camera": self.camera.to_dict(),
            "controller_limits": self.limits.to_dict(),
            "max_steps": self.max_steps,
            "tasks": {t: self.instruction(t) for t in self.task_names},
        }

    # ------------------------------------------------------------------ scene
    def _ensure_env(self, tid: str) -> None:
        if self._env_task == tid:
            return
        self.close()
        idx = int(tid.rsplit("/", 1)[1])
        task = self._suite_obj.get_task(idx)
        bddl = os.path.join(self._get_path("bddl_files"), task.problem_folder, task.bddl_file)
        size = self.cfg.image_size
        self._cameras = [AGENTVIEW, WRIST] if self.cfg.wrist_camera else [AGENTVIEW]
        # As OpenVLA-OFT's evaluation: LIBERO's hard reset (every reset rebuilds the scene, so
        # no gripper or controller state carries over from the last episode); no reset here
        # (fixture placements: ``_rebuild``).
        with _callers_rng_kept():  # building places fixtures with NumPy's global RNG too
            self._env = self._env_cls(
                bddl_file_name=bddl,
                camera_heights=size,
                camera_widths=size,
                camera_names=self._cameras,
            )
        self._env_task = tid
        self.camera = self._make_camera()
        self.limits = self._make_limits()

    def _make_camera(self) -> Camera:
        size = self.cfg.image_size
        sim = self._env.sim
        k_rs = self._cam_utils.get_camera_intrinsic_matrix(sim, AGENTVIEW, size, size)
        cam_to_world = self._cam_utils.get_camera_extrinsic_matrix(sim, AGENTVIEW)  # OpenCV axes
        world_to_cam = np.linalg.inv(cam_to_world)
        world_to_cam[1] *= -1.0  # rows of raw (OpenGL-order) image grow with camera +y
        k = np.array(k_rs, dtype=np.float64)
        # robosuite puts the principal point at size/2 (pixel corners); Camera uses pixel centers
        k[0, 2] = k[1, 2] = (size - 1) / 2.0
        return Camera(k, world_to_cam, size, size, flip180=True)

    def _make_limits(self) -> ControllerLimits:
        ctrl = self._env.robots[0].controller
        out_max = np.asarray(ctrl.output_max, dtype=np.float64)  # (6,) m and rad at |a| = 1
        base = np.asarray(self._env.robots[0].base_pos, dtype=np.float64)  # (3,) world
        r = PANDA_REACH
        return ControllerLimits(
            pos_limit=float(out_max[:3].max()),
            rot_limit=float(out_max[3:6].max()),
            gripper_rate=GRIPPER_RATE,
            finger_open=FINGER_OPEN,
            workspace_low=tuple(float(x) for x in base + np.array([-0.2, -r, -0.2])),
            workspace_high=tuple(float(x) for x in base + np.array([r, r, r + 0.3])),
        )

    def close(self) -> None:
        """Free the MuJoCo scene and its renderer."""
        if self._env is not None:
            self._env.close()
            self._env, self._env_task = None, None

    # ------------------------------------------------------------------ episode
    def reset(
        self,
        task: str,
        *,
        seed: int | None = None,
        init_state: Any = None,
        settle: bool | None = None,
    ) -> Observation:
        """Start an episode of ``task`` from a stored initial state, then settle.

        Args:
            task: a task id (see ``task_id``).
            seed: index of the stored init state (taken modulo their number); None draws one.
            init_state: (D,) MuJoCo state (an init state or a ``get_state()``) used instead, in
                the scene of episode 0.
            settle: run the no-op settling steps; default: yes for a stored init state picked by
                seed, no for an explicit ``init_state`` (so a ``get_state()`` restores exactly).
        Returns:
            the first observation (after settling, if any).
        """
        tid = self.task_id(task)
        if init_state is None:
            states = self.init_states(tid)
            if seed is None:
                seed = int(self._seed_rng.integers(2**31 - 1))
            state = states[int(seed) % len(states)]
        else:
            state = np.asarray(init_state, dtype=np.float64)
        self._ensure_env(tid)
        want = self._env.get_sim_state().shape
        if state.shape != want:
            raise ValueError(f"init_state for {tid} must have shape {want}, got {state.shape}")
        self._task, self._instruction = tid, self.instruction(tid)
        self._rebuild(tid, int(seed) % len(self.init_states(tid)) if init_state is None else 0)
        raw = self._env.set_init_state(state)
        if (settle if settle is not None else init_state is None) and self.settle_steps:
            raw = self._settle()
        self._step = 0
        return self._observe(raw)

    def _rebuild(self, tid: str, episode: int) -> None:
        """Rebuild the scene with the fixture placement of OFT's episode ``episode`` of the task.

        LIBERO places fixtures (cabinets, stoves: bodies the init state does not hold) with
        NumPy's global RNG at every hard reset; OFT seeds it with 0 when it builds a task's env
        (``env.seed(0)``), so its episode i gets the placement of the (i+1)-th reset. Here the
        RNG state before each reset is kept per task (``_placements``): episode i always gets
        OFT's episode-i scene (bit for bit, whatever ran before), a first visit of a high i
        runs the resets before it once, and the caller's global RNG is left as it was.
        """
        chain = self._placements.setdefault(tid, [np.random.RandomState(0).get_state()])
        with _callers_rng_kept():
            while len(chain) <= episode:
                np.random.set_state(chain[-1])
                self._env.reset()
                chain.append(np.random.get_state())
            np.random.set_state(chain[episode])
            self._env.reset()
            if len(chain) == episode + 1:
                chain.append(np.random.get_state())

    def _settle(self) -> dict[str, np.ndarray]:
        """OFT's settle: no-op steps through the env (arm still, gripper open), each observed
        as a policy step would be; returns the raw robosuite observation of the last."""
        raw: dict[str, np.ndarray] = {}
        for _ in range(self.settle_steps):
            raw, _, _, _ = self._env.step(NOOP_ACTION)
        return raw

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one 7-D action (delta pos 3, delta rot 3 in [-1, 1], gripper -1 open / +1 close).

        Returns:
            ``StepResult(obs, success, done, info)``; info holds "step", "task", "ee_pos" (3,).
        Raises:
            ValueError: if the action is not a finite array of shape (7,).
        """
        if self._task is None:
            raise RuntimeError("call reset(task) before step()")
        a = check_action(action)
        raw, _, _, _ = self._env.step(np.clip(a, -1.0, 1.0))
        self._step += 1
        success = bool(self._env.check_success())
        done = success or self._step >= self.max_steps
        info = {
            "step": self._step,
            "task": self._task,
            "ee_pos": np.asarray(raw["robot0_eef_pos"], dtype=np.float64).copy(),
        }
        return StepResult(self._observe(raw), success, bool(done), info)

    def get_state(self) -> np.ndarray:
        """(D,) float64 flattened MuJoCo state; ``reset(task, init_state=...)`` restores it."""
        if self._task is None:
            raise RuntimeError("call reset(task) before get_state()")
        return np.asarray(self._env.get_sim_state(), dtype=np.float64).copy()

    def _observe(self, raw: dict[str, np.ndarray]) -> Observation:
        quat = np.array(raw["robot0_eef_quat"], dtype=np.float64)  # (x, y, z, w)
        proprio = np.concatenate(
            [raw["robot0_eef_pos"], self._tf.quat2axisangle(quat), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)  # (8,)
        wrist = None
        if self.cfg.wrist_camera:
            wrist = np.ascontiguousarray(raw[f"{WRIST}_image"][::-1, ::-1])  # (H, W, 3)
        image = np.ascontiguousarray(raw[f"{AGENTVIEW}_image"][::-1, ::-1])  # (H, W, 3)
        return Observation(
            image=image, proprio=proprio, instruction=self._instruction, wrist_image=wrist
        )


__all__ = ["LiberoEnv", "MAX_STEPS", "SETTLE_STEPS"]
