"""Compatibility shims for the installed stack, applied once at import time.

torchvision 0.28's only wheel for torch 2.13 is a CUDA build; on a CPU-only torch its import fails
with ``operator torchvision::nms does not exist`` while registering fake (meta) kernels, which in
turn breaks ``import timm`` and ``import open_clip``. Defining the two missing operator schemas
before torchvision's first import lets it load. Where torchvision imports cleanly (GPU machines,
matching CPU builds) this module does nothing.
"""

from __future__ import annotations

import importlib.util

_APPLIED = False

# Schemas of the torchvision operators whose fake kernels are registered at import time.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _op_exists(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def apply_torchvision_fix() -> bool:
    """Define torchvision's missing operator schemas if its C++ kernels did not register them.

    Returns True when the fix was applied, False when it was not needed (or torchvision is
    absent). Safe to call many times.
    """
    global _APPLIED
    if _APPLIED:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    import sys

    if "torchvision" in sys.modules:  # already imported (cleanly, or the fix is too late)
        return False
    import torch

    # torchvision loads its C++ extension first; if that registered the ops, nothing to do.
    try:
        spec = importlib.util.find_spec("torchvision")
        assert spec is not None and spec.submodule_search_locations
        import glob
        import os

        libs = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
        if libs:
            try:
                torch.ops.load_library(libs[0])
            except OSError:
                pass  # a CUDA build on a CPU torch: the library does not load
    except Exception:  # pragma: no cover - discovery is best effort
        pass
    missing = [n for n in _SCHEMAS if not _op_exists(n)]
    if not missing:
        return False
    lib = torch.library.Library("torchvision", "DEF")  # kept alive in _KEEP below
    for name in missing:
        lib.define(_SCHEMAS[name])
    _KEEP.append(lib)
    _APPLIED = True
    return True


_KEEP: list = []


def check_torchvision() -> None:
    """Import torchvision (and open_clip) after the fix and raise a clear error if it fails."""
    apply_torchvision_fix()
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"torchvision does not import even after rehearse's compatibility fix: {e}. "
            "Reinstall with scripts/setup.sh so that torch and torchvision match."
        ) from e


apply_torchvision_fix()
