"""Acetabulum: the bone over the head, for the lateral edge and the medial roof end.

Pelvic marrow is bright on T1 and separated from the femoral head by the subchondral plates,
both cartilages and the joint space, so it is a different connected component from the femur's
marrow. The acetabulum is taken as the marrow-like components outside the femur that come within
``acetabulum_reach_mm`` of the head surface above the equator, grown by the subchondral plate
(``acetabulum_plate_mm``) to approach the bone surface. ``location.find_acetabular_roof`` then
reads the lateral edge and the medial end of the sourcil on the mid-coronal plane; when it finds
nothing the weight-bearing span falls back to its default and the reason is recorded.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import grid


def acetabulum_mask(bright: np.ndarray, femur: np.ndarray, crop: grid.Crop, centre, radius: float,
                    settings) -> np.ndarray:
    """Acetabular bone approximation on the working grid (bool)."""
    s = settings.segmentation
    sp = crop.spacing
    rel = crop.points() - np.asarray(centre, np.float32)
    dist = np.sqrt((rel**2).sum(-1))
    # the femur grown by 1.5 mm keeps its own marrow (neck, trochanter) out
    candidate = bright & ~grid.dilate_mm(femur, sp, 1.5) & (dist > radius + 1.0)
    labels, n = ndimage.label(candidate)
    if n == 0:
        return np.zeros_like(candidate)
    near_roof = (dist <= radius + s.acetabulum_reach_mm) & (rel[..., 2] > 0.3 * radius)
    ids = np.unique(labels[near_roof & candidate])
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(candidate)
    # small fat lobules also touch the roof region: keep the components of real bone size
    vox_ml = float(abs(np.linalg.det(crop.affine[:3, :3]))) / 1000.0
    sizes = ndimage.sum_labels(candidate, labels, ids) * vox_ml
    ids = ids[sizes >= 2.0]
    marrow = np.isin(labels, ids)
    bone = grid.dilate_mm(marrow, sp, s.acetabulum_plate_mm) & (dist > radius)
    return bone
