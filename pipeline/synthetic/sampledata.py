"""The synthetic sample cohort (``onfh sample-data DIR``): hip MRI scans with ground truth.

Six subjects, ten images, eleven hip entries in the manifest (the reader study below adds more):

* ONFH01 right hip, coronal 0.7 x 0.7 x 3.5 mm, baseline, 3 and 12 months: the lesion
  regenerates (40 % then 80 %, fastest laterally and posteriorly); follow-ups show the
  core-decompression track and patient motion. Outcome healed.
* ONFH02 left hip, coronal 0.7 x 0.7 x 3.5 mm, baseline and 12 months: the lesion grows
  (progressed), track visible at 12 months.
* ONFH03 right hip, oblique coronal (rotated ~15 degrees, exact in the affine), Mitchell A.
* ONFH04 both hips in one coronal field of view (0.9 x 0.9 x 3.5 mm): a right lesion and a
  healthy left head; the manifest lists the image once per side.
* ONFH05 left hip, 1 mm isotropic 3D, large lesion, foveal pit and patchy red marrow.
* ONFH06 right hip, coronal 0.7 x 0.7 x 3.5 mm in a smaller field of view, baseline and 12
  months: the head is intact at baseline and collapses by 12 months, a flat dent of
  :data:`ONFH06_DENT_MM` over the lesion (ARCO 2019 IIIB; docs/method.md section 6), the lesion
  a little larger. Outcome progressed. Drawn after ONFH05 and the reader study's files come from
  their own generators, so no other file changes.

A small reader study rides on it (docs/method.md section 7), after the cohort's own draws so that
none of its files change: the truth label maps are reader1's reads (rows with an empty ``reader``,
the default reader); ``reader2`` re-reads four baselines (ONFH01, ONFH02, ONFH03, ONFH05), its
lesion margin moved in-plane by up to two voxels outward or one inward in places; on ONFH03 (the
faint Mitchell A lesion) reader2 draws the margin 4.2 mm wider all round, a discordant read that
the ``adjudicator`` resolves by taking reader1's masks. ONFH01 and ONFH03 have a repeat
acquisition at baseline (``repeat`` 2: the patient repositioned by about 1 mm and 1 degree, the
slices shifted, new noise), the test-retest pairs of the repeatability.

Files are written deterministically: the same seed gives byte-identical files (gzip with a
zero timestamp). Every path in the manifest is relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.io.outputs import atomic_output_dir
from pipeline.synthetic import phantom as P

SEED = 20240611
SCHEMA = "onfh-phantom-truth/1"

__all__ = ["write_sample_cohort", "cohort_definition", "SEED", "ScanSpec", "SubjectSpec"]


@dataclass(frozen=True)
class ScanSpec:
    """One scan of the cohort.

    Attributes
    ----------
    tag : str
        File stem suffix (e.g. 'm00_cor').
    visit : phantom.Visit
        Months, patient pose, and per-hip state.
    acquisition : phantom.Acquisition
        Geometry (the centre is relative to the scanner isocentre, RAS mm) and image quality.
    sides : tuple of str
        Hips listed in the manifest for this image.
    """

    tag: str
    visit: P.Visit
    acquisition: P.Acquisition
    sides: tuple


@dataclass(frozen=True)
class SubjectSpec:
    params: P.SubjectParams
    scans: tuple
    outcome: dict  # side -> outcome ('' for a healthy hip)


# ----------------------------------------------------------------------------------------------
# cohort definition
# ----------------------------------------------------------------------------------------------
def _subject(name, iso_side, half, offset, hips, body_seed, fat=17.0, width=168.0, depth=118.0):
    """Subject whose ``iso_side`` head sits near the scanner isocentre (offset, RAS mm).

    For a bilateral study (iso_side None) the pelvis midline sits near the isocentre.
    """
    off = np.asarray(offset, dtype=np.float64)
    if iso_side == "right":
        mid = off[0] - half
    elif iso_side == "left":
        mid = off[0] + half
    else:
        mid = off[0]
    right = P.HipParams(side="right", center=(mid + half, off[1], off[2]), **hips["right"])
    left = P.HipParams(side="left", center=(mid - half, off[1] + 1.0, off[2] - 0.5), **hips["left"])
    body = P.BodyParams(
        midline_x=float(mid),
        pelvis_y=float(off[1]),
        pelvis_z=float(off[2]),
        half_width_mm=width,
        half_depth_mm=depth,
        fat_mm=fat,
        seed=body_seed,
    )
    return P.SubjectParams(name=name, body=body, right=right, left=left)


def _single_hip_acq(side, centre_head, spacing=(0.7, 0.7, 3.5), fov=(150.0, 150.0, 101.5), **kw):
    """A single-hip coronal FOV: 150 mm square, centred 20 mm lateral and 20 mm below the head
    (so the trochanters, proximal shaft and the lateral skin are inside)."""
    sg = 1.0 if side == "right" else -1.0
    c = np.asarray(centre_head, dtype=np.float64)
    centre = (c[0] + sg * 20.0, c[1], c[2] - 20.0)
    return P.Acquisition(spacing_mm=spacing, fov_mm=fov, centre_ras=tuple(float(v) for v in centre), **kw)


def cohort_definition(seed: int = SEED) -> list[SubjectSpec]:
    """The sample cohort: subjects, visits and acquisitions (no randomness beyond ``seed``).

    Anatomical variation is drawn from ``seed`` so a different seed gives a different but
    equally valid cohort with the same design. One function per subject (:func:`_onfh01` ...),
    called in this order: the draws follow one another.
    """
    draws = _Draws(np.random.default_rng([seed, 1]))
    return [_onfh01(draws), _onfh02(draws), _onfh03(draws), _onfh04(draws), _onfh05(draws), _onfh06(draws)]


class _Draws:
    """Random anatomy of the sample cohort, drawn in a fixed order from one generator.

    Parameters
    ----------
    rng : numpy.random.Generator
        Every draw of the cohort comes from it, subject after subject.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def anat(self, **over) -> dict:
        """Per-hip anatomy drawn around adult values (radius 22-25 mm, CE 25-40 degrees); ``over`` sets any."""
        rng = self.rng
        d = dict(
            radius=float(rng.uniform(22.0, 25.0)),
            waist_ratio=float(rng.uniform(0.65, 0.71)),
            neck_shaft_deg=float(rng.uniform(126.0, 134.0)),
            anteversion_deg=float(rng.uniform(8.0, 18.0)),
            shaft_tilt_deg=float(rng.uniform(5.0, 7.5)),
            offset_mm=float(rng.uniform(39.0, 44.0)),
            ce_deg=float(rng.uniform(27.0, 38.0)),
            acetabular_version_deg=float(rng.uniform(12.0, 20.0)),
            roof_medial_deg=float(rng.uniform(27.0, 33.0)),
            effusion_mm=float(rng.uniform(0.3, 1.2)),
            red_marrow=float(rng.uniform(0.15, 0.45)),
            seed=int(rng.integers(1 << 30)),
        )
        d.update(over)
        return d

    def lesion(self, **kw):
        """Lesion parameters with a drawn seed."""
        return P.LesionParams(seed=int(self.rng.integers(1 << 30)), **kw)


