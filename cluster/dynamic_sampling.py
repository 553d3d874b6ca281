"""Dynamic sampling (RIPT-VLA): keep drawing fresh groups until K of them hold mixed rewards.

A group whose N rewards are all equal (all solved, all failed) has zero advantage and teaches
nothing, so an iteration that trains only on the groups of one round may train on very few.
``collect_until_mixed`` runs rounds of groups until ``k`` groups with rewards that are not all
equal are in (or ``max_rounds`` rounds ran) and picks exactly ``k`` of them (fewer only when
the cap was hit). Plain Python: the driver passes a function that runs one round on its
rollout workers.
"""

from __future__ import annotations

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


def collect_until_mixed(
    run_round: Callable[[int], list[tuple[Any, dict[str, Any]]]], *, k: int, max_rounds: int
) -> Collected:
    """Run rounds until ``k`` mixed groups are in, or ``max_rounds`` rounds ran.

    Args:
        run_round: (round index from 1) -> one (item, summary) per rollout worker, where the
            summary holds "group_ids" and "rewards" (N per group, in order) and the item is
            whatever the caller keeps (the learner batch's reference).
        k: mixed groups wanted (0: one round, no selection).
        max_rounds: the cap on rounds.
    Returns:
        the collection; ``groups`` holds the first ``k`` mixed group ids in collection order
        (sorted), fewer when the cap was hit.
    """
    items, summaries, mixed, rounds = [], [], [], 0
    while True:
        rounds += 1
        for item, summary in run_round(rounds):
            items.append(item)
            summaries.append(summary)
            mixed += mixed_groups_of(summary)
        if k == 0 or len(mixed) >= k or rounds >= max_rounds:
            break
    groups = sorted(mixed[:k]) if k else None
    return Collected(items, summaries, groups, rounds, len(mixed))
