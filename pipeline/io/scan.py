"""`Scan`: a voxel array that never travels without its geometry (docs/method.md section 1).

The in-memory orientation is canonical: the file's voxel axes are permuted and flipped (never
resampled) so that array axes run as close as possible to R, A, S. The 4x4 ``affine`` maps those
canonical voxel indices to RAS millimetres and stays exact for oblique scans (the rotation is kept
in the affine, not baked into the array). The file's own voxel order is remembered so that label
maps are written back on the image's own grid, voxel for voxel.

Because reorientation is a pure permutation/flip, the same physical scan stored in any of the 48
axis orders gives the identical canonical array, hence identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.geometry.affine import index_to_mm, mm_to_index, voxel_spacing, voxel_volume_mm3
from pipeline.io.readers import (  # readers first: it imports nibabel without pydicom
    METAIMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    NRRD_SUFFIXES,
    check_spacing,
    nib,
    read_itk,
    read_nifti,
)

ornt = nib.orientations


@dataclass(frozen=True, eq=False)
class Scan:
    """A 3D image in canonical (closest-RAS) voxel order with its RAS-mm affine.

    Attributes
    ----------
    data : ndarray, shape (I, J, K)
        Voxel values, canonical order.
    affine : ndarray, shape (4, 4)
        Canonical voxel index -> RAS mm.
    source_affine : ndarray, shape (4, 4)
        The file's own voxel index -> RAS mm (what ``onfh info`` reports).
    source_ornt : ndarray, shape (3, 2)
        nibabel orientation transform taking the file's voxel order to the canonical one.
    meta : dict
        Format, path, series facts and loader warnings. Never patient identifiers.
    """

    data: np.ndarray
    affine: np.ndarray
    source_affine: np.ndarray
    source_ornt: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_source(cls, data: np.ndarray, affine: np.ndarray, meta: dict | None = None) -> Scan:
        """Build a Scan from an array in a file's own voxel order and its RAS affine."""
        data = np.asanyarray(data)
        affine = np.asarray(affine, dtype=np.float64)
        if data.ndim != 3:
            raise InputError(f"expected a 3D image, got {data.ndim}D with shape {tuple(data.shape)}")
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError("image affine is missing or not finite")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise InputError("image affine is singular (no valid voxel geometry)")
        transform = ornt.io_orientation(affine)
        canon = ornt.apply_orientation(data, transform)
        canon_affine = affine @ ornt.inv_ornt_aff(transform, data.shape)
        return cls(np.ascontiguousarray(canon), canon_affine, affine, transform, dict(meta or {}))

    # geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.to_source(self.data).shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along the canonical array axes, mm."""
        return voxel_spacing(self.affine)

    @property
    def source_spacing(self) -> np.ndarray:
        """Voxel size along the file's own axes, mm."""
        return voxel_spacing(self.source_affine)

    @property
    def voxel_volume_mm3(self) -> float:
        return voxel_volume_mm3(self.affine)

    @property
    def slice_thickness_mm(self) -> float:
        """The coarsest resolution along any axis, mm: the largest spacing, or the DICOM
        SliceThickness when that is larger (slices thicker than their spacing overlap in signal)."""
        return max(float(self.spacing.max()), float(self.meta.get("slice_thickness_mm") or 0.0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Orientation codes of the file's own voxel axes (e.g. ('L', 'P', 'S'))."""
        return tuple(nib.aff2axcodes(self.source_affine))

    def index_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Canonical voxel indices (..., 3) to RAS mm (..., 3)."""
        return index_to_mm(self.affine, ijk)

    def ras_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """RAS mm (..., 3) to continuous canonical voxel indices (..., 3)."""
        return mm_to_index(self.affine, xyz)

    # orientation bookkeeping ----------------------------------------------------------------
    def to_source(self, array: np.ndarray) -> np.ndarray:
        """An array on this scan's canonical grid, put back into the file's own voxel order."""
        return np.ascontiguousarray(ornt.apply_orientation(array, _invert_ornt(self.source_ornt)))

    def from_source_order(self, array: np.ndarray) -> np.ndarray:
        """An array in the file's own voxel order, put into this scan's canonical order."""
        return np.ascontiguousarray(ornt.apply_orientation(array, self.source_ornt))


def _invert_ornt(transform: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform (axis permutation with flips)."""
    inverse = np.empty_like(transform)
    for src_axis, (dst_axis, flip) in enumerate(transform):
        inverse[int(dst_axis)] = (src_axis, flip)
    return inverse


# loading ----------------------------------------------------------------------------------
# dispatch ---------------------------------------------------------------------------------
def image_format(path: Path) -> str:
    """Format name from the path: "nifti", "nrrd", "mha" or "dicom" (folders and the rest)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if name.endswith(METAIMAGE_SUFFIXES):
        return "mha"
    return "dicom"


def read_image(path: Path, series_uid: str | None = None, spacing=None):
    """Read any supported image; see :func:`pipeline.io.scan.load_scan`.

    Parameters
    ----------
    path : Path
        NIfTI, NRRD, MetaImage file, DICOM folder or one DICOM file of a series.
    series_uid : str, optional
        SeriesInstanceUID to pick in a DICOM folder holding several series.
    spacing : sequence of 3 floats, optional
        Voxel size (mm) stated by the user, used only for DICOM whose header has no geometry;
        ignored (with a warning) when the header has geometry.

    Returns
    -------
    data : ndarray
        Voxels in the file's own index order.
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    meta : dict
        ``format``, ``path``, ``warnings`` and series facts; no patient identifiers.

    Raises
    ------
    InputError
        Missing, empty, unreadable, truncated, sheared or geometry-less input (one-line message).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    spacing = check_spacing(spacing)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes): not an image")
    fmt = image_format(path)
    if fmt == "nifti":
        return read_nifti(path, spacing=spacing)
    if fmt in ("nrrd", "mha"):
        return read_itk(path, fmt, spacing=spacing)
    from pipeline.io.dicom import read_dicom

    return read_dicom(path, series_uid=series_uid, spacing=spacing)



def load_scan(path: str | Path, series_uid: str | None = None, spacing: tuple | None = None) -> Scan:
    """Read a NIfTI, NRRD, MHA/MHD file or a DICOM series (folder or one file of it).

    Parameters
    ----------
    path : str or Path
    series_uid : str, optional
        SeriesInstanceUID to pick in a DICOM folder holding several series.
    spacing : tuple of 3 floats, optional
        Voxel size in mm stated by the user, for files whose header has no geometry
        (e.g. some Enhanced MR DICOM). Without it such files are refused.

    Raises
    ------
    InputError
        For anything that is not a readable, finite, 3D image with exact geometry.
    """
    data, affine, meta = read_image(Path(path), series_uid=series_uid, spacing=spacing)
    check_image_array(data)
    return Scan.from_source(data, affine, meta)


def check_image_array(data: np.ndarray) -> None:
    """Refuse what cannot be measured: not 3D, fewer than 3 slices, non-finite values."""
    if data.ndim == 4 and data.shape[3] == 1:
        raise InputError("4D image with a single volume: squeeze it to 3D first")
    if data.ndim != 3:
        raise InputError(f"expected a 3D image, got {data.ndim}D with shape {tuple(data.shape)}")
    if min(data.shape) < 3:
        raise InputError(f"image has fewer than 3 slices along an axis (shape {tuple(data.shape)})")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError("image contains non-finite values (NaN or Inf)")


# label maps -------------------------------------------------------------------------------
def load_labels(path: str | Path, scan: Scan, tolerance_mm: float = 0.01) -> np.ndarray:
    """Read an integer label map or mask and return it on ``scan``'s canonical grid.

    The map's grid must be the scan's grid (the same voxels in space): shape, spacing, origin
    and direction agree within ``tolerance_mm`` (direction cosines within tolerance_mm / 100).
    The voxel order of the file may differ (it is reoriented, not resampled).

    Raises
    ------
    InputError
        If the map is unreadable, not integer-valued, or its grid differs (the message names
        the difference).
    """
    data, affine, _ = read_image(Path(path))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"label map {Path(path).name} is {data.ndim}D, expected 3D")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise InputError(f"label map {Path(path).name} holds non-integer values")
    labels = Scan.from_source(data, affine)
    check_same_grid(labels, scan, tolerance_mm, what=f"label map {Path(path).name}")
    return np.asarray(labels.data).astype(np.int32, copy=False)


