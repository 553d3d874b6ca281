"""LIBERO demonstration HDF5 files -> episodes of the episode store.

LIBERO's layout (one file per task, ``<task name>_demo.hdf5``): ``data/demo_<i>/`` holds
``actions`` (T, 7), ``rewards`` (T,), ``dones`` (T,) and ``obs/`` with ``agentview_rgb`` and
``eye_in_hand_rgb`` (T, H, W, 3) uint8 in robosuite's OpenGL row order, ``ee_states`` (T, 6)
(position + axis-angle; else ``ee_pos`` + ``ee_ori``) and ``gripper_states`` (T, 2). ``data``'s
attribute ``bddl_file_name`` names the suite folder and task.

Conversion follows OpenVLA-OFT: images rotated 180 degrees (``img[::-1, ::-1]``), optional
no-op filtering (drop step t when ``|a_t[:6]|`` is ~0 and its gripper equals the previous kept
action's), optional resize. A demo of T recorded observations becomes T - 1 actions plus the
last observation as the terminal row (its action, the demo's last, is not stored). Per-frame
success labels come from ``rewards``/``dones`` (LIBERO marks the final step of every
successful demo).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trajectories.episode import Episode

NOOP_THRESHOLD = 1e-4  # OFT's is_noop: norm of the 6 arm dims below this
REQUIRED = ("actions", "obs/agentview_rgb", "obs/gripper_states")


def is_noop(action: np.ndarray, prev_action: np.ndarray | None) -> bool:
    """OFT's rule: arm dims ~0 and the gripper unchanged from the previous kept action.

    Args:
        action: (7,) this step's action; prev_action: (7,) the last kept action or None.
    """
    still = float(np.linalg.norm(action[:6])) < NOOP_THRESHOLD
    if prev_action is None:
        return still
    return still and action[6] == prev_action[6]


def _demo_keys(data: Any) -> list[str]:
    keys = [k for k in data.keys() if re.fullmatch(r"demo_\d+", k)]
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def _task_of(path: Path, data: Any) -> tuple[str, str]:
    """(suite, task name) from the ``bddl_file_name`` attribute, else the file name."""
    bddl = data.attrs.get("bddl_file_name")
    if isinstance(bddl, bytes):
        bddl = bddl.decode()
    if bddl:
        p = Path(str(bddl))
        return p.parent.name, p.stem
    name = path.stem[: -len("_demo")] if path.stem.endswith("_demo") else path.stem
    return path.parent.name, name


def task_id_for(suite: str, name: str) -> str:
    """The env's canonical id ``"suite/index"`` when LIBERO is installed, else ``"suite/name"``
    (which ``envs.libero.LiberoEnv`` also accepts)."""
    try:
        from envs import libero_setup

        names = libero_setup.task_map().get(suite, [])
    except ValueError:  # LIBERO not installed
        names = []
    return f"{suite}/{names.index(name)}" if name in names else f"{suite}/{name}"


def _resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3), bilinear with antialiasing."""
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames]
    )


def _check_layout(path: Path, f: Any) -> list[str]:
    if "data" not in f:
        raise ValueError(f"{path} is not a LIBERO demo file: missing key 'data'")
    demos = _demo_keys(f["data"])
    if not demos:
        raise ValueError(f"{path} is not a LIBERO demo file: no 'data/demo_<i>' groups")
    for key in demos:
        g = f["data"][key]
        for need in REQUIRED:
            if need not in g:
                raise ValueError(
                    f"{path} is not a LIBERO demo file: missing key 'data/{key}/{need}'"
                )
        if "ee_states" not in g["obs"] and not ("ee_pos" in g["obs"] and "ee_ori" in g["obs"]):
            raise ValueError(
                f"{path} is not a LIBERO demo file: missing key "
                f"'data/{key}/obs/ee_states' (or ee_pos + ee_ori)"
            )
        if "rewards" not in g and "dones" not in g:
            raise ValueError(
                f"{path} is not a LIBERO demo file: missing key 'data/{key}/rewards' (or dones)"
            )
    return demos


