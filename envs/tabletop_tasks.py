"""Scene and tasks of the built-in ``tabletop`` environment (geometry, tasks, success).

One scene for every task: two blocks (red, yellow) and two flat plates (blue, green) on a table.
Tasks differ by their instruction, so the other objects act as distractors:
``place_<block>_on_<plate>`` (pick and place), ``stack_<block>_on_<block>`` and ``lift_<block>``.
Blocks move only while carried; a released block drops onto the highest thing under its
footprint (table, plate or block). World frame: x right, y away from the front camera, z up,
table surface at z = 0, meters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BLOCK_SIZE = 0.06  # cube side
PLATE_SIZE = 0.10  # square plate side
PLATE_HEIGHT = 0.006
LIFT_HEIGHT = 0.10  # a lifted block's bottom must be at least this high
SPAWN_LOW = (-0.18, -0.06)  # (x, y) range of object centers at reset
SPAWN_HIGH = (0.18, 0.16)
SPAWN_MARGIN = 0.03  # free space kept between object footprints at reset
# "homes" layout: each object's center at reset is its home (x, y) plus a uniform jitter, like
# LIBERO's init states (fixed regions, a few cm of variation); footprints never overlap for
# jitters up to MAX_HOME_JITTER
HOMES = {
    "red_block": (-0.09, 0.0),
    "yellow_block": (0.09, 0.0),
    "blue_plate": (-0.09, 0.15),
    "green_plate": (0.09, 0.15),
}
MAX_HOME_JITTER = 0.04
GRASP_XY_TOL = 0.02  # |EE - block center| in x and y for a grasp
GRASP_Z_BELOW = 0.015  # the fingertips may be this far below the block center ...
GRASP_Z_ABOVE = 0.01  # ... and must be at least this far below the block top
REACH_SCALE = 0.2  # task_progress: fingertips this far from the block (or farther) reach 0


@dataclass(frozen=True)
class ObjectSpec:
    """A box-shaped object: ``half`` = (3,) half extents, ``color`` = RGB 0..255."""

    name: str
    kind: Literal["block", "plate"]
    color: tuple[int, int, int]
    half: tuple[float, float, float]


OBJECTS: dict[str, ObjectSpec] = {
    spec.name: spec
    for spec in (
        ObjectSpec("red_block", "block", (215, 35, 35), (BLOCK_SIZE / 2,) * 3),
        ObjectSpec("yellow_block", "block", (240, 205, 30), (BLOCK_SIZE / 2,) * 3),
        ObjectSpec(
            "blue_plate", "plate", (40, 85, 220), (PLATE_SIZE / 2, PLATE_SIZE / 2, PLATE_HEIGHT / 2)
        ),
        ObjectSpec(
            "green_plate",
            "plate",
            (35, 165, 70),
            (PLATE_SIZE / 2, PLATE_SIZE / 2, PLATE_HEIGHT / 2),
        ),
    )
}
BLOCKS = [n for n, s in OBJECTS.items() if s.kind == "block"]


@dataclass(frozen=True)
class TaskSpec:
    """One task: move ``block`` onto ``target`` (place / stack) or lift it (target None)."""

    name: str
    kind: Literal["place", "stack", "lift"]
    block: str
    target: str | None
    instruction: str


def _make_tasks() -> dict[str, TaskSpec]:
    tasks = []
    for b in ("red", "yellow"):
        for p in ("blue", "green"):
            tasks.append(
                TaskSpec(
                    f"place_{b}_on_{p}",
                    "place",
                    f"{b}_block",
                    f"{p}_plate",
                    f"put the {b} block on the {p} plate",
                )
            )
    for b, o in (("red", "yellow"), ("yellow", "red")):
        tasks.append(
            TaskSpec(
                f"stack_{b}_on_{o}",
                "stack",
                f"{b}_block",
                f"{o}_block",
                f"put the {b} block on the {o} block",
            )
        )
    for b in ("red", "yellow"):
        tasks.append(TaskSpec(f"lift_{b}", "lift", f"{b}_block", None, f"lift the {b} block"))
    return {t.name: t for t in tasks}


TASKS: dict[str, TaskSpec] = _make_tasks()


def sample_layout(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Object centers at reset, footprints ``SPAWN_MARGIN`` apart, every object on the table.

    Draws batches of candidate layouts and keeps the first whose objects do not crowd each other.

    Args:
        rng: the episode's generator (the only source of randomness).
    Returns:
        name -> (3,) center position.
    """
    names = list(OBJECTS)
    half = np.array([OBJECTS[n].half for n in names])  # (N, 3)
    reach = half[:, None, :2] + half[None, :, :2] + SPAWN_MARGIN  # (N, N, 2) min center gaps
    off_diag = ~np.eye(len(names), dtype=bool)
    for _ in range(100):
        xy = rng.uniform(SPAWN_LOW, SPAWN_HIGH, size=(64, len(names), 2))  # (B, N, 2)
        gap = np.abs(xy[:, :, None] - xy[:, None, :])  # (B, N, N, 2)
        clash = np.all(gap < reach, axis=-1) & off_diag  # footprints (plus margin) overlap
        good = np.flatnonzero(~clash.any(axis=(1, 2)))
        if len(good):
            pick = xy[good[0]]
            return {n: np.array([pick[i, 0], pick[i, 1], half[i, 2]]) for i, n in enumerate(names)}
    raise RuntimeError("could not place the tabletop objects apart; the spawn area is too small")


