"""Dynamic sampling: rounds of fresh groups until exactly K have mixed rewards, or the cap."""

from __future__ import annotations

import numpy as np

from cluster.dynamic_sampling import collect_until_mixed, mixed_groups_of


def rounds_of(rewards_per_round: list[list[list[float]]]):
    """A fake round runner: round r gives one worker summary whose groups hold the given
    rewards (group ids numbered on across rounds)."""
    calls = []
    next_id = [0]

    def run_round(r: int):
        calls.append(r)
        groups = rewards_per_round[r - 1]
        ids = list(range(next_id[0], next_id[0] + len(groups)))
        next_id[0] += len(groups)
        summary = {"group_ids": ids, "rewards": np.array(groups, dtype=np.float32).reshape(-1)}
        return [(f"batch-{r}", summary)]

    return run_round, calls


MIXED, SOLVED, FAILED = [1.0, 0.0, 1.0, 0.0], [1.0] * 4, [0.0] * 4


def test_rounds_run_until_exactly_k_mixed_groups() -> None:
    run, calls = rounds_of(
        [[FAILED, MIXED, SOLVED], [MIXED, FAILED, FAILED], [MIXED, MIXED, MIXED]]
    )
    c = collect_until_mixed(run, k=3, max_rounds=5)
    assert calls == [1, 2, 3] and c.rounds == 3
    assert c.groups == [1, 3, 6]  # the first three mixed groups, not all five found
    assert c.mixed == 5 and c.items == ["batch-1", "batch-2", "batch-3"]


def test_the_cap_stops_with_what_was_collected() -> None:
    run, calls = rounds_of([[FAILED, SOLVED], [MIXED, FAILED], [FAILED, FAILED]] + [[MIXED]] * 5)
    c = collect_until_mixed(run, k=4, max_rounds=3)
    assert calls == [1, 2, 3] and c.groups == [2] and c.mixed == 1


def test_without_dynamic_sampling_one_round_and_no_selection() -> None:
    run, calls = rounds_of([[FAILED, SOLVED, MIXED], [MIXED]])
    c = collect_until_mixed(run, k=0, max_rounds=4)
    assert calls == [1] and c.groups is None and c.mixed == 1


def test_a_nan_reward_counts_as_mixed_so_the_learner_sees_it() -> None:
    summary = {"group_ids": [7, 8], "rewards": np.array([0.0, np.nan, 0.0, 0.0, 1, 1, 1, 1])}
    assert mixed_groups_of(summary) == [7]
