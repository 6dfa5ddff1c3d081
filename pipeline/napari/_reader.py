"""napari reader: NIfTI, NRRD, MetaImage and DICOM (a series folder or one file of it).

Every file goes through :func:`pipeline.io.scan.load_scan`, as in the CLI, and becomes a layer whose
data is the canonical array and whose ``affine`` maps it to RAS mm (see :mod:`._layers`). Files
whose name says "label map" (``*labels*``, ``*_seg*``, ``*mask*``...) and whose voxels are integers
open as Labels layers on the same geometry. A 3D Slicer segmentation (``*.seg.nrrd``) opens as
Labels with its segment names (:mod:`._slicer`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io.slicer import is_slicer_segmentation
from pipeline.napari._layers import IMAGE_SUFFIXES, read_layer_data

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
        else:
            layers.extend(read_layer_data(p))
    return layers
