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
from pipeline.geometry.side import check_side, confirm_side, read_side
from pipeline.io.scan import Scan
from pipeline.measures import volumes as measure
from pipeline.measures.collapse import assessment_flags, head_depression, literature_flags
from pipeline.measures.location import location_metrics, weight_bearing_span, zone_map
from pipeline.measures.results import SCHEMA_VERSION, HipMetrics


@dataclass
class Analysis:
    """Figures of one hip (``result``) plus the arrays that the outputs are drawn from (canonical grid)."""

    scan: Scan
    head: np.ndarray
    lesion: np.ndarray
    result: HipMetrics
    zones: np.ndarray | None = None
    meshes: dict = field(default_factory=dict)
    frame: HeadFrame | None = None
    #: the mid-planes' :class:`pipeline.measures.location.SurfaceContact` the arcs were measured on,
    #: by plane name (qc.png draws them instead of sampling the planes again)
    contacts: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        """The figures as a ``metrics.json`` dict (unrounded, without provenance), for callers of
        the earlier interface; code reads :attr:`result`."""
        return self.result.as_dict()


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

    Returns
    -------
    Analysis
        ``result`` (:class:`pipeline.measures.results.HipMetrics`, the metrics.json figures,
        assembled here and nowhere else), the masks, zone map, meshes and head frame.
    """
    check_side(side)
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

    segmentation = segmentation or {"method": "imported"}
    frame, fit = measure.plausible_head_frame(head, affine, side, settings.head)
    side_check, side_warnings = _check_side(scan, side, segmentation, frame, settings, acetabulum)
    contacts = {}
    span, location, location_warnings = _locate(scan, head, lesion, frame, fit, settings, acetabular_edge,
                                                acetabular_roof_medial, acetabulum, contacts)
    warnings += side_warnings + location_warnings
    meshes = {"head": head_mesh, "lesion": lesion_mesh}
    reconstruction = None
    surface, iso_voxel = head_mesh, None
    if settings.reconstruction.isotropic:
        reconstruction, iso_meshes = _reconstruct(head, lesion, affine, settings)
        surface, iso_voxel = iso_meshes["head"], settings.reconstruction.voxel_mm
        if settings.reconstruction.stl_from_isotropic:
            meshes = iso_meshes
    # head depression on the surface already meshed (docs/method.md section 6)
    collapse = head_depression(head, affine, fit, frame, settings, span=span, mesh=surface, scan_affine=affine,
                               iso_voxel_mm=iso_voxel)
    collapse["collapse"]["surface"] = "isotropic reconstruction" if iso_voxel else "head mask"
    collapse_flags = assessment_flags(collapse["arco2019_collapse"], collapse["collapse"], affine)
    review_flags += collapse_flags
    warnings += collapse_flags

    # the one place a HipMetrics is assembled (its field order is the key order of metrics.json)
    result = HipMetrics(
        schema_version=SCHEMA_VERSION,
        side=side,
        input=_input_facts(scan),
        head_volume_ml=head_ml,
        head_mesh_volume_ml=mesh_volume_mm3(*head_mesh) / 1000.0,
        head_center_ras_mm=[float(x) for x in frame.center],
        head_radius_mm=float(frame.radius),
        sphere_fit_rms_mm=fit.rms_mm,
        lesion_volume_ml=lesion_ml,
        lesion_mesh_volume_ml=mesh_volume_mm3(*lesion_mesh) / 1000.0,
        necrotic_fraction_pct=nf,
        size_class=measure.size_class(nf),
        weight_bearing=span,
        zones_ml=location["zones_ml"],
        jic_type=location["jic_type"],
        jic_type_3d=location["jic_type_3d"],
        arco2021_type=location["arco2021_type"],
        arc_coronal_deg=location["arc_coronal_deg"],
        arc_sagittal_deg=location["arc_sagittal_deg"],
        cna_deg=location["cna_deg"],
        kerboul_grade=location["kerboul_grade"],
        koo_kim_index=location["koo_kim_index"],
        centroid_latitude_deg=location["centroid_latitude_deg"],
        centroid_longitude_deg=location["centroid_longitude_deg"],
        head_depression_mm=collapse["head_depression_mm"],
        arco2019_collapse=collapse["arco2019_collapse"],
        collapse=collapse["collapse"],
        literature_flags=literature_flags(nf, location["jic_type"], settings),
        reconstruction=reconstruction,
        segmentation=segmentation,
        review_flags=review_flags,
        warnings=warnings,
        side_check=side_check,
        sphere_fit=fit.as_dict(),
    )
    return Analysis(scan, head, lesion, result, zones=zone_map(head, affine, frame, span), meshes=meshes,
                    frame=frame, contacts=contacts)


def _locate(scan: Scan, head: np.ndarray, lesion: np.ndarray, frame: HeadFrame, fit, settings: Settings,
            edge, roof_medial, acetabulum, contacts: dict | None = None) -> tuple[dict, dict, list[str]]:
    """Weight-bearing span, zones, types and angles in the head frame (docs/method.md sections 1
    and 4). Returns ``(weight_bearing, location figures, warnings)``; ``contacts`` receives the
    mid-planes' surface contact (:func:`pipeline.measures.location.location_metrics`)."""
    warnings = []
    if fit.rms_mm > settings.head.max_sphere_rms_mm:
        warnings.append(
            f"sphere-fit RMS residual {fit.rms_mm:.2f} mm exceeds {settings.head.max_sphere_rms_mm:g} mm: "
            "the head is not spherical or the mask is rough; check the head frame"
        )
    span = weight_bearing_span(
        frame, edge, roof_medial, acetabulum, scan.affine,
        default_edge_angle_deg=settings.location.default_edge_angle_deg, settings=settings.location,
    )
    warnings += span["details"].pop("warnings")
    location = location_metrics(head, lesion, scan.affine, frame, span,
                                step_mm=settings.location.plane_step_mm,
                                contact_shell_mm=settings.location.contact_shell_mm, contacts=contacts)
    # The empty-lesion case is already stated once by measure_hip.
    warnings += [w for w in location.pop("warnings") if not w.startswith("empty lesion")]
    return span, location, warnings


