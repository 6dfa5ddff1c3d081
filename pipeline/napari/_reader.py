"""napari reader: NIfTI, NRRD, MetaImage and DICOM (a series folder or one file of it).

Every file goes through :func:`pipeline.io.scan.load_scan`, as in the CLI, and becomes a layer whose
data is the canonical array and whose ``affine`` maps it to RAS mm (see :mod:`._layers`). Files
whose name says "label map" (``*labels*``, ``*_seg*``, ``*mask*``...) and whose voxels are integers
open as Labels layers on the same geometry. A 3D Slicer segmentation (``*.seg.nrrd``) opens as
Labels with its segment names (:mod:`._slicer`), and so does a DICOM Segmentation (any ``.dcm``
or DICOM file whose SOP class is a SEG), on the grid its own frames span
(:func:`dicom_seg_layer_data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import Settings
from pipeline.io.dicom_seg import is_dicom_seg, read_dicom_seg_own_grid
from pipeline.io.slicer import is_slicer_segmentation
from pipeline.masks.segments import Segment
from pipeline.napari._layers import IMAGE_SUFFIXES, read_layer_data, stem

DICOM_SUFFIXES = (".dcm", ".ima")


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicom_folder(path: Path, probe: int = 16) -> bool:
    """A folder holding at least one DICOM file among the first ``probe`` files (by name)."""
    try:
        files = sorted(p for p in path.iterdir() if p.is_file())
    except OSError:
        return False
    return any(_is_dicom_file(p) for p in files[:probe])


def accepts(path: str | Path) -> bool:
    """True for a file or folder this reader can open."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return _is_dicom_folder(path)
    if name.endswith(IMAGE_SUFFIXES):
        return True
    return name.endswith(DICOM_SUFFIXES) or _is_dicom_file(path)


def napari_get_reader(path):
    """npe2 reader hook: a reader function for the path(s), or None when they are not ours."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(accepts(p) for p in paths):
        return None
    return read_paths


def read_paths(path) -> list[tuple]:
    """Layer data tuples for one path or a list of paths (each file or DICOM folder one layer).

    Raises
    ------
    pipeline.errors.InputError
        For anything ``onfh analyze`` would refuse (napari shows the one-line message).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[tuple] = []
    for p in paths:
        if is_slicer_segmentation(p):  # named segments: pipeline/napari/_slicer.py
            from pipeline.napari._slicer import slicer_layer_data

            layers.extend(slicer_layer_data(p))
        elif is_dicom_seg(p):
            layers.extend(dicom_seg_layer_data(p))
        else:
            layers.extend(read_layer_data(p))
    return layers


def segment_sets(segments: list[Segment]) -> None:
    """Set each segment's ``layer`` to the first set of segments it does not overlap (in file
    order): a BINARY SEG may hold overlapping segments (onfh's head includes its lesion), and one
    Labels layer shows each voxel with one value."""
    sets: list[np.ndarray] = []
    for segment in segments:
        mask = segment.get_mask()
        for k, union in enumerate(sets):
            if not (union & mask).any():
                union |= mask
                segment.layer = k
                break
        else:
            sets.append(mask.copy())
            segment.layer = len(sets) - 1


def dicom_seg_layer_data(path: str | Path, settings: Settings | None = None) -> list[tuple]:
    """Labels layer data tuples for a DICOM SEG opened without its source series.

    The grid is the one the SEG's own frames span (``pipeline/io/dicom_seg.py:
    read_dicom_seg_own_grid``): the layer's ``affine`` maps its voxels to RAS mm like an image
    layer's, so it overlays the series it was drawn on. Head and lesion told apart by name or
    SNOMED code: one head/lesion label map, as the Analyze hip widget measures it; otherwise one
    Labels layer per set of non-overlapping segments (:func:`segment_sets`) with the segment
    numbers as values. Names and codes are in ``features``, the segment records in
    ``metadata["dicom_seg_segments"]`` (``pipeline/napari/_slicer.py: segments_layer_data``).

    Raises
    ------
    pipeline.errors.InputError
        Not a readable SEG, or frames that do not stack into one volume (one-line message).
    """
    from pipeline.napari._slicer import segments_layer_data

    grid, segments = read_dicom_seg_own_grid(path)
    # a LABELMAP SEG may describe its background as segment 0 (highdicom does): napari's 0 already
    segments = [s for s in segments if s.label_value != 0]
    segment_sets(segments)
    return segments_layer_data(segments, grid, stem(path), path, settings, prefix="dicom_seg")
