"""act() latency of a randomly initialized policy at several batch sizes; prints JSON.

Usage: python benchmarks/policy_act.py [--repeats 10] [--threads 2]
       python benchmarks/policy_act.py --preset oft-7b --device cuda --dtype bfloat16
(the tiny preset on CPU by default; ``oft-7b`` has OpenVLA-OFT's sizes, built directly on the
device, ~15 GB in bf16)
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


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32, help="env image size (resized)")
    parser.add_argument("--preset", choices=("tiny", "oft-7b"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batches", type=_ints, default=[1, 32])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    stats = compute_statistics(
        rng.uniform(-1, 1, (100, 7)), rng.normal(size=(100, 8)), num_trajectories=1
    )
    instr = ["pick up the red block and lift it"]
    cfg = PolicyConfig(preset=args.preset, dtype=args.dtype)
    t0 = time.perf_counter()
    with torch.device(args.device):  # parameters are made where they run (7B: no CPU copy)
        policy = build_policy(cfg, instructions=instr, stats=stats).eval()
    out = {
        "preset": args.preset,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "image_size_in": args.image_size,
        "params": sum(p.numel() for p in policy.parameters()),
        "build_s": round(time.perf_counter() - t0, 1),
    }
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for b in args.batches:
        batch = {
            "image": rng.integers(0, 256, (b, args.image_size, args.image_size, 3), dtype=np.uint8),
            "proprio": rng.normal(size=(b, 8)).astype(np.float32),
            "instruction": instr * b,
        }
        with torch.no_grad():
            policy.act(batch)  # warm-up (prompt cache, allocator, kernels)
            times = []
            for _ in range(args.repeats):
                sync()
                t1 = time.perf_counter()
                policy.act(batch)
                sync()
                times.append(time.perf_counter() - t1)
        out[f"act_ms_batch{b}"] = {
            "median": 1e3 * float(np.median(times)),
            "min": 1e3 * float(np.min(times)),
        }
        out[f"act_ms_per_sample_batch{b}"] = 1e3 * float(np.median(times)) / b
    if args.device.startswith("cuda"):
        out["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
