"""Instruction counterfactuals: does the reward read the instruction?

A successful expert episode of one task, paired with another task's instruction, shows a
finished task that is not the one asked for: its success frames are failures under that
instruction (assuming, as in the tabletop tasks and LIBERO's suites, that when an expert
finishes one task no other task is done). Training uses such pairs as negatives
(``MismatchSampler``); validation and ``rehearse eval-reflector`` measure with them
(``mismatch_false_success``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from reflector_service.episodes import LabeledEpisode, score_episodes
from reflector_service.metrics import roc_auc
from reflector_service.model import Reflector


def _tasks(episodes: Sequence[LabeledEpisode]) -> list[tuple[str, str]]:
    """The (task, instruction) pairs present, sorted."""
    return sorted({(e.task_id, e.instruction) for e in episodes})


def _reference(e: LabeledEpisode) -> bool:
    """Episodes whose success frames are known failures under other instructions."""
    return e.source == "expert" and e.succeeded


def _others(tasks: list[tuple[str, str]], e: LabeledEpisode) -> list[str]:
    """Instructions of the other tasks, in ``tasks`` order."""
    return [ins for t, ins in tasks if t != e.task_id and ins != e.instruction]


class MismatchSampler:
    """Successful expert episodes paired with another task's instruction, ``n`` per call.

    The episodes are taken first from the step's own batch, so the same frames appear under
    both instructions with opposite labels (the difference the reward must learn), then drawn
    at random. Returns (episode index, instruction, mask) triples: the mask (T,) bool marks the
    frames whose label under the other instruction is known (0): the own task's success frames.
    """

    def __init__(self, episodes: Sequence[LabeledEpisode], n: int, rng: np.random.Generator):
        self.tasks = _tasks(episodes)
        several = len({t for t, _ in self.tasks}) > 1
        self.pool = [i for i, e in enumerate(episodes) if n and several and _reference(e)]
        self.members = set(self.pool)
        self.episodes, self.n, self.rng = episodes, n, rng

    def __call__(self, batch: Sequence[int] = ()) -> list[tuple[int, str, np.ndarray]]:
        if not self.pool:
            return []
        picked = [i for i in batch if i in self.members][: self.n]
        rest = [i for i in self.pool if i not in picked]
        picked += [
            rest[int(j)]
            for j in self.rng.choice(len(rest), min(self.n - len(picked), len(rest)), replace=False)
        ]
        out = []
        for i in picked:
            e = self.episodes[i]
            others = _others(self.tasks, e)
            out.append((i, others[int(self.rng.integers(len(others)))], e.labels))
        return out


def mismatch_false_success(
    model: Reflector,
    episodes: Sequence[LabeledEpisode],
    rewards: Sequence[np.ndarray],
    *,
    eta: float,
    per_episode: int = 0,
) -> dict | None:
    """Does R read the instruction? Successful expert episodes scored with other tasks'
    instructions: how often R crosses eta on their success frames (it should say "not this
    task"), and the ROC AUC of the success frames under the own instruction (positives) against
    the same frames under the others (negatives).

    Args:
        rewards: R of ``episodes`` under their own instructions (``score_episodes``), aligned.
        per_episode: other instructions tried per episode (0: all; else the next ones in order).
    Returns:
        {"rate", "instruction_auc", "pairs", "by_task": {task: rate}}, or None without
        successful expert episodes of two or more tasks.
    """
    tasks = _tasks(episodes)
    if len({t for t, _ in tasks}) < 2:
        return None
    own = [(e, r) for e, r in zip(episodes, rewards, strict=True) if _reference(e)]
    copies: list[LabeledEpisode] = []
    for e, _ in own:
        others = _others(tasks, e)
        if per_episode:
            k = tasks.index((e.task_id, e.instruction))
            others = [others[(k + j) % len(others)] for j in range(min(per_episode, len(others)))]
        copies += [dataclasses.replace(e, instruction=ins) for ins in others]
    if not copies:
        return None
    pos = np.concatenate([r[e.labels] for e, r in own])
    scores = score_episodes(model, copies)
    neg = np.concatenate([r[c.labels] for r, c in zip(scores, copies, strict=True)])
    hit = [bool((r[c.labels] > eta).any()) for r, c in zip(scores, copies, strict=True)]
    by_task: dict[str, list[bool]] = {}
    for c, h in zip(copies, hit, strict=True):
        by_task.setdefault(c.task_id, []).append(h)
    return {
        "rate": float(np.mean(hit)),
        "pairs": len(hit),
        "instruction_auc": roc_auc(
            np.concatenate([pos, neg]),
            np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)]),
        ),
        "by_task": {t: float(np.mean(v)) for t, v in sorted(by_task.items())},
    }
