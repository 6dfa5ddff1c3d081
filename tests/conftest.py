"""Shared test helpers: analytic phantoms on arbitrary grids, and the real-data folder."""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"

# napari's settings (reader preferences among them: pipeline/napari/_preferences.py) go to a
# throw-away file, never the user's: set before napari.settings is imported
os.environ["NAPARI_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="onfh-tests-napari-")) / "settings.yaml")


def realdata(*parts: str) -> Path:
    """Path into ../shared/realdata, skipping the test when the folder is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real-data folder {REALDATA} is absent")
    return REALDATA.joinpath(*parts)


def grid_affine(shape, spacing, center_mm=(0.0, 0.0, 0.0), rotation=None) -> np.ndarray:
    """Affine of a grid of `shape` voxels of `spacing` mm centred on `center_mm`, optionally rotated."""
    rot = np.eye(3) if rotation is None else np.asarray(rotation, float)
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    half = (np.asarray(shape) - 1) / 2.0
    aff[:3, 3] = np.asarray(center_mm, float) - aff[:3, :3] @ half
    return aff


def voxel_centres(shape, affine) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(tuple(shape) + (3,))


def rotation_matrix(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def ball_and_cap_labels(shape, affine, center, radius, cap_height):
    """Label map: 1 = ball of `radius` (mm) at `center`, 2 = its top cap of height `cap_height` (mm).

    Membership is decided at voxel centres, so the voxel-count volume is an unbiased estimate of
    the closed-form volume (its expectation over sub-voxel shifts of the shape is exact).
    """
    p = voxel_centres(shape, affine) - np.asarray(center, float)
    inside = (p ** 2).sum(-1) <= radius ** 2
    labels = np.zeros(shape, np.uint8)
    labels[inside] = 1
    labels[inside & (p[..., 2] >= radius - cap_height)] = 2
    return labels


def ball_volume_ml(radius):
    return 4.0 / 3.0 * np.pi * radius ** 3 / 1000.0


def cap_volume_ml(radius, height):
    return np.pi * height ** 2 * (3 * radius - height) / 3.0 / 1000.0


def save_nifti(path, data, affine):
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def all_axis_orders():
    """The 48 ways to store a 3D array: 6 axis permutations x 8 flip patterns."""
    return list(itertools.product(itertools.permutations(range(3)), itertools.product((1, -1), repeat=3)))


def restore(data, affine, perm, flips):
    """Store the same physical voxels in another axis order: returns (array, affine) such that
    every stored voxel keeps its world position."""
    shape = np.array(data.shape)
    out = np.transpose(data, perm)
    aff = np.eye(4)
    # new index n maps to old index o: o[perm[a]] = n[a] (or shape-1-n[a] when flipped)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, (src, f) in enumerate(zip(perm, flips)):
        if f == -1:
            out = np.flip(out, axis=a)
            m[src, a] = -1
            m[src, 3] = shape[src] - 1
        else:
            m[src, a] = 1
    aff = affine @ m
    return np.ascontiguousarray(out), aff


def napari_or_skip():
    """napari for a napari test module, or the module skipped when napari, pytest-qt or a display
    (Qt/OpenGL: run under ``xvfb-run -a``) is missing; ``make test`` provides all three."""
    napari = pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("no display for Qt/OpenGL: run under xvfb-run -a", allow_module_level=True)
    return napari
