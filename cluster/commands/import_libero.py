"""``rehearse import-libero``: LIBERO demonstration HDF5 files -> a new episode store."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "import LIBERO demo HDF5 files (flip, no-op filter, resize, labels) into an episode store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hdf5",
        nargs="+",
        required=True,
        metavar="FILE",
        help="LIBERO *_demo.hdf5 files (one per task)",
    )
    p.add_argument("--out", required=True, help="output folder (a new episode store)")
    p.add_argument(
        "--demos-per-task",
        type=int,
        default=None,
        help="keep the first N demos of each file (the papers' setting: 5)",
    )
    p.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE")
    p.add_argument("--keep-noops", action="store_true", help="keep no-op steps (OFT drops them)")
    p.add_argument("--no-wrist", action="store_true", help="skip the wrist camera images")
    p.add_argument(
        "--no-camera",
        action="store_true",
        help="do not build a LIBERO scene to record the camera and controller limits",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trajectories.libero_import import import_demos

    if args.demos_per_task is not None and args.demos_per_task < 1:
        raise ValueError(f"--demos-per-task must be >= 1, got {args.demos_per_task}")
    if args.size is not None and args.size < 16:
        raise ValueError(f"--size must be >= 16, got {args.size}")
    for f in args.hdf5:  # before the progress bar: a refused run prints one line
        if not Path(f).is_file():
            raise FileNotFoundError(f"LIBERO demo file {f} does not exist")
    files = tqdm(args.hdf5, desc="import-libero", unit="file", disable=args.no_progress)
    summary = import_demos(
        files,
        args.out,
        demos_per_task=args.demos_per_task,
        size=args.size,
        keep_noops=args.keep_noops,
        wrist=not args.no_wrist,
        camera=not args.no_camera,
        overwrite=args.overwrite,
    )
    print(
        f"imported {summary['episodes']} demos ({summary['steps']} steps, "
        f"{summary['tasks']} tasks) into {summary['out']}"
    )
    return 0