def _check_side(scan: Scan, side: str, segmentation: dict, frame: HeadFrame, settings: Settings,
                acetabulum) -> tuple[dict, list[str]]:
    """``side_check``: the given side against the anatomy (refused when it shows the other hip);
    returns the record and its warnings."""
    # a neck axis already found (automatic segmentation, head isolated from a femur mask) is reused
    automatic = (segmentation.get("confidence") or {}).get("neck_axis")
    isolated = (segmentation.get("head_isolation") or {}).get("neck_axis")
    cues = read_side(scan, frame.center, frame.radius, settings, neck_axis=automatic or isolated,
                     neck_source="automatic segmentation" if automatic else "femur mask", acetabulum=acetabulum)
    return confirm_side(side, cues, settings)


def _reconstruct(head: np.ndarray, lesion: np.ndarray, affine: np.ndarray, settings: Settings) -> tuple[dict, dict]:
    """Shape-based interpolation to isotropic voxels; figures beside the voxel-count ones.
    Returns ``(reconstruction record, meshes of the isotropic masks)``."""
    voxel = settings.reconstruction.voxel_mm
    (head_iso, lesion_iso), iso_affine = isotropic_reconstructions([head, lesion & head], affine, voxel)
    lesion_iso &= head_iso  # the lesion stays inside the head after interpolation too
    head_ml = measure.voxel_volume_ml(head_iso, iso_affine)
    lesion_ml = measure.voxel_volume_ml(lesion_iso, iso_affine)
    head_mesh = mask_mesh(head_iso, iso_affine)
    lesion_mesh = mask_mesh(lesion_iso, iso_affine)
    record = {
        "method": "shape-based interpolation (signed distance, trilinear, threshold 0)",
        "voxel_mm": voxel,
        "head_volume_ml": head_ml,
        "lesion_volume_ml": lesion_ml,
        "necrotic_fraction_pct": measure.necrotic_fraction_pct(lesion_ml, head_ml),
        "head_mesh_volume_ml": mesh_volume_mm3(*head_mesh) / 1000.0,
        "lesion_mesh_volume_ml": mesh_volume_mm3(*lesion_mesh) / 1000.0,
    }
    return record, {"head": head_mesh, "lesion": lesion_mesh}


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
