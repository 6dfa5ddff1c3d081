"""Head depression and ARCO 2019 collapse stage (docs/method.md section 6).

The articular surface is the *unsmoothed* marching-cubes surface (level 0.5) of the head mask, or
of its isotropic shape-based reconstruction when there is one (the mesh that
:func:`pipeline.measures.hip.measure_hip` has already built is reused). The reference is the head
sphere fitted by RANSAC to the intact surface (:func:`pipeline.geometry.frame.fit_head_sphere`: a
depressed dome lies outside its inlier band, so it does not pull the sphere inward).

Choices where docs/method.md leaves room (settings in the ``collapse`` section):

* Weight-bearing surface: the surface whose direction from c rises at least
  ``region_min_elevation_deg`` above the head equator (default 0: w > 0), less, on a grid with
  thick slices (an axis over 1.5 x the finest), the directions within acos(1 - T/r) of the slice
  axis (the outermost slice of thickness T, taken or dropped whole), kept clear of the cut
  face (surface below the region lying deeper than twice its detection limit) by three averaging
  widths plus two voxels (the shape-based interpolation rounds the cut's edge over about a voxel).
* Depth at a surface point p in direction e = (p - c)/|p - c|: the Gaussian-weighted mean (sigma
  ``averaging_sigma_mm``, over the surface's area) of r - |q - c| over the surface points q near p,
  less the same mean of the *reference surface* at c + r e. The reference surface is the fitted
  sphere as this grid images it: the ball labelled on the scan's voxel lattice by the
  partial-volume rule (a voxel is in when at least half of it is, the rule of an ideal reader or
  a threshold at half the signal; :func:`ball_on_grid`), reconstructed like the head and meshed
  alike. Whatever the grid alone does to an intact sphere (up to 0.4 mm on 1 mm voxels, more
  along thick slices) is thus not counted as depression. The centre and radius are then matched
  to the intact surface (:func:`match_reference`), since the least-squares sphere of a staircase
  absorbs about 0.1 mm of it.
* Head depression: the largest depth over the weight-bearing surface among the points whose
  depth reaches their detection limit and whose wide average (sigma ``breadth_sigma_mm``)
  reaches ``breadth_factor`` x it (a collapse spans millimetres; a voxel or two missed by an
  outline do not); without such a point, the largest depth in units of the limit, and the stage
  is "none" (``narrow`` when that depth reaches the limit but fails the breadth test).
* Floor extrapolation (``floor_extrapolation``): the Gaussian mean of a floor curved like
  h - k |x|^2 is h - 2 k sigma^2, so the depth at the deepest point, averaged at sigma and at the
  wide sigma W, gives the floor at zero width: d + (d - d_W) sigma^2 / (W^2 - sigma^2) (Richardson
  extrapolation; exact for a paraboloid floor, no change on a floor flat over about W). Applied
  to a staged head only (the stage's decision uses the averaged depth; an intact head's figures
  are unchanged), never negative. Recorded: ``averaged_depression_mm``, ``floor_correction_mm``.
* Detection limit at p: ``detection_limit_factor`` x the scan voxel's radial extent along e,
  |diag(spacing) e'| with e' = e in the scan's own voxel axes (a thick slice quantises the
  surface along its own axis only), and at least ``roughness_limit_factor`` x the surface
  roughness (:func:`robust_spread` of the depth over the region: a hand-drawn outline's wobble).
  The factors are set from the depth's null distributions on intact heads, clean and roughened
  (docs/method.md section 6; ``scripts/collapse_validation.py``, ``scripts/collapse_roughness.py``).
* Depressed area: the faces of the weight-bearing surface that pass the rule that stages the
  head: mean vertex depth at least the detection limit at their centroid (voxel and roughness
  terms) and mean wide average at least ``breadth_factor`` x it; 0 when no point passes (stage
  "none"), mm^2.
* Missing volume: the volume between the sphere and the surface over the weight-bearing surface,
  the sum over its faces of (A_f . e_f) d_f (r^2 + r rho_f + rho_f^2) / (3 rho_f^2), A_f the face's
  area vector, e_f and rho_f its centroid's direction and distance from c, d_f its depth (raw
  r - rho_f less the reference's averaged depth): the integral of (r^3 - rho^3) / 3 over the
  region's solid angle. Net (deeper and shallower parts cancel), clipped at 0, mL.
* What a "none" rules out (:func:`top_caveat`, :func:`assessment_flags`): collapse sits at the
  dome's top, so the limit is also read straight up (``top_limit_mm``: voxel and roughness
  terms), or the top is found to lie in a thick-slice axis' end cone (``top_in_end_slices``,
  :func:`in_end_cones`), which the region leaves out; either a top limit over 2 mm or an unmeasured
  top makes a "none" a review flag and a caveat beside the stage.
"""

from __future__ import annotations

import numpy as np

from pipeline.geometry.affine import column_bounds, mm_to_index, row_norms
from pipeline.geometry.frame import HeadFrame, SphereFit
from pipeline.geometry.mesh import mask_mesh

#: ARCO 2019 stage III subclasses (Yoon et al., J Arthroplasty 2020): IIIA depression <= 2 mm, IIIB > 2 mm.
IIIB_OVER_MM = 2.0

