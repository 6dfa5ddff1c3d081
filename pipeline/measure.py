"""Volumes, necrotic fraction and size class (METHOD.md section 3), and the sanity gates of
section 6 that concern them.

Plain functions over boolean masks and a 4x4 affine (voxel index -> RAS mm).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


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
    labels: np.ndarray, head_label: int = 1, lesion_label: int = 2, lesion_required: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Head and lesion masks from a label map; the lesion counts as part of the head.

    Parameters
    ----------
    labels : ndarray of int
    head_label, lesion_label : int
    lesion_required : bool
        True when the user named the lesion label explicitly: its absence is then an error.
        Otherwise an absent lesion label means a lesion-free head (warned).

    Raises
    ------
    InputError
        When the head label (or a required lesion label) is absent; the message lists the labels
        that are present.
    """
    present_list = present_labels(labels)
    present = set(present_list)
    warnings: list[str] = []
    lesion = labels == lesion_label
    head = (labels == head_label) | lesion
    if head_label not in present:
        raise InputError(f"head label {head_label} is absent from the label map (labels present: {present_list})")
    if lesion_label not in present:
        if lesion_required:
            raise InputError(
                f"lesion label {lesion_label} is absent from the label map (labels present: {present_list})"
            )
        warnings.append(f"lesion label {lesion_label} absent from the label map: measured as a lesion-free head")
    others = sorted(set(present_list) - {head_label, lesion_label})
    if others:
        warnings.append(f"label map values {others} are neither head nor lesion and were ignored")
    return head, lesion, warnings


def present_labels(labels: np.ndarray) -> list[int]:
    """Non-zero values of an integer label map, ascending (bincount: far faster than np.unique)."""
    labels = np.asarray(labels)
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 1 << 16:
        counts = np.bincount(labels.ravel(), minlength=hi + 1)
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    return [int(v) for v in np.unique(labels) if v != 0]


def clip_lesion_to_head(head: np.ndarray, lesion: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Lesion voxels outside the head are warned about and not counted (METHOD.md section 6)."""
    outside = lesion & ~head
    if not outside.any():
        return lesion, []
    ml = voxel_volume_ml(outside, affine)
    n = int(np.count_nonzero(outside))
    return lesion & head, [f"{n} lesion voxels ({ml:.3f} mL) lie outside the head and were not counted"]


def volume_gates(head_ml: float, slice_thickness_mm: float, gates) -> list[str]:
    """Warnings of METHOD.md section 6 about the head volume and the slice thickness."""
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
