"""Imagined replays written as episode stores (``rehearse imagine-replays``): what they hold,
that the reflector trains on them and the world model refuses them, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.cli import main


def test_imagined_stores_hold_the_replays_with_the_real_labels(tiny_world, tmp_path) -> None:
    from reflector_service.episodes import load_labeled_episodes
    from simulator_service.checkpoint import load_world_model
    from simulator_service.evaluate import imagine_episodes
    from trajectories.store import EpisodeStore

    out = tmp_path / "imagined"
    data = [str(tiny_world / "demos"), str(tiny_world / "calibrate")]
    args = ["imagine-replays", "--simulator", str(tiny_world / "sim"), "--data", *data]
    assert main([*args, "--out", str(out), "--max-steps", "12", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["calibrate", "demos"]
    real, imagined = EpisodeStore(tiny_world / "calibrate"), EpisodeStore(out / "calibrate")
    assert imagined.episode_ids == real.episode_ids
    assert imagined.meta["imagined_by"] == str(tiny_world / "sim")
    assert imagined.meta["imagined_steps"] == 12
    assert imagined.meta["camera"] == real.meta["camera"]
    # the same replays as imagine_episodes with the second store's seed (config seed + 1000)
    replays = imagine_episodes(
        load_world_model(tiny_world / "sim"), data[1:], max_steps=12, seed=1000, progress=False
    )
    for r in replays:
        ep, src = imagined.load_episode(r.episode.episode_id), r.episode
        n = min(12, src.num_steps)
        assert ep.source == "imagined" and ep.num_steps == n
        np.testing.assert_array_equal(ep.images, r.imagined)
        np.testing.assert_array_equal(ep.images[0], src.images[0])  # the real first frame
        np.testing.assert_array_equal(ep.success, src.success[: n + 1])
        np.testing.assert_array_equal(ep.actions[:n], src.actions[:n])
        assert not ep.actions[n].any()  # the terminal row
    # the reflector reads them as labeled episodes, failures included
    labeled = load_labeled_episodes([out / "calibrate"], progress=False)
    assert [e.succeeded for e in labeled] == [bool(r.episode.success[:13].any()) for r in replays]
    assert {e.source for e in labeled} == {"imagined"}


def test_the_world_model_refuses_imagined_stores_and_replays_refuse_them_too(
    tiny_world, tmp_path, capsys
) -> None:
    from simulator_service.config import SimulatorConfig
    from simulator_service.data import load_episodes

    out = tmp_path / "imagined"
    sim = str(tiny_world / "sim")
    demos = str(tiny_world / "demos")
    base = ["imagine-replays", "--simulator", sim, "--max-steps", "4", "--no-progress"]
    assert main([*base, "--data", demos, "--out", str(out)]) == 0
    with pytest.raises(ValueError, match="holds imagined episode"):
        load_episodes([out / "demos"], SimulatorConfig.preset("tiny"), progress=False)
    for data, out_name, message in (
        ([str(out / "demos")], "again", "already holds imagined episodes"),
        ([demos, str(out / "demos")], "twice", "named after their input stores"),
        ([demos], "imagined", "exists and is not empty"),  # refused before anything is replaced
    ):
        assert main([*base, "--data", *data, "--out", str(tmp_path / out_name)]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagined"]
    assert main([*base, "--data", demos, "--out", str(out), "--overwrite"]) == 0
