#!/usr/bin/env bash
# Install (pinned, into .venv) and run the whole test suite. This is the README's test command
# and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"

# The committed BioImage Model Zoo package (issue 7), checked by its real consumers. Only on a full
# run (no pytest arguments), as in CI; skip with SKIP_PACKAGE_CHECKS=1. About 1-2 min once the
# client venvs under .venvs/ exist; building them the first time takes about 6 min.
if [ $# -eq 0 ] && [ -z "${SKIP_PACKAGE_CHECKS:-}" ] && [ -f rdf.yaml ]; then
    .venv/bin/bioimageio test rdf.yaml                 # bioimageio.core 0.11 (this project)
    bash scripts/spec_matrix.sh rdf.yaml               # spec 0.5.7.4/0.5.9.1/0.5.12.0/0.5.14.3 + core 0.10.2 test
    bash scripts/biapy_check.sh rdf.yaml               # BiaPy 3.7.1 accepts and reproduces the test output
fi
