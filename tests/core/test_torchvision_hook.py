"""The venv's torchvision hook (``core.torchvision_hook``, installed by ``scripts/setup.sh`` as a
.pth line): plain imports work in a fresh interpreter of the venv, outside the project."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PTH = Path(sysconfig.get_paths()["purelib"]) / "rehearse-torchvision.pth"


def _fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_setup_installed_the_hook_and_startup_stays_light(tmp_path) -> None:
    assert PTH.is_file(), f"{PTH} missing: run scripts/setup.sh (make setup)"
    out = _fresh_python(
        "import sys; print([type(f).__name__ for f in sys.meta_path][0], 'torch' in sys.modules)",
        tmp_path,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.split() == ["TorchvisionFixFinder", "False"]  # first finder, no torch yet


@pytest.mark.slow
def test_plain_hugging_face_imports_work_in_a_fresh_interpreter(tmp_path) -> None:
    code = (
        "import torchvision, peft, timm, open_clip\n"
        "from transformers import LlamaForCausalLM\n"
        "import sys, torch\n"
        "assert torch.ops.torchvision.nms is not None\n"
        "print(any(type(f).__name__ == 'TorchvisionFixFinder' for f in sys.meta_path))\n"
    )
    out = _fresh_python(code, tmp_path)  # a folder outside the project: only the venv counts
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"  # the finder removed itself after its one use
