"""Grids for the automatic segmentation: a coarse whole-image grid and a fine head crop.

Both live in the scan's canonical voxel order and keep its (possibly oblique) direction cosines:
the coarse grid averages blocks of voxels, the fine crop subdivides thick slices into about
cubic voxels by linear interpolation along the slice axis. Neither rotates or resamples in
plane, so every step is a deterministic function of the canonical array (the same scan stored
in another axis order gives the same masks) and a fine-crop mask goes back to the native grid
exactly, by averaging each native voxel's block of sub-voxels (the truth rule "at least half
of the voxel inside").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.geometry.affine import bounding_box, mm_to_index, voxel_spacing


def block_factors(spacing: np.ndarray, target_mm: float) -> np.ndarray:
    """Integer factor per axis so that spacing x factor (coarse) or spacing / factor (fine) is
    about ``target_mm``; never below 1."""
    return np.maximum(1, np.rint(np.asarray(spacing) / target_mm)).astype(int)


def coarse_grid(data: np.ndarray, affine: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Block-average an image to voxels of about ``voxel_mm``.

    Returns
    -------
    coarse : ndarray of float32
    coarse_affine : ndarray, shape (4, 4)
        Coarse voxel index -> RAS mm (block centres).
    """
    k = np.maximum(1, np.rint(voxel_mm / voxel_spacing(affine))).astype(int)
    shape = np.array(data.shape) // k
    shape = np.maximum(shape, 1)
    k = np.minimum(k, np.array(data.shape))
    trimmed = data[: shape[0] * k[0], : shape[1] * k[1], : shape[2] * k[2]].astype(np.float32)
    coarse = trimmed.reshape(shape[0], k[0], shape[1], k[1], shape[2], k[2]).mean(axis=(1, 3, 5))
    step = np.eye(4)
    step[:3, :3] = np.diag(k)
    step[:3, 3] = (k - 1) / 2.0
    return coarse, affine @ step


