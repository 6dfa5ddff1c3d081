"""Femoral head and proximal femur on T1 MRI, without trained weights.

Steps (docs/segmentation.md):

1. Coarse grid (about 2 mm), signal divided by a smooth bright-tissue (fat / yellow marrow)
   envelope: marrow is about 1 whatever the bias field.
2. Hough vote for bright balls: every strong edge votes at distance r (``hough_radius_mm``) along
   its gradient toward the bright side. The marrow of a femoral head is a bright ball with a dark
   rim, so its edges agree on one centre; flat fat planes and the concave acetabulum do not.
3. Each peak is verified by radial profiles (bright inside, a marrow edge at one radius over
   many directions): what fails is not a femoral head (an abdomen scan finds none).
4. In a fine crop around the chosen head: marching-cubes points of the marrow surface (signal
   falling outward), robust sphere fit (RANSAC + least squares, ``frame.fit_sphere``); the head
   radius is the marrow radius plus the subchondral cortex (``cortex_offset_mm``).
5. Healthy marrow = bright voxels reached from the lower inner head after an erosion by
   ``gap_mm`` (so thin bright bridges, e.g. through gaps of a lesion's band, do not pass), grown
   back by the same radius. Femur = that marrow grown by the neck cortex, plus the head ball.
6. Neck axis and waist (``frame.neck_axis``) and the neck-plane head of docs/method.md section 2.
7. Over the upper hemisphere, the surface along radial lines where it lies inside the sphere by
   more than the collapse detection limit (a collapsed dome, :func:`dome_surface`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.errors import InputError
from pipeline.geometry.affine import fill_holes, index_to_mm, mask_points_mm, mm_to_index, shifted_affine, voxel_spacing
from pipeline.geometry.frame import SphereFit, fit_sphere, neck_axis
from pipeline.geometry.side import side_of_x
from pipeline.segment import grid


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` about evenly spread unit vectors, shape (n, 3)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


# ----------------------------------------------------------------------------------------------
# whole-image search
# ----------------------------------------------------------------------------------------------
def hough_candidates(norm: np.ndarray, affine: np.ndarray, radius_mm, n_peaks: int, bin_mm: float = 2.0):
    """Centres of bright balls by a gradient-directed Hough vote.

    Parameters
    ----------
    norm : ndarray
        Bias-normalised image (bright tissue about 1) on a coarse grid.
    affine : ndarray, shape (4, 4)
    radius_mm : (float, float)
        Radii voted for, mm (marrow ball, i.e. inside the cortex).
    n_peaks : int
    bin_mm : float
        Accumulator bin, mm.

    Returns
    -------
    list of (centre RAS mm ndarray, votes float), best first.
    """
    spacing = voxel_spacing(affine)
    smooth = ndimage.gaussian_filter(norm, 1.0 / np.maximum(spacing / 2.0, 0.5))
    g_idx = np.stack(np.gradient(smooth), axis=-1)
    # world gradient = A^-T grad_index (I(x) = I(A^-1 (x - t)))
    g = g_idx @ np.linalg.inv(affine[:3, :3])
    mag = np.linalg.norm(g, axis=-1)
    # a marrow/cortex edge changes the normalised signal by ~0.7 over a few mm
    edge = mag > 0.06
    if edge.sum() < 50:
        return []
    pts = mask_points_mm(edge, affine)
    gd = g[edge] / mag[edge][:, None]
    # the bright side must look like marrow or fat, not a muscle / fluid step
    bright_side = grid.sample(smooth, affine, pts + 3.0 * gd)
    keep = bright_side > 0.6
    pts, gd, w = pts[keep], gd[keep], mag[edge][keep]
    if len(pts) < 50:
        return []
    lo = pts.min(axis=0) - radius_mm[1]
    dims = np.ceil((pts.max(axis=0) + radius_mm[1] - lo) / bin_mm).astype(int) + 1
    acc = np.zeros(int(np.prod(dims)), dtype=np.float32)
    weight = np.minimum(w, 0.3).astype(np.float32)
    for r in np.arange(radius_mm[0], radius_mm[1] + 1e-9, 1.0):
        cell = np.floor((pts + r * gd - lo) / bin_mm).astype(int)
        ok = np.all((cell >= 0) & (cell < dims), axis=1)
        flat = np.ravel_multi_index(cell[ok].T, dims)
        acc += np.bincount(flat, weights=weight[ok], minlength=acc.size).astype(np.float32)
    acc = ndimage.gaussian_filter(acc.reshape(dims), 1.0)
    peaks = (acc == ndimage.maximum_filter(acc, size=int(round(24.0 / bin_mm)) | 1)) & (acc > 0)
    cells = np.argwhere(peaks)
    votes = acc[peaks]
    order = np.argsort(-votes)[:n_peaks]
    return [(lo + (cells[k] + 0.5) * bin_mm, float(votes[k])) for k in order]


def verify_candidate(norm: np.ndarray, affine: np.ndarray, centre, settings) -> dict:
    """Radial-profile check that a Hough peak is a femoral head (marrow ball with a rim).

    Along 200 directions the signal is followed outward from the centre to its first drop below
    ``surface_level``; a head has one drop radius over most directions (the lesion, superior, and
    the neck, inferolateral, are the exceptions) and bright marrow inside.

    Returns
    -------
    dict: ok (bool), marrow_radius_mm, coverage, inner_signal, reason.
    """
    s = settings.segmentation
    dirs = fibonacci_directions(200)
    radii = np.arange(0.0, s.hough_radius_mm[1] + 10.0, 0.5)
    pts = np.asarray(centre)[None, None, :] + radii[None, :, None] * dirs[:, None, :]
    prof = grid.sample(norm, affine, pts, cval=np.nan)
    out = {"ok": False, "marrow_radius_mm": None, "coverage": 0.0, "inner_signal": None, "reason": ""}
    # the lower inner head: a lesion is superior, so this is marrow in every head
    inner = prof[dirs[:, 2] < -0.3][:, (radii >= 3.0) & (radii <= 0.6 * s.hough_radius_mm[0])]
    if np.isnan(inner).mean() > 0.2:
        out["reason"] = "centre at the edge of the field of view"
        return out
    inner_sig = float(np.nanmedian(inner))
    out["inner_signal"] = inner_sig
    below = np.nan_to_num(prof, nan=0.0) < s.surface_level
    below[:, radii < 0.5 * s.hough_radius_mm[0]] = False
    first = np.where(below.any(axis=1), radii[np.argmax(below, axis=1)], np.nan)
    lower = dirs[:, 2] < 0.2
    if np.isnan(first[lower]).all():
        out["reason"] = "no marrow edge"
        return out
    r_m = float(np.nanmedian(first[lower]))
    coverage = float(np.mean(np.abs(first - r_m) <= 3.0))
    out.update(marrow_radius_mm=r_m, coverage=coverage)
    lo_r = s.head_radius_mm[0] - s.cortex_offset_mm - 3.0
    hi_r = s.head_radius_mm[1] - s.cortex_offset_mm + 3.0
    if inner_sig < s.min_inner_signal:
        out["reason"] = f"inner signal {inner_sig:.2f} below {s.min_inner_signal}"
    elif not lo_r <= r_m <= hi_r:
        out["reason"] = f"marrow radius {r_m:.1f} mm implausible"
    elif coverage < s.min_surface_coverage:
        out["reason"] = f"edge coverage {coverage:.2f} below {s.min_surface_coverage}"
    else:
        out["ok"] = True
    return out


def choose_head(candidates: list[dict], side: str, roi=None, seeds=None) -> dict:
    """The verified candidate of the requested hip.

    Two verified heads far apart in x are the two hips: the one on ``side`` of the midline half-way
    between them is taken (:func:`pipeline.geometry.side.side_of_x`). With one head it is taken and
    the neck direction checks the side later.
    """
    # a head is the strongest sphere in its region: weak peaks next to a far stronger verified
    # one are pelvic or trochanteric curvature
    best = max((c["votes"] for c in candidates if c["ok"]), default=0.0)
    ok = [c for c in candidates if c["ok"] and c["votes"] >= 0.25 * best]
    if roi is not None:
        r = np.asarray(roi, float).reshape(2, 3)
        ok = [c for c in ok if np.all((c["centre"] >= r.min(0)) & (c["centre"] <= r.max(0)))]
    if seeds:
        # the head that holds the lesion seeds
        sd = np.asarray(seeds, float).reshape(-1, 3)
        near = [c for c in ok if np.min(np.linalg.norm(sd - c["centre"], axis=1)) < c["marrow_radius_mm"] + 5.0]
        ok = near or ok
    if not ok:
        reasons = "; ".join(sorted({c["reason"] for c in candidates if c["reason"]})) or "no bright ball"
        raise InputError(f"no femoral head found in the image ({reasons})")
    # merge duplicates (two peaks on one head) keeping the best verified one
    heads: list[dict] = []
    for c in sorted(ok, key=lambda c: -c["coverage"] * c["votes"]):
        if all(np.linalg.norm(c["centre"] - h["centre"]) > 30.0 for h in heads):
            heads.append(c)
    heads = heads[:2] if len(heads) >= 2 and abs(heads[0]["centre"][0] - heads[1]["centre"][0]) > 60.0 else heads[:1]
    if len(heads) == 2:
        midline_x = 0.5 * (heads[0]["centre"][0] + heads[1]["centre"][0])
        return next(h for h in heads if side_of_x(h["centre"][0], midline_x=midline_x) == side)
    return heads[0]


# ----------------------------------------------------------------------------------------------
# fine stage
# ----------------------------------------------------------------------------------------------
def normal_extent_mm(native_affine: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """RMS extent (mm) of a native voxel along unit directions (N, 3): sqrt(sum_i (d.a_i)^2 s_i^2).

    1 mm along every direction for a 1 mm isotropic grid; from the in-plane size to the slice
    thickness for a thick-slice grid.
    """
    a = np.asarray(native_affine, dtype=np.float64)[:3, :3]
    proj = np.asarray(normals, dtype=np.float64) @ a  # d . (column i) = d.a_i * s_i
    return np.sqrt((proj**2).sum(axis=1))


def _refit_in_plane(pts: np.ndarray, centre, radius: float, basis: np.ndarray):
    """Least-squares sphere with the centre moving only along ``basis`` (3, 2) columns."""
    from scipy import optimize

    c0 = np.asarray(centre, dtype=np.float64)

    def residual(x):
        return np.linalg.norm(pts - (c0 + basis @ x[:2]), axis=1) - x[2]

    res = optimize.least_squares(residual, np.array([0.0, 0.0, radius]), loss="soft_l1", f_scale=0.5)
    return c0 + basis @ res.x[:2], float(abs(res.x[2]))


def fit_marrow_sphere(norm: np.ndarray, affine: np.ndarray, centre, r_guess: float, settings,
                      native_affine: np.ndarray | None = None):
    """Robust sphere through the head's marrow surface (signal falling outward), RAS mm.

    ``native_affine`` is the acquisition grid (the working grid may be subdivided): surface
    points are fitted only where that grid resolves the cortex along the surface normal.

    Returns
    -------
    SphereFit, coverage (share of 100 directions holding an inlier), points used.
    """
    from skimage.measure import marching_cubes

    s = settings.segmentation
    spacing = voxel_spacing(affine)
    c_idx = mm_to_index(affine, np.asarray(centre, float))
    half = (r_guess + 8.0) / spacing
    lo = np.maximum(np.floor(c_idx - half).astype(int), 0)
    hi = np.minimum(np.ceil(c_idx + half).astype(int) + 1, norm.shape)
    sub = norm[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    if min(sub.shape) < 3:
        raise InputError("no femoral head found: the head lies at the edge of the field of view")
    verts, *_ = marching_cubes(sub, level=s.surface_level)
    pts = index_to_mm(affine, verts + lo)
    rel = pts - centre
    dist = np.linalg.norm(rel, axis=1)
    shell = (dist > 0.5 * r_guess) & (dist < r_guess + 8.0)
    pts, rel, dist = pts[shell], rel[shell], dist[shell]
    radial = rel / dist[:, None]
    inner = grid.sample(norm, affine, pts - 1.0 * radial, cval=0.0)
    outer = grid.sample(norm, affine, pts + 1.0 * radial, cval=1.0)
    falling = inner > outer + 0.1
    pts, radial = pts[falling], radial[falling]
    if len(pts) < 50:
        raise InputError("no femoral head found: too few marrow-surface points")
    if len(pts) > 20000:
        keep = slice(None, None, len(pts) // 20000 + 1)
        pts, radial = pts[keep], radial[keep]
    rr = (s.head_radius_mm[0] - s.cortex_offset_mm, s.head_radius_mm[1] - s.cortex_offset_mm)
    # near the radius the candidate's radial profiles verified: a collapsed dome takes inliers
    # from the head's sphere, and the concentric acetabular surfaces beyond must not win
    tol = s.fit_radius_tolerance_mm
    rr = (max(rr[0], r_guess - tol), min(rr[1], r_guess + tol))
    inlier = float(max(1.0, 0.5 * spacing.max() + 0.3))
    fit = fit_sphere(pts, inlier_mm=inlier, radius_range_mm=rr, n_hypotheses=1500, neighbourhood_mm=50.0, seed=0)
    # Partial volume across thick slices: where the surface runs along the slices, a slab
    # averages marrow, the ~1 mm dark cortex and the cartilage beyond; the cortex is not
    # resolved and the half-signal level moves outward by up to ~1 mm. The shift is the same at
    # both poles, so the centre of the fit over all points stands, but the radius is read only
    # from the surface points whose normal the acquisition samples finely (voxel extent along
    # the normal <= fit_resolution_mm; every point of a 1 mm isotropic scan).
    extent = normal_extent_mm(native_affine if native_affine is not None else affine, radial)
    limit = max(s.fit_resolution_mm, 1.05 * float(extent.min()))
    dist = np.linalg.norm(pts - fit.center, axis=1)
    on = np.abs(dist - fit.radius) <= inlier
    resolved = on & (extent <= limit)
    if resolved.sum() >= 50 and not np.all(resolved[on]):
        # refit on the resolved inliers; they lie near the great circle across the slices, so
        # the centre's position along the slice axis (weakly constrained by them) is kept from
        # the fit over all points
        na = np.asarray(native_affine if native_affine is not None else affine, dtype=np.float64)[:3, :3]
        k = int(np.argmax(np.linalg.norm(na, axis=0)))
        ax = na[:, k] / np.linalg.norm(na[:, k])
        basis = np.linalg.svd(np.eye(3) - np.outer(ax, ax))[0][:, :2]  # in-plane directions
        fit = SphereFit(*_refit_in_plane(pts[resolved], fit.center, fit.radius, basis), fit.rms_mm, fit.n_inliers,
                        fit.n_points)
    # coverage over every marrow-surface point (the partial-volume shift is < the band)
    d = np.abs(np.linalg.norm(pts - fit.center, axis=1) - fit.radius) <= inlier + 1.0
    bins = np.argmax(((pts[d] - fit.center) / fit.radius) @ fibonacci_directions(100).T, axis=1)
    coverage = len(np.unique(bins)) / 100.0
    return fit, coverage, pts


def healthy_marrow(norm_w: np.ndarray, affine: np.ndarray, centre, r_m: float, level: float, gap_mm: float,
                   cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Marrow connected to the lower inner head, with thin bridges cut.

    Parameters
    ----------
    norm_w : ndarray
        Signal scaled to the head's yellow marrow (about 1).
    affine : ndarray, shape (4, 4)
        Grid of ``norm_w`` (isotropic-ish working grid).
    centre, r_m :
        Marrow sphere, RAS mm and mm.
    level : float
        Marrow-like signal is above this.
    gap_mm : float
        Erosion radius: passages narrower than 2 x gap_mm do not connect.
    cut : ndarray of bool, optional
        Voxels that connect nothing (after the erosion): e.g. slice boundaries a band lies on.

    Returns
    -------
    healthy : ndarray of bool
        Bright marrow reached from the lower inner head through passages wider than 2 x gap_mm
        (grown back by gap_mm inside the bright voxels).
    bright : ndarray of bool
        Marrow-like signal (> level).
    """
    sp = voxel_spacing(affine)
    bright = norm_w > level
    core = grid.erode_mm(bright, sp, gap_mm)
    if cut is not None:
        core &= ~cut
    # seeds: the lower inner head (never lesion), looked for in the box of the inner ball only
    c_idx = mm_to_index(affine, np.asarray(centre, float))
    half = np.ceil(0.6 * r_m / sp).astype(int) + 1
    lo = np.clip(np.floor(c_idx).astype(int) - half, 0, norm_w.shape)
    hi = np.clip(np.floor(c_idx).astype(int) + half + 1, 0, norm_w.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub_aff = shifted_affine(affine, lo)
    rel = grid.voxel_points(tuple(int(b - a) for a, b in zip(lo, hi)), sub_aff) - np.asarray(centre, np.float32)
    dist = np.sqrt((rel**2).sum(-1))
    seeds = np.zeros_like(core)
    seeds[box] = core[box] & (dist < 0.6 * r_m) & (rel[..., 2] < -0.2 * r_m)
    if not seeds.any():
        seeds[box] = core[box] & (dist < 0.6 * r_m)
    if not seeds.any():
        raise InputError("no femoral head found: no marrow signal inside the fitted head sphere")
    labels, _ = ndimage.label(core)
    ids = np.unique(labels[seeds])
    reached = np.isin(labels, ids[ids > 0])
    healthy = grid.dilate_mm(reached, sp, gap_mm + 0.01) & bright
    return healthy, bright


def femur_mask(healthy: np.ndarray, crop: grid.Crop, centre, radius: float, settings) -> np.ndarray:
    """Proximal femur on the working grid: healthy marrow (holes filled) grown by the neck cortex,
    plus the head ball (a dark lesion is bone too)."""
    s = settings.segmentation
    filled = fill_holes(healthy)
    femur = grid.dilate_mm(filled, crop.spacing, s.neck_cortex_mm)
    box = crop.ball_box(centre, radius)  # the test is false outside it
    rel = crop.points(box) - np.asarray(centre, np.float32)
    femur[box] |= (rel**2).sum(-1) <= radius**2
    labels, n = ndimage.label(femur)
    if n > 1:
        c_idx = np.clip(np.rint(mm_to_index(crop.affine, np.asarray(centre))).astype(int), 0, np.array(femur.shape) - 1)
        femur = labels == labels[tuple(c_idx)]
    return femur


def neck_plane_head(femur: np.ndarray, crop: grid.Crop, centre, radius: float, warnings: list):
    """Neck axis, waist and the cut distance sqrt(r^2 - rho^2) (docs/method.md section 2)."""
    n, rho, waist = neck_axis(femur, crop.affine, np.asarray(centre, float), radius, warnings=warnings)
    if rho >= radius:
        warnings.append(f"neck waist radius {rho:.1f} mm is not smaller than the head radius {radius:.1f} mm")
    cut = float(np.sqrt(max(radius**2 - rho**2, 0.0)))
    return n, float(rho), waist, cut


def head_on_grid(shape, affine, centre, radius: float, n, cut: float) -> np.ndarray:
    """Voxels whose centre lies in the ball and on the head's side of the neck plane."""
    rel = grid.voxel_points(shape, affine) - np.asarray(centre, np.float32)
    return ((rel**2).sum(-1) <= radius**2) & (rel @ np.asarray(n, np.float32) <= cut)


def head_fraction_mask(shape, affine, centre, radius: float, n, cut: float, sub_mm: float = 0.35,
                       surface: RadialSurface | None = None) -> np.ndarray:
    """Voxels at least half inside the neck-plane head (ball ∩ half-space), by supersampling.

    The rule of the reference label maps (a voxel is labelled when at least half of it lies in
    the structure). The voxel-centre test overstates a convex body on thick slices: at the
    poles of the sphere and along the cut plane a slab whose centre is just inside holds less
    than half of the head. Voxels farther than half their diagonal from the boundary are
    decided by their centre; the others are supersampled on a grid of about ``sub_mm``.
    ``surface`` (:class:`RadialSurface`, :func:`dome_surface`): the ball's surface where a
    collapsed dome lies inside it.
    """
    a = np.asarray(affine, dtype=np.float64)
    sp = voxel_spacing(a)
    c = np.asarray(centre, np.float32)
    n = np.asarray(n, np.float32)
    rel = grid.voxel_points(shape, a) - c
    dent = surface is not None and surface.depressed
    if dent:
        f = np.maximum(surface.inside_excess(rel).astype(np.float32), rel @ n - cut)
    else:
        f = np.maximum(np.sqrt((rel**2).sum(-1)) - radius, rel @ n - cut)
    half_diag = 0.5 * float(np.linalg.norm(sp))
    out = f <= -half_diag
    border = np.abs(f) < half_diag
    if border.any():
        k = np.maximum(1, np.ceil(sp / sub_mm)).astype(int)
        offs = np.stack(np.meshgrid(*[(np.arange(m) + 0.5) / m - 0.5 for m in k], indexing="ij"), -1).reshape(-1, 3)
        offs_mm = (offs @ a[:3, :3].T).astype(np.float32)
        idx = np.argwhere(border)
        centres = index_to_mm(a, idx).astype(np.float32) - c
        frac = np.empty(len(idx), dtype=np.float32)
        step = max(1, 2_000_000 // len(offs_mm))
        for s0 in range(0, len(idx), step):
            q = centres[s0 : s0 + step, None, :] + offs_mm[None]
            if dent:
                inside = (surface.inside_excess(q) <= 0) & (q @ n <= cut)
            else:
                inside = ((q**2).sum(-1) <= radius**2) & (q @ n <= cut)
            frac[s0 : s0 + step] = inside.mean(axis=1)
        out[tuple(idx.T)] = frac >= 0.5
    return out



# ----------------------------------------------------------------------------------------------
# collapsed dome: the articular surface where it lies inside the sphere (issue 15)
# ----------------------------------------------------------------------------------------------
class RadialSurface:
    """The head's outer surface as a radius per direction from the sphere centre.

    ``directions`` (M, 3) unit vectors about evenly spread over the sphere, ``radius`` (M,) mm;
    between directions the radius is interpolated by inverse angular distance over the
    ``k`` nearest. Where no depression was accepted the radius is the sphere's.
    """

    def __init__(self, centre, directions: np.ndarray, radius: np.ndarray, sphere_radius: float, k: int = 4):
        from scipy.spatial import cKDTree

        self.centre = np.asarray(centre, dtype=np.float64)
        self.directions = np.asarray(directions, dtype=np.float64)
        self.radius = np.asarray(radius, dtype=np.float64)
        self.sphere_radius = float(sphere_radius)
        self.k = int(k)
        self._tree = cKDTree(self.directions)

    @property
    def depressed(self) -> bool:
        return bool(np.any(self.radius < self.sphere_radius - 1e-6))

    def radius_along(self, unit: np.ndarray) -> np.ndarray:
        """Surface radius (mm) along unit directions (..., 3)."""
        u = np.asarray(unit, dtype=np.float64)
        flat = u.reshape(-1, 3)
        d, j = self._tree.query(flat, k=self.k)
        w = 1.0 / np.maximum(d, 1e-6) ** 2
        r = (w * self.radius[j]).sum(axis=1) / w.sum(axis=1)
        return r.reshape(u.shape[:-1])

    def inside_excess(self, rel: np.ndarray) -> np.ndarray:
        """|p - c| - r(e) for offsets ``rel`` = p - c (..., 3), mm (negative inside)."""
        rel = np.asarray(rel, dtype=np.float64)
        dist = np.sqrt((rel**2).sum(-1))
        unit = rel / np.maximum(dist, 1e-9)[..., None]
        return dist - self.radius_along(unit)


def first_rising_edge(prof: np.ndarray, radii: np.ndarray, min_rise: float, min_slope: float,
                      min_dip=0.08, inner_mm: float = 3.0) -> np.ndarray:
    """Per profile (rows, sampled outward at ``radii``): the radius of the first rising edge
    outward of the outermost dark dip, NaN where there is none.

    A dip is a local minimum the signal rises from by at least ``min_rise`` farther out in the
    window and by at least ``min_dip`` within ``inner_mm`` inward (the subchondral cortex, a
    dark line on T1 between marrow or lesion and cartilage or joint fluid); the edge
    is the first local maximum of the outward slope beyond the dip reaching ``min_slope`` (per
    mm), refined to sub-sample by a parabola: the cortex's outer face, the bone surface.
    ``min_dip`` is a number or one value per profile.
    """
    step = float(radii[1] - radii[0])
    n = prof.shape[1]
    out = np.full(prof.shape[0], np.nan)
    slope = np.gradient(prof, step, axis=1)
    inner = max(3, int(round(inner_mm / step)))
    min_dip = np.broadcast_to(np.asarray(min_dip, dtype=np.float64), (prof.shape[0],))
    for i in range(prof.shape[0]):
        p = prof[i]
        if not np.all(np.isfinite(p)):
            continue
        # outer running maximum: how far the signal rises beyond each sample
        rise = np.maximum.accumulate(p[::-1])[::-1] - p
        # and rises inward too, within ``inner_mm``: a dark line, not a noisy plateau of fluid
        back = ndimage.maximum_filter1d(p, size=inner, origin=(inner - 1) // 2, mode="nearest") - p
        is_min = np.zeros(n, dtype=bool)
        is_min[1:-1] = (p[1:-1] <= p[:-2]) & (p[1:-1] <= p[2:])
        dips = np.flatnonzero(is_min & (rise >= min_rise) & (back >= min_dip[i]))
        if len(dips) == 0:
            continue
        j0 = dips[-1]
        g = slope[i]
        peaks = np.flatnonzero((g[j0 + 1 : -1] >= g[j0:-2]) & (g[j0 + 1 : -1] > g[j0 + 2 :])
                               & (g[j0 + 1 : -1] >= min_slope)) + j0 + 1
        if len(peaks) == 0:
            continue
        j = peaks[0]
        den = g[j - 1] - 2 * g[j] + g[j + 1]
        off = 0.5 * (g[j - 1] - g[j + 1]) / den if den < 0 else 0.0
        out[i] = radii[j] + float(np.clip(off, -0.5, 0.5)) * step
    return out


#: The dome's top, whose read share is checked (``dome_min_top_share``): directions within this
#: angle of world superior, degrees.
TOP_CAP_DEG = 45.0


def dome_surface(norm_w: np.ndarray, crop_affine: np.ndarray, scan_affine: np.ndarray, centre, radius: float, n,
                 cut: float, settings, n_directions: int = 4000) -> tuple[RadialSurface, dict]:
    """The articular surface of the upper head where the image shows it inside the sphere.

    Along radial lines from the sphere centre over the upper hemisphere (world superior, clear
    of the neck cut), the bone surface is the outer face of the subchondral cortex
    (:func:`first_rising_edge` on the marrow-scaled signal, from ``dome_search_mm`` inside the
    sphere to ``dome_outer_mm`` outside it; the dip's inward rise ``dome_min_dip`` asked in
    proportion finest spacing / the scan voxel's extent along the line). Its inward deviation from the sphere, less the
    median deviation over the intact dome (the sphere radius' own offset from that edge; lines deeper than the
    detection limit are left out of that median, trimmed until the set kept is stable, and once a dent is
    accepted the median is read again clear of it), is averaged
    over the surface by a Gaussian of ``dome_sigma_mm`` and accepted only where it exceeds the
    collapse detection limit along that direction (:func:`pipeline.measures.collapse.detection_limit_mm`);
    there and within ``dome_sigma_mm`` x 2 of it the radius follows the image (the median depth
    over ``dome_median_mm``, without the Gaussian average, which would flatten a narrow dent),
    elsewhere the sphere is kept, so an intact head keeps its sphere.

    Returns
    -------
    RadialSurface, info dict (``accepted_directions``, ``max_depth_mm``, ``edge_offset_mm``,
    ``edges_found``, ``top_edges_found_share``: the share of lines within :data:`TOP_CAP_DEG` of
    superior that found the surface).
    """
    from scipy.spatial import cKDTree

    from pipeline.measures.collapse import detection_limit_mm, radial_extent_mm

    s = settings.segmentation
    centre = np.asarray(centre, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    dirs = fibonacci_directions(n_directions)
    radii_out = np.full(len(dirs), float(radius))
    dome = (dirs[:, 2] > s.dome_min_elevation) & (dirs @ n * radius < cut - s.dome_neck_margin_mm)
    info = {"accepted_directions": 0, "max_depth_mm": 0.0, "edge_offset_mm": None, "edges_found": 0,
            "top_edges_found_share": None}
    if dome.sum() < 20:
        return RadialSurface(centre, dirs, radii_out, radius), info
    step = 0.1
    radii = np.arange(radius - s.dome_search_mm, radius + s.dome_outer_mm + 1e-9, step)
    e = dirs[dome]
    pts = centre[None, None, :] + radii[None, :, None] * e[:, None, :]
    prof = grid.sample(norm_w, crop_affine, pts, cval=np.nan).astype(np.float64)
    prof = ndimage.gaussian_filter1d(prof, s.dome_profile_sigma_mm / step, axis=1, mode="nearest")
    # the inward rise of the dip scales with the scan voxel's extent along the line: a cortex
    # thinner than that extent keeps about (finest spacing / extent) of its contrast against
    # what lies inside it, which on a 3-4 mm slice is often as dark (a lesion, blurred fluid), so
    # along thick-slice lines ``dome_min_dip`` is asked in that proportion (unchanged in-plane and
    # on isotropic voxels). The outward rise and slope are not lowered: in a dark lesion they
    # would pass noise (false depths on intact heads).
    extent = radial_extent_mm(e, scan_affine)
    finest = float(np.linalg.norm(np.asarray(scan_affine, dtype=np.float64)[:3, :3], axis=0).min())
    min_dip = s.dome_min_dip * np.minimum(1.0, finest / extent)
    edge = first_rising_edge(prof, radii, s.dome_min_rise, s.dome_min_slope, min_dip)
    # what lies between a surface found inside the sphere and the sphere is no bone: never
    # marrow-like signal (a dark band with a bright core beyond it is lesion, not a dent)
    beyond = (radii[None, :] > edge[:, None]) & (radii[None, :] < radius - 0.5)
    bright = np.any(beyond & (prof > s.bright_level), axis=1)
    edge[bright] = np.nan
    found = np.isfinite(edge)
    info["edges_found"] = int(found.sum())
    # how much of the dome's top the slices let us read: a collapse where no edge is found is
    # invisible to this step (axial 3 mm slices: about 0.3 of the lines within 45 degrees of
    # superior, against 0.7-0.9 on coronal, sagittal and 1 mm grids)
    top = e[:, 2] > np.sin(np.radians(90.0 - TOP_CAP_DEG))
    info["top_edges_found_share"] = round(float(found[top].mean()), 3) if top.any() else None
    if found.sum() < 20:
        return RadialSurface(centre, dirs, radii_out, radius), info
    raw = radius - edge
    limit = detection_limit_mm(e, scan_affine, settings.collapse.detection_limit_factor)
    # the sphere radius' own offset from the edge is a property of the intact surface: the lines
    # deeper than the detection limit (a dent's) are left out of its median, else a broad dent
    # raises it and every depth, the dent's included, shrinks by that much (0.3 mm for a 5 mm
    # dent on 3.5-4 mm slices). Trimmed until the set of lines kept no longer changes (two or
    # three passes; ten at most).
    offset = float(np.median(raw[found]))
    kept = found
    for _ in range(10):
        keep = found & (raw - offset < limit)
        if keep.sum() < 20 or np.array_equal(keep, kept):
            break
        kept = keep
        offset = float(np.median(raw[keep]))
    tree = cKDTree(e)
    sigma = s.dome_sigma_mm
    chord = 2.0 * np.sin(min(s.dome_median_mm / radius, np.pi) / 2.0)
    around = tree.query_ball_point(e, chord)
    pairs = tree.query_ball_point(e, 2.0 * np.sin(min(3.0 * sigma / radius, np.pi) / 2.0))

    def depths(offset):
        """(median depth, its Gaussian average) per direction."""
        # no surface seen: no evidence of a dent there (the sphere's depth, 0)
        dev = np.where(found, np.clip(raw - offset, -2.0, s.dome_search_mm), 0.0)
        # a median over each direction's neighbourhood (single wrong edges go), then a Gaussian
        # average over the surface (arc length on the sphere)
        med = np.array([np.median(dev[nb]) for nb in around])
        out = np.zeros(len(e))
        for i, nb in enumerate(pairs):
            nb = np.asarray(nb)
            ang = np.arccos(np.clip(e[nb] @ e[i], -1.0, 1.0))
            w = np.exp(-0.5 * (ang * radius / sigma) ** 2)
            out[i] = float((w * med[nb]).sum() / w.sum())
        return med, out

    med, depth = depths(offset)
    accepted = depth > limit
    if accepted.any():
        # a dent's rim, shallower than the limit, still raises that median: once the dent is
        # found, the offset is read again clear of it (beyond the reach of the median and of
        # the zone that follows the image, dome_median_mm + 2 dome_sigma_mm, from any accepted
        # direction) and the depths follow (coronal 3.5 mm slices, 5 mm dent: offset -0.01 ->
        # -0.14 mm, -0.10 on the intact head of the same grid; automatic depression 4.49 -> 4.57
        # mm). An intact head accepts nothing and is unchanged.
        d_acc, _ = cKDTree(e[accepted]).query(e, k=1)
        reach = 2.0 * np.sin(min((s.dome_median_mm + 2.0 * sigma) / radius, np.pi) / 2.0)
        clear = found & (d_acc > reach) & (raw - offset < limit)
        if clear.sum() >= 20:
            offset = float(np.median(raw[clear]))
            med, depth = depths(offset)
            accepted = depth > limit
    info["edge_offset_mm"] = offset
    info["accepted_directions"] = int(accepted.sum())
    if accepted.any():
        d_acc, _ = cKDTree(e[accepted]).query(e, k=1)
        near = d_acc <= 2.0 * sigma / radius
        # the Gaussian average decides where a dent is (noise-proof); the surface followed there
        # is the median depth, before that average: the measurement averages the surface again
        # (collapse.averaging_sigma_mm), and averaging twice flattens a narrow dent's floor (a
        # 10 mm wide, 2.5 mm deep crater on 1 mm voxels, measured before the floor extrapolation:
        # 1.91 mm with the average, 1.99 without)
        follow = near & (med > 0)
        r_dome = radii_out[dome]
        r_dome[follow] = radius - med[follow]
        radii_out[dome] = r_dome
        info["max_depth_mm"] = float(depth[accepted].max())
    return RadialSurface(centre, dirs, radii_out, radius), info
