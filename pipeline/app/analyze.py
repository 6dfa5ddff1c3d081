"""One hip, one scan: masks in, every docs/method.md figure out (the `onfh analyze` job).

``measure_hip`` is pure (arrays + geometry -> figures) and is what the napari widget calls too, so
the CLI and the widget give the same numbers for the same labels. ``run_analyze`` adds the edges:
loading, mask import, and the atomic output folder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.frame import select_side
from pipeline.geometry.mesh import write_stl
from pipeline.geometry.side import check_side
from pipeline.io.outputs import atomic_output_dir, check_output_dir, provenance, recorded_path, sha256_of, write_json
from pipeline.io.scan import Scan, load_scan, save_like
from pipeline.masks.labels import import_masks, mask_source, read_mask
from pipeline.masks.totalseg import read_femur_mask
from pipeline.measures.hip import Analysis, measure_hip

#: segmentation-record parameters that hold input paths
PATH_PARAMETERS = ("labels", "head_mask", "lesion_mask", "femur_mask")


def record_input_paths(scan: Scan, image, segmentation: dict, settings: Settings, base=None) -> None:
    """Input paths as ``settings.outputs.input_paths`` says to record them (see
    :func:`pipeline.io.outputs.recorded_path`): the scan's ``path`` and the mask files of the
    segmentation record."""
    name_only = settings.outputs.input_paths == "name"
    scan.meta["path"] = recorded_path(image, base, name_only)
    params = segmentation.get("parameters") or {}
    for key in PATH_PARAMETERS:
        if params.get(key):
            params[key] = recorded_path(params[key], base, name_only)


def write_analysis(analysis: Analysis, out_dir: str | Path, settings: Settings, started: float,
                   title: str = "") -> Path:
    """Write metrics.json, labels.nii.gz, zones.nii.gz, head.stl, lesion.stl and qc.png atomically (and,
    with ``outputs.dicom_seg``, seg.dcm and sr.dcm: :func:`pipeline.io.dicom_seg.write_dicom_outputs`)."""
    from pipeline.report.qc import write_qc_png

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
        if settings.outputs.dicom_seg:
            from pipeline.io.dicom_seg import write_dicom_outputs

            write_dicom_outputs(tmp, analysis)
        written = replace(analysis.result, provenance=provenance(settings, time.perf_counter() - started))
        write_json(tmp / "metrics.json", written.to_json())
    return out_dir


def segment_masks(scan: Scan, side: str, settings: Settings, seeds=None, roi=None):
    """Automatic head, lesion and acetabulum masks (``pipeline.segment.segment_hip``).

    Returns ``(head, lesion, segmentation_record, warnings, acetabulum)``; a segmentation the
    algorithm flags for review adds a warning naming its flags.
    """
    from pipeline.segment import segment_hip

    result = segment_hip(scan, side, settings, seeds=seeds, roi=roi)
    warnings = list(result.warnings)
    if result.confidence["status"] != "ok":
        warnings.append("automatic segmentation flagged for review: " + "; ".join(result.confidence["flags"]))
    return result.head, result.lesion, result.record(), warnings, result.acetabulum


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
    head_segment: str | None = None,
    lesion_segment: str | None = None,
) -> Analysis:
    """Load, import masks (or segment automatically when none are given), measure, write.

    ``path_base`` (a batch manifest's folder): input paths inside it are recorded relative to it.

    ``head_segment`` and ``lesion_segment`` name the segments of a 3D Slicer segmentation given
    as ``labels`` (see :func:`pipeline.masks.labels.import_masks`).

    ``lesion_seeds`` (RAS mm points inside the lesion) and ``roi`` (RAS mm box x0, y0, z0, x1,
    y1, z1) steer the automatic segmentation (``pipeline.segment.segment_hip``).
    Raises InputError for bad input (nothing is written).
    """
    started = time.perf_counter()
    check_side(side)
    source = mask_source(labels, head_mask, lesion_mask, femur_mask)
    if source not in ("automatic", "femur+auto") and (lesion_seeds or roi is not None):
        raise InputError("--lesion-seed and --roi steer the automatic segmentation: give them without masks "
                         "(or with --femur-mask alone)")
    if (head_segment or lesion_segment) and source != "labels":
        raise InputError("--head-segment and --lesion-segment pick segments of a 3D Slicer segmentation "
                         "(--labels FILE.seg.nrrd)")
    if settings.outputs.dicom_seg:
        from pipeline.io.dicom_seg import check_dicom_input

        check_dicom_input(image)
    check_output_dir(out_dir, "analyze")  # before the work: a refused --out costs nothing
    scan = load_scan(image, series_uid=series_uid, spacing=spacing)
    scan.meta["sha256"] = sha256_of(image, scan.meta.get("files"))
    acetabulum = None
    femur_map = None
    if source == "automatic":
        head, lesion, seg, warnings, found_acetabulum = segment_masks(scan, side, settings, lesion_seeds, roi)
        if acetabulum_mask is None:
            acetabulum = found_acetabulum
    else:
        if source in ("femur", "femur+auto"):  # read here: a label map's hip bone is the acetabulum too
            femur_map = read_femur_mask(femur_mask, scan, side, settings.labels.grid_tolerance_mm)
        head, lesion, seg, warnings = import_masks(
            scan, settings, side, labels, head_mask, lesion_mask, femur_map or femur_mask, lesion_label_explicit,
            head_segment=head_segment, lesion_segment=lesion_segment,
        )
        if source == "femur+auto":
            lesion, seg, found_acetabulum = _automatic_lesion_in(head, scan, side, settings, seg, warnings,
                                                                 lesion_seeds, roi)
            if acetabulum_mask is None:
                acetabulum = found_acetabulum
    record_input_paths(scan, image, seg, settings, path_base)
    if acetabulum_mask is not None:
        acetabulum = select_side(read_mask(acetabulum_mask, scan, settings.labels.grid_tolerance_mm), scan.affine, side)
    elif femur_map is not None and femur_map.record is not None:  # a label map: its hip bone of that side
        if femur_map.hip is not None:
            acetabulum = select_side(femur_map.hip, scan.affine, side)
        else:
            warnings.append(f"hip_{side} is absent from femur mask {Path(femur_map.path).name}: no acetabulum from it")
    if femur_map is not None and femur_map.record is not None:
        seg["femur_map"]["hip_used_as_acetabulum"] = acetabulum_mask is None and femur_map.hip is not None
    analysis = measure_hip(scan, head, lesion, side, settings, segmentation=seg, warnings=warnings,
                           acetabular_edge=edge, acetabular_roof_medial=roof_medial, acetabulum=acetabulum)
    write_analysis(analysis, out_dir, settings, started, title)
    return analysis
