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
   the segment and survives with it. A drill track inside the lesion is not thin there: it is
   found where the opening removed it in the marrow and followed into the lesion as far as it is
   seen (:func:`drill_track`).
4. Components are kept when larger than ``min_lesion_ml``, reaching within
   ``surface_contact_mm`` of the head surface (a necrotic segment is subchondral) and centred
   in the upper head (the weight-bearing segment; the fovea is medial and lower).
   With lesion seeds, the components that hold a seed are kept instead, without these rules.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.geometry.affine import bounding_box, box_start, mm_to_index, shifted_affine, voxel_volume_mm3
from pipeline.segment import grid


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
    vox_ml = voxel_volume_mm3(crop.affine) / 1000.0
    info = {"components": [], "seeded": bool(seeds)}
    keep = np.zeros(n + 1, dtype=bool)
    if n:
        # per-component figures over the candidate voxels only
        where = np.nonzero(opened)
        lab = labels[where]
        rel = crop.points()[where] - np.asarray(centre, np.float32)
        depth = radius - np.sqrt((rel**2).sum(-1))  # mm under the sphere surface
        sizes = np.bincount(lab, minlength=n + 1)[1:] * vox_ml
        min_depth = np.full(n + 1, np.inf)
        np.minimum.at(min_depth, lab, depth)
        min_depth = min_depth[1:]
        cz = np.bincount(lab, weights=rel[:, 2], minlength=n + 1)[1:] / np.maximum(sizes / vox_ml, 1)
        for k, (ml, dmin, z) in enumerate(zip(sizes, min_depth, cz), start=1):
            ok = ml >= s.min_lesion_ml and dmin <= s.surface_contact_mm and z > 0.0
            keep[k] = ok
            info["components"].append({"volume_ml": round(float(ml), 3), "min_depth_mm": round(float(dmin), 2),
                                       "centroid_w_mm": round(float(z), 2), "kept": bool(ok)})
    if seeds:
        keep[:] = False
        for p in np.asarray(seeds, float).reshape(-1, 3):
            ijk = np.rint(mm_to_index(crop.affine, p)).astype(int)
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


