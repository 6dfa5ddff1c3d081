"""One hip at one visit: masks in, every figure of docs/method.md out.

``measure_hip`` is pure (arrays + geometry -> figures); the CLI (:mod:`pipeline.app.analyze`), the
batch and the napari widget all call it, so they give the same numbers for the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.frame import HeadFrame
from pipeline.geometry.mesh import isotropic_reconstructions, mask_mesh, mesh_volume_mm3
from pipeline.geometry.side import confirm_side, read_side
from pipeline.io.scan import Scan
from pipeline.measures import volumes as measure
from pipeline.measures.location import location_metrics, weight_bearing_span, zone_map

SCHEMA_VERSION = "1.0"


SIDES = ("left", "right")


LOCATION_KEYS = (
    "jic_type", "jic_type_3d", "arco2021_type", "arc_coronal_deg", "arc_sagittal_deg", "cna_deg",
    "kerboul_grade", "koo_kim_index", "centroid_latitude_deg", "centroid_longitude_deg",
)


@dataclass
class Analysis:
    """Figures of one hip plus the arrays that the outputs are drawn from (canonical grid)."""

    scan: Scan
    head: np.ndarray
    lesion: np.ndarray
    metrics: dict
    zones: np.ndarray | None = None
    meshes: dict = field(default_factory=dict)
    frame: HeadFrame | None = None


def measure_hip(
    scan: Scan,
    head: np.ndarray,
    lesion: np.ndarray,
    side: str,
    settings: Settings,
    segmentation: dict | None = None,
    warnings: list[str] | None = None,
    acetabular_edge=None,
    acetabular_roof_medial=None,
    acetabulum: np.ndarray | None = None,
) -> Analysis:
    """Every figure of one hip: volumes, necrotic fraction, size class, head frame, location and
    angles (docs/method.md sections 1, 3, 4 and 8).

    Parameters
    ----------
    scan : Scan
        Supplies the geometry (canonical grid, affine in RAS mm).
    head, lesion : ndarray of bool on ``scan``'s grid
        The femoral head (lesion included) and the lesion.
    side : {"left", "right"}
    settings : Settings
    segmentation : dict
        How the masks were obtained (recorded as is).
    warnings : list of str
        Warnings gathered before measurement (loading, mask import).
    acetabular_edge, acetabular_roof_medial : sequence of 3 floats, optional
        User landmarks, RAS mm (docs/method.md section 4).
    acetabulum : ndarray of bool, optional
        Hip-bone/acetabulum mask on ``scan``'s grid, for the weight-bearing span.
    """
    if side not in SIDES:
        raise InputError(f"side must be left or right, not {side!r}")
    warnings = list(scan.meta.get("warnings", [])) + list(warnings or [])
    affine = scan.affine
    head = np.asarray(head, dtype=bool)
    lesion, clip_warnings = measure.clip_lesion_to_head(head, np.asarray(lesion, dtype=bool), affine)
    warnings += clip_warnings
    if not head.any():
        raise InputError("the femoral-head mask is empty")

    head_ml = measure.voxel_volume_ml(head, affine)
    lesion_ml = measure.voxel_volume_ml(lesion, affine)
    nf = measure.necrotic_fraction_pct(lesion_ml, head_ml)
    review_flags = measure.necrotic_fraction_flags(nf, settings.gates)
    head_mesh = mask_mesh(head, affine)
    lesion_mesh = mask_mesh(lesion, affine)
    slice_mm = scan.slice_thickness_mm
    warnings += measure.volume_gates(head_ml, slice_mm, settings.gates) + review_flags
    if not lesion.any():
        warnings.append("empty lesion: necrotic fraction 0, no size class, location and angles null")

    metrics = {
        "schema_version": SCHEMA_VERSION,
        "side": side,
        "input": _input_facts(scan),
        "head_volume_ml": head_ml,
        "head_mesh_volume_ml": mesh_volume_mm3(*head_mesh) / 1000.0,
        "head_center_ras_mm": None,
        "head_radius_mm": None,
        "sphere_fit_rms_mm": None,
        "lesion_volume_ml": lesion_ml,
        "lesion_mesh_volume_ml": mesh_volume_mm3(*lesion_mesh) / 1000.0,
        "necrotic_fraction_pct": nf,
        "size_class": measure.size_class(nf),
        "weight_bearing": None,
        "zones_ml": None,
        **{key: None for key in LOCATION_KEYS},
        "reconstruction": None,
        "segmentation": segmentation or {"method": "imported"},
        "review_flags": review_flags,
        "warnings": warnings,
    }
    analysis = Analysis(scan, head, lesion, metrics, meshes={"head": head_mesh, "lesion": lesion_mesh})
    _locate(analysis, settings, acetabular_edge, acetabular_roof_medial, acetabulum)
    if settings.reconstruction.isotropic:
        _reconstruct(analysis, settings)
    return analysis


def _locate(analysis: Analysis, settings: Settings, edge, roof_medial, acetabulum) -> None:
    """Head frame, weight-bearing span, zones, types and angles (docs/method.md sections 1 and 4)."""
    m = analysis.metrics
    affine = analysis.scan.affine
    frame, fit = measure.plausible_head_frame(analysis.head, affine, m["side"], settings.head)
    analysis.frame = frame
    _check_side(analysis, frame, settings, acetabulum)
    m["head_center_ras_mm"] = frame.center
    m["head_radius_mm"] = frame.radius
    m["sphere_fit_rms_mm"] = fit.rms_mm
    m["sphere_fit"] = fit.as_dict()
    if fit.rms_mm > settings.head.max_sphere_rms_mm:
        m["warnings"].append(
            f"sphere-fit RMS residual {fit.rms_mm:.2f} mm exceeds {settings.head.max_sphere_rms_mm:g} mm: "
            "the head is not spherical or the mask is rough; check the head frame"
        )
    span = weight_bearing_span(
        frame, edge, roof_medial, acetabulum, affine,
        default_edge_angle_deg=settings.location.default_edge_angle_deg,
    )
    m["warnings"] += span["details"].pop("warnings")
    m["weight_bearing"] = span
    location = location_metrics(analysis.head, analysis.lesion, affine, frame, span,
                                step_mm=settings.location.plane_step_mm,
                                contact_shell_mm=settings.location.contact_shell_mm)
    # The empty-lesion case is already stated once by measure_hip.
    m["warnings"] += [w for w in location.pop("warnings") if not w.startswith("empty lesion")]
    m.update(location)
    analysis.zones = zone_map(analysis.head, affine, frame, span)


def _check_side(analysis: Analysis, frame: HeadFrame, settings: Settings, acetabulum) -> None:
    """``side_check``: the given side against the anatomy (refused when it shows the other hip)."""
    m = analysis.metrics
    seg = m.get("segmentation") or {}
    # a neck axis already found (automatic segmentation, head isolated from a femur mask) is reused
    automatic = (seg.get("confidence") or {}).get("neck_axis")
    isolated = (seg.get("head_isolation") or {}).get("neck_axis")
    cues = read_side(analysis.scan, frame.center, frame.radius, settings, neck_axis=automatic or isolated,
                     neck_source="automatic segmentation" if automatic else "femur mask", acetabulum=acetabulum)
    m["side_check"], side_warnings = confirm_side(m["side"], cues, settings)
    m["warnings"] += side_warnings


def _reconstruct(analysis: Analysis, settings: Settings) -> None:
    """Shape-based interpolation to isotropic voxels; figures beside the voxel-count ones."""
    voxel = settings.reconstruction.voxel_mm
    affine = analysis.scan.affine
    (head_iso, lesion_iso), iso_affine = isotropic_reconstructions(
        [analysis.head, analysis.lesion & analysis.head], affine, voxel
    )
    lesion_iso &= head_iso  # the lesion stays inside the head after interpolation too
    head_ml = measure.voxel_volume_ml(head_iso, iso_affine)
    lesion_ml = measure.voxel_volume_ml(lesion_iso, iso_affine)
    head_mesh = mask_mesh(head_iso, iso_affine)
    lesion_mesh = mask_mesh(lesion_iso, iso_affine)
    analysis.metrics["reconstruction"] = {
        "method": "shape-based interpolation (signed distance, trilinear, threshold 0)",
        "voxel_mm": voxel,
        "head_volume_ml": head_ml,
        "lesion_volume_ml": lesion_ml,
        "necrotic_fraction_pct": measure.necrotic_fraction_pct(lesion_ml, head_ml),
        "head_mesh_volume_ml": mesh_volume_mm3(*head_mesh) / 1000.0,
        "lesion_mesh_volume_ml": mesh_volume_mm3(*lesion_mesh) / 1000.0,
    }
    if settings.reconstruction.stl_from_isotropic:
        analysis.meshes = {"head": head_mesh, "lesion": lesion_mesh}


def _input_facts(scan: Scan) -> dict:
    meta = scan.meta
    return {
        "path": meta.get("path"),
        "sha256": meta.get("sha256"),
        "format": meta.get("format"),
        "shape": list(scan.source_shape),
        "spacing_mm": [float(s) for s in scan.source_spacing],
        "axcodes": "".join(scan.axcodes),
    }


def segmentation_confidence(segmentation: dict) -> dict | None:
    """The automatic segmentation's ``confidence`` record (status, flags) of a metrics.json
    ``segmentation`` entry: its own, or its lesion's with ``--femur-mask`` alone; None for masks
    a person gave."""
    return segmentation.get("confidence") or (segmentation.get("lesion_segmentation") or {}).get("confidence")
