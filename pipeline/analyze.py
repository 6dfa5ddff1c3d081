"""One hip, one scan: masks in, every docs/method.md figure out (the `onfh analyze` job).

``measure_hip`` is pure (arrays + geometry -> figures) and is what the napari widget calls too, so
the CLI and the widget give the same numbers for the same labels. ``run_analyze`` adds the edges:
loading, mask import, and the atomic output folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import measure
from .config import Settings
from .errors import InputError
from .frame import HeadFrame, isolate_head, select_side
from .location import location_metrics, weight_bearing_span, zone_map
from .mesh import isotropic_reconstructions, mask_mesh, mesh_volume_mm3, write_stl
from .outputs import atomic_output_dir, check_output_dir, provenance, recorded_path, sha256_of, write_json
from .scan import Scan, load_labels, load_scan, save_like
from .side import confirm_side, read_side

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


#: segmentation-record parameters that hold input paths
PATH_PARAMETERS = ("labels", "head_mask", "lesion_mask", "femur_mask")


def record_input_paths(scan: Scan, image, segmentation: dict, settings: Settings, base=None) -> None:
    """Input paths as ``settings.outputs.input_paths`` says to record them (see
    :func:`pipeline.outputs.recorded_path`): the scan's ``path`` and the mask files of the
    segmentation record."""
    name_only = settings.outputs.input_paths == "name"
    scan.meta["path"] = recorded_path(image, base, name_only)
    params = segmentation.get("parameters") or {}
    for key in PATH_PARAMETERS:
        if params.get(key):
            params[key] = recorded_path(params[key], base, name_only)


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
) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """Head and lesion masks of one hip on ``scan``'s grid, from what the user gave.

    Sources: a label map (``labels``); a head and a lesion mask; or a proximal-femur mask from
    which the head is isolated (docs/method.md section 2) with a lesion mask. A mask covering both
    hips is cut to the requested ``side`` (the patient's right hip has the greater RAS x).
    """
    tol = settings.labels.grid_tolerance_mm
    warnings: list[str] = []
    if labels is not None:
        label_map = load_labels(labels, scan, tol)
        head, lesion, warnings = masks_from_label_map(label_map, scan, side, settings, lesion_label_explicit,
                                                      name=f"label map {Path(labels).name}")
        seg = {"method": "imported label map",
               "parameters": {"labels": str(labels), "head_label": settings.labels.head,
                              "lesion_label": settings.labels.lesion}}
        return head, lesion, seg, warnings
    if femur_mask is not None:
        femur = select_side(_binary(femur_mask, scan, tol), scan.affine, side)
        head, info = isolate_head(femur, scan.affine, method=settings.head.method)
        warnings += info.pop("warnings", [])
        # without a lesion mask the caller segments the lesion automatically inside this head
        lesion = (_binary(lesion_mask, scan, tol, allow_empty=True) if lesion_mask is not None
                  else np.zeros_like(head))
        seg = {"method": f"head isolated from a femur mask ({settings.head.method})",
               "parameters": {"femur_mask": str(femur_mask),
                              "lesion_mask": str(lesion_mask) if lesion_mask is not None else None},
               "head_isolation": info}
    elif head_mask is not None and lesion_mask is not None:
        head = _binary(head_mask, scan, tol)
        lesion = _binary(lesion_mask, scan, tol, allow_empty=True)
        seg = {"method": "imported masks",
               "parameters": {"head_mask": str(head_mask), "lesion_mask": str(lesion_mask)}}
    else:
        raise InputError("give --labels, --head-mask with --lesion-mask, or --femur-mask (with or without "
                         "--lesion-mask), or no mask at all for automatic segmentation")
    head, lesion = _one_hip(head, lesion, scan, side, warnings)
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
    head, lesion, warnings = measure.masks_from_labels(
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


def _binary(path, scan: Scan, tol: float, allow_empty: bool = False) -> np.ndarray:
    """A mask file as bool on ``scan``'s grid; empty is an error unless allowed (a healthy head's
    lesion mask is legitimately empty)."""
    mask = load_labels(path, scan, tol) != 0
    if not allow_empty and not mask.any():
        raise InputError(f"mask {Path(path).name} is empty")
    return mask


def write_analysis(analysis: Analysis, out_dir: str | Path, settings: Settings, started: float,
                   title: str = "") -> Path:
    """Write metrics.json, labels.nii.gz, zones.nii.gz, head.stl, lesion.stl and qc.png atomically."""
    from .qc import write_qc_png

    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, "analyze") as tmp:
        label_map = np.zeros(analysis.scan.shape, dtype=np.uint8)
        label_map[analysis.head] = 1
        label_map[analysis.lesion] = 2
        save_like(label_map, analysis.scan, tmp / "labels.nii.gz")
        if analysis.zones is not None:
            save_like(analysis.zones, analysis.scan, tmp / "zones.nii.gz")
        if settings.outputs.stl:
            for name, (verts, faces) in analysis.meshes.items():
                write_stl(tmp / f"{name}.stl", verts, faces, name=name)
        if settings.outputs.qc_png and analysis.frame is not None:
            write_qc_png(tmp / "qc.png", analysis, title, settings)
        metrics = dict(analysis.metrics)
        metrics["provenance"] = provenance(settings, time.perf_counter() - started)
        write_json(tmp / "metrics.json", metrics)
    return out_dir


def segment_masks(scan: Scan, side: str, settings: Settings, seeds=None, roi=None):
    """Automatic head, lesion and acetabulum masks (``pipeline.segment.segment_hip``).

    Returns ``(head, lesion, segmentation_record, warnings, acetabulum)``; a segmentation the
    algorithm flags for review adds a warning naming its flags.
    """
    from .segment import segment_hip

    result = segment_hip(scan, side, settings, seeds=seeds, roi=roi)
    warnings = list(result.warnings)
    if result.confidence["status"] != "ok":
        warnings.append("automatic segmentation flagged for review: " + "; ".join(result.confidence["flags"]))
    return result.head, result.lesion, result.record(), warnings, result.acetabulum


def segmentation_confidence(segmentation: dict) -> dict | None:
    """The automatic segmentation's ``confidence`` record (status, flags) of a metrics.json
    ``segmentation`` entry: its own, or its lesion's with ``--femur-mask`` alone; None for masks
    a person gave."""
    return segmentation.get("confidence") or (segmentation.get("lesion_segmentation") or {}).get("confidence")


#: --femur-mask alone: an automatic lesion with more than this share (%) outside the user's head
#: is warned about (a few boundary voxels always differ between the two heads; a larger share
#: means the two heads disagree)
LESION_OUTSIDE_HEAD_WARN_PCT = 5.0


def _automatic_lesion_in(head, scan: Scan, side: str, settings: Settings, seg: dict, warnings: list,
                         seeds=None, roi=None):
    """The automatic segmentation's lesion (and acetabulum) inside a head given by the user.

    The head stays the one isolated from the femur mask; the lesion is the automatic one cut to
    it (docs/method.md 2: the lesion is restricted to the head), the voxels cut off counted in the
    record. Returns ``(lesion, segmentation record, acetabulum)``.
    """
    _, auto_lesion, auto_seg, auto_warnings, acetabulum = segment_masks(scan, side, settings, seeds, roi)
    lesion = auto_lesion & head
    outside = int((auto_lesion & ~head).sum())
    warnings += auto_warnings
    if outside:
        share = 100.0 * outside / max(int(auto_lesion.sum()), 1)
        if share >= LESION_OUTSIDE_HEAD_WARN_PCT:
            warnings.append(f"{share:.0f} % of the automatic lesion lay outside the head isolated from the femur "
                            "mask and was not counted: check both")
    seg = {**seg, "method": seg["method"] + "; lesion segmented automatically inside it",
           "lesion_segmentation": {**auto_seg, "voxels_outside_head_dropped": outside}}
    return lesion, seg, acetabulum


def run_analyze(
    image: str | Path,
    side: str,
    out_dir: str | Path,
    settings: Settings,
    labels=None,
    head_mask=None,
    lesion_mask=None,
    femur_mask=None,
    acetabulum_mask=None,
    edge=None,
    roof_medial=None,
    lesion_label_explicit: bool = False,
    series_uid: str | None = None,
    spacing=None,
    title: str = "",
    lesion_seeds=None,
    roi=None,
    path_base=None,
) -> Analysis:
    """Load, import masks (or segment automatically when none are given), measure, write.

    ``path_base`` (a batch manifest's folder): input paths inside it are recorded relative to it.

    ``lesion_seeds`` (RAS mm points inside the lesion) and ``roi`` (RAS mm box x0, y0, z0, x1,
    y1, z1) steer the automatic segmentation (``pipeline.segment.segment_hip``).
    Raises InputError for bad input (nothing is written).
    """
    started = time.perf_counter()
    if side not in SIDES:
        raise InputError(f"side must be left or right, not {side!r}")
    check_output_dir(out_dir, "analyze")  # before the work: a refused --out costs nothing
    scan = load_scan(image, series_uid=series_uid, spacing=spacing)
    scan.meta["sha256"] = sha256_of(image, scan.meta.get("files"))
    automatic = labels is None and head_mask is None and lesion_mask is None and femur_mask is None
    femur_only = femur_mask is not None and labels is None and head_mask is None and lesion_mask is None
    if not (automatic or femur_only) and (lesion_seeds or roi is not None):
        raise InputError("--lesion-seed and --roi steer the automatic segmentation: give them without masks "
                         "(or with --femur-mask alone)")
    acetabulum = None
    if automatic:
        head, lesion, seg, warnings, found_acetabulum = segment_masks(scan, side, settings, lesion_seeds, roi)
        if acetabulum_mask is None:
            acetabulum = found_acetabulum
    else:
        head, lesion, seg, warnings = import_masks(
            scan, settings, side, labels, head_mask, lesion_mask, femur_mask, lesion_label_explicit
        )
        if femur_only:
            lesion, seg, found_acetabulum = _automatic_lesion_in(head, scan, side, settings, seg, warnings,
                                                                 lesion_seeds, roi)
            if acetabulum_mask is None:
                acetabulum = found_acetabulum
    record_input_paths(scan, image, seg, settings, path_base)
    if acetabulum_mask is not None:
        acetabulum = select_side(_binary(acetabulum_mask, scan, settings.labels.grid_tolerance_mm), scan.affine, side)
    analysis = measure_hip(scan, head, lesion, side, settings, segmentation=seg, warnings=warnings,
                           acetabular_edge=edge, acetabular_roof_medial=roof_medial, acetabulum=acetabulum)
    write_analysis(analysis, out_dir, settings, started, title)
    return analysis
