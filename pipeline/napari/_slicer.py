"""3D Slicer segmentations (``.seg.nrrd``) in napari: read as Labels, written for Slicer.

Reading: when the head and lesion segments can be told apart (names or SNOMED CT codes, as
``onfh analyze --labels X.seg.nrrd`` picks them), the file opens as ONE Labels layer holding the
usual label map (head ``labels.head``, lesion ``labels.lesion``): what the Analyze hip widget
measures and the onfh writer saves, so a reviewer corrects and re-measures exactly what the CLI
reads; the segment names and codes are in the layer's ``features`` (one row per label value) and
``metadata["slicer_segments"]``. A file without recognisable head and lesion segments (any other
Slicer segmentation) opens as one Labels layer per Slicer layer with Slicer's own label values,
names in ``features`` and Slicer's colours: nothing is merged away, overlapping segments included.

Writing: a head/lesion label map as a ``.seg.nrrd`` on the image's own grid (LPS, segments
"Femoral head" and "Necrosis" with their SNOMED CT codes), which Slicer opens directly
(:func:`pipeline.io.slicer.write_slicer_segmentation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.io.scan import Scan
from pipeline.io.slicer import SLICER_SUFFIX, read_slicer_own_grid, read_slicer_segmentation
from pipeline.masks.labels import present_labels
from pipeline.masks.segments import Segment, label_map_from_segments, pick_segments
from pipeline.napari._layers import labels_layer_data, stem

SEGMENTS_KEY = "slicer_segments"


def slicer_stem(path: str | Path) -> str:
    """File name without ``.seg.nrrd`` ("a/hip.seg.nrrd" -> "hip")."""
    name = Path(path).name
    return name[: -len(SLICER_SUFFIX)] if name.lower().endswith(SLICER_SUFFIX) else stem(path)


def _code_text(segment: Segment) -> str:
    return " ".join(segment.code) if segment.code else ""


def slicer_layer_data(path: str | Path, scan: Scan | None = None, settings: Settings | None = None,
                      tolerance_mm: float | None = None) -> list[tuple]:
    """Labels layer data tuples for a ``.seg.nrrd`` (see the module docstring).

    With ``scan`` the segments are placed on that image's grid (a crop of it is pasted, as the
    CLI does); without, they stay on the file's own grid, which napari places in RAS mm.
    """
    settings = settings or Settings()
    path = Path(path)
    if scan is None:
        grid, segments = read_slicer_own_grid(path)
    else:
        tol = settings.labels.grid_tolerance_mm if tolerance_mm is None else tolerance_mm
        grid, segments = scan, read_slicer_segmentation(path, scan, tol)
    return segments_layer_data(segments, grid, slicer_stem(path), path, settings)


def segments_layer_data(segments: list[Segment], grid: Scan, name: str, path: str | Path,
                        settings: Settings | None = None, prefix: str = "slicer") -> list[tuple]:
    """Labels layer data tuples for the named segments of a multi-segment file on ``grid``.

    Head and lesion told apart (:func:`pipeline.masks.segments.pick_segments`): one head/lesion
    label map; otherwise one layer per ``Segment.layer`` with the file's label values. Names and
    codes go to ``features``, the segment records to ``metadata[prefix + "_segments"]`` (the
    picked names to ``metadata[prefix + "_picked"]``). Shared by 3D Slicer files and DICOM SEG
    (pipeline/napari/_reader.py: dicom_seg_layer_data).
    """
    settings = settings or Settings()
    key = f"{prefix}_segments"
    records = [s.record() for s in segments]
    try:
        h, les = pick_segments(segments)
    except InputError:
        return _per_layer(segments, grid, name, Path(path), records, key)
    head, lesion = segments[h], segments[les]
    label_map = label_map_from_segments(head.get_mask(), lesion.get_mask(), settings)
    top = max(settings.labels.head, settings.labels.lesion)
    names, codes = [""] * (top + 1), [""] * (top + 1)
    for value, seg in ((settings.labels.head, head), (settings.labels.lesion, lesion)):
        names[value], codes[value] = seg.name, _code_text(seg)
    data = labels_layer_data(label_map, grid, name, path,
                             extra_meta={key: records,
                                         f"{prefix}_picked": {"head": head.name, "lesion": lesion.name}})
    data[1]["features"] = {"index": list(range(top + 1)), "segment": names, "code": codes}
    return [data]


def _per_layer(segments: list[Segment], grid: Scan, name: str, path: Path, records: list[dict],
               key: str = SEGMENTS_KEY) -> list[tuple]:
    """One Labels layer per layer of the file, with its label values, names and colours."""
    layers = sorted({int(s.layer or 0) for s in segments})
    out = []
    for layer in layers:
        members = [s for s in segments if int(s.layer or 0) == layer]
        top = max(int(s.label_value or 1) for s in members)
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        data = np.zeros(grid.shape, dtype)
        names, codes = [""] * (top + 1), [""] * (top + 1)
        colours = {None: "#ffd34d", 0: "transparent"}
        for s in members:
            value = int(s.label_value or 1)
            data[s.get_mask()] = value
            names[value], codes[value] = s.name, _code_text(s)
            if s.meta.get("color"):
                colours[value] = tuple(float(c) for c in s.meta["color"]) + (1.0,)
        title = name if len(layers) == 1 else f"{name} layer {layer}"
        tup = labels_layer_data(data, grid, title, path,
                                extra_meta={key: [r for r, s in zip(records, segments) if s in members]})
        tup[1]["features"] = {"index": list(range(top + 1)), "segment": names, "code": codes}
        tup[1]["colormap"] = colours
        out.append(tup)
    return out


def slicer_path(path: str | Path) -> Path:
    """``path`` ending in ``.seg.nrrd`` (``x.nrrd`` -> ``x.seg.nrrd``, ``x`` -> ``x.seg.nrrd``)."""
    path = Path(path)
    name = path.name
    if name.lower().endswith(SLICER_SUFFIX):
        return path
    if name.lower().endswith(".nrrd"):
        name = name[:-5]
    return path.with_name(name + SLICER_SUFFIX)


def write_slicer_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: a head/lesion Labels layer as a 3D Slicer ``.seg.nrrd``.

    The layer must hold the head and lesion labels only (``labels.head``, ``labels.lesion`` of
    the default settings: 1 and 2); other values are refused rather than dropped.
    """
    from pipeline.io.slicer import write_slicer_segmentation
    from pipeline.napari._writer import layer_on_grid

    data, scan = layer_on_grid(data, attributes)
    labels = Settings().labels
    others = sorted(set(present_labels(data)) - {labels.head, labels.lesion})
    if others:
        raise InputError(f"a .seg.nrrd from onfh holds the head ({labels.head}) and lesion ({labels.lesion}) "
                         f"labels; this layer also holds {others[:8]}")
    # the layer's data lies on the scan's canonical grid; the file gets the image's own voxel order
    out = write_slicer_segmentation(slicer_path(path), (data == labels.head) | (data == labels.lesion),
                                    data == labels.lesion, scan)
    return [str(out)]
