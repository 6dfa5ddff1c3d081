"""Volumes, necrotic fraction and size class (docs/method.md section 3), and the sanity gates of
section 6 that concern them, with the plausibility checks of the masks themselves: a label map
that is an image, a head that is no femoral head, an implausible necrotic fraction.

Plain functions over boolean masks and a 4x4 affine (voxel index -> RAS mm).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .frame import head_frame_from_mask

#: Label values listed by name in a message; more are counted instead (a warning stays one line).
MAX_LISTED_LABELS = 8


def voxel_volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Reference volume: voxel count x voxel volume, mL.

    Equals 3D Slicer's labelmap volume, ITK-SNAP's label table and pyradiomics' VoxelVolume for
    the same mask. The voxel volume is |det| of the affine's 3x3 part, so oblique grids are exact.
    """
    return int(np.count_nonzero(mask)) * abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def necrotic_fraction_pct(lesion_ml: float, head_ml: float) -> float | None:
    """NF = 100 x lesion volume / head volume, %; None when the head is empty."""
    if head_ml <= 0:
        return None
    return 100.0 * lesion_ml / head_ml


def size_class(nf_pct: float | None) -> str | None:
    """Steinberg / ARCO 1994 extent applied to volume: A if NF < 15, B if 15-30, C if NF > 30.

    An empty lesion has no extent class (None): calling a healthy head "A" would read as a
    small lesion.
    """
    if nf_pct is None or nf_pct <= 0:
        return None
    if nf_pct < 15:
        return "A"
    if nf_pct <= 30:
        return "B"
    return "C"


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
    through here, via :func:`pipeline.analyze.masks_from_label_map`, so a map that is an image
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


def clip_lesion_to_head(head: np.ndarray, lesion: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Lesion voxels outside the head are warned about and not counted (docs/method.md section 8)."""
    outside = lesion & ~head
    if not outside.any():
        return lesion, []
    ml = voxel_volume_ml(outside, affine)
    n = int(np.count_nonzero(outside))
    return lesion & head, [f"{n} lesion voxels ({ml:.3f} mL) lie outside the head and were not counted"]


def volume_gates(head_ml: float, slice_thickness_mm: float, gates) -> list[str]:
    """Warnings of docs/method.md section 8 about the head volume and the slice thickness."""
    warnings = []
    lo, hi = gates.head_volume_ml
    if not lo <= head_ml <= hi:
        warnings.append(f"head volume {head_ml:.1f} mL is outside the plausible {lo:g}-{hi:g} mL")
    if slice_thickness_mm > gates.max_slice_thickness_mm:
        warnings.append(
            f"slice thickness {slice_thickness_mm:.2f} mm exceeds {gates.max_slice_thickness_mm:g} mm: "
            "voxel volumes are coarse"
        )
    return warnings


def plausible_head_frame(head: np.ndarray, affine: np.ndarray, side: str, head_settings):
    """The head frame of a head mask (sphere fit, :func:`pipeline.frame.head_frame_from_mask`),
    refusing a head that is grossly unlike a femoral head.

    Refused (``head_settings``, config section ``head``):

    * a size outside ``plausible_radius_mm``, read twice: the radius of the ball of the head's
      volume (before fitting, so a speck or a whole-field blob is named for what it is) and the
      fitted sphere's radius;
    * a head volume outside ``sphere_volume_ratio`` times the fitted sphere's volume: a slab, a
      rod, a shell or a fragment is no ball, whatever its size.

    A doubtful fit (rough surface) is not refused here: its RMS residual is warned about by the
    caller (``head.max_sphere_rms_mm``).

    Returns
    -------
    frame : HeadFrame
    fit : SphereFit

    Raises
    ------
    InputError
        One line naming the figure and the plausible range.
    """
    lo, hi = head_settings.plausible_radius_mm
    volume_ml = voxel_volume_ml(head, affine)
    ball_radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    if not lo <= ball_radius <= hi:
        raise InputError(f"the head mask ({volume_ml:.2f} mL, a ball of radius {ball_radius:.1f} mm) is not a "
                         f"plausible femoral head: expected a radius of {lo:g}-{hi:g} mm")
    frame, fit = head_frame_from_mask(head, affine, side)
    if not lo <= fit.radius <= hi:
        raise InputError(f"the sphere fitted to the head mask has radius {fit.radius:.1f} mm: not a plausible "
                         f"femoral head (expected {lo:g}-{hi:g} mm)")
    ratio = volume_ml * 1000.0 / (4.0 / 3.0 * np.pi * fit.radius**3)
    low, high = head_settings.sphere_volume_ratio
    if not low <= ratio <= high:
        raise InputError(f"the head mask has {ratio:.2f} times the volume of its fitted sphere (radius "
                         f"{fit.radius:.1f} mm): not a plausible femoral head (expected {low:g}-{high:g})")
    return frame, fit


def necrotic_fraction_flags(nf_pct: float | None, gates) -> list[str]:
    """A review flag (also a warning) when NF exceeds ``gates.max_plausible_nf_pct``: the masks
    more likely swap or mislabel head and lesion than show such a lesion."""
    limit = gates.max_plausible_nf_pct
    if nf_pct is None or nf_pct <= limit:
        return []
    return [f"necrotic fraction {nf_pct:.1f} % exceeds the plausible {limit:g} %: check the head and lesion masks"]