def _onfh01(draws: _Draws) -> SubjectSpec:
    """ONFH01: right hip, healed after core decompression + cells."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s1 = _subject(
        "ONFH01",
        "right",
        92.0,
        (1.5, -2.0, 1.0),
        {
            "right": anat(
                lesion=lesion(mitchell="C", nf_pct=22.0, direction=(-0.05, 0.25, 0.95), shape=(1.0, 0.72, 0.85))
            ),
            "left": anat(),
        },
        body_seed=int(rng.integers(1 << 30)),
    )
    c1 = s1.right.center
    healing = (0.3, 0.9, 0.6, 0.0, 0.0)  # lateral (C2 side) and posterior first
    scans1 = (
        ScanSpec("m00_cor", P.Visit(0.0), _single_hip_acq("right", c1, storage="LIP"), ("right",)),
        ScanSpec(
            "m03_cor",
            P.Visit(
                3.0,
                rotation_deg=(2.5, -3.0, 4.0),
                translation_mm=(3.5, -4.0, 2.5),
                right=P.HipState(regeneration_pct=40.0, preference=healing, track=True),
            ),
            _single_hip_acq("right", (c1[0] + 1.0, c1[1], c1[2]), storage="RAS"),
            ("right",),
        ),
        ScanSpec(
            "m12_cor",
            P.Visit(
                12.0,
                rotation_deg=(-4.0, 5.0, -3.5),
                translation_mm=(-5.5, 3.0, -4.0),
                right=P.HipState(
                    regeneration_pct=80.0, preference=healing, mitchell="D", track=True, track_signal=330.0
                ),
            ),
            _single_hip_acq("right", (c1[0] - 1.0, c1[1] + 1.0, c1[2]), storage="LPS"),
            ("right",),
        ),
    )
    return SubjectSpec(s1, scans1, {"right": "healed"})


def _onfh02(draws: _Draws) -> SubjectSpec:
    """ONFH02: left hip, lesion grows despite surgery."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s2 = _subject(
        "ONFH02",
        "left",
        90.0,
        (-2.0, 3.0, -1.5),
        {
            "right": anat(),
            "left": anat(
                lesion=lesion(
                    mitchell="D", nf_pct=24.0, direction=(0.2, 0.2, 0.94), shape=(0.95, 0.85, 0.9), centre_shift=0.05
                )
            ),
        },
        body_seed=int(rng.integers(1 << 30)),
        fat=22.0,
    )
    c2 = s2.left.center
    scans2 = (
        ScanSpec("m00_cor", P.Visit(0.0), _single_hip_acq("left", c2, storage="RIA", noise_pct=3.5), ("left",)),
        ScanSpec(
            "m12_cor",
            P.Visit(
                12.0,
                rotation_deg=(3.0, 2.0, -6.0),
                translation_mm=(-4.5, 5.0, 3.0),
                left=P.HipState(regeneration_pct=-35.0, preference=(1.0, 0.0, 0.0, 0.6, 0.0), track=True),
            ),
            _single_hip_acq("left", c2, storage="LSA", noise_pct=3.5, bias_pct=18.0),
            ("left",),
        ),
    )
    return SubjectSpec(s2, scans2, {"left": "progressed"})


