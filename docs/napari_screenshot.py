"""Draw docs/napari_review.png: the Rosette review widget on the bundled sample, mid-review.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/napari_screenshot.py

Opens the sample (Plugins > rosette-bmz sample), detects with the shipped demo weights (onnx),
then plays a reviewer with the review keys: the first proposals accepted, one rejected, a
missed rosette painted, and the view centred on the proposal in review.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "napari_review.png"


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from rosette_bmz.napari._sample import sample_data
    from rosette_bmz.napari._widget import RosetteReviewWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    for data, meta, kind in sample_data():
        getattr(viewer, f"add_{kind}")(data, **meta)
    w = RosetteReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Rosette review", area="right")
    w.corrections_edit.setText(str(Path("/tmp/rosette_review_screenshot")))
    w.layer_box.setCurrentText("sample_outlines")
    w.detect_layer()
    t0 = time.monotonic()
    while w.busy and time.monotonic() - t0 < 300:
        QApplication.processEvents()
        time.sleep(0.05)
    if w.review is None:
        sys.exit(f"detection failed: {w.status_label.text()}")
    keys = viewer.window._qt_viewer._key_map_handler
    for key in ("n", "k", "n", "k", "n", "j", "n", "k", "n", "j", "n", "k", "n"):
        keys.press_key(key)
        keys.release_key(key)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    size = min(viewer.canvas.size) or 600
    viewer.camera.zoom = size / 420.0            # a wider view than while reviewing, for the picture
    f = w.review.focus
    viewer.camera.center = (min(max(f.y, 220), 1024 - 220), min(max(f.x, 220), 1024 - 220))
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    img = viewer.screenshot(path=None, canvas_only=False, flash=False)
    from PIL import Image

    Image.fromarray(np.asarray(img)).save(OUT, optimize=True)
    print(f"{OUT}: {w.counts_label.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
