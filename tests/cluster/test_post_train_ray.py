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
from core.configlib import ConfigError
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
    policy = build_policy(
        PolicyConfig(scale_bias_init=0.0),
        instructions=[e["instruction"] for e in store.episode_info],
        stats=stats,
    )
    save_policy(policy, root / "sft")
    return root


def make_cfg(root, run: str, iterations: int, imagined_eval_states: int = 0) -> ExperimentConfig:
    cfg = ExperimentConfig(name=run, loggers=[])
    return dataclasses.replace(
        cfg,
        rollout=dataclasses.replace(
            cfg.rollout, group_size=4, max_policy_steps=2, execute_steps=2, eta=0.9
        ),
        learner=dataclasses.replace(
            cfg.learner,
            minibatch_size=4,
            micro_batch_size=4,
            skip_constant_groups=False,
        ),
        cluster=dataclasses.replace(
            cfg.cluster,
            rollout_workers=2,
            rollout_worker_cpus=0.25,
            learner_cpus=0.25,
            simulator=dataclasses.replace(cfg.cluster.simulator, num_cpus=0.25),
            reflector=dataclasses.replace(cfg.cluster.reflector, num_cpus=0.25),
        ),
        post_train=PostTrainConfig(
            policy=str(root / "sft"),
            simulator="fake",
            reflector="fake",
            data=[str(root / "demos")],
            iterations=iterations,
            checkpoint_every=1,
            run_dir=str(root / "runs" / "{name}"),
            video_every=2,
            imagined_eval_states=imagined_eval_states,
        ),
    )


def test_two_workers_two_iterations(ray_cluster, assets):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "a", 2, imagined_eval_states=3)
    summary = post_train(cfg, progress=False)
    run = assets / "runs" / "a"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    # weights were published after each update and every worker loaded them
    assert [r["broadcast/version"] for r in records] == [1, 2]
    assert [r["rollout/behaviour_version"] for r in records] == [0, 1]
    assert summary["version"] == 2
    assert all(r["broadcast/bytes"] > 0 and r["throughput/env_steps_per_s"] > 0 for r in records)
    assert all(
        r["learner/advantage_abs_mean"] > 0 and r["learner/optimizer_steps"] > 0 for r in records
    )
    assert records[0]["sim/mean_batch_size"] >= 4
    for r in records:  # where each env step's time went, and the parts add up
        parts = ("kinematics", "world_model_call", "reflector_call", "other")
        assert all(r[f"step/{p}_ms"] >= 0 for p in (*parts, "policy", "env"))
        assert sum(r[f"step/{p}_ms"] for p in parts) == pytest.approx(r["step/env_ms"], rel=1e-6)
        assert r["step/world_model_call_ms"] > 0 and r["step/policy_ms"] > 0
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
    # imagined evaluation of the SFT and the final policy on the same 3 starts (3 starts split
    # over 2 workers), 4 rollouts each
    ev = json.loads((run / "imagined_eval.json").read_text())
    assert summary["imagined_eval"] == ev
    assert [ev["before"]["version"], ev["after"]["version"]] == [0, 2]
    for side in ev.values():
        assert side["starts"] == 3 and side["rollouts"] == 12 and 0 <= side["success_rate"] <= 1
        assert [t for t, _ in side["per_start"]] == [t for t, _ in ev["before"]["per_start"]]
        assert all(
            t in ("place_red_on_blue", "lift_red") and 0 <= f <= 1 for t, f in side["per_start"]
        )


def test_colocated_placement_runs_without_service_replicas(ray_cluster, assets):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "colocated", 1)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, placement="colocated"))
    summary = post_train(cfg, progress=False)
    (record,) = [json.loads(x) for x in (assets / "runs" / "colocated" / "metrics.jsonl").open()]
    assert summary["version"] == 1 and record["rollout/episodes"] == 2 * 4
    assert record["step/world_model_call_ms"] > 0 and record["learner/optimizer_steps"] > 0
    assert not any(k.startswith(("sim/", "reflector/")) for k in record)  # no replica ran