def _onfh03(draws: _Draws) -> SubjectSpec:
    """ONFH03: right hip, oblique coronal, Mitchell A."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s3 = _subject(
        "ONFH03",
        "right",
        94.0,
        (-1.0, -3.0, 2.0),
        {
            "right": anat(
                lesion=lesion(mitchell="A", nf_pct=10.0, direction=(-0.45, 0.2, 0.87), shape=(1.0, 0.6, 0.8))
            ),
            "left": anat(),
        },
        body_seed=int(rng.integers(1 << 30)),
        fat=14.0,
    )
    c3 = s3.right.center
    scans3 = (
        ScanSpec(
            "m00_obl",
            P.Visit(0.0),
            _single_hip_acq("right", c3, oblique_deg=(6.0, 0.0, 15.0), storage="LIP", bias_pct=12.0),
            ("right",),
        ),
    )
    return SubjectSpec(s3, scans3, {"right": "healed"})


def _onfh04(draws: _Draws) -> SubjectSpec:
    """ONFH04: both hips in one FOV: right lesion (Mitchell B), healthy left head."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s4 = _subject(
        "ONFH04",
        None,
        91.0,
        (0.5, -1.0, 3.0),
        {
            "right": anat(
                lesion=lesion(mitchell="B", nf_pct=16.0, direction=(0.05, 0.3, 0.95), shape=(1.0, 0.75, 0.85))
            ),
            "left": anat(),
        },
        body_seed=int(rng.integers(1 << 30)),
    )
    b4 = s4.body
    acq4 = P.Acquisition(
        spacing_mm=(0.9, 0.9, 3.5),
        fov_mm=(369.0, 198.0, 105.0),
        centre_ras=(b4.midline_x, b4.pelvis_y, b4.pelvis_z - 15.0),
        storage="LSP",
        noise_pct=3.0,
        bias_pct=20.0,
        render_ss=(1, 1, 4),
    )
    scans4 = (ScanSpec("m00_bilat", P.Visit(0.0), acq4, ("right", "left")),)
    return SubjectSpec(s4, scans4, {"right": "healed", "left": ""})


