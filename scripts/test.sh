#!/usr/bin/env bash
# Install (pinned, into .venv) and run the whole test suite. This is the README's test command
# and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
