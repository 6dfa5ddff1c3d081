"""DICOM series (classic one-slice-per-file) and Enhanced multi-frame DICOM, with exact geometry.

The affine is built here from the headers, not delegated to a library, so that every refusal can
say what is wrong with the stack:

- in-plane axes from ImageOrientationPatient (row direction = along a row, i.e. increasing
  column index; column direction = down a column, increasing row index);
- PixelSpacing = [spacing between rows, spacing between columns] (mm). The array index i runs
  along the row direction (columns of the image), so it takes PixelSpacing[1]; j takes [0];
- slices sorted by their position along the slice normal n = row x column, the third axis is
  n times the (checked even) slice step, the origin is the first sorted slice's
  ImagePositionPatient;
- everything is LPS, converted to RAS once at the end.

The array is (columns, rows, slices): ``pixel_array`` (rows, columns) transposed per slice.
RescaleSlope/RescaleIntercept (classic or per-frame PixelValueTransformationSequence) are applied.

Headers are read with ``stop_before_pixels`` for grouping and checking; pixels are read only for
the chosen series. Patient-identifying fields are never copied into ``meta``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import MutableSequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.readers import LPS_TO_RAS, SHEAR_COS_TOLERANCE, capture_native_stderr, itk_reason, one_line

# Direction cosines closer than this (per component) are one orientation: rounding in the
# header is ~1e-6; two deliberate stacks differ by far more.
ORIENTATION_TOLERANCE = 1e-4
# Slices closer than this along the normal are "at the same position" (a repeated stack).
SAME_POSITION_MM = 0.01
# A slice step may differ from the median step by max(abs, rel * median): header positions are
# rounded to ~1e-3 mm by some vendors; a missing slice doubles the step.
STEP_TOLERANCE_MM = 0.01
STEP_TOLERANCE_REL = 0.01
# In-plane drift of the stack (gantry tilt) allowed, as a fraction of the smallest pixel: below it,
# stacking the slices orthogonally misplaces no voxel by more than a tenth of its size.
TILT_TOLERANCE_PIXELS = 0.1

ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET
}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Top-level tags whose values steer the reading: one pydicom cannot decode makes the file unusable.
# Any other undecodable tag is dropped from the header copy and counts as absent (SOPClassUID only
# tells images from other objects, which the pixel tags also do).
READ_TAGS = frozenset({
    "SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
})
# Any of these makes a file an image (to be read or refused), not another DICOM object to skip.
PIXEL_MODULE_TAGS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")
# Tags that tell repeated images at one position apart (multi-echo, phases, repeats).
REPEAT_TAGS = (
    "EchoNumbers",
    "EchoTime",
    "EffectiveEchoTime",
    "InversionTime",
    "TriggerTime",
    "TemporalPositionIdentifier",
    "TemporalPositionIndex",
    "AcquisitionNumber",
    "StackID",
    "DiffusionBValue",
    "ImageType",
)


class GeometryError(InputError):
    """A DICOM stack that is not one measurable volume; ``short`` is a few words for listings."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short


class DamagedFileError(InputError):
    """A DICOM image file whose header is truncated or malformed.

    ``series_uid`` is the file's SeriesInstanceUID, "" when it cannot be read: a folder scan
    keeps going past such a file and refuses only if the series being read may own it.
    """

    def __init__(self, message: str, series_uid: str = ""):
        super().__init__(message)
        self.series_uid = series_uid


@dataclass
class _File:
    path: Path
    ds: object  # pydicom Dataset, header only

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")


@dataclass
class _Frame:
    file: _File
    index: int | None  # frame index in a multi-frame file (0-based), None for a classic file
    label: str
    item: object | None  # the per-frame functional group item, if any
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: np.ndarray | None
    rows: int
    cols: int
    slope: float
    intercept: float
    thickness: float | None
    sort_key: tuple
    legacy_multiframe: bool = False  # multi-frame without functional groups: no per-frame geometry


@dataclass
class _Stack:
    order: list[int]
    affine: np.ndarray  # RAS
    warnings: list[str]
    step_mm: float | None


# entry point ------------------------------------------------------------------------------
def read_dicom(path: Path, series_uid: str | None = None, spacing=None):
    """Read a DICOM series (folder, or one file of it) or an Enhanced multi-frame file.

    Parameters
    ----------
    path : Path
        A folder of DICOM files, or one file; for a file, the other files of the same series in
        its folder are read too.
    series_uid : str, optional
        SeriesInstanceUID to pick when the folder holds several series.
    spacing : tuple of 3 floats, optional
        Voxel size (mm) for headers without geometry; an axis-aligned affine is then built and
        a warning added. Ignored (with a warning) when the header has geometry.

    Returns
    -------
    data : ndarray, shape (columns, rows, slices)
        Rescaled voxel values.
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    meta : dict
        ``format`` ("dicom" or "dicom-enhanced"), ``path``, ``warnings``, ``series_uid``,
        ``series_description``, ``series_number``, ``modality``, ``n_files``, ``n_slices`` and,
        ``files`` (paths of the files read, sorted), ``slice_sop_uids`` and ``slice_frame_numbers``
        (SOPInstanceUID and 1-based frame number, None for a single-frame file, of each slice along
        the third array axis) and, when present, ``slice_thickness_mm``,
        ``slice_gap_mm``, ``manufacturer``, ``model``.

    Raises
    ------
    InputError
        Not DICOM, several series without a choice, or a stack that is not one evenly spaced,
        untilted, single-orientation volume with geometry (one-line message).
    """
    # pydicom converts header values lazily and warns about malformed ones on access; those
    # warnings are noise next to our own checks (and the CLI promises a one-line error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dicom(Path(path), series_uid, spacing)