def _onfh05(draws: _Draws) -> SubjectSpec:
    """ONFH05: left hip, 1 mm isotropic 3D, large lesion, fovea, patchy red marrow."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s5 = _subject(
        "ONFH05",
        "left",
        93.0,
        (2.0, 1.0, -2.0),
        {
            "right": anat(),
            "left": anat(
                fovea=True,
                red_marrow=0.6,
                red_marrow_head=0.15,
                lesion=lesion(
                    mitchell="C", nf_pct=34.0, direction=(0.35, 0.15, 0.92), shape=(0.9, 0.95, 0.95), centre_shift=0.1
                ),
            ),
        },
        body_seed=int(rng.integers(1 << 30)),
        fat=20.0,
    )
    c5 = s5.left.center
    acq5 = P.Acquisition(
        spacing_mm=(1.0, 1.0, 1.0),
        fov_mm=(130.0, 125.0, 110.0),
        centre_ras=(c5[0] - 15.0, c5[1], c5[2] - 17.0),
        storage="LPS",
        noise_pct=4.0,
        bias_pct=15.0,
        render_ss=(2, 2, 2),
        psf_sigma_vox=(0.35, 0.35, 0.35),
        label_ss=(4, 4, 4),
        label_ss_bone=(2, 2, 2),
    )
    scans5 = (ScanSpec("m00_3d", P.Visit(0.0), acq5, ("left",)),)
    return SubjectSpec(s5, scans5, {"left": "arthroplasty"})


#: Depth of ONFH06's collapse dent at 12 months, mm: ARCO 2019 IIIB (> 2 mm), 0.8 mm clear of the
#: IIIA/IIIB border, beyond the 0.6 mm error target of 3.5 mm slices (docs/method.md section 6).
ONFH06_DENT_MM = 2.8


def _onfh06(draws: _Draws) -> SubjectSpec:
    """ONFH06: right hip, intact at baseline, collapsed at 12 months (a dent over the lesion).

    The field of view is smaller than the other single-hip scans' (116 x 116 x 84 mm: head, neck,
    trochanters and the acetabular roof), to keep the committed files small."""
    rng, anat, lesion = draws.rng, draws.anat, draws.lesion
    s6 = _subject(
        "ONFH06",
        "right",
        91.5,
        (-1.5, 2.0, 0.5),
        {
            "right": anat(
                lesion=lesion(mitchell="C", nf_pct=26.0, direction=(0.3, 0.2, 0.93), shape=(1.0, 0.8, 0.85))
            ),
            "left": anat(),
        },
        body_seed=int(rng.integers(1 << 30)),
        fat=18.0,
    )
    c6 = s6.right.center
    fov = (116.2, 116.2, 84.0)
    scans6 = (
        ScanSpec("m00_cor", P.Visit(0.0), _single_hip_acq("right", c6, fov=fov, storage="LIP"), ("right",)),
        ScanSpec(
            "m12_cor",
            P.Visit(
                12.0,
                rotation_deg=(2.0, -2.5, 3.0),
                translation_mm=(2.5, -3.0, 2.0),
                right=P.HipState(regeneration_pct=-15.0, preference=(1.0, 0.3, 0.0, 0.5, 0.0), track=True,
                                 dent_mm=ONFH06_DENT_MM),
            ),
            _single_hip_acq("right", (c6[0] + 0.5, c6[1] - 0.5, c6[2]), fov=fov, storage="LIP"),
            ("right",),
        ),
    )
    return SubjectSpec(s6, scans6, {"right": "progressed"})


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, descrip: str) -> None:
    """NIfTI-1 with sform and qform (code 1, scanner) set; gzip without a timestamp so the
    same data give byte-identical files."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = descrip.encode()[:79]
    img.set_data_dtype(data.dtype)
    raw = img.to_bytes()
    path.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))


