"""Speed and peak memory of `onfh analyze --labels` on clinical-size grids; JSON out.

Each case writes a synthetic scan and label map (a 22 mm head with a 9 mm cap lesion), then runs
the whole program as a separate process, as a user would, several times: wall time (median, min)
and the child's peak resident memory. Phases are also timed in-process (load, mask import,
measurement, reconstruction, writing) to show where the time goes.

If ``PYRADIOMICS_PYTHON`` names a Python that has pyradiomics, its shape features on the same
masks are timed the same way (whole process), for the comparison the foundation issue asks for.

Usage: python benchmarks/run.py --out benchmarks/results [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _timing import time_process  # noqa: E402

CASES = {
    "coronal_512x512x40": {"shape": (512, 40, 512), "spacing": (0.7, 3.5, 0.7)},
    "isotropic_320x320x200": {"shape": (320, 320, 200), "spacing": (1.0, 1.0, 1.0)},
}

RADIOMICS_SNIPPET = """
import sys, time
t = time.perf_counter()
import SimpleITK as sitk
from radiomics import shape
img = sitk.ReadImage(sys.argv[1])
for label in (1, 2):
    lab = sitk.ReadImage(sys.argv[2])
    f = shape.RadiomicsShape(img, lab, label=label)
    f.enableAllFeatures()
    f.execute()
print(time.perf_counter() - t)
"""


def make_case(folder: Path, shape, spacing) -> tuple[Path, Path]:
    aff = np.eye(4)
    aff[:3, :3] = np.diag(spacing)
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    centre = np.array([0.4, -0.3, 0.2])
    axes = [np.arange(n) * s + o - c for n, s, o, c in zip(shape, spacing, aff[:3, 3], centre)]
    x2 = axes[0][:, None, None] ** 2
    y2 = axes[1][None, :, None] ** 2
    z = axes[2][None, None, :]
    inside = x2 + y2 + z ** 2 <= 22.0 ** 2
    labels = inside.astype(np.uint8)
    labels[inside & (z >= 13.0)] = 2
    rng = np.random.default_rng(0)
    image = (rng.normal(300, 25, shape) + 250 * inside).astype(np.int16)
    img_path, lab_path = folder / "image.nii.gz", folder / "labels.nii.gz"
    nib.save(nib.Nifti1Image(image, aff), str(img_path))
    nib.save(nib.Nifti1Image(labels, aff), str(lab_path))
    return img_path, lab_path


def time_phases(img: Path, lab: Path, out: Path) -> dict:
    from pipeline.app.analyze import write_analysis
    from pipeline.config import Settings
    from pipeline.geometry.frame import head_frame_from_mask
    from pipeline.geometry.mesh import isotropic_reconstructions
    from pipeline.io.scan import load_scan
    from pipeline.masks.labels import import_masks
    from pipeline.measures.hip import measure_hip
    from pipeline.measures.location import location_metrics, weight_bearing_span, zone_map

    settings = Settings()
    phases = {}
    t = time.perf_counter()
    scan = load_scan(img)
    phases["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    head, lesion, seg, warnings = import_masks(scan, settings, "right", labels=lab)
    phases["import_masks_s"] = time.perf_counter() - t
    t = time.perf_counter()
    frame, _ = head_frame_from_mask(head, scan.affine, "right")
    span = weight_bearing_span(frame)
    location_metrics(head, lesion, scan.affine, frame, span)
    zone_map(head, scan.affine, frame, span)
    phases["location_s"] = time.perf_counter() - t
    t = time.perf_counter()
    isotropic_reconstructions([head, lesion], scan.affine, settings.reconstruction.voxel_mm)
    phases["isotropic_reconstruction_s"] = time.perf_counter() - t
    t = time.perf_counter()
    analysis = measure_hip(scan, head, lesion, "right", settings.model_copy(
        update={"reconstruction": settings.reconstruction.model_copy(update={"isotropic": False})}), seg, warnings)
    phases["measure_without_reconstruction_s"] = time.perf_counter() - t
    t = time.perf_counter()
    analysis = measure_hip(scan, head, lesion, "right", settings, seg, warnings)
    phases["measure_with_reconstruction_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_analysis(analysis, out, settings, time.perf_counter())
    phases["write_with_qc_png_s"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in phases.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    onfh = str(Path(sys.executable).with_name("onfh"))
    radiomics_python = os.environ.get("PYRADIOMICS_PYTHON")
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            folder = Path(tmp) / name
            folder.mkdir()
            img, lab = make_case(folder, case["shape"], case["spacing"])
            entry = {"shape": case["shape"], "spacing_mm": case["spacing"]}
            entry["onfh_analyze_process"] = time_process(
                [onfh, "analyze", str(img), "--side", "right", "--out", str(folder / "out"), "--labels", str(lab)],
                args.repeat)
            # The same job without the picture and the isotropic reconstruction: the figures that
            # pyradiomics' shape class also gives (volumes, meshes), plus location.
            light = folder / "light.yaml"
            light.write_text("outputs: {qc_png: false}\nreconstruction: {isotropic: false}\n")
            entry["onfh_analyze_process_no_qc_no_reconstruction"] = time_process(
                [onfh, "analyze", str(img), "--side", "right", "--out", str(folder / "out_light"), "--labels",
                 str(lab), "--config", str(light)], args.repeat)
            entry["phases_in_process"] = time_phases(img, lab, folder / "out_phases")
            if radiomics_python:
                script = folder / "radiomics_shape.py"
                script.write_text(RADIOMICS_SNIPPET)
                entry["pyradiomics_shape_process"] = time_process(
                    [radiomics_python, str(script), str(img), str(lab)], args.repeat)
            results["cases"][name] = entry
            print(name, json.dumps(entry), flush=True)
    path = out_dir / "analyze.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
