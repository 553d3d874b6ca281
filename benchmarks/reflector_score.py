"""Reflector scoring speed: full scoring of every prefix vs incremental (KV-cached) steps.

Prints one JSON object. Example:

    .venv/bin/python benchmarks/reflector_score.py --batch 8 --steps 40
    .venv/bin/python benchmarks/reflector_score.py --llm smollm2-package --batch 2 --steps 12
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reflector_service.config import ReflectorModelConfig
from reflector_service.model import Reflector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="rollouts B")
    p.add_argument("--steps", type=int, default=40, help="frames per rollout T")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--frame-grid", type=int, default=4)
    p.add_argument("--llm", default=None, help="llm_path (default: the tiny random Llama)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = ReflectorModelConfig(
        llm_path=args.llm, window=args.window, frame_grid=args.frame_grid, vision_adapter=True
    )
    model = Reflector(cfg).eval()
    build_s = time.perf_counter() - t0
    frames = np.random.default_rng(0).integers(
        0, 256, (args.batch, args.steps, args.size, args.size, 3), dtype=np.uint8
    )
    instr = ["put the red block on the blue plate"] * args.batch
    model.score(frames[:, :2], instr)  # warm-up
    t0 = time.perf_counter()
    full = model.score(frames, instr)
    full_s = time.perf_counter() - t0
    state = model.start(instr)
    step_s = []
    inc = []
    for t in range(args.steps):
        t1 = time.perf_counter()
        inc.append(model.step(state, frames[:, t]))
        step_s.append(time.perf_counter() - t1)
    inc_t = torch.stack(inc, dim=1)
    print(
        json.dumps(
            {
                "llm": args.llm or "random-tiny",
                "llm_width": model.width,
                "batch": args.batch,
                "steps": args.steps,
                "window": args.window,
                "tokens_per_frame": cfg.tokens_per_frame,
                "threads": torch.get_num_threads(),
                "build_s": round(build_s, 3),
                "full_score_s": round(full_s, 4),
                "full_score_ms_per_frame": round(1e3 * full_s / (args.batch * args.steps), 3),
                "incremental_step_ms_mean": round(1e3 * float(np.mean(step_s)), 3),
                "incremental_step_ms_p90": round(1e3 * float(np.percentile(step_s, 90)), 3),
                "incremental_ms_per_frame": round(
                    1e3 * float(np.sum(step_s)) / (args.batch * args.steps), 3
                ),
                "max_abs_diff_incremental_vs_full": float((inc_t - full).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