def _round(obj, nd=6):
    """JSON-ready copy with floats rounded (stable text across platforms)."""
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else round(float(obj), nd)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _round(obj.tolist(), nd)
    return obj


def _motion(visit: P.Visit, baseline: P.Visit) -> dict:
    """Rigid transform from baseline to follow-up scanner coordinates: q_fu = R q_bl + t."""
    rb, tb = baseline.rotation, baseline.translation
    rf, tf = visit.rotation, visit.translation
    rot = rf @ rb.T
    tr = tf - rot @ tb
    return {
        "convention": "q_followup = R @ q_baseline + t (scanner RAS mm)",
        "rotation_matrix": rot.tolist(),
        "rotation_deg": P.rotation_angle_deg(rot),
        "rotation_euler_xyz_deg": list(visit.rotation_deg),
        "translation_mm": tr.tolist(),
    }


def _scan_record(subject, spec: ScanSpec, rendered: P.RenderedScan, side, files, outcome, baseline) -> dict:
    acq = spec.acquisition
    aff = rendered.affine
    t = dict(rendered.truth[side])
    rec = {
        "schema": SCHEMA,
        "scan": files["stem"],
        "subject": subject.params.name,
        "side": side,
        "timepoint_months": spec.visit.months,
        "outcome": outcome or None,
        "files": {k: v for k, v in files.items() if k != "stem"},
        "acquisition": {
            "plane": acq.plane,
            "oblique_deg": list(acq.oblique_deg),
            "spacing_mm": np.sqrt((aff[:3, :3] ** 2).sum(axis=0)).tolist(),
            "shape": list(rendered.image.shape),
            "axcodes": list(nib.aff2axcodes(aff)),
            "affine_ras": aff.tolist(),
            "slice_thickness_mm": acq.slice_thickness_mm,
            "noise_pct_of_marrow": acq.noise_pct,
            "bias_pct": acq.bias_pct,
            "refined_voxel_share": rendered.refined_fraction,
        },
        "motion": _motion(spec.visit, baseline),
    }
    rec.update(t)
    return rec


def write_sample_cohort(out_dir: Path, progress: Callable[[str], None] | None = None, seed: int = SEED) -> Path:
    """Generate the sample cohort into ``out_dir`` and return the manifest path.

    Parameters
    ----------
    out_dir : Path
        Folder to write: new, empty, or an earlier sample cohort (replaced whole).
    progress : callable, optional
        Called with one short message per step (e.g. ``print``).
    seed : int
        Master seed; the default reproduces the committed ``sample_data``.

    Returns
    -------
    Path
        ``out_dir / 'manifest.csv'``.
    """
    final = Path(out_dir)
    # written whole or not at all, and never over files another program wrote
    with atomic_output_dir(final, "sample-data") as tmp_dir:
        say = progress or (lambda msg: None)
        t_start = time.perf_counter()
        rows, records = [], []
        built = {}
        for si, sspec in enumerate(cohort_definition(seed)):
            t0 = time.perf_counter()
            subject = P.build_subject(sspec.params)
            built[sspec.params.name] = (si, sspec, subject)
            say(f"{sspec.params.name}: model built ({time.perf_counter() - t0:.1f} s)")
            baseline = sspec.scans[0].visit
            for ci, spec in enumerate(sspec.scans):
                t0 = time.perf_counter()
                stem = f"{sspec.params.name}_{spec.tag}"
                rendered = P.render_scan(
                    subject,
                    spec.visit,
                    spec.acquisition,
                    spec.sides,
                    seed=[seed, si, ci],
                    baseline=baseline if spec.visit.months > 0 else None,
                )
                scan_rows, scan_records = _write_scan(tmp_dir, stem, sspec, spec, subject, rendered, baseline)
                rows += scan_rows
                records += scan_records
                say(f"{stem}: {rendered.image.shape} written ({time.perf_counter() - t0:.1f} s)")

        # the reader study comes after the cohort: its draws cannot shift the cohort's files
        study_rows, study_records = _write_reader_study(tmp_dir, seed, built, rows, say)
        rows += study_rows
        records += study_records
        _write_manifest(tmp_dir / "manifest.csv", rows)
        (tmp_dir / "truth.json").write_text(json.dumps(_truth_document(seed, records), indent=1) + "\n")
    say(f"cohort written to {final} ({time.perf_counter() - t_start:.1f} s)")
    return final / "manifest.csv"


