"""The "Compare visits" dock widget: a follow-up against the baseline, as ``onfh compare`` does it.

Pick the baseline image and its labels layer, the follow-up image and its labels layer, and the
side; "Register and compare" runs in a napari worker thread:

1. each visit is measured in its own space from its labels layer
   (:func:`._measure.measure_label_map`: the masks of :func:`pipeline.masks.labels.masks_from_label_map`,
   what ``onfh compare --baseline-labels/--followup-labels`` imports; an unedited automatic
   segmentation from "Analyze hip" is measured as ``onfh compare`` without label maps measures it);
2. :func:`pipeline.longitudinal.change.compare_visits` registers the follow-up to the baseline (rigid,
   mutual information) and maps it onto the baseline grid: the very function ``run_compare``
   calls, so the figures are the CLI's;
3. the figures are assembled as in ``longitudinal.json``
   (:func:`pipeline.app.compare.longitudinal_result`).

Shown: ``onfh follow-up aligned`` (the follow-up image on the baseline grid), ``onfh change map``
(a Labels layer on the baseline grid: 1 persistent, 2 regenerated, 3 new, in the colours of the
CLI's qc.png, with a legend), ``onfh follow-up labels aligned`` (hidden) and a table of the
regeneration figures, the registration and the warnings.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pipeline.app.compare import CHANGE_COLOURS, longitudinal_result, write_comparison
from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.longitudinal.change import CHANGE_LABELS, compare_visits
from pipeline.measures.results import Longitudinal
from pipeline.napari._layers import display_range, labels_layer_data, layer_scan
from pipeline.napari._measure import measure_label_map
from pipeline.napari._widget import (
    EDITED_KEY,
    NONE,
    RESULT_PREFIX,
    WorkerWidget,
    _camera,
    choice_layers,
    figures_table,
    fill_box,
    fill_table,
    labels_for,
    labels_request,
    layer_box,
    set_view,
    watch_edits,
)

ALIGNED_NAME = f"{RESULT_PREFIX}follow-up aligned"
CHANGE_NAME = f"{RESULT_PREFIX}change map"
ALIGNED_LABELS_NAME = f"{RESULT_PREFIX}follow-up labels aligned"
#: Change-map colours: those of ``onfh compare``'s qc.png (1 persistent amber, 2 regenerated
#: green, 3 new red), fully opaque in the colormap; the layer's opacity blends them.
CHANGE_COLORMAP = {None: "transparent", 0: "transparent", **{k: CHANGE_COLOURS[k] for k in CHANGE_LABELS}}


# computation (no Qt) -----------------------------------------------------------------------
def comparison_payload(base, comparison, side: str) -> dict:
    """The figures of one follow-up as ``longitudinal.json`` holds them (rounded as written),
    without the CLI's provenance and file names."""
    return longitudinal_result(base, [replace(comparison.result, index=1)], side).to_json()


def _compare_job(base_request: tuple, follow_request: tuple, settings):
    """Worker generator: measure both visits, register, map; returns the results."""
    yield "measuring the baseline"
    base = measure_label_map(*base_request)
    yield "measuring the follow-up"
    follow = measure_label_map(*follow_request)
    yield "registering the follow-up to the baseline (rigid, mutual information) and mapping it"
    comparison = compare_visits(base, follow, settings)
    yield "assembling the figures"
    payload = comparison_payload(base, comparison, base.result.side)
    return base, follow, comparison, payload, settings


def _export_job(out_dir: Path, base, follow, comparison, settings):
    """Worker generator: the CLI's files of one comparison; returns the folder."""
    yield "writing"
    write_comparison(out_dir, base, follow, comparison, settings)
    return out_dir


def result_layers(base, follow, comparison) -> list[tuple]:
    """Layer data on the baseline grid: aligned follow-up image, change map, aligned labels."""
    scan = base.scan
    aligned = (
        comparison.image_in_baseline,
        {"name": ALIGNED_NAME, "affine": np.asarray(scan.affine, float), "colormap": "gray",
         "contrast_limits": display_range(follow.scan.data),
         "metadata": {"onfh": {"kind": "follow-up aligned to baseline",
                               "registration": comparison.result.registration["transform"]}}},
        "image",
    )
    legend = {"0": "background", **{str(k): v for k, v in CHANGE_LABELS.items()}}
    data, kwargs, kind = labels_layer_data(comparison.change, scan, CHANGE_NAME,
                                           extra_meta={"onfh_legend": legend})
    kwargs.update(colormap=dict(CHANGE_COLORMAP), opacity=0.7)
    labels_data, labels_kwargs, _ = labels_layer_data(comparison.labels_in_baseline, scan, ALIGNED_LABELS_NAME)
    labels_kwargs.update(visible=False)
    return [aligned, (data, kwargs, kind), (labels_data, labels_kwargs, "labels")]


