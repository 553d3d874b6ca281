"""Time of one world-model training step for two simulator configs, side by side.

A training step is what ``simulator_service.train`` runs: the weighted denoising loss on one
batch, its backward pass, gradient clipping and AdamW. Model A is the config's simulator; model B
the same with ``--b`` overrides (e.g. a wider U-Net) and/or its U-Net in channels-last memory
layout (``--b-channels-last``). The two take their steps in turn (A B A B ...) on the same
random batches, so a noisy machine slows both alike. Prints one JSON object: parameters and the
median seconds per step of each, and the ratio B / A: how many of A's steps one of B's costs,
i.e. what a fixed time budget (``simulator.train.time_budget_s``) gives up for B.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simulator_training.py \
        --config configs/demo.yaml --b simulator.block_out_channels=[24,48,96] --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml", help="experiment config (YAML)")
    p.add_argument("--b", nargs="*", default=[], help="overrides of model B (key=value)")
    p.add_argument("--b-channels-last", action="store_true", help="B's U-Net channels-last")
    p.add_argument("--batch", type=int, default=0, help="frames per step (0 = the config's)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    args = p.parse_args(argv)
    if args.batch < 0 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch must be >= 0, --repeats >= 1 and --warmup >= 0")
    if not args.b and not args.b_channels_last:
        p.error("give model B something to differ by: --b KEY=VALUE ... and/or --b-channels-last")

    import torch

    from cluster.config import load_config
    from simulator_service.model import WorldModel

    if args.threads:
        torch.set_num_threads(args.threads)
    cfgs = {
        "A": load_config(args.config).simulator,
        "B": load_config(args.config, args.b).simulator,
    }
    for name, cfg in cfgs.items():
        if cfg.image_size != cfgs["A"].image_size or cfg.space != "pixel":
            raise SystemExit(f"model {name}: both models must be pixel-space at one image size")

    models, optimizers, features = {}, {}, {}
    s, b = cfgs["A"].image_size, args.batch or cfgs["A"].train.batch_size
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(b, max(c.num_reference_frames for c in cfgs.values()), 3, s, s, generator=g)
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        models[name] = WorldModel(cfg)
        if name == "B" and args.b_channels_last:
            models[name].use_fast_path(channels_last=True)
        optimizers[name] = torch.optim.AdamW(models[name].trainable_parameters(), lr=cfg.train.lr)
        features[name] = models[name].encode_reference(refs[:, : cfg.num_reference_frames])
    target = torch.rand(b, 3, s, s, generator=g)
    action_map = torch.rand(b, 3, s, s, generator=g)
    history = {n: torch.rand(b, c.history, 3, s, s, generator=g) for n, c in cfgs.items()}

    def one_step(name: str, i: int) -> float:
        model, opt = models[name], optimizers[name]
        noise = torch.Generator().manual_seed(i)
        t0 = time.perf_counter()
        loss = model.loss(history[name], action_map, features[name], target, generator=noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), cfgs[name].train.grad_clip)
        opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.repeats):
        for name in models:
            dt = one_step(name, i)
            if i >= args.warmup:
                times[name].append(dt)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        json.dumps(
            {
                "config": args.config,
                "b": args.b,
                "b_channels_last": args.b_channels_last,
                "batch": b,
                "threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "parameters": {
                    n: sum(p.numel() for p in m.trainable_parameters()) for n, m in models.items()
                },
                "s_per_step": {name: round(v, 5) for name, v in med.items()},
                "ratio_b_over_a": round(med["B"] / med["A"], 3),
                "machine": platform.processor() or platform.machine(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
