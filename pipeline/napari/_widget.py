"""The "Analyze hip" dock widget.

Pick the scan, its label map (1 head, 2 lesion by default), the side and optional acetabular
landmarks (Points layers, world = RAS mm); "Measure" runs :func:`._measure.measure_label_map`
(the CLI's own measurement) in a napari worker thread and shows the figures, a zone map and the
mid-coronal / mid-sagittal planes. After painting, "Re-measure" updates everything; "Export..."
saves the read under the reader's name (the label map with its audit entry,
:func:`._writer.save_read`) and writes exactly what ``onfh analyze`` writes for it
(:func:`pipeline.app.analyze.write_analysis`).

"Segment automatically" runs the automatic segmentation of ``onfh analyze`` without masks
(:func:`._measure.segment_label_map`, in a worker thread; points of a "lesion seed" Points layer
are its ``--lesion-seed``) and adds the result as an editable Labels layer. Measured unedited, it
gives the figures of ``onfh analyze IMAGE --side S``; edited, the record says so.
"""

from __future__ import annotations

import hashlib
import time
import traceback
import weakref
from functools import partial
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.io.audit import check_reader
from pipeline.io.info import obliquity_deg
from pipeline.io.scan import Scan, load_labels, place_on_grid
from pipeline.napari._layers import (
    META_KEY,
    SCAN_KEY,
    data_to_world_matrix,
    labels_layer_data,
    labels_on_scan,
    layer_scan,
    points_layer_data,
    stem,
)
from pipeline.napari._measure import (
    AUTO_KEY,
    AutoSegmentation,
    measure_label_map,
    plane_layers,
    segment_label_map,
    zones_layer_data,
)
from pipeline.napari._writer import read_paths, save_read

NONE = "(none)"
OBLIQUE_NOTE_DEG = 0.5
RESULT_PREFIX = "onfh "
SEGMENTATION_NOTE = (
    "Labels: load a map (File > Open: *_labels.nii.gz, or `onfh review IMAGE`), paint one (label 1 = "
    "femoral head, 2 = lesion), or press 'Segment automatically' (what `onfh analyze` does without masks; "
    "points in a 'lesion seed' layer steer it). Check and correct the result before measuring."
)
AUTO_SUFFIX = "_auto_labels"
#: ``layer.metadata`` key set on a Labels layer once it is painted or its data replaced.
EDITED_KEY = "onfh_edited"
_WATCHED: weakref.WeakSet = weakref.WeakSet()
VIEWS = {
    # world axes (0, 1, 2) = (R, A, S). The last two entries are displayed (rows, columns); with
    # the camera's vertical axis "up" and horizontal "left", superior is up and the patient's
    # right (coronal, axial) or anterior (sagittal) is on the viewer's left: radiological views.
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
    "axial": (2, 1, 0),
}


def set_view(viewer, plane: str) -> None:
    """Show a radiological coronal, sagittal or axial view of RAS world coordinates (or "3d")."""
    if viewer.dims.ndim != 3:
        return
    if plane == "3d":
        viewer.dims.ndisplay = 3
        return
    viewer.dims.ndisplay = 2
    viewer.dims.order = VIEWS[plane]
    viewer.dims.axis_labels = ("x (R)", "y (A)", "z (S)")
    _camera(viewer).orientation2d = ("up", "left")