def _num(value, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def legend_html() -> str:
    """The change map's legend, in its colours."""
    items = [f"<span style='color:{CHANGE_COLOURS[v]}'>&#9632;</span>&nbsp;{v} {name}"
             for v, name in CHANGE_LABELS.items()]
    return "Change map: " + "&nbsp;&nbsp; ".join(items)


# the widget --------------------------------------------------------------------------------
def _unedited_automatic(label_map, side: str, automatic) -> bool:
    return automatic is not None and automatic.side == side and not automatic.edited(label_map)


class CompareVisitsWidget(WorkerWidget, QWidget):
    """Register a follow-up to the baseline and map what changed (the `onfh compare` figures)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.busy = False
        self.error: str | None = None
        self.result: dict | None = None
        self.baseline = None
        self.followup = None
        self.comparison = None
        self.settings = None  # those of the comparison shown (its export writes them)
        self.last_export: Path | None = None
        self._worker = None
        self._build()
        events = self.viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self.reset_choices)
        self.reset_choices()

    # UI ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.base_image_box = layer_box()
        self.base_labels_box = layer_box()
        self.follow_image_box = layer_box()
        self.follow_labels_box = layer_box()
        self.side_box = layer_box()
        self.side_box.addItems(["right", "left"])
        self.config_edit = QLineEdit()
        self.config_edit.setPlaceholderText("default settings (configs/default.yaml)")
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_edit)
        browse = QPushButton("...")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse_config)
        config_row.addWidget(browse)
        form.addRow("Baseline image", self.base_image_box)
        form.addRow("Baseline labels", self.base_labels_box)
        form.addRow("Follow-up image", self.follow_image_box)
        form.addRow("Follow-up labels", self.follow_labels_box)
        self.edge_box = layer_box()
        self.edge_box.setToolTip("Points layer: its last point is the baseline's lateral acetabular edge (RAS mm), "
                                 "as `onfh compare --acetabular-edge`: it sets the zones")
        self.roof_box = layer_box()
        self.roof_box.setToolTip("Points layer: its last point is the medial end of the baseline's acetabular roof "
                                 "(RAS mm), as `onfh compare --acetabular-roof-medial`")
        form.addRow("Side", self.side_box)
        form.addRow("Baseline edge", self.edge_box)
        form.addRow("Baseline roof medial", self.roof_box)
        form.addRow("Settings", config_row)
        layout.addLayout(form)
        self.base_image_box.currentTextChanged.connect(self._base_changed)
        self.follow_image_box.currentTextChanged.connect(self._follow_changed)

        self.compare_button = QPushButton("Register and compare")
        self.compare_button.setToolTip("Measure both visits, register the follow-up to the baseline and map the "
                                       "change on the baseline grid (as `onfh compare`)")
        self.compare_button.clicked.connect(self.compare)
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("Write longitudinal.json, the change map, the aligned follow-up and qc.png "
                                      "into a folder, as `onfh compare` does")
        self.export_button.clicked.connect(self._export_clicked)
        self.export_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.export_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.legend = QLabel(legend_html())
        self.legend.setTextFormat(Qt.RichText)
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)

        self.table = figures_table(150)
        layout.addWidget(self.table)
        self.warnings_text = QPlainTextEdit()
        self.warnings_text.setReadOnly(True)
        self.warnings_text.setMaximumHeight(70)
        self.warnings_text.setPlaceholderText("warnings")
        layout.addWidget(self.warnings_text)

    def _browse_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Settings", "", "YAML (*.yaml *.yml)")
        if path:
            self.config_edit.setText(path)

    # layer choices ----------------------------------------------------------------------------
    def reset_choices(self, event=None) -> None:
        """Refresh the layer lists: baseline = first image, follow-up = last one by default."""
        images = [layer.name for layer in choice_layers(self.viewer, "image")]
        labels_layers = choice_layers(self.viewer, "labels")
        for layer in labels_layers:
            watch_edits(layer)
        labels = [layer.name for layer in labels_layers]
        fill_box(self.base_image_box, images, images[0] if images else None)
        base = self.base_image_box.currentText()
        others = [name for name in images if name != base]
        fill_box(self.follow_image_box, images, others[-1] if others else None)
        follow = self.follow_image_box.currentText()
        fill_box(self.base_labels_box, labels, labels_for(base, labels))
        fill_box(self.follow_labels_box, labels, labels_for(follow, labels))
        points = [NONE] + [layer.name for layer in choice_layers(self.viewer, "points")]
        fill_box(self.edge_box, points, next((n for n in points if "edge" in n.lower()), NONE))
        fill_box(self.roof_box, points, next((n for n in points if "roof" in n.lower() or "medial" in n.lower()), NONE))

    def _base_changed(self, name: str) -> None:
        labels = [layer.name for layer in choice_layers(self.viewer, "labels")]
        if labels_for(name, labels) and labels_for(name, labels).startswith(name):
            self.base_labels_box.setCurrentText(labels_for(name, labels))
        if name in self.viewer.layers:
            side = self.viewer.layers[name].metadata.get("onfh_side")
            if side in ("left", "right"):
                self.side_box.setCurrentText(side)

    def _follow_changed(self, name: str) -> None:
        labels = [layer.name for layer in choice_layers(self.viewer, "labels")]
        if labels_for(name, labels) and labels_for(name, labels).startswith(name):
            self.follow_labels_box.setCurrentText(labels_for(name, labels))

    def _layer(self, box: QComboBox, what: str):
        name = box.currentText()
        if not name:
            raise InputError(f"choose {what}")
        if name not in self.viewer.layers:
            raise InputError(f"layer {name!r} no longer exists")
        return self.viewer.layers[name]

    def _landmark(self, box: QComboBox):
        """The last point of the chosen Points layer, RAS mm (None for none or an empty layer)."""
        name = box.currentText()
        if not name or name == NONE:
            return None
        layer = self._layer(box, "a landmark layer")
        if len(layer.data) == 0:
            return None
        return tuple(float(v) for v in np.asarray(layer.data_to_world(layer.data[-1]), dtype=float))

    # comparing --------------------------------------------------------------------------------
    def _visit_request(self, image_box, labels_box, what: str, side: str, settings, edge=None, roof=None) -> tuple:
        image = self._layer(image_box, f"the {what} image")
        labels = self._layer(labels_box, f"the {what} labels layer (1 head, 2 lesion)")
        scan = layer_scan(image)
        label_map, source, edited, automatic = labels_request(labels, scan, settings)
        return (scan, label_map, side, settings, edge, roof, source, edited, automatic)

    def _request(self) -> tuple:
        """Everything the comparison needs, copied on the main thread (painting may go on)."""
        side = self.side_box.currentText()
        config = self.config_edit.text().strip() or None
        settings = load_settings(config)
        if self.base_image_box.currentText() == self.follow_image_box.currentText():
            raise InputError("choose two different images for the baseline and the follow-up")
        if self.base_labels_box.currentText() == self.follow_labels_box.currentText():
            raise InputError("choose each visit's own labels layer (the baseline's and the follow-up's differ)")
        base = self._visit_request(self.base_image_box, self.base_labels_box, "baseline", side, settings,
                                   self._landmark(self.edge_box), self._landmark(self.roof_box))
        follow = self._visit_request(self.follow_image_box, self.follow_labels_box, "follow-up", side, settings)
        # as onfh compare refuses label maps for some visits only: an unedited automatic map against
        # a drawn or corrected one would count the difference between methods as regeneration
        automatic = [_unedited_automatic(v[1], v[2], v[8]) for v in (base, follow)]
        if automatic[0] != automatic[1]:
            which = "baseline" if automatic[0] else "follow-up"
            raise InputError(f"the {which} labels are an unedited automatic segmentation and the other visit's are "
                             "drawn or corrected: segment both automatically, or correct both")
        return base, follow, settings

    def compare(self):
        """Start the comparison in a worker thread; returns the worker (None if busy or refused)."""
        if self.busy:
            return None
        try:
            request = self._request()
        except InputError as exc:
            self._show_error(str(exc))
            return None
        names = (self.base_image_box.currentText(), self.follow_image_box.currentText(),
                 self.base_labels_box.currentText(), self.follow_labels_box.currentText())
        return self._start(_compare_job, request, partial(self._show, names), "onfh: comparing visits", total=4)

    def _export_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Export into a new or empty folder, or an earlier export (other files are never replaced)")
        if folder:
            self.export(folder)

    def export(self, out_dir):
        """Write the last comparison into ``out_dir`` like ``onfh compare``; returns the worker.

        The comparison shown is written as it was computed (its settings included); nothing is
        re-registered.
        """
        if self.busy or self.comparison is None:
            return None

        def done(path):
            self.last_export = path
            self.status.setText(f"Exported to {path}")

        args = (Path(out_dir), self.baseline, self.followup, self.comparison, self.settings)
        return self._start(_export_job, args, done, "onfh: exporting", total=1)

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.busy = busy
        self.progress.setVisible(busy)
        self.compare_button.setEnabled(not busy)
        self.export_button.setEnabled(not busy and self.comparison is not None)
        if busy:
            self.error = None
            self.status.setText(f"{text}...")

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)

    def _show(self, names: tuple, result) -> None:
        base, follow, comparison, payload, settings = result
        self.baseline, self.followup, self.comparison, self.result = base, follow, comparison, payload
        self.settings = settings
        figures = Longitudinal.from_json(payload)  # the figures as written (rounded), typed
        rows = figures.latest.table_rows(figures.baseline)
        icons = {}
        for i, (_, _, swatch) in enumerate(rows):
            if swatch is not None:
                pixmap = QPixmap(12, 12)
                pixmap.fill(QColor(CHANGE_COLOURS[swatch]))
                icons[i] = QIcon(pixmap)
        fill_table(self.table, [(name, value) for name, value, _ in rows], icons)
        self.warnings_text.setPlainText("\n".join(f"• {w}" for w in figures.warnings))
        self._replace_layers(result_layers(base, follow, comparison), names)
        latest = figures.latest
        self.status.setText(
            f"{names[1]} against {names[0]}: regeneration {_num(latest.regeneration_pct, '.1f', ' %')}, rotation "
            f"{_num(latest.registration['rotation_deg'], '.1f', '°')}, head Dice "
            f"{_num(latest.registration['head_dice'], '.3f')}. "
            f"Shown on the baseline grid; the follow-up's own layers and the label maps are hidden."
        )
        self.show_head_centre(base)

    def _replace_layers(self, layers: list[tuple], names: tuple) -> None:
        from napari.layers import Layer

        base_image, follow_image, base_labels, follow_labels = names
        for _, kwargs, _ in layers:
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
        # the follow-up in its own space would overlap the baseline; the label colours (green
        # head, red lesion) would read as the change map's (green regenerated, red new)
        for name in (follow_image, base_labels, follow_labels):
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
        # the aligned follow-up goes just above the baseline and the Analyze widget's mid-plane
        # images (which show the baseline), under every label map and outline
        below = [base_image] + [f"{RESULT_PREFIX}mid-{plane}" for plane in ("coronal", "sagittal")]
        for data, kwargs, kind in layers:
            layer = Layer.create(data, kwargs, kind)
            present = [self.viewer.layers.index(n) for n in below if n in self.viewer.layers]
            if kind == "image" and present:
                self.viewer.layers.insert(max(present) + 1, layer)
            else:
                self.viewer.add_layer(layer)
        for name in (CHANGE_NAME, ALIGNED_LABELS_NAME):  # derived maps: not for painting
            self.viewer.layers[name].editable = False
        self.viewer.layers.selection.active = self.viewer.layers[CHANGE_NAME]

    def show_head_centre(self, base) -> None:
        """Coronal radiological view through the baseline head centre."""
        if base.frame is None:
            return
        set_view(self.viewer, "coronal")
        centre = np.asarray(base.frame.center, dtype=float)
        for axis in range(3):
            self.viewer.dims.set_point(axis, float(centre[axis]))
        camera = _camera(self.viewer)
        camera.center = tuple(float(centre[a]) for a in self.viewer.dims.displayed)
        canvas = getattr(getattr(self.viewer, "canvas", None), "size", None)
        if canvas is not None and min(canvas) > 1:
            camera.zoom = float(min(canvas)) / (6.0 * base.frame.radius)


__all__ = ["CompareVisitsWidget", "comparison_payload", "EDITED_KEY"]
