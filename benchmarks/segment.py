"""Speed of automatic `onfh analyze` (no masks) on a clinical-size coronal grid; JSON out.

Renders one phantom hip scan of 512 x 512 x 40 voxels (0.35 x 0.35 mm in plane, 3.5 mm slices,
a 179 mm field of view as a clinical coronal T1), writes it as NIfTI, then times the whole
program as a user runs it (separate process, one core: OMP/BLAS threads set to 1), and the
segmentation step alone in-process.

Usage: python benchmarks/segment.py --out benchmarks/results [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_scan(folder: Path) -> Path:
    from pipeline.synthetic import phantom as P

    rng = np.random.default_rng(77)
    params = P.random_subject_params(rng, "BENCH", lesion_sides=("right",), nf_range=(20.0, 20.1))
    subject = P.build_subject(params)
    c = np.asarray(params.right.center)
    acq = P.Acquisition(spacing_mm=(0.35, 0.35, 3.5), fov_mm=(179.2, 179.2, 140.0),
                        centre_ras=(float(c[0] + 20), float(c[1]), float(c[2] - 20)), storage="LIP",
                        render_ss=(1, 1, 3), label_ss=(2, 2, 5), label_ss_bone=(1, 1, 2))
    rendered = P.render_scan(subject, P.Visit(0.0), acq, ("right",), seed=[77, 1])
    path = folder / "bench_512x512x40.nii.gz"
    nib.save(nib.Nifti1Image(rendered.image, rendered.affine), path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    onfh = str(Path(sys.executable).with_name("onfh"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        image = make_scan(tmp)
        t_render = time.perf_counter() - t0
        shape = list(nib.load(image).shape)
        walls = []
        for k in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run([onfh, "analyze", str(image), "--side", "right", "--out", str(tmp / f"o{k}")],
                                  env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
        metrics = json.loads((tmp / "o0" / "metrics.json").read_text())
        from pipeline.config import Settings
        from pipeline.io.scan import load_scan
        from pipeline.segment import segment_hip

        scan = load_scan(image)
        t0 = time.perf_counter()
        segment_hip(scan, "right", Settings())
        t_seg = time.perf_counter() - t0
    result = {
        "case": "coronal T1 phantom, automatic analyze (no masks)",
        "shape": shape,
        "spacing_mm": [0.35, 0.35, 3.5],
        "analyze_wall_s_median": round(statistics.median(walls), 2),
        "analyze_wall_s_min": round(min(walls), 2),
        "segment_only_s": round(t_seg, 2),
        "segmentation_seconds_recorded": metrics["segmentation"]["confidence"]["seconds"],
        "render_s": round(t_render, 1),
        "target_s": 10.0,
        "threads": 1,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "segment.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
