"""What the napari widgets compute, without Qt: masks from a label map, the measurement, the
automatic segmentation, and the layers that show the results (zones, mid-planes).

The measurement is :func:`pipeline.measures.hip.measure_hip`, called with masks obtained from the
label map by :func:`pipeline.masks.labels.masks_from_label_map` (what ``onfh analyze --labels`` does
after reading the file), so the widget and the CLI give the same numbers for the same labels;
``tests/test_napari_widget.py`` checks it against ``run_analyze``. The automatic segmentation is
:func:`pipeline.app.analyze.segment_masks` (what ``onfh analyze`` without masks runs); its label map
carries the segmentation record, warnings and acetabulum (:class:`AutoSegmentation`) so that
measuring it unedited gives the figures of ``onfh analyze IMAGE --side S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.app.analyze import segment_masks
from pipeline.config import Settings
from pipeline.geometry.affine import index_to_mm, mm_to_index
from pipeline.geometry.frame import HeadFrame
from pipeline.io.outputs import sha256_of
from pipeline.io.scan import Scan
from pipeline.masks.labels import masks_from_label_map
from pipeline.measures.hip import Analysis, measure_hip
from pipeline.measures.location import ZONE_LABELS, thirds
from pipeline.napari._layers import display_range

#: Colours of the zone map (JIC zone = hue, antero-posterior region = lightness).
ZONE_COLOURS = {
    "A": ("#1f5fbf", "#4f8fef", "#a0c4ff"),
    "B": ("#1a8a3a", "#3fbf5f", "#a0e8b0"),
    "C1": ("#c08a00", "#efb72f", "#ffe08a"),
    "C2": ("#b3261e", "#e5534b", "#ffaaa5"),
}
OUTLINE_COLOURS = {"head": "#33d17a", "lesion": "#ff4040", "sphere": "#9ad7ff", "zone": "#ffd34d",
                   "edge": "#ff66ff"}
#: Key of a Labels layer's metadata holding its :class:`AutoSegmentation`.
AUTO_KEY = "onfh_automatic"


# automatic segmentation ---------------------------------------------------------------------
@dataclass(eq=False)  # compared by identity: its arrays have no single truth value
class AutoSegmentation:
    """What ``onfh analyze`` without masks keeps besides the masks, attached to the label map.

    Attributes
    ----------
    record : dict
        The ``segmentation`` entry of metrics.json (method "automatic", parameters, confidence).
    warnings : list of str
        The segmentation's warnings (and the "flagged for review" one), as run_analyze passes them.
    acetabulum : ndarray of bool or None
        The acetabulum found, for the weight-bearing span (as run_analyze passes it).
    side : str
    label_map : ndarray
        The map as segmented: a layer whose data differ from it has been edited.
    """

    record: dict
    warnings: list
    acetabulum: np.ndarray | None
    side: str
    label_map: np.ndarray

    @property
    def status(self) -> str:
        return (self.record.get("confidence") or {}).get("status", "ok")

    @property
    def flags(self) -> list[str]:
        return list((self.record.get("confidence") or {}).get("flags") or [])

    def edited(self, label_map: np.ndarray) -> bool:
        """Does ``label_map`` (same grid) differ from the segmentation's map?"""
        return not np.array_equal(np.asarray(label_map), self.label_map)


def segment_label_map(scan: Scan, side: str, settings: Settings, seeds=None) -> tuple[np.ndarray, AutoSegmentation]:
    """Automatic segmentation of one hip as a label map on ``scan``'s canonical grid.

    Runs :func:`pipeline.app.analyze.segment_masks` (``onfh analyze`` without masks). The map holds
    ``settings.labels.head`` for the head outside the lesion and ``settings.labels.lesion`` for
    the lesion (1 and 2 by default).

    Parameters
    ----------
    seeds : sequence of (3,) RAS mm, optional
        Points inside the lesion (``--lesion-seed``).
    """
    ensure_input_facts(scan)
    seeds = [tuple(float(v) for v in p) for p in (seeds if seeds is not None else [])] or None
    head, lesion, record, warnings, acetabulum = segment_masks(scan, side, settings, seeds)
    values = (settings.labels.head, settings.labels.lesion)
    dtype = np.uint8 if max(values) < 256 else np.uint16
    label_map = np.zeros(scan.shape, dtype=dtype)
    label_map[head] = values[0]
    label_map[lesion & head] = values[1]
    return label_map, AutoSegmentation(record, list(warnings), acetabulum, side, label_map.copy())


