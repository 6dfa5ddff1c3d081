"""Surfaces of masks: marching cubes in world space, mesh volume and area, STL, and shape-based
interpolation to isotropic voxels (docs/method.md section 3).

Meshes are built in voxel-index space and mapped through the full affine, so oblique (and even
sheared) grids give exact world-space surfaces. Measurement meshes are never smoothed.

Marching cubes uses the classic Lorensen-Cline case table (scikit-image ``method="lorensen"``,
its full 256-case table: every ambiguous face separates the inside corners, so neighbouring cubes
always agree and the mesh is closed). That is the triangulation pyradiomics' shape features use;
pyradiomics folds the table to 128 cases by complement symmetry, which leaves cracks where an
ambiguous face is resolved one way by one cube and the other way by its neighbour, so its
MeshVolume then depends on where the mask sits in the image (docs/method.md section 3).

SciPy is imported by the functions that use it (interpolation needs none of it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.geometry.affine import bounding_box, box_start, index_to_mm, voxel_spacing

#: Marching-cubes case table of measurement meshes (scikit-image ``marching_cubes(method=...)``):
#: "lorensen", the classic table pyradiomics' MeshVolume uses, closed wherever pyradiomics' own
#: mesh is (see the module docstring and docs/method.md section 3).
MC_METHOD = "lorensen"


def mask_mesh(mask: np.ndarray, affine: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (classic Lorensen-Cline table, :data:`MC_METHOD`) at level 0.5 on an
    unsmoothed binary mask.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm.
    step : int
        Marching-cubes step in voxels: 1 for measurement, larger for light display meshes.

    Returns
    -------
    verts : ndarray, shape (V, 3)
        Vertices in RAS mm.
    faces : ndarray, shape (F, 3)
        Triangles with outward normals (right-hand rule) in world space.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    box = bounding_box(mask, margin=1)
    # Pad so that a mask touching the array edge still gives a closed surface.
    crop = np.pad(mask[box], 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(crop, level=0.5, step_size=step, allow_degenerate=False, method=MC_METHOD)
    world = index_to_mm(affine, verts + (box_start(box) - 1))
    faces = faces.astype(np.int64)
    if _signed_volume(world, faces) < 0:
        # skimage orients faces for its own index space; a left-handed affine flips them.
        faces = faces[:, ::-1]
    return world, faces


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() / 6.0)


def mesh_volume_mm3(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume of a closed triangle mesh by the divergence theorem, mm^3."""
    if len(faces) == 0:
        return 0.0
    return abs(_signed_volume(verts, faces))


def mesh_area_mm2(verts: np.ndarray, faces: np.ndarray) -> float:
    """Total triangle area, mm^2."""
    if len(faces) == 0:
        return 0.0
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1).sum() / 2.0)


def mask_mesh_volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Surface volume of a mask (docs/method.md section 3), mL."""
    verts, faces = mask_mesh(mask, affine)
    return mesh_volume_mm3(verts, faces) / 1000.0


def write_stl(path: str | Path, verts: np.ndarray, faces: np.ndarray, name: str = "onfh") -> None:
    """Binary STL in RAS mm (3D Slicer reads STL as LPS unless told otherwise; the README says so)."""
    tri = verts[faces].astype(np.float32)  # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
    record = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    record["n"] = normals
    record["v"] = tri
    header = f"{name} RAS mm".encode()[:80].ljust(80, b" ")
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.uint32(len(faces)).tobytes())
        fh.write(record.tobytes())


def read_stl(path: str | Path) -> np.ndarray:
    """Triangles (F, 3, 3) of a binary STL written by :func:`write_stl`."""
    raw = Path(path).read_bytes()
    count = int(np.frombuffer(raw[80:84], dtype="<u4")[0])
    record = np.frombuffer(raw[84:], dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")], count=count)
    return record["v"].astype(np.float64)


# shape-based interpolation -----------------------------------------------------------------
def isotropic_reconstruction(
    mask: np.ndarray, affine: np.ndarray, voxel_mm: float = 0.5, margin_mm: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Shape-based interpolation of one binary mask to isotropic voxels; see
    :func:`isotropic_reconstructions`."""
    (iso,), iso_affine = isotropic_reconstructions([mask], affine, voxel_mm, margin_mm)
    return iso, iso_affine


