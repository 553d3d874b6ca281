"""`rehearse demo --quick` end to end through the CLI: every stage, then resume skips them."""

from __future__ import annotations

import json

import pytest
import yaml

from cluster.cli import main
from cluster.demo import STAGES
from cluster.metrics import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_demo_quick_end_to_end_and_resume(tmp_path, ray_cluster, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--quick", "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "# rehearse demo report" in out
    for stage, _ in STAGES:
        assert (run / "stages" / f"{stage}.json").is_file(), stage
    report = json.loads((run / "stages" / "report.json").read_text())
    for policy in ("sft", "post_trained", "post_trained_real", "sft_control"):
        for mode in ("ground_truth", "sampled", "reflector"):
            r = report[policy][mode]
            assert r["episodes"] == 16 and 0.0 <= r["success_rate"] <= 1.0
            assert r["ci95"][0] <= r["success_rate"] <= r["ci95"][1]
    assert len(report["imagined_success"]) == 2
    # the reflector trained beside the world model (demo.side_by_side), counted once in the total
    assert json.loads((run / "stages" / "reflector.json").read_text())["beside"] == "simulator"
    assert "(beside simulator)" in (run / "report.md").read_text()
    # the reflector's termination rule is also calibrated on a store it never trained on
    refl = json.loads((run / "reflector" / "summary.json").read_text())
    assert refl["calibration_data"] == [str(run / "data" / "calibrate")]
    assert str(run / "data" / "calibrate") not in refl["data"]
    assert (run / "post_train" / "policy" / "llm" / "model.safetensors").is_file()
    assert (run / "post_train" / "videos" / "imagined_iter_0002.gif").is_file()
    for name in ("imagined_vs_real_before", "imagined_vs_real_after", "imagined_vs_real"):
        assert (run / "post_train" / "videos" / f"{name}.gif").is_file(), name
    assert (run / "post_train_real" / "videos" / "real_iter_0002.gif").is_file()
    # the oracle ran search and distill (demo.real_env_set), the control as many SFT steps
    oracle = yaml.safe_load((run / "post_train_real" / "config.yaml").read_text())
    assert oracle["learner"]["objective"] == "filtered_l1"
    assert oracle["learner"]["anchor_data"] == [str(run / "data" / "demos")]
    steps = [
        m["learner/optimizer_steps"]
        for m in read_metrics(run / "post_train_real")
        if "learner/optimizer_steps" in m
    ]
    control = json.loads((run / "stages" / "sft_control.json").read_text())
    assert control["cycles"] == len(steps) == 2
    assert control["steps"] == max(1, round(sum(steps) / 2))
    md = (run / "report.md").read_text()
    assert (
        "the oracle (real env)" in md
        and "the oracle against continued SFT" in md
        and "Learning curves" in md
        and "Co-evolution" in md
        and "The reflector's threshold in imagination" in md
    )
    for folder in ("post_train", "post_train_real"):  # the learning curves, drawn
        assert (run / folder / "learning_curve.png").is_file()
    rounds = json.loads((run / "post_train" / "coevolve.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1]
    # imagination's eta, chosen on the calibration store's imagined replays, then again on the
    # refined world model's; the oracle row has none
    cal = json.loads((run / "post_train" / "eta_calibration.json").read_text())["calibrations"]
    assert [c["when"] for c in cal] == ["start", "co-evolution round 1"]
    assert rounds[0]["eta"] == cal[1]["eta"]
    assert not (run / "post_train_real" / "eta_calibration.json").exists()
    assert set(report["agreement"]) == {"agreement_before", "agreement_after"}
    assert list((run / "eval" / "sft" / "videos").glob("*.gif"))
    assert (run / "report.md").read_text().startswith("# rehearse demo report")
    # a rerun resumes: every stage is skipped
    assert main(["demo", "--quick", "--run-dir", str(run), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == len(STAGES)
