"""LOOP post-training on a real local Ray cluster with the fake simulator and reflector."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from actors.config import CollectConfig
from cluster.collect import collect, episode_specs
from cluster.config import ExperimentConfig, PostTrainConfig
from cluster.configlib import ConfigError
from envs.config import EnvConfig
from policy.checkpoint import build_policy, load_policy, save_policy
from policy.config import PolicyConfig
from policy.normalization import statistics_from_store
from trajectories.store import EpisodeStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    env_cfg = EnvConfig(image_size=32)
    specs = episode_specs(["place_red_on_blue", "lift_red"], 2, seed=0, source="expert")
    collect(env_cfg, CollectConfig(), specs, root / "demos", progress=False)
    store = EpisodeStore(root / "demos")
    stats = statistics_from_store(store, dataset_name="tabletop")["tabletop"]
    torch.manual_seed(0)
    # a wide initial Laplace scale: rollouts of a group must differ by whole pixels for the
    # fake reflector (which reads the drawn end effector) to give them different rewards
    policy = build_policy(PolicyConfig(scale_bias_init=0.0),
                          instructions=[e["instruction"] for e in store.episode_info], stats=stats)
    save_policy(policy, root / "sft")
    return root


def make_cfg(root, run: str, iterations: int) -> ExperimentConfig:
    cfg = ExperimentConfig(name=run)
    return dataclasses.replace(
        cfg,
        rollout=dataclasses.replace(cfg.rollout, group_size=4, max_policy_steps=2, execute_steps=2,
                                    eta=0.9),
        learner=dataclasses.replace(cfg.learner, group_size=4, minibatch_size=4, micro_batch_size=4,
                                    skip_constant_groups=False),
        cluster=dataclasses.replace(cfg.cluster, rollout_workers=2, rollout_worker_cpus=0.25,
                                    learner_cpus=0.25,
                                    simulator=dataclasses.replace(cfg.cluster.simulator, num_cpus=0.25),
                                    reflector=dataclasses.replace(cfg.cluster.reflector, num_cpus=0.25)),
        post_train=PostTrainConfig(policy=str(root / "sft"), data=[str(root / "demos")],
                                   iterations=iterations, checkpoint_every=1, tensorboard=False,
                                   run_dir=str(root / "runs" / "{name}"), video_every=2),
    )


def test_two_workers_two_iterations(ray_cluster, assets):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "a", 2)
    summary = post_train(cfg, progress=False)
    run = assets / "runs" / "a"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    # weights were published after each update and every worker loaded them
    assert [r["broadcast/version"] for r in records] == [1, 2]
    assert [r["rollout/behaviour_version"] for r in records] == [0, 1]
    assert summary["version"] == 2
    assert all(r["broadcast/bytes"] > 0 and r["throughput/env_steps_per_s"] > 0 for r in records)
    assert all(r["learner/advantage_abs_mean"] > 0 and r["learner/optimizer_steps"] > 0 for r in records)
    assert records[0]["sim/mean_batch_size"] >= 4
    assert (run / "videos" / "imagined_iter_0002.gif").is_file()
    # trainable weights changed, frozen ones did not
    sft = load_policy(assets / "sft")
    after = load_policy(run / "policy")
    before_t, after_t = sft.trainable_state_dict(), after.trainable_state_dict()
    assert any(not np.allclose(before_t[k].numpy(), after_t[k].numpy()) for k in before_t)
    frozen = {k: v for k, v in sft.state_dict().items() if k not in before_t and "lora" not in k}
    after_sd = after.state_dict()
    assert frozen and all(np.array_equal(v.numpy(), after_sd[k].numpy()) for k, v in frozen.items())
    ckpt = load_file(str(run / "checkpoints" / "iter_000002" / "trainable.safetensors"))
    assert set(ckpt) == set(after_t)


def test_resume_continues_from_checkpoint(ray_cluster, assets):
    from cluster.driver import post_train

    post_train(make_cfg(assets, "b", 1), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        post_train(make_cfg(assets, "b", 2), progress=False)
    summary = post_train(make_cfg(assets, "b", 2), resume=True, progress=False)
    records = [json.loads(x) for x in (assets / "runs" / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert summary["version"] == 2  # restored version 1 after iteration 1, then one more update
    state = json.loads((assets / "runs" / "b" / "checkpoints" / "iter_000002" / "driver_state.json").read_text())
    assert state["sampler_cursor"] == 4  # 2 workers x 1 group x 2 iterations


def test_too_many_gpus_is_one_clear_error(ray_cluster, assets):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "c", 1)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, learner_gpus=8))
    with pytest.raises(ConfigError, match="asks for 8 GPUs"):
        post_train(cfg, progress=False)
