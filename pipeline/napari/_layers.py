"""Scans as napari layers, and back (no Qt here; numpy, nibabel and the pipeline only).

Geometry rule: a layer's data is the :class:`~pipeline.io.scan.Scan`'s canonical (closest-RAS) array
and its napari ``affine`` is ``scan.affine`` (canonical voxel index -> RAS mm, oblique kept
exact). napari's world coordinates are therefore RAS millimetres, in the order (x, y, z) =
(right, anterior, superior): a point picked in the viewer is a landmark the CLI accepts as is.

Each layer carries, in ``layer.metadata["onfh"]``, a JSON-able description of the grid it came
from (canonical and file affines, the orientation transform, the file's path and format), so the
writer can put a label map back on the file's own voxel grid, voxel for voxel. Image layers also
carry the :class:`Scan` itself under ``"onfh_scan"`` (its array is the layer's array, not a copy)
so that measurements see the same loader facts (format, warnings, slice thickness) as the CLI.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.scan import Scan, load_labels, load_scan, place_on_grid

META_KEY = "onfh"
SCAN_KEY = "onfh_scan"

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File names (lower case, without suffix) that hold label maps or masks, not intensities.
LABEL_NAME_RULE = re.compile(r"(label|_seg\b|_seg_|^seg_|segment|mask|_femur|hipbone|acetabul|zones)")
#: Suffixes tried, in order, when looking for the label map of an image ``X``: ``X<suffix>``.
#: Label map colours: 1 head green, 2 lesion red (as in qc.png), any other value yellow.
LABEL_COLOURS = {None: "#ffd34d", 0: "transparent", 1: "#33d17a", 2: "#ff4040"}
LABEL_SIBLINGS = ("_labels", "_label", "-labels", "_seg", "_segmentation", ".labels")


# names --------------------------------------------------------------------------------------
def stem(path: str | Path) -> str:
    """File name without its image suffix ("a/b/ONFH01_m00.nii.gz" -> "ONFH01_m00")."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def looks_like_labels(path: str | Path) -> bool:
    """Does the file name say "label map or mask" (``*labels*``, ``*_seg*``, ``*mask*``...)?"""
    return bool(LABEL_NAME_RULE.search(stem(path).lower()))


def is_label_file(path: str | Path, data: np.ndarray) -> bool:
    """A label map: integer-valued voxels and a name matching :data:`LABEL_NAME_RULE`."""
    if not looks_like_labels(path):
        return False
    data = np.asarray(data)
    if data.dtype.kind in "biu":
        return True
    return data.dtype.kind == "f" and bool(np.all(np.isfinite(data))) and np.array_equal(data, np.round(data))


def matching_labels(image: str | Path) -> Path | None:
    """The label map beside an image, by name: ``X_labels.nii.gz`` (or ``_seg``...) for ``X.*``."""
    image = Path(image)
    folder, base = image.parent, stem(image)
    for suffix in LABEL_SIBLINGS:
        for ext in IMAGE_SUFFIXES:
            candidate = folder / f"{base}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None


# geometry <-> metadata ----------------------------------------------------------------------
def geometry_of(scan: Scan, kind: str, path: str | Path | None = None) -> dict:
    """JSON-able description of a scan's grid (what the writer needs to go back to the file)."""
    return {
        "kind": kind,
        "path": str(path) if path is not None else scan.meta.get("path"),
        "format": scan.meta.get("format"),
        "shape": list(scan.shape),
        "affine": np.asarray(scan.affine, dtype=float).tolist(),
        "source_affine": np.asarray(scan.source_affine, dtype=float).tolist(),
        "source_ornt": np.asarray(scan.source_ornt, dtype=float).tolist(),
    }


def scan_from_geometry(geometry: dict, data: np.ndarray | None = None, meta: dict | None = None) -> Scan:
    """A :class:`Scan` on the grid described by :func:`geometry_of` (``data`` or zeros, no memory)."""
    shape = tuple(int(s) for s in geometry["shape"])
    if data is None:
        data = np.broadcast_to(np.uint8(0), shape)
    elif tuple(np.shape(data)) != shape:
        raise InputError(f"layer data shape {tuple(np.shape(data))} does not match its grid {shape}")
    return Scan(
        data,
        np.asarray(geometry["affine"], dtype=float),
        np.asarray(geometry["source_affine"], dtype=float),
        np.asarray(geometry["source_ornt"], dtype=float),
        dict(meta or {"path": geometry.get("path"), "format": geometry.get("format")}),
    )


def data_to_world_matrix(layer) -> np.ndarray:
    """The 4x4 affine napari applies from a 3D layer's data indices to world (RAS mm).

    Composed from napari's public ``data_to_world`` (exact for affine maps), so it includes any
    scale/translate/rotate the user gave the layer besides ``affine``.
    """
    if layer.ndim != 3:
        raise InputError(f"layer {layer.name!r} is {layer.ndim}D; a 3D scan is expected")
    origin = np.asarray(layer.data_to_world(np.zeros(3)), dtype=float)
    matrix = np.eye(4)
    for axis in range(3):
        unit = np.zeros(3)
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(layer.data_to_world(unit), dtype=float) - origin
    matrix[:3, 3] = origin
    return matrix