# masks and measurement ----------------------------------------------------------------------
def ensure_input_facts(scan: Scan) -> None:
    """Record the input file's SHA-256 in ``scan.meta`` as ``onfh analyze`` does (once)."""
    path = scan.meta.get("path")
    if scan.meta.get("sha256") or not path or not Path(path).exists():
        return
    scan.meta["sha256"] = sha256_of(path, scan.meta.get("files"))


def measure_label_map(
    scan: Scan,
    label_map: np.ndarray,
    side: str,
    settings: Settings,
    edge=None,
    roof_medial=None,
    labels_source: str | None = None,
    edited: bool = False,
    automatic: AutoSegmentation | None = None,
) -> Analysis:
    """Measure one hip from a label map on ``scan``'s canonical grid (the widgets' job).

    Parameters
    ----------
    scan : Scan
    label_map : ndarray of int on ``scan``'s canonical grid
    side : {"left", "right"}
    settings : Settings
        Head and lesion label values come from ``settings.labels``.
    edge, roof_medial : sequence of 3 floats, optional
        Acetabular landmarks, RAS mm.
    labels_source : str, optional
        The label map's file (recorded in ``metrics["segmentation"]`` like the CLI does).
    edited : bool
        The labels were edited in napari after loading (recorded).
    automatic : AutoSegmentation, optional
        The map came from :func:`segment_label_map`. Unedited, the measurement is that of
        ``onfh analyze`` without masks (its segmentation record, warnings and acetabulum);
        edited, the record says so and keeps the automatic parameters and confidence, and the
        automatic acetabulum still sets the weight-bearing span.
    """
    ensure_input_facts(scan)
    head, lesion, warnings = masks_from_label_map(label_map, scan, side, settings)
    acetabulum = None
    if automatic is not None and automatic.side == side:
        acetabulum = automatic.acetabulum
        edited = edited or automatic.edited(label_map)
        if edited:
            segmentation = {**automatic.record, "method": "automatic, edited in napari",
                            "parameters": {**automatic.record.get("parameters", {}), "edited": True,
                                           "labels": labels_source}}
            warnings = list(automatic.warnings) + warnings
        else:
            # the very masks segment_masks returned: its record and warnings, as run_analyze
            segmentation = automatic.record
            warnings = list(automatic.warnings)
    else:
        parameters = {"labels": labels_source, "head_label": settings.labels.head,
                      "lesion_label": settings.labels.lesion}
        if edited:
            segmentation = {"method": "label map edited in napari", "parameters": {**parameters, "edited": True}}
        else:
            segmentation = {"method": "imported label map", "parameters": parameters}
    return measure_hip(scan, head, lesion, side, settings, segmentation=segmentation, warnings=warnings,
                       acetabular_edge=edge, acetabular_roof_medial=roof_medial, acetabulum=acetabulum)


# result layers ------------------------------------------------------------------------------
def zone_colormap() -> dict:
    """Label value -> colour for the zone map (0 transparent)."""
    colours: dict = {None: "transparent", 0: "transparent"}
    for value, name in ZONE_LABELS.items():
        zone, region = name.split("/")
        colours[value] = ZONE_COLOURS[zone][("anterior", "central", "posterior").index(region)]
    return colours


