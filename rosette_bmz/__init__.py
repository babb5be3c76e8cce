"""rosette-bmz: the Nematostella rosette detector as a BioImage Model Zoo package.

The public front door mirrors the CLI; names are imported lazily so that
``import rosette_bmz`` stays cheap (no torch until a model is needed).

    import rosette_bmz as rb
    x = rb.from_labels(labels)                 # published 2-channel input
    loaded = rb.load_checkpoint("model.pt")    # eval-mode AttentionUNet, width inferred
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # inputs
    "InputError": "inputs", "from_outlines": "inputs", "from_labels": "inputs", "from_channels": "inputs",
    "build_input": "inputs", "read_image": "inputs", "load_input": "inputs", "inner_outlines": "inputs",
    # model + checkpoints
    "AttentionUNet": "model", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    # jobs (one module each)
    "generate": "synth", "write_dataset": "synth", "load_dataset": "synth", "SynthImage": "synth",
    "SynthError": "synth",
    "export_package": "export",
    "run_demo": "demo",
    "predict": "predict", "predict_files": "predict", "load_predictor": "predict",
    "find_proposals": "proposals",
    # evaluation: model-card metrics, classical baseline
    "evaluate_dataset": "evaluate", "load_eval_dataset": "evaluate", "EvaluationError": "evaluate",
    "MetricsAccumulator": "metrics", "detect_rosettes": "baseline",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rosette_bmz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