def _read_dicom(path: Path, series_uid, spacing):
    notes: list[str] = []
    if path.is_dir():
        files, skipped, damaged = _scan_folder(path)
        # A damaged image of unknown series may be a slice of any of them: no series is complete.
        _refuse_damaged(damaged, "", unknown=True)
        if not files and damaged:
            raise damaged[0]
        if not files:
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            hint = f" (it has {len(subdirs)} sub-folder(s): pass the one holding the series)" if subdirs else ""
            raise InputError(f"no DICOM images in folder {path.name}{hint}")
        if skipped:
            notes.append(f"{skipped} file(s) in {path.name} are not DICOM images and were ignored")
        orphans = [f for f in files if not f.series_uid]
        if orphans and len(orphans) < len(files):
            raise InputError(f"DICOM file {orphans[0].path.name} has no SeriesInstanceUID, unlike the other images "
                             f"in {path.name}: cannot tell which series it belongs to")
        if series_uid is not None:
            _refuse_damaged(damaged, series_uid, unknown=False)
        groups = _group(files)
        uid = _choose_series(groups, series_uid, path.name, spacing, notes)
        _refuse_damaged(damaged, uid, unknown=False)
        if damaged:
            notes.append(f"{len(damaged)} damaged DICOM file(s) of other series in {path.name} were ignored")
        chosen = groups[uid]
    else:
        ds, reason = _read_header(path)
        if ds is None:
            raise InputError(f"{path.name} is not a readable image ({reason}); supported: .nii, .nii.gz, "
                             ".nrrd, .nhdr, .mha, .mhd, or DICOM (a series folder or one of its files)")
        first = _File(path, ds)
        if series_uid is not None and first.series_uid != series_uid:
            raise InputError(
                f"{path.name} belongs to series {first.series_uid or '(no SeriesInstanceUID)'}, "
                f"not to the requested {series_uid}"
            )
        others, _, damaged = _scan_folder(path.parent, skip=path)
        try:
            _refuse_damaged(damaged, first.series_uid, unknown=False)
        except DamagedFileError as exc:
            raise InputError(f"{exc} (a file of the series of {path.name}, beside it)") from None
        # The user named one file: siblings of unknown series (a folder of assorted objects, say)
        # do not stop it, but a person should know one of them might have been a slice.
        unknown = sum(1 for d in damaged if not d.series_uid)
        if unknown:
            notes.append(f"{unknown} damaged DICOM file(s) of unknown series beside {path.name} were ignored")
        chosen = [first] + [f for f in others if f.series_uid == first.series_uid and first.series_uid]
    chosen = _dedupe(chosen, notes)
    frames = _frames(chosen)
    name = _series_name(chosen)
    stack = _stack(frames, name, spacing)
    data = _pixels(frames, stack.order, notes)
    meta = _meta(path, chosen, frames, stack, notes + stack.warnings)
    return data, stack.affine, meta


# files and series --------------------------------------------------------------------------
def _read_header(path: Path):
    """(header dataset, None) for a DICOM image file, else (None, reason) for what is no image.

    Every value the reader uses is checked here, once per file, so that later steps can trust
    the header (see :func:`_check_header`).

    Raises
    ------
    DamagedFileError
        A DICOM image file (one with the "DICM" marker, an image SOP class or image-pixel tags)
        whose header is truncated, undecodable or malformed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    where = f"DICOM file {path.name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forced = False
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except InvalidDicomError:
            forced = True
            # Old files without the 128-byte preamble are still DICOM; force, then insist on
            # image attributes so that random files are not mistaken for images.
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            except Exception as exc:
                return None, f"unreadable: {one_line(exc, 120) or type(exc).__name__}"
        except Exception as exc:
            # Past the "DICM" marker (else InvalidDicomError): a DICOM file cut short or damaged.
            raise DamagedFileError(f"{where} has an unreadable header (truncated or damaged?): "
                                   f"{one_line(exc, 100) or type(exc).__name__}") from None
        cut_short = _truncated_element(ds)
        undecodable = _decode_values(ds)
        sop = str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        if sop == DICOMDIR_SOP_CLASS:
            return None, "a DICOMDIR index, not an image"
        claims_image = _is_image_class(sop) or any(tag in ds for tag in PIXEL_MODULE_TAGS)
        if not forced and len(ds) == 0:
            # pydicom reads a file cut inside its meta information as an empty data set.
            raise DamagedFileError(f"{where} has no data set after its file meta information (truncated?)")
        if not claims_image:
            if forced:
                return None, "not a DICOM file"
            modality = str(ds.get("Modality", "") or "")
            return None, f"a DICOM {modality + ' ' if modality else ''}object without image rows/columns"
        try:
            if cut_short:
                raise InputError(f"{where} is truncated: it ends inside {cut_short}")
            if undecodable:
                keyword, reason = next(iter(undecodable.items()))
                raise InputError(f"{where}: {keyword} cannot be decoded ({reason})")
            _check_header(ds, where)
        except InputError as exc:
            if forced and not _is_image_class(sop):
                # Without the preamble and an image SOP class this may be any file at all.
                return None, "not a DICOM file"
            # A value cut short is no UID to trust (it names some other, non-existent series).
            unsure = "SeriesInstanceUID" in undecodable or cut_short == "SeriesInstanceUID"
            uid = "" if unsure else str(ds.get("SeriesInstanceUID", "") or "")
            raise DamagedFileError(str(exc), uid) from None
    return ds, None


def _is_image_class(sop: str) -> bool:
    from pydicom.uid import UID

    try:
        return UID(sop).name.endswith("Image Storage")
    except Exception:  # a malformed UID names no class
        return False


def _truncated_element(ds) -> str:
    """Keyword of the last header element if the file ends inside its value, else "".

    pydicom reads a file cut short without complaint, keeping the bytes that are there, so the
    last value can be a shortened UID or number; its declared length tells.
    """
    from pydicom.datadict import keyword_for_tag

    if len(ds) == 0:
        return ""
    last = ds.get_item(max(ds.keys()))
    value, length = getattr(last, "value", None), getattr(last, "length", None)
    if isinstance(value, bytes) and isinstance(length, int) and length != 0xFFFFFFFF and len(value) < length:
        return keyword_for_tag(last.tag) or str(last.tag)
    return ""


def _decode_values(ds) -> dict[str, str]:
    """Decode every top-level value now; return {keyword: reason} of the undecodable ones we read.

    pydicom converts values lazily, so a malformed one (e.g. 3 bytes for a 2-byte US) would
    raise wherever it is first touched; here it either names its tag or, when the reader never
    uses it, is dropped from this header copy.
    """
    from pydicom.datadict import keyword_for_tag

    bad = {}
    for tag in list(ds.keys()):
        try:
            ds[tag]
        except Exception as exc:
            keyword = keyword_for_tag(tag) or str(tag)
            if keyword in READ_TAGS:
                bad[keyword] = one_line(exc, 80) or type(exc).__name__
            else:
                del ds[tag]
    return bad


def _scan_folder(folder: Path, skip: Path | None = None) -> tuple[list[_File], int, list[DamagedFileError]]:
    """DICOM image headers of the regular, non-hidden files directly in ``folder``, by name.

    Returns the readable images, the count of files that are no DICOM image, and the damaged
    DICOM images (each error names its file and what is wrong).
    """
    files, skipped, damaged = [], 0, []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or (skip is not None and p.name == skip.name):
            continue
        if p.stat().st_size == 0:
            skipped += 1
            continue
        try:
            ds, _ = _read_header(p)
        except DamagedFileError as exc:
            damaged.append(exc)
            continue
        if ds is None:
            skipped += 1
        else:
            files.append(_File(p, ds))
    return files, skipped, damaged


def _refuse_damaged(damaged: list[DamagedFileError], series_uid: str, unknown: bool) -> None:
    """Raise the first damaged file of ``series_uid`` (and, if ``unknown``, of unknown series)."""
    for exc in damaged:
        if (unknown and not exc.series_uid) or (series_uid and exc.series_uid == series_uid):
            raise exc


def _group(files: list[_File]) -> dict[str, list[_File]]:
    groups: dict[str, list[_File]] = {}
    for f in files:
        groups.setdefault(f.series_uid, []).append(f)
    return groups


def _choose_series(groups, series_uid, folder_name, spacing, notes) -> str:
    """The SeriesInstanceUID to read: the requested one, the only one, or the only 3D one."""
    if series_uid is not None:
        if series_uid in groups:
            return series_uid
        raise InputError(
            f"no series with SeriesInstanceUID {series_uid} in {folder_name}; it holds "
            f"{_listing(groups, spacing)}"
        )
    if len(groups) == 1:
        return next(iter(groups))
    volumes = [uid for uid in groups if _is_volume(groups[uid], spacing)]
    if len(volumes) == 1:
        others = len(groups) - 1
        notes.append(
            f"folder {folder_name} holds {len(groups)} series; read the only 3D volume "
            f"{_describe(volumes[0], groups[volumes[0]])} and ignored {others} other(s)"
        )
        return volumes[0]
    which = "none of them is a single 3D volume" if not volumes else f"{len(volumes)} are 3D volumes"
    raise InputError(
        f"{folder_name} holds {len(groups)} DICOM series and {which}: {_listing(groups, spacing)} "
        "- pass one series' own folder or one of its files, or choose it with --series SERIES_UID"
    )


def _is_volume(files: list[_File], spacing) -> bool:
    try:
        _stack(_frames(_dedupe(files, [])), "", spacing)
    except InputError:
        return False
    return True


def _describe(uid: str, files: list[_File]) -> str:
    ds = files[0].ds
    desc = _clean(ds.get("SeriesDescription", "")) or "(no description)"
    n_frames = sum(_n_frames(f.ds) for f in files)
    size = f"{_int(ds, 'Columns', 0)}x{_int(ds, 'Rows', 0)}x{n_frames}"
    return f'"{desc}" ({len(files)} file{"s" if len(files) != 1 else ""}, {size}, SeriesInstanceUID {uid or "(none)"})'


def _listing(groups, spacing, limit: int = 12) -> str:
    parts = []
    for uid, files in list(groups.items())[:limit]:
        reason = ""
        try:
            _stack(_frames(_dedupe(files, [])), "", spacing)
        except GeometryError as exc:
            reason = f" [not a volume: {exc.short}]"
        except InputError:
            reason = " [not a volume]"
        parts.append(_describe(uid, files) + reason)
    if len(groups) > limit:
        parts.append(f"and {len(groups) - limit} more")
    return "; ".join(parts)


def _dedupe(files: list[_File], notes: list[str]) -> list[_File]:
    """One file per SOPInstanceUID: copies of an image (or re-encodings of it) count once."""
    seen, kept, dropped = set(), [], 0
    for f in files:
        sop = str(f.ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            dropped += 1
            continue
        seen.add(sop)
        kept.append(f)
    if dropped:
        notes.append(f"{dropped} file(s) repeat an image already read (same SOPInstanceUID) and were ignored")
    return kept


def _series_name(files: list[_File]) -> str:
    desc = _clean(files[0].ds.get("SeriesDescription", ""))
    if len(files) == 1:
        return f'DICOM file {files[0].path.name}' + (f' (series "{desc}")' if desc else "")
    return f'DICOM series "{desc}"' if desc else f"DICOM series in {files[0].path.parent.name}"


def _clean(value, limit: int = 64) -> str:
    return one_line("".join(ch if ch.isprintable() else " " for ch in str(value or "")), limit)


# header values ----------------------------------------------------------------------------
def _is_multi(value) -> bool:
    return isinstance(value, (MutableSequence, tuple))


def _absent(value) -> bool:
    """None, or an empty string, byte string or multi-value: a tag present without a value."""
    return value is None or (isinstance(value, (str, bytes, MutableSequence, tuple)) and len(value) == 0)


def _show(value) -> str:
    """A header value as a short quoted token for a message."""
    text = "\\".join(str(v) for v in value) if _is_multi(value) else str(value)
    return f"'{_clean(text, 40)}'"


def _value(ds, keyword: str, where: str):
    """The value of ``keyword`` in ``ds``, None when absent or empty; InputError if undecodable."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
    except Exception as exc:
        raise InputError(f"{where}: {keyword} cannot be decoded ({one_line(exc, 80) or type(exc).__name__})") from None
    return None if _absent(value) else value


