"""The "Rosette review" dock widget: detect, review, save, fine-tune, export.

Detection and fine-tuning run in napari worker threads (:func:`napari.qt.threading.create_worker`),
never on the UI thread. The review state is a :class:`~rosette_bmz.napari.review.Review`; the
proposal pixels are the Labels layer ``<name> rosettes`` the reviewer may edit with the brush,
the decisions are shown by the Points layer ``<name> proposals`` (colour = status).

Review keys (bound on the viewer while the widget lives; none of them is a napari default):

====  =========================================================================
n     next proposal (centres and zooms the view on it)
N     (Shift-n) previous proposal
k     keep: accept the proposal in view
j     junk: reject it (its pixels are left out of the saved mask)
w     add a missed rosette: selects a new label number and the brush; paint it
====  =========================================================================
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout,
                            QWidget)

from ..constants import BACKENDS
from . import review as rv

log = logging.getLogger(__name__)

__all__ = ["RosetteReviewWidget", "KEYS"]

#: key -> (action, help text)
KEYS = {"n": ("next_proposal", "next proposal"), "Shift-N": ("previous_proposal", "previous proposal"),
        "k": ("accept", "keep (accept)"), "j": ("reject", "junk (reject)"),
        "w": ("add", "add a missed rosette (paint it)")}
_RESULT_SUFFIXES = (" rosettes", " proposals", " probability")


def _path_row(edit: QLineEdit, button: QPushButton) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    lay.addWidget(button)
    return w


class RosetteReviewWidget(QWidget):
    """Dock widget; ``napari_viewer`` is injected by napari (npe2 widget contribution)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.review: rv.Review | None = None
        self.labels_layer = None
        self.points_layer = None
        self.source: tuple[np.ndarray, str, str] | None = None   # image, input kind, name of the current image
        self.dirty = False
        self.folder_images: list[Path] = []
        self.folder_index = -1
        self.worker = None
        self.last_checkpoint: Path | None = None
        self.train_overrides: dict = {}      # dotted config overrides for fine-tuning (tests: tiny runs)
        self._predictor = None
        self._predictor_key: tuple | None = None
        self._jobs = 0
        self._build()
        self._bind_keys()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()
        self._autosave_timer = QTimer(self)        # nothing the reviewer did is lost: save every minute
        self._autosave_timer.setInterval(60_000)   # when something changed (and on every image change)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        self.setMaximumWidth(460)          # leave the canvas its room
        top = QVBoxLayout(self)

        box = QGroupBox("Detect")
        form = QFormLayout(box)
        self.model_edit = QLineEdit(str(rv.default_model()))
        self.model_edit.setToolTip("rdf.yaml of a package, or a checkpoint (.pt); default: the shipped demo weights")
        browse = QPushButton("…")
        browse.clicked.connect(self._choose_model)
        form.addRow("model", _path_row(self.model_edit, browse))
        self.backend_box = QComboBox()
        self.backend_box.addItems(list(BACKENDS))
        form.addRow("backend", self.backend_box)
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("an outline image (Image layer) or a cell segmentation (Labels layer, e.g. Cellpose)")
        form.addRow("input layer", self.layer_box)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.05, 0.95)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        form.addRow("threshold", self.threshold_spin)
        self.check_box = QCheckBox("check against the vertex graph")
        self.check_box.setToolTip("keep proposals with a junction of >= 5 cells (or p > 0.9) and add junctions "
                                  "of >= 5 cells the network half-saw: fewer false proposals "
                                  "(rosette-bmz predict --check)")
        form.addRow(self.check_box)
        self.tta_box = QCheckBox("test-time augmentation (8 views)")
        self.tta_box.setToolTip("average the network over the 8 rotations / flips of the image: 8x the time, "
                                "fewer false proposals (rosette-bmz predict --tta)")
        form.addRow(self.tta_box)
        self.detect_button = QPushButton("Detect rosettes")
        self.detect_button.clicked.connect(self.detect_layer)
        form.addRow(self.detect_button)
        top.addWidget(box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        top.addWidget(self.progress)
        top.addWidget(self.status_label)

        box = QGroupBox("Review")
        lay = QVBoxLayout(box)
        self.counts_label = QLabel("no proposals yet")
        self.counts_label.setWordWrap(True)
        lay.addWidget(self.counts_label)
        row = QHBoxLayout()
        for text, slot in (("◀ prev", self.previous_proposal), ("next ▶", self.next_proposal),
                           ("accept", self.accept), ("reject", self.reject), ("add", self.add)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        lay.addLayout(row)
        keys = ", ".join(f"<b>{k}</b> {h}" for k, (_, h) in KEYS.items())
        help_label = QLabel(f"keys: {keys}")
        help_label.setWordWrap(True)
        help_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(help_label)
        form = QFormLayout()
        self.corrections_edit = QLineEdit(str(Path.cwd() / "corrections"))
        self.corrections_edit.setToolTip("where <name>_outlines.tif, <name>_rosettes.tif and <name>_review.csv "
                                         "are saved: the trainer's --images and --masks folder")
        b = QPushButton("…")
        b.clicked.connect(lambda: self._choose_dir(self.corrections_edit))
        form.addRow("corrections", _path_row(self.corrections_edit, b))
        lay.addLayout(form)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        lay.addWidget(self.save_button)
        top.addWidget(box)

        box = QGroupBox("Folder")
        form = QFormLayout(box)
        self.folder_edit = QLineEdit("")
        b = QPushButton("…")
        b.clicked.connect(lambda: self._choose_dir(self.folder_edit))
        form.addRow("images", _path_row(self.folder_edit, b))
        self.predictions_edit = QLineEdit("")
        self.predictions_edit.setPlaceholderText("optional: rosette-bmz predict --out folder")
        b = QPushButton("…")
        b.clicked.connect(lambda: self._choose_dir(self.predictions_edit))
        form.addRow("predictions", _path_row(self.predictions_edit, b))
        self.kind_box = QComboBox()
        self.kind_box.addItems(["outlines", "labels"])
        form.addRow("images are", self.kind_box)
        self.skip_check = QCheckBox("skip images already reviewed")
        self.skip_check.setChecked(True)
        form.addRow(self.skip_check)
        row = QHBoxLayout()
        for text, slot in (("Open folder", self.open_folder), ("◀ image", self.previous_image),
                           ("image ▶ (saves)", self.next_image)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        form.addRow(row)
        top.addWidget(box)

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 200)
        self.epochs_spin.setValue(8)
        self.epochs_spin.setToolTip("epochs of the review schedule (review.yaml: 8 x 12 steps of 4 crops)")
        form.addRow("epochs", self.epochs_spin)
        self.finetune_button = QPushButton("Fine-tune on corrections")
        self.finetune_button.clicked.connect(self.finetune)
        form.addRow(self.finetune_button)
        self.loss_label = QLabel("")
        form.addRow(self.loss_label)
        self.export_button = QPushButton("Export model…")
        self.export_button.clicked.connect(lambda: self.export_model())
        form.addRow(self.export_button)
        top.addWidget(box)
        top.addStretch(1)

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model", str(Path(self.model_edit.text()).parent),
                                              "Models (rdf.yaml *.yaml *.pt *.pth);;All files (*)")
        if path:
            self.model_edit.setText(path)

    def _choose_dir(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder", edit.text() or str(Path.cwd()))
        if path:
            edit.setText(path)

    def _refresh_layer_choices(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        current = self.layer_box.currentText()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, (Image, Labels))
                 and ly is not self.labels_layer and not ly.name.endswith(_RESULT_SUFFIXES)]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        elif names:
            outl = [n for n in names if isinstance(self.viewer.layers[n], Image)]
            self.layer_box.setCurrentText(outl[-1] if outl else names[-1])
        self.layer_box.blockSignals(False)

    def message(self, text: str) -> None:
        self.status_label.setText(text)
        log.info("%s", text)

    # ------------------------------------------------------------------ keys
    def _bind_keys(self) -> None:
        for key, (action, _) in KEYS.items():
            method = getattr(self, action)
            self.viewer.bind_key(key, lambda viewer, m=method: m(), overwrite=True)

    def unbind_keys(self) -> None:
        for key in KEYS:
            try:
                self.viewer.bind_key(key, None)
            except (KeyError, ValueError):
                pass

    # ------------------------------------------------------------------ detection
    def _get_predictor(self, key: tuple[str, str]):
        """The predictor for (model, backend), reused while both stay the same (worker thread)."""
        from ..runner import load_predictor

        if self._predictor is None or self._predictor_key != key:
            if self._predictor is not None:
                self._predictor.close()
            self._predictor = load_predictor(key[0], key[1])
            self._predictor_key = key
        return self._predictor

    def detect_layer(self) -> None:
        """Detect rosettes on the chosen input layer (in a worker thread)."""
        from napari.layers import Labels

        name = self.layer_box.currentText()
        if not name or name not in self.viewer.layers:
            self.message("choose an input layer (outlines image or cell labels)")
            return
        layer = self.viewer.layers[name]
        kind = "labels" if isinstance(layer, Labels) else "outlines"
        self.autosave()
        self.run_detection(np.asarray(layer.data), kind, name)

    @property
    def busy(self) -> bool:
        """Whether a detection, fine-tuning or export worker is running."""
        return self._jobs > 0

    def _start(self, worker: Any, text: str) -> Any:
        """Start ``worker``; the buttons are disabled and the progress bar busy until every job ends."""
        self._jobs += 1
        worker.finished.connect(self._job_done)
        worker.errored.connect(self._failed)
        for b in (self.detect_button, self.finetune_button, self.export_button):
            b.setEnabled(False)
        self.progress.setRange(0, 0)   # busy indicator until a worker reports steps
        self.message(text)
        self.worker = worker
        worker.start()
        return worker

    def _job_done(self) -> None:
        self._jobs -= 1
        if self._jobs <= 0:
            self._jobs = 0
            for b in (self.detect_button, self.finetune_button, self.export_button):
                b.setEnabled(True)
            self.progress.setRange(0, 1)
            self.progress.setValue(1)

    def run_detection(self, image: np.ndarray, kind: str, name: str) -> Any:
        """Start the model on ``image`` in a worker thread; the results replace the review layers."""
        from napari.qt.threading import create_worker

        threshold = float(self.threshold_spin.value())
        check = self.check_box.isChecked()
        tta = self.tta_box.isChecked()
        key = (str(self.model_path()), self.backend_box.currentText())   # read here, on the UI thread

        def work():
            yield f"loading {Path(key[0]).name} ({key[1]})"
            predictor = self._get_predictor(key)
            yield "predicting"
            return rv.detect(image, kind, predictor, threshold=threshold, name=name, check=check, tta=tta)

        worker = create_worker(work, _start_thread=False)
        worker.yielded.connect(self.message)
        worker.returned.connect(lambda res: self.show_results(image, kind, name, *res))
        return self._start(worker, f"{name}: detecting rosettes…")

    def _failed(self, exc: BaseException) -> None:
        self.message(f"error: {exc}")

    # ------------------------------------------------------------------ results and review
    def show_results(self, image: np.ndarray, kind: str, name: str, prob: np.ndarray | None, labels: np.ndarray,
                     rows: list[dict], review: rv.Review | None = None) -> None:
        """Put a detection (or a saved review) into the viewer and start reviewing it."""
        self.source = (image, kind, name)
        self.review = review or rv.Review.from_rows(name, rv.outlines_of(image, kind, name), rows)
        base = self.review.name
        if prob is not None:
            self._set_layer(f"{base} probability", prob, "image", colormap="magma", contrast_limits=(0, 1),
                            blending="additive", opacity=0.5, visible=False)
        self.labels_layer = self._set_layer(f"{base} rosettes", np.asarray(labels, dtype=np.uint32), "labels",
                                            opacity=0.45)
        self.points_layer = self._set_layer(f"{base} proposals", np.zeros((0, 2)), "points", size=14,
                                            symbol="ring", border_width=0.12)
        if not getattr(self.labels_layer, "_rosette_paint_hooked", False):
            self.labels_layer.events.paint.connect(self._on_paint)
            self.labels_layer._rosette_paint_hooked = True
        self.dirty = review is None
        self.refresh()
        self.viewer.layers.selection.active = self.labels_layer
        c = self.review.counts()
        self.message(f"{base}: {len(self.review.proposals)} proposal(s)"
                     + (f", {c['accepted']} accepted, {c['rejected']} rejected" if review is not None else "")
                     + "; press n for the first")

    def _set_layer(self, name: str, data: Any, kind: str, **kwargs: Any):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer._type_string == kind:
                layer.data = data
                return layer
            self.viewer.layers.remove(layer)
        return getattr(self.viewer, f"add_{kind}")(data, name=name, **kwargs)

    def refresh(self) -> None:
        """Redraw the points (position, status colour, features) and the counts."""
        import pandas as pd

        r, pts = self.review, self.points_layer
        if r is None or pts is None:
            return
        props = r.proposals
        coords = np.asarray([[p.y, p.x] for p in props], dtype=float).reshape(-1, 2)
        features = pd.DataFrame({"id": [p.id for p in props], "score": [p.score for p in props],
                                 "status": pd.Categorical([p.status for p in props], categories=list(rv.STATUSES))})
        pts.data = coords
        pts.features = features
        if len(props):
            pts.face_color = np.asarray([rv.STATUS_COLORS[p.status] for p in props])
            border = np.zeros((len(props), 4))
            border[:, 3] = 1.0
            if r.focus is not None:
                border[r.current] = (1, 1, 1, 1)
            pts.border_color = border
        c = r.counts()
        focus = r.focus
        where = (f" · in view: #{focus.id} ({focus.status}, score {focus.score:.2f})" if focus is not None else "")
        self.counts_label.setText(f"{len(props)} proposals: {c['pending']} pending, {c['accepted']} accepted, "
                                  f"{c['rejected']} rejected, {c['added']} added{where}")

    def _on_paint(self, event: Any = None) -> None:
        # napari emits ``paint`` before it writes the pixels of a programmatic edit: look after it
        self.dirty = True
        QTimer.singleShot(0, self._sync_painted)

    def _sync_painted(self) -> None:
        if self.review is not None and self.labels_layer is not None:
            self.dirty = True
            if self.review.sync(self.labels_layer.data):
                self.refresh()

    def _go(self, delta: int) -> None:
        if self.review is None:
            self.message("detect rosettes first")
            return
        self.review.sync(self.labels_layer.data)
        p = self.review.step(delta)
        if p is None:
            self.refresh()
            self.message("no proposals in this image: add missed rosettes with w")
            return
        self.viewer.camera.center = (p.y, p.x)
        size = min(self.viewer.canvas.size) if min(self.viewer.canvas.size) > 0 else 600
        self.viewer.camera.zoom = size / 160.0       # about 160 px of tissue around the proposal
        self.labels_layer.selected_label = p.id      # the brush edits this proposal
        self.refresh()

    def next_proposal(self) -> None:
        self._go(+1)

    def previous_proposal(self) -> None:
        self._go(-1)

    def _decide(self, status: str) -> None:
        if self.review is None or self.review.focus is None:
            self.message("press n to bring a proposal into view first")
            return
        p = self.review.decide(status)
        self.dirty = True
        self.refresh()
        self.message(f"#{p.id} {status}")

    def accept(self) -> None:
        self._decide("accepted")

    def reject(self) -> None:
        self._decide("rejected")

    def add(self) -> None:
        """Select a new label number and the brush: paint the missed rosette."""
        if self.review is None or self.labels_layer is None:
            self.message("detect rosettes first")
            return
        self.review.sync(self.labels_layer.data)
        self.labels_layer.selected_label = self.review.new_id(self.labels_layer.data)
        self.labels_layer.mode = "paint"
        self.viewer.layers.selection.active = self.labels_layer
        self.message(f"paint the missed rosette with label {self.labels_layer.selected_label} "
                     "(it is registered as added when you paint)")

    # ------------------------------------------------------------------ saving
    def corrections(self) -> Path:
        return Path(self.corrections_edit.text()).expanduser()

    def save(self) -> dict | None:
        """Write <name>_outlines.tif, <name>_rosettes.tif and <name>_review.csv (all or none)."""
        if self.review is None or self.labels_layer is None:
            self.message("nothing to save yet")
            return None
        try:
            paths = self.review.save(self.corrections(), self.labels_layer.data)
        except Exception as exc:   # a full disk or a read-only folder: say so, keep the review in memory
            self.message(f"not saved: {type(exc).__name__}: {exc}")
            raise
        self.dirty = False
        self.refresh()
        c = self.review.counts()
        self.message(f"saved {self.review.name} ({c['accepted']} accepted, {c['rejected']} rejected, "
                     f"{c['added']} added, {c['pending']} pending kept) to {self.corrections()}")
        return paths

    def autosave(self) -> None:
        """Save the current review if anything changed since it was loaded or saved."""
        if self.review is not None and self.dirty:
            self.save()

    # ------------------------------------------------------------------ folder mode
    def open_folder(self, folder: str | None = None) -> None:
        """Walk a folder of images: open the first one not yet reviewed."""
        if folder:
            self.folder_edit.setText(str(folder))
        try:
            self.folder_images = rv.list_images(self.folder_edit.text())
        except Exception as exc:
            self.message(f"error: {exc}")
            return
        self.folder_index = -1
        if not self.folder_images:
            self.message(f"{self.folder_edit.text()}: no images")
            return
        self.next_image()

    def _reviewed(self, path: Path) -> bool:
        return rv.is_reviewed(self.corrections(), path.stem)

    def next_image(self) -> None:
        """Save the current image's review and open the next image (skipping reviewed ones)."""
        if not self.folder_images:
            self.message("open a folder first")
            return
        i = self.folder_index + 1
        while i < len(self.folder_images) and self.skip_check.isChecked() and self._reviewed(self.folder_images[i]):
            i += 1
        self.autosave()
        if i >= len(self.folder_images):
            self.message(f"all {len(self.folder_images)} images of the folder are reviewed")
            return
        self.load_image(i)

    def previous_image(self) -> None:
        if not self.folder_images or self.folder_index <= 0:
            self.message("no previous image")
            return
        self.autosave()
        self.load_image(self.folder_index - 1)

    def load_image(self, index: int) -> None:
        """Open image ``index`` of the folder: its saved review, else its predictions, else detect."""
        import tifffile  # noqa: F401  (reading below)

        from ..inputs import read_image

        self._reuse_folder_layers(self.folder_images[index])   # saved already (autosave)
        self.folder_index = index
        path = self.folder_images[index]
        kind = self.kind_box.currentText()
        image = np.asarray(read_image(path))
        if kind == "labels":
            self._set_layer(path.stem, image.astype(np.int32, copy=False), "labels", opacity=0.3)
        else:
            self._set_layer(path.stem, image, "image", colormap="gray")
        self.layer_box.setCurrentText(path.stem)
        saved = rv.load_saved_review(self.corrections(), path.stem)
        where = f"image {index + 1}/{len(self.folder_images)}"
        if saved is not None:
            review, labels = saved
            self.show_results(image, kind, path.stem, None, labels, [], review=review)
            self.message(f"{where}: {path.name}, the saved review")
            return
        found = rv.find_predictions(path, [self.predictions_edit.text() or None, path.parent])
        if found is not None:
            prob, labels, rows = rv.load_predictions(found)
            self.show_results(image, kind, path.stem, prob, labels, rows)
            self.message(f"{where}: {path.name}, {len(rows)} proposal(s) from {found['csv'].parent}")
            return
        self.message(f"{where}: {path.name}")
        self.run_detection(image, kind, path.stem)

    def _reuse_folder_layers(self, path: Path) -> None:
        """One folder image in the viewer at a time: the previous image's layers are renamed for
        the next one and get its data (removing them instead crashed Qt at exit under Xvfb)."""
        if self.source is None or not self.folder_images:
            return
        old, new = self.source[2], path.stem
        ob, nb = rv.review_name(old), rv.review_name(new)
        for a, b in ((old, new), (f"{ob} rosettes", f"{nb} rosettes"), (f"{ob} proposals", f"{nb} proposals"),
                     (f"{ob} probability", f"{nb} probability")):
            if a in self.viewer.layers and b not in self.viewer.layers:
                self.viewer.layers[a].name = b
        if self.points_layer is not None:
            self.points_layer.data = np.zeros((0, 2))
        self.review = self.source = None

    # ------------------------------------------------------------------ fine-tuning and export
    def model_path(self) -> Path:
        return Path(self.model_edit.text()).expanduser()

    def finetune(self) -> Any:
        """Train on the corrections folder (review.yaml) in a worker thread, then load the new
        weights and detect again on the current image."""
        from napari.qt.threading import create_worker

        from ..training.train import resolve_config

        self.autosave()
        corr = self.corrections()
        n = len(list(corr.glob("*_review.csv"))) if corr.is_dir() else 0
        if not n:
            self.message(f"no saved reviews in {corr}: review and save at least one image first")
            return None
        runs = corr / "runs"
        k = 1
        while (runs / f"round{k:02d}").exists():
            k += 1
        try:
            cfg, _ = resolve_config("review", init=str(self.model_path()), images=str(corr), masks=str(corr),
                                    out=str(runs / f"round{k:02d}"), epochs=int(self.epochs_spin.value()))
            for key, value in self.train_overrides.items():
                node = cfg
                *parents, leaf = key.split(".")
                for part in parents:
                    node = getattr(node, part)
                setattr(node, leaf, value)
        except Exception as exc:
            self.message(f"error: {exc}")
            return None
        total = cfg.optim.epochs

        worker = create_worker(rv.finetune_events, cfg, _start_thread=False)
        worker.yielded.connect(lambda ev: self._train_event(ev, total))
        worker.returned.connect(self._trained)
        self._start(worker, f"fine-tuning on {n} corrected image(s) ({total} epochs) → {cfg.out}")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        return worker

    def _train_event(self, ev: tuple, total: int) -> None:
        kind, payload = ev
        if kind == "step":
            epoch, step, steps, loss = payload
            done = (epoch - 1 + step / max(steps, 1)) / max(total, 1)
            self.progress.setValue(int(1000 * done))
            self.loss_label.setText(f"epoch {epoch}/{total}, step {step}/{steps}: loss {loss:.4f}")
        elif kind == "epoch":
            self.loss_label.setText(f"epoch {payload['epoch']}/{total}: mean loss {payload['train_loss']:.4f}")

    def _trained(self, result: Any) -> None:
        self.last_checkpoint = Path(result.best)
        self.model_edit.setText(str(result.best))
        self.message(f"fine-tuned: {result.best} ({result.epochs_run} epochs, {result.stopped}); detecting again")
        if self.source is not None:
            image, kind, name = self.source
            self.dirty = False       # saved before training; the new model's proposals replace them
            self.run_detection(image, kind, name)

    def export_model(self, out_dir: str | None = None, run_test: bool = True) -> Any:
        """Export the current model (a checkpoint) as a BioImage Model Zoo package, in a worker."""
        from napari.qt.threading import create_worker

        from ..export import export_package

        ckpt = self.model_path()
        if ckpt.suffix.lower() in (".yaml", ".yml"):
            self.message(f"{ckpt} is already a package")
            return None
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self, "Export the package into", str(ckpt.parent))
            if not out_dir:
                return None
        worker = create_worker(export_package, ckpt, Path(out_dir), force=True, run_test=run_test,
                               progress=False, _start_thread=False)
        worker.returned.connect(lambda rdf: self.message(f"exported: {rdf}"))
        return self._start(worker, f"exporting {ckpt.name} to {out_dir}…")

    # ------------------------------------------------------------------ teardown
    def closeEvent(self, event: Any) -> None:   # noqa: N802 (Qt name)
        try:
            self.autosave()
        finally:
            self.unbind_keys()
        super().closeEvent(event)
