"""Evaluation helpers: seeds (the same starts for every policy; LIBERO init states
0..49), videos."""

from __future__ import annotations

from cluster.evaluate import eval_jobs


def test_eval_jobs_are_reproducible_and_distinct_per_task():
    jobs = eval_jobs(["a", "b"], 3, seed=0)
    assert [j.task for j in jobs] == ["a"] * 3 + ["b"] * 3
    assert jobs == eval_jobs(["a", "b"], 3, seed=0)
    assert len({j.seed for j in jobs}) == 6
    assert [j.seed for j in eval_jobs(["a", "b"], 3, seed=1)] != [j.seed for j in jobs]


def test_libero_episode_i_starts_from_init_state_i():
    # LiberoEnv.reset(task, seed=s) takes stored init state s % 50 (each task ships 50); with
    # seed 0, episode i of every task starts from init state i, as in OpenVLA-OFT's evaluation
    for k, task in enumerate(["libero_spatial/0", "libero_spatial/7"]):
        jobs = [
            j
            for j in eval_jobs(["libero_spatial/0", "libero_spatial/7"], 50, seed=0)
            if j.task == task
        ]
        assert [j.seed % 50 for j in jobs] == list(range(50)), k


def test_videos_of_libero_tasks_are_flat_files(tmp_path):
    import numpy as np

    from cluster.evaluate import _write_videos

    frames = np.zeros((3, 16, 16, 3), np.uint8)
    records = [
        {"task": "libero_spatial/0", "seed": 7, "success": False, "frames": frames},
        {"task": "lift_red", "seed": 8, "success": True},
    ]
    _write_videos(records, tmp_path / "videos", prefix="ground_truth")
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "ground_truth_libero_spatial-0_7_failure.gif"
    ]
    assert "frames" not in records[0]