def _numbers(value, keyword: str, where: str, n: int, *, integer: bool = False, positive: bool = False,
             nonzero: bool = False) -> np.ndarray | None:
    """``value`` of tag ``keyword`` as ``n`` finite numbers, None when absent.

    Raises
    ------
    InputError
        Naming ``where`` and the tag: wrong multiplicity, not numbers (e.g. a string where the
        standard wants numbers), non-finite, or breaking ``integer``/``positive``/``nonzero``.
    """
    if _absent(value):
        return None
    items = list(value) if _is_multi(value) else [value]
    if len(items) != n:
        return _bad(where, keyword, f"has {len(items)} value{'s' if len(items) != 1 else ''}, expected {n}")
    try:
        arr = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return _bad(where, keyword, f"{_show(value)} is not {'an integer' if integer else 'numeric'}")
    if not np.all(np.isfinite(arr)):
        return _bad(where, keyword, f"{_show(value)} is not finite")
    if integer and not np.all(arr == np.round(arr)):
        return _bad(where, keyword, f"{_show(value)} is not an integer")
    if positive and np.any(arr <= 0):
        return _bad(where, keyword, f"{_show(value)} is not positive")
    if nonzero and np.any(arr == 0):
        return _bad(where, keyword, f"{_show(value)} is zero")
    return arr


def _bad(where: str, keyword: str, problem: str):
    raise InputError(f"{where}: {keyword} {problem}")


