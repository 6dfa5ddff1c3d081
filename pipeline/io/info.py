"""`onfh info`: geometry and series facts of an image, never patient identifiers.

Everything reported about geometry refers to the file's own voxel order (what the file stores),
so ``affine_ras`` is ``Scan.source_affine``: file voxel indices -> RAS mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.geometry.affine import voxel_volume_mm3
from pipeline.io.scan import load_scan

# The only meta keys copied into the report: a whitelist, so nothing identifying can leak in
# even if a reader one day stores more.
SERIES_KEYS = (
    "series_uid",
    "series_description",
    "series_number",
    "modality",
    "n_files",
    "n_slices",
    "slice_thickness_mm",
    "slice_gap_mm",
    "manufacturer",
    "model",
)


def scan_info(path: str | Path, series_uid: str | None = None, spacing: tuple | None = None) -> dict:
    """Geometry and series facts of one image, JSON-ready.

    Parameters
    ----------
    path : str or Path
        NIfTI, NRRD, MHA/MHD, DICOM folder or DICOM file.
    series_uid : str, optional
        SeriesInstanceUID when a DICOM folder holds several series.
    spacing : tuple of 3 floats, optional
        Voxel size (mm) for DICOM without geometry in its header.

    Returns
    -------
    dict
        ``path``, ``format``, ``shape`` (file's own voxel order), ``spacing_mm`` (per file axis),
        ``affine_ras`` (4x4, file voxel indices -> RAS mm), ``axcodes``, ``obliquity_deg``
        (largest angle between a voxel axis and its nearest world axis), ``voxel_volume_mm3``,
        ``field_of_view_mm``, ``dtype``, ``intensity_range`` ([min, max]), ``warnings``, and the
        DICOM series facts in :data:`SERIES_KEYS` when present.

    Raises
    ------
    InputError
        Whatever :func:`pipeline.io.scan.load_scan` refuses.
    """
    scan = load_scan(path, series_uid=series_uid, spacing=spacing)
    affine = np.asarray(scan.source_affine, dtype=np.float64)
    spacing_mm = [float(s) for s in scan.source_spacing]
    shape = [int(s) for s in scan.source_shape]
    data = scan.data
    if data.size:
        lo, hi = np.min(data), np.max(data)
        intensity = [_number(lo), _number(hi)]
    else:
        intensity = [None, None]
    info = {
        "path": str(path),
        "format": scan.meta.get("format"),
        "shape": shape,
        "spacing_mm": spacing_mm,
        "affine_ras": affine.tolist(),
        "axcodes": list(scan.axcodes),
        "obliquity_deg": round(obliquity_deg(affine), 4),
        "voxel_volume_mm3": voxel_volume_mm3(affine),
        "field_of_view_mm": [float(n * s) for n, s in zip(shape, spacing_mm)],
        "dtype": str(data.dtype),
        "intensity_range": intensity,
        "warnings": [str(w) for w in scan.meta.get("warnings", [])],
    }
    for key in SERIES_KEYS:
        if key in scan.meta and scan.meta[key] is not None:
            info[key] = _plain(scan.meta[key])
    return info


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and the world axis it is closest to."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = m / np.linalg.norm(m, axis=0)
    cosines = np.clip(np.abs(unit).max(axis=0), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())


def format_info(d: dict) -> str:
    """Human-readable form of :func:`scan_info`'s dict, one fact per line."""
    lines = [f"image        {d.get('path', '')}", f"format       {d.get('format')}"]
    if "series_uid" in d:
        desc = d.get("series_description") or "(no description)"
        scanner = " ".join(str(d[k]) for k in ("manufacturer", "model") if d.get(k))
        lines.append(f"series       \"{desc}\" #{d.get('series_number', '-')}, {d.get('modality', '')}"
                     + (f", {scanner}" if scanner else ""))
        lines.append(f"series uid   {d['series_uid']}")
        lines.append(f"files        {d.get('n_files')} file(s), {d.get('n_slices')} slice(s)")
        if "slice_thickness_mm" in d:
            gap = f" (gap {d['slice_gap_mm']:g} mm between slices)" if "slice_gap_mm" in d else ""
            lines.append(f"thickness    {d['slice_thickness_mm']:g} mm{gap}")
    shape = d.get("shape", [])
    lines.append(f"shape        {' x '.join(str(s) for s in shape)} voxels (file's own order)")
    lines.append(f"spacing      {' x '.join(f'{s:.6g}' for s in d.get('spacing_mm', []))} mm")
    lines.append(f"axcodes      {''.join(d.get('axcodes', []))}"
                 + (f" (oblique, up to {d['obliquity_deg']:.2f} deg off the world axes)"
                    if d.get("obliquity_deg", 0) > 0.01 else ""))
    fov = d.get("field_of_view_mm")
    if fov:
        lines.append(f"field        {' x '.join(f'{s:.1f}' for s in fov)} mm")
    lines.append("affine       voxel (i, j, k) -> RAS mm")
    for row in d.get("affine_ras", [])[:3]:
        lines.append("             [" + "  ".join(f"{v:10.4f}" for v in row) + " ]")
    lo, hi = (d.get("intensity_range") or [None, None])[:2]
    lines.append(f"values       {d.get('dtype')}, {lo} .. {hi}")
    for w in d.get("warnings", []):
        lines.append(f"warning      {w}")
    return "\n".join(lines)


def _number(value):
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    return value


def _plain(value):
    """numpy scalars to Python, so json.dumps works."""
    return value.item() if hasattr(value, "item") else value
