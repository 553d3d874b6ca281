"""act() latency of the tiny policy on CPU at batch 1 and 32; prints JSON.

Usage: python benchmarks/policy_act.py [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32, help="env image size (resized)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    stats = compute_statistics(
        rng.uniform(-1, 1, (100, 7)), rng.normal(size=(100, 8)), num_trajectories=1
    )
    instr = ["pick up the red block and lift it"]
    policy = build_policy(PolicyConfig(preset="tiny"), instructions=instr, stats=stats)
    out = {
        "preset": "tiny",
        "device": "cpu",
        "threads": args.threads,
        "image_size_in": args.image_size,
        "params": sum(p.numel() for p in policy.parameters()),
    }
    for b in (1, 32):
        batch = {
            "image": rng.integers(0, 256, (b, args.image_size, args.image_size, 3), dtype=np.uint8),
            "proprio": rng.normal(size=(b, 8)).astype(np.float32),
            "instruction": instr * b,
        }
        policy.act(batch)  # warm-up (prompt cache, allocator)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            policy.act(batch)
            times.append(time.perf_counter() - t0)
        out[f"act_ms_batch{b}"] = {
            "median": 1e3 * float(np.median(times)),
            "min": 1e3 * float(np.min(times)),
        }
        out[f"act_ms_per_sample_batch{b}"] = 1e3 * float(np.median(times)) / b
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