def _check_header(ds, where: str) -> None:
    """Refuse an image header whose pixel description, geometry or rescale tags are malformed.

    Required: Rows, Columns, SamplesPerPixel, PhotometricInterpretation, BitsAllocated.
    Checked when present: NumberOfFrames, BitsStored, PixelRepresentation, ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing, SliceThickness, RescaleSlope, RescaleIntercept and the
    functional-group sequences (their contents are checked per frame by :func:`_frames`). Absent
    geometry is not an error here: :func:`_stack` explains it for the whole series.
    """
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation"):
        if _value(ds, keyword, where) is None:
            raise InputError(f"{where}: {keyword} is missing")
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames"):
        _numbers(_value(ds, keyword, where), keyword, where, 1, integer=True, positive=True)
    photometric = _value(ds, "PhotometricInterpretation", where)
    if _is_multi(photometric) or not isinstance(photometric, str):
        _bad(where, "PhotometricInterpretation", f"{_show(photometric)} is not one name")
    bits = int(_numbers(_value(ds, "BitsAllocated", where), "BitsAllocated", where, 1, integer=True)[0])
    if not (bits == 1 or (bits % 8 == 0 and 8 <= bits <= 64)):
        _bad(where, "BitsAllocated", f"{bits} is not 1 or a multiple of 8 up to 64")
    stored = _numbers(_value(ds, "BitsStored", where), "BitsStored", where, 1, integer=True)
    if stored is not None and not 1 <= stored[0] <= bits:
        _bad(where, "BitsStored", f"{int(stored[0])} is not between 1 and BitsAllocated ({bits})")
    representation = _numbers(_value(ds, "PixelRepresentation", where), "PixelRepresentation", where, 1,
                              integer=True)
    if representation is not None and representation[0] not in (0, 1):
        _bad(where, "PixelRepresentation", f"{int(representation[0])} is not 0 (unsigned) or 1 (signed)")
    _numbers(_value(ds, "ImagePositionPatient", where), "ImagePositionPatient", where, 3)
    _orientation(_value(ds, "ImageOrientationPatient", where), where)
    _numbers(_value(ds, "PixelSpacing", where), "PixelSpacing", where, 2, positive=True)
    _thickness(_value(ds, "SliceThickness", where), where)
    _numbers(_value(ds, "RescaleSlope", where), "RescaleSlope", where, 1, nonzero=True)
    _numbers(_value(ds, "RescaleIntercept", where), "RescaleIntercept", where, 1)
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        if keyword in ds and ds[keyword].VR != "SQ":
            _bad(where, keyword, f"is not a sequence (VR {ds[keyword].VR})")


def _orientation(value, where: str) -> np.ndarray | None:
    """ImageOrientationPatient as 6 numbers, None when absent; refused unless both directions
    have unit length (the same 1 % as the series check in :func:`_stack`)."""
    iop = _numbers(value, "ImageOrientationPatient", where, 6)
    if iop is not None:
        for label, vec in (("row", iop[:3]), ("column", iop[3:])):
            if abs(np.linalg.norm(vec) - 1.0) > 1e-2:
                _bad(where, "ImageOrientationPatient", f"{_show(value)} has a {label} direction of length "
                     f"{np.linalg.norm(vec):.3f}, not 1")
    return iop


def _thickness(value, where: str) -> float | None:
    """SliceThickness in mm, None when absent; 0 is kept (some exporters write it for unknown)."""
    arr = _numbers(value, "SliceThickness", where, 1)
    if arr is not None and arr[0] < 0:
        _bad(where, "SliceThickness", f"{_show(value)} is negative")
    return None if arr is None else float(arr[0])


def _int(ds, keyword: str, default: int) -> int:
    """An integer tag already checked by :func:`_check_header`, or ``default`` when absent."""
    value = ds.get(keyword)
    return default if _absent(value) else int(float(value))


# frames -----------------------------------------------------------------------------------
def _n_frames(ds) -> int:
    try:
        return max(1, _int(ds, "NumberOfFrames", 1))
    except (TypeError, ValueError):
        return 1