def refine_margin(lesion: np.ndarray, healthy: np.ndarray, norm_w: np.ndarray, head_w: np.ndarray,
                  crop: grid.Crop, centre, r_m: float, settings, info: dict | None = None,
                  exclude: np.ndarray | None = None) -> np.ndarray:
    """Place the lesion's outer margin at the half-maximum of the band-to-marrow transition.

    The connectivity test uses a strict marrow level (``healthy_level``) so that a band blurred
    by thick slices still separates the core; that level also puts the margin on the marrow side
    of the transition, so partial-volume voxels holding under half lesion are counted. The
    truth of a voxel is "at least half inside the outer band edge": for a voxel mixing band
    (signal b) and marrow (m) that is signal <= (b + m) / 2. So, within ``margin_refine_voxels``
    acquisition voxels of the margin found by connectivity (default one half: partial volume
    shifts the level crossing by a fraction of the voxel across the margin, e.g. 1.75 mm across
    3.5 mm slices, 0.35 mm in plane; never less than one working voxel), and inside the marrow
    sphere:

    - the healthy side advances into the lesion through voxels brighter than the half level
      (connected to healthy marrow), and
    - the lesion advances into the healthy side through voxels darker than it (connected to
      the lesion),

    with b = the 10th percentile of the lesion's outer 3 mm (the band, or a dark core) and m =
    the local healthy-marrow signal (normalised Gaussian average, 4 mm). A bright (A/B) core
    sits behind the dark band, so the healthy side stops at the band.

    Where the core behind the margin is dark (its local signal, lesion deeper than 3 mm,
    normalised Gaussian average over 4 mm, below the half level: Mitchell C/D) the reach is
    ``margin_refine_dark_voxels`` (default one full voxel). Where the margin runs nearly along
    thick slices (a lesion's end in the slice direction) a whole end slice can hold 30-50 %
    lesion: darker than the strict level, so inside the connectivity margin, yet not lesion, a
    full slice outside the half-level margin. Between a dark core and marrow every voxel is a
    two-tissue mixture, so the half level is right at any depth; behind a bright core it is not
    (a voxel brighter than half may be a blurred band over the core), so there the reach stays
    short. Last, the subchondral
    cortex (between the marrow sphere and the head surface, dark everywhere) is lesion exactly
    over the lesion: the marrow-surface lesion is projected radially outward through it.
    Voxels in ``exclude`` (a drill track, :func:`drill_track`) are never lesion.
    """
    s = settings.segmentation
    if not lesion.any() or s.margin_refine_voxels <= 0:
        return lesion
    sp = crop.spacing
    # reach along each working axis: margin_refine_voxels acquisition voxels, at least one
    # working voxel
    reach = np.maximum(sp, s.margin_refine_voxels * sp * crop.factors / crop.blocks)
    reach_dark = np.maximum(reach, s.margin_refine_dark_voxels * sp * crop.factors / crop.blocks)
    box = bounding_box(head_w, sp, margin_mm=float(reach_dark.max()) + 6.0)
    les, hea, sig, head = lesion[box], healthy[box], norm_w[box], head_w[box]
    aff = shifted_affine(crop.affine, box_start(box))
    rel = grid.voxel_points(les.shape, aff) - np.asarray(centre, np.float32)
    rho = np.sqrt((rel**2).sum(-1))
    marrow_ball = rho <= r_m
    from scipy import ndimage as ndi

    d_in = ndi.distance_transform_edt(les, sampling=sp)  # inside: distance to its margin
    outer = les & (d_in <= 3.0) & marrow_ball & ndi.binary_dilation(hea, iterations=int(np.ceil(3.0 / sp.min())))
    if outer.sum() < 10:
        outer = les & (d_in <= 3.0) & marrow_ball
    if outer.sum() < 10:
        return lesion
    band = float(np.percentile(sig[outer], 10))
    sigma = 4.0 / sp
    num = ndi.gaussian_filter(np.where(hea, sig, 0.0).astype(np.float32), sigma)
    den = ndi.gaussian_filter(hea.astype(np.float32), sigma)
    marrow = np.where(den > 0.05, num / np.maximum(den, 1e-6), 1.0)
    half = 0.5 * (band + marrow)
    units = sp / reach  # working voxel size in units of the reach
    v_out = ndi.distance_transform_edt(~les, sampling=units)
    v_in = ndi.distance_transform_edt(les, sampling=units)
    zone = head & marrow_ball & (np.where(les, v_in, v_out) <= 1.0 + 1e-6)
    if np.any(reach_dark > reach):
        # behind a dark core the half level holds a full voxel deep (a two-tissue mixture)
        core = les & (d_in > 3.0)
        c_num = ndi.gaussian_filter(np.where(core, sig, 0.0).astype(np.float32), sigma)
        c_den = ndi.gaussian_filter(core.astype(np.float32), sigma)
        dark = (c_den > 0.05) & (c_num < half * np.maximum(c_den, 1e-6))
        units_d = sp / reach_dark
        far = np.where(les, ndi.distance_transform_edt(les, sampling=units_d),
                       ndi.distance_transform_edt(~les, sampling=units_d)) <= 1.0 + 1e-6
        zone |= head & marrow_ball & far & dark
    bright = sig > half
    # healthy side advancing: bright zone voxels connected to healthy marrow outside the lesion
    seeds = hea & ~les
    lab, _ = ndi.label((bright & zone) | seeds)
    ids = np.unique(lab[seeds])
    freed = np.isin(lab, ids[ids > 0]) & zone & les
    # lesion advancing: dark zone voxels connected to the lesion
    lab, _ = ndi.label((~bright & zone) | les)
    ids = np.unique(lab[les])
    taken = np.isin(lab, ids[ids > 0]) & zone & ~les
    new = (les & ~freed) | taken
    # subchondral cortex: lesion where the marrow just under it is lesion
    shell = head & ~marrow_ball
    if shell.any():
        pts_shell = rel[shell]
        under = pts_shell * ((r_m - 0.75) / np.maximum(rho[shell], 1e-3))[:, None] + np.asarray(centre, np.float32)
        ijk = mm_to_index(aff, under.reshape(-1, 3)).T
        vals = ndi.map_coordinates(new.astype(np.float32), ijk, order=1, mode="nearest")
        new[shell] = vals >= 0.5
    if info is not None:
        info["margin"] = {"band_signal": round(band, 3), "marrow_signal_median": round(float(np.median(marrow[zone]))
                                                                                      if zone.any() else 1.0, 3),
                          "freed_ml": round(float(freed.sum()) * float(np.prod(sp)) / 1000.0, 3),
                          "added_ml": round(float(taken.sum()) * float(np.prod(sp)) / 1000.0, 3)}
    out = lesion.copy()
    out[box] = new & head
    if exclude is not None:
        out &= ~exclude
    return out


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


