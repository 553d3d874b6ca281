"""Imagined env-steps/s of the rollout system, printed as JSON.

Three measurements, each with the real tiny policy and the service actors on a local Ray:
- ``workers``: env-steps/s versus the number of rollout workers, with a fake world model and
  reflector of fixed latency per batched call (an accelerator whose cost does not grow with
  the batch), so the figure shows what dynamic batching across workers buys;
- ``overhead``: per imagined step, measured time versus the ideal (sim + reflector latency per
  step of a group, plus the policy's share), i.e. the orchestration overhead;
- ``batch``: env-steps/s versus environments per group (one worker).

Each measurement also gives the ``step/*_ms`` breakdown a post-training run logs
(``cluster.driver.step_breakdown``): per env step, the policy, the kinematics, the world-model
and reflector calls as the workers waited on them, and the rest of the acting loop.

Usage: python benchmarks/imagined_throughput.py [--latency-ms 50] [--workers 1 2 4 8]
       [--group-sizes 2 4 8 16] [--steps 8] [--world-model fake|CKPT|preset:demo]
       [--service-gpus 0.5] [--bf16] [--compile] [--placement services|colocated]
``preset:NAME`` times a randomly initialized world model of that preset (32 px presets only:
the benchmark's episodes are 32 px); ``--service-gpus`` places each service replica (colocated:
each rollout worker, which then holds the models) on that share of a GPU, ``--bf16`` /
``--compile`` turn on the services' fast path (``cluster.simulator``);
``--placement colocated`` gives every rollout worker its own copies instead of replicas
(``cluster.placement``; with the fake's fixed latency it shows the orchestration left per step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_assets(root: Path) -> tuple[str, str]:
    from actors.config import CollectConfig
    from cluster.collect import collect, episode_specs
    from envs.config import EnvConfig
    from policy.checkpoint import build_policy, save_policy
    from policy.config import PolicyConfig
    from policy.normalization import statistics_from_store
    from trajectories.store import EpisodeStore

    collect(
        EnvConfig(image_size=32),
        CollectConfig(),
        episode_specs(["lift_red"], 2, seed=0, source="expert"),
        root / "demos",
        progress=False,
    )
    store = EpisodeStore(root / "demos")
    stats = statistics_from_store(store, dataset_name="tabletop")["tabletop"]
    policy = build_policy(
        PolicyConfig(), instructions=[e["instruction"] for e in store.episode_info], stats=stats
    )
    save_policy(policy, root / "policy")
    return str(root / "policy"), str(root / "demos")


def random_world_model(preset: str, folder: Path) -> str:
    """A randomly initialized world model of ``preset`` saved as a checkpoint (cost only)."""
    from simulator_service.checkpoint import save_world_model, stored_state
    from simulator_service.config import SimulatorConfig
    from simulator_service.model import WorldModel

    cfg = SimulatorConfig.preset(preset)
    if cfg.image_size != 32:
        raise SystemExit(f"preset {preset!r} works at {cfg.image_size} px; the episodes are 32 px")
    model = WorldModel(cfg)
    save_world_model(folder, model=model, ema=stored_state(model), optimizer=None, step=0)
    return str(folder)


def measure(
    policy: str,
    demos: str,
    *,
    workers: int,
    group_size: int,
    steps: int,
    latency_ms: float,
    world_model: str,
    max_wait_ms: float,
    repeats: int = 2,
    service_gpus: float = 0.0,
    bf16: bool = False,
    compile: bool = False,
    placement: str = "services",
) -> dict:
    import ray

    from actors.config import RolloutConfig
    from actors.rollout_worker import RolloutWorker
    from actors.worlds import ImaginedWorld
    from cluster.backends import PolicyFactory, ReflectorFactory, SimulatorFactory
    from cluster.config import ReplicaConfig
    from cluster.placement import start_actor, start_replicas
    from reflector_service.service import ReflectorService
    from simulator_service.service import SimulatorService
    from trajectories.initial_states import InitialStateSampler
    from trajectories.store import EpisodeStore

    store = EpisodeStore(demos)
    rc = ReplicaConfig(
        num_cpus=0, num_gpus=service_gpus, max_batch_size=256, max_wait_ms=max_wait_ms
    )
    sim_f = SimulatorFactory(
        world_model,
        store.camera().to_dict(),
        service_gpus,
        fake_latency_ms=latency_ms,
        bf16=bf16,
        compile=compile,
    )
    refl_f = ReflectorFactory("fake", service_gpus, fake_latency_ms=latency_ms)
    if placement == "colocated":  # every worker holds its own models: no replica
        sims, refls, world_of = [], [], (sim_f, refl_f)
    else:
        sims = start_replicas(SimulatorService, rc, sim_f, name=f"bench-sim-{time.time_ns()}")
        refls = start_replicas(ReflectorService, rc, refl_f, name=f"bench-refl-{time.time_ns()}")
        world_of = (sims, refls)
    rollout = RolloutConfig(
        group_size=group_size, max_policy_steps=steps // 8 or 1, execute_steps=8, eta=0.999
    )
    ws = [
        start_actor(
            RolloutWorker,
            PolicyFactory(policy),
            world=ImaginedWorld(*world_of, eta=rollout.eta),
            rollout=rollout,
            worker_index=i,
            num_gpus=service_gpus if placement == "colocated" else 0,  # its models' device
            num_cpus=0,
            name=f"bench-w{i}-{time.time_ns()}",
        )
        for i in range(workers)
    ]
    sampler = InitialStateSampler([store], keyframes=False, seed=0)
    ray.get([w.ping.remote() for w in ws])
    # warm-up, then timed rounds
    ray.get([w.run_groups.remote(sampler.sample(1), [0]) for w in ws])
    t0 = time.perf_counter()
    from cluster.driver import step_breakdown

    steps_done, timings = 0, []
    for r in range(repeats):
        outs = ray.get([w.run_groups.remote(sampler.sample(1), [r]) for w in ws])
        steps_done += sum(g.env_steps for groups in outs for g in groups)
        timings += [g.rollout.timings for groups in outs for g in groups]
    dt = time.perf_counter() - t0
    stats = ray.get(sims[0].stats.remote()) if sims else {}
    for a in [*ws, *sims, *refls]:
        ray.kill(a)
    per_group_steps = steps_done / (workers * repeats * group_size)
    return {
        "env_steps_per_s": steps_done / dt,
        "seconds_per_group_step": dt / (repeats * per_group_steps),
        "sim_mean_batch_size": stats.get("mean_batch_size", group_size),
        "sim_mean_call_ms": stats.get("mean_compute_ms"),
        **step_breakdown(timings, steps_done),  # the same step/*_ms as a post-training run's
    }


def policy_step_ms(policy: str, group_size: int) -> float:
    """Time of one policy call (a chunk of 8 actions) for a group, in this process."""
    import torch

    from policy.checkpoint import load_policy

    torch.set_num_threads(1)
    p = load_policy(policy).eval()
    batch = {
        "image": np.zeros((group_size, 32, 32, 3), np.uint8),
        "proprio": np.zeros((group_size, 8), np.float32),
        "instruction": ["lift the red block"] * group_size,
    }
    p.act(batch)
    t = time.perf_counter()
    for _ in range(5):
        p.act(batch)
    return 1000 * (time.perf_counter() - t) / 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--steps", type=int, default=8, help="imagined steps per rollout")
    ap.add_argument(
        "--world-model", default="fake", help="'fake', a simulator checkpoint, or preset:NAME"
    )
    ap.add_argument("--service-gpus", type=float, default=0.0, help="GPU share per replica")
    ap.add_argument(
        "--placement",
        choices=("services", "colocated"),
        default="services",
        help="the models as shared replicas, or a copy in every rollout worker",
    )
    ap.add_argument("--bf16", action="store_true", help="world model in bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    ap.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="services' batching window (default: latency / 10)",
    )
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    wait = args.max_wait_ms if args.max_wait_ms is not None else max(1.0, args.latency_ms / 10)
    from cluster.ray_session import init_ray

    init_ray(num_cpus=os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        policy, demos = build_assets(Path(tmp))
        world_model = args.world_model
        if world_model.startswith("preset:"):
            world_model = random_world_model(world_model.split(":", 1)[1], Path(tmp) / "wm")
        fast = dict(
            service_gpus=args.service_gpus,
            bf16=args.bf16,
            compile=args.compile,
            placement=args.placement,
        )
        out: dict = {
            "latency_ms": args.latency_ms,
            "max_wait_ms": wait,
            "cpus": os.cpu_count(),
            "world_model": args.world_model,
            **fast,
        }
        base = None
        out["workers"] = {}
        for w in args.workers:
            m = measure(
                policy,
                demos,
                workers=w,
                group_size=8,
                steps=args.steps,
                latency_ms=args.latency_ms,
                world_model=world_model,
                max_wait_ms=wait,
                **fast,
            )
            base = base or m["env_steps_per_s"]
            m["speedup_vs_1"] = m["env_steps_per_s"] / base
            out["workers"][str(w)] = m
        pol_ms = policy_step_ms(policy, 8)
        m1 = out["workers"][str(args.workers[0])]
        ideal = 2 * args.latency_ms + pol_ms / 8
        out["overhead"] = {
            "policy_ms_per_chunk": pol_ms,
            "ideal_ms_per_step": ideal,
            "measured_ms_per_step": 1000 * m1["seconds_per_group_step"],
            "overhead_ms_per_step": 1000 * m1["seconds_per_group_step"] - ideal,
        }
        out["batch"] = {}
        for g in args.group_sizes:
            out["batch"][str(g)] = measure(
                policy,
                demos,
                workers=1,
                group_size=g,
                steps=args.steps,
                latency_ms=args.latency_ms,
                world_model=world_model,
                max_wait_ms=wait,
                **fast,
            )
    print(json.dumps(out))  # one line: benchmarks/gpu_check.sh reads the last line


if __name__ == "__main__":
    main()
