"""One hip, one scan: masks in, every METHOD.md figure out (the `onfh analyze` job).

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
from .mesh import isotropic_reconstructions, mask_mesh, mesh_volume_mm3, write_stl
from .outputs import atomic_output_dir, provenance, sha256_of, write_json
from .scan import Scan, load_labels, load_scan, save_like

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
    planes: dict = field(default_factory=dict)


def measure_hip(
    scan: Scan,
    head: np.ndarray,
    lesion: np.ndarray,
    side: str,
    settings: Settings,
    segmentation: dict | None = None,
    warnings: list[str] | None = None,
) -> Analysis:
    """Volumes, necrotic fraction and size class of one hip (METHOD.md sections 3 and 6).

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
    head_mesh = mask_mesh(head, affine)
    lesion_mesh = mask_mesh(lesion, affine)
    slice_mm = max(float(scan.spacing.max()), float(scan.meta.get("slice_thickness_mm") or 0.0))
    warnings += measure.volume_gates(head_ml, slice_mm, settings.gates)
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
        "warnings": warnings,
    }
    analysis = Analysis(scan, head, lesion, metrics, meshes={"head": head_mesh, "lesion": lesion_mesh})
    if settings.reconstruction.isotropic:
        _reconstruct(analysis, settings)
    return analysis


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


# I/O edge ---------------------------------------------------------------------------------
def import_masks(
    scan: Scan,
    settings: Settings,
    labels: str | Path | None = None,
    head_mask: str | Path | None = None,
    lesion_mask: str | Path | None = None,
    lesion_label_explicit: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """Head and lesion masks from a label map or a pair of mask files, on ``scan``'s grid."""
    tol = settings.labels.grid_tolerance_mm
    if labels is not None:
        label_map = load_labels(labels, scan, tol)
        head, lesion, warnings = measure.masks_from_labels(
            label_map, settings.labels.head, settings.labels.lesion, lesion_required=lesion_label_explicit
        )
        seg = {
            "method": "imported label map",
            "parameters": {"labels": str(labels), "head_label": settings.labels.head,
                           "lesion_label": settings.labels.lesion},
        }
        return head, lesion, seg, warnings
    if head_mask is None or lesion_mask is None:
        raise InputError("give --labels, or both --head-mask and --lesion-mask")
    head = load_labels(head_mask, scan, tol) != 0
    lesion = load_labels(lesion_mask, scan, tol) != 0
    if not head.any():
        raise InputError(f"head mask {Path(head_mask).name} is empty")
    seg = {"method": "imported masks", "parameters": {"head_mask": str(head_mask), "lesion_mask": str(lesion_mask)}}
    return head, lesion, seg, []


def write_analysis(analysis: Analysis, out_dir: str | Path, settings: Settings, started: float) -> Path:
    """Write metrics.json, labels.nii.gz, zones.nii.gz, head.stl, lesion.stl (and qc.png) atomically."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        label_map = np.zeros(analysis.scan.shape, dtype=np.uint8)
        label_map[analysis.head] = 1
        label_map[analysis.lesion] = 2
        save_like(label_map, analysis.scan, tmp / "labels.nii.gz")
        if analysis.zones is not None:
            save_like(analysis.zones, analysis.scan, tmp / "zones.nii.gz")
        for name, (verts, faces) in analysis.meshes.items():
            write_stl(tmp / f"{name}.stl", verts, faces, name=name)
        metrics = dict(analysis.metrics)
        metrics["provenance"] = provenance(settings, time.perf_counter() - started)
        write_json(tmp / "metrics.json", metrics)
    return out_dir


def run_analyze(
    image: str | Path,
    side: str,
    out_dir: str | Path,
    settings: Settings,
    labels=None,
    head_mask=None,
    lesion_mask=None,
    lesion_label_explicit: bool = False,
    series_uid: str | None = None,
) -> Analysis:
    """Load, import masks, measure, write. Raises InputError for bad input (nothing is written)."""
    started = time.perf_counter()
    scan = load_scan(image, series_uid=series_uid)
    scan.meta["sha256"] = sha256_of(image, scan.meta.get("files"))
    if labels is None and head_mask is None and lesion_mask is None:
        raise InputError("automatic segmentation is not available yet: give --labels or --head-mask/--lesion-mask")
    head, lesion, seg, warnings = import_masks(scan, settings, labels, head_mask, lesion_mask, lesion_label_explicit)
    analysis = measure_hip(scan, head, lesion, side, settings, segmentation=seg, warnings=warnings)
    write_analysis(analysis, out_dir, settings, started)
    return analysis
