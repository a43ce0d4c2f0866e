#!/usr/bin/env bash
# Set up everything im-portrait needs on a Debian/Ubuntu machine: system packages (headless GL,
# Xvfb), a virtual environment in .venv with the CPU build of torch and the project (editable).
# Safe to run again: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xvfb xauth libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libgl1)
# the OpenXR runtime the XR tests run against (../shared/xr-runtime: Monado, simulated headset) loads
# these; libxtst6: the tests press Esc in the mirror window through XTEST
APT_PACKAGES+=(libvulkan1 mesa-vulkan-drivers libcjson1 libusb-1.0-0 libudev1 libx11-xcb1 libxcb-randr0 libglx0 libxtst6)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

# Re-install only when the dependency list changed (hash of pyproject.toml + this script).
stamp=.venv/.im-portrait-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first run takes about a minute; log: .venv/pip.log)"
  : > .venv/pip.log
  pip_install() {
    if ! .venv/bin/python -m pip install "$@" >> .venv/pip.log 2>&1; then
      tail -n 30 .venv/pip.log
      echo "setup: 'pip install $*' failed; the full log is .venv/pip.log" >&2
      exit 1
    fi
  }
  pip_install --upgrade pip
  # The pinned CPU build; an unpinned torch would pull a multi-GB CUDA build.
  pip_install "torch==2.13.0"
  # onnx and protobuf pinned for mediapipe 0.10.21 (protobuf < 5): a newer onnx would pull protobuf 7
  pip_install "onnx==1.17.0" "onnxruntime==1.30.0" "protobuf>=4.25.8,<5"
  pip_install -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Byte-compile the project's own modules (an editable install leaves them as source, and with
# PYTHONDONTWRITEBYTECODE set, as on some machines, every launch compiles them again): ~0.1 s less
# in front of imp-viewer's first frame. Incremental: only changed files are compiled.
.venv/bin/python -m compileall -q model app bench >/dev/null

# The demo model as ONNX in the cache (imp export-onnx, ~5-20 s; skipped when the cached file is
# current): imp-viewer's first clip then runs in ONNX Runtime without importing torch. Setup goes on
# without it.
if ! .venv/bin/imp export-onnx --if-stale > .venv/export-onnx.log 2>&1; then
  echo "setup: warning: could not export the demo model to ONNX (the viewer starts slower); see .venv/export-onnx.log" >&2
fi
