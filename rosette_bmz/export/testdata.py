"""The package's test image: a synthetic tissue with rosettes, as the exported model reads it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import PACKAGE_MIN_SIZE

__all__ = ["TestData", "build_test_data", "TEST_SEED", "TEST_SIZE"]

#: Synthetic test image: ``rosette_bmz.synth.generate(TEST_SIZE, seed=TEST_SEED)`` (one block).
TEST_SEED = 1
TEST_SIZE = PACKAGE_MIN_SIZE


@dataclass
class TestData:
    """What the package's test tensors are made of."""

    model_input: np.ndarray      # (1, C, H, W) float32 as the exported model reads it
    channels: np.ndarray         # (1, 2, H, W) float32: the published 2-channel input (Python builder)
    n_rosettes: int
    seed: int


def build_test_data(input_kind: str = "channels", seed: int = TEST_SEED, size: int = TEST_SIZE) -> TestData:
    """Synthetic test image with rosettes, as the exported model of ``input_kind`` reads it."""
    from ..inputs import from_labels, from_outlines
    from ..synth import generate

    img = generate(size, seed=seed)
    n_rosettes = len(img.meta.get("rosettes", []))
    if input_kind == "labels":
        channels = from_labels(img.labels, name=f"synthetic labels (seed {seed})")
        model_input = img.labels.astype(np.float32)[None, None]
    else:
        channels = from_outlines(img.outlines, name=f"synthetic outlines (seed {seed})")
        model_input = (channels[None] if input_kind == "channels"
                       else (img.outlines > 0).astype(np.float32)[None, None])
    return TestData(np.ascontiguousarray(model_input, dtype=np.float32),
                    np.ascontiguousarray(channels[None], dtype=np.float32), n_rosettes, seed)