def _write_scan(tmp_dir: Path, stem: str, sspec: SubjectSpec, spec: ScanSpec, subject, rendered: P.RenderedScan,
                baseline: P.Visit) -> tuple[list, list]:
    """Write one rendered scan: image, labels, and per hip its femur and hip-bone masks and truth JSON.

    Parameters
    ----------
    tmp_dir : Path
        The folder being written.
    stem : str
        File-name stem of the scan (subject and visit tag).
    sspec : SubjectSpec
    spec : ScanSpec
    subject
        The built subject model (:func:`pipeline.synthetic.phantom.build_subject`).
    rendered : RenderedScan
    baseline : Visit
        The subject's first visit (motion is reported against it).

    Returns
    -------
    rows : list of dict
        Manifest rows, one per hip in view.
    records : list of dict
        Truth records, one per hip in view.
    """
    rows, records = [], []
    image_name = f"{stem}.nii.gz"
    labels_name = f"{stem}_labels.nii.gz"
    _write_nifti(tmp_dir / image_name, rendered.image, rendered.affine, "onfh synthetic T1 hip phantom")
    _write_nifti(tmp_dir / labels_name, rendered.labels, rendered.affine, "truth 1 head 2 lesion")
    bilateral = len(spec.sides) > 1
    for side in spec.sides:
        pre = f"{stem}_{side}" if bilateral else stem
        files = {
            "stem": pre,
            "image": image_name,
            "labels": labels_name,
            "femur_mask": f"{pre}_femur.nii.gz",
            "hipbone_mask": f"{pre}_hipbone.nii.gz",
            "truth": f"{pre}_truth.json",
        }
        _write_nifti(tmp_dir / files["femur_mask"], rendered.femur[side], rendered.affine, f"truth {side} femur")
        _write_nifti(tmp_dir / files["hipbone_mask"], rendered.hipbone[side], rendered.affine,
                     f"truth {side} hip bone")
        outcome = sspec.outcome.get(side, "")
        rec = _round(_scan_record(subject, spec, rendered, side, files, outcome, baseline))
        (tmp_dir / files["truth"]).write_text(json.dumps(rec, indent=1) + "\n")
        records.append(rec)
        edge = rec["acetabular_edge_ras_mm"]
        rows.append(
            {
                "subject": sspec.params.name,
                "side": side,
                "timepoint_months": f"{spec.visit.months:g}",
                "image": image_name,
                "labels": labels_name,
                "femur_mask": files["femur_mask"],
                "acetabular_edge": ",".join(f"{v:.2f}" for v in edge),
                "outcome": outcome,
            }
        )
    return rows, records


