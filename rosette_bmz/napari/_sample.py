"""Sample data: the bundled synthetic sample (1024 x 1024, generator seed 9000, noise 0.5)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_data", "DATA"]

DATA = Path(__file__).resolve().parents[1] / "data"


def sample_data() -> list[tuple]:
    """The sample's cell outlines (image, what the model reads) and its cells (labels, as a
    Cellpose segmentation gives them); detect rosettes on either with the Rosette review widget."""
    import tifffile

    outlines = tifffile.imread(DATA / "sample_outlines.tif")
    cells = tifffile.imread(DATA / "sample_labels.tif")
    return [
        (cells, {"name": "sample_labels", "opacity": 0.3, "visible": False}, "labels"),
        (outlines, {"name": "sample_outlines", "colormap": "gray", "contrast_limits": (0, 1)}, "image"),
    ]
