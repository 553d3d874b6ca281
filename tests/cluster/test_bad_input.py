"""Bad files at the boundaries get one line naming the file: broken policy weights, a pickle in a
run checkpoint (refused, never executed), a YAML syntax error."""

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
