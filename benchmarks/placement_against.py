"""Imagined env-steps/s of this checkout against an older one, with the same models.

Runs ``benchmarks/placement.py`` in turn from the older checkout (``--code OLD``, its
``--baseline-variant``, by default its services) and from this one (``--variant``, by default
the colocated placement), one process each, ``--pairs`` times (A B A B ...), so that a machine
whose speed drifts between minutes slows both alike; prints one JSON object with every run's
env-steps/s per round and median, and the ratio of the medians pair by pair. Each process
starts its own local Ray and loads the models (~1 minute a run on 2 cores).

Usage (issue 19's baseline, the code before the placements; the demo's models after
``rehearse demo --run-dir R``):
    python benchmarks/placement_against.py --code OLD --pairs 4 -- --config configs/demo.yaml \
        --policy R/checkpoints/sft --simulator R/simulator/checkpoint \
        --reflector R/reflector/best --data R/data/demos --rounds 3

An older checkout reads its own config (``--baseline-config OLD/configs/demo.yaml``) and refuses
checkpoint config keys it does not know: ``--baseline-policy`` etc. give it copies with those
keys removed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(args: list[str]) -> dict[str, Any]:
    """One ``placement.py`` process; its JSON (stderr passed through on failure)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "placement.py"), *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"placement.py {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def swap(args: list[str], key: str, value: str | None) -> list[str]:
    """``args`` with the value after ``key`` replaced (unchanged when value is None)."""
    if value is None:
        return args
    if key not in args:
        raise SystemExit(f"--baseline-{key[2:]} needs {key} among placement.py's arguments")
    out = list(args)
    out[out.index(key) + 1] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", required=True, help="the older checkout")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--baseline-variant", default="services")
    ap.add_argument("--variant", default="colocated")
    for key in ("config", "policy", "simulator", "reflector"):
        ap.add_argument(f"--baseline-{key}", default=None, help=f"its --{key} for the older code")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then placement.py's arguments")
    args = ap.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.pairs < 1:
        ap.error(f"--pairs must be >= 1, got {args.pairs}")
    if not (Path(args.code) / "actors" / "rollout_worker.py").is_file():
        ap.error(f"--code: {args.code} is not a checkout of this project")
    old = ["--code", args.code, "--variants", args.baseline_variant]
    rest_for_old = rest
    for key in ("config", "policy", "simulator", "reflector"):
        rest_for_old = swap(rest_for_old, f"--{key}", getattr(args, f"baseline_{key}"))
    runs: list[dict[str, Any]] = []
    for _ in range(args.pairs):
        a = run([*rest_for_old, *old])[args.baseline_variant]
        b = run([*rest, "--variants", args.variant])[args.variant]
        runs.append({"baseline": a, "new": b, "ratio": b["median"] / a["median"]})
        print(f"pair {len(runs)}: {a['median']:.0f} -> {b['median']:.0f}", file=sys.stderr)
    ratios = [r["ratio"] for r in runs]
    out = {
        "baseline_code": str(Path(args.code).resolve()),
        "baseline_variant": args.baseline_variant,
        "variant": args.variant,
        "pairs": [
            {
                "baseline_env_steps_per_s": r["baseline"]["env_steps_per_s"],
                "baseline_median": r["baseline"]["median"],
                "new_env_steps_per_s": r["new"]["env_steps_per_s"],
                "new_median": r["new"]["median"],
                "ratio": r["ratio"],
            }
            for r in runs
        ],
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
