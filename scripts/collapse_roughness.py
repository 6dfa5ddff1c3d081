"""Head depression on hand-drawn-like head outlines (docs/method.md section 6, outline roughness).

A reader outlining the head slice by slice in ITK-SNAP or 3D Slicer does not follow the surface
to the voxel: the outline wanders by a fraction of a pixel to a pixel along each slice and from one
slice to the next. The deepest of many such wobbles over the dome reads as a depression. This
script roughens clean head label maps that way and measures them as ``onfh analyze --labels``
does, to show that the roughness term of the detection limit keeps intact heads "none" and to
find how far a real dent still shows through.

Roughness model, per slice along the scan's thickest axis: the in-plane signed distance to the
outline (pixels) plus a smooth random field (white noise Gaussian-filtered with a correlation of
``CORRELATION_PX`` pixels, scaled to an SD of ``amplitude`` pixels) plus a per-slice shift (SD half
the amplitude), thresholded at 0.

Writes ``docs/validation/collapse_roughness.json``:

* ``null``: intact heads, the sample cohort's hips (their truth label maps) and phantom heads on
  five grids, at amplitudes 0 (the clean map), 0.25, 0.5 and 1 pixel: the depth, the roughness, the
  limit and the stage.
* ``dents``: phantom dents of 2.5, 3.5 and 5 mm on rough (0.5 pixel) coronal and 1 mm outlines.

Run: ``python scripts/collapse_roughness.py`` (about 3-5 minutes on one core).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import collapse_validation as V  # noqa: E402

from pipeline.config import Settings  # noqa: E402

OUT = ROOT / "docs" / "validation" / "collapse_roughness.json"
AMPLITUDES_PX = (0.0, 0.25, 0.5, 1.0)
CORRELATION_PX = 2.0


def roughen(mask: np.ndarray, spacing, amplitude_px: float, seed: int,
            correlation_px: float = CORRELATION_PX) -> np.ndarray:
    """A hand-drawn-like copy of a binary mask: each slice along the thickest axis gets its own
    smooth wobble of SD ``amplitude_px`` pixels (see the module docstring). Deterministic in ``seed``."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if amplitude_px <= 0:
        return mask.copy()
    rng = np.random.default_rng(seed)
    thick = int(np.argmax(np.asarray(spacing, dtype=float)))
    out = np.zeros_like(mask)
    for k in range(mask.shape[thick]):
        index = [slice(None)] * 3
        index[thick] = k
        index = tuple(index)
        plane = mask[index]
        if not plane.any() or plane.all():
            out[index] = plane
            continue
        signed = np.where(plane, ndimage.distance_transform_edt(plane) - 0.5,
                          0.5 - ndimage.distance_transform_edt(~plane))
        wobble = ndimage.gaussian_filter(rng.standard_normal(plane.shape), correlation_px)
        wobble *= amplitude_px / wobble.std()
        out[index] = signed + wobble + rng.normal(0.0, amplitude_px / 2) > 0
    return out


def _row(source: str, grid: str, amplitude: float, result: dict, dent_mm: float | None = None) -> dict:
    rec = result["collapse"]
    row = {"source": source, "grid": grid, "amplitude_px": amplitude}
    if dent_mm is not None:
        row["dent_mm"] = dent_mm
    row.update({
        "depth_mm": round(result["head_depression_mm"], 3),
        "surface_roughness_mm": round(rec["surface_roughness_mm"], 3),
        "roughness_limit_mm": round(rec["roughness_limit_mm"], 3),
        "detection_limit_mm": round(rec["detection_limit_mm"], 3),
        "depth_over_roughness": round(result["head_depression_mm"] / max(rec["surface_roughness_mm"], 1e-9), 2),
        "stage": result["arco2019_collapse"],
        "narrow": rec["narrow"],
        "broad_to_limit_max": None if rec["broad_to_limit_max"] is None else round(rec["broad_to_limit_max"], 3),
    })
    return row


