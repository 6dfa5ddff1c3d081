"""``onfh review [IMAGE ...]``: napari with the images, their label maps and both widgets docked
("Analyze hip" and "Compare visits", the first image as the baseline and the last as follow-up).

Every image is read (and its label map checked against its grid) before any window opens, so bad
input ends like any other ``onfh`` command: one line, exit status 2.

``onfh review --worklist FILE`` steps through a blinded worklist (:mod:`pipeline.io.worklist`): one
case at a time, its layers and the window title named by the case's code only, "Previous" and
"Next" in a "Worklist" dock; every file of the list is checked before the window opens.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pipeline.errors import InputError
from pipeline.napari._layers import points_layer_data, scan_with_labels

WIDGET_NAME = "Analyze hip"
COMPARE_NAME = "Compare visits"
WORKLIST_NAME = "Worklist"
#: Both widgets side by side need a window about 1550 px wide; on a narrower screen they are tabs.
SIDE_BY_SIDE_MIN_SCREEN_PX = 1700


def check_display() -> None:
    """Refuse to start Qt without a display (Qt would abort the process instead)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        raise InputError("no display: run `onfh review` in a desktop session (or under `xvfb-run -a`)")


def review_layers(images: list, labels: str | Path | None = None, edge=None) -> list[tuple]:
    """Layer data of every image and its label map (``--labels``, or found beside it by name),
    and the acetabular edge landmark (RAS mm) as a Points layer."""
    if labels is not None and len(images) != 1:
        raise InputError("--labels goes with exactly one IMAGE")
    out: list[tuple] = []
    for image in images:
        out.extend(scan_with_labels(image, labels))
    if edge is not None:
        out.append(points_layer_data([edge], "acetabular edge"))
    return out


def case_layers(case) -> list[tuple]:
    """A worklist case's layers, named by its code only (file names may carry the subject ID)."""
    layers = review_layers([case.image], case.labels)
    out, labels = [], 0
    for data, kwargs, kind in layers:
        kwargs = dict(kwargs)
        if kind == "image":
            kwargs["name"] = case.code
        else:
            labels += 1
            kwargs["name"] = f"{case.code}_labels" + (f"_{labels}" if labels > 1 else "")
        out.append((data, kwargs, kind))
    return out


def _worklist_widget_class():
    from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

    class WorklistWidget(QWidget):
        """Previous / Next through a blinded worklist; the viewer shows one case at a time."""

        def __init__(self, viewer, analyze, cases, parent=None):
            super().__init__(parent)
            self.viewer, self.analyze, self.cases = viewer, analyze, cases
            self.index = 0
            self._discard = None  # the step asked once with unsaved edits: the next press goes
            layout = QVBoxLayout(self)
            self.title = QLabel("")
            layout.addWidget(self.title)
            row = QHBoxLayout()
            self.previous_button = QPushButton("Previous")
            self.next_button = QPushButton("Next")
            self.previous_button.clicked.connect(self.previous)
            self.next_button.clicked.connect(self.next)
            row.addWidget(self.previous_button)
            row.addWidget(self.next_button)
            layout.addLayout(row)
            self.status = QLabel("")
            self.status.setWordWrap(True)
            layout.addWidget(self.status)
            self._show_title()

        def _show_title(self) -> None:
            case = self.cases[self.index]
            text = f"{case.code} ({self.index + 1} of {len(self.cases)}), {case.side} hip"
            self.title.setText(text)
            self.viewer.title = f"onfh review: {text}"
            self.previous_button.setEnabled(self.index > 0)
            self.next_button.setEnabled(self.index < len(self.cases) - 1)

        def next(self) -> bool:
            return self.go(self.index + 1)

        def previous(self) -> bool:
            return self.go(self.index - 1)

        def go(self, index: int) -> bool:
            """Show case ``index``; False (and why, in the status line) if it was not shown."""
            if not 0 <= index < len(self.cases) or index == self.index:
                return False
            unsaved = self.analyze.unsaved_layers()
            if unsaved and self._discard != index:
                self._discard = index
                self.status.setText(f"Unsaved edits in {', '.join(unsaved)}: export them, or press again to "
                                    "discard them.")
                return False
            self._discard = None
            try:
                layers = case_layers(self.cases[index])
            except InputError as exc:
                self.status.setText(f"error: {exc}")
                return False
            self.analyze.clear_results()
            self.viewer.layers.clear()
            _add_layers(self.viewer, layers)
            self.index = index
            self.analyze.side_box.setCurrentText(self.cases[index].side)
            self.status.setText("")
            self._show_title()
            from pipeline.napari._widget import set_view

            set_view(self.viewer, "coronal")
            self.viewer.reset_view()
            return True

    return WorklistWidget


