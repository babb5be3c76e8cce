"""BiaPy 3.7.1 as a real client of a bioimage.io model package (run by scripts/biapy_check.sh).

Runs inside the BiaPy venv (.venvs/biapy), never in the project's own: BiaPy pins
bioimageio.core 0.9.6 / bioimageio.spec 0.5.7.4, which the project's venv does not have.

    python scripts/biapy_client.py RDF [--tol 1e-3] [--workdir DIR]

RDF is an rdf.yaml / bioimageio.yaml, a package folder holding one, or a package .zip.
Every verdict comes from BiaPy's or bioimageio's own code:

  [1] biapy.models.check_bmz_model_compatibility(raw rdf dict): the call the bioimage.io
      collection CI makes to decide whether BiaPy can consume a model.
  [2] the same function called the way BiaPy's workflow calls it (check_bmz_args): on an
      index-style entry, with the semantic-segmentation 2D workflow and DATA.N_CLASSES.
  [3] bioimageio.spec.load_description(RDF) under BiaPy's pinned spec, as BiaPy loads the
      package at run time; a failed validation rejects.
  [4] BiaPy(cfg).test() with MODEL.SOURCE="bmz" on the package's own test input (written as a
      Y,X,C .tif); BiaPy's prediction must equal the package's test output within --tol (max abs
      difference). This catches a double sigmoid, a normalisation BiaPy adds on its own, a wrong
      channel order or tile seams.

Exit status: 0 = ACCEPTED, 1 = REJECTED (the reasons are printed), 2 = bad arguments.

Two adaptations to this machine, neither touching BiaPy's decisions:
  * torchvision: the only torchvision wheel here is a CUDA build whose _C.so cannot load beside
    the CPU torch, and `import torchvision` (which timm, hence BiaPy, needs) then fails on
    registering fake kernels for the undefined ops torchvision::nms / qnms. When _C.so does not
    load, their schemas are defined (no kernels: BiaPy's semantic-segmentation path never runs
    them; a call would fail loudly).
  * offline lookup: BiaPy 3.7.1 resolves MODEL.BMZ.SOURCE_MODEL_ID only through the online
    bioimage.io index (biapy.models.find_bmz_models). For the local RDF path, and only for it,
    the lookup returns the local package in the index's entry layout; the rest (compatibility
    check, load_description, load_torch_model, normalisation, tiling, writing) is BiaPy's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
WORKFLOW = "SEMANTIC_SEG"


def define_torchvision_op_schemas() -> None:
    """Let `import torchvision` succeed when its compiled ops cannot load (see the docstring)."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    for so in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(so))
            return  # a torchvision that matches torch: nothing to do
        except (OSError, RuntimeError):
            break
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    define_torchvision_op_schemas.lib = lib  # the schemas live as long as the Library object


def find_rdf(path: Path, scratch: Path) -> Path:
    """The rdf file of a package given as an rdf file, a folder or a .zip (extracted to scratch)."""
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            z.extractall(scratch / "package")  # zipfile drops absolute and '..' members' prefixes
        return find_rdf(scratch / "package", scratch)
    if path.is_dir():
        for name in RDF_NAMES:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.bioimageio.yaml"))
        if found:
            return found[0]
        raise FileNotFoundError(f"{path} holds no {' / '.join(RDF_NAMES)} / *.bioimageio.yaml")
    return path


def heading(text: str) -> None:
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}", flush=True)


def report(compat: dict) -> str | None:
    """Print BiaPy's compatibility report; its reason when it rejects, else None."""
    for key in ("error", "reason_message", "preproc_info", "opts", "workflow_info"):
        value = compat.get(key)
        print(f"  {key:15s}: {value.strip() if isinstance(value, str) else value}")
    if not compat["error"]:
        return None
    return compat["reason_message"].strip() or "rejected without a reason"


def index_entry(rdf: dict, rdf_path: Path) -> dict:
    """The local package in the layout of one biapy.models.find_bmz_models() result."""
    src = str(rdf_path)
    return {"artifact_path": src, "id": src, "alias": src, "nickname": src, "rdf_source": src,
            "version": rdf.get("version"), "format_version": rdf.get("format_version"),
            "urls": {}, "raw": {"type": "model", "manifest": rdf}}


def test_tensor(rdf: dict, rdf_path: Path, kind: str) -> "np.ndarray":
    tensors = rdf.get(kind) or []
    if len(tensors) != 1:
        raise ValueError(f"the rdf declares {len(tensors)} {kind}; this check needs exactly one")
    source = (tensors[0].get("test_tensor") or {}).get("source")
    if not source:
        raise ValueError(f"{kind}[0] declares no test_tensor.source")
    file = rdf_path.parent / source
    if file.suffix != ".npy":
        raise ValueError(f"{kind}[0].test_tensor is {source}; only .npy test tensors are read here")
    return np.load(file, allow_pickle=False)  # never unpickle a package file


