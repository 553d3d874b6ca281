"""``rehearse eval-search``: imagined one-step searches replayed in the real env."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

HELP = (
    "replay imagined one-step searches in the real env: how often the chunks imagination "
    "rewards, and those search and distill would imitate, do better there too"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint folder")
    p.add_argument(
        "--simulator", default=None, help="world model checkpoint (post_train.simulator)"
    )
    p.add_argument("--reflector", default=None, help="reflector checkpoint (post_train.reflector)")
    p.add_argument(
        "--data",
        action="append",
        default=None,
        help="episode store(s) giving the camera and controller limits (post_train.data)",
    )
    p.add_argument("--groups", type=int, default=96, help="search groups (real starts)")
    p.add_argument("--batch", type=int, default=6, help="groups stepped together in each world")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the real starts (the oracle's training stream, never evaluation seeds), "
        "of each group's step k and of the imagined chunks",
    )
    p.add_argument(
        "--branch",
        choices=["start", "real"],
        default="start",
        help="where imagination starts each group: at the real start, imagining the mean "
        "action's steps before k too (start), or at the real env's state at k, its mean-action "
        "episode up to there (real: the world model imagines only the branches)",
    )
    p.add_argument(
        "--frames",
        choices=["imagined", "real"],
        default="imagined",
        help="whose frames the reflector judges in the search: the world model's (imagined), "
        "or the real env's at the reflector's own eta (real: imagination with a perfect world "
        "model, what the reflector alone makes of the chunks; no eta is calibrated)",
    )
    p.add_argument(
        "--chunk-fidelity",
        action="store_true",
        help="also compare one chunk's imagined frames with the real ones from the real state "
        "at each group's k, on the objects' pixels (search.json's 'chunk_fidelity'; the "
        "tabletop env)",
    )
    p.add_argument(
        "--fidelity-only",
        action="store_true",
        help="measure only the chunk fidelity (no search, no eta calibrated): a few minutes for "
        "192 groups, and what separates world models best (search.json's 'chunk_fidelity')",
    )
    p.add_argument(
        "--against",
        default=None,
        metavar="EVAL",
        help="an earlier eval-search output of the same --seed and --groups (other models or "
        "eta): compare the two group by group (search.json's 'against': the difference of "
        "their signals, and of their chunk fidelity where both measured it, with a 95%% "
        "interval and a paired permutation test)",
    )
    p.add_argument("--out", required=True, help="folder for search.json and rollouts.json")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` first, then the flags; the models run in this process (colocated)."""
    flags = {"simulator": args.simulator, "reflector": args.reflector, "data": args.data}
    return [
        *(args.set or []),
        "cluster.placement=colocated",
        *(f"post_train.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None),
    ]


def _other_steps(path: str, steps: list[tuple[int, int]], ks) -> None:
    """Refuse, before any work, a run to compare with whose (group, k) are not this run's
    (``ks``: the steps this --seed draws)."""
    if any(not 0 <= g < len(ks) or k != ks[g] for g, k in steps):
        raise ValueError(
            f"--against {path} explored other steps k than this run will: compare runs of the "
            "same --seed, --groups and rollout.max_policy_steps, on the same code"
        )


def _against(path: str, jobs: list, group_size: int, ks) -> list[dict]:
    """The rollouts of the run to compare with, checked to search the same starts at the same
    steps k."""
    from pathlib import Path

    from actors.search_check import search_starts

    f = Path(path) / "rollouts.json"
    if not f.is_file():
        raise FileNotFoundError(f"--against {path}: no rollouts.json (an eval-search output)")
    try:
        records = json.loads(f.read_text())
        key = search_starts(records, group_size)
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ValueError(
            f"--against {path}: rollouts.json is not an eval-search output ({e})"
        ) from None
    if len(records) != len(jobs) * group_size or key != [(j.task, j.seed) for j in jobs]:
        raise ValueError(
            f"--against {path} searched other starts ({len(records)} rollouts); compare runs "
            f"of the same --seed and --groups and rollout.group_size ({len(jobs)} x {group_size})"
        )
    _other_steps(path, [(r["group"], r["k"]) for r in records[::group_size]], ks)
    return records


def _fidelity_against(path: str, ks) -> list[dict] | None:
    """The chunk fidelity of the run to compare with (None: it measured none), checked to
    measure this run's groups and steps k."""
    from pathlib import Path

    from actors.search_check import FIDELITY_PAIRED

    f = Path(path) / "chunk_fidelity.json"
    if not f.is_file():
        return None
    try:
        records = json.loads(f.read_text())
        steps = [(int(r["group"]), int(r["k"])) for r in records]
        for r in records:  # every other field the pairing reads, before any work
            [r[key] for key in ("task", "pixels", "copy_error", *FIDELITY_PAIRED)]
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise ValueError(
            f"--against {path}: chunk_fidelity.json is not an eval-search output ({e})"
        ) from None
    _other_steps(path, steps, ks)
    return records


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from actors.search_check import (
        chunk_fidelity,
        fidelity_summary,
        paired_comparison,
        paired_fidelity,
        replay_searches,
        search_agreement,
        search_steps,
    )
    from actors.starts import RealStartSampler, first_observations
    from actors.worlds import RealWorld
    from cluster.backends import EnvFactory, PolicyFactory
    from cluster.config import load_config
    from cluster.imagined_eta import imagination_eta
    from cluster.world_setup import imagined_setup
    from core.fsutil import output_folder, write_text_atomic
    from envs.factory import task_names

    for name in ("groups", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.frames == "real" and args.branch == "real":
        raise ValueError("--frames real searches the real env from its reset: no --branch real")
    if args.fidelity_only and (args.frames == "real" or args.branch == "real"):
        raise ValueError("--fidelity-only runs no search: no --frames or --branch")
    measure_fidelity = args.chunk_fidelity or args.fidelity_only
    cfg = load_config(args.config, overrides(args))
    setup = imagined_setup(cfg)  # refuses missing or unreadable models and data
    policy_f = PolicyFactory(args.policy)
    torch.set_num_threads(1)
    real = RealWorld(EnvFactory(cfg.env))
    jobs = RealStartSampler(task_names(cfg.env), seed=args.seed).sample(args.groups)
    n = cfg.rollout.group_size
    if measure_fidelity and not hasattr(real.pool.take(1)[0], "labels"):
        raise ValueError(
            f"--chunk-fidelity needs an env with a pixel label map (the tabletop env), not "
            f"{cfg.env.name}"
        )
    against = fidelity_against = None
    if args.against is not None:
        ks = search_steps(
            len(jobs), setup.rollout.max_policy_steps, torch.Generator().manual_seed(args.seed)
        ).tolist()
        if measure_fidelity:
            fidelity_against = _fidelity_against(args.against, ks)
        if args.fidelity_only and fidelity_against is None:
            raise FileNotFoundError(
                f"--against {args.against}: no chunk_fidelity.json (an eval-search output of "
                "--chunk-fidelity or --fidelity-only)"
            )
        if not args.fidelity_only:
            against = _against(args.against, jobs, n, ks)
    with output_folder(args.out, overwrite=args.overwrite) as out:
        eta = None
        if args.frames == "imagined" and not args.fidelity_only:  # calibrated for the search
            eta = imagination_eta(
                cfg,
                cfg.post_train.simulator,
                out / "eta_calibration.json",
                when="eval-search",
                progress=not args.no_progress,
            )
        if eta is not None:
            setup.rollout = dataclasses.replace(setup.rollout, eta=eta)
        policy = policy_f().eval()
        imagined = setup.make_world({})
        records: list[dict] = []
        summary: dict = {}
        if not args.fidelity_only:
            parts = replay_searches(
                policy,
                imagined,
                real,
                jobs,
                first_observations(real.pool.take(1)[0], jobs),
                setup.rollout,
                generator=torch.Generator().manual_seed(args.seed),
                batch=args.batch,
                branch=args.branch,
                frames=args.frames,
            )
            with tqdm(
                total=len(jobs), desc="eval-search", unit="group", disable=args.no_progress
            ) as bar:
                for part in parts:
                    records += part
                    bar.update(len(part) // n)
            records.sort(key=lambda r: r["group"])  # "real" searches in batches of one step k
            summary = search_agreement(records, n)
        if measure_fidelity:
            per_group: list[dict] = []
            parts = chunk_fidelity(
                policy,
                imagined,
                real,
                jobs,
                setup.rollout,
                generator=torch.Generator().manual_seed(args.seed),
                batch=args.batch,
            )
            with tqdm(
                total=len(jobs), desc="chunk fidelity", unit="group", disable=args.no_progress
            ) as bar:
                for stepped, part in parts:
                    per_group += part
                    bar.update(stepped)
            per_group.sort(key=lambda r: r["group"])  # measured in batches of one step k
            summary["chunk_fidelity"] = fidelity_summary(per_group)
            write_text_atomic(out / "chunk_fidelity.json", json.dumps(per_group))
        real.close()
        if args.against is not None:
            summary["against"] = {"run": args.against}
            if against is not None:
                summary["against"].update(paired_comparison(records, against, n))
            if fidelity_against is not None:
                try:
                    paired = paired_fidelity(per_group, fidelity_against)
                except ValueError as e:  # e.g. another policy: other chunks, other real frames
                    print(f"warning: --against {args.against}: {e}", file=sys.stderr)
                    paired = {"refused": str(e)}
                summary["against"]["chunk_fidelity"] = paired
        summary.update(
            policy=args.policy,
            simulator=cfg.post_train.simulator,
            reflector=cfg.post_train.reflector,
            eta=setup.rollout.eta,
            seed=args.seed,
            branch=args.branch,
            frames=args.frames,
            group_size=setup.rollout.group_size,
            max_policy_steps=setup.rollout.max_policy_steps,
            scale_factor=setup.rollout.scale_factor,
        )
        if not args.fidelity_only:
            write_text_atomic(out / "rollouts.json", json.dumps(records))
        write_text_atomic(out / "search.json", json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_task"}))
    return 0
