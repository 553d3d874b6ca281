"""Dynamic sampling: rounds of fresh groups until exactly K have mixed rewards, or the cap."""

from __future__ import annotations

import numpy as np

from cluster.dynamic_sampling import collect_until_mixed, mixed_groups_of, next_round_size


def rounds_of(rewards_per_round: list[list[list[float]]]):
    """A fake round runner: round r gives one worker summary whose groups hold the given
    rewards (group ids numbered on across rounds); ``calls`` records each round's index, and
    ``sizes`` the groups per worker it was asked for."""
    calls, sizes = [], []
    next_id = [0]

    def run_round(r: int, per_worker: int):
        calls.append(r)
        sizes.append(per_worker)
        groups = rewards_per_round[r - 1]
        ids = list(range(next_id[0], next_id[0] + len(groups)))
        next_id[0] += len(groups)
        summary = {"group_ids": ids, "rewards": np.array(groups, dtype=np.float32).reshape(-1)}
        return [(f"batch-{r}", summary)]

    run_round.sizes = sizes
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


def test_later_rounds_draw_what_the_missing_groups_need() -> None:
    # 1 mixed of 4 drawn, 5 wanted: 4 missing at a share of 1/4 -> 16 groups over 2 workers
    assert next_round_size(k=5, mixed=1, drawn=4, workers=2, per_worker=2, max_per_worker=20) == 8
    assert next_round_size(k=5, mixed=1, drawn=4, workers=2, per_worker=2, max_per_worker=6) == 6
    # no mixed group yet: counted as one, so the round still grows; never below per_worker
    assert next_round_size(k=2, mixed=0, drawn=4, workers=1, per_worker=2, max_per_worker=8) == 8
    assert next_round_size(k=3, mixed=2, drawn=4, workers=2, per_worker=2, max_per_worker=8) == 2
    assert next_round_size(k=3, mixed=0, drawn=0, workers=2, per_worker=2, max_per_worker=8) == 2
    run, calls = rounds_of([[FAILED, MIXED, SOLVED, FAILED], [MIXED] * 6, [MIXED] * 6])
    c = collect_until_mixed(run, k=4, max_rounds=5, workers=1, per_worker=4, max_per_worker=16)
    assert run.sizes == [4, 12] and calls == [1, 2]  # 3 missing at a share of 1/4
    assert c.groups == [1, 4, 5, 6] and c.rounds == 2
    run, _ = rounds_of([[FAILED, MIXED], [MIXED, FAILED], [MIXED, MIXED]])
    collect_until_mixed(run, k=3, max_rounds=5, workers=1, per_worker=2)  # no growth
    assert run.sizes == [2, 2, 2]