def zones_layer_data(analysis: Analysis, name: str = "onfh zones") -> tuple:
    """The 12-zone map (JIC zone x antero-posterior region) on the scan grid, RAS affine."""
    zones = np.zeros(analysis.scan.shape, np.uint8) if analysis.zones is None else analysis.zones
    return (
        np.asarray(zones, dtype=np.uint8),
        {"name": name, "affine": np.asarray(analysis.scan.affine, float), "opacity": 0.35, "visible": False,
         "colormap": zone_colormap(),
         "metadata": {"onfh": {"kind": "zones", "legend": dict(ZONE_LABELS)}}},
        "labels",
    )


class PlaneGrid:
    """A world-aligned square pixel grid on a mid-plane, one slab thick.

    The mid-coronal plane (v = 0) is the world plane y = c_y and the mid-sagittal (u = 0) the
    plane x = c_x, since the head frame's axes are the world's. Image layers on this grid are
    therefore exact planes in napari's world (RAS mm) whatever the scan's obliquity; napari shows
    them when the slider is within half a slab of the plane.
    """

    def __init__(self, frame: HeadFrame, plane: str, step_mm: float, half_mm: float, thickness_mm: float):
        self.plane = plane
        self.normal_axis = 1 if plane == "coronal" else 0
        self.axes = (0, 2) if plane == "coronal" else (1, 2)
        k = int(np.ceil(half_mm / step_mm))
        self.coords = np.arange(-k, k + 1) * float(step_mm)
        self.step = float(step_mm)
        self.center = np.asarray(frame.center, float)
        spacing = np.full(3, self.step)
        spacing[self.normal_axis] = float(thickness_mm)
        self.affine = np.eye(4)
        self.affine[:3, :3] = np.diag(spacing)
        origin = self.center.copy()
        for axis in self.axes:
            origin[axis] += self.coords[0]
        self.affine[:3, 3] = origin
        shape = [len(self.coords)] * 3
        shape[self.normal_axis] = 1
        self.shape = tuple(shape)

    def world_points(self) -> np.ndarray:
        """RAS mm of every pixel, shape ``self.shape + (3,)``."""
        idx = np.indices(self.shape, dtype=float).reshape(3, -1).T
        return index_to_mm(self.affine, idx).reshape(self.shape + (3,))

    def to_data(self, points_mm: np.ndarray) -> np.ndarray:
        """World points (N, 3) to this grid's data coordinates (for Shapes on the same affine)."""
        return mm_to_index(self.affine, points_mm)

    def sample(self, values: np.ndarray, scan_affine: np.ndarray, order: int = 1) -> np.ndarray:
        """Trilinear (order 1) samples of a canonical-grid array on the plane (0 outside)."""
        ijk = mm_to_index(scan_affine, self.world_points())
        return ndimage.map_coordinates(np.asarray(values, dtype=np.float32), np.moveaxis(ijk, -1, 0),
                                       order=order, mode="constant", cval=0.0)

    def in_plane(self, a: np.ndarray, w: np.ndarray, frame: HeadFrame) -> np.ndarray:
        """World points of in-plane frame coordinates (a = u or v, w), shape (N, 3)."""
        e_a = frame.e_lat if self.plane == "coronal" else frame.e_ant
        return frame.center + np.outer(a, e_a) + np.outer(w, frame.e_sup)


def _contours(grid: PlaneGrid, mask_plane: np.ndarray) -> list[np.ndarray]:
    """Outlines (level 0.5 of the trilinear mask, as location.py reads it) in grid data coords."""
    from skimage import measure as skm

    image = np.squeeze(mask_plane, axis=grid.normal_axis)
    out = []
    for c in skm.find_contours(image, 0.5):
        if len(c) < 3:
            continue
        pts = np.zeros((len(c), 3))
        pts[:, grid.axes[0]] = c[:, 0]
        pts[:, grid.axes[1]] = c[:, 1]
        out.append(pts)
    return out


