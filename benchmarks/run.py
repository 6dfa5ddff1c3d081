"""Speed and peak memory of `onfh analyze --labels` on clinical-size grids; JSON out.

Each case writes a synthetic scan and label map (a 22 mm head with a 9 mm cap lesion), then runs
the whole program as a separate process, as a user would, several times: wall time (median, min)
and the child's peak resident memory. Phases are also timed in-process (load, mask import,
measurement, reconstruction, writing) to show where the time goes.

If ``PYRADIOMICS_PYTHON`` names a Python that has pyradiomics (``make bench`` builds one in
``benchmarks/.venv-radiomics``: pyradiomics 3.0.1 pins numpy < 2, so it cannot share ``.venv``),
its shape features on the same masks are timed the same way (whole process) and in-process (imports
paid once, median of repeated extractions), and the JSON holds the ratios issue 16 sets goals for:
``ratio_process`` (onfh analyze process / pyradiomics process, goal <= 1.0) and
``ratio_in_process`` (onfh's per-scan in-process cost, as in ``onfh batch`` with imports paid once,
/ pyradiomics' in-process extraction, goal <= 0.5).

Usage: python benchmarks/run.py --out benchmarks/results [--repeat 5] [--cases coronal_200x200x26 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The environment as given, for the timed processes (onfh's and pyradiomics'). This process
#: times onfh in-process as ``onfh batch`` runs a scan (pipeline.app.cli.one_blas_thread: BLAS on
#: one thread unless the environment says otherwise), so it sets the same before numpy loads.
GIVEN_ENV = dict(os.environ)
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _timing import time_process  # noqa: E402

CASES = {
    "coronal_200x200x26": {"shape": (200, 26, 200), "spacing": (0.75, 3.5, 0.75)},
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

#: pyradiomics in-process: the same extraction repeated with the imports paid once; prints the
#: median seconds per scan (both labels).
RADIOMICS_IN_PROCESS_SNIPPET = """
import statistics, sys, time
import SimpleITK as sitk
from radiomics import shape
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    img = sitk.ReadImage(sys.argv[1])
    lab = sitk.ReadImage(sys.argv[2])
    for label in (1, 2):
        f = shape.RadiomicsShape(img, lab, label=label)
        f.enableAllFeatures()
        f.execute()
    times.append(time.perf_counter() - t)
print(statistics.median(times))
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


def time_in_process(img: Path, lab: Path, out: Path, repeat: int) -> dict:
    """The whole ``analyze --labels`` job (load, import, measure, write every output) repeated in
    this process, the imports paid beforehand: the per-scan cost of ``onfh batch``."""
    import shutil
    import statistics

    from pipeline.app.analyze import run_analyze
    from pipeline.config import Settings

    settings = Settings()
    walls = []
    for _ in range(repeat + 1):  # the first run pays the lazy imports (matplotlib, skimage)
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        run_analyze(img, "right", out, settings, labels=lab)
        walls.append(time.perf_counter() - t)
    return {"wall_s_median": round(statistics.median(walls[1:]), 3), "wall_s_min": round(min(walls[1:]), 3),
            "first_run_s": round(walls[0], 3), "repeat": repeat}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES),
                    help="grids to time (default: all)")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    onfh = str(Path(sys.executable).with_name("onfh"))
    radiomics_python = os.environ.get("PYRADIOMICS_PYTHON")
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "onfh_blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
                           "platform": platform.platform(),
                           "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in ((n, CASES[n]) for n in args.cases):
            folder = Path(tmp) / name
            folder.mkdir()
            img, lab = make_case(folder, case["shape"], case["spacing"])
            entry = {"shape": case["shape"], "spacing_mm": case["spacing"]}
            entry["onfh_analyze_process"] = time_process(
                [onfh, "analyze", str(img), "--side", "right", "--out", str(folder / "out"), "--labels", str(lab)],
                args.repeat, env=GIVEN_ENV)
            # The same job without the picture and the isotropic reconstruction: the figures that
            # pyradiomics' shape class also gives (volumes, meshes), plus location.
            light = folder / "light.yaml"
            light.write_text("outputs: {qc_png: false}\nreconstruction: {isotropic: false}\n")
            entry["onfh_analyze_process_no_qc_no_reconstruction"] = time_process(
                [onfh, "analyze", str(img), "--side", "right", "--out", str(folder / "out_light"), "--labels",
                 str(lab), "--config", str(light)], args.repeat, env=GIVEN_ENV)
            entry["phases_in_process"] = time_phases(img, lab, folder / "out_phases")
            entry["onfh_in_process_per_scan"] = time_in_process(img, lab, folder / "out_in_process", args.repeat)
            if radiomics_python:
                script = folder / "radiomics_shape.py"
                script.write_text(RADIOMICS_SNIPPET)
                entry["pyradiomics_shape_process"] = time_process(
                    [radiomics_python, str(script), str(img), str(lab)], args.repeat, env=GIVEN_ENV)
                script_in = folder / "radiomics_shape_in_process.py"
                script_in.write_text(RADIOMICS_IN_PROCESS_SNIPPET)
                out = subprocess.run([radiomics_python, str(script_in), str(img), str(lab), str(args.repeat)],
                                     capture_output=True, text=True, check=True, env=GIVEN_ENV).stdout
                entry["pyradiomics_shape_in_process_s_median"] = round(float(out.split()[-1]), 3)
                entry["ratio_process"] = round(entry["onfh_analyze_process"]["wall_s_median"]
                                               / entry["pyradiomics_shape_process"]["wall_s_median"], 2)
                entry["ratio_in_process"] = round(entry["onfh_in_process_per_scan"]["wall_s_median"]
                                                  / entry["pyradiomics_shape_in_process_s_median"], 2)
            results["cases"][name] = entry
            print(name, json.dumps(entry), flush=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = out_dir / "analyze.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