def _floats(value, n: int) -> np.ndarray | None:
    """``value`` as n finite floats, or None when absent (or malformed: refused earlier, by
    :func:`_check_header`, for every file that reaches the frames)."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        arr = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def _float(value, default):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if np.isfinite(v) else default


def _group_value(item, shared, sequence: str, keyword: str, where: str):
    """``keyword`` from a functional-group ``sequence``: per-frame item first, then shared.

    Values inside the groups are decoded here, on first use; one that cannot be raises
    InputError naming ``where``, the sequence and the tag.
    """
    from pydicom.sequence import Sequence

    for group in (item, shared):
        if group is None:
            continue
        seq = _value(group, sequence, where)
        if seq is None:
            continue
        if not isinstance(seq, Sequence):
            _bad(where, sequence, "is not a sequence")
        if len(seq) > 0:
            value = _value(seq[0], keyword, f"{where}, {sequence}")
            if value is not None:
                return value
    return None


def _group_numbers(groups, sequence: str, keyword: str, n: int, **checks) -> np.ndarray | None:
    """:func:`_group_value` checked by :func:`_numbers`; ``groups`` is (item, shared, where)."""
    item, shared, where = groups
    return _numbers(_group_value(item, shared, sequence, keyword, where), keyword, where, n, **checks)


def _frames(files: list[_File]) -> list[_Frame]:
    """One entry per 2D image: each classic file, each frame of a multi-frame file."""
    frames: list[_Frame] = []
    instance_counts = Counter(str(f.ds.get("InstanceNumber", "")) for f in files)
    for f in files:
        ds = f.ds  # top-level values checked by _check_header; functional groups checked here
        rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
        top_slope = _float(ds.get("RescaleSlope", 1.0), 1.0)
        top_intercept = _float(ds.get("RescaleIntercept", 0.0), 0.0)
        instance = ds.get("InstanceNumber")
        inst_key = _float(instance, float("inf"))
        n = _n_frames(ds)
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq is not None and len(shared_seq) > 0 else None
        if per is not None and len(per) != n:
            # Frame i's geometry is item i: with a count mismatch no frame can be placed for sure.
            raise InputError(f"DICOM file {f.path.name}: NumberOfFrames is {n} but "
                             f"PerFrameFunctionalGroupsSequence has {len(per)} item(s)")
        if per is not None or shared is not None:
            for i in range(n):
                item = per[i] if per is not None else None
                label = f"frame {i + 1}" + (f" of {f.path.name}" if len(files) > 1 else "")
                where = f"DICOM file {f.path.name}, frame {i + 1}"
                groups = (item, shared, where)
                ps = _group_numbers(groups, "PixelMeasuresSequence", "PixelSpacing", 2, positive=True)
                slope = _group_numbers(groups, "PixelValueTransformationSequence", "RescaleSlope", 1, nonzero=True)
                intercept = _group_numbers(groups, "PixelValueTransformationSequence", "RescaleIntercept", 1)
                frames.append(_Frame(
                    file=f, index=i, label=label, item=item,
                    ipp=_group_numbers(groups, "PlanePositionSequence", "ImagePositionPatient", 3),
                    iop=_orientation(_group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient",
                                                  where), where),
                    pixel_spacing=ps if ps is not None else _floats(ds.get("PixelSpacing"), 2),
                    rows=rows, cols=cols,
                    slope=top_slope if slope is None else float(slope[0]),
                    intercept=top_intercept if intercept is None else float(intercept[0]),
                    thickness=_thickness(_group_value(item, shared, "PixelMeasuresSequence", "SliceThickness",
                                                      where), where),
                    sort_key=(inst_key, f.path.name, i),
                ))
        else:
            # Classic file; a multi-frame file without functional groups has no per-frame
            # position, so its frames carry no geometry (only the top-level pixel spacing).
            single = n == 1
            if single:
                unique = instance is not None and instance_counts[str(instance)] == 1
                label = f"instance {instance}" if unique else f"file {f.path.name}"
            for i in range(n):
                if not single:
                    label = f"frame {i + 1}" + (f" of {f.path.name}" if len(files) > 1 else "")
                frames.append(_Frame(
                    file=f, index=None if single else i, label=label, item=None,
                    ipp=_floats(ds.get("ImagePositionPatient"), 3) if single else None,
                    iop=_floats(ds.get("ImageOrientationPatient"), 6) if single else None,
                    pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
                    rows=rows, cols=cols, slope=top_slope, intercept=top_intercept,
                    thickness=_float(ds.get("SliceThickness"), None),
                    sort_key=(inst_key, f.path.name, i), legacy_multiframe=not single,
                ))
    return frames


def _frame_value(frame: _Frame, keyword: str):
    """A per-frame attribute (searched one sequence level deep), else the file's top level.

    Only explains a refusal, so a value pydicom cannot decode counts as absent.
    """
    if frame.item is not None:
        for tag in list(frame.item.keys()):
            try:
                elem = frame.item[tag]
                if elem.VR == "SQ" and len(elem.value) > 0 and keyword in elem.value[0]:
                    return elem.value[0].get(keyword)
            except Exception:
                continue
    return frame.file.ds.get(keyword)


# geometry ---------------------------------------------------------------------------------
def _stack(frames: list[_Frame], name: str, spacing) -> _Stack:
    """Check the frames form one volume and return their order and the RAS affine.

    Steps: a grey volume of one image size (:func:`_check_volume_pixels`); frames without
    geometry only with the user's ``--spacing`` (:func:`_stack_without_geometry`); one orientation
    and pixel spacing (:func:`_in_plane_axes`); slices sorted along the normal without repeats
    (:func:`_sort_along_normal`); even steps (:func:`_check_even_steps`); no gantry tilt or
    in-plane shift (:func:`_slice_drift`, :func:`_refuse_tilt`).
    """
    n = len(frames)
    _check_volume_pixels(frames, name)
    order = sorted(range(n), key=lambda i: frames[i].sort_key)
    missing = [tag for tag, attr in (("ImagePositionPatient", "ipp"), ("ImageOrientationPatient", "iop"),
                                     ("PixelSpacing", "pixel_spacing"))
               if any(getattr(frames[i], attr) is None for i in order)]
    if missing:
        return _stack_without_geometry(frames, missing, name, spacing, order)

    _check_orientations(frames, name)
    row, col, normal, pixel_spacing = _in_plane_axes(frames, name)
    order, ipp, d = _sort_along_normal(frames, order, normal, name)
    drift = _slice_drift(ipp, d, normal, pixel_spacing)
    step = _check_even_steps(frames, order, d, name, drift.note)
    if drift.tilted:
        _refuse_tilt(frames, order, drift, step, name)

    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = ipp[0]
    notes = []
    if spacing is not None:
        notes.append("stated spacing ignored: the DICOM header gives the voxel geometry")
    return _Stack(order, LPS_TO_RAS @ lps, notes, step)


def _check_volume_pixels(frames: list[_Frame], name: str) -> None:
    """Refuse frames that are no grey volume: fewer than 3 slices, colour, mixed image sizes.

    Parameters
    ----------
    frames : list of _Frame
        The frames (slices) of one series.
    name : str
        The series as named in messages.

    Raises
    ------
    GeometryError
    """
    n = len(frames)
    if n < 3:
        what = "1 slice: a 2D image" if n == 1 else f"only {n} slices"
        raise GeometryError(f"{name} has {what}, not a volume (at least 3 slices are needed)",
                            f"{n} slice{'s' if n != 1 else ''}")
    samples = {_int(f.file.ds, "SamplesPerPixel", 1) for f in frames}
    photometric = {str(f.file.ds.get("PhotometricInterpretation", "") or "") for f in frames}
    if max(samples) > 1 or "PALETTE COLOR" in photometric:
        raise GeometryError(f"{name} is a colour image ({', '.join(sorted(photometric))}); "
                            "expected one grey value per voxel", "colour")
    sizes = Counter((f.cols, f.rows) for f in frames)
    if len(sizes) > 1:
        desc = ", ".join(f"{c}x{r} ({k})" for (c, r), k in sizes.most_common())
        raise GeometryError(f"{name} mixes image sizes {desc}: not one volume", "mixed sizes")


def _stack_without_geometry(frames: list[_Frame], missing: list[str], name: str, spacing, order: list[int]) -> _Stack:
    """The stack of frames without position, orientation or pixel spacing: only with ``--spacing``.

    Parameters
    ----------
    frames : list of _Frame
    missing : list of str
        The DICOM keywords absent from some frame.
    name : str
        The series as named in messages.
    spacing : sequence of 3 floats or None
        The voxel size stated by the user (``--spacing``), mm.
    order : list of int
        Frame indices in instance/frame order.

    Returns
    -------
    _Stack
        An axis-aligned grid at 0 with the stated voxel size, and a note of what is unknown.

    Raises
    ------
    GeometryError
        Without ``spacing`` (no millimetres: nothing is measured).
    """
    legacy = [f for f in frames if f.legacy_multiframe]
    top = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
           if legacy and t in legacy[0].file.ds]
    if legacy and top:
        absent = (f"no per-frame geometry (a multi-frame image without functional groups; its top-level "
                  f"{' / '.join(top)} cannot place each frame)")
    elif legacy:
        absent = ("no ImagePositionPatient / ImageOrientationPatient / PixelSpacing in its header "
                  "(no functional groups, nothing at top level)")
    else:
        absent = f"no {' / '.join(missing)} in its header (per-frame or shared)"
    if spacing is None:
        raise GeometryError(
            f"{name} has {absent}: no geometry, "
            "no millimetres - refusing to measure; if you know the voxel size, state it with "
            "--spacing SX,SY,SZ (mm) to read it on an axis-aligned grid",
            "no geometry")
    affine = np.diag([*spacing, 1.0])
    note = (f"no geometry in the header of {name}: voxel size {spacing[0]:g} x {spacing[1]:g} x "
            f"{spacing[2]:g} mm as stated by the user, slices in instance/frame order, slice spacing not "
            "checked; orientation and origin are unknown (axis-aligned grid at 0: left/right and other "
            "anatomical directions are not known)")
    return _Stack(order, affine, [note], None)


def _in_plane_axes(frames: list[_Frame], name: str):
    """Row and column directions, slice normal and pixel spacing shared by the frames.

    Parameters
    ----------
    frames : list of _Frame
        Frames of one orientation (:func:`_check_orientations`).
    name : str
        The series as named in messages.

    Returns
    -------
    row, col, normal : ndarray, shape (3,)
        Unit vectors, LPS.
    pixel_spacing : ndarray, shape (2,)
        The frames' mean PixelSpacing (between rows, between columns), mm.

    Raises
    ------
    GeometryError
        A direction not of unit length, sheared pixels, a non-positive or mixed pixel spacing.
    """
    iop = np.mean([f.iop for f in frames], axis=0)
    row, col = iop[:3], iop[3:]
    for label, vec in (("row", row), ("column", col)):
        if abs(np.linalg.norm(vec) - 1.0) > 1e-2:
            raise GeometryError(f"{name} has an invalid ImageOrientationPatient ({label} direction of length "
                                f"{np.linalg.norm(vec):.3f}, not 1)", "invalid orientation")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    cos = float(row @ col)
    if abs(cos) > SHEAR_COS_TOLERANCE:
        raise GeometryError(f"{name} has row and column directions at {np.degrees(np.arccos(cos)):.2f} deg, "
                            "not 90 (sheared pixels)", "sheared pixels")
    spacings = np.array([f.pixel_spacing for f in frames])
    if np.any(spacings <= 0):
        raise GeometryError(f"{name} has a non-positive PixelSpacing", "invalid pixel spacing")
    if np.ptp(spacings, axis=0).max() > 1e-4 * spacings.max():
        values = sorted({tuple(np.round(s, 5)) for s in spacings})
        raise GeometryError(f"{name} mixes pixel spacings {values} mm: not one volume", "mixed pixel spacing")
    pixel_spacing = spacings.mean(axis=0)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    return row, col, normal, pixel_spacing


def _sort_along_normal(frames: list[_Frame], order: list[int], normal: np.ndarray, name: str):
    """The frames sorted by their position along the slice normal; repeated positions refused.

    Parameters
    ----------
    frames : list of _Frame
    order : list of int
        Frame indices in instance/frame order (kept among equal positions: the sort is stable).
    normal : ndarray, shape (3,)
        Unit slice normal, LPS.
    name : str
        The series as named in messages.

    Returns
    -------
    order : list of int
        Frame indices along the normal.
    ipp : ndarray, shape (n, 3)
        ImagePositionPatient of each frame in that order, LPS mm.
    d : ndarray, shape (n,)
        Their positions along the normal, mm (increasing).

    Raises
    ------
    GeometryError
        Two frames at the same position (:func:`_refuse_repeats`).
    """
    ipp = np.array([frames[i].ipp for i in order])
    d = ipp @ normal
    along = np.argsort(d, kind="stable")
    order = [order[i] for i in along]
    ipp, d = ipp[along], d[along]
    steps = np.diff(d)
    if np.any(steps < SAME_POSITION_MM):
        _refuse_repeats(frames, order, steps, name)
    return order, ipp, d


@dataclass
class _Drift:
    """How the slices slide in-plane as they step along the normal (:func:`_slice_drift`).

    Attributes
    ----------
    drift : ndarray, shape (n,)
        In-plane distance of each slice from the line through the first along the normal, mm.
    slide : ndarray, shape (3,)
        Least-squares in-plane shift per mm along the normal.
    tilt_deg : float
        The tilt that slide makes.
    tilted : bool
        Some slice drifts more than the tolerance.
    shifted : bool
        The drift is not a constant slide (slices shifted, not tilted).
    note : str
        "" or the clause spacing refusals add.
    """

    drift: np.ndarray
    slide: np.ndarray
    tilt_deg: float
    tilted: bool
    shifted: bool
    note: str


def _slice_drift(ipp: np.ndarray, d: np.ndarray, normal: np.ndarray, pixel_spacing: np.ndarray) -> _Drift:
    """Gantry tilt or in-plane shifts of sorted slices.

    A constant slide per mm of depth is a tilt (angle from its least-squares slope); anything else
    is a stack whose slices are shifted in-plane. Either counts beyond ``TILT_TOLERANCE_PIXELS``
    of the finest pixel spacing.

    Parameters
    ----------
    ipp : ndarray, shape (n, 3)
        Slice positions along the normal (:func:`_sort_along_normal`), LPS mm.
    d : ndarray, shape (n,)
        Their positions along the normal, mm.
    normal : ndarray, shape (3,)
    pixel_spacing : ndarray, shape (2,)
        mm.

    Returns
    -------
    _Drift
    """
    rel = ipp - ipp[0]
    depth = d - d[0]
    inplane = rel - np.outer(depth, normal)
    drift = np.linalg.norm(inplane, axis=1)
    tolerance = TILT_TOLERANCE_PIXELS * pixel_spacing.min()
    tilted = drift.max() > tolerance
    slide = (depth @ inplane) / (depth @ depth)  # in-plane mm per mm along the normal
    tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(slide))))
    shifted = np.linalg.norm(inplane - np.outer(depth, slide), axis=1).max() > tolerance
    tilt_note = ""
    if tilted:
        tilt_note = (f"; the slices are also shifted in-plane by up to {drift.max():.2f} mm" if shifted
                     else f"; the slices are also tilted {tilt_deg:.1f} deg (gantry tilt)")
    return _Drift(drift, slide, tilt_deg, bool(tilted), bool(shifted), tilt_note)


def _check_even_steps(frames: list[_Frame], order: list[int], d: np.ndarray, name: str, tilt_note: str) -> float:
    """The slice step after refusing gaps and uneven spacing.

    Parameters
    ----------
    frames : list of _Frame
    order : list of int
        Frame indices along the normal.
    d : ndarray, shape (n,)
        Their positions along the normal, mm (increasing).
    name : str
        The series as named in messages.
    tilt_note : str
        Added to a refusal when the slices are also tilted or shifted (:class:`_Drift`).

    Returns
    -------
    float
        The mean step between slices, mm.

    Raises
    ------
    GeometryError
        A step off the median by more than the tolerance (a gap of whole slices is named), or a
        slice off the even grid.
    """
    n = len(order)
    steps = np.diff(d)
    median = float(np.median(steps))
    tol = max(STEP_TOLERANCE_MM, STEP_TOLERANCE_REL * median)
    uneven = np.abs(steps - median) > tol
    if np.any(uneven):
        k = int(np.argmax(np.abs(steps - median)))
        a, b = frames[order[k]], frames[order[k + 1]]
        ratio = steps[k] / median
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
            missing = round(ratio) - 1
            what = f"a gap (about {missing} slice{'s' if missing != 1 else ''} missing)"
        else:
            what = "uneven slice spacing"
        count = f" ({int(uneven.sum())} uneven steps; the largest shown)" if uneven.sum() > 1 else ""
        raise GeometryError(
            f"{name} has {what}{count}: {a.label} and {b.label} are {steps[k]:.3f} mm apart where the "
            f"other slices are {median:.3f} mm apart (ImagePositionPatient {_fmt(a.ipp)} and {_fmt(b.ipp)} mm, "
            f"LPS){tilt_note}; refusing to stack unevenly spaced slices as one volume",
            "missing slices" if "gap" in what else "uneven spacing")
    step = float((d[-1] - d[0]) / (n - 1))
    residual = np.abs(d - (d[0] + step * np.arange(n)))
    if residual.max() > max(STEP_TOLERANCE_MM, 0.05 * step):
        k = int(np.argmax(residual))
        raise GeometryError(
            f"{name} has uneven slice spacing: {frames[order[k]].label} lies {residual[k]:.3f} mm off an even "
            f"grid of {step:.3f} mm steps{tilt_note}; refusing to stack unevenly spaced slices as one volume",
            "uneven spacing")
    return step


def _refuse_tilt(frames: list[_Frame], order: list[int], drift: _Drift, step: float, name: str) -> None:
    """Refuse tilted slices (gantry tilt) or slices shifted in-plane.

    Parameters
    ----------
    frames : list of _Frame
    order : list of int
        Frame indices along the normal.
    drift : _Drift
        From :func:`_slice_drift`, with ``tilted`` set.
    step : float
        Slice step, mm.
    name : str
        The series as named in messages.

    Raises
    ------
    GeometryError
        Always.
    """
    tag = frames[order[0]].file.ds.get("GantryDetectorTilt")
    stated = f", GantryDetectorTilt {float(tag):g} deg" if _float(tag, 0.0) != 0.0 else ""
    if drift.shifted:
        k = int(np.argmax(drift.drift))
        raise GeometryError(
            f"{name} has slices shifted in-plane: {frames[order[k]].label} is {drift.drift[k]:.2f} mm off the line "
            "through the first slice along the slice normal (not a constant tilt), so the images do not stack "
            "into one orthogonal volume", "slices shifted in-plane")
    raise GeometryError(
        f"{name} has gantry tilt: the slices are tilted {drift.tilt_deg:.1f} deg (each slice shifted "
        f"{np.linalg.norm(drift.slide) * step:.3f} mm in-plane per {step:.3f} mm step{stated}), so they are not "
        "perpendicular to the in-plane axes; stacking them as orthogonal would distort every measurement "
        "- resample to an orthogonal grid first (e.g. dcm2niix corrects gantry tilt)",
        f"gantry tilt {drift.tilt_deg:.1f} deg")


def _check_orientations(frames: list[_Frame], name: str) -> None:
    clusters: list[list] = []  # [representative iop, count]
    for f in frames:
        for c in clusters:
            if np.abs(c[0] - f.iop).max() <= ORIENTATION_TOLERANCE:
                c[1] += 1
                break
        else:
            clusters.append([f.iop, 1])
    if len(clusters) == 1:
        return
    desc = " and ".join(
        f"{count} {_plane(iop)} slice{'s' if count != 1 else ''} (IOP {_fmt(iop, 3)})" for iop, count in clusters
    )
    raise GeometryError(
        f"{name} mixes {len(clusters)} slice orientations: {desc} - e.g. a localizer or several stacks under "
        "one SeriesInstanceUID; export each stack as its own series", f"{len(clusters)} orientations")


def _plane(iop: np.ndarray) -> str:
    normal = np.cross(iop[:3], iop[3:])
    axis = int(np.argmax(np.abs(normal)))
    return "near-" + ("sagittal", "coronal", "axial")[axis]


def _refuse_repeats(frames, order, steps, name) -> None:
    groups, current = [], [order[0]]
    for i, s in enumerate(steps):
        if s < SAME_POSITION_MM:
            current.append(order[i + 1])
        else:
            groups.append(current)
            current = [order[i + 1]]
    groups.append(current)
    largest = max(groups, key=len)
    differ = []
    for tag in REPEAT_TAGS:
        values = {str(_frame_value(frames[i], tag)) for i in largest}
        if len(values) > 1:
            differ.append(tag)
    why = f"; they differ in {', '.join(differ)}" if differ else ""
    raise GeometryError(
        f"{name} is not one volume: its {len(frames)} images lie at only {len(groups)} distinct slice "
        f"position{'s' if len(groups) != 1 else ''} (up to {len(largest)} images at the same position{why}) - "
        "a multi-echo, multi-phase, time-series or repeated stack in one series; export the echo or phase "
        "you want as its own series", "repeated positions")


def _fmt(values, digits: int = 2) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in np.asarray(values, dtype=float)) + ")"


# pixels -----------------------------------------------------------------------------------
def _pixels(frames: list[_Frame], order: list[int], notes: list[str]) -> np.ndarray:
    """Stack the frames in ``order`` as (columns, rows, slices) with the rescale applied.

    Built as (slices, rows, columns), where filling and rescaling run over contiguous planes,
    and returned as its transposed view; :class:`pipeline.io.scan.Scan` makes it contiguous.
    """
    planes: list[np.ndarray | None] = [None] * len(order)
    slopes = np.array([frames[i].slope for i in order], dtype=np.float64)
    intercepts = np.array([frames[i].intercept for i in order], dtype=np.float64)
    position = {idx: k for k, idx in enumerate(order)}
    by_file: dict[Path, list[int]] = {}
    for idx in order:
        by_file.setdefault(frames[idx].file.path, []).append(idx)
    for path, idxs in by_file.items():
        pixels, rescaled = _file_pixels(frames[idxs[0]].file, notes)
        if rescaled:
            # SimpleITK/GDCM already applied the file's rescale; it applies one pair per file.
            pairs = {(frames[i].slope, frames[i].intercept) for i in idxs}
            if len(pairs) > 1:
                raise InputError(f"cannot decode {path.name} with per-frame rescaling (install pylibjpeg "
                                 "or gdcm for pydicom)")
            for i in idxs:
                slopes[position[i]], intercepts[position[i]] = 1.0, 0.0
        for i in idxs:
            f = frames[i]
            plane = pixels if f.index is None else (pixels[f.index] if pixels.ndim == 3 else None)
            if plane is None or plane.shape != (f.rows, f.cols):
                got = None if plane is None else plane.shape
                raise InputError(f"pixel data of {path.name} ({f.label}) has shape {got}, header says "
                                 f"{f.rows}x{f.cols}: damaged file")
            planes[position[i]] = plane
    raw = np.stack(planes)
    if not raw.dtype.isnative:  # big-endian files: keep the values, use the machine's byte order
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        out = raw
    elif np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)) and raw.dtype.kind in "iu":
        out = raw.astype(np.int32) + intercepts.astype(np.int32)[:, None, None]
    else:
        # float64 arithmetic per plane, float32 storage: exact enough for any 16-bit scanner value.
        out = np.empty(raw.shape, dtype=np.float32)
        for k in range(raw.shape[0]):
            out[k] = raw[k] * slopes[k] + intercepts[k]
    return out.transpose(2, 1, 0)


def _file_pixels(file: _File, notes: list[str]) -> tuple[np.ndarray, bool]:
    """The pixel array of one file: (frames, rows, cols) or (rows, cols); True if already rescaled.

    Only the pixel element is read again (the header is already parsed; re-parsing the
    functional groups of a large Enhanced file costs more than its pixels). pydicom decodes what
    its installed plugins can; compressed syntaxes it cannot decode (e.g. JPEG lossless or
    JPEG-LS without pylibjpeg) fall back to SimpleITK's GDCM, which applies the rescale itself.
    """
    import pydicom
    from pydicom.dataset import Dataset

    pixel_tags = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pix = pydicom.dcmread(str(file.path), specific_tags=list(pixel_tags), force=True)
        except Exception as exc:
            raise InputError(f"cannot read {file.path.name}: {one_line(exc) or type(exc).__name__}") from None
        present = [tag for tag in pixel_tags if tag in pix]
        if not present:
            raise InputError(f"{file.path.name} has no pixel data (truncated or not an image)")
        ds = Dataset(file.ds)
        if hasattr(file.ds, "file_meta"):
            ds.file_meta = file.ds.file_meta
        ds[present[0]] = pix[present[0]]
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        compressed = _is_compressed(syntax)
        if compressed is False:
            _check_pixel_length(ds, present[0], file.path.name)
        try:
            return np.asarray(ds.pixel_array), False
        except Exception as exc:
            first_error = exc
    if not compressed:
        raise InputError(f"cannot read pixel data of {file.path.name} (truncated or damaged?): "
                         f"{one_line(first_error, 100) or type(first_error).__name__}")
    import SimpleITK as sitk

    with capture_native_stderr():
        try:
            img = sitk.ReadImage(str(file.path))
        except RuntimeError as exc:
            raise InputError(f"cannot decode pixel data of {file.path.name} ({syntax.name}): pydicom: "
                             f"{one_line(first_error, 120)}; SimpleITK: {itk_reason(exc)}") from None
    arr = sitk.GetArrayFromImage(img)  # (frames, rows, cols)
    if _n_frames(ds) == 1 and "PerFrameFunctionalGroupsSequence" not in ds and arr.ndim == 3 and len(arr) == 1:
        arr = arr[0]  # any other shape is refused by the caller's check against Rows x Columns
    note = f"pixel data in {syntax.name} decoded by SimpleITK (GDCM): pydicom has no decoder installed for it"
    if note not in notes:
        notes.append(note)
    return arr, True


def _is_compressed(syntax) -> bool | None:
    """True/False for a known transfer syntax, None when absent or unknown."""
    try:
        return None if syntax is None else bool(syntax.is_compressed)
    except Exception:  # pydicom raises for a UID that is no transfer syntax
        return None


def _check_pixel_length(ds, tag: str, name: str) -> None:
    """Refuse uncompressed pixel data whose length is not what Rows x Columns x frames x bits need.

    pydicom refuses too little data but decodes too much with a warning, which turns a wrong
    Rows or BitsAllocated into a silently wrong image; only the one padding byte the standard
    adds to odd lengths is accepted.
    """
    value = ds[tag].value
    if not isinstance(value, (bytes, bytearray)):
        return
    rows, cols, frames = _int(ds, "Rows", 0), _int(ds, "Columns", 0), _n_frames(ds)
    samples, bits = _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated", 0)
    needed = (rows * cols * frames * samples * bits + 7) // 8
    if len(value) not in (needed, needed + needed % 2):
        what = f"Rows {rows} x Columns {cols}" + (f" x {frames} frames" if frames > 1 else "") + f" x {bits} bits"
        raise InputError(f"cannot read pixel data of {name}: {len(value)} bytes where {what} need {needed} "
                         "(truncated or damaged file, or a wrong header)")


# meta -------------------------------------------------------------------------------------
def _meta(path: Path, files: list[_File], frames: list[_Frame], stack: _Stack, notes: list[str]) -> dict:
    """Series facts for ``meta``: an explicit whitelist, so no identifying field can slip in."""
    ds = files[0].ds
    enhanced = any(
        str(f.ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES or "PerFrameFunctionalGroupsSequence" in f.ds
        for f in files
    )
    meta = {
        "format": "dicom-enhanced" if enhanced else "dicom",
        "path": str(path),
        "warnings": list(notes),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "series_description": _clean(ds.get("SeriesDescription", ""), 200),
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "modality": str(ds.get("Modality", "") or ""),
        "n_files": len(files),
        "n_slices": len(stack.order),
        # The files actually read, so that callers can fingerprint exactly this series.
        "files": sorted(str(f.path) for f in files),
        # Which image each slice of the array is, in the file's own slice order (the third array
        # axis, Scan.source_ornt maps it to the canonical grid): DICOM SEG frames are tied to these.
        # UIDs identify instances, not people; no output copies these keys (whitelists).
        "slice_sop_uids": [str(frames[i].file.ds.get("SOPInstanceUID", "") or "") for i in stack.order],
        "slice_frame_numbers": [None if frames[i].index is None else frames[i].index + 1 for i in stack.order],
    }
    patient = _clean(ds.get("PatientID", ""), 200)
    if patient:
        # a one-way key, in memory only: onfh compare refuses visits of two patients; no output
        # copies it (outputs take meta keys from whitelists)
        meta["patient_key"] = hashlib.sha256(f"onfh patient|{patient}".encode()).hexdigest()
    thickness = frames[stack.order[0]].thickness
    if thickness is not None:
        meta["slice_thickness_mm"] = float(thickness)
        if stack.step_mm is not None and stack.step_mm - thickness > STEP_TOLERANCE_MM:
            # Not a warning: gaps are routine in 2D MR; volumes interpolate across them.
            meta["slice_gap_mm"] = round(float(stack.step_mm - thickness), 4)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        meta["warnings"].append("MONOCHROME1: viewers show these values inverted; the stored values are kept")
    for key, tag in (("manufacturer", "Manufacturer"), ("model", "ManufacturerModelName")):
        value = _clean(ds.get(tag, ""))
        if value:
            meta[key] = value
    return meta


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
