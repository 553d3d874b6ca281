"""Steps per second of the built-in tabletop env (rendering included), with the expert acting.

Prints one JSON object: {"32": steps/s, "64": ..., "detail": {...}}. The headline number is
env steps per CPU second of this process, resets and the expert's own time included (so it is a
lower bound for the env alone), best of ``--repeats`` identical runs; CPU time is used so that
other load on a shared machine lowers it less. "detail" adds the wall-clock rate, every run's
rate and the expert's cost per call, measured apart.
One thread (BLAS pools capped before NumPy loads).

    python benchmarks/env_steps.py --sizes 32 64 --steps 3000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from envs.config import EnvConfig  # noqa: E402
from envs.tabletop import TabletopEnv  # noqa: E402
from envs.tabletop_expert import expert_action  # noqa: E402


def _episodes(env: TabletopEnv, steps: int) -> tuple[int, int, int]:
    """Expert episodes over all tasks (seeds 0, 1, ...) until ``steps`` env steps are done."""
    tasks = env.task_names
    n = episodes = successes = 0
    while n < steps:
        env.reset(tasks[episodes % len(tasks)], seed=episodes)
        done = success = False
        while not done:
            _, success, done, _ = env.step(expert_action(env))
            n += 1
        episodes += 1
        successes += int(success)
    return n, episodes, successes


def measure(size: int, steps: int, *, repeats: int = 3, wrist: bool = False) -> dict[str, float]:
    """Time ``repeats`` identical runs of about ``steps`` env steps; keep the fastest.

    Returns:
        steps/s in CPU and wall time (best run, expert included), the expert's CPU microseconds
        per call, the number of steps and episodes per run, and the expert's success rate.
    """
    env = TabletopEnv(EnvConfig(image_size=size, wrist_camera=wrist))
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        n, episodes, successes = _episodes(env, steps)
        cpu_rates.append(n / (time.process_time() - c0))
        wall_rates.append(n / (time.perf_counter() - w0))
    env.reset(env.task_names[0], seed=0)
    reps = 1000
    e0 = time.process_time()
    for _ in range(reps):
        expert_action(env)
    return {
        "steps_per_s_cpu": max(cpu_rates),
        "steps_per_s_wall": max(wall_rates),
        "steps_per_s_cpu_all_runs": [round(r, 1) for r in cpu_rates],
        "expert_us_per_call": (time.process_time() - e0) / reps * 1e6,
        "steps": n,
        "episodes": episodes,
        "expert_success_rate": successes / episodes,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--steps", type=int, default=3000, help="env steps per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per size; the fastest counts")
    p.add_argument("--wrist", action="store_true", help="also render the wrist camera")
    args = p.parse_args()
    if args.steps < 1 or args.repeats < 1 or any(s < 16 for s in args.sizes):
        raise SystemExit("env_steps.py: --steps and --repeats must be >= 1, --sizes values >= 16")
    detail = {
        str(s): measure(s, args.steps, repeats=args.repeats, wrist=args.wrist) for s in args.sizes
    }
    out: dict[str, object] = {k: round(v["steps_per_s_cpu"], 1) for k, v in detail.items()}
    out["detail"] = {
        k: {m: round(x, 3) if isinstance(x, float) else x for m, x in v.items()}
        for k, v in detail.items()
    }
    out["wrist_camera"] = args.wrist
    print(json.dumps(out))


if __name__ == "__main__":
    main()
