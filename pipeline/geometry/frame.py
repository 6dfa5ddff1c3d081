"""The femoral-head frame (docs/method.md sections 1 and 2).

Sphere fit, neck axis and waist, head isolation from a femur mask, the (u, v, w) head frame and
sampling of masks on the mid-coronal and mid-sagittal planes.

Every function takes boolean masks on one voxel grid plus the 4x4 affine that maps voxel indices
to RAS millimetres, and works in world millimetres through that affine. Nothing assumes an axis
order, isotropic spacing or an axis-aligned grid: an oblique or mirrored acquisition of the same
anatomy gives the same answers up to discretisation.

Choices where docs/method.md leaves room:

* Surface points are marching-cubes vertices (level 0.5) of the binary mask, minus the surface
  that the edge of the field of view creates.
* The sphere fit is RANSAC over 4-point sets (fixed seed, companions drawn near the seed, radius
  12-40 mm), then geometric least squares on the inliers, repeated until the inlier set is
  stable; the inlier band is max(1.5 mm, half the largest voxel edge + 0.5 mm); the RMS residual
  is over the inliers.
* "One voxel" in the neck-plane head (|p - c| <= r + one voxel) is the largest voxel edge.
* The waist is the smallest equivalent-circle radius sqrt(A / pi) of the femur's cross-sections
  perpendicular to the neck axis. Sections cut by the field of view only bound the area from
  below; they are used (with a warning) only when no complete section exists.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from pipeline.errors import InputError
from pipeline.geometry.affine import (
    bounding_box,
    box_start,
    column_bounds,
    index_to_mm,
    mask_points_mm,
    mm_to_index,
    row_norms,
    voxel_spacing,
    within_grid,
)
from pipeline.geometry.side import check_side, side_of_x

#: Plausible femoral-head radii, mm. Adult heads are 40-50 mm across (docs/method.md section 7); the
#: range is wide so that small or large heads are fitted, yet excludes the shaft and the pelvis.
HEAD_RADIUS_RANGE_MM = (12.0, 40.0)

#: RANSAC companions are drawn within this distance of a seed point: a head diameter and a
#: margin, so that a long shaft does not dilute the chance of an all-head sample.
HEAD_NEIGHBOURHOOD_MM = 50.0

#: How far beyond the head sphere the neck is looked for, mm.
NECK_SHELL_MM = 30.0


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------
def sample_mask(mask: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, order: int = 0):
    """Value of a mask at world points.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    points_mm : ndarray, shape (..., 3)
        RAS mm.
    order : {0, 1}
        0: the voxel whose centre is nearest. 1: trilinear interpolation of the 0/1 mask
        thresholded at 0.5, whose boundary runs half-way between inside and outside voxel
        centres instead of along voxel faces (less biased for angles measured at extremes).

    Returns
    -------
    values : ndarray of bool, shape (...)
        False outside the grid.
    in_fov : ndarray of bool, shape (...)
        The point falls inside the image grid (within half a voxel of a voxel centre).
    """
    (values,), in_fov = sample_masks([mask], affine, points_mm, order)
    return values, in_fov


def sample_masks(masks, affine: np.ndarray, points_mm: np.ndarray, order: int = 0):
    """:func:`sample_mask` of several masks on one grid at the same points, the points' voxel
    indices computed once (each mask's values are those :func:`sample_mask` gives it alone).

    Returns ``(list of values, in_fov)``.
    """
    masks = [np.asarray(mask, dtype=bool) for mask in masks]
    shape = masks[0].shape
    if any(mask.shape != shape for mask in masks):
        raise ValueError(f"masks differ in shape: {[mask.shape for mask in masks]}")
    ijk = mm_to_index(affine, points_mm)
    idx = np.rint(ijk).astype(np.int64)
    in_fov = within_grid(idx, shape)
    out = [np.zeros(in_fov.shape, dtype=bool) for _ in masks]
    if not in_fov.any():
        return out, in_fov
    if order == 0:
        hit = idx[in_fov]
        for values, mask in zip(out, masks):
            values[in_fov] = mask[hit[:, 0], hit[:, 1], hit[:, 2]]
        return out, in_fov
    # interpolate on the crop the points need, not on the whole (possibly huge) mask
    inside = ijk[in_fov]
    lo, hi = column_bounds(inside)
    lo = np.maximum(np.floor(lo).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(hi).astype(int) + 2, shape)
    coords = (inside - lo).T
    for values, mask in zip(out, masks):
        crop = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
        interp = ndimage.map_coordinates(crop, coords, order=1, mode="nearest")
        values[in_fov] = interp >= 0.5
    return out, in_fov


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise ValueError("zero vector has no direction")
    return vector / norm


# --------------------------------------------------------------------------------------------
# sphere fit
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SphereFit:
    """A sphere fitted to surface points.

    Attributes
    ----------
    center : ndarray, shape (3,)
        RAS mm.
    radius : float
        mm.
    rms_mm : float
        Root-mean-square distance of the inlier points from the sphere, mm.
    n_inliers : int
        Surface points within the inlier band of the final sphere.
    n_points : int
        Surface points offered to the fit.
    """

    center: np.ndarray
    radius: float
    rms_mm: float
    n_inliers: int
    n_points: int

    def as_dict(self) -> dict:
        return {
            "center_ras_mm": [float(x) for x in self.center],
            "radius_mm": float(self.radius),
            "rms_mm": float(self.rms_mm),
            "n_inliers": int(self.n_inliers),
            "n_points": int(self.n_points),
        }


def fit_sphere_lsq(points_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Geometric least-squares sphere: minimises sum (|p - c| - r)^2.

    Initialised by the algebraic (Kasa) fit, refined by Levenberg-Marquardt.

    Parameters
    ----------
    points_mm : ndarray, shape (N >= 4, 3)

    Returns
    -------
    center : ndarray, shape (3,), mm
    radius : float, mm
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if len(pts) < 4:
        raise ValueError("a sphere needs at least 4 points")
    origin = pts.mean(axis=0)
    local = pts - origin
    # Kasa: |p|^2 = 2 c.p + k, linear in (c, k)
    design = np.hstack([2.0 * local, np.ones((len(local), 1))])
    sol, *_ = np.linalg.lstsq(design, (local**2).sum(axis=1), rcond=None)
    c0 = sol[:3]
    r0 = np.sqrt(max(sol[3] + c0 @ c0, 1e-12))

    def residual(x):
        return row_norms(local - x[:3]) - x[3]

    def jacobian(x):
        diff = local - x[:3]
        dist = np.maximum(row_norms(diff)[:, None], 1e-12)
        return np.hstack([-diff / dist, -np.ones((len(local), 1))])

    from scipy import optimize  # lazy: scipy.optimize takes 0.3 s to import

    res = optimize.least_squares(residual, np.r_[c0, r0], jac=jacobian, method="lm")
    return res.x[:3] + origin, float(abs(res.x[3]))


def _spheres_through_quads(quads: np.ndarray):
    """Spheres through batches of 4 points (m, 4, 3) -> centres (m, 3), radii (m,), valid (m,)."""
    design = np.concatenate([2.0 * quads, np.ones(quads.shape[:2] + (1,))], axis=2)
    rhs = (quads**2).sum(axis=2)
    # points are normalised to unit scale by the caller, so a fixed threshold flags coplanar sets
    valid = np.abs(np.linalg.det(design)) > 1e-6
    centres = np.full((len(quads), 3), np.nan)
    radii = np.full(len(quads), np.nan)
    if valid.any():
        sol = np.linalg.solve(design[valid], rhs[valid][..., None])[..., 0]
        centres[valid] = sol[:, :3]
        r2 = sol[:, 3] + (sol[:, :3] ** 2).sum(axis=1)
        radii[valid] = np.sqrt(np.where(r2 > 0, r2, np.nan))
    valid &= np.isfinite(radii)
    return centres, radii, valid


def fit_sphere(
    points_mm: np.ndarray,
    inlier_mm: float = 1.5,
    radius_range_mm: tuple[float, float] | None = None,
    n_hypotheses: int = 1000,
    neighbourhood_mm: float | None = None,
    max_score_points: int = 4000,
    seed: int = 0,
) -> SphereFit:
    """Robust sphere fit: RANSAC over minimal 4-point sets, then least squares on inliers.

    Points off the sphere (a femoral neck, a flat cut face, the trochanter) are outliers: the
    hypothesis with most points within ``inlier_mm`` wins, then the sphere is refitted by
    geometric least squares on its inliers and the inlier set recomputed until it is stable.

    Parameters
    ----------
    points_mm : ndarray, shape (N, 3)
        Surface points, RAS mm.
    inlier_mm : float
        Half-width of the inlier band around the sphere, mm. It should exceed the surface
        quantisation (half the largest voxel size for marching-cubes vertices of a binary mask).
    radius_range_mm : (float, float), optional
        Hypotheses with a radius outside this range are discarded.
    n_hypotheses : int
        RANSAC samples.
    neighbourhood_mm : float, optional
        Draw the 3 companions of each random seed point from within this distance of it, which
        keeps the chance of an all-inlier sample high when the sphere is a small part of a long
        bone surface. None draws them from all points.
    max_score_points : int
        Hypotheses are scored on at most this many points (a fixed random subset).
    seed : int
        Seed of the random generator: the fit is deterministic.

    Returns
    -------
    SphereFit
        RMS residual over the final inliers.

    Raises
    ------
    InputError
        Fewer than 4 points, or no hypothesis within the radius range.
    """
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    n = len(pts)
    if n < 4:
        raise InputError(f"too few surface points ({n}) to fit a sphere")
    rng = np.random.default_rng(seed)
    origin = pts.mean(axis=0)
    scale = float(np.sqrt(((pts - origin) ** 2).sum(axis=1).mean())) or 1.0
    unit = (pts - origin) / scale

    sub = np.sort(rng.choice(n, size=min(n, max_score_points), replace=False))
    quads_idx = sub[_sample_quads(pts[sub], n_hypotheses, neighbourhood_mm, rng)]
    centres, radii, valid = _spheres_through_quads(unit[quads_idx])
    centres = centres * scale + origin
    radii = radii * scale
    if radius_range_mm is not None:
        lo, hi = radius_range_mm
        valid &= (radii >= lo) & (radii <= hi)
    if not valid.any():
        raise InputError("no sphere of plausible radius fits the surface points")
    centres, radii = centres[valid], radii[valid]

    # |p - c|² = |p|² - 2 p·c + |c|², in the local frame for precision; a matrix product is
    # far cheaper than materialising every difference vector
    local_pts = pts[sub] - origin
    local_c = centres - origin
    sq_pts = (local_pts**2).sum(axis=1)
    best, best_score = 0, -1
    for start in range(0, len(radii), 256):
        c = local_c[start : start + 256]
        # the same arithmetic as sqrt(max(|p|² - 2 p·c + |c|², 0)) - r, in place (no temporaries)
        d = 2.0 * c @ local_pts.T
        np.subtract(sq_pts[None, :], d, out=d)
        d += (c**2).sum(axis=1)[:, None]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d -= radii[start : start + 256, None]
        np.abs(d, out=d)
        scores = np.count_nonzero(d <= inlier_mm, axis=1)
        k = int(np.argmax(scores))
        if scores[k] > best_score:
            best, best_score = start + k, int(scores[k])
    return _refine_on_inliers(pts, centres[best], float(radii[best]), inlier_mm)


def _sample_quads(pts, n_hypotheses, neighbourhood_mm, rng, n_candidates=64) -> np.ndarray:
    """Indices (m, 4) of random 4-point sets; companions within ``neighbourhood_mm`` of the seed."""
    n = len(pts)
    if n <= 8:
        return np.asarray(list(itertools.combinations(range(n), 4)), dtype=np.int64)
    if neighbourhood_mm is None:
        cand = rng.integers(0, n, size=(n_hypotheses, 8))
        return _distinct(cand, np.ones(cand.shape, dtype=bool))
    seeds = rng.integers(0, n, size=n_hypotheses)
    cand = rng.integers(0, n, size=(n_hypotheses, n_candidates))
    near = np.linalg.norm(pts[cand] - pts[seeds][:, None, :], axis=2) <= neighbourhood_mm
    near &= cand != seeds[:, None]
    quads = _distinct(
        np.concatenate([seeds[:, None], cand], axis=1),
        np.concatenate([np.ones((n_hypotheses, 1), bool), near], axis=1),
    )
    if len(quads) == 0:
        raise InputError("surface points too sparse to fit a sphere")
    return quads


def _distinct(cand: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """First 4 distinct acceptable indices of each row of ``cand``; rows without 4 are dropped."""
    rows = []
    for row, good in zip(cand, ok):
        picked = list(dict.fromkeys(row[good].tolist()))[:4]
        if len(picked) == 4:
            rows.append(picked)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _refine_on_inliers(pts, center, radius, inlier_mm, max_rounds=30) -> SphereFit:
    inliers = np.abs(row_norms(pts - center) - radius) <= inlier_mm
    for _ in range(max_rounds):
        if inliers.sum() < 4:
            break
        center, radius = fit_sphere_lsq(pts[inliers])
        updated = np.abs(row_norms(pts - center) - radius) <= inlier_mm
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    res = row_norms(pts[inliers] - center) - radius
    rms = float(np.sqrt(np.mean(res**2))) if len(res) else float("nan")
    return SphereFit(np.asarray(center, dtype=np.float64), float(radius), rms, int(inliers.sum()), len(pts))


def default_inlier_mm(affine: np.ndarray) -> float:
    """Inlier band for head-surface points on this grid, mm.

    Marching-cubes vertices of a binary mask sit up to half a voxel from the true surface; real
    heads are also slightly aspherical (about 0.5 mm), hence max(1.5, half the largest voxel + 0.5).
    """
    return float(max(1.5, 0.5 * voxel_spacing(affine).max() + 0.5))


# --------------------------------------------------------------------------------------------
# surfaces
# --------------------------------------------------------------------------------------------
def head_surface_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Sub-voxel surface points of a mask, RAS mm.

    Marching-cubes vertices at level 0.5 of the binary mask (each lies half-way between an
    inside and an outside voxel centre), mapped through the affine. Surface that the edge of the
    field of view creates (the mask cut by the image border) is not anatomy and is dropped.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    affine : ndarray, shape (4, 4)

    Returns
    -------
    ndarray, shape (N, 3), RAS mm

    Raises
    ------
    InputError
        If the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise InputError("mask is empty: no surface to fit")
    box = bounding_box(mask, margin=1)
    lo = box_start(box)
    crop = mask[box]
    padded = np.pad(crop, 1).astype(np.float32)
    from skimage.measure import marching_cubes  # lazy: skimage is slow to import

    verts, *_ = marching_cubes(padded, level=0.5)
    ijk = verts + lo - 1
    inside = np.all((ijk >= -1e-6) & (ijk <= np.array(mask.shape) - 1 + 1e-6), axis=1)
    return index_to_mm(affine, ijk[inside])


def fit_head_sphere(mask: np.ndarray, affine: np.ndarray, inlier_mm: float | None = None, seed: int = 0):
    """Robust sphere fit to a mask's surface (femur or delimited head).

    The neck, trochanter or a flat cut face are rejected as outliers (see :func:`fit_sphere`).

    Returns
    -------
    SphereFit
    """
    points = head_surface_points(mask, affine)
    tol = default_inlier_mm(affine) if inlier_mm is None else float(inlier_mm)
    return fit_sphere(
        points,
        inlier_mm=tol,
        radius_range_mm=HEAD_RADIUS_RANGE_MM,
        neighbourhood_mm=HEAD_NEIGHBOURHOOD_MM,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# head frame
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadFrame:
    """Head frame of docs/method.md section 1.

    Attributes
    ----------
    center : ndarray, shape (3,)
        Centre c of the fitted head sphere, RAS mm.
    radius : float
        Sphere radius r, mm.
    side : {"right", "left"}
        The hip; sets e_lat = +x (right) or -x (left).
    """

    center: np.ndarray
    radius: float
    side: str

    def __post_init__(self):
        check_side(self.side)
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "radius", float(self.radius))

    @classmethod
    def from_fit(cls, fit: SphereFit, side: str) -> HeadFrame:
        return cls(fit.center, fit.radius, side)

    @property
    def e_lat(self) -> np.ndarray:
        return np.array([1.0 if self.side == "right" else -1.0, 0.0, 0.0])

    @property
    def e_ant(self) -> np.ndarray:
        return np.array([0.0, 1.0, 0.0])

    @property
    def e_sup(self) -> np.ndarray:
        return np.array([0.0, 0.0, 1.0])

    @property
    def basis(self) -> np.ndarray:
        """Rows e_lat, e_ant, e_sup (3, 3)."""
        return np.stack([self.e_lat, self.e_ant, self.e_sup])

    def uvw(self, points_mm: np.ndarray) -> np.ndarray:
        """Frame coordinates (u, v, w) of RAS points (..., 3), mm."""
        return (np.asarray(points_mm, dtype=np.float64) - self.center) @ self.basis.T

    def to_world(self, uvw: np.ndarray) -> np.ndarray:
        """RAS mm of frame coordinates (..., 3)."""
        return np.asarray(uvw, dtype=np.float64) @ self.basis + self.center

    def uvw_of_voxels(self, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Frame coordinates of the centres of a mask's voxels, shape (N, 3), in np.argwhere order."""
        return self.uvw(mask_points_mm(mask, affine))


def head_frame_from_mask(head_mask: np.ndarray, affine: np.ndarray, side: str, seed: int = 0):
    """Head frame of an already-delimited head mask (e.g. an imported segmentation).

    The sphere is fitted to the mask's surface, robust to its flat cut face.

    Returns
    -------
    frame : HeadFrame
    fit : SphereFit
    """
    fit = fit_head_sphere(head_mask, affine, seed=seed)
    return HeadFrame.from_fit(fit, side), fit


# --------------------------------------------------------------------------------------------
# neck axis and head isolation
# --------------------------------------------------------------------------------------------
def _orthonormal_pair(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.eye(3)[int(np.argmin(np.abs(n)))]
    a = _unit(np.cross(n, helper))
    return a, np.cross(n, a)


def cross_section(mask, affine, point, normal, half_width_mm, step_mm):
    """The mask's cross-section through ``point`` perpendicular to ``normal``, in world space.

    Only the connected piece at (or nearest to) ``point`` counts, holes filled.

    Returns
    -------
    area_mm2 : float
        Area of the piece, mm^2 (0.0 when the plane misses the mask).
    centroid_mm : ndarray, shape (3,)
        Centroid of the piece, RAS mm.
    complete : bool
        False when the piece touches the edge of the field of view or of the sampled square,
        i.e. the area is only a lower bound.
    """
    a, b = _orthonormal_pair(normal)
    grid = np.arange(-half_width_mm, half_width_mm + step_mm / 2, step_mm)
    pts = point + grid[:, None, None] * a + grid[None, :, None] * b
    values, in_fov = sample_mask(mask, affine, pts)
    labels, count = ndimage.label(values)
    if count == 0:
        return 0.0, np.asarray(point, dtype=np.float64), True
    mid = len(grid) // 2
    lab = labels[mid, mid]
    if lab == 0:
        nearest = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
        lab = labels[nearest[0][mid, mid], nearest[1][mid, mid]]
    piece = ndimage.binary_fill_holes(labels == lab)
    border = np.zeros_like(piece)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    complete = not (ndimage.binary_dilation(piece) & (~in_fov | border)).any()
    return float(piece.sum() * step_mm**2), pts[piece].mean(axis=0), bool(complete)


def neck_direction(femur_mask: np.ndarray, affine: np.ndarray, center, radius: float,
                   shell_mm: float = NECK_SHELL_MM) -> np.ndarray:
    """Unit neck axis from the head centre c: the principal direction, about c, of the femur voxels
    in the shell r < |p - c| <= r + ``shell_mm`` on the neck's side (see :func:`neck_axis`).

    Raises
    ------
    InputError
        If no femur lies beyond the head sphere.
    """
    center = np.asarray(center, dtype=np.float64)
    rel = mask_points_mm(femur_mask, affine) - center
    dist = row_norms(rel)
    shell = rel[(dist > radius + 0.5 * voxel_spacing(affine).max()) & (dist <= radius + shell_mm)]
    if len(shell) < 10:
        raise InputError("no femoral neck found beyond the head sphere")
    n0 = _unit(shell.mean(axis=0))
    far = shell[shell @ n0 > 0]
    _, vecs = np.linalg.eigh(far.T @ far)
    n = vecs[:, -1]
    return n if n @ n0 > 0 else -n


def neck_axis(
    femur_mask: np.ndarray,
    affine: np.ndarray,
    center: np.ndarray,
    radius: float,
    shell_mm: float = NECK_SHELL_MM,
    step_mm: float | None = None,
    warnings: list | None = None,
):
    """Neck axis and waist of the proximal femur.

    The axis is the principal direction, about c, of the femur voxels in the shell
    r < |p - c| <= r + ``shell_mm`` on the neck's side of c (the hemisphere facing the mean
    direction of that shell, i.e. away from the head's free surface). A tube leaving c spreads
    its points along its axis far more than across it, so the second moment about c (not about
    the centroid, which for a short wide neck is ambiguous) gives the axis. The waist is the
    narrowest cross-section perpendicular to the axis, between half the radius and
    r + ``shell_mm`` from c, sampled in world space.

    Parameters
    ----------
    femur_mask : ndarray of bool
    affine : ndarray, shape (4, 4)
    center : ndarray, shape (3,)
        Head centre c, RAS mm.
    radius : float
        Head radius r, mm.
    shell_mm : float
        Shell thickness beyond the sphere, mm.
    step_mm : float, optional
        Cross-section sampling step; default half the smallest voxel size (max 0.5 mm).
    warnings : list, optional
        Receives a message when the waist is only known from sections cut by the field of view.

    Returns
    -------
    n : ndarray, shape (3,)
        Unit vector from c toward the neck.
    rho : float
        Waist radius sqrt(area / pi), mm.
    waist_point : ndarray, shape (3,)
        Centroid of the waist cross-section, RAS mm.

    Raises
    ------
    InputError
        If no femur lies beyond the head sphere (no neck to find).
    """
    center = np.asarray(center, dtype=np.float64)
    spacing = voxel_spacing(affine)
    n = neck_direction(femur_mask, affine, center, radius, shell_mm)

    step = float(step_mm) if step_mm else float(min(0.5, spacing.min() / 2))
    sections = []
    for t in np.arange(0.5 * radius, radius + shell_mm + 1e-9, 1.0):
        area, centroid, complete = cross_section(femur_mask, affine, center + t * n, n, radius + 15.0, step)
        if area > 0:
            sections.append((not complete, area, float(t), centroid))
    if not sections:
        raise InputError("the femoral neck has no cross-section beyond the head")
    # a complete section beats any truncated one: truncation only ever shrinks the area
    truncated, area, _, centroid = min(sections, key=lambda s: (s[0], s[1]))
    if truncated and warnings is not None:
        warnings.append(
            "every neck cross-section is cut by the edge of the field of view: "
            "the waist radius is a lower bound"
        )
    return n, float(np.sqrt(area / np.pi)), np.asarray(centroid)


def isolate_head(
    femur_mask: np.ndarray,
    affine: np.ndarray,
    method: str = "neck-plane",
    seed: int = 0,
):
    """Femoral head from a proximal-femur mask (docs/method.md section 2).

    neck-plane: femur ∩ {|p - c| <= r + one voxel} ∩ {(p - c)·n <= sqrt(r² - ρ²)}, the cut plane
    where the neck (waist radius ρ) meets the sphere. "One voxel" is the largest voxel size, so
    that boundary voxels of the head are never clipped by the fitted sphere.
    sphere: femur ∩ {|p - c| <= r}.
    The largest connected piece is kept.

    Parameters
    ----------
    femur_mask : ndarray of bool
    affine : ndarray, shape (4, 4)
    method : {"neck-plane", "sphere"}

    Returns
    -------
    head_mask : ndarray of bool
    info : dict
        method, center_ras_mm, radius_mm, rms_mm, n_inliers, n_points, neck_axis (unit, RAS),
        waist_radius_mm, waist_point_ras_mm, cut_distance_mm (None for "sphere"), warnings.
    """
    if method not in ("neck-plane", "sphere"):
        raise InputError(f"unknown head isolation method {method!r} (neck-plane or sphere)")
    femur = np.asarray(femur_mask, dtype=bool)
    fit = fit_head_sphere(femur, affine, seed=seed)
    c, r = fit.center, fit.radius
    info = {"method": method, **fit.as_dict(), "warnings": []}
    info.update(neck_axis=None, waist_radius_mm=None, waist_point_ras_mm=None, cut_distance_mm=None)

    rel = mask_points_mm(femur, affine) - c
    dist = np.linalg.norm(rel, axis=1)
    if method == "sphere":
        keep = dist <= r
    else:
        n, rho, waist = neck_axis(femur, affine, c, r, warnings=info["warnings"])
        if rho >= r:
            info["warnings"].append(
                f"neck waist radius {rho:.1f} mm is not smaller than the head radius {r:.1f} mm; "
                "the cut plane passes through the head centre"
            )
        cut = float(np.sqrt(max(r**2 - rho**2, 0.0)))
        info.update(
            neck_axis=[float(x) for x in n],
            waist_radius_mm=rho,
            waist_point_ras_mm=[float(x) for x in waist],
            cut_distance_mm=cut,
        )
        keep = (dist <= r + voxel_spacing(affine).max()) & (rel @ n <= cut)
    head = np.zeros_like(femur)
    idx = np.argwhere(femur)[keep]
    head[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return _largest_component(head), info


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


# --------------------------------------------------------------------------------------------
# mid-planes
# --------------------------------------------------------------------------------------------
class PlaneSample(NamedTuple):
    """A mask sampled on a mid-plane of the head frame.

    Attributes
    ----------
    image : ndarray of bool, shape (n_a, n_w)
        ``image[i, j]`` is the mask at in-plane coordinates (a_mm[i], w_mm[j]).
    a_mm : ndarray, shape (n_a,)
        Horizontal in-plane coordinate: u (coronal plane) or v (sagittal plane), mm.
    w_mm : ndarray, shape (n_w,)
        Superior coordinate w, mm.
    in_fov : ndarray of bool, shape (n_a, n_w)
        Pixel lies inside the image grid.
    plane : str
        "coronal" or "sagittal".
    """

    image: np.ndarray
    a_mm: np.ndarray
    w_mm: np.ndarray
    in_fov: np.ndarray
    plane: str


def plane_points(frame: HeadFrame, plane: str, a_mm: np.ndarray, w_mm: np.ndarray) -> np.ndarray:
    """RAS mm of the pixel grid (a, w) on a mid-plane, shape (n_a, n_w, 3)."""
    if plane == "coronal":
        e_a = frame.e_lat
    elif plane == "sagittal":
        e_a = frame.e_ant
    else:
        raise ValueError(f"plane must be 'coronal' or 'sagittal', got {plane!r}")
    return frame.center + a_mm[:, None, None] * e_a + w_mm[None, :, None] * frame.e_sup


def sample_plane(
    mask: np.ndarray,
    affine: np.ndarray,
    frame: HeadFrame,
    plane: str = "coronal",
    step_mm: float = 0.25,
    half_width_mm: float | None = None,
    order: int = 0,
) -> PlaneSample:
    """Sample a mask on the mid-coronal (v = 0) or mid-sagittal (u = 0) plane through c.

    Nearest-neighbour sampling in world space, so on an oblique scan the plane need not be an
    image slice. The pixel grid is symmetric about c (c is a pixel centre).

    Parameters
    ----------
    mask : ndarray of bool
    affine : ndarray, shape (4, 4)
    frame : HeadFrame
    plane : {"coronal", "sagittal"}
    step_mm : float
        Pixel size, mm.
    half_width_mm : float, optional
        Half the side of the sampled square, mm; default 1.5 r.
    order : {0, 1}
        Nearest neighbour (0) or trilinear thresholded at 0.5 (1); see :func:`sample_mask`.

    Returns
    -------
    PlaneSample
    """
    return sample_planes([mask], affine, frame, plane, step_mm, half_width_mm, order)[0]


def sample_planes(masks, affine: np.ndarray, frame: HeadFrame, plane: str = "coronal", step_mm: float = 0.25,
                  half_width_mm: float | None = None, order: int = 0) -> list[PlaneSample]:
    """:func:`sample_plane` of several masks on one grid, the plane's points located once
    (:func:`sample_masks`); one :class:`PlaneSample` per mask, each as :func:`sample_plane` gives it."""
    half = 1.5 * frame.radius if half_width_mm is None else float(half_width_mm)
    k = int(np.ceil(half / step_mm))
    coords = np.arange(-k, k + 1) * float(step_mm)
    values, in_fov = sample_masks(masks, affine, plane_points(frame, plane, coords, coords), order)
    return [PlaneSample(v, coords if i == 0 else coords.copy(), coords.copy(), in_fov if i == 0 else in_fov.copy(),
                        plane) for i, v in enumerate(values)]


# --------------------------------------------------------------------------------------------
# side selection
# --------------------------------------------------------------------------------------------
def select_side(
    mask: np.ndarray, affine: np.ndarray, side: str, min_separation_mm: float = 50.0
) -> np.ndarray:
    """Keep the connected components of one hip from a mask that may cover both.

    Components (26-connected) are split into two groups along RAS x by a volume-weighted 1D
    two-means; the group on ``side`` of the midline half-way between them is kept
    (:func:`pipeline.geometry.side.side_of_x`: the patient's right hip has the greater x). A mask
    whose groups lie less than ``min_separation_mm`` apart, or whose smaller group holds under 5%
    of the volume (stray specks), covers one hip only and is returned whole.

    Parameters
    ----------
    mask : ndarray of bool
    affine : ndarray, shape (4, 4)
    side : {"right", "left"}
    min_separation_mm : float
        Least distance between the two groups' centroids for the mask to count as bilateral.

    Returns
    -------
    ndarray of bool
    """
    check_side(side)
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return mask.copy()
    ids = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(mask, labels, ids).astype(np.float64)
    centroids = np.asarray(ndimage.center_of_mass(mask, labels, ids))
    xs = index_to_mm(affine, centroids)[:, 0]
    order = np.argsort(xs)
    xs, sizes, ids = xs[order], sizes[order], ids[order]
    best = None
    for k in range(1, count):
        lo, hi = slice(0, k), slice(k, None)
        m_lo = np.average(xs[lo], weights=sizes[lo])
        m_hi = np.average(xs[hi], weights=sizes[hi])
        sse = (sizes[lo] * (xs[lo] - m_lo) ** 2).sum() + (sizes[hi] * (xs[hi] - m_hi) ** 2).sum()
        if best is None or sse < best[0]:
            best = (sse, k, m_lo, m_hi)
    _, k, m_lo, m_hi = best
    share = min(sizes[:k].sum(), sizes[k:].sum()) / sizes.sum()
    if m_hi - m_lo < min_separation_mm or share < 0.05:
        return mask.copy()
    keep = ids[k:] if side_of_x(m_hi, midline_x=0.5 * (m_lo + m_hi)) == side else ids[:k]
    return np.isin(labels, keep)