def _camera(viewer):
    """napari >= 0.9 keeps the camera in ``viewer.scene``; older versions on the viewer."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def layer_box() -> QComboBox:
    """A combo box of layer names that does not widen the dock to its longest name."""
    box = QComboBox()
    box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(12)
    return box


class FiguresTable(QTableWidget):
    """A table whose rows take the height of their wrapped texts whenever its width changes."""

    def resizeEvent(self, event):  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self.resizeRowsToContents()


def figures_table(min_height: int) -> QTableWidget:
    """A read-only two-column table (figure, value) whose long texts wrap instead of being cut."""
    table = FiguresTable(0, 2)
    table.setHorizontalHeaderLabels(["figure", "value"])
    table.verticalHeader().setVisible(False)
    table.setWordWrap(True)
    table.setTextElideMode(Qt.ElideNone)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    header = table.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.Stretch)
    header.setSectionResizeMode(1, QHeaderView.Stretch)
    header.sectionResized.connect(lambda *_: table.resizeRowsToContents())
    table.setMinimumHeight(min_height)
    return table


def fill_table(table: QTableWidget, rows, icons: dict | None = None) -> None:
    """Rows of (figure, value) texts; ``icons`` maps a row index to an icon for its figure."""
    table.setRowCount(len(rows))
    for i, (name, value) in enumerate(rows):
        item = QTableWidgetItem(name)
        if icons and i in icons:
            item.setIcon(icons[i])
        table.setItem(i, 0, item)
        value_item = QTableWidgetItem(value)
        value_item.setTextAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        value_item.setToolTip(value)
        table.setItem(i, 1, value_item)
    table.resizeRowsToContents()


def choice_layers(viewer, kind: str) -> list:
    """The user's 3D image or labels layers, or Points layers (never the widgets' result layers)."""
    cls = {"image": napari.layers.Image, "labels": napari.layers.Labels, "points": napari.layers.Points}[kind]
    out = []
    for layer in viewer.layers:
        if not isinstance(layer, cls) or layer.name.startswith(RESULT_PREFIX):
            continue
        if kind != "points" and getattr(layer, "ndim", 3) != 3:
            continue
        out.append(layer)
    return out


def labels_for(image: str, labels: list[str]) -> str | None:
    """The label layer that belongs to an image: same file stem first, then any."""
    for name in labels:
        if image and name.startswith(image):
            return name
    return labels[0] if labels else None


def fill_box(box: QComboBox, names: list[str], prefer: str | None = None) -> None:
    """Refill a combo box, keeping its choice when it is still there (else ``prefer``)."""
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(names)
    choice = current if current in names else (prefer if prefer in names else None)
    if choice is not None:
        box.setCurrentText(choice)
    box.blockSignals(False)


def watch_edits(layer) -> None:
    """Set ``layer.metadata[EDITED_KEY]`` when the layer is painted or its data replaced (both
    widgets read it, whichever one saw the edit)."""
    if layer in _WATCHED:
        return
    _WATCHED.add(layer)
    ref = weakref.ref(layer)

    def mark(event=None):
        target = ref()
        if target is not None:
            target.metadata[EDITED_KEY] = True

    for name in ("paint", "data"):
        emitter = getattr(layer.events, name, None)
        if emitter is not None:
            emitter.connect(mark)


def labels_request(layer, scan, settings, edited_ids=()) -> tuple:
    """(label map on the scan's grid, source text, edited, automatic) of a Labels layer."""
    label_map = labels_on_scan(layer, scan, settings.labels.grid_tolerance_mm)
    edited = id(layer) in edited_ids or bool(layer.metadata.get(EDITED_KEY))
    source = (layer.metadata.get(META_KEY) or {}).get("path") or f"napari layer {layer.name}"
    if edited and not source.startswith("napari layer"):
        source = f"{source} (edited in napari layer {layer.name})"
    automatic = layer.metadata.get(AUTO_KEY)
    if not isinstance(automatic, AutoSegmentation) or automatic.label_map.shape != label_map.shape:
        automatic = None
    elif automatic is not None:
        edited = False  # decided by the data: a map painted and painted back is unedited
    return label_map, source, edited, automatic


def _measure_job(scan, label_map, side, settings, edge, roof_medial, labels_source, edited, automatic=None):
    """Worker generator: yields progress steps, returns (analysis, result layer tuples)."""
    yield "measuring (volumes, head frame, zones, isotropic reconstruction)"
    analysis = measure_label_map(scan, label_map, side, settings, edge, roof_medial, labels_source, edited,
                                 automatic)
    yield "sampling the mid-planes"
    layers = [zones_layer_data(analysis)] + plane_layers(analysis)
    return analysis, layers


def _segment_job(scan, side, settings, seeds):
    """Worker generator: the automatic segmentation of ``onfh analyze`` without masks."""
    yield "segmenting (head sphere, neck plane, lesion, acetabulum)"
    return segment_label_map(scan, side, settings, seeds)


def _export_job(analysis, folder, settings, read):
    """Worker generator: saves the read (label map and audit entry) and the CLI's outputs for it.

    ``read`` is (label map, reader, case, reason, labels as opened). Returns (analysis folder,
    audit entry).
    """
    from pipeline.app.analyze import write_analysis
    from pipeline.io.outputs import check_output_dir

    started = time.perf_counter()
    label_map, reader, case, reason, opened = read
    _, out_dir, _ = read_paths(folder, reader, case)
    check_output_dir(out_dir, "analyze")  # refused before the read is touched
    yield f"writing {out_dir}"
    entry = save_read(label_map, analysis.scan, folder, reader, case, reason, opened,
                      before_commit=lambda: write_analysis(analysis, out_dir, settings, started))
    return out_dir, entry


def _digest(data) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


class WorkerWidget:
    """Long work of a dock widget in a napari worker thread, the widget busy meanwhile.

    The widget provides ``status`` (QLabel), ``warnings_text``, ``_set_busy(busy, text)`` and
    ``_on_finished()``; errors are shown in the status line (an InputError as its message).
    """

    def _start(self, job, args, on_return, desc: str, total: int):
        """Run ``job(*args)``; ``on_return`` gets its result. Returns the worker."""
        from napari.qt.threading import create_worker

        worker = create_worker(job, *args, _progress={"total": total, "desc": desc}, _ignore_errors=True)
        worker.yielded.connect(lambda msg: self.status.setText(f"{msg}..."))
        worker.returned.connect(on_return)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._set_busy(True, desc)
        self._worker = worker
        worker.start()
        return worker

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, InputError):
            self._show_error(str(exc))
        else:
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._show_error(f"internal error: {type(exc).__name__}: {exc}")
            self.warnings_text.setPlainText(detail)

    def _show_error(self, message: str) -> None:
        self.error = message
        self.status.setText(f"<span style='color:#ff6060'>error: {message}</span>")


