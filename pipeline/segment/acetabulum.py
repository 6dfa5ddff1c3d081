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

from pipeline.geometry.affine import bounding_box, box_start, shifted_affine, voxel_volume_mm3
from pipeline.segment import grid


def acetabulum_mask(bright: np.ndarray, femur: np.ndarray, crop: grid.Crop, centre, radius: float,
                    settings, side: str = "right") -> tuple[np.ndarray, dict]:
    """Acetabular bone approximation on the working grid, and what was decided about its edge.

    Two readings of the pelvic marrow over the head:

    - *joined*: every marrow-like component reaching the roof region. Precise at the rim, whose
      tapering lip is thin, but a sheet of fat (pericapsular, intermuscular) that touches the
      bone through partial volume joins it and runs on around the head: the "edge" then lands
      10-15 mm too lateral.
    - *bulk*: the same after an opening by ``acetabulum_opening_mm`` (sheets thinner than twice
      that are cut), with the lip given back within that radius. Never leaks along a sheet, but
      the thin lip of the rim may be blunted (edge up to ~5 mm medial).

    The lateral edge of each is read like the measurement does
    (``location.find_acetabular_roof``). When they agree within ``acetabulum_edge_tolerance_mm``
    the joined mask is returned; otherwise the bulk one, and ``info["ambiguous"]`` says so (the
    segmentation's confidence flag and warnings repeat it).

    Returns
    -------
    bone : ndarray of bool
    info : dict with edge_u_joined_mm, edge_u_bulk_mm, chosen ("joined", "bulk" or None) and
        ambiguous (bool).
    bulk : ndarray of bool or None
        The bulk mask where the joined one was chosen (the caller falls back to it when the
        joined mask, taken to the scan's grid, reads another edge: see
        :func:`pipeline.segment.segment_hip`).
    """
    from pipeline.geometry.frame import HeadFrame
    from pipeline.measures.location import find_acetabular_roof

    s = settings.segmentation
    sp = crop.spacing
    full_shape = bright.shape
    rel = crop.points() - np.asarray(centre, np.float32)
    dist = np.sqrt((rel**2).sum(-1))
    # work in the box over the upper head (the roof, its rim and what may join them)
    region = (rel[..., 2] > -0.25 * radius) & (dist <= radius + s.acetabulum_reach_mm + 10.0)
    box = bounding_box(region)
    if box is None:
        return np.zeros(full_shape, dtype=bool), {"edge_u_joined_mm": None, "edge_u_bulk_mm": None,
                                                  "chosen": None, "ambiguous": False}
    affine = shifted_affine(crop.affine, box_start(box))
    rel, dist, bright, femur = rel[box], dist[box], bright[box], femur[box]
    # the femur grown by 1.5 mm keeps its own marrow (neck, trochanter) out
    raw = bright & ~grid.dilate_mm(femur, sp, 1.5) & (dist > radius + 1.0)
    near_roof = (dist <= radius + s.acetabulum_reach_mm) & (rel[..., 2] > 0.3 * radius)
    vox_ml = voxel_volume_mm3(affine) / 1000.0

    def roof_components(candidate):
        labels, n = ndimage.label(candidate)
        if n == 0:
            return np.zeros_like(candidate)
        ids = np.unique(labels[near_roof & candidate])
        ids = ids[ids > 0]
        if ids.size == 0:
            return np.zeros_like(candidate)
        # small fat lobules also touch the roof region: keep the components of real bone size
        sizes = ndimage.sum_labels(candidate, labels, ids) * vox_ml
        return np.isin(labels, ids[sizes >= 2.0])

    joined = roof_components(raw)
    bulk = roof_components(grid.open_mm(raw, sp, s.acetabulum_opening_mm))
    if bulk.any():
        bulk |= grid.dilate_mm(bulk, sp, s.acetabulum_opening_mm + 0.01) & raw
    frame = HeadFrame(np.asarray(centre, float), float(radius), side)
    info = {"edge_u_joined_mm": None, "edge_u_bulk_mm": None, "chosen": None, "ambiguous": False}
    masks = {}
    for name, marrow in (("joined", joined), ("bulk", bulk)):
        bone = grid.dilate_mm(marrow, sp, s.acetabulum_plate_mm) & (dist > radius) if marrow.any() else marrow
        masks[name] = bone
        if bone.any():
            u = find_acetabular_roof(bone, affine, frame, settings.location)["edge_u_mm"]
            info[f"edge_u_{name}_mm"] = None if u is None else round(float(u), 2)
    uj, ub = info["edge_u_joined_mm"], info["edge_u_bulk_mm"]
    if uj is not None and ub is not None and uj - ub > s.acetabulum_edge_tolerance_mm:
        info.update(chosen="bulk", ambiguous=True)
    elif uj is not None:
        info["chosen"] = "joined"
    elif ub is not None:
        info["chosen"] = "bulk"
    out = np.zeros(full_shape, dtype=bool)
    if info["chosen"] is not None:
        out[box] = masks[info["chosen"]]
    bulk_out = None
    if info["chosen"] == "joined" and masks["bulk"].any():
        bulk_out = np.zeros(full_shape, dtype=bool)
        bulk_out[box] = masks["bulk"]
    return out, info, bulk_out