def slab_boundary_cut(norm_w: np.ndarray, crop: grid.Crop, level: float, sigma_mm: float = 1.0) -> np.ndarray:
    """Working voxels between two thick slices that must not connect healthy marrow.

    A band lying nearly along the slices, between two of them, is averaged into both: with
    slices up to 5 mm, a band of at least 1.5 mm and band signal about 0.2 of marrow, each slice
    keeps at most 1 - 0.8 x 1.5 / 10 = 0.88 of the marrow signal there, above ``healthy_level``,
    so the band vanishes from the thresholded data over a patch and a core as bright as marrow
    (Mitchell A, B) joins healthy marrow through it (an axial 3.5 mm phantom: NF 24 points low).
    Healthy marrow on both sides of a slice boundary keeps about 0.95. So at the working layers
    between two native slices, where the signal is the two slices' blend, a link needs the
    blend, smoothed in plane by ``sigma_mm`` (noise averages out, a band patch does not), to
    reach ``level``.

    Parameters
    ----------
    norm_w : ndarray
        Signal on the working grid, scaled to the head's marrow (about 1).
    crop : grid.Crop
        Its working grid (which axes were subdivided, and where the native slices meet).
    level : float
        Fraction of marrow signal a slice boundary needs to connect; 0 disables the cut.
    sigma_mm : float
        In-plane Gaussian smoothing before the test, mm.

    Returns
    -------
    cut : ndarray of bool, working grid
    """
    cut = np.zeros(norm_w.shape, dtype=bool)
    if level <= 0:
        return cut
    spacing = crop.spacing
    for axis, layers in crop.slab_boundaries():
        sigma = [sigma_mm / float(v) for v in spacing]
        sigma[axis] = 0.0
        idx = np.nonzero(layers)[0]
        smooth = ndimage.gaussian_filter(np.take(norm_w, idx, axis=axis), sigma)
        where = [slice(None)] * 3
        where[axis] = idx
        cut[tuple(where)] |= smooth < level
    return cut


