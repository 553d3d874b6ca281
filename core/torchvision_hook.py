"""Makes plain ``import torchvision`` (and what imports it: peft, transformers, timm, open_clip)
work in the project's venv, in any script or notebook, not only in the project's own modules.

``scripts/setup.sh`` writes ``rehearse-torchvision.pth`` into the venv's site-packages, whose one
line calls ``install()`` at every interpreter start. That puts a finder first on
``sys.meta_path`` which, on the first import of torchvision, removes itself, applies
``core.compat.apply_torchvision_fix`` (which does nothing where torchvision imports cleanly) and
lets the normal finders load torchvision. Until then it costs one name comparison per import and
imports nothing (not even torch).
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class TorchvisionFixFinder(importlib.abc.MetaPathFinder):
    """Applies the torchvision fix just before torchvision's first import; finds nothing."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            uninstall()
            from core.compat import apply_torchvision_fix

            apply_torchvision_fix()
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once; nothing if torchvision is imported)."""
    if "torchvision" in sys.modules or any(
        isinstance(f, TorchvisionFixFinder) for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, TorchvisionFixFinder())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TorchvisionFixFinder)]