def bias_field(image: np.ndarray, affine: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Smooth estimate of the bright-tissue signal (fat and yellow marrow), same grid.

    Fat and yellow marrow are the brightest T1 tissues and nearly equal, so a normalised
    convolution of the voxels above the foreground's 70th percentile traces the multiplicative
    bias field; dividing by it makes marrow about 1 everywhere (bias-robust thresholds).
    """
    img = np.asarray(image, dtype=np.float32)
    fg = img > _otsu(img)
    if fg.sum() < 10:
        return np.full(img.shape, max(float(img.max()), 1e-6), dtype=np.float32)
    bright = fg & (img >= np.percentile(img[fg], 70))
    sigma = sigma_mm / voxel_spacing(affine)
    num = ndimage.gaussian_filter(np.where(bright, img, 0.0).astype(np.float32), sigma, mode="constant")
    den = ndimage.gaussian_filter(bright.astype(np.float32), sigma, mode="constant")
    level = float(np.median(img[bright]))
    # where no bright tissue is near (air), fall back to the global level
    out = np.where(den > 0.05, num / np.maximum(den, 1e-6), level)
    return np.maximum(out, 0.05 * level).astype(np.float32)


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size > 200_000:
        v = v[:: v.size // 200_000]
    if np.ptp(v) == 0:
        return float(v[0]) - 1.0
    return float(threshold_otsu(v))


@dataclass
class Crop:
    """A box of the native canonical grid and its subdivided (about cubic) working grid.

    Attributes
    ----------
    lo, hi : ndarray of int
        Native index bounds (hi exclusive).
    factors : ndarray of int
        Sub-voxels per native voxel along each axis.
    affine : ndarray, shape (4, 4)
        Working voxel index -> RAS mm.
    """

    lo: np.ndarray
    hi: np.ndarray
    factors: np.ndarray
    affine: np.ndarray
    blocks: np.ndarray = None  # native voxels averaged per working voxel (fine in-plane grids)

    def __post_init__(self):
        if self.blocks is None:
            self.blocks = np.ones(3, dtype=int)

    @property
    def native_shape(self) -> tuple:
        return tuple(int(x) for x in self.hi - self.lo)

    @property
    def shape(self) -> tuple:
        return tuple(int(x) for x in (self.hi - self.lo) * self.factors // self.blocks)

    @property
    def spacing(self) -> np.ndarray:
        return voxel_spacing(self.affine)

    @property
    def slices(self) -> tuple:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi))

    def upsample(self, native_crop: np.ndarray) -> np.ndarray:
        """Linear interpolation of a native-crop array onto the working grid (float32)."""
        out = np.asarray(native_crop, dtype=np.float32)
        if np.any(self.blocks > 1):
            n = np.array(out.shape) // self.blocks
            b0, b1, b2 = (int(x) for x in self.blocks)
            out = out.reshape(n[0], b0, n[1], b1, n[2], b2).mean(axis=(1, 3, 5))
        for axis, f in enumerate(self.factors):
            if f > 1:
                out = _upsample_axis(out, axis, int(f))
        return out

    def slab_boundaries(self) -> list[tuple[int, np.ndarray]]:
        """(axis, bool per working index) of the working layers between two native slices.

        Along an axis subdivided by f > 1, the layers whose centre lies within half a working
        voxel of a native slice boundary (native index k + 1/2)."""
        out = []
        for axis, f in enumerate(self.factors):
            if f > 1:
                n = int(self.shape[axis])
                pos = (np.arange(n) + 0.5) / f - 0.5
                frac = pos - np.floor(pos)
                out.append((axis, np.abs(frac - 0.5) <= 0.5 / f + 1e-9))
        return out

    def to_native(self, mask: np.ndarray) -> np.ndarray:
        """Fraction of each native voxel covered by a working-grid mask (float32)."""
        n0, n1, n2 = (int(x) for x in np.array(self.native_shape) // self.blocks)
        f0, f1, f2 = (int(x) for x in self.factors)
        out = mask.reshape(n0, f0, n1, f1, n2, f2).mean(axis=(1, 3, 5), dtype=np.float32)
        for axis, b in enumerate(self.blocks):
            if b > 1:  # a working voxel spans b native voxels: each gets its value
                out = np.repeat(out, int(b), axis=axis)
        return out

    def points(self, box: tuple | None = None) -> np.ndarray:
        """RAS mm of every working voxel, shape (*shape, 3), float32 (computed once; read-only).

        With ``box`` (slices of the working grid): those voxels' only, the same values, computed
        alone unless the whole grid's are already known.
        """
        cached = self.__dict__.get("_points")
        if box is not None:
            if cached is not None:
                return cached[box]
            box = tuple(slice(*sl.indices(n)[:2]) for sl, n in zip(box, self.shape))
            return voxel_points(tuple(sl.stop - sl.start for sl in box), self.affine,
                                start=[sl.start for sl in box])
        if cached is None:
            cached = voxel_points(self.shape, self.affine)
            cached.flags.writeable = False
            self.__dict__["_points"] = cached
        return cached

    def ball_box(self, centre, radius_mm: float, margin: int = 2) -> tuple:
        """Slices of the working grid holding every voxel centre within ``radius_mm`` of
        ``centre`` (RAS mm), grown by ``margin`` voxels and clipped."""
        c = np.asarray(centre, dtype=np.float64)
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        idx = mm_to_index(self.affine, c + float(radius_mm) * corners)
        lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - margin, 0, self.shape)
        hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + margin + 1, lo, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _upsample_axis(a: np.ndarray, axis: int, f: int) -> np.ndarray:
    n = a.shape[axis]
    pos = (np.arange(n * f) + 0.5) / f - 0.5  # native index of each sub-voxel centre
    pos = np.clip(pos, 0, n - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def make_crop(shape, affine: np.ndarray, center_mm, half_mm: float, target_mm: float, roi=None) -> Crop:
    """Native-grid box holding the world cube ``center_mm`` ± ``half_mm`` (clipped to the image
    and to an optional RAS box ``roi`` = (x0, y0, z0, x1, y1, z1)), with its working grid."""
    center = np.asarray(center_mm, dtype=np.float64)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    world = center + half_mm * corners
    idx = mm_to_index(affine, world)
    lo = np.floor(idx.min(axis=0)).astype(int)
    hi = np.ceil(idx.max(axis=0)).astype(int) + 1
    if roi is not None:
        r = np.asarray(roi, dtype=np.float64).reshape(2, 3)
        rc = np.array([[r[a, 0], r[b, 1], r[c, 2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        ridx = mm_to_index(affine, rc)
        lo = np.maximum(lo, np.floor(ridx.min(axis=0)).astype(int))
        hi = np.minimum(hi, np.ceil(ridx.max(axis=0)).astype(int) + 1)
    spacing = voxel_spacing(affine)
    factors = block_factors(spacing, target_mm)
    # voxels much finer than the target are averaged in blocks (a 0.35 mm in-plane grid would
    # quadruple the work for no gain at the scale of a 2-4 mm band)
    blocks = np.maximum(1, np.floor(target_mm / spacing + 0.25)).astype(int)
    blocks[factors > 1] = 1
    lo = np.clip(lo, 0, np.array(shape))
    hi = np.clip(hi, lo + blocks, np.array(shape))
    hi = lo + np.maximum((hi - lo) // blocks, 1) * blocks
    if np.any(hi > np.array(shape)):
        lo = np.maximum(hi - ((hi - lo) // blocks) * blocks, 0)
        hi = np.minimum(hi, np.array(shape))
        hi = lo + ((hi - lo) // blocks) * blocks
    sub = np.eye(4)
    sub[:3, :3] = np.diag(blocks / factors)
    sub[:3, 3] = lo + 0.5 * blocks / factors - 0.5
    return Crop(lo, hi, factors, affine @ sub, blocks)


def voxel_points(shape, affine: np.ndarray, start=None) -> np.ndarray:
    """RAS mm of every voxel centre of a grid, shape (*shape, 3), float32.

    ``start``: the voxels of a box of a larger grid whose first voxel is ``start`` (the values
    of the larger grid's, bit for bit)."""
    a = np.asarray(affine, dtype=np.float32)
    start = [0] * len(shape) if start is None else [int(x) for x in start]
    grids = [np.arange(s0, s0 + n).astype(np.float32) for s0, n in zip(start, shape)]
    out = np.empty(tuple(shape) + (3,), dtype=np.float32)
    for d in range(3):
        out[..., d] = (
            a[d, 0] * grids[0][:, None, None] + a[d, 1] * grids[1][None, :, None] + a[d, 2] * grids[2][None, None, :]
            + a[d, 3]
        )
    return out


def sample(image: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, order: int = 1, cval: float = 0.0):
    """Image values at world points (trilinear by default); ``cval`` outside the grid."""
    ijk = mm_to_index(affine, np.asarray(points_mm, dtype=np.float64).reshape(-1, 3))
    vals = ndimage.map_coordinates(np.asarray(image, dtype=np.float32), ijk.T, order=order, mode="constant", cval=cval)
    return vals.reshape(np.asarray(points_mm).shape[:-1])


def ball(spacing, radius_mm: float) -> np.ndarray:
    """Structuring element: the voxels within ``radius_mm`` of the centre on this spacing."""
    sp = np.asarray(spacing, dtype=np.float64)
    half = np.floor(radius_mm / sp + 1e-9).astype(int)
    g = np.meshgrid(*[np.arange(-h, h + 1) * d for h, d in zip(half, sp)], indexing="ij")
    return (g[0] ** 2 + g[1] ** 2 + g[2] ** 2) <= radius_mm**2 + 1e-9


#: below this share of voxels set, a mask is eroded by scipy (see :func:`_ball_morphology`)
SPARSE_EROSION_SHARE = 0.2


def _ball_boxes(st: np.ndarray) -> list[tuple[int, int, int]] | None:
    """Half-widths (a, b, c) of centred boxes whose union is the structuring element ``st``
    (the maximal ones), or None when it is no such union. A :func:`ball` is one: symmetric
    about each axis, and holding every voxel between the centre and any of its voxels."""
    h = np.array(st.shape) // 2
    if st.ndim != 3 or np.any(np.array(st.shape) != 2 * h + 1):
        return None
    q = st[h[0]:, h[1]:, h[2]:]
    boxes = []
    for a, b, c in np.argwhere(q):
        if not ((a + 1 < q.shape[0] and q[a + 1, b, c]) or (b + 1 < q.shape[1] and q[a, b + 1, c])
                or (c + 1 < q.shape[2] and q[a, b, c + 1])):
            boxes.append((int(a), int(b), int(c)))
    union = np.zeros_like(st, dtype=bool)
    for a, b, c in boxes:
        union[h[0] - a:h[0] + a + 1, h[1] - b:h[1] + b + 1, h[2] - c:h[2] + c + 1] = True
    return boxes if np.array_equal(union, st.astype(bool)) else None


def _grow_along(base: np.ndarray, x: np.ndarray, axis: int, d: int, op) -> None:
    """base op= x shifted by +d and by -d along ``axis`` (in place; nothing comes from outside)."""
    lo = [slice(None)] * x.ndim
    hi = [slice(None)] * x.ndim
    lo[axis], hi[axis] = slice(d, None), slice(None, -d)
    lo, hi = tuple(lo), tuple(hi)
    op(base[lo], x[hi], out=base[lo])
    op(base[hi], x[lo], out=base[hi])


def _ball_morphology(mask: np.ndarray, st: np.ndarray, erode: bool) -> np.ndarray:
    """``binary_erosion(mask, st, border_value=1)`` or ``binary_dilation(mask, st)`` for a
    structuring element that is a union of centred boxes (:func:`_ball_boxes`): the union (dilation)
    or intersection (erosion) of separable box passes, each a few shifted logical operations, the
    passes shared between boxes. The same mask; dilation 2-6 times faster than scipy's, erosion of
    a dense mask 1.3-2 times (a sparse one is left to scipy)."""
    boxes = _ball_boxes(st)
    # scipy's erosion stops at a voxel's first background neighbour: faster on a sparse mask
    if boxes is None or (erode and np.count_nonzero(mask) < SPARSE_EROSION_SHARE * mask.size):
        if erode:
            return ndimage.binary_erosion(mask, st, border_value=1)
        return ndimage.binary_dilation(mask, st)
    op = np.logical_and if erode else np.logical_or
    x = np.asarray(mask, dtype=bool)
    cache: dict = {(0, 0, 0): x}

    def grown(w):  # x passed through the box of half-widths w, built axis by axis, one step at a time
        if w in cache:
            return cache[w]
        axis = 2 if w[2] else (1 if w[1] else 0)
        prev = list(w)
        prev[axis] -= 1
        source = tuple(w[:axis]) + (0,) * (3 - axis)  # the box up to the axes before this one
        out = grown(tuple(prev)).copy()
        _grow_along(out, grown(source), axis, w[axis], op)
        cache[w] = out
        return out

    result = None
    for w in boxes:
        part = grown(w)
        result = part.copy() if result is None else op(result, part, out=result)
    return result


def _morphology_in_box(mask: np.ndarray, spacing, radius_mm: float, operation) -> np.ndarray:
    """``operation(crop, ball)`` on the mask's bounding box grown by the ball's radius; False
    elsewhere. A mask unchanged for a radius <= 0."""
    if radius_mm <= 0:
        return mask.copy()
    st = ball(spacing, radius_mm)
    out = np.zeros_like(mask, dtype=bool)
    box = bounding_box(mask, margin=np.array(st.shape) // 2 + 1)
    if box is None:
        return out
    out[box] = operation(mask[box], st)
    return out


def dilate_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (voxel-centre ball; fast binary morphology).

    Computed in the mask's bounding box grown by the radius (identical result, far cheaper for
    a mask that fills a small part of the grid).
    """
    return _morphology_in_box(mask, spacing, radius_mm, lambda crop, st: _ball_morphology(crop, st, erode=False))


def erode_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Erosion by a ball of ``radius_mm``; the grid border does not erode (the anatomy goes on).

    Computed in the mask's bounding box grown by the radius: a box edge inside the grid then
    lies beyond a margin of background, so the result equals the whole-grid one.
    """
    return _morphology_in_box(mask, spacing, radius_mm, lambda crop, st: _ball_morphology(crop, st, erode=True))


def open_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """Opening by a ball: removes every part thinner than 2 x ``radius_mm``."""
    return dilate_mm(erode_mm(mask, spacing, radius_mm), spacing, radius_mm) & mask


__all__ = [
    "Crop", "bias_field", "block_factors", "coarse_grid", "dilate_mm", "erode_mm", "make_crop",
    "open_mm", "sample", "voxel_points",
]
