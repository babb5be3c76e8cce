"""What a person reads in the package: the README (model card) and the cover picture."""

from __future__ import annotations

import io
import json
import logging
import string
from pathlib import Path

import numpy as np

from .variants import Variant

log = logging.getLogger(__name__)

__all__ = ["render_cover", "validation_section", "input_section", "render_readme", "trained_on_synthetic",
           "COVER_MAX_BYTES"]

#: Covers must stay below 500 KB (BioImage Model Zoo guideline); RGB PNGs above this (480 KB) are palettised.
COVER_MAX_BYTES = 480_000
_DOCS = Path(__file__).with_name("package_docs")


def render_cover(channels: np.ndarray, prob: np.ndarray, path: Path) -> Path:
    """PNG, 2:1: left the input (outlines dark on white, thick band grey), right the overlay."""
    from PIL import Image

    thick, thin = channels[0] > 0.5, channels[1] > 0.5
    left = np.full(thin.shape + (3,), 255, dtype=np.uint8)
    left[thick] = (200, 200, 200)
    left[thin] = (40, 40, 40)
    base = np.full(thin.shape + (3,), 255.0)
    base[thin] = (120, 120, 120)
    p = np.clip(prob, 0.0, 1.0)[..., None]
    magenta = np.array([230.0, 0.0, 160.0])
    alpha = 0.9 * p ** 2  # gamma 2: the faint background haze of low probabilities stays light
    right = np.round(base * (1 - alpha) + magenta * alpha).astype(np.uint8)
    sep = np.full((thin.shape[0], 4, 3), 255, dtype=np.uint8)
    img = np.concatenate([left, sep, right], axis=1)
    h = thin.shape[0]
    pil = Image.fromarray(img).resize((2 * h, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    if buf.tell() > COVER_MAX_BYTES:  # busy images: a 256-colour palette keeps the cover small
        buf = io.BytesIO()
        pil.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())
    return path


#: Generalisation tables (``benchmarks/generalisation.py``) the model card shows when they lie beside
#: the checkpoint: file suffix, and the sentence before the table.
_GENERALISATION_TABLES = (
    (".generalisation.md",
     "**Other worlds** (from `{name}`, `benchmarks/generalisation.py`): synthetic test sets, most with one "
     "setting outside the training range (second column); each cell reads **model / baseline** (the classical "
     "vertex-multiplicity detector)."),
    (".generalisation_checked_tta.md",
     "**The same sets with the package's check** (from `{name}`, `benchmarks/generalisation.py --tta --check`): "
     "`rosette-bmz predict --tta --check` averages the network over the 8 rotations / flips and checks its "
     "proposals against the vertex graph of the same cells (kept with a junction of >= 5 cells or p > 0.9; "
     "junctions of >= 5 cells the network half-saw added). The probability map it writes stays the network's; "
     "these numbers score the rosettes it reports (bioimage.io consumers get the map only). Each cell reads "
     "**checked / baseline**."),
)


def validation_section(checkpoint: Path) -> str:
    """The package README's Validation: ``<stem>.eval.json`` (``rosette-bmz evaluate --out``) and,
    when present, the generalisation tables beside the checkpoint (:data:`_GENERALISATION_TABLES`)."""
    text = _evaluation_text(checkpoint)
    for suffix, intro in _GENERALISATION_TABLES:
        other = checkpoint.with_name(checkpoint.stem + suffix)
        if not other.is_file():
            continue
        try:
            table = "\n".join(ln for ln in other.read_text(encoding="utf-8").splitlines() if ln.startswith("|"))
        except OSError as exc:
            log.warning("ignoring unreadable generalisation table %s: %s", other, exc)
            table = ""
        if table:
            text += "\n\n" + intro.format(name=other.name) + "\n\n" + table
    return text


def _evaluation_text(checkpoint: Path) -> str:
    report = checkpoint.with_name(checkpoint.stem + ".eval.json")
    if report.is_file():
        try:
            data = json.loads(report.read_text())
            table = data.get("table_markdown")
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable evaluation report %s: %s", report, exc)
            table = None
        if table:
            source = data.get("data") or data.get("dataset") or ""
            where = f" on `{Path(str(source)).name}`" if source else ""
            return (f"Evaluation of these weights by `rosette-bmz evaluate`{where} (from `{report.name}`), "
                    "model and the classical vertex-multiplicity baseline side by side; definitions "
                    "follow the published model card (event recall: a rosette counts as found if >= 1 "
                    "of its pixels is >= 0.5).\n\n" + table.strip())
    return ("Not evaluated: no evaluation report (`" + report.name + "`, written by `rosette-bmz "
            "evaluate --out`) was found beside the checkpoint when this package was exported. The "
            "published model card reports, for the published weights on 54 held-out confocal images "
            "(269 rosettes): pixel Dice 0.51, event recall 88.8 %. Those numbers do not describe "
            "other weights.")


def input_section(variant: Variant) -> str:
    build = (
        "The published network reads two binary channels made from a Cellpose-style outline image "
        "`outlines` (thin 1 px lines inside each cell's border), in this order:\n\n"
        "| channel | content |\n|---|---|\n"
        "| 0 `thick_boundaries` | `skimage.segmentation.find_boundaries(outlines > 0, mode=\"thick\")` "
        "(a 2–3 px band) |\n"
        "| 1 `outlines` | `outlines > 0` (the thin lines) |\n\n"
        "From a label image (one integer per cell, e.g. Cellpose masks) draw the outlines first: a "
        "pixel of cell *i* is an outline pixel if one of its 4 direct neighbours is not *i* (another "
        "cell, background, or outside the image).\n\n"
        "```python\nimport numpy as np\nfrom skimage.segmentation import find_boundaries\n\n"
        "def inner_outlines(labels):\n"
        "    p = np.pad(labels, 1)\n    c = p[1:-1, 1:-1]\n"
        "    return ((p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)) & (c > 0)\n\n"
        "def two_channels(outlines):\n    fg = outlines > 0\n"
        "    return np.stack([find_boundaries(fg, mode=\"thick\"), fg]).astype(np.float32)  # (2, H, W)\n```\n\n"
        "or, with the `rosette-bmz` package: `rosette_bmz.from_outlines(outlines)` / "
        "`rosette_bmz.from_labels(labels)`.")
    if variant.kind == "channels":
        return build + ("\n\nThis package expects that (2, H, W) image, float32 0/1 (in Fiji: a 2-channel "
                        "32-bit stack; in ilastik: a 2-channel image).")
    if variant.kind == "outlines":
        return ("This package reads **one channel: the binary outline image itself** (0/1, 0/255 or "
                "boolean; every value > 0 is a line), and builds the two published channels inside the "
                "network with exactly the rule below (verified to give the same output as the Python "
                "builder on the test image).\n\n" + build)
    return ("This package reads **one channel: the cell label image itself** (e.g. Cellpose masks; "
            "whole numbers, 0 = background, fewer than 16,777,216 labels), and draws the outlines and "
            "the two published channels inside the network with exactly the rules below (verified to "
            "give the same output as the Python builder on the test image).\n\n" + build)


def render_readme(path: Path, fields: dict) -> Path:
    template = string.Template((_DOCS / "README.md.template").read_text(encoding="utf-8"))
    path.write_text(template.substitute(fields), encoding="utf-8")
    return path


def trained_on_synthetic(meta: dict) -> bool:
    """True if the trainer's sidecar says the weights were trained on ``rosette_bmz.synth`` data."""
    config = meta.get("training_config") if isinstance(meta.get("training_config"), dict) else {}
    data = json.dumps([meta.get("data"), config.get("data")], default=str).lower()
    return "synth" in data