def layer_scan(layer) -> Scan:
    """The :class:`Scan` behind an image layer: the one the reader stored, or one made from the
    layer's data and its data-to-world affine (for layers from other readers)."""
    scan = layer.metadata.get(SCAN_KEY)
    if isinstance(scan, Scan) and tuple(scan.shape) == tuple(layer.data.shape):
        return scan
    geometry = layer.metadata.get(META_KEY)
    if geometry:
        return scan_from_geometry(geometry, np.asarray(layer.data), {"path": geometry.get("path"),
                                                                      "format": geometry.get("format"),
                                                                      "warnings": []})
    return Scan.from_source(np.asarray(layer.data), data_to_world_matrix(layer), {"warnings": []})


def labels_on_scan(layer, scan: Scan, tolerance_mm: float = 0.01) -> np.ndarray:
    """A Labels layer's data as an int32 label map on ``scan``'s canonical grid (a copy).

    The layer must cover the same voxels in space (napari world = RAS mm): its data-to-world
    affine is compared with the scan's exactly as ``onfh analyze --labels`` compares files
    (shape, spacing, origin, direction within ``tolerance_mm``); the voxel order may differ. A
    layer on a crop of the scan's grid (a 3D Slicer segmentation saved cropped to its segments)
    is pasted at its offset (:func:`pipeline.io.scan.place_on_grid`).
    """
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise InputError(f"labels layer {layer.name!r} is {data.ndim}D; a 3D label map is expected")
    as_scan = Scan.from_source(data, data_to_world_matrix(layer))
    placed = place_on_grid(as_scan, scan, tolerance_mm, what=f"labels layer {layer.name!r}")
    return np.array(placed, dtype=np.int32, copy=True)


# layer data tuples --------------------------------------------------------------------------
def display_range(data: np.ndarray) -> list[float]:
    """Contrast limits from the 1st and 99.5th percentiles (robust to a few bright voxels)."""
    data = np.asarray(data)
    sample = data[:: max(1, data.shape[0] // 64), :: max(1, data.shape[1] // 64)].ravel()
    lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.5]))
    if not hi > lo:
        lo, hi = float(data.min()), float(data.max())
        hi = hi if hi > lo else lo + 1.0
    return [lo, hi]


def image_layer_data(scan: Scan, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` for napari: canonical array, affine in RAS mm, gray."""
    name = name or stem(scan.meta.get("path") or "scan")
    return (
        scan.data,
        {
            "name": name,
            "affine": np.asarray(scan.affine, dtype=float),
            "contrast_limits": display_range(scan.data),
            "colormap": "gray",
            "metadata": {META_KEY: geometry_of(scan, "image"), SCAN_KEY: scan},
        },
        "image",
    )


def label_dtype(labels: np.ndarray) -> np.dtype:
    """Smallest integer type that holds every value (uint8 for 0..255)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def labels_layer_data(labels: np.ndarray, scan: Scan, name: str, path: str | Path | None = None,
                      extra_meta: dict | None = None) -> tuple:
    """``(data, kwargs, "labels")`` on ``scan``'s grid (same affine as the scan's image layer)."""
    labels = np.asarray(labels)
    data = np.ascontiguousarray(labels.astype(label_dtype(labels), copy=False))
    geometry = geometry_of(scan, "labels", path)
    # the label map's own file (None for a map made in napari), and the image whose grid it is on
    geometry["path"] = str(path) if path is not None else None
    geometry["image_path"] = scan.meta.get("path")
    return (
        data,
        {
            "name": name,
            "affine": np.asarray(scan.affine, dtype=float),
            "opacity": 0.5,
            "colormap": dict(LABEL_COLOURS),
            "metadata": {META_KEY: geometry, **(extra_meta or {})},
        },
        "labels",
    )


def points_layer_data(points_ras: list, name: str, color: str = "orange") -> tuple:
    """A Points layer of landmarks in world = RAS mm (identity transform)."""
    data = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    return (
        data,
        {"name": name, "ndim": 3, "size": 4, "face_color": color, "border_color": "white",
         "metadata": {META_KEY: {"kind": "landmark"}}},
        "points",
    )


# reading ------------------------------------------------------------------------------------
def read_layer_data(path: str | Path, as_labels: bool | None = None) -> list[tuple]:
    """One file or DICOM folder as a napari layer: Image, or Labels when it is a label map."""
    path = Path(path)
    scan = load_scan(path)
    if as_labels is None:
        as_labels = is_label_file(path, scan.data)
    if as_labels:
        labels = np.asarray(scan.data)
        if labels.dtype.kind == "f":
            labels = np.round(labels)
        return [labels_layer_data(labels.astype(np.int64), scan, stem(path), path)]
    return [image_layer_data(scan, stem(path))]


def scan_with_labels(image: str | Path, labels: str | Path | None = None, tolerance_mm: float = 0.01) -> list[tuple]:
    """An image and its label map (given, or found beside it by name) as two layers on one grid.

    The label map is read exactly as ``onfh analyze --labels`` reads it (checked against the
    image's grid, reoriented, never resampled); a 3D Slicer segmentation is placed on the image's
    grid (``pipeline/napari/_slicer.py: slicer_layer_data``).
    """
    scan = load_scan(image)
    layers = [image_layer_data(scan, stem(image))]
    labels = Path(labels) if labels is not None else matching_labels(image)
    from pipeline.io.slicer import is_slicer_segmentation

    if labels is not None and is_slicer_segmentation(labels):
        from pipeline.napari._slicer import slicer_layer_data

        layers.extend(slicer_layer_data(labels, scan, tolerance_mm=tolerance_mm))
    elif labels is not None:
        label_map = load_labels(labels, scan, tolerance_mm)
        layers.append(labels_layer_data(label_map, scan, stem(labels), labels))
    return layers