def sample_null(settings: Settings) -> list[dict]:
    """The sample cohort's intact hips (one read per hip and visit; ONFH06 m12 collapses)."""
    from pipeline.io.scan import load_scan
    from pipeline.masks.labels import import_masks
    from pipeline.measures.hip import measure_hip

    folder = ROOT / "sample_data"
    rows, seen = [], set()
    for line, row in enumerate(csv.DictReader(open(folder / "manifest.csv"))):
        key = (row["subject"], row["side"], row["timepoint_months"])
        if row.get("reader") or row.get("repeat") or key in seen:
            continue
        seen.add(key)
        stem = row["image"].replace(".nii.gz", "")
        truth_path = folder / f"{stem}_{row['side']}_truth.json"  # a bilateral scan has one per hip
        truth = json.loads((truth_path if truth_path.exists() else folder / f"{stem}_truth.json").read_text())
        if truth.get("dent"):
            continue
        scan = load_scan(folder / row["image"])
        head, lesion, seg, _ = import_masks(scan, settings, row["side"], folder / row["labels"], None, None, None,
                                            False)
        edge = [float(x) for x in row["acetabular_edge"].split(",")]
        for amplitude in AMPLITUDES_PX:
            rough = roughen(head, scan.spacing, amplitude, seed=1000 * line + int(100 * amplitude))
            m = measure_hip(scan, rough, lesion & rough, row["side"], settings, segmentation=seg,
                            acetabular_edge=edge).result
            result = {"head_depression_mm": m.head_depression_mm, "arco2019_collapse": m.arco2019_collapse,
                      "collapse": m.collapse}
            rows.append(_row(f"sample cohort {row['subject']} {row['side']} m{int(row['timepoint_months']):02d}",
                             "x".join(f"{s:g}" for s in m.input["spacing_mm"]), amplitude, result))
            print(rows[-1], flush=True)
    return rows


def phantom_rows(subj, depth: float, grids, amplitudes) -> list[dict]:
    rows = []
    for g, grid in enumerate(grids):
        head, _, aff, truth = V.label_grid(subj, depth, grid, (0.31, 0.17, 0.43))
        spacing = np.linalg.norm(aff[:3, :3], axis=0)
        for amplitude in amplitudes:
            rough = roughen(head, spacing, amplitude, seed=7 * g + int(100 * amplitude) + int(10 * depth))
            rows.append(_row("phantom r 23.5 mm", grid, amplitude, V.measure(rough, aff, truth),
                             dent_mm=depth if depth else None))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    started = time.perf_counter()
    settings = Settings()
    subj = V.subject()
    null = sample_null(settings) + phantom_rows(subj, 0.0, list(V.GRIDS), AMPLITUDES_PX)
    dents = []
    for depth in (2.5, 3.5, 5.0):
        dents += phantom_rows(subj, depth, ["1 mm isotropic", "coronal 0.7x0.7x3.5"], (0.5,))
    rough = [r for r in null if r["amplitude_px"] > 0]
    report = {
        "what": "head depression of intact and dented heads whose outline was roughened like a hand-drawn one "
                "(docs/method.md section 6); written by scripts/collapse_roughness.py",
        "roughness_limit_factor": settings.collapse.roughness_limit_factor,
        "detection_limit_factor": settings.collapse.detection_limit_factor,
        "correlation_px": CORRELATION_PX,
        # a wobble of half a pixel or more moves the whole outline: its false dips scale with the
        # roughness; a quarter-pixel one flips scattered voxels: its dips are narrow (breadth rule)
        "null_max_depth_over_roughness_wobble": max(r["depth_over_roughness"] for r in rough
                                                    if r["amplitude_px"] >= 0.5),
        "null_max_broad_to_limit": max((r["broad_to_limit_max"] for r in null if r["broad_to_limit_max"]),
                                       default=None),
        "dents_min_broad_to_limit": min(r["broad_to_limit_max"] or 0.0 for r in dents),
        "null": null,
        "dents": dents,
        "seconds": round(time.perf_counter() - started, 1),
    }
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: rough intact heads, largest depth / roughness "
          f"{report['null_max_depth_over_roughness_wobble']:.2f} "
          f"(factor {settings.collapse.roughness_limit_factor:g}), largest wide depth / limit "
          f"{report['null_max_broad_to_limit']} (factor {settings.collapse.breadth_factor:g})")


if __name__ == "__main__":
    main()
