#!/usr/bin/env bash
# Create .venv with everything rosette-bmz needs, pinned (constraints.txt).
# torch 2.13.0 goes first: that exact version is the CPU wheel; any other version or range
# would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,dask,napari,gui-test,openvino]"
"$VENV/bin/python" -m pip check
