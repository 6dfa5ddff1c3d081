"""Volumes, necrotic fraction and size class (docs/method.md section 3), and the sanity gates of
section 6 that concern them, with the plausibility checks of the masks themselves: a label map
that is an image, a head that is no femoral head, an implausible necrotic fraction.

Plain functions over boolean masks and a 4x4 affine (voxel index -> RAS mm).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import InputError
from pipeline.geometry.affine import voxel_volume_mm3
from pipeline.geometry.frame import head_frame_from_mask


def voxel_volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Reference volume: voxel count x voxel volume, mL.

    Equals 3D Slicer's labelmap volume, ITK-SNAP's label table and pyradiomics' VoxelVolume for
    the same mask. The voxel volume is |det| of the affine's 3x3 part, so oblique grids are exact.
    """
    return int(np.count_nonzero(mask)) * voxel_volume_mm3(affine) / 1000.0


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
    """The head frame of a head mask (sphere fit, :func:`pipeline.geometry.frame.head_frame_from_mask`),
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