class AnalyzeHipWidget(WorkerWidget, QWidget):
    """Measure one hip from the current label map (the `onfh analyze --labels` figures)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.analysis = None
        self.settings = None
        self.last_export: Path | None = None
        self.busy = False
        self.stale = False
        self.error: str | None = None
        self._worker = None
        self._pending_export: Path | None = None
        self._edited: set[int] = set()
        self._watched: list = []
        #: each Labels layer's data and data-to-world matrix when first seen (the "labels as opened")
        self._opened: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: digest of each Labels layer's data when last saved as a read
        self._saved: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.last_read: dict | None = None
        self._build()
        layers_events = self.viewer.layers.events
        layers_events.inserted.connect(self.reset_choices)
        layers_events.removed.connect(self.reset_choices)
        self.viewer.dims.events.order.connect(self.sync_plane_layers)
        self.viewer.dims.events.ndisplay.connect(self.sync_plane_layers)
        self.reset_choices()

    # UI ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        """Lay out the widget: inputs, label and segmentation tools, actions and figures, views."""
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_inputs())
        self._build_tools(layout)
        self._build_results(layout)
        layout.addLayout(self._build_views())

    def _build_inputs(self) -> QFormLayout:
        """The form of inputs: image, labels, side, label values, landmarks, seeds and settings.

        Returns
        -------
        QFormLayout
            The form; every input that changes the figures marks them stale.
        """
        form = QFormLayout()
        self.image_box = layer_box()
        self.labels_box = layer_box()
        self.side_box = layer_box()
        self.side_box.addItems(["right", "left"])
        self.head_spin = QSpinBox()
        self.lesion_spin = QSpinBox()
        for spin, value in ((self.head_spin, 1), (self.lesion_spin, 2)):
            spin.setRange(1, 65535)
            spin.setValue(value)
        self.edge_box = layer_box()
        self.roof_box = layer_box()
        self.seed_box = layer_box()
        self.seed_box.setToolTip("Points layer: its points lie inside the lesion (RAS mm), for 'Segment "
                                 "automatically' (as `onfh analyze --lesion-seed`)")
        self.edge_box.setToolTip("Points layer: its last point is the lateral acetabular edge (RAS mm)")
        self.roof_box.setToolTip("Points layer: its last point is the medial end of the acetabular roof (RAS mm)")
        self.config_edit = QLineEdit()
        self.config_edit.setPlaceholderText("default settings (configs/default.yaml)")
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_edit)
        browse = QPushButton("...")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse_config)
        config_row.addWidget(browse)
        form.addRow("Image", self.image_box)
        form.addRow("Labels", self.labels_box)
        form.addRow("Side", self.side_box)
        form.addRow("Head label", self.head_spin)
        form.addRow("Lesion label", self.lesion_spin)
        form.addRow("Acetabular edge", self.edge_box)
        form.addRow("Roof medial end", self.roof_box)
        form.addRow("Lesion seeds", self.seed_box)
        form.addRow("Settings", config_row)
        self.image_box.currentTextChanged.connect(self._image_changed)
        self.labels_box.currentTextChanged.connect(self._mark_stale)
        self.side_box.currentTextChanged.connect(self._mark_stale)
        self.config_edit.textChanged.connect(self._mark_stale)
        self.head_spin.valueChanged.connect(self._mark_stale)
        self.lesion_spin.valueChanged.connect(self._mark_stale)
        self.edge_box.currentTextChanged.connect(self._mark_stale)
        self.roof_box.currentTextChanged.connect(self._mark_stale)
        return form

    def _build_tools(self, layout: QVBoxLayout) -> None:
        """Label-map tools (open, new, edge landmark), automatic segmentation and its notes.

        Parameters
        ----------
        layout : QVBoxLayout
            The widget's layout, to which the rows are added.
        """
        tools = QHBoxLayout()
        self.open_labels_button = QPushButton("Open label map...")
        self.open_labels_button.setToolTip("Read a label map or mask file onto the chosen image's grid "
                                           "(checked as `onfh analyze --labels` checks it)")
        self.open_labels_button.clicked.connect(self._open_labels_clicked)
        tools.addWidget(self.open_labels_button)
        self.new_labels_button = QPushButton("New label map")
        self.new_labels_button.setToolTip("An empty label map on the image's grid, to paint (1 head, 2 lesion)")
        self.new_labels_button.clicked.connect(self.new_label_map)
        self.landmark_button = QPushButton("Add edge landmark")
        self.landmark_button.setToolTip("A Points layer for the lateral acetabular edge; click once in the view")
        self.landmark_button.clicked.connect(self.add_landmark_layer)
        tools.addWidget(self.new_labels_button)
        tools.addWidget(self.landmark_button)
        layout.addLayout(tools)
        segment_row = QHBoxLayout()
        self.segment_button = QPushButton("Segment automatically")
        self.segment_button.setToolTip(SEGMENTATION_NOTE)
        self.segment_button.clicked.connect(self.segment)
        self.seed_button = QPushButton("Add lesion seed")
        self.seed_button.setToolTip("A Points layer 'lesion seed': click inside the lesion, then segment")
        self.seed_button.clicked.connect(self.add_seed_layer)
        segment_row.addWidget(self.segment_button)
        segment_row.addWidget(self.seed_button)
        layout.addLayout(segment_row)
        self.auto_note = QLabel("")
        self.auto_note.setWordWrap(True)
        self.auto_note.setVisible(False)
        layout.addWidget(self.auto_note)
        self.oblique_note = QLabel("")
        self.oblique_note.setWordWrap(True)
        self.oblique_note.setStyleSheet("color: #e0c060; font-size: 10px;")
        self.oblique_note.setVisible(False)
        note = QLabel(SEGMENTATION_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color: #b0b0b0; font-size: 10px;")
        layout.addWidget(note)
        layout.addWidget(self.oblique_note)

    def _build_results(self, layout: QVBoxLayout) -> None:
        """Measure and Export buttons, progress, status, the figures table and the warnings.

        Parameters
        ----------
        layout : QVBoxLayout
            The widget's layout, to which the rows are added.
        """
        read_form = QFormLayout()
        self.reader_edit = QLineEdit()
        self.reader_edit.setPlaceholderText("your reader ID, e.g. jdoe (required to export)")
        self.reader_edit.setToolTip("Export saves the read under this name: <folder>/<reader>/<image>_labels.nii.gz, "
                                    "with an entry in <folder>/<reader>/audit.jsonl")
        self.reason_edit = QLineEdit()
        self.reason_edit.setPlaceholderText("reason for the change (required to replace a saved read)")
        read_form.addRow("Reader", self.reader_edit)
        read_form.addRow("Reason", self.reason_edit)
        layout.addLayout(read_form)
        actions = QHBoxLayout()
        self.measure_button = QPushButton("Measure")
        self.measure_button.clicked.connect(self.measure)
        self.export_button = QPushButton("Export...")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._export_clicked)
        actions.addWidget(self.measure_button)
        actions.addWidget(self.export_button)
        layout.addLayout(actions)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.table = figures_table(200)
        layout.addWidget(self.table)
        self.warnings_text = QPlainTextEdit()
        self.warnings_text.setReadOnly(True)
        self.warnings_text.setMaximumHeight(80)
        self.warnings_text.setPlaceholderText("warnings")
        layout.addWidget(self.warnings_text)

    def _build_views(self) -> QHBoxLayout:
        """View buttons: coronal, sagittal, axial, 3D and the head centre.

        Returns
        -------
        QHBoxLayout
        """
        views = QHBoxLayout()
        for label, plane in (("Coronal", "coronal"), ("Sagittal", "sagittal"), ("Axial", "axial"), ("3D", "3d")):
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, p=plane: set_view(self.viewer, p))
            views.addWidget(button)
        centre = QPushButton("Head centre")
        centre.setToolTip("Move the sliders to the fitted head centre (the mid-planes)")
        centre.clicked.connect(self.go_to_head_centre)
        views.addWidget(centre)
        return views

    def _browse_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Settings", "", "YAML (*.yaml *.yml)")
        if path:
            self.config_edit.setText(path)

    # layer choices ------------------------------------------------------------------------------
    def _layers_of(self, kind: str) -> list:
        return choice_layers(self.viewer, kind)

    def reset_choices(self, event=None) -> None:
        """Refresh the layer lists (napari calls this when layers are added or removed)."""
        images = [layer.name for layer in self._layers_of("image")]
        labels_layers = self._layers_of("labels")
        for layer in labels_layers:
            watch_edits(layer)
            if layer not in self._opened:
                self._opened[layer] = (np.array(layer.data, copy=True), data_to_world_matrix(layer))
        labels = [layer.name for layer in labels_layers]
        points = [NONE] + [layer.name for layer in self._layers_of("points")]
        before = self.image_box.currentText()
        fill_box(self.image_box, images)
        image = self.image_box.currentText()
        fill_box(self.labels_box, labels, labels_for(image, labels))
        edge = next((n for n in points if "edge" in n.lower()), NONE)
        roof = next((n for n in points if "roof" in n.lower() or "medial" in n.lower()), NONE)
        seed = next((n for n in points if "seed" in n.lower()), NONE)
        fill_box(self.edge_box, points, edge)
        fill_box(self.roof_box, points, roof)
        fill_box(self.seed_box, points, seed)
        if image and image != before:
            self._image_changed(image)

    def _image_changed(self, name: str) -> None:
        oblique = 0.0
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            side = layer.metadata.get("onfh_side")
            if side in ("left", "right"):
                self.side_box.setCurrentText(side)
            if layer.ndim == 3:
                oblique = obliquity_deg(data_to_world_matrix(layer))
        self.oblique_note.setVisible(oblique > OBLIQUE_NOTE_DEG)
        self.oblique_note.setText(
            f"Oblique scan ({oblique:.1f}° off the world axes): napari draws its 2D slices without the "
            "out-of-slice rotation. The figures, the 'onfh mid-coronal/-sagittal' planes and the 3D view are exact."
        )
        self._mark_stale()

    def _layer(self, box: QComboBox, what: str, required: bool = True):
        name = box.currentText()
        if not name or name == NONE:
            if required:
                raise InputError(f"choose {what}")
            return None
        if name not in self.viewer.layers:
            raise InputError(f"layer {name!r} no longer exists")
        return self.viewer.layers[name]

    # editing ----------------------------------------------------------------------------------
    def _watch(self, layer) -> None:
        """Mark the figures stale (and the labels edited) when the layer changes."""
        watch_edits(layer)
        if any(w is layer for w in self._watched):
            return
        self._watched.append(layer)
        for name in ("paint", "data"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(partial(self._edited_layer, id(layer)))

    def _edited_layer(self, layer_id: int, event=None) -> None:
        self._edited.add(layer_id)
        self._mark_stale()

    def _mark_stale(self, *_) -> None:
        if self.analysis is not None and not self.stale:
            self.stale = True
            self.status.setText("Inputs changed since the last measurement: press Re-measure.")

    def new_label_map(self):
        """Add an empty Labels layer on the chosen image's grid (paint 1 head, 2 lesion)."""
        try:
            image = self._layer(self.image_box, "an image layer")
            scan = layer_scan(image)
        except InputError as exc:
            self._show_error(str(exc))
            return None
        data, kwargs, _ = labels_layer_data(np.zeros(scan.shape, np.uint8), scan, f"{image.name}_labels")
        layer = self.viewer.add_labels(data, **kwargs)
        self.labels_box.setCurrentText(layer.name)
        return layer

    def _open_labels_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Label map", "",
                                              "Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)")
        if path:
            self.open_label_map(path)

    def open_label_map(self, path):
        """Add a label map file as a Labels layer on the chosen image's grid, whatever its name.

        The file is read with :func:`pipeline.io.scan.load_labels` against the image (same voxels in
        space, voxel order free), exactly as ``onfh analyze --labels`` reads it.
        """
        try:
            image = self._layer(self.image_box, "an image layer")
            scan = layer_scan(image)
            label_map = load_labels(path, scan)
        except InputError as exc:
            self._show_error(str(exc))
            return None
        data, kwargs, _ = labels_layer_data(label_map, scan, stem(path), path)
        layer = self.viewer.add_labels(data, **kwargs)
        self.labels_box.setCurrentText(layer.name)
        self.error = None
        self.status.setText(f"Label map {Path(path).name} added on the grid of {image.name}.")
        return layer

    def add_landmark_layer(self):
        """Add an empty Points layer for the lateral acetabular edge, ready to click."""
        data, kwargs, _ = points_layer_data(np.zeros((0, 3)), "acetabular edge")
        layer = self.viewer.add_points(data, **kwargs)
        self.edge_box.setCurrentText(layer.name)
        layer.mode = "add"
        return layer

    def add_seed_layer(self):
        """Add an empty Points layer "lesion seed" (points inside the lesion), ready to click."""
        data, kwargs, _ = points_layer_data(np.zeros((0, 3)), "lesion seed", color="cyan")
        layer = self.viewer.add_points(data, **kwargs)
        self.seed_box.setCurrentText(layer.name)
        layer.mode = "add"
        return layer

    # automatic segmentation -------------------------------------------------------------------
    def _settings(self):
        config = self.config_edit.text().strip() or None
        return load_settings(config, labels__head=self.head_spin.value(), labels__lesion=self.lesion_spin.value())

    def _seeds(self):
        layer = self._layer(self.seed_box, "lesion seeds", required=False)
        if layer is None or len(layer.data) == 0:
            return None
        return [tuple(float(v) for v in np.asarray(layer.data_to_world(p), dtype=float)) for p in layer.data]

    def segment(self):
        """Segment the chosen image automatically in a worker thread; returns the worker.

        The result is added as the Labels layer ``<image>_auto_labels`` (replaced if present) and
        chosen for measuring; the confidence flags are shown under the button.
        """
        if self.busy:
            return None
        try:
            image = self._layer(self.image_box, "an image layer")
            scan = layer_scan(image)
            request = (scan, self.side_box.currentText(), self._settings(), self._seeds())
        except InputError as exc:
            self._show_error(str(exc))
            return None
        return self._start(_segment_job, request, partial(self._show_segmentation, image.name, scan),
                           "onfh: segmenting hip", total=1)

    def _show_segmentation(self, image_name: str, scan, result) -> None:
        label_map, automatic = result
        name = f"{image_name}{AUTO_SUFFIX}"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data, kwargs, _ = labels_layer_data(label_map, scan, name, extra_meta={AUTO_KEY: automatic})
        layer = self.viewer.add_labels(data, **kwargs)
        self._edited.discard(id(layer))
        self.labels_box.setCurrentText(layer.name)
        self.viewer.layers.selection.active = layer
        ok = automatic.status == "ok"
        flags = automatic.flags
        conf = automatic.record.get("confidence") or {}
        facts = (f"sphere-fit RMS {conf.get('sphere_fit_rms_mm', float('nan')):.2f} mm, head surface seen over "
                 f"{100 * conf.get('surface_coverage', float('nan')):.0f} %")
        if conf.get("band_contrast") is not None:
            facts += f", lesion margin contrast {conf['band_contrast']:.2f}"
        text = (f"Automatic segmentation: {'confidence OK' if ok else 'REVIEW'} ({facts})"
                + ("".join(f"<br>• {flag}" for flag in flags)))
        colour = "#8fd18f" if ok else "#ffb000"
        self.auto_note.setText(f"<span style='color:{colour}'>{text}</span>")
        self.auto_note.setVisible(True)
        voxel_ml = scan.voxel_volume_mm3 / 1000.0
        head_ml = int(np.count_nonzero(label_map)) * voxel_ml
        lesion_ml = int(np.count_nonzero(label_map == self.lesion_spin.value())) * voxel_ml
        self.error = None
        self._mark_stale()
        self.status.setText(f"Segmented {image_name}: head {head_ml:.2f} mL, lesion {lesion_ml:.2f} mL "
                            f"(layer {name}). Check and correct it, then press "
                            f"{self.measure_button.text()}.")

    # measuring --------------------------------------------------------------------------------
    def _landmark(self, box: QComboBox, what: str):
        layer = self._layer(box, what, required=False)
        if layer is None:
            return None
        self._watch(layer)
        if len(layer.data) == 0:
            return None
        return tuple(float(v) for v in np.asarray(layer.data_to_world(layer.data[-1]), dtype=float))

    def _request(self) -> tuple:
        """Everything the measurement needs, copied on the main thread (painting may go on)."""
        image = self._layer(self.image_box, "an image layer")
        labels = self._layer(self.labels_box, "a labels layer (load, paint or segment one: 1 head, 2 lesion)")
        settings = self._settings()
        scan = layer_scan(image)
        self._watch(labels)
        label_map, source, edited, automatic = labels_request(labels, scan, settings, self._edited)
        return (scan, label_map, self.side_box.currentText(), settings,
                self._landmark(self.edge_box, "the acetabular edge"),
                self._landmark(self.roof_box, "the acetabular roof's medial end"), source, edited, automatic)

    def measure(self):
        """Start measuring in a worker thread; returns the worker (None if busy or refused)."""
        if self.busy:
            return None
        try:
            request = self._request()
        except InputError as exc:
            self._show_error(str(exc))
            return None
        first = self.analysis is None
        return self._start(_measure_job, request, lambda result: self._show(result, first, request[3]),
                           "onfh: measuring hip", total=2)

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.busy = busy
        self.progress.setVisible(busy)
        for button in (self.measure_button, self.export_button, self.new_labels_button, self.open_labels_button,
                       self.segment_button):
            button.setEnabled(not busy and (button is not self.export_button or self.analysis is not None))
        if busy:
            self.error = None
            self.status.setText(f"{text}...")

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)
        pending, self._pending_export = self._pending_export, None
        if pending is not None and self.error is None and not self.stale and self.analysis is not None:
            self.export(pending)

    def _show(self, result, first: bool, settings) -> None:
        analysis, layers = result
        self.analysis = analysis
        self.settings = settings
        self.stale = False
        figures = analysis.result
        fill_table(self.table, figures.table_rows())
        self.warnings_text.setPlainText("\n".join(f"• {w}" for w in figures.warnings))
        self._replace_result_layers(layers, self.labels_box.currentText())
        self.measure_button.setText("Re-measure")
        self.export_button.setEnabled(True)
        self.status.setText(
            figures.headline() + (f"; {len(figures.warnings)} warning(s)" if figures.warnings else "")
        )
        if first:
            set_view(self.viewer, "coronal")
            self.go_to_head_centre()

    def _replace_result_layers(self, layers: list[tuple], labels_name: str | None = None) -> None:
        """Replace the result layers whole. The mid-plane images go just above the scan (under the
        label map, so painting stays visible); outlines and zones go on top. The labels layer is
        made active for painting."""
        from napari.layers import Layer

        visible = {}
        for _, kwargs, _ in layers:
            name = kwargs["name"]
            if name in self.viewer.layers:
                visible[name] = self.viewer.layers[name].visible
                self.viewer.layers.remove(name)
        image_name = self.image_box.currentText()
        for data, kwargs, kind in layers:
            layer = Layer.create(data, kwargs, kind)
            layer.visible = visible.get(kwargs["name"], kwargs.get("visible", True))
            if kind == "image" and image_name in self.viewer.layers:
                self.viewer.layers.insert(self.viewer.layers.index(image_name) + 1, layer)
            elif kind == "labels" and labels_name in self.viewer.layers:  # zones under the label map
                self.viewer.layers.insert(self.viewer.layers.index(labels_name), layer)
            else:
                self.viewer.add_layer(layer)
        if labels_name and labels_name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[labels_name]
        self.sync_plane_layers()

    def sync_plane_layers(self, event=None) -> None:
        """Show each mid-plane (image and outlines) in its own 2D view and both in 3D: seen edge-on
        in another view, a plane would only draw a stray line."""
        dims = self.viewer.dims
        if dims.ndim != 3:
            return
        sliced = dims.order[0]
        for plane, axis in (("coronal", 1), ("sagittal", 0)):
            show = dims.ndisplay == 3 or sliced == axis
            for name in (f"{RESULT_PREFIX}mid-{plane}", f"{RESULT_PREFIX}mid-{plane} outlines"):
                if name in self.viewer.layers:
                    self.viewer.layers[name].visible = show

    def go_to_head_centre(self, zoom: bool = True) -> None:
        """Sliders and camera to the fitted head centre (where the mid-planes cross)."""
        if self.analysis is None or self.analysis.frame is None:
            return
        frame = self.analysis.frame
        centre = np.asarray(frame.center, dtype=float)
        for axis in range(3):
            self.viewer.dims.set_point(axis, float(centre[axis]))
        displayed = self.viewer.dims.displayed
        camera = _camera(self.viewer)
        camera.center = tuple(float(centre[a]) for a in displayed)
        canvas = getattr(getattr(self.viewer, "canvas", None), "size", None)
        if zoom and canvas is not None and min(canvas) > 1:
            camera.zoom = float(min(canvas)) / (6.0 * frame.radius)

    # export -----------------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        if self._reader() is None:
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Export the read into a reads folder (under <folder>/<reader>/; other files are never replaced)")
        if folder:
            self.export(folder)

    def _reader(self) -> str | None:
        """The reader name, checked; None (and the reason shown) when it is missing or unusable."""
        try:
            return check_reader(self.reader_edit.text())
        except InputError as exc:
            self._show_error(str(exc))
            return None

    def _opened_on(self, layer, scan) -> np.ndarray | None:
        """The labels layer as first seen, on the scan's grid (None if unknown or elsewhere)."""
        opened = self._opened.get(layer)
        if opened is None:
            return None
        data, matrix = opened
        try:
            placed = place_on_grid(Scan.from_source(data, matrix), scan, self.settings.labels.grid_tolerance_mm,
                                   what="labels as opened")
        except InputError:
            return None
        return np.asarray(placed, dtype=np.int32)

    def export(self, folder):
        """Save the read and write what ``onfh analyze`` writes, under ``folder/<reader>/``.

        The labels layer measured is saved as ``<reader>/<image>_labels.nii.gz`` with an audit
        entry in ``<reader>/audit.jsonl`` (:func:`._writer.save_read`: voxels added and removed per
        label against the file's previous content, or the labels as opened; the reason typed), and
        labels, zones, meshes, metrics.json and qc.png go to ``<reader>/<image>/``. Refused (no file
        written) without a reader name. When the inputs changed since the last measurement, the
        hip is re-measured first and the export follows. Returns the running worker.
        """
        if self.busy:
            return None
        reader = self._reader()
        if reader is None:
            return None
        if self.stale or self.analysis is None:
            self._pending_export = Path(folder)
            return self.measure()
        self._pending_export = None
        try:
            layer = self._layer(self.labels_box, "a labels layer")
            scan = self.analysis.scan
            label_map = labels_on_scan(layer, scan, self.settings.labels.grid_tolerance_mm)
            read = (label_map, reader, self.image_box.currentText(), self.reason_edit.text(),
                    self._opened_on(layer, scan))
            read_paths(folder, reader, read[2])
        except InputError as exc:
            self._show_error(str(exc))
            return None
        digest = _digest(layer.data)

        def done(result):
            out_dir, entry = result
            self.last_export = out_dir
            self.last_read = entry
            self._saved[layer] = digest
            self.reason_edit.clear()  # a reason is for one change
            self.status.setText(f"Read saved by {entry['reader']} ({entry['action']}: {Path(entry['path']).name}, "
                                f"audit entry added); exported to {out_dir}")

        return self._start(_export_job, (self.analysis, Path(folder), self.settings, read), done,
                           "onfh: exporting", total=1)

    def unsaved_layers(self) -> list[str]:
        """Names of Labels layers changed since they were opened or last saved as a read."""
        out = []
        for layer in self._layers_of("labels"):
            saved = self._saved.get(layer)
            if saved is None and layer in self._opened:
                saved = _digest(self._opened[layer][0])
            if saved is not None and saved != _digest(layer.data):
                out.append(layer.name)
        return out

    def clear_results(self) -> None:
        """Forget the measurement and remove its result layers (a new case is opened)."""
        for layer in [lay for lay in self.viewer.layers if lay.name.startswith(RESULT_PREFIX)]:
            self.viewer.layers.remove(layer)
        self.analysis = None
        self.stale = False
        self.error = None
        self.table.setRowCount(0)
        self.warnings_text.clear()
        self.auto_note.setVisible(False)
        self.measure_button.setText("Measure")
        self.export_button.setEnabled(False)
        self.reason_edit.clear()
        self.status.setText("")


__all__ = ["AnalyzeHipWidget", "set_view", "SCAN_KEY"]