def test_real_env_world_runs_the_same_loop_without_services(ray_cluster, assets):
    """post_train.world = real: rollouts in the real env with its success as the reward; no
    simulator, reflector or episode data needed, and versions advance as in imagination."""
    from cluster.driver import post_train

    cfg = make_cfg(assets, "real", 2)
    cfg = dataclasses.replace(
        cfg,
        env=EnvConfig(image_size=32),
        post_train=dataclasses.replace(
            cfg.post_train,
            world="real",
            simulator="/does/not/exist",
            reflector="/does/not/exist",
            data=[],
        ),
    )
    summary = post_train(cfg, progress=False)
    run = assets / "runs" / "real"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["broadcast/version"] for r in records] == [1, 2]
    assert [r["rollout/behaviour_version"] for r in records] == [0, 1]
    assert summary["world"] == "real" and summary["imagined_eval"] == {}
    for r in records:
        assert (
            0.0 <= r["rollout/success"] <= 1.0 and r["rollout/reward_mean"] == r["rollout/success"]
        )
        assert r["throughput/env_steps_per_s"] > 0 and not any(
            k.startswith(("sim/", "reflector/")) for k in r
        )
    assert (run / "videos" / "real_iter_0002.gif").is_file()
    # the run's policy names no other checkpoint; `rehearse export --format oft` reads it
    from cluster.cli import main
    from policy.checkpoint import load_policy, read_config
    from policy.oft_import import import_oft

    assert read_config(run / "policy").checkpoint == ""
    assert (run / "policy" / "llm" / "model.safetensors").is_file()
    assert main(["export", "--policy", str(run / "policy"), "--out", str(run / "oft")]) == 0
    assert (
        main(
            [
                "export",
                "--policy",
                str(run / "policy"),
                "--out",
                str(run / "oft"),
                "--format",
                "oft",
                "--overwrite",
            ]
        )
        == 0
    )
    ours = load_policy(run / "policy")
    oft = import_oft(run / "oft", ours.cfg)
    torch.testing.assert_close(
        oft.vla.action_head.state_dict(), ours.vla.action_head.state_dict(), rtol=1e-2, atol=1e-2
    )
    state = json.loads((run / "checkpoints" / "iter_000002" / "driver_state.json").read_text())
    assert state["sampler_cursor"] == 4


def test_dynamic_sampling_and_the_learning_curve(ray_cluster, assets):
    """rollout.mixed_groups: rounds repeat up to the cap, a later one sized to what is missing,
    and are counted; post_train.eval_every:
    real success (mean action and sampled) before the first and after every iteration, with
    its plot."""
    from cluster.driver import post_train

    cfg = make_cfg(assets, "curve", 2)
    cfg = dataclasses.replace(
        cfg,
        env=EnvConfig(image_size=32),
        rollout=dataclasses.replace(cfg.rollout, mixed_groups=3, max_sampling_rounds=2),
        post_train=dataclasses.replace(
            cfg.post_train, world="real", data=[], eval_every=1, eval_episodes_per_task=1
        ),
    )
    post_train(cfg, progress=False)
    run = assets / "runs" / "curve"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    for r in records:
        assert 0.0 <= r["eval/success_mean_action"] <= 1.0
        assert 0.0 <= r["eval/success_sampled"] <= 1.0 and r["eval/episodes"] == 8
    for prev, r in zip(records, records[1:], strict=False):
        rounds, mixed = r["rollout/sampling_rounds"], r["rollout/mixed_groups"]
        assert rounds == 2 or (rounds == 1 and mixed >= 3)
        assert r["rollout/sampling_capped"] == float(mixed < 3)
        # 2 workers x 1 group x 4 rollouts in the first round; the second as many groups per
        # worker as the missing mixed groups need, at most rollout.round_growth (4)
        drawn = r["rollout/episodes"] - prev["rollout/episodes"]
        assert drawn == 8 if rounds == 1 else (drawn % 8 == 0 and 16 <= drawn <= 8 + 8 * 4)
        assert r["learner/kept_trajectories"] == 4 * min(mixed, 3)
    assert (run / "learning_curve.png").stat().st_size > 1000


