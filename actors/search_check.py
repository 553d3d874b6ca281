"""Imagined one-step searches replayed in the real env: does a chunk imagination rewards do
better there too?

One-step search (``rollout.explore: one_step``) rolls a group of N out from one start with the
mean action, samples one chunk at a policy step k, and goes back to the mean action; search and
distill (``learner.objective: filtered_l1``) then imitates the chunks whose rollouts ended
above their group's others. Here each group runs twice from the same real start (the real
env's first frame starts the imagination): in imagination, then in the real env with the same
k and the imagined chunks taken at k (``act_in_chunks(replay=)``). A record per rollout says
what both worlds made of the same chunk; ``search_agreement`` sums them up, among them how much
better in the real env the chunks are that the learner would imitate, under each imagined
reward (``post_train.imagined_reward``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from actors.config import RolloutConfig
from actors.rollout import Rollout, Step, act_in_chunks
from actors.starts import EvalJob
from actors.worlds import RealGroup
from learner.loop import nonconstant_group_mask, rloo_advantages
from trajectories.initial_states import InitialState


def _explored(r: Rollout, at: np.ndarray) -> np.ndarray:
    """(N,) bool: the rollout took its chunk at ``at`` (it had not ended before)."""
    t = r.executed.shape[1]
    rows = np.arange(len(at))
    return (at < t) & r.executed[rows, np.minimum(at, t - 1)].any(-1)


BRANCHES = ("start", "real")  # where an imagined search group starts (``replay_searches``)
FRAMES = ("imagined", "real")  # whose frames the reflector judges in the search


class ReflectedRealGroup(RealGroup):
    """Real envs judged as imagination judges: ended when the reflector's R on their real
    frames passes eta (the env's success ends nothing) and rewarded with that R. A search in
    it is imagination's with a perfect world model: what the reflector alone makes of the
    chunks."""

    def step(self, actions: np.ndarray, active: np.ndarray) -> Step:
        s = super().step(actions, active)
        return Step(obs=s.obs, reward=np.asarray(self.score, dtype=np.float64), done=s.done)


class ReflectedRealWorld:
    """``ReflectedRealGroup``s on the envs of ``real`` (a ``RealWorld``), scored by the
    reflector of ``imagined`` (an ``ImaginedWorld``) at ``eta``: stands in for ``imagined`` in
    ``replay_searches``."""

    def __init__(self, real: Any, imagined: Any, eta: float):
        self.real, self.imagined, self.eta = real, imagined, eta

    def group(
        self, starts: list[EvalJob], n: int, keys: list[str], *, common_noise: bool = False
    ) -> ReflectedRealGroup:
        reflector = self.imagined.reflector_client()
        jobs = [s for s in starts for _ in range(n)]
        envs = self.real.pool.take(len(jobs))
        return ReflectedRealGroup(envs, jobs, reflector=reflector, eta=self.eta, key=keys[0])

    def succeeded(self, rewards: np.ndarray) -> np.ndarray:
        return rewards > self.eta


def _real_trunks(
    policy: Any, real: Any, jobs: list[EvalJob], keys: list[str], k: int, rollout: RolloutConfig
) -> list[InitialState]:
    """Each job's real episode under the mean action up to policy step ``k``, as an imagined
    start there: every frame so far as context (the first is the world model's reference and
    the memory bank's first frame, as in a rollout imagined from the reset) and the proprio
    state at ``k``. A trunk that ended earlier (success or limit) starts from its last frame;
    its rollouts count as not explored in the real env anyway."""
    trunk = act_in_chunks(
        policy,
        real.group(jobs, 1, keys),
        max_policy_steps=k + 1,
        execute_steps=rollout.execute_steps,
        deterministic=True,
        keep_frames=True,
    )
    at = k * rollout.execute_steps  # env steps before policy step k
    frames = trunk.frames[:, : at + 1]  # (G, at + 1, H, W, 3), ended trunks repeat their last
    if frames.shape[1] < at + 1:
        frames = np.concatenate(
            [frames, np.repeat(frames[:, -1:], at + 1 - frames.shape[1], axis=1)], axis=1
        )
    proprio = trunk.proprio[:, min(k, trunk.proprio.shape[1] - 1)]  # (G, 8)
    return [
        InitialState(
            episode_id=f"real-{j.task}-{j.seed}",
            start=at,
            task_id=j.task,
            instruction=real.describe(j)[1],
            frames=frames[i],
            proprio=proprio[i].astype(np.float32),
        )
        for i, j in enumerate(jobs)
    ]


def search_steps(groups: int, horizon: int, generator: torch.Generator) -> np.ndarray:
    """(G,) each group's step k, the generator's first draws: a search and a chunk-fidelity run
    of one seed explore the same steps."""
    return torch.randint(horizon, (groups,), generator=generator).numpy()


def _batches(at: np.ndarray, batch: int, branch: str) -> list[np.ndarray]:
    """Group indices stepped together: in order (``branch`` "start"), or of one step k each
    ("real": the imagined groups of a batch start at the same step and share the horizon)."""
    g = np.arange(len(at))
    if branch == "start":
        return [g[b : b + batch] for b in range(0, len(g), batch)]
    out = []
    for k in np.unique(at):
        same = g[at == k]
        out += [same[b : b + batch] for b in range(0, len(same), batch)]
    return out


def replay_searches(
    policy: Any,
    imagined: Any,
    real: Any,
    jobs: list[EvalJob],
    starts: list[Any],
    rollout: RolloutConfig,
    *,
    generator: torch.Generator,
    batch: int = 6,
    branch: str = "start",
    frames: str = "imagined",
) -> Iterator[list[dict[str, Any]]]:
    """One-step search groups in imagination, each replayed in the real env; yields the
    records of every ``batch`` groups (stepped as one batch in each world).

    Args:
        policy: the policy (``act_in_chunks``).
        imagined, real: an ``ImaginedWorld`` and a ``RealWorld``.
        jobs: real starts (task, seed); ``starts`` their first observations (``InitialState``,
            ``actors.starts.first_observations``), where imagination starts.
        rollout: group size, horizon, chunk execution and sampling width of the search.
        generator: draws every group's step k (all first) and the imagined chunks' noise.
        branch: "start": the whole search is imagined from the real start (the mean action's
            steps before k too); "real": the steps before k are the real env's (its mean-action
            episode, the same trunk the replay takes) and imagination starts at step k, with
            the horizon's remaining steps: what imagination's search is worth where the world
            model only imagines the branches (WoVR's starts from real keyframes, at every k).
        frames: "imagined": the world model's; "real": the search runs in the real env too,
            judged by ``imagined``'s reflector at its eta on the real frames (a perfect world
            model: ``ReflectedRealWorld``; with ``branch`` "start" only).
    Yields:
        per rollout, in the order of ``jobs`` within each yielded batch: task, seed, group
        (index in ``jobs``), k, imagined_reward (the reflector's R at the end),
        imagined_success (R > eta), real_success, explored (the chunk at k was taken in both
        worlds).
    """
    if len(jobs) != len(starts):
        raise ValueError(f"{len(jobs)} real starts for {len(starts)} initial states")
    if branch not in BRANCHES:
        raise ValueError(f"search branch must be one of {list(BRANCHES)}, got {branch!r}")
    if frames not in FRAMES:
        raise ValueError(f"search frames must be one of {list(FRAMES)}, got {frames!r}")
    if frames == "real":
        if branch != "start":
            raise ValueError("a search on real frames has no imagined trunk: branch 'start' only")
        imagined, starts = ReflectedRealWorld(real, imagined, imagined.eta), jobs
    n, horizon = rollout.group_size, rollout.max_policy_steps
    kw = dict(execute_steps=rollout.execute_steps, generator=generator)
    ks = search_steps(len(jobs), horizon, generator)
    for idx in _batches(ks, batch, branch):
        js = [jobs[i] for i in idx]
        at = np.repeat(ks[idx], n)  # (B * n,)
        keys = [f"search-{i}" for i in idx]
        if branch == "start":
            inits, im_at, im_h = [starts[i] for i in idx], at, horizon
        else:
            k = int(ks[idx[0]])
            inits = _real_trunks(policy, real, js, keys, k, rollout)
            im_at, im_h = np.zeros_like(at), horizon - k
        group = imagined.group(inits, n, keys, common_noise=True)
        im = act_in_chunks(
            policy,
            group,
            scale_factor=rollout.scale_factor,
            explore_at=im_at,
            max_policy_steps=im_h,
            **kw,
        )
        chunks = im.actions[np.arange(len(at)), np.minimum(im_at, im.actions.shape[1] - 1)]
        re = act_in_chunks(
            policy,
            real.group(js, n, keys),
            explore_at=at,
            replay=chunks,
            max_policy_steps=horizon,
            **kw,
        )
        im_success, re_success = imagined.succeeded(im.rewards), real.succeeded(re.rewards)
        explored = _explored(im, im_at) & _explored(re, at)
        yield [
            {
                "task": js[i // n].task,
                "seed": js[i // n].seed,
                "group": int(idx[i // n]),
                "k": int(at[i]),
                "imagined_reward": float(im.rewards[i]),
                "imagined_success": bool(im_success[i]),
                "real_success": bool(re_success[i]),
                "explored": bool(explored[i]),
            }
            for i in range(len(at))
        ]


OBJECT_LABEL_MIN, GRIPPER_LABEL = 2, 1  # the tabletop env's pixel labels (``labels()``)


def chunk_fidelity(
    policy: Any,
    imagined: Any,
    real: Any,
    jobs: list[EvalJob],
    rollout: RolloutConfig,
    *,
    generator: torch.Generator,
    batch: int = 6,
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """One chunk's imagined frames against the real ones, group by group: from the real state
    at each group's step k (drawn first from ``generator``, as ``replay_searches`` draws them,
    so one seed measures the searches' own steps), the group's N chunks imagined (sampled as
    in the search) and taken in the real env; compared where the real env's label map shows an
    object and never the gripper, in any of the N real frames after the chunk.

    Needs real envs with a pixel label map (``labels()``: the tabletop env).

    Yields:
        per batch of groups, how many groups it stepped and a list with a record per group
        whose real episode reached k: task, group, k, pixels (the mask's size), and
        in [0, 1] pixel units over the mask: ``error`` (|imagined - real| after the chunk),
        ``copy_error`` (|frame at k - real after|: a world model that changes nothing),
        ``real_spread`` / ``imagined_spread`` (RMS deviation of the N frames from their group
        mean) and ``cosine`` (of the imagined and real deviations from the group mean: do the
        chunks differ in imagination where they differ in the real env).
    """
    env = real.pool.take(1)[0]
    if not hasattr(env, "labels"):
        raise ValueError(
            f"chunk fidelity needs real envs with a pixel label map: {type(env).__name__} has "
            "none (the tabletop env has)"
        )
    n, e = rollout.group_size, rollout.execute_steps
    ks = search_steps(len(jobs), rollout.max_policy_steps, generator)
    for idx in _batches(ks, batch, "real"):
        js, k = [jobs[i] for i in idx], int(ks[idx[0]])
        keys = [f"chunk-{i}" for i in idx]
        inits = _real_trunks(policy, real, js, keys, k, rollout)
        at = np.full(len(idx) * n, k)
        kw = dict(execute_steps=e, generator=generator, keep_frames=True)
        im = act_in_chunks(
            policy,
            imagined.group(inits, n, keys, common_noise=True),
            max_policy_steps=1,
            scale_factor=rollout.scale_factor,
            explore_at=np.zeros_like(at),
            **kw,
        )
        re = act_in_chunks(
            policy,
            real.group(js, n, keys),
            max_policy_steps=k + 1,
            explore_at=at,
            replay=im.actions[:, 0],
            **kw,
        )
        labels = np.stack([env.labels() for env in real.pool.take(len(at))])  # (B * n, H, W)
        fi = im.frames[:, -1].astype(np.float64) / 255  # (B * n, H, W, 3) after the chunk
        fr = re.frames[:, -1].astype(np.float64) / 255
        out = []
        for g in range(len(idx)):
            rows = slice(g * n, (g + 1) * n)
            if re.steps[rows].min() <= k * e:  # the real episode ended before k
                continue
            lab = labels[rows]
            mask = (lab >= OBJECT_LABEL_MIN).any(0) & ~(lab == GRIPPER_LABEL).any(0)  # (H, W)
            if not mask.any():
                continue
            at_k = inits[g].frames[-1].astype(np.float64) / 255
            out.append(
                {
                    "task": js[g].task,
                    "group": int(idx[g]),
                    "k": k,
                    "pixels": int(mask.sum()),
                    **frame_agreement(fi[rows], fr[rows], at_k, mask),
                }
            )
        yield len(idx), out


def frame_agreement(
    imagined: np.ndarray, real: np.ndarray, before: np.ndarray, mask: np.ndarray
) -> dict[str, float | None]:
    """One group's frames after its chunks in both worlds, (N, H, W, 3) each in [0, 1], and the
    frame before them (H, W, 3), compared on the pixels of ``mask`` (H, W): ``chunk_fidelity``'s
    error, copy_error, real_spread, imagined_spread and cosine."""
    a, b, c = imagined[:, mask], real[:, mask], before[mask]  # (N, P, 3), (N, P, 3), (P, 3)
    da, db = a - a.mean(0), b - b.mean(0)
    norm = np.sqrt((da**2).sum() * (db**2).sum())
    return {
        "error": float(np.abs(a - b).mean()),
        "copy_error": float(np.abs(c[None] - b).mean()),
        "real_spread": float(np.sqrt((db**2).mean())),
        "imagined_spread": float(np.sqrt((da**2).mean())),
        "cosine": float((da * db).sum() / norm) if norm > 0 else None,
    }


def fidelity_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the groups of ``chunk_fidelity``'s records (the cosine over the groups where
    both worlds' chunks differ), and the same over the half whose real chunks differ most."""

    def means(recs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"groups": len(recs)}
        for key in ("error", "copy_error", "real_spread", "imagined_spread", "cosine"):
            v = [r[key] for r in recs if r[key] is not None]
            out[key] = float(np.mean(v)) if v else None
        return out

    if not records:
        return {"groups": 0}
    spread = np.median([r["real_spread"] for r in records])
    return {
        **means(records),
        "most_different": means([r for r in records if r["real_spread"] > spread]),
    }


def _share(x: list[bool] | np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


BOOTSTRAP_DRAWS = 2000  # resamples of the groups for the signal's intervals


def _interval(x: np.ndarray) -> list[float]:
    """The 2.5% and 97.5% quantiles."""
    return [float(q) for q in np.quantile(x, [0.025, 0.975])]


def _share_of(
    part: np.ndarray, whole: np.ndarray, draws: np.ndarray
) -> tuple[float | None, list[float] | None]:
    """sum(part) / sum(whole) over the groups, (G,) each, and its 95% bootstrap interval over
    the group resamples ``draws`` (D, G) whose whole is positive (None where there is none)."""
    total = whole.sum()
    share = float(part.sum() / total) if total > 0 else None
    den = whole[draws].sum(axis=1)  # (D,)
    ok = den > 0
    return share, (_interval(part[draws].sum(axis=1)[ok] / den[ok]) if ok.any() else None)


def search_starts(records: list[dict[str, Any]], group_size: int) -> list[tuple[str, int]]:
    """The real start (task, seed) of each group of ``records``, in order."""
    return [(r["task"], r["seed"]) for r in records[::group_size]]


def _columns(records: list[dict[str, Any]], group_size: int) -> dict[str, np.ndarray]:
    """The records' per-rollout fields as (G, N) arrays."""
    if not records or len(records) % group_size:
        raise ValueError(f"{len(records)} records are not whole groups of {group_size}")
    g = len(records) // group_size
    return {
        k: np.array([r[k] for r in records]).reshape(g, group_size)
        for k in ("imagined_reward", "imagined_success", "real_success", "explored")
    }


def _chosen(col: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per imagined reward (and the oracle's): the groups with unequal rewards (G,) and the
    learner's targets among the explored rollouts (G, N): positive RLOO advantage there."""
    values = {
        "reflector": col["imagined_reward"].astype(np.float64),
        "success": col["imagined_success"].astype(np.float64),
        "oracle": col["real_success"].astype(np.float64),  # the real env's own targets
    }
    out = {}
    for reward, value in values.items():
        v = torch.from_numpy(value)
        mixed = nonconstant_group_mask(v).numpy()  # (G,)
        out[reward] = (mixed, mixed[:, None] & (rloo_advantages(v).numpy() > 0) & col["explored"])
    return out


def _real_advantages(col: dict[str, np.ndarray]) -> np.ndarray:
    """(G, N) leave-one-out advantages under the real success."""
    return rloo_advantages(torch.from_numpy(col["real_success"].astype(np.float64))).numpy()


def group_signals(records: list[dict[str, Any]], group_size: int) -> dict[str, np.ndarray]:
    """The search's useful signal, group by group: per imagined reward ("reflector",
    "success") and for the oracle, the summed real advantage of the learner's targets in each
    group, (G,) (``search_agreement``'s ``signal_per_group`` is its mean)."""
    col = _columns(records, group_size)
    return _signals(_chosen(col), _real_advantages(col))


def _signals(
    chosen: dict[str, tuple[np.ndarray, np.ndarray]], real_adv: np.ndarray
) -> dict[str, np.ndarray]:
    """Per reward, the targets' summed real advantage in each group (G,): the search's useful
    signal (``chosen`` from ``_chosen``, ``real_adv`` (G, N))."""
    return {r: np.where(c, real_adv, 0.0).sum(axis=1) for r, (_, c) in chosen.items()}


def search_agreement(records: list[dict[str, Any]], group_size: int) -> dict[str, Any]:
    """What the replayed searches say (records of ``replay_searches``).

    Returns:
        imagined_success / real_success: over all rollouts. Over the explored rollouts (the
        chunk at k taken in both worlds): ``base`` (real success), ``precision`` (real success
        of the imagined successes), ``recall`` (imagined success of the real successes). Per
        imagined reward ("reflector": R; "success": R > eta), the learner's targets (positive
        RLOO advantage in a group whose rewards are not all equal, explored): ``mixed_groups``,
        ``targets``, ``real_advantage`` (their mean leave-one-out advantage under the real
        success: how much better than its group each target did in the real env),
        ``real_better`` / ``real_worse`` (shares of targets above / below their group there),
        ``signal_per_group`` (their summed real advantage over the groups) and
        ``share_of_oracle`` (that sum over the oracle's), each with a 95% bootstrap interval
        over the groups (``*_ci95``: how much another set of starts could move it); "oracle":
        the same for the targets the real env's own success picks among the same chunks (the
        oracle's search, for scale).
        ``per_task``: imagined and real success of each task's rollouts.
    """
    col = _columns(records, group_size)
    g = len(records) // group_size
    ex, im, re = col["explored"], col["imagined_success"], col["real_success"]
    real_adv = _real_advantages(col)  # (G, N)
    chosen_by_reward = _chosen(col)
    signal = _signals(chosen_by_reward, real_adv)  # reward -> (G,)
    targets = {}
    for reward, (mixed, chosen) in chosen_by_reward.items():
        adv = real_adv[chosen]
        targets[reward] = {
            "mixed_groups": int(mixed.sum()),
            "targets": int(chosen.sum()),
            "real_advantage": float(adv.mean()) if adv.size else None,
            "real_better": _share(adv > 0),
            "real_worse": _share(adv < 0),
            "signal_per_group": float(adv.sum() / g),
        }
    draws = np.random.default_rng(0).integers(0, g, size=(BOOTSTRAP_DRAWS, g))  # (D, G)
    for reward, per_group in signal.items():
        t = targets[reward]
        t["share_of_oracle"], t["share_of_oracle_ci95"] = _share_of(
            per_group, signal["oracle"], draws
        )
        t["signal_per_group_ci95"] = _interval(per_group[draws].mean(axis=1))
    tasks = np.array([r["task"] for r in records])
    return {
        "groups": g,
        "rollouts": len(records),
        "imagined_success": float(im.mean()),
        "real_success": float(re.mean()),
        "explored": int(ex.sum()),
        "base": _share(re[ex]),
        "precision": _share(re[ex & im]),
        "recall": _share(im[ex & re]),
        "targets": targets,
        "per_task": {
            t: {
                "rollouts": int((tasks == t).sum()),
                "imagined_success": float(im.ravel()[tasks == t].mean()),
                "real_success": float(re.ravel()[tasks == t].mean()),
            }
            for t in sorted(set(tasks.tolist()))
        },
    }


PERMUTATIONS = 10000  # sign flips of the paired test


def paired_comparison(
    records: list[dict[str, Any]], against: list[dict[str, Any]], group_size: int
) -> dict[str, Any]:
    """Two searches on the same real starts (two world models, reflectors or thresholds,
    ``--seed`` and ``--groups`` alike), compared group by group: the difference of their
    signals (this run minus ``against``) per imagined reward.

    Returns:
        per reward ("reflector", "success"): ``signal_per_group`` of both, ``difference`` (mean
        per-group difference) with a 95% bootstrap interval over the groups (``*_ci95``, the
        same group draws for both runs), ``share_of_oracle`` (the difference over the two runs'
        mean oracle signal) with its interval, and ``p_value``: a two-sided paired sign-flip
        permutation test of the per-group differences.
    Raises:
        ValueError: the two record lists are not the same groups (task and seed) in order.
    """
    key = search_starts(records, group_size)
    if len(records) != len(against) or key != search_starts(against, group_size):
        raise ValueError(
            f"the runs compared must search the same real starts: {len(records) // group_size} "
            f"and {len(against) // group_size} groups, or other tasks and seeds (same --seed "
            "and --groups)"
        )
    if [r["k"] for r in records[::group_size]] != [r["k"] for r in against[::group_size]]:
        raise ValueError(
            "the runs compared must explore each group at the same step k: run both with the "
            "same --seed, --groups and rollout.max_policy_steps, on the same code"
        )
    a, b = group_signals(records, group_size), group_signals(against, group_size)
    g = len(key)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, g, size=(BOOTSTRAP_DRAWS, g))  # (D, G)
    flips = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, g))  # (P, G)
    oracle = (a["oracle"] + b["oracle"]) / 2  # (G,)
    out: dict[str, Any] = {"groups": g}
    for reward in ("reflector", "success"):
        d = a[reward] - b[reward]  # (G,)
        share, share_ci = _share_of(d, oracle, draws)
        out[reward] = {
            "signal_per_group": float(a[reward].mean()),
            "against_signal_per_group": float(b[reward].mean()),
            "difference": float(d.mean()),
            "difference_ci95": _interval(d[draws].mean(axis=1)),
            "share_of_oracle": share,
            "share_of_oracle_ci95": share_ci,
            "p_value": _sign_flip_p(d, flips),
        }
    return out


def _sign_flip_p(d: np.ndarray, flips: np.ndarray) -> float:
    """Two-sided p of the paired sign-flip permutation test of the per-group differences d
    (G,) under the sign patterns ``flips`` (P, G)."""
    return float(np.mean(np.abs((flips * d).mean(axis=1)) >= abs(d.mean()) - 1e-12))


FIDELITY_PAIRED = ("error", "cosine")  # chunk_fidelity's measures compared group by group


def paired_fidelity(records: list[dict[str, Any]], against: list[dict[str, Any]]) -> dict[str, Any]:
    """Two ``chunk_fidelity`` runs of the same policy, ``--seed`` and ``--groups`` (two world
    models: the same groups, steps k, chunks and real frames), compared group by group: this
    run minus ``against``.

    Returns:
        groups, and per measure ("error", "cosine"): both runs' means over the groups where both
        have it, ``difference`` (the mean per-group difference) with a 95% bootstrap interval
        over the groups, and ``p_value``: a two-sided paired sign-flip permutation test.
    Raises:
        ValueError: the runs did not measure the same groups at the same steps on the same
            real frames.
    """

    records, against = (sorted(r, key=lambda x: x["group"]) for r in (records, against))

    def key(recs: list[dict[str, Any]]) -> list[tuple]:
        return [(r["task"], r["group"], r["k"], r["pixels"]) for r in recs]

    same_frames = key(records) == key(against) and np.allclose(
        [r["copy_error"] for r in records], [r["copy_error"] for r in against], rtol=0, atol=1e-9
    )
    if not same_frames:
        raise ValueError(
            "the chunk-fidelity runs compared must measure the same groups at the same steps on "
            "the same real frames: run both with the same --policy, --seed and --groups, on "
            "the same code"
        )
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"groups": len(records)}
    for measure in FIDELITY_PAIRED:
        both = [
            (a[measure], b[measure])
            for a, b in zip(records, against, strict=True)
            if a[measure] is not None and b[measure] is not None
        ]
        if not both:
            out[measure] = None
            continue
        a, b = np.array(both).T  # (G,) each
        d = a - b
        draws = rng.integers(0, len(d), size=(BOOTSTRAP_DRAWS, len(d)))  # (D, G)
        flips = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, len(d)))  # (P, G)
        out[measure] = {
            "groups": len(d),
            "mean": float(a.mean()),
            "against_mean": float(b.mean()),
            "difference": float(d.mean()),
            "difference_ci95": _interval(d[draws].mean(axis=1)),
            "p_value": _sign_flip_p(d, flips),
        }
    return out
