#!/usr/bin/env bash
# BiaPy 3.7.1 as a real client of the package: it must ACCEPT rdf.yaml (its own compatibility
# checks + bioimageio.spec 0.5.7.4) and its own inference on the package's test input must equal
# the package's test output within 1e-3 (no double sigmoid, no added normalisation, no seams).
# The client lives in its own venv (.venvs/biapy, built once, ~3 min) because BiaPy pins
# bioimageio.core 0.9.6 / pydantic < 2.13. Tools: ../shared/tools/biapy_check (beside the repo).
#
# usage: bash scripts/biapy_check.sh [RDF]     (default: rdf.yaml)
#        bash scripts/biapy_check.sh --setup   (only build the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_ONLY=0
if [ "${1:-}" = "--setup" ]; then SETUP_ONLY=1; shift; fi
RDF=${1:-rdf.yaml}
TOOLS=${BIAPY_TOOLS:-../shared/tools/biapy_check}
VENV=${BIAPY_VENV:-.venvs/biapy}
if [ ! -f "$TOOLS/check_biapy.py" ]; then
    echo "[biapy] $TOOLS/check_biapy.py not found (set BIAPY_TOOLS)" >&2
    exit 1
fi
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
        "from importlib.metadata import version; assert version('biapy') == '3.7.1'" >/dev/null 2>&1; }; then
    echo "[biapy] building $VENV"
    { bash "$TOOLS/setup_venv.sh" "$VENV" 2>&1; } | { grep -v "is ignored: it is neither" || true; }
fi
[ "$SETUP_ONLY" = 1 ] && exit 0
"$VENV/bin/python" "$TOOLS/check_biapy.py" "$RDF" --compare
