"""Per-frame sampling time of the world model at several batch sizes and denoising steps.

Prints one JSON object: for every (batch, steps) the median wall time of ``WorldModel.predict``
per call and per frame, and for every step count the ratio per-frame(batch max) /
per-frame(batch 1) (the batching target is <= 0.25 for the tiny config on CPU). With
``--against-eager`` a second copy of the model without bf16 / compile / trace runs in turn with
the fast one (call by call, so a noisy machine slows both alike) and each result gains the
eager time and the ratio eager / fast.

    .venv/bin/python benchmarks/simulator_sampling.py --preset tiny --threads 2
    .venv/bin/python benchmarks/simulator_sampling.py --checkpoint C --batches 16 --steps 1 \
        --threads 1 --channels-last --trace --against-eager --repeats 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("tiny", "demo", "full"), default="tiny")
    p.add_argument("--checkpoint", default=None, help="benchmark a trained checkpoint instead")
    p.add_argument("--batches", type=_ints, default=[1, 4, 16])
    p.add_argument("--steps", type=_ints, default=[1, 4, 10])
    p.add_argument("--sampler", choices=("ddim", "dpmsolver++"), default="ddim")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--bf16", action="store_true", help="U-Net passes in bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    p.add_argument("--trace", action="store_true", help="the U-Net as a frozen TorchScript graph")
    p.add_argument("--channels-last", action="store_true", help="U-Net weights channels-last")
    p.add_argument("--against-eager", action="store_true", help="time an eager copy in turn")
    args = p.parse_args(argv)

    import torch

    from simulator_service.checkpoint import load_world_model, read_config
    from simulator_service.config import SimulatorConfig
    from simulator_service.model import WorldModel

    if args.threads:
        torch.set_num_threads(args.threads)

    def build() -> WorldModel:
        torch.manual_seed(0)
        if args.checkpoint:
            # cost only: step counts a checkpoint trained at its sampler's timesteps alone
            # (train.timesteps = "sampler") would refuse are timed all the same
            found = read_config(args.checkpoint)
            timing = found.replace(train=dataclasses.replace(found.train, timesteps="all"))
            return load_world_model(args.checkpoint, cfg=timing).to(args.device).eval()
        return WorldModel(SimulatorConfig.preset(args.preset)).to(args.device).eval()

    model = build()  # cluster.simulator.bf16 / .compile / .trace
    model.use_fast_path(
        bf16=args.bf16, compile=args.compile, trace=args.trace, channels_last=args.channels_last
    )
    models = {"fast": model}
    if args.against_eager:
        models["eager"] = build()
        models["eager"].use_fast_path(channels_last=args.channels_last)
    cfg = model.cfg
    s = cfg.image_size
    results = []
    for batch in args.batches:
        hist = torch.rand(batch, cfg.history, 3, s, s, device=args.device)
        amap = torch.rand(batch, 3, s, s, device=args.device)
        feats = model.encode_reference(hist[:, : cfg.num_reference_frames])
        for steps in args.steps:
            for _ in range(2):  # warm-up: a compiled or traced U-Net builds and optimizes
                for m in models.values():
                    m.predict(hist, amap, feats, steps=steps, sampler=args.sampler)
            times: dict[str, list[float]] = {k: [] for k in models}
            for r in range(args.repeats):
                for name, m in models.items():
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    m.predict(
                        hist,
                        amap,
                        feats,
                        steps=steps,
                        sampler=args.sampler,
                        generator=torch.Generator(device=args.device).manual_seed(r),
                    )
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - t0)
            med = statistics.median(times["fast"])
            row = {
                "batch": batch,
                "steps": steps,
                "ms_per_call": round(1e3 * med, 2),
                "ms_per_frame": round(1e3 * med / batch, 3),
            }
            if "eager" in times:
                eager = statistics.median(times["eager"])
                row["eager_ms_per_call"] = round(1e3 * eager, 2)
                row["eager_over_fast"] = round(eager / med, 3)
            results.append(row)
    per = {(r["batch"], r["steps"]): r["ms_per_frame"] for r in results}
    b_max = max(args.batches)
    ratios = {
        str(st): round(per[(b_max, st)] / per[(1, st)], 3) for st in args.steps if (1, st) in per
    }
    out = {
        "benchmark": "simulator_sampling",
        "preset": None if args.checkpoint else args.preset,
        "checkpoint": args.checkpoint,
        "image_size": s,
        "space": cfg.space,
        "sampler": args.sampler,
        "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
        "device": args.device,
        "bf16": args.bf16,
        "compile": args.compile,
        "trace": args.trace,
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "results": results,
        f"per_frame_ratio_batch{b_max}_vs_1": ratios,
        "target_ratio": 0.25,
    }
    print(json.dumps(out))
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
