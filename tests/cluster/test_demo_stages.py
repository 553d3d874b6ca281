"""A demo stage records its wall time, the figure the log prints, even when its body reports
a "seconds" of its own (the report's stage times once said 2 s where the log said 8 s)."""

from __future__ import annotations

import dataclasses
import json
import time

from cluster.config import DemoConfig, ExperimentConfig
from cluster.demo import DemoRun


def test_a_stage_records_its_own_wall_time_and_skips_when_finished(tmp_path):
    cfg = ExperimentConfig(name="t")
    cfg = dataclasses.replace(cfg, demo=DemoConfig(run_dir=str(tmp_path / "{name}")))
    lines: list[str] = []
    run = DemoRun(cfg, progress=False, log=lines.append)

    def body(d):
        time.sleep(0.3)
        return {"seconds": 0.01, "steps": 5}  # e.g. a trainer's own clock

    rec = run.stage("train", body)
    assert rec["seconds"] >= 0.3 and rec["body_seconds"] == 0.01 and rec["steps"] == 5
    assert lines[-1] == f"[demo] train done in {rec['seconds']:.0f} s"
    stored = json.loads((tmp_path / "t" / "stages" / "train.json").read_text())
    assert stored["seconds"] == rec["seconds"]
    again = DemoRun(cfg, progress=False, log=lines.append).stage("train", body)
    assert again == stored and lines[-1] == "[demo] train: finished earlier, skipped"


def test_a_stage_that_fails_beside_another_is_named_and_leaves_no_record(tmp_path):
    """``side_by_side``: the main stage runs here on one thread (the thread count restored
    after), the other in its own process; its failure there is one error naming it, and no
    record, so a rerun retries it."""
    import os

    import pytest
    import torch

    from cluster.demo import reflector

    cfg = ExperimentConfig(name="t")
    cfg = dataclasses.replace(cfg, demo=DemoConfig(run_dir=str(tmp_path / "{name}")))
    run = DemoRun(cfg, progress=False, log=lambda line: None)
    threads = torch.get_num_threads()

    def main(d):
        return {"pid": os.getpid(), "threads": torch.get_num_threads()}

    # the reflector finds no episode stores in this empty run
    with pytest.raises(RuntimeError, match="demo stage reflector failed in its own process"):
        run.side_by_side(("main", main), ("reflector", reflector))
    assert torch.get_num_threads() == threads
    rec = json.loads((tmp_path / "t" / "stages" / "main.json").read_text())
    assert rec["pid"] == os.getpid() and rec["threads"] == 1
    assert not run.finished("reflector")