def test_resume_continues_from_checkpoint(ray_cluster, assets):
    from cluster.driver import post_train

    first = post_train(make_cfg(assets, "b", 1, imagined_eval_states=1), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        post_train(make_cfg(assets, "b", 2), progress=False)
    metrics = assets / "runs" / "b" / "metrics.jsonl"
    with metrics.open("a") as f:  # a run killed after logging iteration 2, before its checkpoint
        f.write(json.dumps({"iteration": 2, "rollout/success": 0.5}) + "\n")
    summary = post_train(
        make_cfg(assets, "b", 2, imagined_eval_states=1), resume=True, progress=False
    )
    # the SFT policy's imagined evaluation is kept from the first run, not redone with v1
    assert summary["imagined_eval"]["before"] == first["imagined_eval"]["before"]
    assert summary["imagined_eval"]["after"]["version"] == 2
    records = [
        json.loads(x) for x in (assets / "runs" / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in records] == [1, 2]
    assert summary["version"] == 2  # restored version 1 after iteration 1, then one more update
    state = json.loads(
        (assets / "runs" / "b" / "checkpoints" / "iter_000002" / "driver_state.json").read_text()
    )
    assert state["sampler_cursor"] == 4  # 2 workers x 1 group x 2 iterations


def test_overlap_rolls_out_one_version_behind_and_checkpoints_before_the_prefetch(
    ray_cluster, assets
):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "overlap", 3)
    cfg = dataclasses.replace(cfg, post_train=dataclasses.replace(cfg.post_train, overlap=True))
    summary = post_train(cfg, progress=False)
    run = assets / "runs" / "overlap"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # iteration 2's rollouts ran during iteration 1's update (with v0), iteration 3's during
    # iteration 2's (with v1); the last iteration rolls out nothing ahead
    assert [r["rollout/behaviour_version"] for r in records] == [0, 0, 1]
    assert [r["learner/staleness"] for r in records] == [0, 1, 1]
    assert [r["broadcast/version"] for r in records] == [1, 2, 3] and summary["version"] == 3
    assert all(r["learner/stale_dropped"] == 0 for r in records)
    assert "timers/rollout_ahead_s" in records[0] and "timers/rollout_ahead_s" not in records[2]
    assert [r["rollout/episodes"] for r in records] == [8, 16, 24]
    # a checkpoint resumes at the starts after its own iteration's, not after the prefetch
    state = json.loads((run / "checkpoints" / "iter_000001" / "driver_state.json").read_text())
    assert state["sampler_cursor"] == 2 and state["next_group"] == 2


def test_overlap_needs_a_staleness_bound_of_one(assets):
    cfg = make_cfg(assets, "x", 1)
    with pytest.raises(ValueError, match="learner.max_staleness >= 1"):
        dataclasses.replace(
            cfg,
            post_train=dataclasses.replace(cfg.post_train, overlap=True),
            learner=dataclasses.replace(cfg.learner, max_staleness=0),
        )


def test_too_many_gpus_is_one_clear_error(ray_cluster, assets):
    from cluster.driver import post_train

    cfg = make_cfg(assets, "c", 1)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, learner_gpus=8))
    with pytest.raises(ConfigError, match="asks for 8 GPUs"):
        post_train(cfg, progress=False)
    assert not (assets / "runs" / "c").exists()  # a refused run leaves nothing behind


