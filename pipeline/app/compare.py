"""`onfh compare`: follow-up scans against the baseline (docs/method.md section 5), the I/O edge.

Each visit is measured in its own space (:func:`pipeline.measures.hip.measure_hip`), then every
follow-up is registered to the baseline and mapped onto the baseline grid
(:func:`pipeline.longitudinal.change.compare_visits`).

Output folder (written atomically: on any error nothing is left half-written)
-------------------------------------------------------------------------------
``longitudinal.json`` always sits at the top of DIR. The per-follow-up files are

* ``change_map.nii.gz``: on the baseline grid (the baseline file's own voxel order and affine),
  0 background, 1 persistent lesion (L0 ∧ Lt), 2 regenerated (L0 ∧ ¬Lt), 3 new (Lt ∧ ¬L0);
* ``followup_in_baseline.nii.gz``: the follow-up image resampled onto the baseline grid
  (trilinear; the follow-up's integer type when it has one);
* ``followup_labels_in_baseline.nii.gz``: the follow-up labels on the baseline grid (nearest
  neighbour; 1 femoral head outside the lesion, 2 lesion);
* ``qc.png``: baseline, aligned follow-up and change map on the mid-coronal and mid-sagittal
  planes of the baseline head frame;
* with ``--dicom-seg`` (``outputs.dicom_seg``, DICOM visits): ``followup_seg.dcm`` and
  ``followup_sr.dcm``, the follow-up's DICOM SEG and measurement report on its own series, the
  report with the regeneration (``baseline_seg.dcm`` and ``baseline_sr.dcm`` sit at the top of
  DIR); see :mod:`pipeline.io.dicom_seg`.

With one follow-up (the usual case, and the docs/design.md contract) they sit in DIR itself. With
several, each follow-up k (1, 2, ... in command-line order) gets its own folder ``followup_<k>``,
so that the names stay the same and a folder reads as one comparison. Each entry of
``followups`` in the JSON names its ``folder`` and ``files``, so no reader needs to guess.

longitudinal.json
-----------------
``schema_version``, ``side``;
``baseline``: the baseline's metrics (as ``metrics.json`` of ``onfh analyze``);
``followups``: one entry per follow-up, in command-line order, each with ``index``, ``folder``,
``files``, ``followup`` (that visit's metrics, in its own space), ``regeneration_pct`` (from each
visit's own lesion volume; null for an empty baseline lesion), ``regeneration_pct_isotropic``
(same, from the shape-based isotropic reconstructions), ``baseline_lesion_ml``,
``followup_lesion_ml``, ``regenerated_ml``, ``new_ml``, ``persistent_ml`` and
``followup_lesion_in_baseline_ml`` (voxel maps on the baseline grid), ``zones`` (per JIC zone,
antero-posterior region and their 12 combinations: baseline_ml, followup_ml, regenerated_ml,
new_ml, persistent_ml, share_pct, regeneration_pct, regenerated_fraction_pct), ``head_change``
(head volume, radius, sphere-fit RMS and sphere fill: a collapse hint), ``registration``
(``transform`` with the RAS rotation matrix and 4x4 matrix, ``rotation_deg``, ``translation_mm``
as the RAS vector t of q = R p + t, ``translation_norm_mm``, ``head_centre_displacement_mm``,
``head_dice``, ``metric_value``, ``iterations``, ``stop_condition``, ``method``), ``warnings``;
the same figures of the *last* follow-up given (by convention the latest visit) repeated at the
top level (``regeneration_pct``, ``regenerated_ml``, ``new_ml``, ``persistent_ml``, ``zones``,
``registration``, ...; ``latest_followup`` names its index), so a one-follow-up file reads flat;
``change_map_labels``; ``warnings`` (everything: the baseline's and each follow-up's, prefixed);
``provenance``. Absent values are null, never NaN.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.app.analyze import record_input_paths, segment_masks
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.side import check_side
from pipeline.io.outputs import atomic_output_dir, check_output_dir, provenance, sha256_of, write_json
from pipeline.io.scan import load_scan, save_like
from pipeline.longitudinal.change import CHANGE_LABELS, Comparison, compare_visits
from pipeline.masks.labels import import_masks
from pipeline.measures.hip import Analysis, measure_hip
from pipeline.measures.results import FollowupMetrics, Longitudinal

FILES = {
    "change_map": "change_map.nii.gz",
    "followup_in_baseline": "followup_in_baseline.nii.gz",
    "followup_labels_in_baseline": "followup_labels_in_baseline.nii.gz",
    "qc_png": "qc.png",
}


def load_visit(image, labels, side: str, settings: Settings, edge=None, roof_medial=None,
               path_base=None, head_segment: str | None = None, lesion_segment: str | None = None) -> Analysis:
    """Load one visit and measure it in its own space.

    With a label map the masks are imported as ``onfh analyze --labels`` imports them; without
    one the visit is segmented automatically (:func:`pipeline.app.analyze.segment_masks`), its
    acetabulum found too, and ``segmentation.method`` says "automatic".

    Raises
    ------
    InputError
        For bad input, or no femoral head found by the automatic path.
    """
    scan = load_scan(image)
    scan.meta["sha256"] = sha256_of(image, scan.meta.get("files"))
    acetabulum = None
    if labels is None:
        head, lesion, seg, warnings, acetabulum = segment_masks(scan, side, settings)
    else:
        head, lesion, seg, warnings = import_masks(scan, settings, side, labels=labels, head_segment=head_segment,
                                                   lesion_segment=lesion_segment)
    record_input_paths(scan, image, seg, settings, path_base)
    return measure_hip(scan, head, lesion, side, settings, segmentation=seg, warnings=warnings,
                       acetabular_edge=edge, acetabular_roof_medial=roof_medial, acetabulum=acetabulum)


def run_compare(
    baseline: str | Path,
    followups,
    side: str,
    out_dir: str | Path,
    settings: Settings,
    baseline_labels: str | Path | None = None,
    followup_labels=None,
    acetabular_edge=None,
    acetabular_roof_medial=None,
    title: str = "",
    progress=None,
    path_base=None,
    head_segment: str | None = None,
    lesion_segment: str | None = None,
) -> dict:
    """Compare follow-up scans of one hip with its baseline and write the results atomically.

    Parameters
    ----------
    baseline : path
        Baseline image (any format ``onfh`` reads).
    followups : path or list of paths
        Follow-up images, in visit order.
    side : {"left", "right"}
    out_dir : path
        Output folder: new, empty, or an earlier ``onfh compare`` output, replaced whole on success
        (layout in the module docstring); onfh never replaces files it did not write.
    settings : Settings
        ``settings.longitudinal`` holds the registration parameters and the checks.
    baseline_labels : path, optional
        Label map on the baseline grid (head and lesion labels of ``settings.labels``).
    followup_labels : path or list of paths, optional
        One label map per follow-up, on that follow-up's grid. Give label maps for every visit
        or for none: without them every visit is segmented automatically.
    acetabular_edge, acetabular_roof_medial : sequence of 3 floats, optional
        Baseline landmarks, RAS mm: they set the weight-bearing span, hence the zones.
    title : str
        Shown on the QC pictures.
    progress : callable, optional
        Called with a short text as each step starts (the CLI prints it on stderr).
    path_base : path, optional
        A batch manifest's folder: input paths inside it are recorded relative to it.
    head_segment, lesion_segment : str, optional
        Segment names for the visits' 3D Slicer segmentations (the same for every visit).

    Returns
    -------
    dict
        The content of longitudinal.json (rounded as written).

    Raises
    ------
    InputError
        Label maps for some visits only, unreadable or mismatched inputs, visits that cannot be the same hip
        (side or head-radius mismatch), a failed registration. Nothing is written then.
    """
    started = time.perf_counter()
    check_side(side)
    followups = [followups] if isinstance(followups, (str, Path)) else list(followups or [])
    if not followups:
        raise InputError("give at least one follow-up scan")
    if followup_labels is None:
        followup_labels = [None] * len(followups)  # automatic segmentation
    elif isinstance(followup_labels, (str, Path)):
        followup_labels = [followup_labels]
    followup_labels = list(followup_labels)
    if len(followup_labels) != len(followups):
        raise InputError(f"{len(followups)} follow-up scans but {len(followup_labels)} follow-up label maps: "
                         "give one label map per follow-up, in the same order")
    given = [baseline_labels is not None] + [labels is not None for labels in followup_labels]
    if any(given) and not all(given):
        # A regeneration figure from a hand-drawn lesion at one visit and an automatic one at
        # another would measure the difference between the two methods, not the bone.
        raise InputError("give a label map for every visit (--baseline-labels and one --followup-labels per "
                         "follow-up) or for none (automatic segmentation of every visit), not for some")
    if (head_segment or lesion_segment) and not any(given):
        raise InputError("--head-segment and --lesion-segment pick segments of the visits' 3D Slicer "
                         "segmentations: give them with --baseline-labels and --followup-labels")

    if settings.outputs.dicom_seg:
        from pipeline.io.dicom_seg import check_dicom_input

        for image in (baseline, *followups):
            check_dicom_input(image)
    check_output_dir(out_dir, "compare")  # before the work: a refused --out costs nothing
    say = progress or (lambda text: None)
    how = "measuring" if baseline_labels is not None else "segmenting and measuring"
    say(f"{how} the baseline")
    base = load_visit(baseline, baseline_labels, side, settings,
                      edge=acetabular_edge, roof_medial=acetabular_roof_medial, path_base=path_base,
                      head_segment=head_segment, lesion_segment=lesion_segment)
    several = len(followups) > 1
    entries: list[FollowupMetrics] = []
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, "compare") as tmp:
        for k, (image, labels) in enumerate(zip(followups, followup_labels), start=1):
            who = f"follow-up {k} of {len(followups)}" if several else "the follow-up"
            say(f"{how} {who}")
            follow = load_visit(image, labels, side, settings, path_base=path_base,
                                head_segment=head_segment, lesion_segment=lesion_segment)
            say(f"registering {who} to the baseline and mapping the change")
            comparison = compare_visits(base, follow, settings)
            folder = tmp / f"followup_{k}" if several else tmp
            folder.mkdir(exist_ok=True)
            entries.append(_followup_entry(folder, base, follow, comparison, settings, title, k, several))
        return _write_longitudinal(tmp, base, entries, side, settings, started)


def write_comparison(out_dir: str | Path, base: Analysis, follow: Analysis, comparison: Comparison,
                     settings: Settings, title: str = "") -> dict:
    """Write one comparison already computed (napari's Compare visits) as ``onfh compare`` writes it.

    ``out_dir`` is replaced atomically by longitudinal.json, the change map, the follow-up and its
    labels on the baseline grid and qc.png. Returns the longitudinal.json content.
    """
    started = time.perf_counter()
    with atomic_output_dir(Path(out_dir), "compare") as tmp:
        entry = _followup_entry(tmp, base, follow, comparison, settings, title, 1, False)
        return _write_longitudinal(tmp, base, [entry], base.result.side, settings, started)


def _write_longitudinal(folder: Path, base: Analysis, entries: list[FollowupMetrics], side: str,
                        settings: Settings, started: float) -> dict:
    """longitudinal.json with its provenance into ``folder`` (and, with ``outputs.dicom_seg``, the
    baseline's baseline_seg.dcm and baseline_sr.dcm); returns the content as written."""
    if settings.outputs.dicom_seg:
        from pipeline.io.dicom_seg import write_dicom_outputs

        write_dicom_outputs(folder, base, prefix="baseline_")
    result = longitudinal_result(base, entries, side)
    result.provenance = provenance(settings, time.perf_counter() - started)
    content = result.to_json()
    write_json(folder / "longitudinal.json", content)
    return content


def _followup_entry(folder: Path, base: Analysis, follow: Analysis, comparison: Comparison, settings: Settings,
                    title: str, index: int, several: bool) -> FollowupMetrics:
    files = _write_followup(folder, base, follow, comparison, settings, title, index if several else None)
    return replace(comparison.result, index=index, folder=folder.name if several else ".", files=files)


def longitudinal_result(base: Analysis, entries: list[FollowupMetrics], side: str) -> Longitudinal:
    """The ``longitudinal.json`` model: baseline figures, then one entry per follow-up.

    Shared by ``onfh compare`` and napari's Compare visits widget so both report the same keys.
    """
    return Longitudinal(side=side, baseline=base.result, followups=list(entries),
                        change_map_labels={"0": "background", **{str(k): v for k, v in CHANGE_LABELS.items()}})


def _write_followup(folder: Path, base: Analysis, follow: Analysis, comparison: Comparison, settings: Settings,
                    title: str, index: int | None) -> dict:
    """The NIfTI maps and the QC picture of one follow-up; returns their names relative to DIR."""
    prefix = f"{folder.name}/" if index is not None else ""
    save_like(comparison.change, base.scan, folder / FILES["change_map"])
    save_like(comparison.labels_in_baseline, base.scan, folder / FILES["followup_labels_in_baseline"])
    image = comparison.image_in_baseline
    dtype = np.asarray(follow.scan.data).dtype
    if np.issubdtype(dtype, np.integer):
        # interpolated values of an integer image: keep its type (half the file, same information)
        info = np.iinfo(dtype)
        image = np.clip(np.rint(image), info.min, info.max)
        save_like(image, base.scan, folder / FILES["followup_in_baseline"], dtype=dtype)
    else:
        save_like(image, base.scan, folder / FILES["followup_in_baseline"], dtype=np.float32)
    files = {key: prefix + name for key, name in FILES.items() if key != "qc_png"}
    if settings.outputs.qc_png:
        label = f"follow-up {index}" if index is not None else "follow-up"
        write_compare_qc_png(folder / FILES["qc_png"], base, comparison, f"{title} {label}".strip())
        files["qc_png"] = prefix + FILES["qc_png"]
    if settings.outputs.dicom_seg:  # the follow-up's SEG and SR, with its regeneration as longitudinal.json has it
        from pipeline.io.dicom_seg import write_dicom_outputs

        regeneration = FollowupMetrics.from_json(comparison.result.to_json()).regeneration_pct
        seg_name, sr_name = write_dicom_outputs(folder, follow, regeneration, prefix="followup_")
        files["followup_seg"], files["followup_sr"] = prefix + seg_name, prefix + sr_name
    return files


# --------------------------------------------------------------------------------------------
# QC picture
# --------------------------------------------------------------------------------------------
CHANGE_COLOURS = {1: "#ffb000", 2: "#2ec27e", 3: "#e01b24"}


def write_compare_qc_png(path: str | Path, base: Analysis, comparison: Comparison, title: str = "") -> None:
    """Baseline, aligned follow-up and change map on the baseline head frame's mid-planes.

    Rows: mid-coronal, mid-sagittal; columns: baseline with its head and lesion outlines, the
    follow-up resampled onto the baseline grid with its (moved) outlines, the change map over the
    baseline. Radiological convention as in ``qc.png`` of ``onfh analyze``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from pipeline.geometry.frame import sample_plane
    from pipeline.report.qc import sample_image_plane

    frame = base.frame
    scan = base.scan
    half = frame.radius * 2.0
    step = max(0.25, float(scan.spacing.min()) / 2)
    head_t = comparison.labels_in_baseline > 0
    lesion_t = comparison.labels_in_baseline == 2
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6), dpi=100)
    for row, plane in enumerate(("coronal", "sagittal")):
        head0 = sample_plane(base.head, scan.affine, frame, plane, step, half)
        extent = [head0.a_mm[0], head0.a_mm[-1], head0.w_mm[0], head0.w_mm[-1]]
        images = [sample_image_plane(data, scan.affine, frame, plane, head0.a_mm, head0.w_mm)
                  for data in (scan.data, comparison.image_in_baseline)]
        outlines = [(base.head, base.lesion), (head_t, lesion_t)]
        for col in range(3):
            ax = axes[row, col]
            img = images[min(col, 1)] if col < 2 else images[0]
            fov = head0.in_fov
            lo, hi = np.percentile(img[fov], [1, 99.5]) if fov.any() else (0.0, 1.0)
            ax.imshow(img.T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
            if col < 2:
                for mask, colour, name in zip(outlines[col], ("#33d17a", "#ff4040"), ("head", "lesion")):
                    sample = sample_plane(mask, scan.affine, frame, plane, step, half)
                    if sample.image.any():
                        ax.contour(sample.a_mm, sample.w_mm, sample.image.T.astype(float), levels=[0.5],
                                   colors=[colour], linewidths=1.0)
                        ax.plot([], [], color=colour, label=name)
            else:
                classes = np.zeros(head0.image.shape, dtype=np.uint8)
                for value in CHANGE_LABELS:
                    sample = sample_plane(comparison.change == value, scan.affine, frame, plane, step, half)
                    classes[sample.image] = value
                cmap = ListedColormap(["#00000000"] + [CHANGE_COLOURS[v] for v in sorted(CHANGE_LABELS)])
                ax.imshow(np.ma.masked_equal(classes, 0).T, origin="lower", extent=extent, cmap=cmap, vmin=0,
                          vmax=3, alpha=0.75, interpolation="nearest")
                ax.contour(head0.a_mm, head0.w_mm, head0.image.T.astype(float), levels=[0.5], colors=["#33d17a"],
                           linewidths=0.8)
                handles = [Patch(color=CHANGE_COLOURS[v], label=name) for v, name in CHANGE_LABELS.items()]
                ax.legend(handles=handles, loc="lower left", fontsize=6, framealpha=0.6)
            if col < 2:
                ax.legend(loc="lower left", fontsize=6, framealpha=0.6)
            screen_left_is_positive = plane == "sagittal" or frame.side == "right"
            if screen_left_is_positive:
                ax.invert_xaxis()
            axis_name = "u" if plane == "coronal" else "v"
            ax.set_xlabel(f"{axis_name} (mm, baseline head frame)", fontsize=8)
            ax.set_ylabel("w (mm, superior up)", fontsize=8)
            name = ("baseline", "follow-up aligned to baseline", "change map")[col]
            ax.set_title(f"{name}: mid-{plane}", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.suptitle(comparison.result.qc_title(title), fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.9, wspace=0.25, hspace=0.3)
    fig.savefig(path)
    plt.close(fig)
