"""`rehearse import-libero` on small HDF5 files written in LIBERO's layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cluster.cli import main
from trajectories.libero_import import is_noop, read_demo_file
from trajectories.store import EpisodeStore

TASK = "pick_up_the_black_bowl_on_the_ramekin_and_place_it_on_the_plate"


def _frames(t: int, size: int) -> np.ndarray:
    """(t, size, size, 3) frames; frame i has value i everywhere but a white top-left pixel."""
    f = np.zeros((t, size, size, 3), dtype=np.uint8)
    f[:] = np.arange(t, dtype=np.uint8)[:, None, None, None] * 10
    f[:, 0, 0] = 255
    return f


def write_libero_file(path, *, demos=3, t=12, size=16, noops=(3, 4)) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["bddl_file_name"] = f"libero/libero/bddl_files/libero_spatial/{TASK}.bddl"
        for d in range(demos):
            g = data.create_group(f"demo_{d}")
            actions = rng.uniform(-1, 1, size=(t, 7)).astype(np.float64)
            actions[:, 6] = -1.0
            for i in noops:  # arm still and gripper unchanged: OFT's no-op
                actions[i, :6] = 0.0
            g["actions"] = actions
            g["rewards"] = np.eye(t)[-1]
            g["dones"] = np.eye(t)[-1].astype(np.uint8)
            g["states"] = rng.normal(size=(t, 9))
            obs = g.create_group("obs")
            obs["agentview_rgb"] = _frames(t, size)
            obs["eye_in_hand_rgb"] = _frames(t, size)
            obs["ee_states"] = rng.normal(size=(t, 6))
            obs["gripper_states"] = np.tile([0.04, -0.04], (t, 1))
            obs["joint_states"] = rng.normal(size=(t, 7))


def test_read_demo_file_flip_noops_labels(tmp_path):
    path = tmp_path / f"{TASK}_demo.hdf5"
    write_libero_file(path)
    eps = list(read_demo_file(path, demos_per_task=2))
    assert len(eps) == 2
    ep = eps[0]
    assert ep.task_id in ("libero_spatial/5", f"libero_spatial/{TASK}")
    assert ep.instruction == TASK.replace("_", " ")
    assert ep.num_steps == 12 - 2 - 1  # two no-ops dropped, last action not stored
    kept = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    np.testing.assert_array_equal(ep.images[:, 0, 0, 0], np.array(kept) * 10)  # frame order
    assert (ep.images[:, -1, -1] == 255).all()  # rotated 180 degrees
    assert ep.success.tolist() == [False] * 9 + [True]
    assert not ep.actions[-1].any() and ep.actions[:-1].any(axis=1).all()
    assert ep.wrist_images.shape == ep.images.shape and ep.proprio.shape == (10, 8)

    full = next(read_demo_file(path, keep_noops=True, size=32, wrist=False))
    assert full.num_steps == 11 and full.images.shape[1:] == (32, 32, 3)
    assert full.wrist_images is None


def test_is_noop_rule():
    a = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert is_noop(a, None) and is_noop(a, np.array([1, 0, 0, 0, 0, 0, -1.0]))
    assert not is_noop(a, np.array([0, 0, 0, 0, 0, 0, 1.0]))  # gripper changed
    assert not is_noop(np.array([0.01, 0, 0, 0, 0, 0, -1.0]), None)


def test_cli_import_and_bad_files(tmp_path, capsys):
    a = tmp_path / f"{TASK}_demo.hdf5"
    write_libero_file(a, demos=4)
    out = tmp_path / "store"
    rc = main(
        [
            "import-libero",
            "--hdf5",
            str(a),
            "--out",
            str(out),
            "--demos-per-task",
            "3",
            "--size",
            "24",
            "--no-camera",
            "--no-progress",
        ]
    )
    assert rc == 0 and "imported 3 demos" in capsys.readouterr().out
    store = EpisodeStore(out)
    assert len(store) == 3 and all(
        e["success"] and e["source"] == "expert" for e in store.episode_info
    )
    assert (
        store.meta["image_size"] == 24
        and store.meta["env"] == "libero"
        and store.meta["suite"] == "libero_spatial"
    )
    assert store.load_episode(store.episode_ids[0]).images.shape[1:] == (24, 24, 3)

    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_group("data/demo_0/obs")
        f["data/demo_0/actions"] = np.zeros((4, 7))
    with pytest.raises(ValueError, match=r"bad\.hdf5.*data/demo_0/obs/agentview_rgb"):
        list(read_demo_file(bad))
    rc = main(
        [
            "import-libero",
            "--hdf5",
            str(a),
            str(bad),
            "--out",
            str(tmp_path / "o2"),
            "--no-camera",
            "--no-progress",
        ]
    )
    assert rc == 2 and "agentview_rgb" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        list(read_demo_file(tmp_path / "nope.hdf5"))
