"""The reference weight recipe of tests/fixtures/reference/README.md (test helper)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference"
RECIPE_SEED = 20261122
RECIPE_SHA256 = "2b072158f139fc36bea172a2e15d3d8ae06455dbca9cd659007afb6d4546e930"


def manifest() -> list[dict]:
    return json.loads((REFERENCE_DIR / "state_dict_manifest.json").read_text())["entries"]


def recipe_arrays() -> "OrderedDict[str, np.ndarray]":
    """Arrays by the recipe, in the manifest's key order."""
    entries = manifest()
    shapes = {e["key"]: tuple(e["shape"]) for e in entries}
    rng = np.random.default_rng(RECIPE_SEED)
    made = {}
    for key in sorted(shapes):
        shape = shapes[key]
        leaf = key.rsplit(".", 1)[1]
        if key.endswith("num_batches_tracked"):
            made[key] = np.zeros(shape, dtype=np.int64)
            continue
        if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            arr = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("running_mean", "bias"):
            arr = rng.normal(0.0, 0.1, shape)
        else:
            arr = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        made[key] = arr.astype(np.float32)
    return OrderedDict((e["key"], made[e["key"]]) for e in entries)


def recipe_sha256(arrays) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def recipe_state_dict():
    import torch

    return OrderedDict((k, torch.from_numpy(v)) for k, v in recipe_arrays().items())