def biapy_prediction(rdf: dict, rdf_path: Path, x: "np.ndarray", workdir: Path) -> "np.ndarray":
    """BiaPy's own test-phase prediction for x (1, C, Y, X) with the package as a bmz model."""
    import tifffile
    from biapy import BiaPy

    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"test input has shape {x.shape}; expected (1, C, Y, X)")
    images = workdir / "test_x"
    images.mkdir(parents=True)
    tifffile.imwrite(images / "test_input.tif", np.moveaxis(x[0], 0, -1))  # BiaPy reads Y, X, C
    _, channels, height, width = x.shape
    config = {
        "SYSTEM": {"NUM_CPUS": 2, "NUM_WORKERS": 0, "SEED": 0},
        "PROBLEM": {"TYPE": WORKFLOW, "NDIM": "2D"},
        # BiaPy replaces Y, X (and the normalisation) with what the RDF declares
        "DATA": {"PATCH_SIZE": (height, width, channels), "N_CLASSES": 2,
                 "TEST": {"PATH": str(images), "LOAD_GT": False, "IN_MEMORY": True}},
        "MODEL": {"SOURCE": "bmz", "BMZ": {"SOURCE_MODEL_ID": str(rdf_path)}},
        "TRAIN": {"ENABLE": False},
        "TEST": {"ENABLE": True, "FULL_IMG": False},
    }
    results = workdir / "results"
    BiaPy(config, result_dir=str(results), name="rosette_check", run_id=1, gpu="", verbose=True).test()
    written = sorted(p for p in results.rglob("*.tif*") if p.stem == "test_input")
    print("  BiaPy wrote: " + ", ".join(str(p.relative_to(results)) for p in written))
    raw = [p for p in written if p.parent.name == "per_image"]
    if len(raw) != 1:
        raise RuntimeError(f"expected one raw prediction in a per_image folder under {results}, "
                           f"found {[str(p) for p in written]}")
    return np.asarray(tifffile.imread(raw[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Is a bioimage.io package accepted by BiaPy 3.7.1?")
    ap.add_argument("rdf", type=Path, help="rdf.yaml / bioimageio.yaml, a package folder or a .zip")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="largest max abs difference allowed between BiaPy's prediction and the "
                         "package's test output (default 1e-3)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where BiaPy's input and results go (default: a new temporary folder)")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="biapy_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rdf_path = find_rdf(args.rdf.resolve(), workdir).resolve()
    except (FileNotFoundError, zipfile.BadZipFile) as e:
        print(f"[biapy] {e}", file=sys.stderr)
        return 2

    define_torchvision_op_schemas()
    import biapy
    import biapy.models
    import bioimageio.core
    import bioimageio.spec
    import torch
    import yaml

    print(f"biapy {biapy.__version__} | bioimageio.core {bioimageio.core.__version__} | "
          f"bioimageio.spec {bioimageio.spec.__version__} | torch {torch.__version__}")
    print(f"package rdf: {rdf_path}\nwork folder: {workdir}")
    reasons: list[str] = []
    rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    if not isinstance(rdf, dict):
        print(f"[biapy] {rdf_path} is not a YAML mapping", file=sys.stderr)
        return 2
    if rdf.get("type") != "model":
        reasons.append(f"[1] rdf type is {rdf.get('type')!r}, not 'model'")

    heading("[1] check_bmz_model_compatibility(raw rdf)  (bioimage.io collection CI)")
    reason = report(biapy.models.check_bmz_model_compatibility(rdf))
    if reason:
        reasons.append(f"[1] {reason}")

    entry = index_entry(rdf, rdf_path)
    heading(f"[2] check_bmz_model_compatibility as BiaPy's workflow calls it ({WORKFLOW}, 2D, N_CLASSES=2)")
    reason = report(biapy.models.check_bmz_model_compatibility(
        entry, workflow_specs={"workflow_type": WORKFLOW, "ndim": "2D", "nclasses": 2}))
    if reason:
        reasons.append(f"[2] {reason}")

    heading(f"[3] bioimageio.spec {bioimageio.spec.__version__} load_description(rdf)")
    try:
        descr = bioimageio.spec.load_description(str(rdf_path))
        summary = descr.validation_summary
        print(f"  loaded as {type(descr).__name__}; validation status: {summary.status}")
        if summary.status == "failed":
            for detail in summary.details:
                for err in detail.errors:
                    print(f"    error at {'.'.join(map(str, err.loc))}: {err.msg}")
            reasons.append("[3] bioimageio.spec validation failed")
    except Exception as e:
        print(f"  load_description raised {type(e).__name__}: {e}")
        reasons.append(f"[3] load_description failed: {type(e).__name__}: {e}")

    heading("[4] BiaPy(cfg).test() with MODEL.SOURCE='bmz' on the package's test input")
    original_find = biapy.models.find_bmz_models

    def find_bmz_models(model_ID=None, *a, **kw):
        if model_ID == str(rdf_path):
            print(f"  [offline lookup] find_bmz_models({model_ID!r}) -> the local package")
            return [entry]
        return original_find(model_ID, *a, **kw)

    biapy.models.find_bmz_models = find_bmz_models  # check_bmz_args looks it up in this module
    try:
        x = test_tensor(rdf, rdf_path, "inputs")
        expected = np.squeeze(test_tensor(rdf, rdf_path, "outputs")).astype(np.float64)
        got = np.squeeze(biapy_prediction(rdf, rdf_path, x, workdir)).astype(np.float64)
        if got.shape != expected.shape:
            reasons.append(f"[4] BiaPy's prediction has shape {got.shape}, the test output {expected.shape}")
        else:
            diff = np.abs(got - expected)
            print(f"BiaPy vs the package's test output: max abs diff {diff.max():.3g}, "
                  f"mean {diff.mean():.3g} (tolerance {args.tol:g})")
            if not diff.max() <= args.tol:
                reasons.append(f"[4] BiaPy's prediction differs from the package's test output: "
                               f"max abs diff {diff.max():.3g} > {args.tol:g}")
    except BaseException as e:  # BiaPy calls sys.exit on some configuration errors
        if isinstance(e, KeyboardInterrupt):
            raise
        print(traceback.format_exc()[-4000:])
        reasons.append(f"[4] BiaPy inference failed: {type(e).__name__}: {str(e).strip()[:600]}")
    finally:
        biapy.models.find_bmz_models = original_find

    heading("VERDICT")
    if reasons:
        print("REJECTED")
        for r in reasons:
            print("  - " + r.replace("\n", "\n    "))
        return 1
    print("ACCEPTED (BiaPy's compatibility checks pass and its inference reproduces the test output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
