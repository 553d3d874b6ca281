"""Dynamic sampling (RIPT-VLA): keep drawing fresh groups until K of them hold mixed rewards.

A group whose N rewards are all equal (all solved, all failed) has zero advantage and teaches
nothing, so an iteration that trains only on the groups of one round may train on very few.
``collect_until_mixed`` runs rounds of groups until ``k`` groups with rewards that are not all
equal are in (or ``max_rounds`` rounds ran) and picks exactly ``k`` of them (fewer only when
the cap was hit). A round after the first draws as many groups as the missing mixed groups need
at the share of mixed groups seen so far (``next_round_size``), so the groups of what would be
several small rounds step together in one batch. Plain Python: the driver passes a function
that runs one round on its rollout workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from learner.loop import nonconstant_group_mask


def mixed_groups_of(summary: dict[str, Any]) -> list[int]:
    """The group ids of a worker's summary whose rewards are not all equal (a NaN counts as
    mixed, as in the learner, so that the update sees it and skips)."""
    ids = summary["group_ids"]
    rewards = torch.as_tensor(np.array(summary["rewards"], dtype=np.float64)).reshape(len(ids), -1)
    return [gid for gid, m in zip(ids, nonconstant_group_mask(rewards).tolist(), strict=True) if m]


@dataclass
class Collected:
    """What the rounds collected: every round's items and summaries (in order), the group
    ids chosen to train on (None: no dynamic sampling, the learner's own rule), the rounds
    run and how many mixed groups were found."""

    items: list[Any]
    summaries: list[dict[str, Any]]
    groups: list[int] | None
    rounds: int
    mixed: int


def next_round_size(
    *, k: int, mixed: int, drawn: int, workers: int, per_worker: int, max_per_worker: int
) -> int:
    """Groups per worker of the next round.

    The first round (nothing drawn yet) draws ``per_worker``. A later one draws what the
    ``k - mixed`` missing mixed groups need at the share of mixed groups among the ``drawn``
    ones (counting at least one, so that after rounds without any the next still grows),
    spread over the workers and rounded up, between ``per_worker`` and ``max_per_worker``.
    """
    if drawn == 0:
        return per_worker
    share = max(mixed, 1) / drawn
    need = math.ceil((k - mixed) / share)  # groups
    return min(max(math.ceil(need / workers), per_worker), max_per_worker)


def collect_until_mixed(
    run_round: Callable[[int, int], list[tuple[Any, dict[str, Any]]]],
    *,
    k: int,
    max_rounds: int,
    workers: int = 1,
    per_worker: int = 1,
    max_per_worker: int | None = None,
) -> Collected:
    """Run rounds until ``k`` mixed groups are in, or ``max_rounds`` rounds ran.

    Args:
        run_round: (round index from 1, groups per worker) -> one (item, summary) per rollout
            worker, where the summary holds "group_ids" and "rewards" (N per group, in order)
            and the item is whatever the caller keeps (the learner batch's reference).
        k: mixed groups wanted (0: one round, no selection).
        max_rounds: the cap on rounds.
        workers: rollout workers a round runs on.
        per_worker: groups per worker of the first round, and the fewest of any round.
        max_per_worker: the most groups per worker of a later round (``next_round_size``);
            None: ``per_worker``, every round the same size.
    Returns:
        the collection; ``groups`` holds the first ``k`` mixed group ids in collection order
        (sorted), fewer when the cap was hit.
    """
    cap = per_worker if max_per_worker is None else max(max_per_worker, per_worker)
    items, summaries, mixed, rounds, drawn = [], [], [], 0, 0
    while True:
        rounds += 1
        size = next_round_size(
            k=k,
            mixed=len(mixed),
            drawn=drawn,
            workers=workers,
            per_worker=per_worker,
            max_per_worker=cap,
        )
        for item, summary in run_round(rounds, size):
            items.append(item)
            summaries.append(summary)
            drawn += len(summary["group_ids"])
            mixed += mixed_groups_of(summary)
        if k == 0 or len(mixed) >= k or rounds >= max_rounds:
            break
    groups = sorted(mixed[:k]) if k else None
    return Collected(items, summaries, groups, rounds, len(mixed))
