"""3D Slicer segmentations (``.seg.nrrd``), read and written with slicerio.

A Slicer segmentation is a NRRD file whose header names its segments (``Segment<N>_Name``,
``_LabelValue``, ``_Layer``, ``_Tags`` with the SNOMED CT terminology). Segments that do not
overlap share one 3D label volume; overlapping ones go to further layers (a 4D file, ``kinds: list
domain domain domain``). Slicer stores the voxels in LPS and, by default, crops the volume to the
segments' extent: such a crop of the image grid is placed onto it at its integer offset
(:func:`pipeline.io.scan.place_on_grid`), never resampled.

Which segment is the head and which the lesion is decided by their names and codes
(:func:`pipeline.masks.segments.pick_segments`), never by label values or order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.readers import NRRD_SUFFIXES
from pipeline.io.scan import Scan, place_on_grid
from pipeline.masks.segments import (
    CATEGORY_OF,
    CODE_MEANINGS,
    HEAD_SEGMENT_NAME,
    LESION_SEGMENT_NAME,
    SCT_FEMORAL_HEAD,
    SCT_NECROSIS,
    Segment,
)

SLICER_SUFFIX = ".seg.nrrd"
#: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Colours of the segments onfh writes (as in qc.png and the napari layers: head green, lesion red).
HEAD_COLOUR = (0.2, 0.82, 0.478)
LESION_COLOUR = (1.0, 0.251, 0.251)
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def is_slicer_segmentation(path: str | Path) -> bool:
    """A 3D Slicer segmentation: named ``*.seg.nrrd``, or a NRRD whose header names segments."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(SLICER_SUFFIX):
        return True
    if not name.endswith(NRRD_SUFFIXES) or not path.is_file():
        return False
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception:  # not a readable NRRD: the image readers say why
        return False
    return "Segment0_Name" in header


def _read(path: Path) -> dict:
    import slicerio

    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises IOError/ValueError, pynrrd NRRDError
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"3D Slicer segmentation {path.name} is unreadable: {reason}") from None
    voxels = segmentation.get("voxels")
    if voxels is None or voxels.ndim not in (3, 4):
        shape = None if voxels is None else tuple(voxels.shape)
        raise InputError(f"3D Slicer segmentation {path.name} has voxels of shape {shape}: expected 3D or "
                         "4D (layers)")
    if not np.issubdtype(voxels.dtype, np.integer):
        raise InputError(f"3D Slicer segmentation {path.name} holds {voxels.dtype} voxels, not labels")
    if not segmentation.get("segments"):
        raise InputError(f"3D Slicer segmentation {path.name} names no segments")
    return segmentation


def _code(terminology: dict | None, key: str = "type") -> tuple[str, str] | None:
    entry = (terminology or {}).get(key)
    if not entry or len(entry) < 2 or not entry[0] or not entry[1]:
        return None
    return str(entry[0]), str(entry[1])


def read_slicer_segmentation(path: str | Path, scan: Scan, tolerance_mm: float = 0.01) -> list[Segment]:
    """The segments of a ``.seg.nrrd`` file, each on ``scan``'s canonical grid.

    One-layer (3D) and multi-layer (4D, overlapping segments) files; a file cropped to the
    segments' extent is placed onto the image grid when it is a crop of it (same spacing and
    direction, first voxel on an image voxel centre), else refused like any grid mismatch.
    Masks are computed when asked (:meth:`Segment.get_mask`).

    Raises
    ------
    InputError
        Unreadable file, no segments, a grid that is not the image's (or a crop of it).
    """
    path = Path(path)
    segmentation = _read(path)
    return _segments(path, segmentation, _own_grid(path, segmentation), scan, tolerance_mm)


def read_slicer_own_grid(path: str | Path) -> tuple[Scan, list[Segment]]:
    """The grid a ``.seg.nrrd`` file is stored on (canonical order, RAS affine; the data of its
    first layer) and its segments on that grid: for a viewer opening the file without its image."""
    path = Path(path)
    segmentation = _read(path)
    grid = _own_grid(path, segmentation)
    return grid, _segments(path, segmentation, grid, grid, 0.01)


