"""SFT on a tiny tabletop demo store: chunks, loss decrease, checkpoint, rollout helper, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actors.evaluation import evaluate_expert, evaluate_jobs, summarize
from actors.starts import EvalJob
from envs.config import EnvConfig
from envs.tabletop import TabletopEnv
from envs.tabletop_expert import expert_action
from policy.checkpoint import load_policy
from policy.config import PolicyConfig, SFTConfig
from policy.normalization import Normalizer, statistics_from_store
from policy.sft import (
    DecisionSampler,
    InstructionProbe,
    chunk_targets,
    decision_steps,
    l1_loss,
    make_data,
    run_sft,
    split_demos,
)
from trajectories.episode import Episode
from trajectories.store import EpisodeStore, write_episodes

TASKS = 2


def _demo_store(path, *, per_task: int = 3):
    env = TabletopEnv(EnvConfig(image_size=32))
    episodes = []
    for task in env.task_names[:TASKS]:
        for i in range(per_task):
            obs = env.reset(task, seed=i)
            images, proprio, actions, success = [obs.image], [obs.proprio], [], [False]
            while True:
                a = expert_action(env)
                res = env.step(a)
                actions.append(a)
                images.append(res.obs.image)
                proprio.append(res.obs.proprio)
                success.append(res.success)
                if res.done:
                    break
            actions.append(np.zeros(7))
            episodes.append(
                Episode(
                    episode_id=f"{task}-{i}",
                    task_id=task,
                    instruction=env.instruction(task),
                    images=np.stack(images),
                    proprio=np.stack(proprio),
                    actions=np.stack(actions),
                    success=np.array(success),
                )
            )
    write_episodes(path, episodes, env.meta())
    return EpisodeStore(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _demo_store(tmp_path_factory.mktemp("demos") / "store")


def _sft(store, out, policy_cfg: PolicyConfig | None = None, **settings):
    """A few steps of SFT of the tiny policy on 2 demos per task (``settings`` override the
    tests' short schedule)."""
    sft = {"steps": 2, "scale_steps": 0, "batch_size": 4, "val_every": 2, **settings}
    return run_sft(
        store,
        policy_cfg=policy_cfg or PolicyConfig(chunk=4),
        sft_cfg=SFTConfig(**sft),
        demos_per_task=2,
        out=out,
        progress=False,
    )


def test_chunk_targets_mask_the_end():
    actions = np.arange(12, dtype=np.float32).reshape(4, 3)
    chunks, mask = chunk_targets(actions, 3)
    assert chunks.shape == (4, 3, 3)
    np.testing.assert_array_equal(chunks[1], actions[1:4])
    np.testing.assert_array_equal(mask[2], [True, True, False])
    np.testing.assert_array_equal(chunks[3, 1:], 0.0)


def test_sft_loss_decreases_and_checkpoint_loads(store, tmp_path):
    sft = SFTConfig(
        steps=12, scale_steps=8, batch_size=8, lr=1e-3, scale_lr=3e-3, val_every=12, augment_shift=0
    )
    policy, metrics = run_sft(
        store,
        policy_cfg=PolicyConfig(chunk=4),
        sft_cfg=sft,
        demos_per_task=2,
        out=tmp_path / "ck",
        progress=False,
        loggers=["tensorboard"],
    )
    assert metrics["train_episodes"] == 2 * TASKS and metrics["val_episodes"] == TASKS
    assert np.mean(metrics["l1"][-3:]) < 0.8 * np.mean(metrics["l1"][:3])
    assert metrics["nll_after"] < metrics["nll_before"]
    assert len(metrics["val_l1"]) == 1 and np.isfinite(metrics["val_nll"])
    for name in (
        "model.safetensors",
        "adapter",
        "tokenizer",
        "dataset_statistics.json",
        "config.yaml",
        "sft_metrics.json",
        "llm",
        "tensorboard",  # the trackers' files, moved in beside the checkpoint
    ):
        assert (tmp_path / "ck" / name).exists(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staging folder left
    loaded = load_policy(tmp_path / "ck")
    batch = {
        "image": store.load_episode(store.episode_ids[0]).images[:2],
        "proprio": store.load_episode(store.episode_ids[0]).proprio[:2],
        "instruction": [store.episode_info[0]["instruction"]] * 2,
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)[0], policy(batch)[0])
    # only the trainable part is left requiring gradients after SFT
    assert {id(p) for p in policy.parameters() if p.requires_grad} == {
        id(p) for g in policy.param_groups().values() for p in g
    }


def test_instruction_probe_adds_its_cross_entropy_and_is_not_saved(store, tmp_path):
    """sft.instruction_weight: the L1 stage's loss is L1 + w * the probe's cross-entropy of the
    sample's instruction (a plain computation of it below), its gradient reaches the LoRA
    weights, and the checkpoint holds the same weights as one trained without the probe."""
    policy, _ = _sft(store, tmp_path / "probe", instruction_weight=0.5)
    ids = store.episode_ids[: 2 * TASKS]
    data = make_data(store, ids, policy.normalizer, chunk=4, wrist=False)
    probe = InstructionProbe(data.instructions, seed=0)
    idx = torch.arange(0, len(data), max(1, len(data) // 6))
    plain = l1_loss(policy, data, idx)
    with_probe = l1_loss(policy, data, idx, probe=probe, probe_weight=0.5)
    hidden = policy.vla.action_hidden(*policy.prepare(data.batch(idx)))  # (B, K, D)
    w = probe._readout
    logits = 10.0 * hidden.mean(dim=1) @ w
    labels = [probe.names.index(data.instructions[i]) for i in idx.tolist()]
    ce = -torch.stack([logits[b].log_softmax(-1)[y] for b, y in enumerate(labels)]).mean()
    torch.testing.assert_close(with_probe, plain + 0.5 * ce)
    assert w.shape == (hidden.shape[-1], len(set(data.instructions)))
    policy.zero_grad()
    (with_probe - plain).backward()
    lora = policy.param_groups()["lora"]  # what still trains after SFT
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    _sft(store, tmp_path / "plain")
    keys = {k: v.shape for k, v in load_policy(tmp_path / "probe").state_dict().items()}
    assert keys == {k: v.shape for k, v in load_policy(tmp_path / "plain").state_dict().items()}
    with pytest.raises(ValueError, match="sft.instruction_weight"):
        SFTConfig(instruction_weight=-1.0)


def test_decision_steps_are_the_first_step_and_gripper_switches():
    actions = np.zeros((6, 7), np.float32)
    actions[:, -1] = [-1, -1, 1, 1, -1, -1]  # open, open, close (grasp), close, open (release)
    first, switch = decision_steps(actions)
    np.testing.assert_array_equal(first, [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(switch, [0, 0, 1, 0, 1, 0])


def test_decision_sampler_draws_its_shares(store):
    ids = [e["episode_id"] for e in store.episode_info]
    norm = Normalizer(
        statistics_from_store(store, dataset_name="t", episode_ids=ids)["t"], name="t"
    )
    data = make_data(store, ids, norm, chunk=8, wrist=False)
    first = set(torch.nonzero(data.first).flatten().tolist())
    switch = set(torch.nonzero(data.switch).flatten().tolist())
    assert len(first) == len(ids) and len(switch) >= len(ids)  # every demo grasps at least once
    gen = torch.Generator().manual_seed(0)
    sampler = DecisionSampler(data, 16, start_fraction=0.5, switch_fraction=0.25)
    draws = [sampler(gen) for _ in range(50)]
    assert all(
        len(d) == 16 and set(d[:8].tolist()) <= first and set(d[8:12].tolist()) <= switch
        for d in draws
    )
    rest = torch.cat([d[12:] for d in draws]).tolist()
    assert np.mean([i in first or i in switch for i in rest]) < 0.3  # the rest is uniform
    uniform = torch.cat(
        [DecisionSampler(data, 16, start_fraction=0.0, switch_fraction=0.0)(gen) for _ in range(50)]
    )
    assert int(uniform.max()) < len(data) and len(set(uniform.tolist())) > len(data) // 2


def test_cycles_restart_the_learning_rate(store, tmp_path):
    _, metrics = _sft(store, tmp_path / "ck", steps=3, cycles=2, lr=1e-3, val_every=100)
    lr = metrics["lr"]  # the learning rate of each L1 step
    assert len(lr) == len(metrics["l1"]) == 6
    assert lr[0] == lr[3] == 1e-3 and lr[1] < lr[0] and lr[2] < lr[1]  # two cosines
    assert lr[3:] == lr[:3]
    assert [s for s, _ in metrics["val_l1"]] == [6]  # validated once, at the last step
    with pytest.raises(ValueError, match="sft.cycles must be >= 1"):
        SFTConfig(cycles=0)


def test_too_few_demos_is_a_clear_error(store, tmp_path):
    with pytest.raises(ValueError, match="has 3 expert demos.*asks for 9"):
        run_sft(
            store,
            policy_cfg=PolicyConfig(),
            sft_cfg=SFTConfig(steps=1),
            demos_per_task=9,
            out=tmp_path / "ck",
            progress=False,
        )


def test_rollout_helper_runs_policy_and_expert(make_policy):
    policy = make_policy()
    env_cfg = EnvConfig(image_size=32, max_steps=6)
    tasks = TabletopEnv(env_cfg).task_names[:2]
    jobs = [EvalJob(t, 1000 + i) for t in tasks for i in range(2)]
    result = summarize(evaluate_jobs(policy, lambda: TabletopEnv(env_cfg), jobs, execute_steps=4))
    assert result["episodes"] == 4 and 0.0 <= result["success_rate"] <= 1.0
    assert result["mean_steps"] == 6  # nothing succeeds in 6 steps: every episode times out
    assert result["ended_by"] == {"limit": 4}
    full = EnvConfig(image_size=32)
    expert = summarize(evaluate_expert(lambda: TabletopEnv(full), jobs))
    assert expert["success_rate"] == 1.0


def test_sft_command_end_to_end(store, tmp_path, capsys):
    from cluster.cli import main

    rc = main(
        [
            "sft",
            "--data",
            str(store.path),
            "--demos-per-task",
            "2",
            "--out",
            str(tmp_path / "ck"),
            "--steps",
            "2",
            "--scale-steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_episodes"] == 2 * TASKS
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    rc = main(["sft", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    # an existing checkpoint is never changed without --overwrite
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ck").iterdir()}
    again = ["sft", "--data", str(store.path), "--out", str(tmp_path / "ck"), "--steps", "1"]
    assert main([*again, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --overwrite" in err and str(tmp_path / "ck") in err
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ck").iterdir()} == before


def test_frozen_vision_keeps_the_starting_towers(store, tmp_path):
    """SFT from a checkpoint with ``freeze_vision``: the vision towers stay bit for bit, the
    rest of the backbone learns; the scale head is fitted within the experiment's clip range
    (not the starting checkpoint's), and the saved checkpoint carries that range."""
    _sft(store, tmp_path / "start")
    policy, _ = _sft(
        store,
        tmp_path / "ck",
        PolicyConfig(chunk=4, checkpoint=str(tmp_path / "start"), log_scale_min=-5.0),
        steps=3,
        scale_steps=2,
        val_every=3,
        freeze_vision=True,
    )
    start = load_policy(tmp_path / "start").state_dict()
    now = policy.state_dict()
    vision = [k for k in now if k.startswith("vla.vision.")]
    assert vision and all(torch.equal(now[k], start[k]) for k in vision)
    projector = [k for k in now if k.startswith("vla.projector.")]
    assert any(not torch.equal(now[k], start[k]) for k in projector)
    saved = load_policy(tmp_path / "ck")
    assert load_policy(tmp_path / "start").cfg.log_scale_min == -2.0
    assert saved.cfg.log_scale_min == saved.vla.scale_head.log_scale_min == -5.0
    head = saved.vla.scale_head
    with torch.no_grad():
        head.model.fc2.bias.fill_(-10.0)
        assert float(head(torch.zeros(1, 4, head.model.fc1.in_features)).min()) == -5.0


def test_learner_demo_anchor_is_the_sft_l1_on_its_training_demos(store, tmp_path):
    """``learner.anchor_*``: the learner worker's anchor is SFT's L1 loss on the SFT's own
    training split of the demos (validation demos never enter it)."""
    from learner.config import LearnerConfig
    from learner.worker import LearnerWorker, demo_anchor

    policy, _ = _sft(store, tmp_path / "p")
    cfg = LearnerConfig(
        anchor_weight=1.0,
        anchor_data=[str(store.path)],
        anchor_demos_per_task=2,
        anchor_batch_size=4,
    )
    loss = demo_anchor(policy, cfg, (0.2, 0))
    train_ids, val_ids = split_demos(store, demos_per_task=2, val_fraction=0.2, seed=0)
    assert val_ids and not set(train_ids) & set(val_ids)
    data = make_data(store, train_ids, policy.normalizer, chunk=4, wrist=False)
    idx = torch.randint(len(data), (4,), generator=torch.Generator().manual_seed(5))
    expected = l1_loss(policy, data, idx)
    assert torch.isclose(loss(torch.Generator().manual_seed(5)), expected)
    worker = LearnerWorker(lambda: policy, cfg)
    assert worker.learner.anchor is not None
