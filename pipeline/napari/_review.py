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

from pipeline.errors import InputError
from pipeline.napari._layers import points_layer_data, scan_with_labels

WIDGET_NAME = "Analyze hip"
COMPARE_NAME = "Compare visits"
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


def open_review(viewer, layers: list[tuple] = (), side: str | None = None, config: str | None = None):
    """Add the layers and dock the "Analyze hip" and "Compare visits" widgets (side by side on a
    screen at least SIDE_BY_SIDE_MIN_SCREEN_PX wide, else as tabs);
    returns the "Analyze hip" widget (the other is ``viewer.window.dock_widgets[COMPARE_NAME]``).

    Only the first image and its labels are shown at first: later visits lie in their own
    scanner space and would overlap it (their layers are there, hidden).
    """
    from napari.layers import Layer
    from qtpy.QtCore import Qt

    from pipeline.napari._compare import CompareVisitsWidget
    from pipeline.napari._widget import AnalyzeHipWidget, set_view

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
    # shown even for --screenshot: a hidden window's canvas is not redrawn reliably (it kept the
    # first frame, without the layers added later)
    viewer = napari.Viewer(title="onfh review", show=True)
    widget = open_review(viewer, layers, side, config)
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