def open_worklist(viewer, cases, reader: str | None = None, config: str | None = None, layers=None):
    """Open a worklist's first case (``layers``: its :func:`case_layers`, if read already) with both
    widgets and dock the "Worklist" stepper; returns the stepper."""
    widget = open_review(viewer, case_layers(cases[0]) if layers is None else layers, cases[0].side, config)
    if reader:
        widget.reader_edit.setText(reader)
    stepper = _worklist_widget_class()(viewer, widget, cases)
    viewer.window.add_dock_widget(stepper, name=WORKLIST_NAME, area="right", add_vertical_stretch=False)
    return stepper


def _add_layers(viewer, layers: list[tuple]) -> str | None:
    """Add layer tuples; only the first image and its labels visible. Returns the first image's name."""
    from napari.layers import Layer

    first_image = None
    for data, kwargs, kind in layers:
        layer = Layer.create(data, kwargs, kind)
        if kind == "image":
            first_image = first_image or layer.name
        elif kind == "labels" and first_image and not layer.name.startswith(first_image):
            layer.visible = False
        if kind == "image" and layer.name != first_image:
            layer.visible = False
        viewer.add_layer(layer)
    return first_image


def open_review(viewer, layers: list[tuple] = (), side: str | None = None, config: str | None = None):
    """Add the layers and dock the "Analyze hip" and "Compare visits" widgets (side by side on a
    screen at least SIDE_BY_SIDE_MIN_SCREEN_PX wide, else as tabs);
    returns the "Analyze hip" widget (the other is ``viewer.window.dock_widgets[COMPARE_NAME]``).

    Only the first image and its labels are shown at first: later visits lie in their own
    scanner space and would overlap it (their layers are there, hidden).
    """
    from qtpy.QtCore import Qt

    from pipeline.napari._compare import CompareVisitsWidget
    from pipeline.napari._widget import AnalyzeHipWidget, set_view

    _add_layers(viewer, layers)
    widget = AnalyzeHipWidget(viewer)
    compare = CompareVisitsWidget(viewer)
    side_by_side = _screen_width() >= SIDE_BY_SIDE_MIN_SCREEN_PX
    dock = viewer.window.add_dock_widget(widget, name=WIDGET_NAME, area="right", add_vertical_stretch=False)
    compare_dock = viewer.window.add_dock_widget(compare, name=COMPARE_NAME, area="right",
                                                 add_vertical_stretch=True, tabify=not side_by_side)
    if side_by_side:
        viewer.window._qt_window.splitDockWidget(dock, compare_dock, Qt.Horizontal)
    else:  # a narrower screen: tabs, "Analyze hip" in front
        dock.show()
        dock.raise_()
    for w in (widget, compare):
        if side:
            w.side_box.setCurrentText(side)
        if config:
            w.config_edit.setText(str(config))
    if layers:
        set_view(viewer, "coronal")
        viewer.reset_view()
    return widget


def _screen_width() -> int:
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    return int(screen.availableGeometry().width()) if screen is not None else 0


