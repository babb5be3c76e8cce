"""BioImage Model Zoo exporter: one ``rdf.yaml`` that bioimageio.core, BiaPy, ilastik and deepImageJ read.

``python -m rosette_bmz.export --checkpoint CKPT [--out DIR] [--force] [--zip PATH]
[--input-kind channels|outlines|labels]`` writes ``DIR/rdf.yaml`` and ``DIR/model_package/``
(``DIR`` defaults to the current directory). Modules: :mod:`.variants`, :mod:`.testdata`,
:mod:`.rdf` (the hand-written dialect), :mod:`.docs` (README, cover), :mod:`.build` (the steps).

Why the file looks the way it does (each point was measured against the consumer):

* ``format_version: 0.5.4`` written as plain YAML by this module, with ``documentation`` and
  ``covers`` as plain strings. bioimageio.spec >= 0.5.11 would write them as objects, which
  BiaPy (spec 0.5.7), ilastik/tiktorch (spec 0.5.9) and deepImageJ cannot read, so the file is
  never re-saved through bioimageio.spec; the spec is only used to *validate* it.
* No ``github_user`` on authors (its online check fails offline) and no ``dependencies`` entry
  (BiaPy refuses packages that declare one).
* Axes written explicitly (batch, channel, ``id: y``, ``id: x``); y/x are ``512 + 16 n`` with an
  output halo of 112 px: the network's receptive field is ~100 px, and with a 64 px halo
  bioimageio.core's own blocking left seams of up to 1.7e-1 (112 px: 2.4e-5). BiaPy tiles at the
  minimum size without overlap (256 px tiles left seams of 6e-3, 512 px none), ilastik keeps
  512 - 2*112 = 288 px per 512 px tile, deepImageJ tiles by min/step with the halo as overlap.
* Preprocessing ``scale_range`` (percentiles 0-100 per channel) is the identity on binary 0/1
  input (up to eps = 1e-6) and keeps BiaPy from adding its own z-score normalisation;
  ``binarize`` would be rejected by BiaPy.
* Weights: ``pytorch_state_dict`` (architecture = a verbatim copy of ``rosette_bmz/model.py``),
  ``torchscript`` and ``onnx`` (opset 17, one file, dynamic batch/y/x), both with parent
  ``pytorch_state_dict``. Before anything is written they must agree with eager PyTorch on the
  test input within 1e-4 (:func:`rosette_bmz.convert.check_agreement`).
* The package is built in a temporary folder, validated by bioimageio.spec and tested by
  ``bioimageio.core.test_model``; only a passing package is moved into place. An existing
  package is replaced only with ``force=True``.
* Reproducible: the weight files, test tensors, sample TIFFs and the rdf are byte-identical
  when the same checkpoint is exported twice with the same torch version (the TorchScript file
  is traced in a fresh interpreter and stripped of source-path debug records; see
  :mod:`rosette_bmz.convert`). Test outputs are computed by eager PyTorch on this CPU; another
  CPU may differ in the last bits (far below the declared reproducibility tolerance).
"""

from __future__ import annotations

from .build import AGREEMENT_TOL, DEFAULT_AUTHORS, PACKAGE_DIR, export_package
from .rdf import FORMAT_VERSION, HALO, build_rdf, validate_rdf, write_rdf_yaml
from .testdata import TEST_SEED, TEST_SIZE, TestData, build_test_data
from .variants import VARIANTS, Variant
from ..errors import ExportError

__all__ = ["ExportError", "export_package", "build_test_data", "write_rdf_yaml", "validate_rdf", "build_rdf",
           "FORMAT_VERSION", "PACKAGE_DIR", "HALO", "TEST_SEED", "TEST_SIZE", "TestData", "VARIANTS", "Variant",
           "AGREEMENT_TOL", "DEFAULT_AUTHORS"]
