"""Imagined env-steps/s of the two placements side by side, with a run's real models.

The rollouts of LOOP in imagination as a post-training run makes them (``cluster.world_setup``,
``RolloutWorker.rollout``): the config's rollout workers, groups and horizon, sampled actions,
the trained world model and reflector. ``services``: the models as shared Ray replicas, every
imagined step a Ray call batched across workers; ``colocated``: each worker holds its own
copies and steps all its groups in one call per model; ``services_one_group_per_call``: the
services with each group alone in its calls, a worker's groups one after another (how the
acting loop ran before a worker's groups were stepped together). The variants alternate in
every round so that a noisy machine hurts all alike; prints one JSON object with each
variant's env-steps/s per round, the medians, the ratios round by round and the per-step
breakdown.

Usage (the demo's models after ``rehearse demo --run-dir R``):
    python benchmarks/placement.py --config configs/demo.yaml --policy R/checkpoints/sft \
        --simulator R/simulator/checkpoint --reflector R/reflector/best --data R/data/demos \
        [--rounds 3] [--set key=value ...] [--code CHECKOUT]

``--code`` imports the rollout code (in this process and in the Ray workers) from another
checkout of the project, to time an older version with the same models
(``benchmarks/placement_against.py`` alternates the two); a checkout from before the
placements existed runs its services.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = str(Path(__file__).resolve().parents[1])  # this checkout
sys.path.insert(0, REPO)

# "services, one group per call": each worker runs its groups one after another, each group
# alone in its model calls (the acting loop before a worker's groups were batched together)
VARIANTS = ("services_one_group_per_call", "services", "colocated")


def start(cfg: Any, placement: str, tag: str) -> tuple[list[Any], list[Any], Any]:
    """The workers (and replicas) of one placement: (workers, every actor, world setup)."""
    import dataclasses

    from actors.rollout_worker import RolloutWorker
    from cluster.backends import PolicyFactory
    from cluster.placement import start_actor, start_replicas
    from cluster.world_setup import imagined_setup

    cc = cfg.cluster
    if "placement" in {f.name for f in dataclasses.fields(cc)}:  # not in checkouts before it
        cc = dataclasses.replace(cc, placement=placement)
    setup = imagined_setup(dataclasses.replace(cfg, cluster=cc))
    # a checkout before the colocated placement starts every service as replicas
    services = setup.replicated if hasattr(setup, "replicated") else setup.services
    handles = {
        s.prefix: start_replicas(s.cls, s.replicas, s.factory, name=f"{tag}-{s.prefix}")
        for s in services
    }
    world = setup.make_world(handles)
    workers = [
        start_actor(
            RolloutWorker,
            PolicyFactory(cfg.post_train.policy),
            world=world,
            rollout=setup.rollout,
            worker_index=i,
            seed=cfg.seed,
            num_gpus=cc.rollout_worker_gpus,
            num_cpus=cc.rollout_worker_cpus,
            name=f"{tag}-w{i}",
        )
        for i in range(cc.rollout_workers)
    ]
    return workers, [*workers, *(h for hs in handles.values() for h in hs)], setup


def one_round(
    workers: list[Any], setup: Any, round_no: int, *, per_group: bool = False
) -> dict[str, Any]:
    """One iteration's rollouts: every worker runs its groups (``per_group``: one call per
    group, which a worker runs one after another); env-steps/s and the step breakdown."""
    import ray

    from cluster.driver import step_breakdown

    g = setup.rollout.groups_per_worker
    starts = setup.sampler.sample(len(workers) * g)
    ids = list(range(round_no * 1000, round_no * 1000 + len(starts)))
    calls = [(w, list(range(i * g, (i + 1) * g))) for i, w in enumerate(workers)]
    if per_group:
        calls = [(w, [j]) for w, js in calls for j in js]
    t0 = time.perf_counter()
    pairs = [
        w.rollout.options(num_returns=2).remote([starts[j] for j in js], [ids[j] for j in js])
        for w, js in calls
    ]
    summaries = ray.get([s for _, s in pairs])
    dt = time.perf_counter() - t0
    steps = sum(s["env_steps"] for s in summaries)
    return {
        "env_steps": steps,
        "seconds": dt,
        "env_steps_per_s": steps / dt,
        **step_breakdown([s["timings"] for s in summaries], steps),
    }


def _placement(variant: str) -> str:
    """The placement a variant runs in (both services variants share one)."""
    return "colocated" if variant == "colocated" else "services"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--simulator", required=True)
    ap.add_argument("--reflector", required=True)
    ap.add_argument("--data", required=True, help="episode store whose frames start rollouts")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per placement")
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of " + ", ".join(VARIANTS) + " (e.g. colocated alone, to "
        "time one checkout against another)",
    )
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--code", default=None, help="a checkout of the project to import instead")
    args = ap.parse_args(argv)
    if args.code:
        code = str(Path(args.code).resolve())
        if not (Path(code) / "actors" / "rollout_worker.py").is_file():
            ap.error(f"--code: {code} is not a checkout of this project")
        # this checkout off the import path, in this process and in the Ray workers (which
        # also import from the driver's working directory first)
        for key in ("config", "policy", "simulator", "reflector", "data"):
            setattr(args, key, str(Path(getattr(args, key)).resolve()))
        os.chdir(code)
        sys.path[:] = [code] + [p for p in sys.path if p != REPO]
        os.environ["PYTHONPATH"] = os.pathsep.join([code, os.environ.get("PYTHONPATH", "")])
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown or not variants:
        ap.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from cluster.config import load_config
    from cluster.ray_session import init_ray

    cfg = load_config(
        args.config,
        [
            *args.overrides,
            f"post_train.policy={args.policy}",
            f"post_train.simulator={args.simulator}",
            f"post_train.reflector={args.reflector}",
            f"post_train.data=[{args.data}]",
        ],
    )
    init_ray(num_cpus=cfg.cluster.num_cpus or os.cpu_count())
    roles = {}
    for p in sorted({_placement(v) for v in variants}):
        workers, actors, setup = start(cfg, p, f"bench-{p}-{time.time_ns() % 10**8}")
        ray.get([w.ping.remote() for w in workers])
        one_round(workers, setup, 0)  # warm-up: models built, first calls
        roles[p] = (workers, actors, setup)
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            workers, _, setup = roles[_placement(v)]
            rounds[v].append(
                one_round(workers, setup, r + 1, per_group=v == "services_one_group_per_call")
            )
    for _, actors, _ in roles.values():
        for a in actors:
            ray.kill(a)
    out: dict[str, Any] = {
        "config": args.config,
        "code": args.code or REPO,
        "cpus": os.cpu_count(),
        "rollout_workers": cfg.cluster.rollout_workers,
        "groups_per_worker": cfg.rollout.groups_per_worker,
        "group_size": cfg.rollout.group_size,
        "max_policy_steps": cfg.rollout.max_policy_steps,
    }
    for v in variants:
        rates = [x["env_steps_per_s"] for x in rounds[v]]
        out[v] = {"env_steps_per_s": rates, "median": statistics.median(rates), "rounds": rounds[v]}
    for a, b in (
        ("colocated", "services_one_group_per_call"),
        ("services", "services_one_group_per_call"),
        ("colocated", "services"),
    ):
        if a not in rounds or b not in rounds:
            continue
        ratios = [
            x["env_steps_per_s"] / y["env_steps_per_s"]
            for x, y in zip(rounds[a], rounds[b], strict=True)
        ]
        out[f"{a}_over_{b}"] = {"per_round": ratios, "median": statistics.median(ratios)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