def plane_layers(analysis: Analysis, half_factor: float = 2.0) -> list[tuple]:
    """Mid-coronal and mid-sagittal planes through the head centre, each as an Image layer
    (the scan sampled on the plane) and a Shapes layer (head and lesion outlines, fitted sphere,
    JIC zone boundaries and acetabular edge on the coronal plane, antero-posterior boundaries on
    the sagittal plane), all exactly placed in world = RAS mm."""
    frame, scan, span = analysis.frame, analysis.scan, analysis.result.weight_bearing
    if frame is None:
        return []
    r = frame.radius
    step = max(0.25, float(scan.spacing.min()) / 2)
    # the scan layer's own contrast, so that a plane blends into it where they coincide
    lo, hi = display_range(scan.data)
    layers = []
    for plane in ("coronal", "sagittal"):
        normal = 1 if plane == "coronal" else 0
        # one slab as thick as the scan's coarsest step along the normal: the slider always
        # has a position inside it
        thickness = float(np.abs(scan.affine[normal, :3]).max())
        grid = PlaneGrid(frame, plane, step, half_factor * r, max(thickness, step))
        image = grid.sample(scan.data, scan.affine)
        layers.append((
            image,
            {"name": f"onfh mid-{plane}", "affine": grid.affine, "colormap": "gray",
             "contrast_limits": [lo, hi],
             "metadata": {"onfh": {"kind": f"mid-{plane}", "plane": plane}}},
            "image",
        ))
        shapes, colours, labels = [], [], []
        for mask, key in ((analysis.head, "head"), (analysis.lesion, "lesion")):
            for c in _contours(grid, grid.sample(mask, scan.affine)):
                shapes.append(c)
                colours.append(OUTLINE_COLOURS[key])
                labels.append("")
        theta = np.linspace(0, 2 * np.pi, 97)
        shapes.append(grid.to_data(grid.in_plane(r * np.cos(theta), r * np.sin(theta), frame)))
        colours.append(OUTLINE_COLOURS["sphere"])
        labels.append("")
        w_line = np.array([-1.3 * r, 1.3 * r])
        lines, names = [], []  # (a, colour key) of boundary lines; (a, text) of region names
        if plane == "coronal" and span:
            t1, t2 = thirds(span)
            u_med, u_lat = span["u_med_mm"], span["u_lat_mm"]
            lines = [(u_med, "edge"), (t1, "zone"), (t2, "zone"), (u_lat, "edge")]
            third = (u_lat - u_med) / 3
            names = [(t1 - third / 2, "A"), ((t1 + t2) / 2, "B"), ((t2 + u_lat) / 2, "C1"),
                     (u_lat + third / 2, "C2")]
        elif plane == "sagittal":
            lines = [(r / 3, "zone"), (-r / 3, "zone")]
            names = [(2 * r / 3, "ant"), (0.0, "ctr"), (-2 * r / 3, "post")]
        for a, key in lines:
            shapes.append(grid.to_data(grid.in_plane(np.array([a, a]), w_line, frame)))
            colours.append(OUTLINE_COLOURS[key])
            labels.append("")
        for a, text in names:
            # a tiny invisible path carries each region's name (napari draws text per shape)
            shapes.append(grid.to_data(grid.in_plane(np.array([a, a + 1e-3]), np.full(2, 1.4 * r), frame)))
            colours.append("transparent")
            labels.append(text)
        layers.append((
            shapes,
            {"name": f"onfh mid-{plane} outlines", "affine": grid.affine, "shape_type": "path",
             "edge_color": colours, "edge_width": max(0.3 / step, 1.0), "face_color": "transparent",
             "features": {"label": labels},
             "text": {"string": "{label}", "color": OUTLINE_COLOURS["zone"], "size": 10, "anchor": "center"},
             "metadata": {"onfh": {"kind": f"mid-{plane} outlines", "plane": plane}}},
            "shapes",
        ))
    return layers