# ----------------------------------------------------------------------------------------------
# the reader study
# ----------------------------------------------------------------------------------------------
#: Scans (image stems) that reader2 re-reads: concordant margins, except on :data:`DISCORDANT`.
SECOND_READER = ("ONFH01_m00_cor", "ONFH02_m00_cor", "ONFH03_m00_obl", "ONFH05_m00_3d")
#: The scan reader2 reads discordantly (margin 6 in-plane voxels wider) and the adjudicator resolves.
DISCORDANT = "ONFH03_m00_obl"
#: Repeat acquisitions: subject -> (index of the repeated scan, patient rotation degrees about x, y,
#: z, translation mm, shift of the slice stack mm). About 1 mm and 1 degree of repositioning, the
#: slices landing elsewhere on the anatomy: the test-retest variation of a re-scan on the same day.
REPEATS = {
    "ONFH01": (0, (0.8, -0.6, 1.0), (1.1, -0.7, 0.9), (0.3, -0.4, 1.3)),
    "ONFH03": (0, (-0.7, 0.9, -0.5), (-0.8, 1.0, -0.6), (-0.35, 0.25, -1.6)),
}


def second_reader_labels(labels: np.ndarray, affine: np.ndarray, rng: np.random.Generator, out_voxels: int,
                         in_voxels: int, out_share: float, in_share: float, smooth_mm: float = 2.1) -> np.ndarray:
    """Another reader's label map: the lesion margin moved, in places, within each slice.

    A reader draws slice by slice, so the margin moves in the slice plane (the two finest axes when
    the slices are thick). A smooth random field (Gaussian, ``smooth_mm``) splits the head into
    places where the margin moves out by up to ``out_voxels`` (the field's top ``out_share``), in
    by up to ``in_voxels`` (its bottom ``in_share``), or stays.

    Parameters
    ----------
    labels : ndarray of uint8
        0 background, 1 head outside the lesion, 2 lesion.
    affine : ndarray
        The voxel-to-RAS affine (spacing and slice axis).
    rng : numpy.random.Generator
    out_voxels, in_voxels : int
    out_share, in_share : float
        Shares of the field (0-1) where the margin moves out and in.

    Returns
    -------
    ndarray of uint8
        The same head (label 1 or 2 where ``labels`` is), another lesion inside it.
    """
    from scipy import ndimage

    head, lesion = labels > 0, labels == 2
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    step = ndimage.generate_binary_structure(3, 1).copy()
    axis = int(np.argmax(spacing))
    if spacing[axis] > 1.5 * spacing.min():  # thick slices: no step across them
        for k in (0, 2):
            index = [1, 1, 1]
            index[axis] = k
            step[tuple(index)] = False
    field = ndimage.gaussian_filter(rng.standard_normal(labels.shape), smooth_mm / spacing)
    low, high = np.quantile(field, [in_share, 1.0 - out_share])
    grown = ndimage.binary_dilation(lesion, step, iterations=out_voxels) & head if out_voxels else lesion
    kept = ndimage.binary_erosion(lesion, step, iterations=in_voxels) if in_voxels else lesion
    drawn = lesion.copy()
    drawn[(field >= high) & grown] = True
    drawn[(field <= low) & lesion & ~kept] = False
    out = np.zeros_like(labels)
    out[head] = 1
    out[drawn] = 2
    return out