def check_same_grid(other: Scan, scan: Scan, tolerance_mm: float, what: str) -> None:
    """Raise InputError naming the first difference between two canonical grids."""
    if other.shape != scan.shape:
        raise InputError(f"{what} grid differs from the image: shape {other.shape} vs {scan.shape}")
    ds = np.abs(other.spacing - scan.spacing)
    if ds.max() > tolerance_mm:
        raise InputError(
            f"{what} grid differs from the image: spacing {np.round(other.spacing, 4).tolist()} mm "
            f"vs {np.round(scan.spacing, 4).tolist()} mm"
        )
    do = np.linalg.norm(other.affine[:3, 3] - scan.affine[:3, 3])
    if do > tolerance_mm:
        raise InputError(
            f"{what} grid differs from the image: origin {np.round(other.affine[:3, 3], 3).tolist()} "
            f"vs {np.round(scan.affine[:3, 3], 3).tolist()} mm ({do:.3f} mm apart)"
        )
    dir_other = other.affine[:3, :3] / other.spacing
    dir_scan = scan.affine[:3, :3] / scan.spacing
    dd = np.abs(dir_other - dir_scan).max()
    if dd > tolerance_mm / 100:
        raise InputError(f"{what} grid differs from the image: direction cosines differ by {dd:.2g}")


