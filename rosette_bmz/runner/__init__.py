"""The tiled runner: any image size, four weight formats, memory O(tile) for images on disk.

* :mod:`.tiling`   block geometry (halo and published plans, border mirroring, memory budgets);
* :mod:`.models`   where the weights come from (rdf.yaml, checkpoint, module) and conversions;
* :mod:`.backends` one small adapter per weight format (onnx, torch, torchscript, bioimageio);
* :mod:`.sources`  what tiles are cut from (an array, or an outline/label image read lazily);
* :mod:`.engine`   :class:`Predictor`, :func:`load_predictor`, :func:`predict`;
* :mod:`.images`   files and folders in, probability maps and proposals out.
"""

from __future__ import annotations

from .engine import (DEFAULT_CONTEXT, DEFAULT_PAD, DIHEDRAL, MODES, Predictor, load_predictor, predict, predict_source,
                     predict_tta)
from .images import STREAM_PIXELS, FileResult, collect_inputs, predict_file, predict_files
from .models import ModelSource, default_threads, resolve_model
from .tiling import (ACTIVATION_BUDGET, DEFAULT_TILE, MAX_IN_MEMORY_BUDGET, AxisPlan, default_tile, halo_plan,
                     in_memory_budget, mirror_index, published_plan)

__all__ = ["DEFAULT_CONTEXT", "DEFAULT_PAD", "DIHEDRAL", "MODES", "Predictor", "load_predictor", "predict",
           "predict_source", "predict_tta",
           "STREAM_PIXELS", "FileResult", "collect_inputs", "predict_file", "predict_files", "ModelSource",
           "default_threads", "resolve_model", "ACTIVATION_BUDGET", "DEFAULT_TILE", "MAX_IN_MEMORY_BUDGET",
           "AxisPlan", "default_tile", "halo_plan", "in_memory_budget", "mirror_index", "published_plan"]