def test_data_parallel_learners_match_one_learner(ray_cluster, assets):
    """Two learner workers (gloo all-reduce, each on half of every minibatch) end with the same
    weights and metrics as one plain Learner doing all the work."""
    import ray

    from cluster.backends import PolicyFactory
    from cluster.learner_group import LearnerGroup
    from learner import Learner, LearnerConfig, TrajectoryBatch
    from policy.tokenizer import encode_prompts

    policy = load_policy(assets / "sft")
    policy.eval()
    b, t = 8, 2
    g = torch.Generator().manual_seed(3)
    instructions = ["lift the red block"] * 4 + ["put the red block on the blue plate"] * 4
    ids, lengths = encode_prompts(policy.tokenizer, instructions)
    obs = {
        "image": torch.randint(0, 256, (b, t, 32, 32, 3), generator=g, dtype=torch.uint8),
        "proprio": torch.randn(b, t, 8, generator=g),
        "input_ids": ids[:, None].expand(b, t, -1).contiguous(),
        "lengths": lengths[:, None].expand(b, t).contiguous(),
    }
    with torch.no_grad():
        actions, log_density, _, _ = policy.act({k: v.flatten(0, 1) for k, v in obs.items()})
    batch = TrajectoryBatch(
        obs=obs,
        actions=actions.reshape(b, t, *actions.shape[1:]),
        old_log_probs=log_density.reshape(b, t, *actions.shape[1:]),
        executed=torch.ones(b, t, actions.shape[1], dtype=torch.bool),
        rewards=torch.tensor([1.0, 0.0, 0.5, 0.2, 0.0, 1.0, 0.9, 0.1]),
        done=torch.tensor(
            [[True, False]] + [[False, False]] * 4 + [[True, False]] + [[False, True]] * 2
        ),
        group_ids=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        policy_version=torch.zeros(b, dtype=torch.long),
    )
    # adam_eps = 1 makes each update smooth in the gradient (~ lr * g): with a tiny eps, Adam
    # steps near-zero gradients by ~lr in the direction of their float rounding noise
    cfg = LearnerConfig(
        minibatch_size=8,
        micro_batch_size=2,
        ppo_epochs=2,
        lr_lora=0.1,
        lr_heads=0.1,
        adam_eps=1.0,
    )
    group = LearnerGroup(
        PolicyFactory(str(assets / "sft")),
        cfg,
        num_learners=2,
        num_gpus=0,
        num_cpus=0,
        seed=5,
        name="dp-test",
    )
    try:
        metrics = group.update(ray.put(batch))
        version, weights = ray.get(group.publish())
        other_version, _ = ray.get(group.workers[1].current.remote())
        _, other = ray.get(
            group.workers[1].__ray_call__.remote(
                lambda w: (0, {k: v.clone() for k, v in w.policy.trainable_state_dict().items()})
            )
        )
    finally:
        group.kill()
    reference = Learner(policy, cfg, seed=5)
    expected = reference.update(batch)
    _, want = reference.publish()
    assert version == other_version == 1
    assert metrics["learner/optimizer_steps"] == expected["learner/optimizer_steps"] == 2
    for k in ("learner/loss", "learner/approx_kl", "learner/grad_norm", "learner/entropy"):
        assert metrics[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), k
    for k, v in want.items():
        torch.testing.assert_close(weights[k], v, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(other[k], v, rtol=1e-4, atol=1e-6)
    assert any(
        not torch.equal(v, load_policy(assets / "sft").trainable_state_dict()[k])
        for k, v in want.items()
    )


def test_a_killed_rollout_worker_is_restarted_and_its_groups_run_again(ray_cluster, assets):
    """Fault injection: rollout worker 0 is killed (Ray restarts it) once the first iteration is
    logged; the run finishes every iteration with every trajectory."""
    import threading
    import time

    import ray

    from cluster.driver import post_train

    cfg = make_cfg(assets, "fault", 4)
    cfg = dataclasses.replace(
        cfg,
        env=EnvConfig(image_size=32),
        post_train=dataclasses.replace(cfg.post_train, world="real", data=[]),
    )
    metrics = assets / "runs" / "fault" / "metrics.jsonl"
    killed = []

    def kill_worker_0():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            worker = [n for n in names if n.startswith("fault-") and n.endswith("-rollout-0")]
            if worker and metrics.is_file() and metrics.read_text().strip():
                ray.kill(ray.get_actor(worker[0]), no_restart=False)
                killed.append(worker[0])
            time.sleep(0.2)

    t = threading.Thread(target=kill_worker_0, daemon=True)
    t.start()
    post_train(cfg, progress=False)
    t.join(timeout=10)
    assert killed
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert [r["rollout/episodes"] for r in records] == [8, 16, 24, 32]  # nothing lost
    assert records[-1]["rollout/worker_restarts"] >= 1


def test_an_evaluation_worker_killed_between_calls_is_given_its_weights_again(ray_cluster, assets):
    """The curve's evaluation worker dies while idle; Ray restarts it holding the SFT weights.
    The next evaluation notices (it asks for the version it loaded), revives it with the
    current weights and gives the records those weights give; a worker that dies more often
    than the limit stops the run in one line."""
    import os
    import time

    import ray
    from ray.exceptions import RayActorError

    from actors.eval_worker import EvalWorker, StaleWeights
    from actors.starts import EvalJob
    from cluster.backends import EnvFactory, PolicyFactory
    from cluster.run_eval import Evaluator

    policy = load_policy(assets / "sft")
    moved = {k: v + 0.05 for k, v in policy.trainable_state_dict().items()}
    jobs = [EvalJob("lift_red", 7), EvalJob("place_red_on_blue", 8)]
    kw = {"deterministic": True, "seed": 0, "execute_steps": 2, "max_steps": 4}
    actor = (
        ray.remote(EvalWorker)
        .options(num_cpus=0.25, max_restarts=1)
        .remote(PolicyFactory(str(assets / "sft")), EnvFactory(EnvConfig(image_size=32)))
    )
    lines: list[str] = []
    evaluator = Evaluator(actor, limit=1, log=lines.append)
    assert evaluator.load_weights((3, moved)) == 3
    want = evaluator.evaluate(jobs, **kw)

    def pid():
        return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=10)

    first = pid()
    ray.kill(actor, no_restart=False)
    for _ in range(240):  # until Ray's restart of it answers (not the old process)
        try:
            if pid() != first:
                break
        except RayActorError:
            pass
        time.sleep(0.5)
    with pytest.raises(StaleWeights):  # restarted: it holds the SFT weights, not version 3
        ray.get(actor.evaluate.remote(jobs, version=3, **kw))
    got = evaluator.evaluate(jobs, **kw)
    assert evaluator.deaths == 1 and len(lines) == 1
    assert [(r["success"], r["steps"]) for r in got] == [(r["success"], r["steps"]) for r in want]
    assert len(ray.get(actor.evaluate.remote(jobs, version=3, **kw))) == 2  # version 3 again
    ray.kill(actor, no_restart=False)  # Ray no longer restarts it: one line, no traceback
    with pytest.raises(RuntimeError, match=r"evaluation worker died 2 times"):
        evaluator.evaluate(jobs, **kw)