#: Sub-voxel step of the partial-volume rule of the reference ball, mm (at most; cf. the phantoms' 0.23-0.39 mm).
REFERENCE_SUBSAMPLE_MM = 0.25

METHOD = ("radial depth r - |p - c| of the unsmoothed marching-cubes surface (level 0.5) below the fitted head "
          "sphere as the scan's grid images it (the ball labelled on the same lattice by the partial-volume rule, "
          "reconstructed and meshed alike; centre and radius matched to the intact surface), Gaussian-weighted "
          "mean over the surface, over the weight-bearing surface; a point counts where that depth reaches the "
          "detection limit (detection_limit_factor x the scan voxel's radial extent, at least "
          "roughness_limit_factor x the surface roughness) and its wide mean (breadth_sigma_mm) breadth_factor "
          "x that limit; a staged head's depression extrapolated to zero averaging width from the two averages "
          "(floor_extrapolation)")


def radial_extent_mm(directions: np.ndarray, scan_affine: np.ndarray) -> np.ndarray:
    """The scan voxel's extent along unit RAS directions (..., 3): |diag(spacing) e'|, e' the
    direction in the scan's voxel axes, mm (0.7-3.5 mm on a 0.7 x 0.7 x 3.5 mm grid)."""
    lin = np.asarray(scan_affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    comp = np.asarray(directions, dtype=np.float64) @ (lin / spacing)  # components along the voxel axes
    return np.linalg.norm(comp * spacing, axis=-1)


def in_end_cones(directions: np.ndarray, scan_affine: np.ndarray, radius: float) -> np.ndarray:
    """Whether unit RAS directions (..., 3) from the head centre lie within acos(1 - T/r) of a
    thick-slice axis (spacing T over 1.5 x the finest): there the sphere's surface lies in the
    outermost slice, which the partial-volume rule takes or drops whole."""
    scan_affine = np.asarray(scan_affine, dtype=np.float64)
    spacing = np.linalg.norm(scan_affine[:3, :3], axis=0)
    out = np.zeros(np.shape(directions)[:-1], dtype=bool)
    for k in np.flatnonzero(spacing > 1.5 * spacing.min()):
        out |= np.abs(directions @ (scan_affine[:3, k] / spacing[k])) > 1.0 - spacing[k] / radius
    return out


def detection_limit_mm(directions: np.ndarray, scan_affine: np.ndarray, factor: float) -> np.ndarray:
    """Detection limit along unit RAS directions (..., 3): ``factor`` x :func:`radial_extent_mm`, mm."""
    return factor * radial_extent_mm(directions, scan_affine)


def arco2019_collapse(depression_mm: float | None, limit_mm: float | None) -> str | None:
    """ARCO 2019 stage III subclass of a depression (mm): "none" below the detection limit
    ``limit_mm``, "IIIA" up to 2.0 mm, "IIIB" over 2.0 mm; None when unknown. MRI shape alone
    tells neither stage I from II nor IV (joint space), so those are never returned."""
    if depression_mm is None or limit_mm is None:
        return None
    if depression_mm < limit_mm:
        return "none"
    return "IIIA" if depression_mm <= IIIB_OVER_MM else "IIIB"


# --------------------------------------------------------------------------------------------
# the reference: the fitted sphere as the grid images it
# --------------------------------------------------------------------------------------------
def ball_on_grid(center, radius: float, scan_affine: np.ndarray, e_sup=None, below_mm: float | None = None):
    """The ball (c, r) labelled on the scan's voxel lattice by the partial-volume rule.

    A voxel is in when at least half of its box is inside the ball, counted on a sub-grid of at
    most :data:`REFERENCE_SUBSAMPLE_MM` for the voxels within a half-diagonal of the sphere.

    Parameters
    ----------
    center : (3,) RAS mm
    radius : float, mm
    scan_affine : ndarray (4, 4)
        Voxel index -> RAS mm of the scan.
    e_sup : (3,), optional
        With ``below_mm``: voxels whose centre lies more than ``below_mm`` below the plane through
        c normal to ``e_sup`` are left out (only the upper part is needed, at half the cost).

    Returns
    -------
    ball : ndarray of bool
        On a crop of the scan's lattice.
    crop_affine : ndarray (4, 4)
        Voxel index -> RAS mm of the crop.
    """
    scan_affine = np.asarray(scan_affine, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    corners = center + radius * np.array(np.meshgrid(*[[-1.0, 1.0]] * 3, indexing="ij")).reshape(3, -1).T
    ijk = mm_to_index(scan_affine, corners)
    lo = np.floor(ijk.min(axis=0)).astype(int) - 2
    hi = np.ceil(ijk.max(axis=0)).astype(int) + 3
    crop = scan_affine.copy()
    crop[:3, 3] = scan_affine[:3, :3] @ lo + scan_affine[:3, 3]
    shape = tuple(hi - lo)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    rel = idx @ crop[:3, :3].T + (crop[:3, 3] - center)
    dist = row_norms(rel) - radius
    ball = dist <= 0
    spacing = np.linalg.norm(scan_affine[:3, :3], axis=0)
    # Only voxels whose centre lies within the sphere's sagitta over the voxel box of the sphere
    # can differ from their centre's side: beyond it a plane parallel to the tangent plane, and
    # on the centre's far side, leaves the box's centre, hence at least half of the box, on the
    # centre's side (half-diagonal D: sagitta D^2 / 2 (r - D)).
    half_diag = 0.5 * float(np.linalg.norm(spacing))
    sagitta = half_diag**2 / (2.0 * max(radius - half_diag, 1e-3))
    near = np.flatnonzero(np.abs(dist) <= sagitta)
    if e_sup is not None and below_mm is not None:
        keep = rel[near] @ np.asarray(e_sup, dtype=np.float64) >= -below_mm - half_diag
        near = near[keep]
    n_sub = np.maximum(np.ceil(spacing / REFERENCE_SUBSAMPLE_MM).astype(int), 1)
    offsets = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in n_sub], indexing="ij"),
                       -1).reshape(-1, 3) @ crop[:3, :3].T
    for part in np.array_split(near, max(1, len(near) * len(offsets) // 2_000_000 + 1)):
        # |sub-voxel - c|^2, component by component (the sum of squares in the usual order)
        r2 = None
        for k in range(3):
            comp = rel[part, k][:, None] + offsets[None, :, k]
            comp *= comp
            r2 = comp if r2 is None else np.add(r2, comp, out=r2)
        ball[part] = (r2 <= radius**2).mean(axis=1) >= 0.5
    ball = ball.reshape(shape)
    if e_sup is not None and below_mm is not None:
        ball &= (rel @ np.asarray(e_sup, dtype=np.float64) >= -below_mm).reshape(shape)
        # keep the box of what is left (and two empty voxels around it)
        from pipeline.geometry.affine import bounding_box, box_start

        box = bounding_box(ball, margin=2)
        start = box_start(box)
        ball = ball[box]
        crop = crop.copy()
        crop[:3, 3] = crop[:3, :3] @ start + crop[:3, 3]
    return ball, crop


def reference_surface(center, radius: float, scan_affine: np.ndarray, iso_affine: np.ndarray | None,
                      e_sup=None, below_mm: float | None = None,
                      shell_mm: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes surface (level 0.5, RAS mm) of :func:`ball_on_grid`, shape-based interpolated
    first when the head was, so that the reference goes through the head's steps
    (:func:`pipeline.geometry.mesh.isotropic_reconstructions`: signed distance between voxel
    centres, trilinear, threshold 0).

    ``iso_affine`` is the head's isotropic lattice: the reference is sampled on the very same
    lattice (its fine staircase then falls where the head's does; another phase of a 0.5 mm
    lattice moves the averaged depth by up to 0.1 mm). The signed distance is interpolated only
    within ``shell_mm`` of the sphere (the surface never strays further: the ball is exact up to a
    voxel's half-diagonal, 1.8 mm on 0.7 x 0.7 x 3.5 mm voxels), a tenth of the whole lattice.
    """
    from scipy import ndimage

    from pipeline.geometry.mesh import signed_distance

    ball, crop = ball_on_grid(center, radius, scan_affine, e_sup, below_mm)
    if iso_affine is None:
        return mask_mesh(ball, crop)
    iso_affine = np.asarray(iso_affine, dtype=np.float64)
    spacing = np.linalg.norm(crop[:3, :3], axis=0)
    sdf = signed_distance(ball, spacing)
    # the head's lattice in the crop's index space: q + k steps along each axis (same directions)
    to_crop = np.linalg.inv(crop[:3, :3])
    q = to_crop @ (iso_affine[:3, 3] - crop[:3, 3])
    steps = np.diag(to_crop @ iso_affine[:3, :3])
    k_lo = np.ceil(-q / steps - 1e-9).astype(int)
    k_hi = np.floor((np.array(ball.shape) - 1 - q) / steps + 1e-9).astype(int)
    first = q + k_lo * steps
    n_out = np.maximum(k_hi - k_lo + 1, 1)
    origin = iso_affine[:3, :3] @ k_lo + iso_affine[:3, 3]
    iso_affine = iso_affine.copy()
    iso_affine[:3, 3] = origin
    grid = [np.arange(n, dtype=np.float64) for n in n_out]
    # distance from the centre of every isotropic voxel, axis by axis (the lattice is affine)
    rel = [iso_affine[:3, k][:, None] * grid[k][None, :] for k in range(3)]
    off = iso_affine[:3, 3] - np.asarray(center, dtype=np.float64)
    rho = None
    for d in range(3):  # sqrt(sum of squared components), summed in place (no temporaries)
        comp = (rel[0][d][:, None, None] + rel[1][d][None, :, None]) + rel[2][d][None, None, :]
        comp += off[d]
        comp *= comp
        if rho is None:
            rho = comp
        else:
            rho += comp
    np.sqrt(rho, out=rho)
    iso = rho < radius
    shell = np.nonzero(np.abs(rho - radius) < shell_mm)
    pts = np.stack([first[k] + shell[k] * steps[k] for k in range(3)])
    iso[shell] = ndimage.map_coordinates(sdf, pts, order=1, mode="nearest") > 0
    if e_sup is not None and below_mm is not None:
        iso &= ball_extent_mask(iso_affine, iso.shape, center, e_sup, below_mm)
    return mask_mesh(iso, iso_affine)


def mesh_lattice(verts: np.ndarray, directions: np.ndarray, voxel_mm: float) -> np.ndarray:
    """The voxel lattice (4 x 4 affine) a marching-cubes mesh was built on, from its vertices.

    Every marching-cubes vertex lies on a lattice edge, so two of its three lattice coordinates
    are whole numbers: along each axis the commonest fractional part of the vertices' coordinates
    is the lattice's phase. Given the axis ``directions`` (unit columns) and the voxel size, this
    recovers the isotropic lattice of a reconstruction without knowing how its box was chosen.
    """
    coords = np.asarray(verts, dtype=np.float64) @ directions / voxel_mm
    phase = np.zeros(3)
    for k in range(3):
        frac = coords[:, k] - np.floor(coords[:, k])
        hist, edges = np.histogram(frac, bins=200, range=(0.0, 1.0))
        mode = 0.5 * (edges[np.argmax(hist)] + edges[np.argmax(hist) + 1])
        # circular mean of the fractional parts within a bin of the mode
        near = frac[np.abs((frac - mode + 0.5) % 1.0 - 0.5) < 0.005]
        phase[k] = mode + np.mean((near - mode + 0.5) % 1.0 - 0.5) if len(near) else mode
    lattice = np.eye(4)
    lattice[:3, :3] = directions * voxel_mm
    lattice[:3, 3] = directions @ (phase * voxel_mm)
    return lattice


def ball_extent_mask(affine, shape, center, e_sup, below_mm):
    """Voxel centres no more than ``below_mm`` below the plane through ``center`` normal to ``e_sup``."""
    height = [np.asarray(e_sup) @ affine[:3, k] * np.arange(n) for k, n in enumerate(shape)]
    h0 = (affine[:3, 3] - np.asarray(center)) @ np.asarray(e_sup)
    return (height[0][:, None, None] + height[1][None, :, None] + height[2][None, None, :] + h0) >= -below_mm


def near_any(points: np.ndarray, others: np.ndarray, reach_mm: float, chunk: int = 128) -> np.ndarray:
    """Whether each point (N, 3) lies closer than ``reach_mm`` to any of ``others`` (M, 3).

    The test of ``cKDTree(others).query(points, distance_upper_bound=reach_mm)`` finding a
    neighbour (the same squared distances against reach^2) by a sweep along the others' longest
    extent: a few thousand points near a cut face of about a thousand vertices cost little more,
    and scipy.spatial (0.15-0.2 s to import) is not needed.
    """
    points = np.asarray(points, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64)
    out = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or len(others) == 0:
        return out
    lo, hi = others.min(axis=0) - reach_mm, others.max(axis=0) + reach_mm
    idx = np.flatnonzero(np.all((points > lo) & (points < hi), axis=1))
    if len(idx) == 0:
        return out
    k = int(np.argmax(hi - lo))
    others = others[np.argsort(others[:, k], kind="stable")]
    key = others[:, k]
    idx = idx[np.argsort(points[idx, k], kind="stable")]
    reach2 = reach_mm * reach_mm
    for start in range(0, len(idx), chunk):
        part = idx[start : start + chunk]
        p = points[part]
        cand = others[np.searchsorted(key, p[0, k] - reach_mm, side="left"):
                      np.searchsorted(key, p[-1, k] + reach_mm, side="right")]
        if len(cand) == 0:
            continue
        d2 = (p[:, 0, None] - cand[:, 0]) ** 2
        d2 += (p[:, 1, None] - cand[:, 1]) ** 2
        d2 += (p[:, 2, None] - cand[:, 2]) ** 2
        out[part] = (d2 < reach2).any(axis=1)
    return out


# --------------------------------------------------------------------------------------------
# averaging over a surface
# --------------------------------------------------------------------------------------------
def _vertex_areas(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face areas and each vertex's third of its faces' areas, mm^2."""
    areas = 0.5 * np.linalg.norm(np.cross(verts[faces[:, 1]] - verts[faces[:, 0]],
                                          verts[faces[:, 2]] - verts[faces[:, 0]]), axis=1)
    vertex_area = np.bincount(faces.ravel(), weights=np.repeat(areas / 3.0, 3), minlength=len(verts))
    return areas, vertex_area


class SurfaceMean:
    """Gaussian-weighted mean (sigma ``sigma_mm``) of a per-point value over a surface, at any point.

    The points' weights (their surface areas) and weight x value are spread trilinearly onto a
    lattice of ``sigma / 1.5``, smoothed by a Gaussian and read back trilinearly: the ratio is the
    area-weighted mean over the surface within about 2 sigma, in O(points) instead of by
    neighbour lists. NaN where no surface lies within about 3 sigma.

    Parameters
    ----------
    points : (N, 3) mm
    weights : (N,) mm^2
    values : (N,)
    sigma_mm : float
    """

    def __init__(self, points: np.ndarray, weights: np.ndarray, values: np.ndarray, sigma_mm: float):
        from scipy import ndimage

        self.cell = sigma_mm / 1.5
        low, high = column_bounds(points)
        self.origin = low - 4.0 * sigma_mm
        shape = tuple(np.ceil((high + 4.0 * sigma_mm - self.origin) / self.cell).astype(int) + 2)
        pos = (points - self.origin) / self.cell
        base = np.floor(pos).astype(np.int64)
        frac = pos - base
        size = int(np.prod(shape))
        flat0 = np.ravel_multi_index(base.T, shape)
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        per_axis = [(1.0 - frac[:, k], frac[:, k]) for k in range(3)]
        weight, moment = np.zeros(size), np.zeros(size)
        for corner in np.ndindex(2, 2, 2):
            w = weights * per_axis[0][corner[0]] * per_axis[1][corner[1]] * per_axis[2][corner[2]]
            flat = flat0 + int(np.dot(corner, strides))
            weight += np.bincount(flat, weights=w, minlength=size)
            moment += np.bincount(flat, weights=w * values, minlength=size)
        self.grids = [ndimage.gaussian_filter(g.reshape(shape).astype(np.float32), 1.5, mode="constant", truncate=3.0)
                      for g in (weight, moment)]
        self.floor = 1e-6 * float(weights.mean()) if len(weights) else 1.0

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        """The mean at query points (M, 3) mm -> (M,)."""
        from scipy import ndimage

        q = ((np.asarray(queries, dtype=np.float64) - self.origin) / self.cell).T
        weight, moment = (ndimage.map_coordinates(g, q, order=1, mode="constant", cval=0.0).astype(np.float64)
                          for g in self.grids)
        with np.errstate(invalid="ignore", divide="ignore"):
            return moment / np.where(weight > self.floor, weight, np.nan)


def _broad_max(depth, broad, limit, valid):
    """Largest wide-average depth / limit over the points whose depth reaches their limit (None: no such point)."""
    pts = valid[depth[valid] >= limit[valid]]
    if len(pts) == 0:
        return None
    r = broad[pts] / limit[pts]
    return float(np.nanmax(r)) if np.isfinite(r).any() else None


def robust_spread(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation from the median: the SD of the bulk of ``values``
    (a Gaussian's SD), untouched by a minority of outliers."""
    values = np.asarray(values, dtype=np.float64)
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if len(values) else 0.0


def match_reference(dirs: np.ndarray, measured: np.ndarray, expected: np.ndarray,
                    rounds: int = 4) -> tuple[np.ndarray, float]:
    """Centre shift and radius change for which the sphere as the grid images it best matches the
    intact surface: robust least squares of measured - expected = e . dc + dr.

    Parameters
    ----------
    dirs : (N, 3)
        Unit directions from the fitted centre of intact-surface points.
    measured : (N,)
        Their averaged distance from the fitted centre, mm.
    expected : (N,)
        The reference surface's averaged distance in the same directions, mm.

    Returns
    -------
    (shift (3,), radius change), mm. Points off by more than 3 robust SD (about 0.1-0.3 mm: a
    dent, a rough label) are left out in each round.
    """
    diff = measured - expected
    keep = np.isfinite(diff)
    step = np.zeros(4)
    design = np.hstack([dirs, np.ones((len(dirs), 1))])
    for _ in range(rounds):
        if keep.sum() < 10:
            break
        step, *_ = np.linalg.lstsq(design[keep], diff[keep], rcond=None)
        resid = diff - design @ step
        spread = 1.4826 * np.median(np.abs(resid[keep]))
        keep = np.isfinite(resid) & (np.abs(resid) <= max(3.0 * spread, 0.05))
    return step[:3], float(step[3])


# --------------------------------------------------------------------------------------------
# the head depression
# --------------------------------------------------------------------------------------------
def head_depression(head_mask: np.ndarray, affine: np.ndarray, fit: SphereFit, frame: HeadFrame, settings,
                    span: dict | None = None, mesh: tuple[np.ndarray, np.ndarray] | None = None,
                    scan_affine: np.ndarray | None = None, iso_voxel_mm: float | None = None) -> dict:
    """Largest inward distance of the weight-bearing articular surface from the fitted head sphere.

    Parameters
    ----------
    head_mask : ndarray of bool
        The head on the grid of ``affine`` (read only when ``mesh`` is not given).
    affine : ndarray (4, 4)
        Voxel index -> RAS mm of ``head_mask``.
    fit : SphereFit
        The head sphere fitted to the intact surface (centre c, radius r).
    frame : HeadFrame
        The head frame (u, v, w) of ``fit``.
    settings : Settings
        ``settings.collapse`` is read.
    span : dict, optional
        Weight-bearing span (section 4), for the JIC zone of the deepest point.
    mesh : (verts, faces), optional
        The marching-cubes surface of the head (or of its isotropic reconstruction) when already
        computed, RAS mm.
    scan_affine : ndarray (4, 4), optional
        The scan's own grid, on which the reference ball is labelled and whose voxel size sets
        the detection limit (default ``affine``).
    iso_voxel_mm : float, optional
        The voxel of the isotropic reconstruction the mesh comes from (None: the scan's mask).

    Returns
    -------
    dict
        ``head_depression_mm`` (mm, >= 0), ``arco2019_collapse`` and ``collapse`` (the record of
        metrics.json: location_uvw_mm, location_ras_mm, jic_zone, depressed_area_mm2,
        missing_volume_ml, detection_limit_mm, depth_to_limit, detection_limit_factor, region,
        averaging_sigma_mm, reference_center_ras_mm, reference_radius_mm, method).
    """
    cs = settings.collapse
    center, radius = np.asarray(fit.center, dtype=np.float64), float(fit.radius)
    verts, faces = mask_mesh(head_mask, affine) if mesh is None else mesh
    scan_affine = affine if scan_affine is None else np.asarray(scan_affine, dtype=np.float64)
    sigma = cs.averaging_sigma_mm
    record = {
        "location_uvw_mm": None, "location_ras_mm": None, "jic_zone": None, "depressed_area_mm2": None,
        "missing_volume_ml": None, "detection_limit_mm": None, "depth_to_limit": None,
        "detection_limit_factor": cs.detection_limit_factor,
        "surface_roughness_mm": None, "roughness_limit_mm": None, "roughness_limit_factor": cs.roughness_limit_factor,
        "top_limit_mm": None, "top_in_end_slices": None,
        "broad_depth_mm": None, "broad_to_limit_max": None, "breadth_sigma_mm": cs.breadth_sigma_mm,
        "breadth_factor": cs.breadth_factor, "narrow": None,
        "averaged_depression_mm": None, "floor_correction_mm": None, "floor_extrapolation": cs.floor_extrapolation,
        "region": f"weight-bearing surface: elevation >= {cs.region_min_elevation_deg:g} deg above the head equator, "
                  "less the ends of a thick-slice axis (within acos(1 - T/r) of it)",
        "averaging_sigma_mm": sigma,
        "reference_center_ras_mm": None, "reference_radius_mm": None,
        "method": METHOD,
    }
    empty = {"head_depression_mm": None, "arco2019_collapse": None, "collapse": record}
    if len(faces) == 0:
        return empty
    rel = verts - center
    dist = row_norms(rel)
    unit = rel / np.maximum(dist, 1e-9)[:, None]
    min_w = np.sin(np.radians(cs.region_min_elevation_deg))
    e_sup = np.asarray(frame.e_sup, dtype=np.float64)
    elevation = unit @ e_sup
    # everything computed below concerns the surface from a little under the region: the rest of
    # the head (the neck cut, the fovea) is dropped first, which keeps the cost to the dome
    voxel_max = float(np.linalg.norm(scan_affine[:3, :3], axis=0).max())
    margin = 3.0 * sigma + 2.0 * voxel_max
    near_region = rel @ e_sup > min_w * radius - margin - 2.0 * sigma
    in_region = elevation > min_w
    below = np.flatnonzero(near_region & ~in_region)  # where the neck cut may lie (the pole cones are no cut)
    # the ends of a thick-slice axis are left out: within acos(1 - T / r) of the axis the surface
    # lies in the outermost slice of thickness T, which the partial-volume rule takes or drops as a
    # whole (a head whose end slice is about half filled flips by a slice thickness)
    in_region &= ~in_end_cones(unit, scan_affine, radius)
    # the cut face (neck) is no articular surface: the region keeps clear of the surface below it
    # lying deeper than twice its detection limit, by the averaging reach plus two voxels
    cut = below[radius - dist[below] > 2.0 * detection_limit_mm(unit[below], scan_affine, cs.detection_limit_factor)]
    if len(cut):
        in_region[np.flatnonzero(in_region)[near_any(verts[in_region], verts[cut], margin)]] = False
    targets = np.flatnonzero(in_region)
    if len(targets) == 0:
        return empty
    areas, vertex_area = _vertex_areas(verts, faces)
    used = np.flatnonzero(near_region)

    # the head surface's averaged distance from c at its vertices
    measured = SurfaceMean(verts[used], vertex_area[used], dist[used], sigma)(verts[targets])
    from pipeline.geometry.frame import default_inlier_mm

    intact = np.abs(dist[targets] - radius) <= default_inlier_mm(scan_affine)
    # the reference (the upper part of the ball labelled on the scan's lattice), first at the
    # fitted sphere, then at the sphere matched to the intact surface through it: its staircase
    # pattern depends on where the sphere sits on the lattice to a tenth of a millimetre
    below = margin + 3.0 * sigma - min_w * radius
    center_ref, radius_ref = center, radius
    lattice = None
    if iso_voxel_mm:  # the head's isotropic lattice: the given grid, or read off the mesh
        lattice = np.asarray(affine, dtype=np.float64)
        if not np.allclose(np.linalg.norm(lattice[:3, :3], axis=0), iso_voxel_mm):
            directions = scan_affine[:3, :3] / np.linalg.norm(scan_affine[:3, :3], axis=0)
            lattice = mesh_lattice(verts, directions, iso_voxel_mm)
    for _ in range(cs.reference_passes):
        ref_verts, ref_faces = reference_surface(center_ref, radius_ref, scan_affine, lattice, e_sup, below)
        _, ref_area = _vertex_areas(ref_verts, ref_faces)
        reference = SurfaceMean(ref_verts, ref_area, row_norms(ref_verts - center_ref), sigma)
        # the reference's averaged distance from its centre c' in the head points' directions
        # (at c' + r' e), and the bias r' - that: what the grid does to an intact sphere
        bias = radius_ref - reference(center_ref + radius_ref * unit[targets])
        # the measured distance from c' (|p - c'| ~ |p - c| - e . (c' - c)) less the reference's
        # is the shift of centre and radius still needed
        from_ref = measured - unit[targets] @ (center_ref - center)
        shift, dr = match_reference(unit[targets][intact], from_ref[intact], (radius_ref - bias)[intact])
        center_ref, radius_ref = center_ref + shift, radius_ref + dr
    # depth below the matched sphere as the grid images it (the last shift moves the reference)
    depth = np.full(len(verts), np.nan)
    depth[targets] = radius_ref - (measured - unit[targets] @ (center_ref - center)) - bias
    # the same depth averaged over a wider patch: a collapse spans millimetres of the dome, a voxel
    # or two that an outline missed do not (see the breadth rule below)
    wide = cs.breadth_sigma_mm
    centre_last = center_ref - shift
    wide_bias = radius_ref - dr - SurfaceMean(ref_verts, ref_area, row_norms(ref_verts - centre_last), wide)(
        centre_last + (radius_ref - dr) * unit[targets])
    wide_measured = SurfaceMean(verts[used], vertex_area[used], dist[used], wide)(verts[targets])
    broad = np.full(len(verts), np.nan)
    broad[targets] = radius_ref - (wide_measured - unit[targets] @ (center_ref - center)) - wide_bias
    limit = np.full(len(verts), np.nan)
    limit[targets] = detection_limit_mm(unit[targets], scan_affine, cs.detection_limit_factor)

    valid = targets[np.isfinite(depth[targets])]
    if len(valid) == 0:
        return empty
    # A hand-drawn outline wanders by a pixel from slice to slice: the deepest of many such
    # wobbles reads as a dent. Their spread over the region (robust: a dent is a minority of it)
    # raises the limit, so that roughness is never staged as collapse.
    roughness = robust_spread(depth[valid])
    roughness_limit = cs.roughness_limit_factor * roughness
    limit[targets] = np.maximum(limit[targets], roughness_limit)
    # what a "none" rules out at the dome's top, where collapse sits: the limit straight up, or
    # nothing when the top lies in a thick-slice axis' end cone, which the region leaves out
    top_in_end = bool(in_end_cones(e_sup[None], scan_affine, radius)[0])
    top_limit = None if top_in_end else max(
        float(detection_limit_mm(e_sup[None], scan_affine, cs.detection_limit_factor)[0]), roughness_limit)
    # breadth rule: a point counts as depressed only where the wide average also reaches
    # breadth_factor x its limit
    to_limit = depth[valid] / limit[valid]
    if cs.breadth_factor > 0:
        broad_to_limit = np.where(np.isfinite(broad[valid]), broad[valid] / (cs.breadth_factor * limit[valid]), np.inf)
        to_limit_both = np.minimum(to_limit, broad_to_limit)
    else:
        to_limit_both = to_limit
    significant = valid[to_limit_both >= 1.0]
    if len(significant):
        best = significant[np.argmax(depth[significant])]
    else:  # nothing passes: the point closest to its limit (a narrow dip may lie beyond it)
        best = valid[np.argmax(to_limit)]
    depression = max(float(depth[best]), 0.0)
    best_limit = float(limit[best])
    correction = None
    if len(significant) and cs.floor_extrapolation and wide > 1.2 * sigma and np.isfinite(broad[best]):
        # the average lowers a rounded floor by its curvature x sigma^2 (the wide one by
        # curvature x W^2): the two together give the floor at zero width. At the deepest point
        # the wide average is the shallower; the rare opposite (noise) is no reason to go shallower.
        correction = max(sigma**2 / (wide**2 - sigma**2) * (float(depth[best]) - float(broad[best])), 0.0)

    # faces of the (cut-clear) region: depressed area, and the missing volume
    inner = in_region[faces].all(axis=1)
    face_depth = np.where(inner[:, None], depth[faces], np.nan).mean(axis=1)
    centroid = verts[faces[inner]].mean(axis=1) - center_ref
    rho = row_norms(centroid)
    e_f = centroid / rho[:, None]
    # a face is depressed by the rule that stages the head: its depth reaches its limit (voxel
    # and roughness terms) and its wide average breadth_factor x that limit; with no such point
    # the head is not collapsed and nothing of it is depressed
    face_limit = np.maximum(detection_limit_mm(e_f, scan_affine, cs.detection_limit_factor), roughness_limit)
    face_ok = face_depth[inner] >= face_limit
    if cs.breadth_factor > 0:
        face_broad = np.where(inner[:, None], broad[faces], np.nan).mean(axis=1)[inner]
        face_ok &= np.nan_to_num(face_broad, nan=np.inf) >= cs.breadth_factor * face_limit
    depressed_area = float(areas[inner][face_ok].sum()) if len(significant) else 0.0
    # the raw depth of each face less the reference's averaged depth (its grid bias) there
    face_bias = radius_ref - reference(center_ref + radius_ref * e_f)
    raw = radius_ref - rho - np.nan_to_num(face_bias)
    v0, v1, v2 = (verts[faces[inner, k]] for k in range(3))
    area_vec = 0.5 * np.cross(v1 - v0, v2 - v0)
    cos_area = np.einsum("ij,ij->i", area_vec, e_f)
    missing = float((cos_area * raw * (radius_ref**2 + radius_ref * rho + rho**2) / (3.0 * rho**2)).sum())

    uvw = frame.uvw(verts[best])
    zone = None
    if span is not None:
        from pipeline.measures.location import JIC_ZONES, zone_indices

        zone = JIC_ZONES[int(zone_indices(uvw[None], frame, span)[0][0])]
    record.update(
        location_uvw_mm=[float(x) for x in uvw],
        location_ras_mm=[float(x) for x in verts[best]],
        jic_zone=zone,
        depressed_area_mm2=depressed_area,
        missing_volume_ml=max(missing, 0.0) / 1000.0,
        detection_limit_mm=best_limit,
        depth_to_limit=float(depth[best] / best_limit),
        surface_roughness_mm=roughness,
        broad_depth_mm=float(broad[best]),
        broad_to_limit_max=_broad_max(depth, broad, limit, valid),
        narrow=bool(not len(significant) and depression >= best_limit),
        roughness_limit_mm=roughness_limit,
        top_limit_mm=top_limit,
        top_in_end_slices=top_in_end,
        averaged_depression_mm=depression,
        floor_correction_mm=correction,
        reference_center_ras_mm=[float(x) for x in center_ref],
        reference_radius_mm=float(radius_ref),
    )
    if correction is not None:
        depression += correction
    stage = arco2019_collapse(depression, best_limit) if len(significant) else "none"
    return {"head_depression_mm": depression, "arco2019_collapse": stage,
            "collapse": record}


def top_caveat(stage: str | None, record: dict) -> str | None:
    """What a "none" leaves open at the dome's top, in a few words, or None: "top of the dome not
    measured" (it lies in a thick-slice axis' end slices, left out of the region) or "not ruled
    out: X mm limit at the top" (``top_limit_mm`` over ARCO's 2 mm IIIA/IIIB boundary, so that a
    IIIA collapse would read "none" as well). Staged heads have none."""
    if stage != "none" or not record:
        return None
    if record.get("top_in_end_slices"):
        return "top of the dome not measured"
    top = record.get("top_limit_mm")
    if top is not None and top > IIIB_OVER_MM:
        return f"not ruled out: {top:.1f} mm limit at the top"
    return None


def assessment_flags(stage: str | None, record: dict, scan_affine: np.ndarray) -> list[str]:
    """Review flags of a head staged "none" where that call cannot rule out collapse at the dome's
    top (:func:`top_caveat`), with the reason spelled out."""
    caveat = top_caveat(stage, record)
    if caveat is None:
        return []
    if record.get("top_in_end_slices"):
        thick = float(np.linalg.norm(np.asarray(scan_affine, dtype=np.float64)[:3, :3], axis=0).max())
        return [f"collapse not assessed at the top of the dome: it lies in the end slices of this scan's "
                f"{thick:.1f} mm slice axis, which the depression measurement leaves out "
                "(check the dome on the images)"]
    top = record["top_limit_mm"]
    rough = record.get("roughness_limit_mm") or 0.0
    why = (f"{record['roughness_limit_factor']:g} x the outline's roughness of {record['surface_roughness_mm']:.2f} mm"
           if rough >= top else f"{record['detection_limit_factor']:g} x the voxel's extent")
    return [f"collapse detection limit at the top of the dome is {top:.1f} mm ({why}), over the 2 mm "
            "IIIA/IIIB boundary: stage 'none' does not rule out collapse here"]


def literature_flags(nf_pct: float | None, jic_type: str | None, settings) -> list[str]:
    """Literature cut-offs one visit meets, each worded as a cut-off from a cited study, never as a
    prediction for this hip (docs/method.md section 6)."""
    cs = settings.collapse
    flags = []
    if nf_pct is not None and nf_pct >= cs.nf_cutoff_pct:
        flags.append(f"literature cut-off: necrotic fraction >= {cs.nf_cutoff_pct:g} % (Hip Int 2022: collapse "
                     "within a year in 90.6 % of hips at or above it against 31.3 % below)")
    if jic_type is not None and jic_type in cs.jic_cutoff_types:
        flags.append(f"literature cut-off: JIC type {jic_type} (Kuroda et al., Bone Joint Res 2019: 84.8 % of "
                     "type C2 hips collapsed within 5 years)")
    return flags


def followup_literature_flags(followup_nf_pct: float | None, settings) -> list[str]:
    """The cut-off of a treated hip's follow-up: NF < ``small_lesion_nf_pct`` (the pilot study,
    Bone Joint Res 2022: hips under 10 % at 3 months did not progress in stage). The study read it
    at 3 months; the flag says so, since compare does not know the visit's month."""
    cs = settings.collapse
    if followup_nf_pct is None or followup_nf_pct >= cs.small_lesion_nf_pct:
        return []
    return [f"literature cut-off: necrotic fraction < {cs.small_lesion_nf_pct:g} % at follow-up (pilot study, Bone "
            "Joint Res 2022: hips under 10 % at 3 months did not progress in stage; read at 3 months)"]
