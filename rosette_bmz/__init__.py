"""rosette-bmz: the Nematostella rosette detector as a BioImage Model Zoo package.

The public front door mirrors the CLI; names are imported lazily so that
``import rosette_bmz`` stays cheap (no torch until a model is needed). No submodule shares a
name with anything in ``__all__``, so ``rb.predict`` is the function whatever was imported
before (a test imports every submodule first and then calls each name).

    import rosette_bmz as rb
    x = rb.from_labels(labels)                 # published 2-channel input
    loaded = rb.load_checkpoint("model.pt")    # eval-mode AttentionUNet, width inferred
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # foundations: errors, inputs, model
    "RosetteError": "errors", "InputError": "errors", "CheckpointError": "errors", "ModelError": "errors",
    "ExportError": "errors", "SynthError": "errors", "EvaluationError": "errors", "ConfigError": "errors",
    "from_outlines": "inputs", "from_labels": "inputs", "from_channels": "inputs", "build_input": "inputs",
    "read_image": "inputs", "load_input": "inputs", "inner_outlines": "inputs",
    "AttentionUNet": "model",
    # checkpoints, synthetic data, proposals, metrics, baseline
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "generate": "synth", "write_dataset": "synth", "load_dataset": "synth", "SynthImage": "synth",
    "find_proposals": "proposals",
    "MetricsAccumulator": "metrics", "detect_rosettes": "baseline",
    # package export, runner
    "export_package": "export",
    "predict": "runner", "predict_files": "runner", "load_predictor": "runner",
    # jobs
    "evaluate_dataset": "evaluate", "load_eval_dataset": "evaluate",
    "train": "training.train", "load_config": "training.config",
    "run_demo": "demo",
    "predict_files_dask": "distributed", "predict_image_dask": "distributed",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rosette_bmz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