def test_step_breakdown_sums_workers_per_env_step():
    from cluster.driver import step_breakdown

    real = [{"policy_s": 1.0, "env_s": 3.0}, {"policy_s": 1.0, "env_s": 1.0}]
    assert step_breakdown(real, 2000) == {"step/policy_ms": 1.0, "step/env_ms": 2.0}
    imagined = [{"policy_s": 0.5, "env_s": 2.0, "kinematics_s": 0.1, "sim_s": 1.2,
                 "reflector_s": 0.4}]  # fmt: skip
    out = step_breakdown(imagined, 100)
    assert out["step/world_model_call_ms"] == pytest.approx(12.0)
    assert out["step/other_ms"] == pytest.approx(3.0)
    assert step_breakdown([], 10) == {} and step_breakdown(real, 0) == {}


def test_search_and_distill_recipe_runs_in_the_real_env(ray_cluster, assets):
    """The oracle with one-step exploration, the filtered-L1 objective, the demo anchor, the
    projector trainable, each update a fresh cosine cycle and the progress reward: the
    projector and heads move, the anchor is reported, and the run's policy keeps the projector
    in its trainable part."""
    from cluster.driver import post_train

    cfg = make_cfg(assets, "distill", 1)
    cfg = dataclasses.replace(
        cfg,
        env=EnvConfig(image_size=32),
        rollout=dataclasses.replace(cfg.rollout, explore="one_step", scale_factor=2.0),
        learner=dataclasses.replace(
            cfg.learner,
            objective="filtered_l1",
            anchor_weight=1.0,
            anchor_data=[str(assets / "demos")],
            anchor_demos_per_task=2,
            anchor_batch_size=4,
            lr_schedule="cosine",
            reset_optimizer=True,
        ),
        post_train=dataclasses.replace(
            cfg.post_train, world="real", data=[], train_projector=True, real_reward="progress"
        ),
    )
    post_train(cfg, progress=False)
    run = assets / "runs" / "distill"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["learner/anchor_l1"]) for r in records)
    before, after = load_policy(assets / "sft"), load_policy(run / "policy")
    assert after.cfg.train_projector and not before.cfg.train_projector
    moved = {
        n.split(".")[1]
        for n, p in after.state_dict().items()
        if not torch.equal(p, before.state_dict()[n])
    }
    assert {"projector", "action_head"} <= moved and "vision" not in moved