def sample_home_layout(rng: np.random.Generator, jitter: float) -> dict[str, np.ndarray]:
    """Object centers at reset for the "homes" layout: ``HOMES`` + uniform(+-jitter) in x and y.

    Args:
        rng: the episode's generator (the only source of randomness).
        jitter: half-width of the uniform offset, meters, in [0, ``MAX_HOME_JITTER``].
    Returns:
        name -> (3,) center position.
    """
    if not 0.0 <= jitter <= MAX_HOME_JITTER:
        raise ValueError(f"home layout jitter must be in [0, {MAX_HOME_JITTER}], got {jitter}")
    offsets = rng.uniform(-jitter, jitter, size=(len(OBJECTS), 2))  # (N, 2)
    return {
        n: np.array([HOMES[n][0] + dx, HOMES[n][1] + dy, OBJECTS[n].half[2]])
        for n, (dx, dy) in zip(OBJECTS, offsets, strict=True)
    }


def footprint_overlaps(center, half, other, other_half) -> bool:
    """Whether two axis-aligned footprints (centers and half extents, x and y used) overlap;
    touching edges do not count."""
    return (
        abs(center[0] - other[0]) < half[0] + other_half[0] - 1e-3
        and abs(center[1] - other[1]) < half[1] + other_half[1] - 1e-3
    )


def support_top(name: str, center: np.ndarray, positions: dict[str, np.ndarray]) -> float:
    """Height of the highest surface under object ``name`` placed at ``center`` (table = 0).

    Args:
        name: the object that would rest there (excluded from the supports).
        center: (3,) its center (only x, y matter).
        positions: name -> (3,) centers of all objects.
    """
    half = OBJECTS[name].half
    top = 0.0
    for other, p in positions.items():
        if other == name:
            continue
        oh = OBJECTS[other].half
        if footprint_overlaps(center, half, p, oh):
            top = max(top, float(p[2] + oh[2]))
    return top


def block_in_grasp(ee_pos: np.ndarray, center: np.ndarray) -> bool:
    """Whether fingertips at ``ee_pos`` are low enough around a block centered at ``center``."""
    h = BLOCK_SIZE / 2
    dz = ee_pos[2] - center[2]
    return bool(
        abs(ee_pos[0] - center[0]) <= GRASP_XY_TOL
        and abs(ee_pos[1] - center[1]) <= GRASP_XY_TOL
        and -GRASP_Z_BELOW <= dz <= h - GRASP_Z_ABOVE
    )


def is_success(task: TaskSpec, positions: dict[str, np.ndarray], holding: str | None) -> bool:
    """The task's per-step success predicate.

    place / stack: the block is released, its center over the target's top face and its bottom
    resting on that top face. lift: the block is held with its bottom above ``LIFT_HEIGHT``.
    """
    b = positions[task.block]
    bh = OBJECTS[task.block].half
    if task.kind == "lift":
        return holding == task.block and b[2] - bh[2] >= LIFT_HEIGHT - 1e-9
    if holding == task.block or task.target is None:
        return False
    t = positions[task.target]
    th = OBJECTS[task.target].half
    over = abs(b[0] - t[0]) <= th[0] and abs(b[1] - t[1]) <= th[1]
    resting = abs((b[2] - bh[2]) - (t[2] + th[2])) < 1e-6
    return bool(over and resting)


def task_progress(
    task: TaskSpec,
    positions: dict[str, np.ndarray],
    holding: str | None,
    ee_pos: np.ndarray,
    start: dict[str, np.ndarray],
) -> float:
    """How far toward the task a state is, in [0, 1]: the mean of three stages.

    reach: 1 - |fingertips - block center| / ``REACH_SCALE`` (1 while holding the block);
    grasp: 1 while the task's own block is held; move: for place / stack the share of the
    block's start distance (x, y) to its target that is covered, for lift its bottom's height
    over ``LIFT_HEIGHT``. A success has progress 1, but progress 1 is not yet a success (the
    block must still be released onto its target). The wrong block earns nothing past reach.

    Args:
        task: the episode's task.
        positions: name -> (3,) object centers now.
        holding: the held block, if any.
        ee_pos: (3,) fingertip position.
        start: name -> (3,) object centers at the episode's start.
    """
    b = positions[task.block]
    held = holding == task.block
    reach = 1.0 if held else max(0.0, 1.0 - float(np.linalg.norm(ee_pos - b)) / REACH_SCALE)
    if task.kind == "lift":
        move = (b[2] - OBJECTS[task.block].half[2]) / LIFT_HEIGHT
    else:
        assert task.target is not None
        t0 = np.linalg.norm(start[task.block][:2] - start[task.target][:2])
        move = 1.0 - np.linalg.norm(b[:2] - positions[task.target][:2]) / max(t0, 1e-6)
    return (reach + float(held) + float(np.clip(move, 0.0, 1.0))) / 3.0


__all__ = [
    "OBJECTS",
    "BLOCKS",
    "TASKS",
    "ObjectSpec",
    "TaskSpec",
    "sample_layout",
    "sample_home_layout",
    "support_top",
    "block_in_grasp",
    "is_success",
    "task_progress",
    "footprint_overlaps",
]
