"""Speed of `onfh compare` on two clinical-size scans with labels, on one core; JSON out.

The case is a baseline and a follow-up coronal T1-like scan of 512 x 512 pixels x 40 slices
(0.7 x 0.7 mm, 3.5 mm slices) with label maps, rendered from the continuous hip model of
``tests/_hip_pair.py`` (a femoral head, neck, shaft and trochanter, a lesion cap, an acetabulum,
noise). The follow-up is moved by a known rigid motion (8 degrees about an oblique axis, 9 mm) and
its lesion has partly regenerated, so the run also reports the registration error and the
regeneration error against the exact truth.

The whole program runs as a separate process, as a user would, pinned to one core
(``taskset -c 0`` where available), several times: wall time (median, min) and the child's peak
resident memory. The phases are also timed in-process (load and measure each visit, register,
resample, write the maps, draw the QC picture) to show where the time goes.

Usage: python benchmarks/compare.py --out benchmarks/results [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _hip_pair import HipModel, grid, render, rotation, rotation_error_deg  # noqa: E402
from _timing import time_process  # noqa: E402

SHAPE = (512, 40, 512)  # coronal: 512 x 512 in-plane (x, z), 40 slices along y
SPACING = (0.7, 3.5, 0.7)
MOTION_AXIS, MOTION_DEG, MOTION_T = (1.0, 2.0, -1.0), 8.0, (5.0, -4.0, 6.5)
CAP_BASELINE_MM, CAP_FOLLOWUP_MM = 12.0, 8.0


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def make_case(folder: Path) -> dict:
    """Write baseline and follow-up images and label maps; return paths and the truth."""
    model = HipModel()
    rot, t = rotation(MOTION_AXIS, MOTION_DEG), np.asarray(MOTION_T)
    # the scanner centres each visit near the hip, as a radiographer would
    aff0 = grid(SHAPE, SPACING, model.c + np.array([-40.0, 0.0, -30.0]))
    aff1 = grid(SHAPE, SPACING, rot @ model.c + t + np.array([-37.0, 2.0, -26.0]))
    img0, lab0 = render(model, SHAPE, aff0, CAP_BASELINE_MM, seed=1)
    img1, lab1 = render(model, SHAPE, aff1, CAP_FOLLOWUP_MM, pose=(rot, t), seed=2)
    v0, vt = model.lesion_volume_ml(CAP_BASELINE_MM), model.lesion_volume_ml(CAP_FOLLOWUP_MM)
    return {
        "baseline": save(folder / "baseline.nii.gz", img0, aff0),
        "baseline_labels": save(folder / "baseline_labels.nii.gz", lab0, aff0),
        "followup": save(folder / "followup.nii.gz", img1, aff1),
        "followup_labels": save(folder / "followup_labels.nii.gz", lab1, aff1),
        "truth": {"rotation": rot, "translation": t, "center": model.c,
                  "regeneration_pct": 100.0 * (v0 - vt) / v0},
    }


def one_core_prefix() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def time_phases(case: dict, out: Path) -> dict:
    """Where the time goes, in this process (pinned to one core when possible)."""
    from pipeline.app.compare import _write_followup, load_visit
    from pipeline.config import Settings
    from pipeline.longitudinal.change import compare_visits

    settings = Settings()
    phases = {}
    t = time.perf_counter()
    base = load_visit(case["baseline"], case["baseline_labels"], "right", settings, "baseline")
    phases["load_and_measure_baseline_s"] = time.perf_counter() - t
    t = time.perf_counter()
    follow = load_visit(case["followup"], case["followup_labels"], "right", settings, "follow-up")
    phases["load_and_measure_followup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    comparison = compare_visits(base, follow, settings)
    phases["register_resample_and_map_s"] = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    no_qc = settings.model_copy(update={"outputs": settings.outputs.model_copy(update={"qc_png": False})})
    t = time.perf_counter()
    _write_followup(out, base, follow, comparison, no_qc, "", None)
    phases["write_maps_s"] = time.perf_counter() - t
    from pipeline.app.compare import write_compare_qc_png

    t = time.perf_counter()
    write_compare_qc_png(out / "qc.png", base, comparison)
    phases["qc_png_s"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in phases.items()}, comparison


def accuracy(result: dict, truth: dict) -> dict:
    reg = result["registration"]["transform"]
    rot, t = np.asarray(reg["rotation_matrix"]), np.asarray(reg["translation_mm"])
    c = truth["center"]
    return {
        "rotation_error_deg": round(rotation_error_deg(rot, truth["rotation"]), 3),
        "head_centre_error_mm": round(float(np.linalg.norm((rot @ c + t) - (truth["rotation"] @ c
                                                                              + truth["translation"]))), 3),
        "regeneration_pct": round(result["regeneration_pct"], 3),
        "regeneration_truth_pct": round(truth["regeneration_pct"], 3),
        "head_dice": round(result["registration"]["head_dice"], 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    onfh = str(Path(sys.executable).with_name("onfh"))
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform(), "pinned_to_one_core": bool(one_core_prefix())}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        case = make_case(folder)
        entry = {"shape": SHAPE, "spacing_mm": SPACING, "render_s": round(time.perf_counter() - t, 1),
                 "motion": {"rotation_deg": MOTION_DEG, "axis": MOTION_AXIS, "translation_mm": MOTION_T}}
        cmd = one_core_prefix() + [
            onfh, "compare", str(case["baseline"]), str(case["followup"]), "--side", "right",
            "--out", str(folder / "out"), "--baseline-labels", str(case["baseline_labels"]),
            "--followup-labels", str(case["followup_labels"]),
        ]
        entry["onfh_compare_process"] = time_process(cmd, args.repeat)
        result = json.loads((folder / "out" / "longitudinal.json").read_text())
        entry["accuracy"] = accuracy(result, case["truth"])
        if one_core_prefix():
            os.sched_setaffinity(0, {0})
        entry["phases_in_process"], _ = time_phases(case, folder / "phases")
        results["compare_512x512x40"] = entry
        print(json.dumps(entry), flush=True)
    path = out_dir / "compare.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