def read_demo_file(
    path: str | Path,
    *,
    demos_per_task: int | None = None,
    size: int | None = None,
    keep_noops: bool = False,
    wrist: bool = True,
) -> Iterator[Episode]:
    """Yield the demos of one LIBERO HDF5 file as store episodes (source "expert").

    Args:
        path: a LIBERO ``*_demo.hdf5`` file.
        demos_per_task: keep the first N demos (by index); None keeps all.
        size: resize images to size x size; None keeps the recorded size.
        keep_noops: keep no-op steps (default: drop them as OFT does).
        wrist: also import ``eye_in_hand_rgb`` when present.
    Raises:
        FileNotFoundError / ValueError: naming the file (and the missing key).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LIBERO demo file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        demos = _check_layout(path, f)
        suite, name = _task_of(path, f["data"])
        task_id = task_id_for(suite, name)
        from envs.libero_setup import task_language

        instruction = task_language(name)
        for key in demos[:demos_per_task]:
            yield _convert(
                f["data"][key],
                episode_id=f"libero-{suite}-{name}-{key}",
                task_id=task_id,
                instruction=instruction,
                size=size,
                keep_noops=keep_noops,
                wrist=wrist,
                where=f"{path}:data/{key}",
            )


def _convert(
    g: Any,
    *,
    episode_id: str,
    task_id: str,
    instruction: str,
    size: int | None,
    keep_noops: bool,
    wrist: bool,
    where: str,
) -> Episode:
    actions = np.asarray(g["actions"], dtype=np.float32)  # (T, 7)
    obs = g["obs"]
    if "ee_states" in obs:
        ee = np.asarray(obs["ee_states"], dtype=np.float32)  # (T, 6)
    else:
        ee = np.concatenate([obs["ee_pos"], obs["ee_ori"]], axis=-1).astype(np.float32)
    proprio = np.concatenate([ee, np.asarray(obs["gripper_states"], np.float32)], -1)  # (T, 8)
    n = len(actions)
    label = np.zeros(n, dtype=bool)
    for k in ("rewards", "dones"):
        if k in g:
            label |= np.asarray(g[k]).reshape(-1)[:n] > 0
    images = obs["agentview_rgb"]
    if actions.ndim != 2 or actions.shape[1] != 7 or proprio.shape != (n, 8) or len(images) != n:
        raise ValueError(
            f"{where}: expected actions (T, 7), proprio (T, 8) and T images, got "
            f"{actions.shape}, {proprio.shape} and {len(images)} images"
        )
    if n < 2:
        raise ValueError(f"{where}: a demo needs at least 2 steps, got {n}")
    keep = np.ones(n, dtype=bool)
    if not keep_noops:
        prev = None
        for t in range(n - 1):  # the last frame is the terminal row: always kept
            if is_noop(actions[t], prev):
                keep[t] = False
            else:
                prev = actions[t]
    idx = np.nonzero(keep)[0]
    frames = np.asarray(images)[idx][:, ::-1, ::-1]  # (N, H, W, 3) rotated 180 degrees
    wrist_frames = None
    if wrist and "eye_in_hand_rgb" in obs:
        wrist_all = np.asarray(obs["eye_in_hand_rgb"])  # (T, H, W, 3)
        wrist_frames = _resize(np.ascontiguousarray(wrist_all[idx][:, ::-1, ::-1]), size)
    acts = actions[idx].copy()
    acts[-1] = 0.0  # terminal row
    return Episode(
        episode_id=episode_id,
        task_id=task_id,
        instruction=instruction,
        images=_resize(np.ascontiguousarray(frames), size),
        proprio=proprio[idx],
        actions=acts,
        success=label[idx],
        source="expert",
        wrist_images=wrist_frames,
    )


def store_meta(
    *,
    image_size: int,
    suite: str | None,
    camera: dict[str, Any] | None,
    limits: dict[str, Any] | None,
) -> dict[str, Any]:
    """Store metadata for imported demos (camera and limits when a LIBERO scene was built)."""
    meta: dict[str, Any] = {
        "env": "libero",
        "suite": suite,
        "env_config": {"name": "libero", "suite": suite, "image_size": image_size},
        "image_size": image_size,
        "action_dim": 7,
        "proprio_dim": 8,
        "source": "libero_hdf5",
    }
    if camera is not None:
        meta["camera"] = camera
    if limits is not None:
        meta["controller_limits"] = limits
    return meta


def _scene_meta(suite: str, size: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Camera and controller limits of a LIBERO scene of ``suite`` at ``size``, or (None, None)
    when LIBERO is not installed."""
    import importlib.util

    if importlib.util.find_spec("libero") is None:
        return None, None
    from envs.config import EnvConfig
    from envs.libero import LiberoEnv

    env = LiberoEnv(EnvConfig(name="libero", suite=suite, image_size=size))
    try:
        return env.camera.to_dict(), env.limits.to_dict()
    finally:
        env.close()


def import_demos(
    files: Iterable[str | Path],
    out: str | Path,
    *,
    demos_per_task: int | None = None,
    size: int | None = None,
    keep_noops: bool = False,
    wrist: bool = True,
    camera: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Import LIBERO demo files into a new episode store at ``out`` (atomically).

    Args:
        files: LIBERO HDF5 files, one per task.
        camera: record the suite's camera and controller limits (builds one LIBERO scene when
            LIBERO is installed; skipped otherwise).
        other args: see ``read_demo_file``.
    Returns:
        {"out", "episodes", "steps", "tasks"}.
    """
    from trajectories.store import StoreBuilder

    builder = None
    n_eps = steps = 0
    tasks: set[str] = set()
    shape = None
    try:
        for path in files:
            eps = list(
                read_demo_file(
                    path,
                    demos_per_task=demos_per_task,
                    size=size,
                    keep_noops=keep_noops,
                    wrist=wrist,
                )
            )
            if shape is None:
                shape = eps[0].images.shape[1:3]
                suite = eps[0].task_id.split("/")[0]
                cam, lim = _scene_meta(suite, shape[0]) if camera else (None, None)
                meta = store_meta(image_size=int(shape[0]), suite=suite, camera=cam, limits=lim)
                builder = StoreBuilder(out, meta, overwrite=overwrite)
            for ep in eps:
                if ep.images.shape[1:3] != shape:
                    raise ValueError(
                        f"{path}: images are {ep.images.shape[1:3]}, the first file's "
                        f"are {shape}; pass --size to resize them all"
                    )
            builder.add(eps)
            n_eps += len(eps)
            steps += sum(ep.num_steps for ep in eps)
            tasks.update(ep.task_id for ep in eps)
        if builder is None:
            raise ValueError("no LIBERO demo files given")
    except BaseException:
        if builder is not None:
            builder.abort()
        raise
    builder.commit()
    return {"out": str(out), "episodes": n_eps, "steps": steps, "tasks": len(tasks)}


__all__ = ["import_demos", "read_demo_file", "is_noop", "store_meta", "task_id_for"]
