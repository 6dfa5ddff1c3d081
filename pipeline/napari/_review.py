"""``onfh review [IMAGE ...]``: napari with the images, their label maps and the "Analyze hip" widget.

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
    """Add the layers and dock the "Analyze hip" widget; returns the widget."""
    from napari.layers import Layer

    from ._widget import AnalyzeHipWidget, set_view

    for data, kwargs, kind in layers:
        viewer.add_layer(Layer.create(data, kwargs, kind))
    widget = AnalyzeHipWidget(viewer)
    viewer.window.add_dock_widget(widget, name=WIDGET_NAME, area="right", add_vertical_stretch=False)
    if side:
        widget.side_box.setCurrentText(side)
    if config:
        widget.config_edit.setText(str(config))
    if layers:
        set_view(viewer, "coronal")
        viewer.reset_view()
    return widget


def wait_for(widget, timeout_s: float = 120.0) -> None:
    """Process Qt events until the widget's worker is done (for --screenshot)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while (widget.busy or widget._pending_export is not None) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def run_review(images: list, labels=None, side: str | None = None, config: str | None = None,
               screenshot: str | Path | None = None, measure: bool = False, edge=None) -> int:
    """Open napari (blocks until its window closes), or write a screenshot of it and return."""
    check_display()
    layers = review_layers([Path(p) for p in images], labels, edge)
    try:
        import napari
    except ImportError:
        raise InputError("napari is not installed: pip install 'onfh-pipeline[napari]'") from None
    viewer = napari.Viewer(title="onfh review", show=screenshot is None)
    widget = open_review(viewer, layers, side, config)
    if measure:
        widget.measure()
        if screenshot is not None:
            wait_for(widget)
    if screenshot is None:
        napari.run()
        return 0
    if widget.error:
        viewer.close()
        raise InputError(widget.error)
    viewer.window._qt_window.resize(1500, 950)
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    return 0
