"""Format readers: each returns (array in the file's own voxel order, 4x4 affine to RAS mm, meta).

Contract of every reader (and of :func:`pipeline.io.scan.read_image`, which dispatches to them)::

    read_image(path, series_uid=None, spacing=None) -> (data, affine, meta)

- ``data``: the voxels in the file's own index order (i, j, k), not reoriented, not resampled.
- ``affine``: float64 4x4 mapping those indices to RAS millimetres, exact for oblique grids.
- ``meta``: ``format``, ``path``, ``warnings`` (list of str) and, for DICOM, series facts.
  Never patient identifiers.

DICOM and ITK (NRRD, MetaImage) work in LPS; the conversion to RAS happens here, once, as a
left-multiplication by diag(-1, -1, 1, 1). DICOM lives in :mod:`pipeline.io.dicom`.

Every refusal is an :class:`~pipeline.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import InputError


def _import_nibabel():
    """nibabel, imported without pydicom when pydicom is not loaded yet.

    nibabel's NIfTI module imports pydicom, if installed, only to decode DICOM header extensions
    (code 2) of NIfTI files; pydicom in turn imports requests, tqdm and PIL: about 0.2 s of every
    ``onfh`` start. Hidden during nibabel's import, pydicom is left for the DICOM readers to import
    when they are used, and nibabel keeps such an extension as raw bytes (onfh reads none).
    """
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        import nibabel

        return nibabel
    sys.modules["pydicom"] = None  # makes ``import pydicom`` fail, which nibabel takes as "not installed"
    try:
        import nibabel
    finally:
        if "pydicom" in sys.modules and sys.modules["pydicom"] is None:
            del sys.modules["pydicom"]
    return nibabel


nib = _import_nibabel()

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
METAIMAGE_SUFFIXES = (".mha", ".mhd")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Largest |cos| allowed between two voxel axes. 1e-3 (0.06 deg) accepts float32 rounding of
# stored affines and direction cosines, and refuses any real shear: downstream steps (marching
# cubes with per-axis spacing, voxel-count volumes) assume orthogonal voxel axes.
SHEAR_COS_TOLERANCE = 1e-3


def check_spacing(spacing) -> tuple[float, float, float] | None:
    """Validate a user-stated voxel size: three positive finite numbers in mm, or None."""
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers in mm, got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"spacing must be three positive numbers in mm, got {spacing!r}")
    return values


# NIfTI ------------------------------------------------------------------------------------
def read_nifti(path: Path, spacing=None):
    """NIfTI-1/2 via nibabel; sform/qform precedence exactly as nibabel decides (``img.affine``).

    The data are read fully (no memory map) so that a truncated file fails here, not later.
    """
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            img = nib.load(str(path), mmap=False)
        except Exception as exc:  # nibabel raises many types for damaged files
            raise InputError(f"cannot read NIfTI {path.name}: {one_line(exc) or type(exc).__name__}") from None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path.name} is not a NIfTI image (nibabel read it as {type(img).__name__})")
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            raise InputError(
                f"cannot read the voxels of NIfTI {path.name} (truncated or damaged?): "
                f"{one_line(exc) or type(exc).__name__}"
            ) from None
        caught = [one_line(r.message) for r in records]
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise InputError(
            f"{path.name} holds {data.dtype} voxels (colour or complex); expected one real value per voxel"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    header = img.header
    meta_warnings = [f"nibabel: {w}" for w in caught if w]
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code == 0 and qform_code == 0:
        meta_warnings.append(
            "NIfTI header has neither sform nor qform: orientation and origin are unknown; "
            "nibabel's fallback (voxel sizes only) is used"
        )
    unit = header.get_xyzt_units()[0]
    if unit not in ("mm", "unknown"):
        meta_warnings.append(f"NIfTI header states spatial unit '{unit}'; coordinates are read as mm (as nibabel does)")
    if spacing is not None:
        meta_warnings.append("stated spacing ignored: the NIfTI header gives the voxel geometry")
    check_axes_orthogonal(affine, f"NIfTI {path.name}")
    meta = {"format": "nifti", "path": str(path), "warnings": meta_warnings}
    return data, affine, meta


# NRRD and MetaImage -----------------------------------------------------------------------
def read_itk(path: Path, fmt: str, spacing=None):
    """NRRD (.nrrd/.nhdr) or MetaImage (.mha/.mhd) via SimpleITK, converted from LPS to RAS.

    ``GetArrayFromImage`` gives (z, y, x); it is transposed to (x, y, z) so that array index i
    goes with the first column of the ITK direction matrix, as the affine says.
    """
    import SimpleITK as sitk

    kind = "NRRD" if fmt == "nrrd" else "MetaImage"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with capture_native_stderr() as native:
        try:
            img = reader.Execute()
            error = None
        except RuntimeError as exc:
            img, error = None, exc
    # MetaIO reports short reads on stderr (and sometimes still returns an image): both refuse.
    if error is not None or native.text.strip():
        reason = one_line(native.text) if native.text.strip() else itk_reason(error)
        raise InputError(f"cannot read {kind} {path.name} (truncated, damaged or not an image?): {reason}")
    dim = img.GetDimension()
    size = tuple(int(s) for s in img.GetSize())
    if dim != 3:
        raise InputError(f"expected a 3D image, got {dim}D with shape {size} in {path.name}")
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp != 1:
        raise InputError(
            f"{path.name} has {ncomp} components per voxel (vector or colour image); expected one value per voxel"
        )
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()
    affine = LPS_TO_RAS @ lps
    data = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    meta_warnings = []
    if fmt == "nrrd" and not img.HasMetaDataKey("NRRD_space"):
        meta_warnings.append("NRRD header has no 'space' field: orientation is assumed (ITK default, LPS axes)")
    if spacing is not None:
        meta_warnings.append(f"stated spacing ignored: the {kind} header gives the voxel geometry")
    check_axes_orthogonal(affine, f"{kind} {path.name}")
    meta = {"format": fmt, "path": str(path), "warnings": meta_warnings}
    return data, affine, meta


# helpers shared with pipeline.io.dicom --------------------------------------------------------
def check_axes_orthogonal(affine: np.ndarray, what: str) -> None:
    """Refuse a degenerate or sheared voxel grid (axes not at 90 degrees), naming the angle."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or np.any(norms < 1e-9):
        raise InputError(f"{what} has a degenerate affine (zero or non-finite voxel size)")
    unit = m / norms
    for a, b in ((0, 1), (0, 2), (1, 2)):
        cos = float(unit[:, a] @ unit[:, b])
        if abs(cos) > SHEAR_COS_TOLERANCE:
            angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
            raise InputError(
                f"{what} has a sheared grid: voxel axes {'ijk'[a]} and {'ijk'[b]} meet at {angle:.2f} deg, "
                "not 90; resample it to an orthogonal grid first"
            )


