"""The built-in ``tabletop`` environment: fast, deterministic pick-and-place for CPU runs and tests.

A 3-D end effector with a two-finger gripper above a table holding two blocks and two plates
(see ``envs.tabletop_tasks``). The arm moves by ``envs.kinematics.next_proprio`` (LIBERO
OSC_POSE semantics). Grasping is rigid and rule-based, with no contact dynamics: closing the
gripper low around a block attaches it (it then moves with the EE at a fixed offset); opening
releases it and it drops onto the highest surface under its footprint. A carried block cannot be
lowered into what is below it (the EE stops there; the only case where the arm departs from
``next_proprio``). Images come from the NumPy renderer of ``envs.tabletop_render``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ACTION_DIM, PROPRIO_DIM, Camera, Observation, StepResult, check_action
from envs.config import EnvConfig
from envs.kinematics import ControllerLimits, axis_angle_to_matrix, next_proprio
from envs.tabletop_render import (
    Faces,
    Rasterizer,
    SceneRenderer,
    box_faces,
    footprint,
    gripper_faces,
    look_at_camera,
    render_once,
    table_faces,
    wrist_camera,
)
from envs.tabletop_tasks import (
    BLOCK_SIZE,
    BLOCKS,
    OBJECTS,
    TASKS,
    block_in_grasp,
    footprint_overlaps,
    is_success,
    sample_home_layout,
    sample_layout,
    support_top,
    task_progress,
)

DEFAULT_MAX_STEPS = 80  # expert episodes take 17-47 steps (mean ~32)
CAMERA_EYE = (0.0, -0.60, 0.85)  # front camera, looking obliquely down at the table
CAMERA_TARGET = (0.0, 0.06, 0.05)
CAMERA_FOVY = 31.0
# EE at reset (+- EE_JITTER per axis): low, in front of the objects, hiding none of them
EE_START = (0.0, -0.18, 0.09)
EE_JITTER = 0.015
OBJECT_LABELS = {name: 2 + i for i, name in enumerate(OBJECTS)}  # pixel labels of objects


class TabletopEnv:
    """Language-conditioned tabletop tasks (place, stack, lift) behind the ``envs.base.Env`` API.

    Args:
        cfg: ``EnvConfig`` with name "tabletop" (image size, wrist camera, step limit).
        seed: seeds the generator that draws episode seeds when ``reset`` gets none.
        limits: controller scales (default ``ControllerLimits()``).
    """

    action_dim = ACTION_DIM

    def __init__(
        self, cfg: EnvConfig | None = None, *, seed: int = 0, limits: ControllerLimits | None = None
    ):
        cfg = EnvConfig() if cfg is None else cfg
        if cfg.name != "tabletop":
            raise ValueError(f"TabletopEnv needs env.name='tabletop', got {cfg.name!r}")
        self.cfg = cfg
        self.limits = ControllerLimits() if limits is None else limits
        self.max_steps = cfg.max_steps or DEFAULT_MAX_STEPS
        self.camera: Camera = look_at_camera(
            CAMERA_EYE, CAMERA_TARGET, fovy_deg=CAMERA_FOVY, size=cfg.image_size
        )
        self._renderer = SceneRenderer(self.camera)
        self._wrist = None
        if cfg.wrist_camera:
            self._wrist = Rasterizer(wrist_camera(np.zeros(3), np.eye(3), size=cfg.image_size))
        self._seed_rng = np.random.default_rng(seed)
        self._task: str | None = None
        self._labels = np.zeros((cfg.image_size, cfg.image_size), np.int16)

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        return list(TASKS)

    def instruction(self, task: str) -> str:
        return TASKS[self._check_task(task)].instruction

    @property
    def task(self) -> str | None:
        """The current episode's task (None before the first reset)."""
        return self._task

    @property
    def proprio(self) -> np.ndarray:
        """(8,) float64 copy of the current proprio state."""
        return self._proprio.copy()

    @property
    def holding(self) -> str | None:
        """The block in the gripper, or None."""
        return self._holding

    def meta(self) -> dict[str, Any]:
        """JSON-able description for episode-store metadata."""
        return {
            "env": "tabletop",
            "image_size": self.cfg.image_size,
            "wrist_camera": self.cfg.wrist_camera,
            "camera": self.camera.to_dict(),
            "controller_limits": self.limits.to_dict(),
            "max_steps": self.max_steps,
            "layout": self.cfg.layout,
            "layout_jitter": self.cfg.layout_jitter,
            "tasks": {name: t.instruction for name, t in TASKS.items()},
        }

    def _check_task(self, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown tabletop task {task!r}; valid tasks: {', '.join(TASKS)}")
        return task

    # ------------------------------------------------------------------ episode
    def reset(self, task: str, *, seed: int | None = None, init_state: Any = None) -> Observation:
        """Start an episode of ``task``.

        Args:
            task: one of ``task_names``.
            seed: placement seed (objects and EE start); None draws one from the env's generator.
            init_state: a ``get_state()`` dict to restore instead of sampling (seed ignored).
        Returns:
            the first observation.
        """
        self._task = self._check_task(task)
        self._instruction = TASKS[task].instruction
        if init_state is not None:
            self._restore(init_state)
        else:
            if seed is None:
                seed = int(self._seed_rng.integers(2**31 - 1))
            rng = np.random.default_rng(seed)
            if self.cfg.layout == "homes":
                self._positions = sample_home_layout(rng, self.cfg.layout_jitter)
            else:
                self._positions = sample_layout(rng)
            ee = np.asarray(EE_START) + rng.uniform(-EE_JITTER, EE_JITTER, size=3)
            f = self.limits.finger_open
            self._proprio = np.concatenate([ee, np.zeros(3), [f, -f]])
            self._holding: str | None = None
            self._offset = np.zeros(3)
            self._step = 0
        self._start = self.object_positions()  # task_progress measures from here
        self._static_dirty = True
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one 7-D action (delta pos 3, delta rot 3, gripper 1; values clipped to [-1, 1]).

        Returns:
            ``StepResult(obs, success, done, info)``; info holds "objects" (name -> (3,) center),
            "ee_pos" (3,), "holding" (block name or None), "grasped_target" (the task's own
            block held), "progress" (``task_progress`` in [0, 1], measured from the reset's
            object positions), "step" and "task".
        Raises:
            ValueError: if the action is not a finite array of shape (7,).
        """
        if self._task is None:
            raise RuntimeError("call reset(task) before step()")
        a = check_action(action)
        prev_w = self._proprio[6]
        s = next_proprio(self._proprio, a, limits=self.limits)  # (8,)
        if self._holding is not None:
            name = self._holding
            center = s[:3] + self._offset
            floor = support_top(name, center, self._positions) + OBJECTS[name].half[2]
            if center[2] < floor:  # the carried block stops on what is below it
                s[2] += floor - center[2]
                center[2] = floor
            self._positions[name] = center
            if a[6] <= 0:  # release: the block drops onto the highest surface below
                center[2] = support_top(name, center, self._positions) + OBJECTS[name].half[2]
                self._holding = None
                self._static_dirty = True
        elif a[6] > 0 and prev_w >= BLOCK_SIZE / 2 - 1e-9 and s[6] <= BLOCK_SIZE / 2:
            grasped = self._graspable(s[:3])
            if grasped is not None:
                self._holding = grasped
                self._offset = self._positions[grasped] - s[:3]
                self._static_dirty = True
        self._proprio = s
        self._step += 1
        success = is_success(TASKS[self._task], self._positions, self._holding)
        done = success or self._step >= self.max_steps
        info = {
            "objects": self.object_positions(),
            "ee_pos": s[:3].copy(),
            "holding": self._holding,
            "grasped_target": self._holding == TASKS[self._task].block,  # the task's own block
            "progress": task_progress(
                TASKS[self._task], self._positions, self._holding, s[:3], self._start
            ),
            "step": self._step,
            "task": self._task,
        }
        return StepResult(self._observe(), bool(success), bool(done), info)

    def _graspable(self, ee: np.ndarray) -> str | None:
        """The nearest block around the fingertips with nothing resting on it, if any."""
        best, best_d = None, np.inf
        for name in BLOCKS:
            p = self._positions[name]
            if not block_in_grasp(ee, p) or self._has_load(name):
                continue
            d = float(np.linalg.norm(ee[:2] - p[:2]))
            if d < best_d:
                best, best_d = name, d
        return best

    def _has_load(self, name: str) -> bool:
        p, h = self._positions[name], OBJECTS[name].half
        for other in BLOCKS:
            q, oh = self._positions[other], OBJECTS[other].half
            if (
                other != name
                and footprint_overlaps(q, oh, p, h)
                and abs(q[2] - oh[2] - p[2] - h[2]) < 1e-6
            ):
                return True
        return False

    # ------------------------------------------------------------------ state
    def object_positions(self) -> dict[str, np.ndarray]:
        """name -> (3,) center of every object (copies)."""
        return {k: v.copy() for k, v in self._positions.items()}

    def close(self) -> None:
        """Nothing to free (NumPy rendering); part of the Env interface."""

    def get_state(self) -> dict[str, Any]:
        """JSON-able snapshot; ``reset(task, init_state=state)`` restores it exactly."""
        if self._task is None:
            raise RuntimeError("call reset(task) before get_state()")
        return {
            "proprio": [float(x) for x in self._proprio],
            "objects": {k: [float(x) for x in v] for k, v in self._positions.items()},
            "holding": self._holding,
            "grasp_offset": [float(x) for x in self._offset],
            "step": int(self._step),
        }

    def _restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(
                f"init_state must be a dict from get_state(), got {type(state).__name__}"
            )
        missing = [
            k for k in ("proprio", "objects", "holding", "grasp_offset", "step") if k not in state
        ]
        if missing:
            raise ValueError(f"init_state is missing keys {missing} (use a dict from get_state())")
        try:
            proprio = np.asarray(state["proprio"], dtype=np.float64)
            objects = {
                k: np.asarray(v, dtype=np.float64) for k, v in dict(state["objects"]).items()
            }
            offset = np.asarray(state["grasp_offset"], dtype=np.float64)
            step = int(state["step"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"init_state has malformed values: {e}") from None
        if proprio.shape != (PROPRIO_DIM,) or offset.shape != (3,):
            raise ValueError(
                f"init_state proprio must have {PROPRIO_DIM} numbers and grasp_offset 3"
            )
        if sorted(objects) != sorted(OBJECTS) or any(v.shape != (3,) for v in objects.values()):
            raise ValueError(f"init_state objects must map each of {list(OBJECTS)} to (x, y, z)")
        holding = state["holding"]
        if holding is not None and holding not in BLOCKS:
            raise ValueError(f"init_state holding must be None or one of {BLOCKS}, got {holding!r}")
        if step < 0:
            raise ValueError(f"init_state step must be >= 0, got {step}")
        self._proprio, self._offset, self._step, self._holding = proprio, offset, step, holding
        self._positions = {k: objects[k] for k in OBJECTS}

    # ------------------------------------------------------------------ rendering
    def _object_faces(self, name: str) -> Faces:
        spec = OBJECTS[name]
        return box_faces(self._positions[name], spec.half, spec.color, OBJECT_LABELS[name])

    def _moving(self) -> tuple[Faces, list[tuple], list[str]]:
        """Faces and shadow casters of the gripper and the carried block; names that rest."""
        ee = self._proprio[:3]
        rot = axis_angle_to_matrix(self._proprio[3:6])
        opening = self._proprio[6]
        if self._holding is not None or any(block_in_grasp(ee, self._positions[b]) for b in BLOCKS):
            opening = max(opening, BLOCK_SIZE / 2)  # fingers stop at the block's faces
        grip = gripper_faces(ee, rot, opening)
        casters = [footprint(grip)]
        parts = [grip]
        if self._holding is not None:
            carried = self._object_faces(self._holding)
            parts.append(carried)
            casters.append(footprint(carried))
        resting = [n for n in OBJECTS if n != self._holding]
        return Faces.concat(parts), casters, resting

    def _observe(self) -> Observation:
        moving, casters, resting = self._moving()
        if self._static_dirty:
            static = [self._object_faces(n) for n in resting]
            rest_casters = [
                footprint(f) for n, f in zip(resting, static, strict=True) if n in BLOCKS
            ]
            self._renderer.set_static(static, rest_casters)
            self._static_dirty = False
        image, self._labels = self._renderer.render(moving, casters)
        wrist = None
        if self._wrist is not None:
            wrist = self._render_wrist(self._wrist)
        return Observation(
            image=image,
            proprio=self._proprio.astype(np.float32),
            instruction=self._instruction,
            wrist_image=wrist,
        )

    def _render_wrist(self, raster: Rasterizer) -> np.ndarray:
        ee = self._proprio[:3]
        rot = axis_angle_to_matrix(self._proprio[3:6])
        raster.set_pose(wrist_camera(ee, rot, size=self.cfg.image_size).extrinsics)
        opening = max(self._proprio[6], BLOCK_SIZE / 2) if self._holding else self._proprio[6]
        fingers = gripper_faces(ee, rot, opening, fingers_only=True)
        objects = {n: self._object_faces(n) for n in OBJECTS}
        casters = [footprint(objects[n]) for n in BLOCKS]
        return render_once(raster, [table_faces(), fingers, *objects.values()], casters)

    def labels(self) -> np.ndarray:
        """(H, W) int16 object label of each pixel of the last image: -1 background, 0 table,
        1 gripper, ``OBJECT_LABELS[name]`` for objects."""
        return self._labels.copy()

    def wrist_camera(self) -> Camera:
        """The wrist camera at the current EE pose."""
        return wrist_camera(
            self._proprio[:3], axis_angle_to_matrix(self._proprio[3:6]), size=self.cfg.image_size
        )


__all__ = ["TabletopEnv", "DEFAULT_MAX_STEPS", "OBJECT_LABELS"]
