"""Masks of one hip from what the user gave: label maps, head/lesion masks, a femur mask.

The label vocabulary (which value is the head, which the lesion) is ``settings.labels``; every
label map is read through :func:`masks_from_labels`, the one place that checks it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.frame import isolate_head, select_side
from pipeline.io.dicom_seg import is_dicom_seg, read_dicom_seg
from pipeline.io.scan import Scan, load_labels
from pipeline.io.slicer import is_slicer_segmentation, read_slicer_segmentation
from pipeline.masks.segments import label_map_from_segments, pick_segments
from pipeline.masks.totalseg import FemurMap, read_femur_mask

#: What :func:`mask_source` returns: a label map; a head and a lesion mask; a femur mask with a
#: lesion mask; a femur mask alone (automatic lesion inside its head); nothing (automatic).
MASK_SOURCES = ("labels", "masks", "femur", "femur+auto", "automatic")

ALLOWED_SOURCES = ("give --labels, --head-mask with --lesion-mask, or --femur-mask (with or without --lesion-mask), "
                   "or no mask at all for automatic segmentation")


def mask_source(labels=None, head_mask=None, lesion_mask=None, femur_mask=None) -> str:
    """Which source of the head and lesion masks the inputs given make, refusing any other mix.

    The one rule for ``onfh analyze``, :func:`import_masks`, batch rows and comparisons: a label
    map alone; a head mask with a lesion mask; a femur mask, with a lesion mask ("femur") or
    without ("femur+auto": the lesion is segmented automatically inside the isolated head); or
    nothing ("automatic"). Falsy arguments count as not given.

    Returns
    -------
    str
        One of :data:`MASK_SOURCES`.

    Raises
    ------
    InputError
        Two sources of the head, a label map with masks, a head mask without a lesion mask, a
        lesion mask without a head.
    """
    if femur_mask and (labels or head_mask):
        raise InputError("--femur-mask replaces --labels/--head-mask: give one source of the head")
    if labels and (head_mask or lesion_mask):
        raise InputError("give either --labels or --head-mask/--lesion-mask, not both")
    if head_mask and not lesion_mask:
        raise InputError("--head-mask needs --lesion-mask")
    if labels:
        return "labels"
    if femur_mask:
        return "femur" if lesion_mask else "femur+auto"
    if head_mask:
        return "masks"
    if lesion_mask:
        raise InputError(ALLOWED_SOURCES)
    return "automatic"


# I/O edge ---------------------------------------------------------------------------------
def import_masks(
    scan: Scan,
    settings: Settings,
    side: str,
    labels: str | Path | None = None,
    head_mask: str | Path | None = None,
    lesion_mask: str | Path | None = None,
    femur_mask: str | Path | None = None,
    lesion_label_explicit: bool = False,
    head_segment: str | None = None,
    lesion_segment: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """Head and lesion masks of one hip on ``scan``'s grid, from what the user gave.

    Sources: a label map (``labels``), or a 3D Slicer segmentation given as ``labels`` whose
    head and lesion segments are picked by name or code (``head_segment``, ``lesion_segment``:
    :func:`pipeline.masks.segments.pick_segments`); a head and a lesion mask; or a proximal-femur
    mask from which the head is isolated (docs/method.md section 2) with a lesion mask. A mask
    covering both hips is cut to the requested ``side`` (the patient's right hip has the greater
    RAS x).
    """
    source = mask_source(labels, head_mask, lesion_mask, femur_mask)
    if source == "automatic":  # the caller segments automatically (pipeline.app.analyze.segment_masks)
        raise InputError(ALLOWED_SOURCES)
    tol = settings.labels.grid_tolerance_mm
    warnings: list[str] = []
    named = head_segment is not None or lesion_segment is not None
    if source == "labels" and is_slicer_segmentation(labels):
        return _masks_from_slicer(labels, scan, side, settings, head_segment, lesion_segment)
    if source == "labels" and is_dicom_seg(labels):
        return _masks_from_dicom_seg(labels, scan, side, settings, head_segment, lesion_segment)
    if named:
        raise InputError("--head-segment and --lesion-segment pick segments of a 3D Slicer segmentation "
                         "(--labels FILE.seg.nrrd) or a DICOM SEG")
    if source == "labels":
        label_map = load_labels(labels, scan, tol)
        head, lesion, warnings = masks_from_label_map(label_map, scan, side, settings, lesion_label_explicit,
                                                      name=f"label map {Path(labels).name}")
        seg = {"method": "imported label map",
               "parameters": {"labels": str(labels), "head_label": settings.labels.head,
                              "lesion_label": settings.labels.lesion}}
        return head, lesion, seg, warnings
    if source in ("femur", "femur+auto"):
        # a binary femur mask, or the femur_<side> of a TotalSegmentator label map (already read
        # by the caller when it wants that map's hip bone too: pipeline.app.analyze.run_analyze)
        femur_map = (femur_mask if isinstance(femur_mask, FemurMap)
                     else read_femur_mask(femur_mask, scan, side, tol))
        warnings += femur_map.warnings
        femur = select_side(femur_map.femur, scan.affine, side)
        head, info = isolate_head(femur, scan.affine, method=settings.head.method)
        warnings += info.pop("warnings", [])
        # without a lesion mask the caller segments the lesion automatically inside this head
        lesion = (read_mask(lesion_mask, scan, tol, allow_empty=True) if lesion_mask is not None
                  else np.zeros_like(head))
        seg = {"method": (f"head isolated from {femur_map.record['femur']['name']} of a label map"
                          if femur_map.record else "head isolated from a femur mask")
                         + f" ({settings.head.method})",
               "parameters": {"femur_mask": femur_map.path,
                              "lesion_mask": str(lesion_mask) if lesion_mask is not None else None},
               "head_isolation": info}
        if femur_map.record:
            seg["femur_map"] = femur_map.record
    else:  # "masks"
        head = read_mask(head_mask, scan, tol)
        lesion = read_mask(lesion_mask, scan, tol, allow_empty=True)
        seg = {"method": "imported masks",
               "parameters": {"head_mask": str(head_mask), "lesion_mask": str(lesion_mask)}}
    head, lesion = _one_hip(head, lesion, scan, side, warnings)
    return head, lesion, seg, warnings


def _masks_from_slicer(path, scan: Scan, side: str, settings: Settings, head_segment: str | None,
                       lesion_segment: str | None) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """Head and lesion of one hip from a 3D Slicer segmentation (:func:`_masks_from_segments`)."""
    segments = read_slicer_segmentation(path, scan, settings.labels.grid_tolerance_mm)
    return _masks_from_segments(segments, path, "3D Slicer segmentation", scan, side, settings, head_segment,
                                lesion_segment)


def _masks_from_dicom_seg(path, scan: Scan, side: str, settings: Settings, head_segment: str | None,
                          lesion_segment: str | None) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """Head and lesion of one hip from a DICOM SEG (:func:`pipeline.io.dicom_seg.read_dicom_seg`)."""
    segments = read_dicom_seg(path, scan, settings.labels.grid_tolerance_mm)
    return _masks_from_segments(segments, path, "DICOM SEG", scan, side, settings, head_segment, lesion_segment)


def _masks_from_segments(segments, path, kind: str, scan: Scan, side: str, settings: Settings,
                         head_segment: str | None, lesion_segment: str | None):
    """Head and lesion of one hip from a multi-segment file (``kind``): the two picked segments
    become the usual label map (:func:`pipeline.masks.segments.label_map_from_segments`), read by
    :func:`masks_from_label_map` like any other."""
    h, les = pick_segments(segments, head_segment, lesion_segment)
    head_seg, lesion_seg = segments[h], segments[les]
    head_mask, lesion_mask = head_seg.get_mask(), lesion_seg.get_mask()
    if not (head_mask.any() or lesion_mask.any()):
        raise InputError(f'head segment "{head_seg.name}" of {Path(path).name} is empty')
    label_map = label_map_from_segments(head_mask, lesion_mask, settings)
    head, lesion, warnings = masks_from_label_map(label_map, scan, side, settings, name=f"{kind} {Path(path).name}")
    if not lesion_mask.any():  # the label-map warning names a label value the user never saw
        warnings = [w for w in warnings if not w.startswith("lesion label ")]
        warnings.append(f'lesion segment "{lesion_seg.name}" is empty: measured as a lesion-free head')
    seg = {"method": f"imported {kind}",
           "parameters": {"labels": str(path), "head_segment": head_seg.record(),
                          "lesion_segment": lesion_seg.record(),
                          "segments": [s.name for s in segments]}}
    return head, lesion, seg, warnings


def masks_from_label_map(
    label_map: np.ndarray, scan: Scan, side: str, settings: Settings, lesion_required: bool = False,
    name: str = "the label map",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Head and lesion masks of one hip from a label map already on ``scan``'s canonical grid.

    What ``onfh analyze --labels`` does after reading the file, and what the napari widgets do
    with a Labels layer: head = ``settings.labels.head`` or lesion (the lesion counts as part of
    the head), lesion = ``settings.labels.lesion``, other labels ignored with a warning, and a map
    covering both hips cut to ``side`` (the patient's right hip has the greater RAS x).

    Parameters
    ----------
    label_map : ndarray of int on ``scan``'s grid
    scan : Scan
    side : {"left", "right"}
    settings : Settings
    lesion_required : bool
        The lesion label was named explicitly: its absence is an error (else a lesion-free head).
    name : str
        How messages name the map.

    Returns
    -------
    head, lesion : ndarray of bool
    warnings : list of str

    Raises
    ------
    InputError
        A map that looks like an image (``settings.labels.max_distinct_values``), an absent head
        label (or required lesion label), an empty head.
    """
    head, lesion, warnings = masks_from_labels(
        label_map, settings.labels.head, settings.labels.lesion, lesion_required=lesion_required,
        max_distinct_values=settings.labels.max_distinct_values, name=name,
    )
    head, lesion = _one_hip(head, lesion, scan, side, warnings)
    return head, lesion, warnings