def one_line(text, limit: int = 300) -> str:
    """Collapse any text (exception, native log) into one line of at most ``limit`` characters."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def itk_reason(exc: BaseException | None) -> str:
    """The informative part of a SimpleITK exception, without source paths and object addresses."""
    if exc is None:
        return "unknown error"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = [ln for ln in lines if "ERROR:" in ln]
    parts = []
    if msg:
        tail = msg[-1].split("ERROR:", 1)[1]
        parts.append(re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", tail))
        after = lines[lines.index(msg[-1]) + 1 :]
        if after:
            parts.append(after[-1])
    else:
        parts.append(lines[-1] if lines else type(exc).__name__)
    return one_line(" ".join(parts))


class _Captured:
    text = ""


# File descriptor 2 is process-wide: two threads redirecting it at once could leave it pointing
# at a closed temporary file, so redirections take turns.
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def capture_native_stderr():
    """Capture what C/C++ libraries (ITK's MetaIO, GDCM) write to file descriptor 2.

    The CLI promises one error line on stderr; native libraries print their own diagnostics
    there, bypassing Python. The captured text is offered to the caller as ``.text``.
    """
    captured = _Captured()
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no usable stderr (e.g. some embedded interpreters): nothing to capture
            yield captured
            return
        with _redirected(saved, captured):
            yield captured


@contextlib.contextmanager
def _redirected(saved: int, captured: _Captured):
    fd = 2
    with tempfile.TemporaryFile() as tmp:
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), fd)
            yield captured
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")