def wait_for(widget, timeout_s: float = 300.0) -> None:
    """Process Qt events until the widget's worker is done (for --screenshot)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while (widget.busy or getattr(widget, "_pending_export", None) is not None) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def settle(rounds: int = 10) -> None:
    """Let Qt lay out, resize and redraw (for --screenshot)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
        time.sleep(0.02)


def _close_notifications(viewer) -> None:
    """Close napari's notification toasts (e.g. its PyQt5 deprecation notice) before a screenshot."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # a private module: the screenshot just keeps the toast
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def _worklist_cases(worklist, images, labels, side, edge, compare, reader):
    """The worklist's cases, and the reader; refuses options that name a scan or a hip."""
    from pipeline.io.audit import check_reader
    from pipeline.io.worklist import read_worklist

    given = [name for name, value in (("IMAGE", images), ("--labels", labels), ("--side", side),
                                      ("--acetabular-edge", edge), ("--compare", compare)) if value]
    if given:
        raise InputError(f"--worklist goes without {', '.join(given)} (the worklist names the scans and hips)")
    cases = read_worklist(worklist)
    listed = cases[0].reader or None
    if reader is not None:
        reader = check_reader(reader)
        if listed and reader != listed:
            raise InputError(f"worklist {Path(worklist).name} is {listed}'s, not {reader}'s")
    return cases, reader or listed


def run_review(images: list, labels=None, side: str | None = None, config: str | None = None,
               screenshot: str | Path | None = None, measure: bool = False, edge=None,
               compare: bool = False, size: tuple[int, int] = (1500, 950), reader: str | None = None,
               worklist: str | Path | None = None) -> int:
    """Open napari (blocks until its window closes), or write a screenshot of it and return.

    ``measure`` measures the first image's hip on opening; ``compare`` (two or more images)
    compares the last image with the first in "Compare visits". ``reader`` presets the reader
    name Export saves reads under; ``worklist`` opens a blinded worklist's first case with a
    "Worklist" stepper (the worklist's reader unless ``reader`` is given, which must match it).
    """
    check_display()
    cases = None
    if worklist is not None:
        cases, reader = _worklist_cases(worklist, images, labels, side, edge, compare, reader)
        layers = case_layers(cases[0])
    else:
        if reader is not None:
            from pipeline.io.audit import check_reader

            reader = check_reader(reader)
        if compare and len(images) < 2:
            raise InputError("--compare needs two images: the baseline, then the follow-up")
        layers = review_layers([Path(p) for p in images], labels, edge)
    try:
        import napari
    except ImportError:
        raise InputError("napari is not installed: pip install 'onfh-pipeline[napari]'") from None
    # shown even for --screenshot: a hidden window's canvas is not redrawn reliably (it kept the
    # first frame, without the layers added later)
    viewer = napari.Viewer(title="onfh review", show=True)
    if cases is not None:
        widget = open_worklist(viewer, cases, reader, config, layers).analyze
    else:
        widget = open_review(viewer, layers, side, config)
        if reader:
            widget.reader_edit.setText(reader)
    compare_widget = viewer.window.dock_widgets[COMPARE_NAME]
    if measure:
        widget.measure()
        if screenshot is not None:
            wait_for(widget)
    if compare:
        dock = compare_widget.parent()  # in front when the widgets are tabs
        if dock is not None:
            dock.raise_()
        compare_widget.compare()
        if screenshot is not None:
            wait_for(compare_widget)
    if screenshot is None:
        from pipeline.napari._preferences import on_activate

        on_activate()  # File > Open here, and later napari sessions, read medical images with onfh
        napari.run()
        return 0
    error = widget.error or compare_widget.error
    if error:
        viewer.close()
        raise InputError(error)
    viewer.window._qt_window.resize(*size)
    settle()  # the docks take their width, the tables re-wrap
    # the camera's zoom was set for the canvas size of the moment: set it again for this one
    if compare_widget.baseline is not None:
        compare_widget.show_head_centre(compare_widget.baseline)
    elif widget.analysis is not None:
        widget.go_to_head_centre()
    _close_notifications(viewer)
    settle()
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    return 0