def _one_hip(head: np.ndarray, lesion: np.ndarray, scan: Scan, side: str, warnings: list[str]):
    """Refuse an empty head; cut masks covering both hips to ``side`` (noted in ``warnings``)."""
    if not head.any():
        raise InputError("the femoral-head mask is empty")
    hip = select_side(head | lesion, scan.affine, side)
    if not hip.all() and (hip != (head | lesion)).any():
        warnings.append(f"masks cover both hips: the {side} hip (by RAS x) was kept")
    return head & hip, lesion & hip


def read_mask(path, scan: Scan, tol: float, allow_empty: bool = False) -> np.ndarray:
    """A mask file as bool on ``scan``'s grid; empty is an error unless allowed (a healthy head's
    lesion mask is legitimately empty)."""
    mask = load_labels(path, scan, tol) != 0
    if not allow_empty and not mask.any():
        raise InputError(f"mask {Path(path).name} is empty")
    return mask


#: Label values listed by name in a message; more are counted instead (a warning stays one line).
MAX_LISTED_LABELS = 8


def masks_from_labels(
    labels: np.ndarray,
    head_label: int = 1,
    lesion_label: int = 2,
    lesion_required: bool = False,
    max_distinct_values: int | None = None,
    name: str = "the label map",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Head and lesion masks from a label map; the lesion counts as part of the head.

    Every label-map path (``onfh analyze --labels``, batch, compare, the napari widgets) comes
    through here, via :func:`pipeline.masks.labels.masks_from_label_map`, so a map that is an image
    is refused here once for all (see :func:`label_values`).

    Parameters
    ----------
    labels : ndarray of int (or of whole-valued floats, e.g. a float64 0/1 mask)
    head_label, lesion_label : int
    lesion_required : bool
        True when the user named the lesion label explicitly: its absence is then an error.
        Otherwise an absent lesion label means a lesion-free head (warned).
    max_distinct_values : int, optional
        More distinct non-zero values than this: refused as an image (``labels.max_distinct_values``).
    name : str
        How messages name the map (e.g. "label map hip_labels.nii.gz").

    Raises
    ------
    InputError
        When the map looks like an image, or the head label (or a required lesion label) is
        absent; the message names the labels that are present (a few of them).
    """
    labels, present_list = label_values(labels, head_label, lesion_label, max_distinct_values, name)
    present = set(present_list)
    warnings: list[str] = []
    lesion = labels == lesion_label
    head = (labels == head_label) | lesion
    if head_label not in present:
        raise InputError(f"head label {head_label} is absent from {name} (labels present: {_listing(present_list)})")
    if lesion_label not in present:
        if lesion_required:
            raise InputError(
                f"lesion label {lesion_label} is absent from {name} (labels present: {_listing(present_list)})"
            )
        warnings.append(f"lesion label {lesion_label} absent from the label map: measured as a lesion-free head")
    others = sorted(present - {head_label, lesion_label})
    if len(others) > MAX_LISTED_LABELS:
        share = 100.0 * (np.count_nonzero(labels) - np.count_nonzero(head)) / labels.size
        warnings.append(f"ignored {len(others):,} other label values ({_share(share)} % of voxels): "
                        f"neither head label {head_label} nor lesion label {lesion_label}")
    elif others:
        warnings.append(f"label map values {others} are neither head nor lesion and were ignored")
    return head, lesion, warnings


def label_values(
    labels: np.ndarray, head_label: int = 1, lesion_label: int = 2, max_distinct_values: int | None = None,
    name: str = "the label map",
) -> tuple[np.ndarray, list[int]]:
    """A label map as integers and its non-zero values, refusing what looks like an image.

    A segmentation holds a handful of classes; an image holds hundreds of grey values. Refused:
    float values that are not whole numbers, and more than ``max_distinct_values`` distinct
    non-zero values. Whole-valued floats (TotalSegmentator writes binary masks as float64 0/1)
    and booleans are label maps.

    Returns
    -------
    labels : ndarray of int
    present : list of int
        The non-zero values, ascending.

    Raises
    ------
    InputError
        One line naming how many distinct values the map has and which labels were expected.
    """
    labels = np.asarray(labels)
    expected = f"expected head label {head_label} and lesion label {lesion_label}"
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    elif not np.issubdtype(labels.dtype, np.integer):
        finite = np.isfinite(labels)
        if not finite.all() or not np.array_equal(labels, np.round(labels)):
            n = int(np.count_nonzero(np.unique(labels[finite])))
            raise InputError(f"{name} has {n:,} distinct non-zero values (non-integer): an image, not a label "
                             f"map? {expected}")
        labels = labels.astype(np.int64)
    present = present_labels(labels)
    if max_distinct_values is not None and len(present) > max_distinct_values:
        raise InputError(f"{name} has {len(present):,} distinct non-zero values (labels.max_distinct_values: "
                         f"{max_distinct_values}): an image, or a multi-class map? {expected}")
    return labels, present


def _listing(values: list[int]) -> str:
    """A few values in full, many counted: a message stays one short line."""
    if len(values) <= MAX_LISTED_LABELS:
        return str(values)
    return ", ".join(str(v) for v in values[:MAX_LISTED_LABELS - 2]) + f", ... ({len(values):,} values)"


def _share(pct: float) -> str:
    return "< 0.1" if 0 < pct < 0.1 else f"{pct:.1f}"


def present_labels(labels: np.ndarray) -> list[int]:
    """Non-zero values of an integer label map, ascending (bincount: far faster than np.unique)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 1 << 16:
        counts = np.bincount(labels.ravel(), minlength=hi + 1)
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    return [int(v) for v in np.unique(labels) if v != 0]
