"""Mesh volume against pyradiomics' MeshVolume on thick-slice coronal lesions (issue 16); JSON out.

Makes the lesion masks of two synthetic coronal scans at 0.75 x 0.75 x 3.5 mm (phantom subjects
of ``pipeline.synthetic.phantom``, seeds 1000 and 1001, the right hip's lesion label thresholded
at half a voxel), cropped to the lesion with one empty voxel around it, and measures each one's
mesh volume with pyradiomics 3.0.1 (``PYRADIOMICS_PYTHON``, the benchmark venv) in three placements
of the same voxels: as cropped, shifted by 10 voxels along every axis, and mirrored along every
axis; and with onfh (``pipeline.geometry.mesh``: the classic Lorensen table and the Lewiner one).

pyradiomics folds the marching-cubes case table by complement symmetry (a cube whose corner 7 is
inside is triangulated as its complement), so two cubes sharing an ambiguous face may resolve it
differently and leave a crack; its divergence-theorem volume then depends on where the mask lies.
The masks and the pyradiomics figures printed here are the ones pinned in
``tests/test_pyradiomics_agreement.py``.

Usage: PYRADIOMICS_PYTHON=benchmarks/.venv-radiomics/bin/python python benchmarks/pyradiomics_mesh.py
       [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACING = (0.75, 0.75, 3.5)
SEEDS = (1000, 1001)

RADIOMICS_SNIPPET = """
import json, sys
import numpy as np, SimpleITK as sitk
from radiomics import shape
import logging; logging.getLogger("radiomics").setLevel(logging.ERROR)
lab = sitk.ReadImage(sys.argv[1])
a = sitk.GetArrayFromImage(lab)
def mesh_volume(b):
    m = sitk.GetImageFromArray(np.ascontiguousarray(b)); m.SetSpacing(lab.GetSpacing())
    f = shape.RadiomicsShape(sitk.Cast(m, sitk.sitkInt16), m, label=1)
    f.enableFeatureByName("MeshVolume"); f.enableFeatureByName("VoxelVolume"); f.execute()
    return float(f.featureValues["MeshVolume"]), float(f.featureValues["VoxelVolume"])
out = {"as_cropped": mesh_volume(a)[0], "shifted_10": mesh_volume(np.pad(a, ((10, 0),) * 3))[0],
       "mirrored": mesh_volume(a[::-1, ::-1, ::-1])[0], "voxel_volume": mesh_volume(a)[1]}
print(json.dumps(out))
"""


def lesion_crop(seed: int) -> np.ndarray:
    """The right hip's lesion of phantom subject ``seed`` on a 0.75 x 0.75 x 3.5 mm coronal grid,
    cropped to its bounding box plus one empty voxel (array axes: x, z, y of the acquisition)."""
    from pipeline.geometry.affine import bounding_box
    from pipeline.synthetic import phantom as P

    params = P.random_subject_params(np.random.default_rng(seed), f"S{seed}", lesion_sides=("right",))
    subject = P.build_subject(params)
    acq = P.Acquisition(spacing_mm=SPACING, fov_mm=(80.0, 80.0, 80.0), centre_ras=tuple(params.right.center))
    aff, shape = P.acquisition_grid(acq)
    fr = P.truth_fractions(subject, "right", P.Visit(), aff, shape, acq.label_ss, acq.label_ss_bone)
    lesion = (fr["lesion"] >= 0.5) & (fr["head"] >= 0.5)
    return np.ascontiguousarray(lesion[bounding_box(lesion, margin=1)])


def pack(mask: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.packbits(mask.ravel()).tobytes(), 9)).decode()


def main() -> int:
    from pipeline.geometry.mesh import mask_mesh, mesh_volume_mm3

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    radiomics_python = os.environ.get("PYRADIOMICS_PYTHON")
    results = {"spacing_mm": SPACING, "pyradiomics_python": radiomics_python, "cases": {}}
    aff = np.diag([*SPACING, 1.0])
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            mask = lesion_crop(seed)
            entry = {"shape": list(mask.shape), "packed_mask": pack(mask)}
            for method in ("lorensen", "lewiner"):
                from pipeline.geometry import mesh

                saved, mesh.MC_METHOD = mesh.MC_METHOD, method
                try:
                    entry[f"onfh_{method}_mm3"] = mesh_volume_mm3(*mask_mesh(mask, aff))
                finally:
                    mesh.MC_METHOD = saved
            if radiomics_python:
                # NIfTI (x, y, z) -> SimpleITK array (z, y, x): the same voxels and spacing
                path = Path(tmp) / f"lesion{seed}.nii.gz"
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), str(path))
                script = Path(tmp) / "radiomics_mesh.py"
                script.write_text(RADIOMICS_SNIPPET)
                out = subprocess.run([radiomics_python, str(script), str(path)], capture_output=True, text=True,
                                     check=True).stdout
                entry["pyradiomics_mesh_volume_mm3"] = json.loads(out)
            results["cases"][str(seed)] = entry
            print(seed, json.dumps({k: v for k, v in entry.items() if k != "packed_mask"}), flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pyradiomics_mesh.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