def _own_grid(path: Path, segmentation: dict) -> Scan:
    voxels = segmentation["voxels"]
    affine = LPS_TO_RAS @ np.asarray(segmentation["ijkToLPS"], dtype=float)
    try:
        return Scan.from_source(voxels if voxels.ndim == 3 else voxels[0], affine,
                                {"path": str(path), "format": "slicer"})
    except InputError as exc:
        raise InputError(f"3D Slicer segmentation {path.name}: {exc}") from None


def _segments(path: Path, segmentation: dict, first: Scan, scan: Scan, tolerance_mm: float) -> list[Segment]:
    voxels = segmentation["voxels"]
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels
    what = f"3D Slicer segmentation {path.name}"
    placed: dict[int, np.ndarray] = {}

    def layer_on_scan(layer: int) -> np.ndarray:
        if layer not in placed:
            if not 0 <= layer < layers.shape[0]:
                raise InputError(f"{what}: a segment is in layer {layer} of {layers.shape[0]}")
            canon = Scan(first.from_source_order(layers[layer]), first.affine, first.source_affine,
                         first.source_ornt)
            placed[layer] = place_on_grid(canon, scan, tolerance_mm, what)
        return placed[layer]

    place_on_grid(Scan(np.zeros(first.shape, np.uint8), first.affine, first.affine, first.source_ornt),
                  scan, tolerance_mm, what)  # the grid check up front, before any segment is asked for
    old_format = voxels.ndim == 4 and all("layer" not in s for s in segmentation["segments"])
    segments = []
    for index, info in enumerate(segmentation["segments"]):
        # Slicer before 4.11 wrote one segment per layer, with value 1 and no layer fields
        layer = index if old_format else int(info.get("layer", 0))
        value = int(info.get("labelValue", 1))
        terminology = info.get("terminology")
        code = _code(terminology)
        meta = {"id": info.get("id"), "color": info.get("color")}
        if code and terminology["type"][2:3]:
            meta["code_meaning"] = terminology["type"][2]
        if _code(terminology, "category"):
            meta["category"] = list(_code(terminology, "category"))
        if _code(terminology, "typeModifier"):
            meta["type_modifier"] = terminology["typeModifier"][2] if len(terminology["typeModifier"]) > 2 \
                else terminology["typeModifier"][1]
        segments.append(Segment(
            name=str(info.get("name") or info.get("id") or f"Segment_{index + 1}"),
            code=code, label_value=value, layer=layer, meta=meta,
            load=lambda layer=layer, value=value: layer_on_scan(layer) == value,
        ))
    return segments


def _terminology(code: tuple[str, str]) -> dict:
    category = CATEGORY_OF[code]
    return {"contextName": TERMINOLOGY_CONTEXT,
            "category": [*category, CODE_MEANINGS[category]],
            "type": [*code, CODE_MEANINGS[code]],
            "anatomicContextName": ANATOMIC_CONTEXT}


def write_slicer_segmentation(path: str | Path, head: np.ndarray, lesion: np.ndarray, scan: Scan) -> Path:
    """Write a head and a lesion mask (on ``scan``'s canonical grid) as a 3D Slicer segmentation.

    As Slicer writes it: the image file's own voxel order and grid, LPS, segments "Femoral head"
    (the whole head, lesion included: its volume is onfh's head volume) and "Necrosis" with their
    SNOMED CT codes; the lesion lies inside the head, so it is in a second layer (4D file) unless
    it is empty.
    """
    import slicerio

    head = np.asarray(head, dtype=bool)
    lesion = np.asarray(lesion, dtype=bool)
    if head.shape != scan.shape or lesion.shape != scan.shape:
        raise InputError(f"masks of shape {head.shape} are not on the image grid {scan.shape}")
    segmentation = slicerio.create_segmentation(scan.source_shape, LPS_TO_RAS @ scan.source_affine)
    segmentation["containedRepresentationNames"] = ["Binary labelmap"]
    for name, mask, code, colour in ((HEAD_SEGMENT_NAME, head | lesion, SCT_FEMORAL_HEAD, HEAD_COLOUR),
                                     (LESION_SEGMENT_NAME, lesion, SCT_NECROSIS, LESION_COLOUR)):
        slicerio.add_segment(segmentation, scan.to_source(mask), {
            "id": name.replace(" ", "_"), "name": name, "color": list(colour), "nameAutoGenerated": False,
            "colorAutoGenerated": False, "terminology": _terminology(code)})
    path = Path(path)
    slicerio.write_segmentation(str(path), segmentation)
    return path