def isotropic_reconstructions(
    masks: list[np.ndarray], affine: np.ndarray, voxel_mm: float = 0.5, margin_mm: float = 3.0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Shape-based interpolation of binary masks to one isotropic grid (Raya & Udupa 1990).

    For each mask a signed distance map (mm, positive inside, zero half-way between an inside and
    an outside voxel centre) is computed on the original grid, resampled trilinearly onto an
    isotropic grid with the same axis directions, and thresholded at zero. Thick slices thus give
    a smooth shape between slices instead of a staircase. All masks share the grid (the bounding
    box of their union plus a margin), so nested masks (lesion within head) can be intersected.

    Parameters
    ----------
    masks : list of ndarray of bool, each shape (I, J, K)
    affine : ndarray (4, 4)
        Voxel index -> RAS mm of the masks.
    voxel_mm : float
        Isotropic voxel size of the result, mm.
    margin_mm : float
        Empty border kept around the union's bounding box, mm.

    Returns
    -------
    iso_masks : list of ndarray of bool
    iso_affine : ndarray (4, 4)
        Voxel index -> RAS mm of the isotropic grid (cropped).
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    union = np.logical_or.reduce(masks)
    spacing = voxel_spacing(affine)
    if not union.any():
        return [np.zeros((1, 1, 1), dtype=bool) for _ in masks], affine.copy()
    margin_vox = np.ceil(margin_mm / spacing).astype(int) + 1
    box = bounding_box(union)
    lo = box_start(box) - margin_vox
    hi = np.array([s.stop for s in box]) + margin_vox
    # Isotropic grid tiling the crop's voxel boxes (same directions, finer steps). Its centres sit
    # half a fine voxel inside the box edges, never on the half-way points where the distance map
    # is exactly zero, so a mask that is already on the fine grid is reproduced voxel for voxel.
    steps = voxel_mm / spacing  # crop-index step per output voxel along each axis
    n_out = np.maximum(np.floor((hi - lo) / steps + 1e-9).astype(int), 1)
    first = -0.5 + steps / 2
    coords = [f + np.arange(n) * s for f, n, s in zip(first, n_out, steps)]
    results = []
    for mask in masks:
        sdf = signed_distance(_crop_padded(mask, lo, hi), spacing)
        results.append(resample_trilinear(sdf, coords) > 0)
    direction = affine[:3, :3] / spacing
    iso_affine = np.eye(4)
    iso_affine[:3, :3] = direction * voxel_mm
    iso_affine[:3, 3] = affine[:3, :3] @ (lo + first) + affine[:3, 3]
    return results, iso_affine


def resample_trilinear(volume: np.ndarray, coords) -> np.ndarray:
    """Trilinear interpolation of ``volume`` on the tensor grid ``coords`` (one array of continuous
    indices per axis), coordinates clamped to the volume (``mode="nearest"``).

    Trilinear interpolation is the product of three linear ones, so on a tensor grid it is done
    one axis at a time: the same values as ``scipy.ndimage.map_coordinates(order=1)`` at every
    grid point, but each step only gathers two slabs instead of eight corners per point.
    """
    out = np.asarray(volume, dtype=np.float64)
    for axis, c in enumerate(coords):
        n = out.shape[axis]
        c = np.clip(np.asarray(c, dtype=np.float64), 0.0, n - 1)
        i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        w = c - i0
        shape = [1] * out.ndim
        shape[axis] = len(c)
        w = w.reshape(shape)
        lower = np.take(out, i0, axis=axis)
        lower *= 1.0 - w
        upper = np.take(out, i1, axis=axis)
        upper *= w
        lower += upper  # (the same arithmetic as lower * (1 - w) + upper * w, without temporaries)
        out = lower
    return out


def _crop_padded(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """mask[lo:hi] with zeros where the box reaches outside the array."""
    pad_lo = np.maximum(-lo, 0)
    pad_hi = np.maximum(hi - np.array(mask.shape), 0)
    clo = np.maximum(lo, 0)
    chi = np.minimum(hi, mask.shape)
    return np.pad(mask[clo[0]:chi[0], clo[1]:chi[1], clo[2]:chi[2]], list(zip(pad_lo, pad_hi)))


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed Euclidean distance (mm) between voxel centres: > 0 inside, < 0 outside.

    The zero level lies half-way between neighbouring inside and outside voxel centres.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return (inside - outside).astype(np.float32)
