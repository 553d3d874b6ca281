"""WoVR co-evolution inside post-training, on tiny models and a real local Ray: one refinement
of the world model from the current policy's real episodes, then a resume that refines again
from the refined checkpoint."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from actors.config import CollectConfig
from cluster.collect import collect, episode_specs
from cluster.config import ExperimentConfig, PostTrainConfig, load_config
from core.configlib import ConfigError
from envs.config import EnvConfig
from policy.checkpoint import build_policy, save_policy
from policy.config import PolicyConfig
from policy.normalization import statistics_from_store
from simulator_service.checkpoint import read_state
from simulator_service.config import SimTrainConfig, SimulatorConfig
from simulator_service.train import train_world_model
from trajectories.store import EpisodeStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ENV = EnvConfig(image_size=16)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("coevolve")
    specs = episode_specs(["lift_red", "place_red_on_blue"], 2, seed=0, source="expert")
    collect(ENV, CollectConfig(), specs, root / "demos", progress=False)
    store = EpisodeStore(root / "demos")
    torch.manual_seed(0)
    policy = build_policy(
        PolicyConfig(image_size=16),
        instructions=sorted(set(store.meta["tasks"].values())),
        stats=statistics_from_store(store, dataset_name="tabletop")["tabletop"],
    )
    save_policy(policy, root / "sft")
    sim = SimulatorConfig.preset("tiny", train=SimTrainConfig(steps=2, batch_size=2, val_every=2))
    train_world_model(sim, [root / "demos"], root / "sim", progress=False, log=lambda m: None)
    return root


def make_cfg(root, iterations: int, world=None) -> ExperimentConfig:
    """With ``world`` (the tiny_world fixture's folder), its reflector, and eta calibrated on
    its ``calibrate`` store; else the fake reflector at eta 0.9."""
    cfg = ExperimentConfig(name="coevolve", env=ENV, loggers=[])
    return dataclasses.replace(
        cfg,
        rollout=dataclasses.replace(
            cfg.rollout,
            group_size=2,
            max_policy_steps=1,
            execute_steps=2,
            eta=None if world else 0.9,
        ),
        learner=dataclasses.replace(cfg.learner, minibatch_size=4, micro_batch_size=4),
        cluster=dataclasses.replace(
            cfg.cluster,
            rollout_workers=1,
            rollout_worker_cpus=0.25,
            learner_cpus=0.25,
            simulator=dataclasses.replace(cfg.cluster.simulator, num_cpus=0.25),
            reflector=dataclasses.replace(cfg.cluster.reflector, num_cpus=0.25),
        ),
        post_train=PostTrainConfig(
            policy=str(root / "sft"),
            simulator=str(root / "sim" / "checkpoint"),
            reflector=str(world / "refl") if world else "fake",
            eta_calibration_data=[str(world / "calibrate")] if world else [],
            data=[str(root / "demos")],
            iterations=iterations,
            checkpoint_every=1,
            run_dir=str(root / "runs" / "{name}"),
            eval_episodes_per_task=1,
            coevolve_every=1,
            coevolve_episodes_per_task=1,
            coevolve_simulator_s=0.5,
            coevolve_data=[str(root / "demos")],
        ),
    )


def test_coevolution_refines_the_world_model_and_resumes_from_it(ray_cluster, assets, tiny_world):
    from cluster.driver import post_train

    # a round after iteration 1 (not after 2); eta chosen for the imagined frames of each model
    post_train(make_cfg(assets, 2, tiny_world), progress=False)
    run = assets / "runs" / "coevolve"
    rounds = json.loads((run / "coevolve.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1] and rounds[0]["iteration"] == 1
    assert rounds[0]["episodes"] == 8  # one per task of the env
    for when in ("before", "after"):
        a = rounds[0][when]
        assert a["starts"] == 8 and 0.0 <= a["imagined_success"] <= 1.0
    refined = run / "coevolve" / "round_01" / "simulator" / "checkpoint"
    assert rounds[0]["simulator"] == str(refined)
    base_step = read_state(assets / "sim" / "checkpoint")["step"]
    assert read_state(refined)["step"] > base_step  # trained on from the current weights
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["coevolve/round"] == 1 and "coevolve/round" not in records[1]
    state = json.loads((run / "checkpoints" / "iter_000002" / "driver_state.json").read_text())
    assert state["simulator"] == str(refined) and state["coevolve_rounds"] == 1
    calibrations = json.loads((run / "eta_calibration.json").read_text())["calibrations"]
    assert [c["when"] for c in calibrations] == ["start", "co-evolution round 1"]
    assert [c["simulator"] for c in calibrations] == [
        str(assets / "sim" / "checkpoint"),
        str(refined),
    ]
    # the rollout horizon is 2 steps: within it no episode of the store succeeds
    assert all(c["failed_episodes"] == 3 and c["max_steps"] == 2 for c in calibrations)
    assert rounds[0]["eta"] == calibrations[1]["eta"]
    assert [m["rollout/eta"] for m in records] == [c["eta"] for c in calibrations]

    post_train(make_cfg(assets, 4, tiny_world), resume=True, progress=False)  # round 2 after 3
    rounds = json.loads((run / "coevolve.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["iteration"] == 3
    second = run / "coevolve" / "round_02" / "simulator" / "checkpoint"
    assert read_state(second)["step"] > read_state(refined)["step"]  # from round 1's model
    # the resume reused round 1's calibration (its world model), round 2 calibrated anew
    calibrations = json.loads((run / "eta_calibration.json").read_text())["calibrations"]
    assert [c["when"] for c in calibrations][1:] == ["co-evolution round 1", "co-evolution round 2"]
    assert len(calibrations) == 3 and calibrations[2]["simulator"] == str(second)


def test_a_schedule_longer_than_the_run_is_one_clear_error(assets):
    from cluster.driver import PostTrainRun

    cfg = make_cfg(assets, 2)
    with pytest.raises(ValueError, match="post_train.coevolve_every"):
        dataclasses.replace(cfg.post_train, coevolve_every=2)
    with pytest.raises(ValueError, match="post_train.world: imagined"):
        dataclasses.replace(cfg.post_train, world="real")
    with pytest.raises(ConfigError, match="post_train.coevolve_every"):  # from YAML: one line
        load_config(None, ["post_train.iterations=3", "post_train.coevolve_every=3"])
    fake = dataclasses.replace(cfg.post_train, simulator="fake", run_dir=str(assets / "other"))
    with pytest.raises(ConfigError, match="refines a trained world model"):
        PostTrainRun(dataclasses.replace(cfg, post_train=fake))


def test_a_world_model_that_cannot_serve_is_refused_before_anything_starts(assets, tmp_path):
    import shutil

    from cluster.driver import PostTrainRun

    cfg = make_cfg(assets, 2)
    run_dir = str(tmp_path / "never")
    other = tmp_path / "demos32"  # frames of another size than the world model's 16 px
    collect(
        EnvConfig(image_size=32),
        CollectConfig(),
        episode_specs(["lift_red"], 1, seed=9, source="expert"),
        other,
        progress=False,
    )
    pt = dataclasses.replace(cfg.post_train, data=[str(other)], run_dir=run_dir)
    with pytest.raises(ConfigError, match="works at 16 px.*are 32 px"):
        PostTrainRun(dataclasses.replace(cfg, post_train=pt))
    broken = tmp_path / "sim"
    shutil.copytree(assets / "sim" / "checkpoint", broken)
    (broken / "ema.safetensors").write_bytes(b"\x00" * 16)
    pt = dataclasses.replace(cfg.post_train, simulator=str(broken), run_dir=run_dir)
    with pytest.raises(ConfigError, match="ema.safetensors is not a readable"):
        PostTrainRun(dataclasses.replace(cfg, post_train=pt))
    assert not (tmp_path / "never").exists()