def track_line_contrast(norm_w: np.ndarray, bone: np.ndarray, affine: np.ndarray, anchor, directions: np.ndarray,
                        radius: float, length_mm: float, step_mm: float = 0.5) -> np.ndarray:
    """How dark a tube of ``radius`` is against a coaxial ring 1-3 mm outside it, along lines from
    ``anchor`` (mm) in each of ``directions`` (N, 3) out to ``length_mm``: the mean over the line of
    ring minus tube signal (fraction of marrow), where the ring lies in ``bone`` (a position outside
    the bone counts 0). A line that runs along a dark tube in the marrow scores about its contrast;
    one that leaves it, about 0.
    """
    anchor = np.asarray(anchor, dtype=np.float64)
    u = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    t = np.arange(step_mm, length_mm + 1e-9, step_mm)
    # cross-section: the axis and six points at half the radius (tube), sixteen at 1 and 3 mm
    # outside it (ring)
    six, eight = np.arange(6) * np.pi / 3, np.arange(8) * np.pi / 4
    r = np.concatenate([[0.0], np.full(6, 0.5 * radius), np.full(8, radius + 1.0), np.full(8, radius + 3.0)])
    a = np.concatenate([[0.0], six, eight, eight + np.pi / 8])
    helper = np.where(np.abs(u[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    v = np.cross(u, helper)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = np.cross(u, v)
    off = r[None, :, None] * (np.cos(a)[None, :, None] * v[:, None, :] + np.sin(a)[None, :, None] * w[:, None, :])
    pts = anchor + t[None, :, None, None] * u[:, None, None, :] + off[:, None, :, :]  # (N, T, 23, 3)
    values = grid.sample(norm_w, affine, pts, cval=np.nan)
    tube, ring = values[..., :7].mean(axis=-1), values[..., 7:].mean(axis=-1)
    inside = grid.sample(bone.astype(np.float32), affine, pts[..., 7:, :], cval=0.0).mean(axis=-1) > 0.5
    return np.where(inside & np.isfinite(tube) & np.isfinite(ring), ring - tube, 0.0).mean(axis=1)


def track_axis(norm_w: np.ndarray, bone: np.ndarray, affine: np.ndarray, anchor, u: np.ndarray, radius: float,
               settings) -> tuple[np.ndarray, float, float]:
    """The drill track's direction read from the line it draws through the femur's marrow.

    The piece of track next to the lesion (the stub) is often a few millimetres long; on thick
    slices it spans two slices, and its principal axis tilts toward the slice axis by tens of
    degrees, so that followed into the lesion it misses the track. Behind the stub the track runs
    on through the neck as a thin dark line. Among the directions within ``track_axis_cone_deg``
    of the stub's axis, the one whose line back from the stub's centre, over
    ``track_axis_length_mm``, is darkest against the marrow around it (:func:`track_line_contrast`)
    is the track's; the stub's own axis is kept where no line beats it or none is seen (contrast
    under ``track_contrast``: the neck outside the field of view, or a thin dark piece that is no
    track).

    Returns
    -------
    axis (unit, pointing into the lesion), its line contrast, the stub axis' line contrast
    (fractions of marrow signal).
    """
    from pipeline.segment.femur import fibonacci_directions

    s = settings.segmentation
    u = np.asarray(u, dtype=np.float64)
    dirs = fibonacci_directions(2000)
    back = dirs[dirs @ -u >= np.cos(np.radians(s.track_axis_cone_deg))]
    back = np.vstack([-u[None], back])
    score = track_line_contrast(norm_w, bone, affine, anchor, back, radius, s.track_axis_length_mm)
    best = int(np.argmax(score))
    if score[best] < s.track_contrast:
        best = 0
    return -back[best], float(score[best]), float(score[0])


def drill_track(head_w: np.ndarray, healthy: np.ndarray, lesion: np.ndarray, norm_w: np.ndarray,
                crop: grid.Crop, centre, r_m: float, settings, bone: np.ndarray | None = None
                ) -> tuple[np.ndarray, dict | None]:
    """A core-decompression drill track leading into the lesion, on the working grid.

    Core decompression leaves a straight tube (3-4 mm across) of fluid or granulation tissue from
    the lateral femoral cortex through the neck into the lesion: T1-dark like a dark core, but not
    necrosis. In the healthy marrow between the neck and the lesion it is seen as a thin, dark,
    elongated structure that the opening removes from the lesion candidate; there its radius is
    read (from the piece's volume per length), and its axis from the dark line the track draws
    back through the marrow (:func:`track_axis`, given the femur as ``bone``; the piece's own
    principal axis where no line is seen or ``bone`` is None). The tube is
    then followed along its straight axis into the lesion, 1 mm at a time, for as long as it is
    still seen: darker, by at least ``track_contrast`` (fraction of marrow), than a coaxial ring
    around it. A track hidden in a core as dark as itself (Mitchell C/D) is thus followed only as
    far as it shows.

    Returns
    -------
    track : ndarray of bool
        The track voxels (stub in the marrow and the part followed inside the lesion).
    info : dict or None
        Axis, radius and lengths for the QC record; None when no track was found.
    """
    s = settings.segmentation
    track = np.zeros_like(lesion)
    if s.track_min_length_mm <= 0 or not lesion.any():
        return track, None
    sp = crop.spacing
    candidate = head_w & ~healthy
    thin = candidate & ~grid.open_mm(candidate, sp, s.opening_mm) & ~lesion
    pts = crop.points()
    rel = pts - np.asarray(centre, np.float32)
    rho = np.sqrt((rel**2).sum(-1))
    # away from the subchondral cortex shell (thin and dark all around the head)
    thin &= rho <= r_m - s.opening_mm
    near = grid.dilate_mm(lesion, sp, 1.5)
    labels, n = ndimage.label(thin)
    best = None
    les_c = pts[lesion].mean(axis=0)
    for k in np.unique(labels[near & thin]):
        if k == 0:
            continue
        m = labels == k
        p = pts[m].astype(np.float64)
        if len(p) < 10:
            continue
        cm = p.mean(axis=0)
        w, vec = np.linalg.eigh(np.cov((p - cm).T))
        u = vec[:, -1]
        if np.dot(les_c - cm, u) < 0:
            u = -u
        t = (p - cm) @ u
        length = float(t.max() - t.min())
        vol = float(m.sum()) * float(np.prod(sp))
        radius = float(np.sqrt(vol / (np.pi * max(length, 1e-3))))
        # a tube: long, and much longer than wide
        if length < s.track_min_length_mm or radius > s.track_max_radius_mm or np.sqrt(w[1]) * 4.0 > length:
            continue
        if best is None or length > best[2]:
            best = (m, cm, length, radius, u, float(t.max()))
    if best is None:
        return track, None
    stub, cm, length, radius, u, t_end = best
    track |= stub
    axis_info = {}
    if bone is not None and s.track_axis_length_mm > 0:
        u_line, seen, stub_seen = track_axis(norm_w, bone | head_w, crop.affine, cm, u, radius, settings)
        axis_info = {"stub_axis": [round(float(x), 3) for x in u], "line_contrast": round(seen, 3),
                     "stub_axis_line_contrast": round(stub_seen, 3)}
        u = u_line
        t_end = float(((pts[stub] - cm) @ u).max())
    # follow the axis into the lesion while the tube is still darker than the ring around it
    d = pts - cm.astype(np.float32)
    t_all = d @ u.astype(np.float32)
    r_all = np.sqrt(np.maximum((d**2).sum(-1) - t_all**2, 0.0))
    inside_ml = 0.0
    t0 = t_end - 1.0
    entered, followed = False, 0.0
    for _ in range(int(4 * r_m)):
        seg = (t_all >= t0) & (t_all < t0 + 1.0)
        tube = seg & (r_all <= radius) & head_w
        ring = seg & (r_all > radius + 1.0) & (r_all <= radius + 3.0) & head_w
        if tube.sum() < 3 or ring.sum() < 3:
            break
        in_lesion = float((tube & lesion).sum()) / float(tube.sum())
        if entered and in_lesion < 0.5:
            break  # through the lesion
        if float(np.mean(norm_w[tube])) > float(np.mean(norm_w[ring])) - s.track_contrast:
            break  # no longer seen
        entered |= in_lesion >= 0.5
        track |= tube
        inside_ml += float((tube & lesion).sum())
        if entered:
            followed += 1.0
        t0 += 1.0
    info = {"axis": [round(float(x), 3) for x in u], "radius_mm": round(radius, 2),
            "seen_length_mm": round(length, 1), "followed_in_lesion_mm": round(max(followed, 0.0), 1),
            "removed_from_lesion_ml": round(inside_ml * float(np.prod(sp)) / 1000.0, 3), **axis_info}
    return track, info
