"""Scripted expert for the tabletop tasks, computed from the environment's true state.

Stateless: each call looks at the EE, the gripper and the objects and picks the phase (open and
move above the block, descend, close; then lift, or carry above the target, descend, open;
once a placed block rests on its target, stay open and rise, so a finished task stays finished).
The EE moves toward the phase's waypoint with a saturated proportional command, so it reaches a
waypoint exactly once it is within one step.
"""

from __future__ import annotations

import numpy as np

from envs.base import ACTION_DIM
from envs.tabletop import TabletopEnv
from envs.tabletop_tasks import BLOCK_SIZE, LIFT_HEIGHT, OBJECTS, TASKS, is_success

HOVER = 0.04  # fingertips this far above the block top before descending
CLEARANCE = 0.03  # a carried block's bottom stays this far above every other object
LIFT_MARGIN = 0.02  # lift tasks raise the block this far past LIFT_HEIGHT
XY_TOL = 0.01  # xy alignment before descending (a grasp tolerates GRASP_XY_TOL = 0.02)
Z_TOL = 0.006  # height tolerance before closing / opening


def expert_action(
    env: TabletopEnv, *, noise: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The expert's next action for the env's current task and state.

    Args:
        env: a ``TabletopEnv`` after ``reset``.
        noise: std of Gaussian noise added to the 6 arm dimensions (0: deterministic).
        rng: generator for the noise (required when ``noise > 0``).
    Returns:
        (7,) float32 action in [-1, 1].
    """
    if env.task is None:
        raise RuntimeError("expert_action needs an env after reset(task)")
    if noise > 0 and rng is None:
        raise ValueError("expert_action: pass rng=np.random.default_rng(seed) when noise > 0")
    task = TASKS[env.task]
    pos = env.object_positions()
    s = env.proprio  # (8,)
    ee, opening = s[:3], s[6]
    half = BLOCK_SIZE / 2
    block = pos[task.block]
    grip = 1.0
    if task.kind != "lift" and env.holding is None and is_success(task, pos, None):
        # done: keep the gripper open and rise clear of the block (never re-grasp it)
        target, grip = np.array([ee[0], ee[1], max(ee[2], block[2] + half + HOVER)]), -1.0
    elif env.holding is not None and env.holding != task.block:
        target, grip = ee, -1.0  # holding the wrong block: let it go
    elif env.holding is None:
        grip = -1.0
        if np.max(np.abs(block[:2] - ee[:2])) > XY_TOL:
            target = np.array([block[0], block[1], block[2] + half + HOVER])
        else:
            target = block.copy()  # fingertips at the block's center height
            is_open = opening >= env.limits.finger_open - 1e-9
            if abs(ee[2] - target[2]) < Z_TOL and is_open:
                grip = 1.0
    else:
        offset = block - ee  # the carried block's offset from the EE
        if task.kind == "lift":
            target = np.array([ee[0], ee[1], LIFT_HEIGHT + LIFT_MARGIN + half - offset[2]])
        else:
            assert task.target is not None  # place and stack tasks name a target
            goal = pos[task.target]
            goal_top = goal[2] + OBJECTS[task.target].half[2]
            others_top = max(p[2] + OBJECTS[n].half[2] for n, p in pos.items() if n != task.block)
            carry_z = others_top + CLEARANCE + half - offset[2]
            goal_xy = goal[:2] - offset[:2]
            if np.max(np.abs(goal_xy - ee[:2])) > XY_TOL:
                if ee[2] < carry_z - Z_TOL:
                    target = np.array([ee[0], ee[1], carry_z])
                else:
                    target = np.array([goal_xy[0], goal_xy[1], max(ee[2], carry_z)])
            else:
                target = np.array([goal_xy[0], goal_xy[1], goal_top + half - offset[2]])
                if abs(ee[2] - target[2]) < Z_TOL:
                    grip = -1.0
    a = _command(env, target, grip)
    if noise > 0 and rng is not None:
        a[:6] = np.clip(a[:6] + rng.normal(0.0, noise, size=6), -1.0, 1.0)
    return a.astype(np.float32)


def move_to(env: TabletopEnv, target: np.ndarray, grip: float) -> np.ndarray:
    """The saturated proportional command toward an EE waypoint, gripper kept upright.

    Args:
        env: a ``TabletopEnv`` after ``reset``.
        target: (3,) EE waypoint in meters.
        grip: gripper command (-1 open, +1 close).
    Returns:
        (7,) float32 action in [-1, 1].
    """
    return _command(env, target, grip).astype(np.float32)


def _command(env: TabletopEnv, target: np.ndarray, grip: float) -> np.ndarray:
    s = env.proprio  # (8,): EE position (3), EE axis-angle (3), finger opening, ...
    a = np.zeros(ACTION_DIM)  # float64 until the caller's noise is added
    a[:3] = np.clip((target - s[:3]) / env.limits.pos_limit, -1.0, 1.0)
    a[3:6] = np.clip(-s[3:6] / env.limits.rot_limit, -1.0, 1.0)
    a[6] = grip
    return a


__all__ = ["expert_action", "move_to"]
