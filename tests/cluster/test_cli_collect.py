"""`rehearse collect` end to end through the CLI, and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cluster.cli import main
from trajectories.store import EpisodeStore


def test_collect_expert_and_exploration(tmp_path, capsys):
    out = tmp_path / "demos"
    rc = main(
        [
            "collect",
            "--env",
            "tabletop",
            "--source",
            "expert",
            "--episodes-per-task",
            "2",
            "--tasks",
            "place_red_on_blue,lift_yellow",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "collected 4 expert episodes" in printed and "success rate 1.000" in printed
    store = EpisodeStore(out)
    assert len(store) == 4 and all(e["success"] for e in store.episode_info)
    assert store.meta["camera"]["height"] == 32 and "controller_limits" in store.meta
    assert store.meta["env"] == "tabletop" and store.meta["env_config"]["image_size"] == 32
    ep = store.load_episode(store.episode_ids[0])
    assert ep.images.shape[1:] == (32, 32, 3) and ep.success[-1] and not ep.success[0]

    rc = main(
        [
            "collect",
            "--source",
            "exploration",
            "--episodes-per-task",
            "3",
            "--tasks",
            "lift_red",
            "--noise-scale",
            "0.5",
            "--out",
            str(tmp_path / "explore"),
            "--no-progress",
            "--set",
            "env.image_size=64",
        ]
    )
    assert rc == 0
    store = EpisodeStore(tmp_path / "explore")
    assert {e["source"] for e in store.episode_info} == {"exploration"}
    assert store.meta["image_size"] == 64

    rc = main(
        [
            "collect",
            "--source",
            "near_miss",
            "--episodes-per-task",
            "1",
            "--tasks",
            "place_red_on_blue",
            "--out",
            str(tmp_path / "near"),
            "--no-progress",
        ]
    )
    assert rc == 0
    store = EpisodeStore(tmp_path / "near")
    assert [(e["source"], e["success"]) for e in store.episode_info] == [("near_miss", False)]


def test_existing_output_refused(tmp_path, capsys):
    out = tmp_path / "d"
    args = [
        "collect",
        "--source",
        "expert",
        "--episodes-per-task",
        "1",
        "--tasks",
        "lift_red",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_clear_errors(tmp_path, capsys):
    assert (
        main(
            [
                "collect",
                "--source",
                "expert",
                "--tasks",
                "fly_to_moon",
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown task(s) ['fly_to_moon']" in err and "place_red_on_blue" in err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("env:\n  imgae_size: 64\n")
    assert (
        main(["collect", "--source", "expert", "--config", str(cfg), "--out", str(tmp_path / "y")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'env.imgae_size'" in err and str(cfg) in err
    zero = [
        "collect",
        "--source",
        "expert",
        "--episodes-per-task",
        "0",
        "--out",
        str(tmp_path / "z"),
    ]
    assert main(zero) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--episodes-per-task must be >= 1, got 0" in err
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))


@pytest.mark.ray
def test_collect_over_ray_workers(tmp_path, ray_cluster):
    assert (
        main(
            [
                "collect",
                "--source",
                "expert",
                "--episodes-per-task",
                "2",
                "--tasks",
                "lift_red,stack_red_on_yellow",
                "--workers",
                "2",
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 0
    )
    store = EpisodeStore(tmp_path / "r")
    assert sorted(store.episode_ids) == sorted(
        f"expert-{t}-{s}"
        for t, base in (("lift_red", 0), ("stack_red_on_yellow", 100000))
        for s in (base, base + 1)
    )


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "collect" in out.stdout


def test_policy_driven_exploration(tmp_path):
    """--policy: exploration episodes sampled from a policy checkpoint's Laplace(mu, b)."""
    from policy.checkpoint import build_policy, save_policy
    from policy.config import PolicyConfig
    from policy.normalization import statistics_from_store

    assert (
        main(
            [
                "collect",
                "--source",
                "expert",
                "--episodes-per-task",
                "2",
                "--tasks",
                "lift_red",
                "--out",
                str(tmp_path / "d"),
                "--no-progress",
            ]
        )
        == 0
    )
    store = EpisodeStore(tmp_path / "d")
    stats = statistics_from_store(store, dataset_name="tabletop")["tabletop"]
    save_policy(
        build_policy(PolicyConfig(), instructions=["lift the red block"], stats=stats),
        tmp_path / "pol",
    )
    assert (
        main(
            [
                "collect",
                "--source",
                "exploration",
                "--policy",
                str(tmp_path / "pol"),
                "--episodes-per-task",
                "2",
                "--tasks",
                "lift_red",
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
                "--set",
                "env.max_steps=12",
            ]
        )
        == 0
    )
    eps = list(EpisodeStore(tmp_path / "x").episodes())
    assert len(eps) == 2 and all(
        e.num_steps == 12 for e in eps
    )  # an untrained policy never succeeds
    assert not np.allclose(eps[0].actions[:-1], eps[1].actions[:-1])  # sampled, seeded per episode
    assert (
        main(
            [
                "collect",
                "--source",
                "expert",
                "--policy",
                str(tmp_path / "pol"),
                "--out",
                str(tmp_path / "y"),
                "--no-progress",
            ]
        )
        == 2
    )
