"""The demo report's training-rollout line: halves of the run, not two single iterations."""

from __future__ import annotations

from cluster.report import _imagined_lines


def test_training_reward_line_averages_each_half():
    line = _imagined_lines({}, [0.0, 0.2, 0.4, 0.0, 0.3])[0]
    assert "0.100 over the first 2 iterations, 0.150 over the last 2" in line
    assert "(per iteration 0.000-0.400)" in line
    one = _imagined_lines({}, [0.5])[0]
    assert "0.500 over the first 1 iterations, 0.500 over the last 1" in one
