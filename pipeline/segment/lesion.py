"""Necrotic lesion: the region enclosed by the T1 low-signal band, band included.

Thresholding the core fails for Mitchell A and B (a fat- or blood-like core is as bright as
marrow). What every class shares is the dark band, a closed surface that, with the subchondral
cortex, encloses the segment. So the lesion is defined by connectivity instead of signal:

1. Healthy marrow = bright voxels reachable from the lower inner head through passages wider
   than 2 x ``gap_mm`` (see :func:`femur.healthy_marrow`). A bright core behind the band is not
   reachable, whatever its signal; a dark core is not bright. Both stay out.
2. Candidate = head minus healthy marrow: the lesion (core and band), plus thin things: the
   subchondral cortex shell (1-2 mm, up to a slice thick with partial volume), the drill track
   (a 3-4 mm tube) and noise specks.
3. Opening by a ball of ``opening_mm`` (larger than the track radius and half the shell)
   removes the thin things and keeps the thick segment; the shell over the lesion belongs to
   the segment and survives with it.
4. Components are kept when larger than ``min_lesion_ml``, reaching within
   ``surface_contact_mm`` of the head surface (a necrotic segment is subchondral) and centred
   in the upper head (the weight-bearing segment; the fovea is medial and lower).
   With lesion seeds, the components that hold a seed are kept instead, without these rules.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import grid


def lesion_mask(head_w: np.ndarray, healthy: np.ndarray, crop: grid.Crop, centre, radius: float, settings,
                seeds=None, roi=None, warnings: list | None = None) -> tuple[np.ndarray, dict]:
    """Lesion on the working grid.

    Parameters
    ----------
    head_w, healthy : ndarray of bool, working grid
    crop : grid.Crop
    centre : (3,) RAS mm
    radius : float, mm
    settings : Settings
    seeds : list of (3,) RAS mm, optional
        Points inside the lesion (assisted mode).
    roi : (6,) RAS mm box, optional
        The lesion is kept inside it.
    warnings : list, optional

    Returns
    -------
    lesion : ndarray of bool
    info : dict with the components found and dropped, for the QC record.
    """
    s = settings.segmentation
    warnings = warnings if warnings is not None else []
    sp = crop.spacing
    candidate = head_w & ~healthy
    opened = grid.open_mm(candidate, sp, s.opening_mm)
    if roi is not None:
        opened &= in_box(crop.points(), roi)
    labels, n = ndimage.label(opened)
    pts = crop.points()
    rel = pts - np.asarray(centre, np.float32)
    depth = radius - np.sqrt((rel**2).sum(-1))  # mm under the sphere surface
    vox_ml = float(abs(np.linalg.det(crop.affine[:3, :3]))) / 1000.0
    info = {"components": [], "seeded": bool(seeds)}
    keep = np.zeros(n + 1, dtype=bool)
    if n:
        idx = np.arange(1, n + 1)
        sizes = ndimage.sum_labels(np.ones_like(opened, dtype=np.float32), labels, idx) * vox_ml
        min_depth = ndimage.minimum(depth, labels, idx)
        cz = ndimage.mean(rel[..., 2], labels, idx)
        for k, (ml, dmin, z) in enumerate(zip(sizes, min_depth, cz), start=1):
            ok = ml >= s.min_lesion_ml and dmin <= s.surface_contact_mm and z > 0.0
            keep[k] = ok
            info["components"].append({"volume_ml": round(float(ml), 3), "min_depth_mm": round(float(dmin), 2),
                                       "centroid_w_mm": round(float(z), 2), "kept": bool(ok)})
    if seeds:
        keep[:] = False
        for p in np.asarray(seeds, float).reshape(-1, 3):
            ijk = np.rint(grid.mm_to_index(crop.affine, p)).astype(int)
            if np.any(ijk < 0) or np.any(ijk >= np.array(labels.shape)):
                warnings.append(f"lesion seed {p.tolist()} lies outside the head crop: ignored")
                continue
            lab = labels[tuple(ijk)]
            if lab:
                keep[lab] = True
                continue
            # the seed is in a thin or bright-bounded part: take its candidate component unopened
            cl, _ = ndimage.label(candidate)
            if cl[tuple(ijk)]:
                extra = cl == cl[tuple(ijk)]
                labels[extra & (labels == 0)] = n + 1
                keep = np.append(keep, True) if len(keep) == n + 1 else keep
                keep[n + 1] = True
            else:
                warnings.append(
                    f"lesion seed {[round(float(x), 1) for x in p]} lies in marrow-like signal reached from the "
                    "healthy head: no lesion grown there"
                )
    lesion = keep[labels] & head_w
    return lesion, info


def in_box(points: np.ndarray, roi) -> np.ndarray:
    """Points (..., 3) inside an RAS box (x0, y0, z0, x1, y1, z1)."""
    r = np.asarray(roi, dtype=np.float32).reshape(2, 3)
    lo, hi = r.min(axis=0), r.max(axis=0)
    return np.all((points >= lo) & (points <= hi), axis=-1)


def band_contrast(norm_w: np.ndarray, lesion: np.ndarray, healthy: np.ndarray, spacing) -> float | None:
    """1 - (signal just inside the lesion margin) / (healthy marrow just outside), 0..1.

    A clear band gives ~0.6-0.9; a faint margin (< ``min_band_contrast``) means the boundary
    was guessed and the scan should be reviewed.
    """
    if not lesion.any():
        return None
    inside = lesion & ~grid.erode_mm(lesion, spacing, 1.5)
    outside = healthy & grid.dilate_mm(lesion, spacing, 2.0)
    if inside.sum() < 5 or outside.sum() < 5:
        return None
    return float(1.0 - np.median(norm_w[inside]) / max(np.median(norm_w[outside]), 1e-6))
