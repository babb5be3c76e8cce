#!/usr/bin/env bash
# Validate one rdf.yaml under every bioimageio.spec version a consumer of the package runs, each in
# its own small venv under .venvs/ (git-ignored, built once, reused):
#   0.5.7.4   BiaPy 3.7.1                 0.5.9.1   ilastik / tiktorch
#   0.5.12.0  this project (bioimageio.core 0.11)   0.5.14.3  newest release
# then run `bioimageio test` under bioimageio.core 0.10.2 (what ilastik's tiktorch runs models with).
#
# usage: bash scripts/spec_matrix.sh [RDF ...]          (default: rdf.yaml)
#        SPEC_MATRIX_SKIP_CORE=1 bash scripts/spec_matrix.sh   (format validation only)
#        bash scripts/spec_matrix.sh --setup               (only build the venvs)
# Exit status 0 only if every RDF is valid under every version (and passes the core 0.10.2 test).
set -euo pipefail
cd "$(dirname "$0")/.."
VENVS=${VENVS:-.venvs}
SPEC_VERSIONS=${SPEC_VERSIONS:-"0.5.7.4 0.5.9.1 0.5.12.0 0.5.14.3"}
CORE_VERSION=${CORE_VERSION:-0.10.2}
PYDANTIC=${PYDANTIC:-2.12.5}   # pydantic 2.14 breaks older bioimageio.spec releases
SETUP_ONLY=0
if [ "${1:-}" = "--setup" ]; then SETUP_ONLY=1; shift; fi
RDFS=("$@")
[ ${#RDFS[@]} -eq 0 ] && RDFS=(rdf.yaml)

quiet_pip() {  # pip install, without the local-index "is ignored" warnings (pip's status is kept)
    local py=$1; shift
    { "$py" -m pip install -q "$@" 2>&1; } | { grep -v "is ignored: it is neither" || true; }
}

make_venv() {  # make_venv DIR CHECK_PY PIP_ARGS...
    local dir=$1 check=$2; shift 2
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    echo "[spec-matrix] building $dir ($*)"
    rm -rf "$dir"
    python3 -m venv "$dir"
    quiet_pip "$dir/bin/python" "$@"
    "$dir/bin/python" -c "$check"
}

for v in $SPEC_VERSIONS; do
    make_venv "$VENVS/spec-$v" \
        "import bioimageio.spec as s; assert s.__version__ == '$v', s.__version__" \
        "bioimageio.spec==$v" "pydantic==$PYDANTIC"
done
CORE_VENV="$VENVS/core-$CORE_VERSION"
if [ -z "${SPEC_MATRIX_SKIP_CORE:-}" ]; then
    # torch first: 2.13.0 is the CPU wheel on local disk; anything else pulls a CUDA build
    if ! { [ -x "$CORE_VENV/bin/python" ] && "$CORE_VENV/bin/python" -c \
            "import bioimageio.core as c, torch, onnxruntime; assert c.__version__ == '$CORE_VERSION'" \
            >/dev/null 2>&1; }; then
        echo "[spec-matrix] building $CORE_VENV"
        rm -rf "$CORE_VENV"
        python3 -m venv "$CORE_VENV"
        quiet_pip "$CORE_VENV/bin/python" torch==2.13.0
        quiet_pip "$CORE_VENV/bin/python" torch==2.13.0 "bioimageio.core==$CORE_VERSION" onnxruntime \
            "pydantic==$PYDANTIC"
    fi
fi
[ "$SETUP_ONLY" = 1 ] && exit 0

status=0
for rdf in "${RDFS[@]}"; do
    for v in $SPEC_VERSIONS; do
        if "$VENVS/spec-$v/bin/python" - "$rdf" <<'EOF'
import sys
import bioimageio.spec as spec
from bioimageio.spec import InvalidDescr, load_description

path = sys.argv[1]
descr = load_description(path)
summary = descr.validation_summary
if isinstance(descr, InvalidDescr) or summary.status not in ("passed", "valid-format"):
    print(summary.format() if hasattr(summary, "format") else summary)
    sys.exit(1)
print(f"[spec-matrix] bioimageio.spec {spec.__version__}: {path} VALID "
      f"({type(descr).__name__} format {descr.format_version})")
EOF
        then :; else
            echo "[spec-matrix] bioimageio.spec $v: $rdf INVALID"
            status=1
        fi
    done
    if [ -z "${SPEC_MATRIX_SKIP_CORE:-}" ]; then
        if "$CORE_VENV/bin/bioimageio" test "$rdf" > "$CORE_VENV/last_test.log" 2>&1; then
            echo "[spec-matrix] bioimageio.core $CORE_VERSION: bioimageio test $rdf PASSED"
        else
            tail -n 60 "$CORE_VENV/last_test.log"
            echo "[spec-matrix] bioimageio.core $CORE_VERSION: bioimageio test $rdf FAILED"
            status=1
        fi
    fi
done
exit $status
