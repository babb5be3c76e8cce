#!/usr/bin/env bash
# Install (pinned, into .venv) and run the whole test suite. This is the README's test command
# and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_gui.sh   # Xvfb + the libraries Qt needs: the napari widget tests run on a virtual display

# The committed BioImage Model Zoo package (issue 7) is checked after the tests by its real
# consumers, each in its own venv under .venvs/ (git-ignored). Only on a full run (no pytest
# arguments), as in CI; skip with SKIP_PACKAGE_CHECKS=1. The venvs (~6 min the first time, mostly
# waiting on pip) are built in the background while pytest runs.
PACKAGE_CHECKS=0
if [ $# -eq 0 ] && [ -z "${SKIP_PACKAGE_CHECKS:-}" ] && [ -f rdf.yaml ]; then
    PACKAGE_CHECKS=1
    mkdir -p .venvs
    (bash scripts/spec_matrix.sh --setup && bash scripts/biapy_check.sh --setup) > .venvs/setup.log 2>&1 &
    SETUP_PID=$!
    trap 'kill "$SETUP_PID" 2>/dev/null || true' EXIT
fi

.venv/bin/ruff check .                        # lint (pyproject.toml [tool.ruff])
.venv/bin/python -m pytest -q "$@"

if [ "$PACKAGE_CHECKS" = 1 ]; then
    wait "$SETUP_PID" || { tail -n 40 .venvs/setup.log; echo "building the client venvs failed" >&2; exit 1; }
    .venv/bin/bioimageio test rdf.yaml                 # bioimageio.core 0.11 (this project)
    bash scripts/spec_matrix.sh rdf.yaml               # spec 0.5.7.4/0.5.9.1/0.5.12.0/0.5.14.3 + core 0.10.2 test
    bash scripts/biapy_check.sh rdf.yaml               # BiaPy 3.7.1 accepts and reproduces the test output
fi

