"""Constants shared by more than one module: each has its home here and nowhere else.

Imports nothing (the onnx path and ``--help`` stay cheap). ``model.py`` keeps its own
literal ``DIVISOR`` because it is the package's stand-alone architecture file (torch only);
a test checks that the two agree.
"""

from __future__ import annotations

__all__ = ["DIVISOR", "DEFAULT_HALO", "INPUT_KINDS", "IMAGE_SUFFIXES", "BACKENDS", "PAD_MODES", "THRESHOLD",
           "MIN_PROPOSAL_SIZE", "DEFAULT_DECOY_RADIUS", "PUBLISHED_WINDOW", "PUBLISHED_OVERLAP", "PACKAGE_MIN_SIZE",
           "MIN_IMAGE_SIZE", "ZARR_SUFFIX", "DASK_CHUNK", "MIN_MULTIPLICITY", "MERGE_DISTANCE",
           "NEAR_MISS_DISTANCE", "CHECK_SURE", "CHECK_SUPPORT", "ROSETTE_SOURCES",
           "SMALL_CELL_FRACTION", "OUTLINE_STYLES", "TILINGS", "TISSUE_FREE_SHAPES", "EVAL_TRUTHS", "SYNTH_TRUTHS",
           "RDF_CONFIG_KEY",
           "PRECISIONS",
           "SUMMARY_SUFFIX", "SUMMARY_CSV", "GROUPINGS"]

#: Height and width of a network input must be multiples of this (four 2x poolings).
DIVISOR = 16

#: Output halo the package declares (pixels cropped from each side of a block) and the context
#: the runner crops from each inner tile side: 112 px covers the network's ~100 px receptive
#: field, so tiles agree with a whole-image pass (64 px left seams of up to 1.7e-1 in
#: bioimageio.core's blocking; docs/tiling.md).
DEFAULT_HALO = 112

#: What an input image is: the 2-channel input itself, a binary outline image, or a cell label image.
INPUT_KINDS: tuple[str, ...] = ("channels", "outlines", "labels")

#: Image files the runner, the trainer and the evaluator read.
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".npy", ".png")

#: A zarr / OME-Zarr store (a folder) whose name ends with this is read as one image (needs the
#: ``[dask]`` extra: zarr); ``.ome.zarr`` ends with it too.
ZARR_SUFFIX = ".zarr"

#: Weight-format adapters of the runner.
BACKENDS: tuple[str, ...] = ("onnx", "torch", "torchscript", "openvino", "bioimageio")

#: How the runner pads the image border (numpy ``np.pad`` modes).
PAD_MODES: tuple[str, ...] = ("constant", "symmetric", "reflect")

#: Published post-processing: probability threshold and the smallest proposal kept (pixels).
THRESHOLD = 0.5
MIN_PROPOSAL_SIZE = 10

#: A decoy (4-cell junction, small cell) counts as hit when a proposal comes this close (px)
#: and the image does not state its cell size (then a quarter of the cell diameter).
DEFAULT_DECOY_RADIUS = 6.0

#: The published sliding window and its overlap.
PUBLISHED_WINDOW = 512
PUBLISHED_OVERLAP = 128

#: Smallest y/x size the package declares (``min`` of the parameterized input size): the
#: published window, which is also BiaPy's tile size.
PACKAGE_MIN_SIZE = PUBLISHED_WINDOW

#: Smallest image side the runner accepts (pixels). A rosette needs >= 5 cells around one point,
#: about two cell diameters (~48 px at the default 24 px cells); crops of 16 px gave false
#: proposals in 16 of 90 random crops of synthetic tissue, 24-32 px in none (docs/reliability.md).
MIN_IMAGE_SIZE = 32

#: Chunk side (px, a multiple of 16) of a large image on dask (``predict --dask``): the unit of
#: work and the zarr chunk of the output; with 112 px of context a 1248 px window, one forward
#: pass of the demo model under the streaming activation budget.
DASK_CHUNK = 1024

#: What a rosette is (docs/metrics.md, "What a rosette is"; :mod:`rosette_bmz.definition`): at least
#: this many cells meet at one vertex, or close around an extruding cell.
MIN_MULTIPLICITY = 5

