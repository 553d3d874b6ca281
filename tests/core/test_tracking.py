"""The trackers: TensorBoard events and an offline W&B run receive the scalars; a resumed run
drops the interrupted run's later TensorBoard events and continues the same W&B run."""

from __future__ import annotations

import pytest

from core.tracking import Trackers, check_loggers, run_id


def _tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return {
        tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


def test_tensorboard_gets_finite_numbers_and_a_resume_purges(tmp_path):
    with Trackers(tmp_path, ["tensorboard"], job="sft") as t:
        for step in (1, 2, 3):
            t.log(step, {"sft/l1": step / 10, "nan": float("nan"), "flag": True, "name": "x"})
    assert _tb_scalars(tmp_path) == {"sft/l1": [(1, 0.1), (2, 0.2), (3, 0.3)]}
    with Trackers(tmp_path, ["tensorboard"], job="sft", resumed_at=1) as t:
        t.log(2, {"sft/l1": 0.5})
    assert _tb_scalars(tmp_path) == {"sft/l1": [(1, 0.1), (2, 0.5)]}


def test_wandb_runs_offline_in_the_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # no account: it must not matter
    with Trackers(tmp_path, ["wandb"], job="post_train", config={"seed": 3}) as t:
        run = t._wandb
        assert run.offline and run.id == run_id(tmp_path) and run.config["seed"] == 3
        t.log(1, {"rollout/success": 0.25})
        t.log(2, {"rollout/success": 0.5, "learner/approx_kl": 0.01})
    files = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id(tmp_path)}/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"rollout/success" in data and b"learner/approx_kl" in data  # the last step too


def test_unknown_or_repeated_loggers_are_named():
    check_loggers(["tensorboard", "wandb"])
    with pytest.raises(ValueError, match=r"unknown logger\(s\) \['mlflow'\]"):
        check_loggers(["mlflow"])
    with pytest.raises(ValueError, match="names a logger twice"):
        check_loggers(["wandb", "wandb"])


def test_the_config_key_is_checked():
    from cluster.config import load_config

    assert load_config(None, []).loggers == ["tensorboard"]
    assert load_config(None, ["loggers=[wandb]"]).loggers == ["wandb"]
    with pytest.raises(ValueError, match="unknown logger"):
        load_config(None, ["loggers=[jsonl]"])
