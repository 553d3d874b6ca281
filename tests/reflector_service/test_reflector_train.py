"""Reflector training, checkpoints, metrics and the train/eval commands on synthetic stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_reflector_data import write_synthetic_store  # noqa: E402

from reflector_service.checkpoint import (  # noqa: E402
    load_reflector,
    read_config,
    read_state,
    save_reflector,
    termination_eta,
)
from reflector_service.config import ReflectorModelConfig, ReflectorTrainConfig  # noqa: E402
from reflector_service.metrics import calibrate_termination, reflector_metrics  # noqa: E402
from reflector_service.model import Reflector, hold_min  # noqa: E402
from reflector_service.train import (  # noqa: E402
    LabeledEpisode,
    frozen_fingerprint,
    load_labeled_episodes,
    score_episodes,
    split_episodes,
    train_reflector,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("refl")
    return write_synthetic_store(root / "train", episodes=24, seed=0), write_synthetic_store(
        root / "test", episodes=12, seed=1
    )


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("refl_out")
    summary = train_reflector(
        ReflectorModelConfig(window=4),
        ReflectorTrainConfig(
            max_steps=40,
            eval_every=20,
            batch_episodes=4,
            rows_per_episode=0,
            lr=3e-3,
            pos_weight=0.0,
            success_fraction=0.0,
            frame_probe_weight=0.5,
        ),
        [stores[0]],
        out,
        progress=False,
        log=lambda s: None,
        loggers=["tensorboard"],
    )
    return out, summary


def test_training_separates_easy_case_and_keeps_frozen_weights(trained, stores):
    out, summary = trained
    assert summary["frozen_unchanged"] and summary["steps"] == 40
    assert summary["pos_weight"] > 1.0  # fewer success frames than failures
    model = load_reflector(out / "best")
    test = load_labeled_episodes([stores[1]], progress=False)
    rewards = score_episodes(model, test)
    m = reflector_metrics(rewards, [e.labels for e in test], eta=0.5)
    assert m["roc_auc"] > 0.95
    r, y = np.concatenate(rewards), np.concatenate([e.labels for e in test])
    assert r[y].mean() - r[~y].mean() > 0.3  # separated, not just ranked
    assert json.loads((out / "summary.json").read_text())["best"]["roc_auc"] is not None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("reflector/val_roc_auc")] == [20, 40]
    assert len(events.Scalars("reflector/loss")) == 40


def test_frozen_fingerprint_detects_a_change():
    torch.manual_seed(0)
    m = Reflector(ReflectorModelConfig())
    before = frozen_fingerprint(m)
    name, param = next(iter(m.llm.named_parameters()))
    with torch.no_grad():
        param.add_(1e-6)
    after = frozen_fingerprint(m)
    assert [n for n in before if before[n] != after[n]] == [f"llm.{name}"]


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    m = Reflector(ReflectorModelConfig(window=3, vision_adapter=True, vision_model="siglip")).eval()
    m.fit_instructions(
        ["lift the red block", "put the red block on the blue plate", "lift the yellow block"]
    )
    with torch.no_grad():
        m.head[-1].bias.fill_(0.3)
        m.film.weight.normal_()  # the instruction scales the head (zero at init)
    save_reflector(m, tmp_path / "ck", state={"step": 7})
    frames = np.random.default_rng(0).integers(0, 256, (2, 6, 32, 32, 3), dtype=np.uint8)
    instr = ["lift the red block", "put the red block on the blue plate"]
    torch.manual_seed(99)  # a different init must be overwritten by the checkpoint
    loaded = load_reflector(tmp_path / "ck")
    torch.testing.assert_close(loaded.score(frames, instr), m.score(frames, instr), atol=0, rtol=0)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.yaml",
        "frozen.safetensors",
        "state.json",
        "trainable.safetensors",
    ]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reflector(tmp_path / "missing")
    m = Reflector(ReflectorModelConfig())
    save_reflector(m, tmp_path / "ck")
    (tmp_path / "ck" / "trainable.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="trainable"):
        load_reflector(tmp_path / "ck")
    save_reflector(m, tmp_path / "ck2")
    cfg = yaml.safe_load((tmp_path / "ck2" / "config.yaml").read_text())
    cfg["head_hidden"] = 7
    (tmp_path / "ck2" / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="shape"):
        load_reflector(tmp_path / "ck2")


def test_metrics_termination_timing():
    labels = [
        np.array([0, 0, 1, 1], bool),
        np.array([0, 0, 0, 1], bool),
        np.zeros(4, bool),
        np.zeros(3, bool),
    ]
    rewards = [
        np.array([0.1, 0.2, 0.4, 0.9]),  # stops 1 step late
        np.array([0.6, 0.1, 0.1, 0.1]),  # stops 3 steps early
        np.array([0.1, 0.7, 0.1, 0.1]),  # failed but stops: early termination
        np.array([0.1, 0.2, 0.3]),
    ]
    m = reflector_metrics(rewards, labels, eta=0.5)
    assert m["timing_error_mean_signed"] == pytest.approx(-1.0)
    assert m["timing_error_mean_abs"] == pytest.approx(2.0)
    assert m["premature_rate"] == 0.5 and m["missed_rate"] == 0.0
    assert m["early_termination_rate"] == 0.5
    assert m["frame_accuracy"] == pytest.approx(11 / 15)
    assert 0.0 <= m["roc_auc"] <= 1.0


def test_calibrate_eta_takes_the_smallest_eta_within_the_early_termination_limit():
    labels = [np.array([0, 0, 1, 1], bool), np.zeros(4, bool), np.zeros(4, bool), np.zeros(4, bool)]
    rewards = [
        np.array([0.1, 0.3, 0.97, 0.99]),
        np.array([0.1, 0.62, 0.1, 0.1]),  # failed episodes peaking at 0.62, 0.74, 0.81
        np.array([0.1, 0.74, 0.2, 0.1]),
        np.array([0.81, 0.2, 0.1, 0.1]),
    ]
    _, eta, sweep = calibrate_termination(rewards, labels, max_early_termination=0.0)
    assert eta == 0.85 and [s["eta"] for s in sweep][:2] == [0.5, 0.55]
    # a plain loop over the grid gives the same choice
    plain = [e for e in sweep if sum(r.max() > e["eta"] for r in rewards[1:]) / 3 <= 0.0]
    assert plain[0]["eta"] == eta
    _, eta, _ = calibrate_termination(
        rewards, labels, max_early_termination=0.34
    )  # one of three allowed
    assert eta == 0.75
    never = [np.array([0.1, 0.99]), np.array([0.1, 0.99])]  # no eta of the grid stops none
    _, eta, _ = calibrate_termination(
        never, [np.array([0, 1], bool), np.zeros(2, bool)], max_early_termination=0.0
    )
    assert eta == 0.5  # the lowest early-termination rate, the smallest eta among equals
    with pytest.raises(ValueError, match="failed episodes"):
        calibrate_termination(rewards[:1], labels[:1], max_early_termination=0.05)


def test_calibrate_eta_on_another_grid_reaches_below_the_default_one():
    # imagined frames: the success peaks at 0.33, the failure at 0.18 (the default grid's
    # lowest eta, 0.5, would miss the success)
    labels = [np.array([0, 0, 1], bool), np.zeros(3, bool)]
    rewards = [np.array([0.1, 0.2, 0.33]), np.array([0.1, 0.18, 0.05])]
    _, eta, _ = calibrate_termination(rewards, labels, max_early_termination=0.0)
    assert eta == 0.5  # nothing stops the failure, and the success is missed
    grid = (0.1, 0.2, 0.3, 0.4)
    _, eta, sweep = calibrate_termination(rewards, labels, max_early_termination=0.0, etas=grid)
    assert eta == 0.2 and [s["eta"] for s in sweep] == list(grid)
    assert sweep[1]["missed_rate"] == 0.0 and sweep[3]["missed_rate"] == 1.0
    for bad in ((), (0.0, 0.5), (0.5, 1.0)):
        with pytest.raises(ValueError, match="etas must be in"):
            calibrate_termination(rewards, labels, max_early_termination=0.0, etas=bad)
    # a success that looks done (0.25) a frame before it is: a false stop at eta 0.2 too
    early = [np.array([0.1, 0.25, 0.33]), rewards[1]]
    _, eta, sweep = calibrate_termination(early, labels, max_early_termination=0.0, etas=grid)
    assert eta == 0.2  # early termination counts failures only
    _, eta, sweep = calibrate_termination(
        early, labels, max_early_termination=0.0, etas=grid, bound="false_stop"
    )
    assert eta == 0.3 and [s["false_stop_rate"] for s in sweep] == [1.0, 0.5, 0.0, 0.0]
    assert sweep[0]["false_stop_by_group"] == {"": 1.0}
    with pytest.raises(ValueError, match="bound must be one of"):
        calibrate_termination(early, labels, max_early_termination=0.0, bound="late")


def test_calibrate_eta_holds_every_group_to_the_limit():
    # 1 success, 4 easy failures of a weak policy (never above 0.3) and 1 near miss peaking
    # at 0.72: pooled, 1 / 5 = 20% early termination at eta 0.5; the near miss's group is 100%
    labels = [np.array([0, 1], bool)] + [np.zeros(2, bool)] * 5
    rewards = [np.array([0.2, 0.99])] + [np.array([0.1, 0.3])] * 4 + [np.array([0.72, 0.1])]
    groups = ["expert"] + ["policy"] * 4 + ["noisy"]
    _, eta, _ = calibrate_termination(rewards, labels, max_early_termination=0.2)
    assert eta == 0.5  # pooled rule: 20% is within the limit
    _, eta, sweep = calibrate_termination(rewards, labels, max_early_termination=0.2, groups=groups)
    assert eta == 0.75  # the near miss's group must not be stopped
    first = sweep[0]
    assert first["early_termination_by_group"] == {"noisy": 1.0, "policy": 0.0}
    assert first["worst_group_early_termination"] == 1.0 and first["early_termination_rate"] == 0.2
    with pytest.raises(ValueError, match="groups has 2 entries"):
        calibrate_termination(rewards, labels, max_early_termination=0.2, groups=groups[:2])


def test_calibrate_termination_chooses_hold_and_eta_that_miss_the_fewest_successes():
    # per-frame rewards: a failure with a single-frame spike to 0.9 (hold 2 ignores it) and
    # one with two frames at 0.7; the success holds 0.85 for three frames
    labels = [np.array([0, 0, 1, 1, 1], bool), np.zeros(5, bool), np.zeros(5, bool)]
    frame = [
        np.array([0.1, 0.2, 0.85, 0.85, 0.85]),
        np.array([0.1, 0.9, 0.1, 0.1, 0.1]),
        np.array([0.1, 0.7, 0.7, 0.1, 0.1]),
    ]
    hold, eta, sweep = calibrate_termination(
        frame, labels, max_early_termination=0.0, holds=(1, 2, 3)
    )
    # hold 1 needs eta 0.9 and then misses the success; hold 2 stops no failure from 0.7 on,
    # hold 3 none from 0.5 on: both stop the success, the smaller hold wins
    assert (hold, eta) == (2, 0.7)
    assert {s["hold"] for s in sweep} == {1, 2, 3} and len(sweep) == 30
    plain = [s for s in sweep if s["worst_group_early_termination"] == 0.0]
    assert min(s["missed_rate"] for s in plain) == 0.0 and all(
        (s["hold"], s["eta"]) >= (2, 0.7) for s in plain if s["missed_rate"] == 0.0
    )
    # a success seen for only two frames: hold 3 misses it, so it is never chosen
    short = [np.array([0.1, 0.1, 0.1, 0.85, 0.85]), *frame[1:]]
    hold, _, _ = calibrate_termination(
        short,
        [np.array([0, 0, 0, 1, 1], bool), *labels[1:]],
        max_early_termination=0.0,
        holds=(3, 2),
    )
    assert hold == 2
    with pytest.raises(ValueError, match="holds must be >= 1"):
        calibrate_termination(frame, labels, max_early_termination=0.0, holds=(0, 2))


def test_split_holds_out_a_share_of_every_store_and_outcome():
    def ep(i: int, store: str, ok: bool) -> LabeledEpisode:
        return LabeledEpisode(
            episode_id=f"{store}-{i}",
            task_id="t",
            instruction="t",
            source="s",
            images=torch.zeros(2, 4, 4, 3, dtype=torch.uint8),
            labels=np.array([0, ok], bool),
            store=store,
        )

    episodes = (
        [ep(i, "a", True) for i in range(20)]
        + [ep(i, "a", False) for i in range(10)]
        + [ep(i, "b", False) for i in range(40)]
    )
    train, val = split_episodes(episodes, 0.1, seed=0)
    kinds = sorted((e.store, e.succeeded) for e in val)
    assert kinds == [("a", False)] + [("a", True)] * 2 + [("b", False)] * 4
    assert {e.episode_id for e in train} | {e.episode_id for e in val} == {
        e.episode_id for e in episodes
    }
    assert not {e.episode_id for e in train} & {e.episode_id for e in val}


def test_training_stores_the_calibrated_eta(trained):
    out, summary = trained
    cal = summary["eta_calibration"]
    assert cal is not None and cal["failed_episodes"] > 0
    assert (read_config(out / "best").eta, read_config(out / "best").hold) == (
        cal["eta"],
        cal["hold"],
    )
    assert read_state(out / "best")["eta_calibration"]["eta"] == cal["eta"]
    chosen = next(s for s in cal["sweep"] if (s["eta"], s["hold"]) == (cal["eta"], cal["hold"]))
    assert chosen["early_termination_rate"] <= 0.05 or all(
        s["early_termination_rate"] >= chosen["early_termination_rate"] for s in cal["sweep"]
    )
    # rollouts take the checkpoint's eta unless the config sets one
    assert termination_eta(None, str(out / "best")) == cal["eta"]
    assert termination_eta(0.7, str(out / "best")) == 0.7
    assert termination_eta(None, "fake") == ReflectorModelConfig().eta


def test_frame_auc_ranks_the_reward_before_the_hold_rule():
    # a perfect per-frame reward; after hold 2 the first success frame takes the failure
    # frame's value before it, so R ranks one success frame below a failure frame
    labels = [np.array([0, 0, 1, 1], bool), np.zeros(3, bool)]
    frame = [np.array([0.1, 0.4, 0.9, 0.95]), np.array([0.45, 0.45, 0.2])]
    held = [hold_min(torch.from_numpy(r), 2).numpy() for r in frame]
    m = reflector_metrics(held, labels, eta=0.5, frame_rewards=frame)
    assert m["frame_roc_auc"] == 1.0 and m["roc_auc"] < 1.0
    assert m["early_termination_rate"] == 0.0 and m["timing_error_mean_signed"] == 1.0
    assert reflector_metrics(held, labels, eta=0.5)["frame_roc_auc"] is None


def test_cli_train_and_eval(stores, tmp_path, capsys):
    from cluster.cli import main

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "reflector:\n  model:\n    window: 4\n  train:\n    batch_episodes: 4\n"
        "    rows_per_episode: 2\n    eval_every: 5\n"
    )
    out = tmp_path / "run"
    rc = main(
        [
            "train-reflector",
            "--config",
            str(cfg),
            "--data",
            str(stores[0]),
            "--out",
            str(out),
            "--max-steps",
            "6",
            "--no-progress",
            "--set",
            "reflector.train.lr=0.003",
            "--calibrate-on",
            str(stores[1]),
        ]
    )
    assert rc == 0
    assert (out / "best" / "trainable.safetensors").is_file() and (
        out / "last" / "config.yaml"
    ).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["lr"] == 0.003 and summary["model"]["window"] == 4
    cal = summary["eta_calibration"]  # the validation split and the calibration store, by store
    assert summary["calibration_data"] == [str(stores[1])] and str(stores[1]) in cal["stores"]
    assert (read_config(out / "best").hold, read_config(out / "best").eta) == (
        cal["hold"],
        cal["eta"],
    )
    rc = main(
        [
            "eval-reflector",
            "--ckpt",
            str(out / "best"),
            "--data",
            str(stores[1]),
            "--out",
            str(tmp_path / "ev"),
            "--no-progress",
            "--plot-episodes",
            "2",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in (
        "roc_auc",
        "frame_roc_auc",
        "frame_accuracy",
        "early_termination_rate",
        "timing_error_mean_abs",
    ):
        assert key in report
    assert report["mismatch_false_success"]["pairs"] == sum(
        e.succeeded for e in load_labeled_episodes([stores[1]], progress=False)
    )
    assert report["episodes"] == 12 and (tmp_path / "ev" / "rewards.png").stat().st_size > 1000


def test_cli_bad_input(stores, tmp_path, capsys):
    from cluster.cli import main

    rc = main(["eval-reflector", "--ckpt", str(tmp_path / "none"), "--data", str(stores[1])])
    assert rc == 2 and "checkpoint" in capsys.readouterr().err
    rc = main(["train-reflector", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(
        [
            "train-reflector",
            "--data",
            str(stores[0]),
            "--out",
            str(tmp_path / "o"),
            "--calibrate-on",
            str(tmp_path / "none"),
        ]
    )
    assert rc == 2 and "--calibrate-on" in capsys.readouterr().err
    rc = main(
        [
            "train-reflector",
            "--data",
            str(stores[0]),
            "--out",
            str(tmp_path / "o"),
            "--calibrate-on",
            str(stores[0]),
        ]
    )
    assert rc == 2 and "must not repeat --data" in capsys.readouterr().err
    rc = main(
        [
            "train-reflector",
            "--data",
            str(stores[0]),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "reflector.model.window=1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "window" in err
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "summary.json").write_text("{}")  # a user's earlier run
    rc = main(["train-reflector", "--data", str(stores[0]), "--out", str(tmp_path / "kept")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pass --overwrite" in err
    assert [f.name for f in (tmp_path / "kept").iterdir()] == ["summary.json"]


def test_sample_rows_keeps_last_row_and_is_unbiased():
    from reflector_service.context import chains
    from reflector_service.train import sample_rows

    rows = chains(30, 4)
    rng = np.random.default_rng(0)
    total = torch.zeros(30)
    for _ in range(4000):
        picked, w = sample_rows(rows, 30, 3, rng)
        assert picked[-1] is rows[-1] and len(picked) == 3 and w[-1] == 1.0
        total += w
    torch.testing.assert_close(total / 4000, torch.ones(30), atol=0.25, rtol=0)  # E[w] = 1


def test_sample_rows_always_takes_focus_rows():
    from reflector_service.context import chains
    from reflector_service.train import sample_rows

    rows = chains(40, 4)
    rng = np.random.default_rng(1)
    for _ in range(50):
        picked, w = sample_rows(rows, 40, 6, rng, focus=[20, 21])
        assert len(picked) == 6 and picked[-1] is rows[-1]
        assert w[20] == 1.0 and w[21] == 1.0  # the focus prefixes, unweighted
        assert int((w > 0).sum()) >= 6


def test_batch_sampler_oversamples_successful_episodes(stores):
    from reflector_service.train import BatchSampler

    eps = load_labeled_episodes([stores[0]], progress=False)
    eps = [e for e in eps if e.succeeded][:3] + [e for e in eps if not e.succeeded]  # 3 vs 12
    draw = BatchSampler(eps, 8, 0.5, np.random.default_rng(0))
    for _ in range(10):
        batch = draw()
        assert len(batch) == 8 and sum(eps[i].succeeded for i in batch) == 4
    natural = BatchSampler(eps, 5, 0.0, np.random.default_rng(0))
    assert sorted(natural() + natural() + natural()) == list(range(15))  # one shuffled epoch


def test_new_train_fields_are_validated():
    from core.configlib import ConfigError

    with pytest.raises((ConfigError, ValueError), match="success_fraction"):
        ReflectorTrainConfig(success_fraction=1.0)
    with pytest.raises((ConfigError, ValueError), match="focus_margin"):
        ReflectorTrainConfig(focus_margin=-1)
    with pytest.raises((ConfigError, ValueError), match="adapter_pool"):
        ReflectorModelConfig(adapter_pool="sum")


def test_mismatched_instructions_are_learned_as_not_done(trained, stores):
    """Training pairs successful expert episodes with the other task's instruction (success
    frames labeled 0): the trained reward says "done" for the own instruction, not the other."""
    from reflector_service.mismatch import MismatchSampler, mismatch_false_success

    episodes = load_labeled_episodes([stores[0]], progress=False)
    draw = MismatchSampler(episodes, 3, np.random.default_rng(0))
    picked = draw()
    assert len(picked) == 3
    for i, instruction, mask in picked:
        e = episodes[i]
        assert e.source == "expert" and e.succeeded and instruction != e.instruction
        assert np.array_equal(mask, e.labels)
    assert MismatchSampler(episodes, 0, np.random.default_rng(0)).pool == []
    # the step's own successful expert episodes come first: the same frames under both instructions
    batch = [i for i, e in enumerate(episodes) if e.succeeded][:2] + [
        i for i, e in enumerate(episodes) if not e.succeeded
    ][:2]
    assert [i for i, _, _ in draw(batch)][:2] == batch[:2]

    out, summary = trained
    last = summary["history"][-1]
    assert last["mismatch_false_success"] is not None and last["instruction_auc"] >= 0.8
    model = load_reflector(out / "best")
    test = load_labeled_episodes([stores[1]], progress=False)
    wrong = mismatch_false_success(model, test, score_episodes(model, test), eta=0.5)
    assert wrong["pairs"] == sum(e.succeeded for e in test) and wrong["rate"] <= 0.2
    assert wrong["instruction_auc"] >= 0.8
    own = score_episodes(model, [e for e in test if e.succeeded])
    assert (
        np.mean(
            [
                (r[e.labels] > 0.5).any()
                for r, e in zip(own, [e for e in test if e.succeeded], strict=True)
            ]
        )
        >= 0.8
    )
