"""Cost of the real LIBERO env on this machine: scene creation, reset, step, and N episodes.

Prints one JSON object: {"create_s", "reset_s" (mean, settling included), "step_ms" (mean wall
ms per step with random actions), "step_cpu_ms" (process CPU ms per step, all threads, which
other load on a shared machine inflates less), "episodes": {"n", "max_steps", "wall_s",
"successes", "steps"}, "config": {...}}. Episodes use uniform random actions in [-1, 1]
(seeded) from init states 0..N-1 of one task, the way an evaluation of one task runs.

    python benchmarks/libero_env.py --suite libero_spatial --task 0 --size 128 --episodes 5
    python benchmarks/libero_env.py --episodes 5 --max-steps 40   # shorter episodes
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from envs.config import EnvConfig
from envs.libero import LiberoEnv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="both cameras' image size")
    p.add_argument("--no-wrist", action="store_true", help="agentview camera only")
    p.add_argument("--step-samples", type=int, default=30, help="steps timed for step_ms")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=0, help="episode step limit (0: the suite's)")
    args = p.parse_args()

    cfg = EnvConfig(
        name="libero",
        suite=args.suite,
        image_size=args.size,
        wrist_camera=not args.no_wrist,
        max_steps=args.max_steps,
    )
    t0 = time.perf_counter()
    env = LiberoEnv(cfg)
    create_s = time.perf_counter() - t0
    task = env.task_names[args.task]
    rng = np.random.default_rng(0)

    def random_action() -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=7)

    env.reset(task, seed=0)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.step_samples):
        env.step(random_action())
    step_ms = 1e3 * (time.perf_counter() - w0) / args.step_samples
    step_cpu_ms = 1e3 * (time.process_time() - c0) / args.step_samples

    resets, steps, successes = [], 0, 0
    w0 = time.perf_counter()
    for ep in range(args.episodes):
        r0 = time.perf_counter()
        env.reset(task, seed=ep)
        resets.append(time.perf_counter() - r0)
        done = False
        while not done:
            res = env.step(random_action())
            steps += 1
            done = res.done
        successes += int(res.success)
    wall_s = time.perf_counter() - w0
    env.close()
    print(
        json.dumps(
            {
                "create_s": round(create_s, 2),
                "reset_s": round(float(np.mean(resets)), 2) if resets else None,
                "step_ms": round(step_ms, 1),
                "step_cpu_ms": round(step_cpu_ms, 1),
                "episodes": {
                    "n": args.episodes,
                    "max_steps": env.max_steps,
                    "wall_s": round(wall_s, 1),
                    "steps": steps,
                    "successes": successes,
                },
                "config": {
                    "suite": args.suite,
                    "task": task,
                    "size": args.size,
                    "cameras": 1 if args.no_wrist else 2,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
