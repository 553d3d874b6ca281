"""Bad input at the boundaries gets one line naming the thing: a table over every CLI command,
broken policy weights, a pickle in a run checkpoint (refused, never executed), a YAML syntax
error."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from cluster.checkpoints import load_run_checkpoint, save_run_checkpoint
from cluster.cli import main
from policy.checkpoint import build_policy, load_policy, save_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics

# (command line with OUT for a fresh output path and EXIST for a non-empty folder, what the one
# line must name); every command of the CLI is in the table
TABLE = [
    ("collect --source expert --episodes-per-task 0 --out OUT", "--episodes-per-task"),
    ("collect --source expert --set env.imgae_size=3 --out OUT", "did you mean 'image_size'"),
    ("sft --data nope --out OUT", "episode store nope does not exist"),
    ("sft --data nope --out EXIST", "EXIST exists and is not empty"),
    ("train-simulator --data nope --out OUT", "--data nope does not exist"),
    ("train-reflector --data nope --out OUT", "--data nope does not exist"),
    ("eval-simulator --checkpoint nope --data nope --out OUT", "--data nope does not exist"),
    ("eval-reflector --ckpt nope --data nope --out OUT", "reflector checkpoint nope"),
    ("eval-search --policy nope --data nope --out OUT", "post_train.simulator is empty"),
    ("imagine-replays --simulator nope --data nope --out OUT", "--simulator nope does not exist"),
    ("evaluate --policy nope --out OUT", "policy checkpoint nope"),
    ("evaluate --policy nope --config nope.yaml", "config file nope.yaml does not exist"),
    ("post-train --world real --policy nope --run-dir OUT", "policy checkpoint nope"),
    ("post-train --world real --set learner.lr_lora=inf --run-dir OUT", "learner.lr_lora"),
    (
        "post-train --world real --set post_train.eta_calibration_data=[x] --run-dir OUT",
        "eta_calibration_data chooses the reflector's threshold for imagined frames",
    ),
    (  # the flags are validated together with --set: this one needs the flag's world
        "post-train --world real --set post_train.real_reward=progress --policy nope --run-dir OUT",
        "policy checkpoint nope",
    ),
    ("import-libero --hdf5 nope.hdf5 --out OUT", "LIBERO demo file nope.hdf5"),
    ("demo --quick --set rollout.group_size=0 --run-dir OUT", "rollout.group_size must be >= 2"),
    (  # the oracle row's own overrides are checked before any stage runs
        "demo --quick --set demo.real_env_set=[learner.objective=nope] --run-dir OUT",
        "learner.objective must be one of",
    ),
    ("config show --set bogus.key=1", "unknown key 'bogus'"),
    ("pretrain --set pretrain.val_scenes=0 --out OUT", "pretrain.val_scenes must be in"),
    ("pretrain --set env.name=libero --out OUT", "pretrain generates tabletop scenes"),
    ("export --policy nope --out OUT", "policy checkpoint nope does not exist"),
    ("export --policy nope --out EXIST", "EXIST exists and is not empty"),
    ("dashboard --session nope", "Ray session nope does not exist"),
]


def test_the_bad_input_table_covers_every_command() -> None:
    from cluster.cli import _command_modules

    assert {line.split()[0] for line, _ in TABLE} == set(_command_modules())


@pytest.mark.parametrize(("line", "names"), TABLE, ids=[t[0].split()[0] for t in TABLE])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, line, names):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EXIST").mkdir()
    (tmp_path / "EXIST" / "keep.txt").write_text("data")
    assert main(line.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names in err[0], err
    assert not (tmp_path / "OUT").exists()  # nothing partial left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EXIST"]
    assert [p.name for p in (tmp_path / "EXIST").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_broken_policy_weights_are_one_line_naming_the_file(tmp_path, capsys, damage) -> None:
    rng = np.random.default_rng(0)
    stats = compute_statistics(
        rng.uniform(-1, 1, (64, 7)).astype(np.float32), rng.normal(size=(64, 8)), num_trajectories=2
    )
    save_policy(
        build_policy(PolicyConfig(chunk=2), instructions=["lift it"], stats=stats), tmp_path / "p"
    )
    f = tmp_path / "p" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="model.safetensors are not a readable safetensors"):
        load_policy(tmp_path / "p")
    rc = main(
        ["evaluate", "--policy", str(tmp_path / "p"), "--episodes-per-task", "1", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(f) in err


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/rehearse-test-should-not-exist", "w"))


def test_a_pickle_in_a_run_checkpoint_is_refused_and_never_run(tmp_path) -> None:
    folder = save_run_checkpoint(
        tmp_path, 1, {"trainable": {"w": torch.zeros(2)}, "learner": {"version": 1}}, {"x": 1}
    )
    target = "/tmp/rehearse-test-should-not-exist"
    with open(folder / "learner_state.pt", "wb") as fh:
        pickle.dump({"version": _Boom()}, fh)
    with pytest.raises(ValueError, match="learner_state.pt is refused") as e:
        load_run_checkpoint(folder)
    assert "\n" not in str(e.value)
    import os

    assert not os.path.exists(target)
    assert json.loads((folder / "driver_state.json").read_text())["iteration"] == 1


def test_a_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("env:\n  image_size: [1, 2\nname: x\n")
    rc = main(["collect", "--source", "expert", "--config", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "line 3, column 5" in err and str(cfg) in err