def _write_reader_study(tmp_dir: Path, seed: int, built: dict, rows: list[dict], say) -> tuple[list, list]:
    """Reader2's label maps, the adjudicator's read, the repeat acquisitions; their manifest rows.

    Parameters
    ----------
    tmp_dir : Path
        The folder being written (the cohort's files are in it).
    seed : int
        Master seed (the study's draws use their own generators under it).
    built : dict
        Subject name -> (index, SubjectSpec, built subject model).
    rows : list of dict
        The cohort's manifest rows (reader1's reads).
    say : callable

    Returns
    -------
    rows : list of dict
        Manifest rows of the reader study, after the cohort's.
    records : list of dict
        Truth records of the repeat acquisitions.
    """
    first = {(r["image"].removesuffix(".nii.gz"), r["side"]): r for r in rows}
    study_rows, records = [], []
    for i, stem in enumerate(SECOND_READER):
        (row,) = [r for (s, _), r in first.items() if s == stem]
        img = nib.load(str(tmp_dir / row["labels"]))
        labels = np.asarray(img.dataobj).astype(np.uint8)
        rng = np.random.default_rng([seed, 7, i])
        if stem == DISCORDANT:  # the faint band of a Mitchell A lesion, drawn 4.2 mm wider all round
            drawn = second_reader_labels(labels, img.affine, rng, 6, 0, 1.0, 0.0)
        else:
            drawn = second_reader_labels(labels, img.affine, rng, 2, 1, 0.4, 0.3)
        name = f"{stem}_labels_reader2.nii.gz"
        _write_nifti(tmp_dir / name, drawn, img.affine, "reader2: 1 head 2 lesion")
        study_rows.append({**row, "labels": name, "reader": "reader2"})
        if stem == DISCORDANT:
            study_rows.append({**row, "reader": "adjudicator"})  # sides with reader1: reader1's masks
        say(f"{stem}: reader2's label map written")
    for subject_name, (index, rotation_deg, translation_mm, stack_shift_mm) in REPEATS.items():
        si, sspec, subject = built[subject_name]
        spec = sspec.scans[index]
        acq = spec.acquisition
        again = ScanSpec(
            f"{spec.tag}_rep2",
            P.Visit(spec.visit.months, rotation_deg=rotation_deg, translation_mm=translation_mm),
            dataclasses.replace(acq, centre_ras=tuple(float(c + d) for c, d in zip(acq.centre_ras, stack_shift_mm))),
            spec.sides,
        )
        t0 = time.perf_counter()
        rendered = P.render_scan(subject, again.visit, again.acquisition, again.sides, seed=[seed, si, index, 2])
        new_rows, new_records = _write_scan(tmp_dir, f"{subject_name}_{again.tag}", sspec, again, subject, rendered,
                                            sspec.scans[0].visit)
        study_rows += [{**r, "repeat": "2"} for r in new_rows]
        records += new_records
        say(f"{subject_name}_{again.tag}: repeat acquisition written ({time.perf_counter() - t0:.1f} s)")
    return study_rows, records


def _write_manifest(path: Path, rows: list[dict]) -> None:
    """Write the cohort manifest (CSV, one row per hip and visit).

    Parameters
    ----------
    path : Path
    rows : list of dict
        From :func:`_write_scan`.
    """
    with path.open("w", newline="") as fh:
        cols = ["subject", "side", "timepoint_months", "image", "labels", "femur_mask", "acetabular_edge",
                "outcome", "reader", "repeat"]
        wr = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n", restval="")
        wr.writeheader()
        wr.writerows(rows)


def _truth_document(seed: int, records: list[dict]) -> dict:
    """The cohort's ``truth.json``: schema, generator, seed, definitions and every scan's record.

    Parameters
    ----------
    seed : int
        Master seed of the cohort.
    records : list of dict
        Truth records (:func:`_write_scan`).

    Returns
    -------
    dict
    """
    return {
        "schema": SCHEMA,
        "generator": "pipeline.synthetic.sampledata.write_sample_cohort",
        "seed": seed,
        "definitions": {
            "frame": "scanner RAS mm; head frame u=(p-c).e_lat, v=(p-c).e_ant, w=(p-c).e_sup, "
            "e_lat=+x right hip, -x left hip (docs/method.md section 1)",
            "head": "neck-plane head: femur ∩ ball(c, r) ∩ {(p-c).n <= sqrt(r^2 - waist^2)} "
            "(docs/method.md section 2); continuous volume analytic (minus the foveal pit)",
            "lesion": "region enclosed by the outer margin of the low-signal band, band included, "
            "restricted to the head, drill track excluded",
            "continuous_volumes": "midpoint-rule integration of the continuous model on a 0.25 mm grid",
            "labels": "voxel label = fraction of the voxel inside the set >= 0.5 (sub-sampled); "
            "0 background, 1 head outside lesion, 2 lesion",
            "location": "docs/method.md section 4 on the continuous model, using the recorded acetabular "
            "edge and medial roof points in each scan's own frame",
            "regeneration": "100 (V0 - Vt) / V0 of continuous volumes; zone maps in the baseline frame",
            "motion": "q_followup = R @ q_baseline + t, scanner RAS mm",
        },
        "scans": records,
    }
