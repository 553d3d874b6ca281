"""Imports flow one way: a package imports only the packages below it, and Ray stays at the edge.

The allowed order is the README's package table: ``core`` at the bottom (imports nothing of the
project), then the env and data packages, the model packages, the learner, the actors, and
``cluster`` (config, driver, placement, CLI) on top. Every import in every file counts, those
inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "envs": {"core"},
    "trajectories": {"core", "envs"},
    "policy": {"core", "envs", "trajectories"},
    "simulator_service": {"core", "envs", "trajectories"},
    "reflector_service": {"core", "envs", "trajectories"},
    "learner": {"core", "envs", "trajectories", "policy"},
    "actors": {
        "core", "envs", "trajectories", "policy", "simulator_service", "reflector_service",
        "learner",
    },
    "cluster": {
        "core", "envs", "trajectories", "policy", "simulator_service", "reflector_service",
        "learner", "actors",
    },
}  # fmt: skip
# files outside cluster/ that may import Ray: the thin clients of the Ray service actors
RAY_ALLOWED = {"actors/clients.py"}


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_packages(package: str) -> None:
    project = set(ALLOWED)
    bad = []
    for f in _files(package):
        for name in sorted((_imports(f) & project) - ALLOWED[package] - {package}):
            bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}: " + "; ".join(bad)


def test_ray_stays_at_the_edge() -> None:
    bad = []
    for package in sorted(set(ALLOWED) - {"cluster"}):
        for f in _files(package):
            rel = str(f.relative_to(ROOT))
            if "ray" in _imports(f) and rel not in RAY_ALLOWED:
                bad.append(rel)
    assert not bad, f"only cluster/ and {sorted(RAY_ALLOWED)} may import ray: {bad}"


def test_every_package_is_placed() -> None:
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(ALLOWED), f"place new packages in ALLOWED: {sorted(found ^ set(ALLOWED))}"
