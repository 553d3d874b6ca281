"""Dynamic sampling with rounds of a fixed size against rounds sized to what is missing.

With ``rollout.mixed_groups`` = K an iteration draws rounds of fresh groups until K of them
have mixed rewards. ``rollout.round_growth`` = 1 draws ``groups_per_worker`` groups per worker
in every round; a larger value lets a round after the first draw as many groups as the missing
mixed groups need at the share seen so far, so they step in one batch instead of several
rounds one after another. This runs the same short post-training run (``rehearse post-train``,
the same seed and starts) with growth 1 and with ``--growth``, alternating A B A B so that a
noisy machine hurts both alike, and prints one JSON object: per run the rollout seconds per
iteration (median), the rounds, the episodes drawn and the mixed groups found per iteration,
and the ratios of the rollout time pair by pair.

Usage (the oracle, fast on CPU; the demo's SFT policy):
    python benchmarks/sampling_rounds.py --config configs/demo.yaml --policy R/checkpoints/sft \
        --iterations 10 --pairs 2 -- --world real --set post_train.coevolve_every=0 \
        --set 'post_train.data=[]' --set rollout.mixed_groups=8 --set rollout.max_sampling_rounds=8
Everything after ``--`` goes to ``rehearse post-train`` as it is (``--world``, ``--simulator``,
``--set`` ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace, growth: int, run_dir: Path) -> dict[str, Any]:
    """One post-training run with ``rollout.round_growth`` = growth; its per-iteration figures."""
    cmd = [
        sys.executable,
        "-m",
        "cluster.cli",
        "post-train",
        "--config",
        args.config,
        "--policy",
        args.policy,
        "--iterations",
        str(args.iterations),
        "--run-dir",
        str(run_dir),
        "--no-progress",
        "--set",
        f"rollout.round_growth={growth}",
        "--set",
        "post_train.eval_every=0",
        "--set",
        "post_train.video_every=0",
        *args.post_train,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise SystemExit(f"post-train with round_growth={growth} failed:\n{tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "timers/rollout_s" in r]
    episodes = [r["rollout/episodes"] for r in rows]  # cumulative
    per_it = [b - a for a, b in zip([0.0, *episodes[:-1]], episodes, strict=True)]
    return {
        "round_growth": growth,
        "rollout_s_median": statistics.median(r["timers/rollout_s"] for r in rows),
        "rollout_s_total": sum(r["timers/rollout_s"] for r in rows),
        "rounds_mean": statistics.fmean(r["rollout/sampling_rounds"] for r in rows),
        "episodes_per_iteration": statistics.fmean(per_it),
        "mixed_groups_mean": statistics.fmean(r["rollout/mixed_groups"] for r in rows),
        "process_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ours, rest = argv[:split], argv[split + 1 :]  # rest: the post-train arguments
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--policy", required=True, help="SFT policy checkpoint")
    p.add_argument("--iterations", type=int, default=10, help="iterations per run")
    p.add_argument("--pairs", type=int, default=2, help="A B pairs (growth 1, --growth)")
    p.add_argument("--growth", type=int, default=4, help="round_growth of the B runs")
    args = p.parse_args(ours)
    args.post_train = rest
    if args.iterations < 1 or args.pairs < 1 or args.growth < 1:
        p.error("--iterations, --pairs and --growth must be >= 1")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sampling-rounds-") as tmp:
        for i in range(args.pairs):
            for growth in (1, args.growth):
                r = run(args, growth, Path(tmp) / f"pair{i}-growth{growth}")
                r["pair"] = i
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    fixed = [r for r in results if r["round_growth"] == 1]
    grown = [r for r in results if r["round_growth"] == args.growth]
    print(
        json.dumps(
            {
                "runs": results,
                "rollout_time_ratio_per_pair": [
                    a["rollout_s_total"] / b["rollout_s_total"]
                    for a, b in zip(fixed, grown, strict=True)
                ],
                "rounds_per_iteration": {
                    "growth_1": statistics.fmean(r["rounds_mean"] for r in fixed),
                    f"growth_{args.growth}": statistics.fmean(r["rounds_mean"] for r in grown),
                },
                "episodes_per_iteration": {
                    "growth_1": statistics.fmean(r["episodes_per_iteration"] for r in fixed),
                    f"growth_{args.growth}": statistics.fmean(
                        r["episodes_per_iteration"] for r in grown
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