def place_on_grid(other: Scan, scan: Scan, tolerance_mm: float, what: str) -> np.ndarray:
    """``other``'s array on ``scan``'s canonical grid, when ``other`` is a crop of that grid.

    3D Slicer saves a segmentation cropped to its segments' extent: the same lattice as the image
    (spacing and direction within ``tolerance_mm``, as :func:`check_same_grid`), fewer voxels, its
    first voxel on an image voxel centre. Such a crop is pasted at its integer offset (zeros
    elsewhere), never resampled; a grid of the image's shape must be the image's grid exactly.

    Raises
    ------
    InputError
        Spacing or direction differ, the crop's origin lies off the image's voxel centres, or
        non-zero voxels fall outside the image (the message names the difference).
    """
    if other.shape == scan.shape:
        check_same_grid(other, scan, tolerance_mm, what)
        return np.asarray(other.data)
    ds = np.abs(other.spacing - scan.spacing)
    if ds.max() > tolerance_mm:
        raise InputError(
            f"{what} grid differs from the image: spacing {np.round(other.spacing, 4).tolist()} mm "
            f"vs {np.round(scan.spacing, 4).tolist()} mm"
        )
    dd = np.abs(other.affine[:3, :3] / other.spacing - scan.affine[:3, :3] / scan.spacing).max()
    if dd > tolerance_mm / 100:
        raise InputError(f"{what} grid differs from the image: direction cosines differ by {dd:.2g}")
    index = mm_to_index(scan.affine, other.affine[:3, 3])
    offset = np.round(index).astype(int)
    off_lattice = float(np.linalg.norm(scan.affine[:3, :3] @ (index - offset)))
    if off_lattice > tolerance_mm:
        raise InputError(
            f"{what} grid differs from the image: shape {other.shape} vs {scan.shape} and its first voxel "
            f"lies {off_lattice:.3f} mm off the image's voxel centres (not a crop of the image grid)"
        )
    data = np.asarray(other.data)
    lo = np.maximum(offset, 0)
    hi = np.minimum(offset + np.asarray(other.shape), np.asarray(scan.shape))
    inside = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, offset))
    kept = data[inside] if np.all(hi > lo) else data[:0, :0, :0]
    if np.count_nonzero(kept) != np.count_nonzero(data):
        raise InputError(f"{what} extends beyond the image: {np.count_nonzero(data) - np.count_nonzero(kept):,} "
                         "labelled voxels lie outside its grid")
    out = np.zeros(scan.shape, dtype=data.dtype)
    if kept.size:
        out[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = kept
    return out


def save_like(array: np.ndarray, scan: Scan, path: str | Path, dtype=np.uint8) -> None:
    """Write an array on ``scan``'s canonical grid as NIfTI on the image's own grid.

    The file holds the voxels in the image file's own order with its affine, so it overlays the
    image in ITK-SNAP or 3D Slicer voxel for voxel.
    """
    out = nib.Nifti1Image(scan.to_source(np.asarray(array).astype(dtype)), scan.source_affine)
    out.set_sform(scan.source_affine, code=1)
    out.set_qform(scan.source_affine, code=1)
    out.header.set_xyzt_units("mm")
    nib.save(out, str(path))
