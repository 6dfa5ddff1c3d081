"""napari writer: a Labels layer as NIfTI on the original image's own voxel grid.

The file is what :func:`pipeline.io.scan.save_like` writes for the CLI's ``labels.nii.gz``: the
voxels in the image file's own order with its affine (sform and qform), so ``onfh analyze IMAGE
--labels FILE`` reads back exactly the layer's values, and ITK-SNAP or 3D Slicer overlay it voxel
for voxel on the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.scan import Scan, save_like
from pipeline.napari._layers import META_KEY, label_dtype, scan_from_geometry

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_path(path: str | Path) -> Path:
    """``path`` with a NIfTI suffix (``.nii.gz`` added when it has none)."""
    path = Path(path)
    return path if path.name.lower().endswith(NIFTI_SUFFIXES) else path.with_name(path.name + ".nii.gz")


def labels_scan_geometry(data: np.ndarray, attributes: dict) -> Scan:
    """The grid a Labels layer's data lies on: the one the reader stored in its metadata, or
    (for a layer painted from scratch) its own data-to-world affine in napari."""
    geometry = (attributes.get("metadata") or {}).get(META_KEY)
    if geometry and "source_affine" in geometry:
        return scan_from_geometry(geometry)
    affine = attributes.get("affine")
    if affine is None:
        raise InputError("the labels layer has no geometry: open the image with the onfh reader first")
    affine = np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    scale = np.asarray(attributes.get("scale", np.ones(3)), dtype=float)
    translate = np.asarray(attributes.get("translate", np.zeros(3)), dtype=float)
    if not (np.allclose(scale, 1) and np.allclose(translate, 0)):
        base = np.eye(4)
        base[:3, :3] = np.diag(scale)
        base[:3, 3] = translate
        affine = affine @ base
    # The layer's own voxel order is the "file" order here: no reorientation.
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    return Scan(np.broadcast_to(np.uint8(0), np.shape(data)), affine, affine, identity, {})


def layer_on_grid(data, attributes: dict) -> tuple[np.ndarray, Scan]:
    """A Labels layer's 3D data and the grid it lies on, checked (what every onfh writer saves)."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"the onfh writer saves 3D label maps; this layer is {data.ndim}D")
    scan = labels_scan_geometry(data, attributes)
    if tuple(data.shape) != scan.shape:
        raise InputError(f"labels layer shape {data.shape} does not match its grid {scan.shape}")
    return data, scan


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers: NIfTI on the original grid.

    Returns
    -------
    list of str
        The path written.
    """
    data, scan = layer_on_grid(data, attributes)
    out = nifti_path(path)
    save_like(data, scan, out, dtype=label_dtype(data))
    return [str(out)]
