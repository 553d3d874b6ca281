"""The reflector's threshold chosen on imagined frames (``cluster.imagined_eta``), on tiny
trained-format checkpoints: held-out episodes replayed through the world model, labeled with
their real success."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cluster.config import ExperimentConfig, PostTrainConfig
from cluster.imagined_eta import IMAGINED_ETA_GRID, NoFailures, calibrate_imagined_eta
from core.configlib import ConfigError
from envs.config import EnvConfig


def _calibrate(root, data, **kw):
    return calibrate_imagined_eta(
        root / "sim",
        root / "refl",
        [str(d) for d in data],
        max_steps=kw.pop("max_steps", 80),
        max_false_stops=kw.pop("max_false_stops", 0.0),
        progress=False,
        log=lambda m: None,
        **kw,
    )


def test_eta_is_the_smallest_that_stops_no_episode_before_its_real_success(tiny_world):
    from reflector_service.checkpoint import load_reflector
    from simulator_service.checkpoint import load_world_model
    from simulator_service.evaluate import imagine_episodes

    rec = _calibrate(tiny_world, [tiny_world / "calibrate"])
    assert (rec["episodes"], rec["failed_episodes"], rec["successful_episodes"]) == (3, 1, 2)
    assert rec["max_steps"] == 80 and rec["false_stop_rate"] == 0.0
    assert [s["eta"] for s in rec["sweep"]] == list(IMAGINED_ETA_GRID)
    # by hand: the same replays scored as rollouts see R (the checkpoint's hold); no frame
    # before an episode's first real success may cross eta
    replays = imagine_episodes(
        load_world_model(tiny_world / "sim"),
        [str(tiny_world / "calibrate")],
        max_steps=80,
        progress=False,
    )
    lengths = [min(80, r.episode.num_steps) + 1 for r in replays]
    assert [len(r.imagined) for r in replays] == lengths  # first frame + the imagined ones
    refl = load_reflector(tiny_world / "refl")
    peak = 0.0
    for r in replays:
        ok = np.asarray(r.episode.success[: len(r.imagined)], dtype=bool)
        before = int(np.argmax(ok)) if ok.any() else len(ok)
        scores = refl.score(r.imagined[None], [r.episode.instruction])[0].numpy()
        peak = max(peak, float(scores[:before].max()) if before else 0.0)
    above = [e for e in IMAGINED_ETA_GRID if e >= peak]
    assert rec["eta"] == (above[0] if above else IMAGINED_ETA_GRID[-1])
    assert rec["real_eta"] == refl.cfg.eta and rec["hold"] == refl.cfg.hold


def test_episodes_without_a_failure_or_missing_say_so(tiny_world, tmp_path):
    with pytest.raises(NoFailures, match="none of the 2 episodes"):
        _calibrate(tiny_world, [tiny_world / "demos"])
    with pytest.raises(FileNotFoundError, match="eta calibration data"):
        _calibrate(tiny_world, [tmp_path / "nowhere"])


def test_config_refuses_a_calibration_that_cannot_run(tiny_world, tmp_path):
    from cluster.world_setup import imagined_setup

    with pytest.raises(ValueError, match="post_train.world: imagined"):
        PostTrainConfig(world="real", eta_calibration_data=["x"])
    with pytest.raises(ValueError, match="eta_max_false_stops"):
        PostTrainConfig(eta_max_false_stops=1.0)
    cfg = ExperimentConfig(name="eta", env=EnvConfig(image_size=16), loggers=[])
    pt = PostTrainConfig(
        policy=str(tiny_world / "sft"),
        simulator=str(tiny_world / "sim"),
        reflector="fake",
        data=[str(tiny_world / "demos")],
        eta_calibration_data=[str(tiny_world / "calibrate")],
    )
    with pytest.raises(ConfigError, match='post_train.reflector is "fake"'):
        imagined_setup(dataclasses.replace(cfg, post_train=pt))
    pt = dataclasses.replace(
        pt, reflector=str(tiny_world / "refl"), eta_calibration_data=[str(tmp_path / "no")]
    )
    with pytest.raises(ConfigError, match="eta_calibration_data: .* is not an episode store"):
        imagined_setup(dataclasses.replace(cfg, post_train=pt))


def test_the_world_acts_with_the_eta_set_after_setup(tiny_world):
    from cluster.world_setup import imagined_setup

    cfg = ExperimentConfig(name="eta", env=EnvConfig(image_size=16), loggers=[])
    pt = PostTrainConfig(
        policy=str(tiny_world / "sft"),
        simulator=str(tiny_world / "sim"),
        reflector=str(tiny_world / "refl"),
        data=[str(tiny_world / "demos")],
    )
    setup = imagined_setup(dataclasses.replace(cfg, post_train=pt, cluster=cfg.cluster))
    assert setup.make_world({"sim": [], "reflector": []}).eta == 0.5  # the checkpoint's
    setup.rollout = dataclasses.replace(setup.rollout, eta=0.15)
    assert np.isclose(setup.make_world({"sim": [], "reflector": []}).eta, 0.15)
