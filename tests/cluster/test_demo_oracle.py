"""The demo's oracle row runs its own recipe (``demo.real_env_set``) on top of the experiment,
with the anchor on the run's demos; the imagination row keeps the experiment's; the control
row follows the oracle's optimizer steps and is skipped when there were none."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config
from cluster.demo import DemoRun, oracle_config, sft_control

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def test_the_oracle_row_gets_its_recipe_and_the_runs_demos_as_anchor(tmp_path):
    cfg = load_config(CONFIG)
    oracle = oracle_config(cfg, tmp_path / "data" / "demos")
    assert oracle.learner.objective == "filtered_l1" and oracle.rollout.explore == "one_step"
    assert oracle.learner.anchor_weight == 1
    assert oracle.learner.anchor_data == [str(tmp_path / "data" / "demos")]
    assert oracle.learner.anchor_demos_per_task == cfg.demo.sft_demos_per_task
    assert oracle.post_train.world == "real" and oracle.post_train.coevolve_every == 0
    assert oracle.post_train.iterations == 2 and oracle.rollout.groups_per_worker == 256
    # the imagination row keeps the experiment's own LOOP and budget
    assert cfg.learner.objective == "ppo" and cfg.learner.anchor_weight == 0
    assert cfg.post_train.iterations == 20 and cfg.post_train.coevolve_every == 10


def test_an_empty_recipe_is_the_same_loop_in_the_real_env(tmp_path):
    cfg = load_config(CONFIG, ["demo.real_env_set=[]"])
    oracle = oracle_config(cfg, tmp_path)
    assert dataclasses.replace(oracle.learner, anchor_data=[]) == cfg.learner
    assert oracle.rollout == cfg.rollout and oracle.post_train.iterations == 20


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("learner.objective=nope", "learner.objective must be one of"),
        ("learner.nokey=1", "unknown key 'learner.nokey' in demo.real_env_set"),
    ],
)
def test_a_bad_recipe_names_the_key_and_where_it_came_from(tmp_path, override, names):
    cfg = load_config(CONFIG, [f"demo.real_env_set=[{override}]"])
    with pytest.raises(ConfigError, match=names):
        oracle_config(cfg, tmp_path)


def test_real_env_set_holds_key_value_strings():
    with pytest.raises(ConfigError, match="demo.real_env_set holds KEY=VALUE strings"):
        load_config(CONFIG, ["demo.real_env_set=[iterations]"])


def test_the_control_is_skipped_when_the_oracle_took_no_optimizer_step(tmp_path):
    cfg = load_config(CONFIG, [f"demo.run_dir={tmp_path / 'run'}"])
    run = DemoRun(cfg, progress=False, log=print)
    run.results["post_train_real"] = {"policy": str(tmp_path / "policy")}
    (run.run / "post_train_real").mkdir(parents=True)
    rows = [{"iteration": 0}, {"iteration": 1, "learner/optimizer_steps": 0.0}]
    (run.run / "post_train_real" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    assert sft_control(run)["skipped"] is True
    assert not (run.ckpt / "sft_control").exists()
    # and when the oracle row did not run at all
    run.results["post_train_real"] = {"skipped": True}
    assert sft_control(run) == {"skipped": True}
