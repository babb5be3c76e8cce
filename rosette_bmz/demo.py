"""``rosette-bmz demo``: the main job, end to end, on the shipped defaults.

1. export the shipped demo checkpoint (``rosette_bmz/data/rosette_demo.pt``) into a BioImage
   Model Zoo package (rdf.yaml + model_package/, checked with ``bioimageio.core.test_model``);
2. predict the bundled synthetic sample (``rosette_bmz/data/sample_outlines.tif``, 1024 x 1024
   Cellpose-style outlines) from that rdf.yaml with the onnxruntime backend;
3. compare the proposals with the sample's known rosettes and 4-cell decoys.

Everything goes into one output folder; open ``sample_rosettes.tif`` as a labels layer and
``sample_rosettes.csv`` as points in napari next to ``sample_outlines.tif``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_STEM = "sample"


def demo_checkpoint() -> Path:
    """The shipped demo weights (package data; see training/README.md for how they were made)."""
    return DATA_DIR / "rosette_demo.pt"


def run_demo(out: str | Path = "out/demo", backend: str = "onnx", run_test: bool = True) -> dict[str, Any]:
    """Export the demo weights, predict the bundled sample, score it. Returns a summary dict."""
    from .errors import CheckpointError, EvaluationError
    from .export import export_package
    from .inputs import read_image
    from .metrics import MetricsAccumulator
    from .runner import predict_files

    out = Path(out)
    ckpt = demo_checkpoint()
    if not ckpt.is_file():
        raise CheckpointError(f"demo checkpoint {ckpt}: no such file (the installed package is incomplete; "
                              "reinstall rosette-bmz)")
    sample = DATA_DIR / f"{SAMPLE_STEM}_outlines.tif"
    if not sample.is_file():
        raise EvaluationError(f"bundled sample {sample}: no such file")
    log.info("exporting %s", ckpt)
    rdf = export_package(ckpt, out / "package", force=True, run_test=run_test)
    (result,) = predict_files([sample], rdf, backend, "outlines", out, overlay=True, progress=True)
    if not result.ok:
        raise EvaluationError(result.error)
    meta = json.loads((DATA_DIR / f"{SAMPLE_STEM}.json").read_text())
    truth = read_image(DATA_DIR / f"{SAMPLE_STEM}_rosettes.tif")
    acc = MetricsAccumulator()
    acc.add(read_image(result.outputs["prob"]), truth, meta.get("decoys", []), name=SAMPLE_STEM)
    s = acc.summary()
    return {"rdf": str(rdf), "outputs": {k: str(v) for k, v in result.outputs.items()},
            "n_proposals": result.n_proposals, "n_rosettes": s["n_rosettes"], "n_detected": s["n_detected"],
            "n_proposals_matched": s["n_proposals_matched"], "n_decoys": s["n_decoys"],
            "n_decoys_hit": s["n_decoys_hit"], "seconds": result.seconds}
