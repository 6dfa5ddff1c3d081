"""``onfh review [IMAGE ...]``: napari with the images, their label maps and both widgets docked
("Analyze hip" and "Compare visits", the first image as the baseline and the last as follow-up).

Every image is read (and its label map checked against its grid) before any window opens, so bad
input ends like any other ``onfh`` command: one line, exit status 2.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import InputError
from ._layers import points_layer_data, scan_with_labels

WIDGET_NAME = "Analyze hip"
COMPARE_NAME = "Compare visits"
PLUGIN_NAME = "onfh-pipeline"


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


def open_review(viewer, layers: list[tuple] = (), side: str | None = None, config: str | None = None):
    """Add the layers and dock the "Analyze hip" and "Compare visits" widgets side by side;
    returns the "Analyze hip" widget (the other is ``viewer.window.dock_widgets[COMPARE_NAME]``).

    Only the first image and its labels are shown at first: later visits lie in their own
    scanner space and would overlap it (their layers are there, hidden).
    """
    from napari.layers import Layer
    from qtpy.QtCore import Qt

    from ._compare import CompareVisitsWidget
    from ._widget import AnalyzeHipWidget, set_view

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
    widget = AnalyzeHipWidget(viewer)
    compare = CompareVisitsWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name=WIDGET_NAME, area="right", add_vertical_stretch=False)
    compare_dock = viewer.window.add_dock_widget(compare, name=COMPARE_NAME, area="right",
                                                 add_vertical_stretch=True)
    viewer.window._qt_window.splitDockWidget(dock, compare_dock, Qt.Horizontal)
    for w in (widget, compare):
        if side:
            w.side_box.setCurrentText(side)
        if config:
            w.config_edit.setText(str(config))
    if layers:
        set_view(viewer, "coronal")
        viewer.reset_view()
    return widget


def wait_for(widget, timeout_s: float = 300.0) -> None:
    """Process Qt events until the widget's worker is done (for --screenshot)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while (widget.busy or getattr(widget, "_pending_export", None) is not None) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def run_review(images: list, labels=None, side: str | None = None, config: str | None = None,
               screenshot: str | Path | None = None, measure: bool = False, edge=None,
               compare: bool = False, size: tuple[int, int] = (1500, 950)) -> int:
    """Open napari (blocks until its window closes), or write a screenshot of it and return.

    ``measure`` measures the first image's hip on opening; ``compare`` (two or more images)
    compares the last image with the first in "Compare visits".
    """
    check_display()
    if compare and len(images) < 2:
        raise InputError("--compare needs two images: the baseline, then the follow-up")
    layers = review_layers([Path(p) for p in images], labels, edge)
    try:
        import napari
    except ImportError:
        raise InputError("napari is not installed: pip install 'onfh-pipeline[napari]'") from None
    viewer = napari.Viewer(title="onfh review", show=screenshot is None)
    widget = open_review(viewer, layers, side, config)
    compare_widget = viewer.window.dock_widgets[COMPARE_NAME]
    if measure:
        widget.measure()
        if screenshot is not None:
            wait_for(widget)
    if compare:
        compare_widget.compare()
        if screenshot is not None:
            wait_for(compare_widget)
    if screenshot is None:
        napari.run()
        return 0
    error = widget.error or compare_widget.error
    if error:
        viewer.close()
        raise InputError(error)
    viewer.window._qt_window.resize(*size)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # the docks take their width and the tables re-wrap their rows
    for table in (widget.table, compare_widget.table):
        table.resizeRowsToContents()
    QApplication.processEvents()
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    return 0
