#!/usr/bin/env bash
# BiaPy 3.7.1 as a real client of the package. Everything it needs is in this repository:
# scripts/biapy_client.py (the check) and scripts/biapy_constraints.txt (the venv's exact versions).
#
# usage: bash scripts/biapy_check.sh [RDF]     (default: rdf.yaml; also a package folder or .zip)
#        bash scripts/biapy_check.sh --setup   (only build the venv)
#
# BiaPy 3.7.1 pins bioimageio.core 0.9.6 (hence bioimageio.spec 0.5.7.4, with pydantic held at
# 2.12.5), which conflicts with the project's bioimageio.core 0.11, so it gets a venv of its own:
# .venvs/biapy (git-ignored). BIAPY_VENV=DIR puts it elsewhere (a relative DIR is taken from the repo
# root); PYTHON=python3.11 picks the interpreter that builds it. It is built on first use (~4 min):
# the torch 2.13.0 CPU wheel first, then biapy==3.7.1 with every package pinned by
# scripts/biapy_constraints.txt.
#
# What the check does (all verdicts are BiaPy's or bioimageio's own code; see biapy_client.py):
#   [1] biapy.models.check_bmz_model_compatibility(raw rdf dict), the bioimage.io collection CI call;
#   [2] the same check as BiaPy's semantic-segmentation 2D workflow makes it (check_bmz_args);
#   [3] bioimageio.spec.load_description(RDF) under spec 0.5.7.4;
#   [4] a real BiaPy(cfg).test() with MODEL.SOURCE=bmz on the package's test input; its prediction
#       must equal the package's test output within 1e-3 (max abs diff; 3.3e-6 for rdf.yaml when written).
# It prints ACCEPTED or REJECTED with BiaPy's reasons; exit 0 = ACCEPTED, 1 = REJECTED, 2 = bad path.
#
# Manual check that it rejects broken packages (copies in a temp folder; the repo is untouched):
#   PY=${BIAPY_VENV:-.venvs/biapy}/bin/python
#   d=$(mktemp -d) && cp -r rdf.yaml model_package "$d"/
#   # a) binarize preprocessing -> REJECTED "[1] [all] Not recognized preprocessing found: binarize"
#   $PY -c "import sys,yaml; p=sys.argv[1]; r=yaml.safe_load(open(p));
#   r['inputs'][0]['preprocessing']=[{'id':'binarize','kwargs':{'threshold':0.5}}]
#   yaml.safe_dump(r,open(p,'w'),sort_keys=False)" "$d/rdf.yaml"
#   bash scripts/biapy_check.sh "$d/rdf.yaml"; echo "exit $?"                          # exit 1
#   # b) a dependencies file -> REJECTED "[1] [all] Couldn't load model for dependency check."
#   d=$(mktemp -d) && cp -r rdf.yaml model_package "$d"/
#   printf 'name: rosette\ndependencies: [python=3.11, pytorch]\n' > "$d/environment.yaml"
#   $PY -c "import sys,yaml; p=sys.argv[1]; r=yaml.safe_load(open(p));
#   r['weights']['pytorch_state_dict']['dependencies']={'source':'environment.yaml'}
#   yaml.safe_dump(r,open(p,'w'),sort_keys=False)" "$d/rdf.yaml"
#   bash scripts/biapy_check.sh "$d/rdf.yaml"; echo "exit $?"                          # exit 1
#   # c) test input channels swapped (sha256 updated) -> REJECTED "[4] ... max abs diff 0.999 > 0.001"
#   d=$(mktemp -d) && cp -r rdf.yaml model_package "$d"/
#   $PY -c "import sys,hashlib,numpy as np,yaml; d=sys.argv[1]; p=d+'/model_package/test_input.npy'
#   np.save(p,np.load(p)[:,::-1].copy()); r=yaml.safe_load(open(d+'/rdf.yaml'))
#   r['inputs'][0]['test_tensor']['sha256']=hashlib.sha256(open(p,'rb').read()).hexdigest()
#   yaml.safe_dump(r,open(d+'/rdf.yaml','w'),sort_keys=False)" "$d"
#   bash scripts/biapy_check.sh "$d/rdf.yaml"; echo "exit $?"                          # exit 1
set -euo pipefail
SETUP_ONLY=0
if [ "${1:-}" = "--setup" ]; then SETUP_ONLY=1; shift; fi
RDF=${1:-rdf.yaml}
# a relative RDF is taken from the caller's folder when it exists there, else from the repo root
case "$RDF" in /*) ;; *) [ -e "$RDF" ] && RDF="$PWD/$RDF" ;; esac
cd "$(dirname "$0")/.."
VENV=${BIAPY_VENV:-.venvs/biapy}
PYTHON=${PYTHON:-python3}

venv_ready() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "from importlib.metadata import version
assert version('biapy') == '3.7.1', version('biapy')" >/dev/null 2>&1
}

if ! venv_ready; then
    echo "[biapy] building $VENV (torch 2.13.0 CPU, then biapy 3.7.1 with scripts/biapy_constraints.txt)"
    start=$SECONDS
    "$PYTHON" -m venv "$VENV"
    # the local indexes of this machine print one harmless warning per package: keep the log readable
    quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }   # pipefail keeps pip's status
    # torch first, on its own: on the development machine the 2.13.0 CPU wheel lies in pip's
    # find-links (/opt/wheels) and must be in place before BiaPy's torch>=2.9 is resolved
    quiet "$VENV/bin/pip" install -q torch==2.13.0
    quiet "$VENV/bin/pip" install -q -c scripts/biapy_constraints.txt biapy==3.7.1 torch==2.13.0
    venv_ready || { echo "[biapy] built $VENV, but biapy 3.7.1 is not installed in it" >&2; exit 1; }
    echo "[biapy] $VENV ready in $((SECONDS - start)) s"
fi
[ "$SETUP_ONLY" = 1 ] && exit 0
exec "$VENV/bin/python" scripts/biapy_client.py "$RDF"