#: Partial vertices (2x2 pixel windows holding >= 3 cells) joined by a cell-cell border shorter than
#: this (px, centre to centre) are one vertex: cells meet at a point when their borders come within
#: about 2 px of it. 3.5 is the largest of 2.5 / 3.5 / 4 / 5 px that made no >= 5-cell junction out
#: of two ordinary 3-cell vertices on noise-free synthetic tissue (rosette_bmz/quantities.py).
MERGE_DISTANCE = 3.5

#: A *near miss* (:func:`rosette_bmz.definition.find_rosettes`, a training hard negative): two
#: vertices that are no rosette, closer than this (px) but not merged, whose cells number >= 5
#: together: it looks like a rosette at a glance and is none by the rule. Twice MERGE_DISTANCE.
NEAR_MISS_DISTANCE = 2 * MERGE_DISTANCE

#: Proposals checked against the vertex graph (``rosette-bmz predict --check``,
#: :func:`rosette_bmz.quantities.check_proposals`): a proposal without a junction of >= 5 cells
#: (``k`` < 5) is kept only when the network is surer than this of it ...
CHECK_SURE = 0.9
#: ... and a junction of >= 5 cells (the baseline's graph) that no kept proposal touches is added
#: when the network's peak probability on its rosette mask is above this. Both measured on the
#: nine generalisation sets (benchmarks/check_settings.py, docs/metrics.md "Checked proposals").
CHECK_SUPPORT = 0.2

#: Where a run's rosettes came from (``"rosettes_from"`` of an image summary): the network's own
#: proposals, or those checked against the vertex graph (``predict --check``). The first is the
#: default (summaries written before the field existed).
ROSETTE_SOURCES: tuple[str, ...] = ("network", "checked")

#: An extruding cell is smaller than this fraction of the median area of its own neighbours
#: (extruding cells measured 0.15-0.41, ordinary cells with >= 5 neighbours >= 0.56).
SMALL_CELL_FRACTION = 0.5

#: How the synthetic generator draws cell outlines (rosette_bmz.synth.draw_outlines): Cellpose
#: inner outlines (1 px inside each cell, so 2 px between cells), 1 px watershed lines between
#: cells, and thick lines (2-6 px).
OUTLINE_STYLES: tuple[str, ...] = ("inner", "watershed", "thick")

#: How the generator seeds its Voronoi tissue: relaxed (Lloyd) uniform seeds, Poisson-disc
#: (random sequential adsorption) seeds, or a jittered hexagonal lattice.
TILINGS: tuple[str, ...] = ("lloyd", "poisson", "hexjitter")

#: Shape of the generator's tissue-free regions: smooth random blobs, or one disc.
TISSUE_FREE_SHAPES: tuple[str, ...] = ("blobs", "disc")

#: Where ``rosette-bmz evaluate`` takes the ground truth from: the ``<name>_rosettes.tif``
#: annotations, or the rosette definition applied to each ``<name>_labels.tif``.
EVAL_TRUTHS: tuple[str, ...] = ("files", "labels")

#: Where the generator reads its ground truth: the final cell label image (segmentation noise
#: included, gaps closed as ``evaluate --truth labels`` does), or the clean tiling before noise.
SYNTH_TRUTHS: tuple[str, ...] = ("labels", "clean")

#: The rdf ``config`` section of this project: ``config.rosette_bmz.calibration.threshold`` is the
#: threshold ``rosette-bmz calibrate`` baked into the package's final bias (so a fine-tune from the
#: rdf.yaml trains without that offset and puts it back, as from the calibrated checkpoint).
RDF_CONFIG_KEY = "rosette_bmz"

#: Training arithmetic (``optim.precision`` of a training config, ``rosette-bmz train --precision``).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

#: A run directory holds one ``<name>`` + this per image (the per-image rosette summary).
SUMMARY_SUFFIX = "_summary.json"
#: The per-run table, one row per image.
SUMMARY_CSV = "summary.csv"
#: Ways ``rosette-bmz summarize`` groups images into conditions (``--by``).
GROUPINGS: tuple[str, ...] = ("folder", "run")
