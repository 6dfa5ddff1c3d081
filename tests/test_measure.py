"""Volumes against closed forms (docs/method.md section 3)."""

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.geometry.mesh import mask_mesh_volume_ml
from pipeline.masks import labels as labels_mod
from pipeline.measures import volumes as measure

from conftest import ball_and_cap_labels, ball_volume_ml, cap_volume_ml, grid_affine, rotation_matrix

SPACINGS = [(1.0, 1.0, 1.0), (0.7, 0.7, 3.5), (0.5, 0.5, 0.5), (0.9, 3.0, 0.9)]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ball_and_cap_voxel_volumes_match_closed_form(spacing):
    # Voxel counting is unbiased over sub-voxel shifts; a head-sized ball at these spacings deviates
    # by a few tenths of a percent (measured: <= 0.3 %). 1 % still catches a wrong voxel volume
    # (0.7 mm vs 3.5 mm slices is a factor 5) or an off-by-one row of voxels (about 3 % at 3.5 mm).
    rng = np.random.default_rng(7)
    r, h = 22.0, 9.0
    head_err, cap_err = [], []
    for _ in range(4):
        shape = tuple(int(np.ceil(60 / s)) for s in spacing)
        aff = grid_affine(shape, spacing, center_mm=rng.uniform(-2, 2, 3))
        lab = ball_and_cap_labels(shape, aff, (0.0, 0.0, 0.0), r, h)
        head, lesion, _ = labels_mod.masks_from_labels(lab)
        head_err.append(measure.voxel_volume_ml(head, aff) / ball_volume_ml(r) - 1)
        cap_err.append(measure.voxel_volume_ml(lesion, aff) - cap_volume_ml(r, h))
    assert np.max(np.abs(head_err)) < 0.01
    # The cap's flat face lies in a grid plane, so counting at voxel centres moves it by up to half
    # a voxel along z: error <= base area x s_z / 2, plus the curved part (<= 1 % as for the ball).
    base_ml = np.pi * (2 * r * h - h * h) / 1000
    bound = base_ml * spacing[2] / 2 + 0.01 * cap_volume_ml(r, h)
    assert np.max(np.abs(cap_err)) <= bound
    # Averaged over shifts the estimate closes in on the truth.
    assert abs(np.mean(head_err)) < 0.005


def test_oblique_voxel_volume_uses_the_determinant():
    rot = rotation_matrix((1, 2, 3), 25)
    spacing = (0.8, 0.8, 2.0)
    shape = (80, 80, 32)
    aff = grid_affine(shape, spacing, rotation=rot)
    lab = ball_and_cap_labels(shape, aff, (0.3, -0.4, 0.2), 20.0, 8.0)
    vol = measure.voxel_volume_ml(lab > 0, aff)
    assert vol == pytest.approx(np.count_nonzero(lab) * 0.8 * 0.8 * 2.0 / 1000)
    assert vol == pytest.approx(ball_volume_ml(20.0), rel=0.01)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 3.5)])
def test_mesh_volume_close_to_voxel_volume(spacing):
    # Marching cubes at 0.5 on a binary mask cuts the voxel corners: the surface volume of a smooth
    # head-sized ball is within 0.5 % of the truth at 1 mm and within 1 % with 3.5 mm slices.
    shape = tuple(int(np.ceil(60 / s)) for s in spacing)
    aff = grid_affine(shape, spacing, center_mm=(0.2, 0.1, -0.3))
    head = ball_and_cap_labels(shape, aff, (0, 0, 0), 22.0, 0.0) > 0
    mesh = mask_mesh_volume_ml(head, aff)
    tol = 0.005 if max(spacing) <= 1 else 0.01
    assert mesh == pytest.approx(ball_volume_ml(22.0), rel=tol)
    assert mesh < measure.voxel_volume_ml(head, aff) * 1.001


def test_box_volume_is_exact():
    aff = grid_affine((40, 40, 10), (0.5, 0.5, 4.0))
    box = np.zeros((40, 40, 10), bool)
    box[5:25, 10:30, 2:7] = True
    assert measure.voxel_volume_ml(box, aff) == pytest.approx(20 * 20 * 5 * 1.0 / 1000)
    # The marching-cubes box loses its 12 edges and 8 corners: exact closed form at level 0.5.
    assert mask_mesh_volume_ml(box, aff) < measure.voxel_volume_ml(box, aff)


def test_necrotic_fraction_and_size_class():
    assert measure.necrotic_fraction_pct(6.0, 40.0) == pytest.approx(15.0)
    assert measure.size_class(14.999) == "A"
    assert measure.size_class(15.0) == "B"
    assert measure.size_class(30.0) == "B"
    assert measure.size_class(30.001) == "C"
    assert measure.size_class(0.0) is None
    assert measure.necrotic_fraction_pct(1.0, 0.0) is None


def test_label_rules():
    lab = np.zeros((5, 5, 5), np.int16)
    lab[1:4, 1:4, 1:4] = 1
    lab[2, 2, 2] = 2
    head, lesion, warnings = labels_mod.masks_from_labels(lab)
    assert head.sum() == 27 and lesion.sum() == 1 and not warnings
    with pytest.raises(InputError, match="head label 3 is absent"):
        labels_mod.masks_from_labels(lab, head_label=3)
    with pytest.raises(InputError, match="lesion label 4 is absent"):
        labels_mod.masks_from_labels(lab, lesion_label=4, lesion_required=True)
    _, lesion, warnings = labels_mod.masks_from_labels(lab, lesion_label=4)
    assert not lesion.any() and "absent" in warnings[0]


def test_lesion_outside_head_is_warned_and_not_counted():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    head = np.zeros((6, 6, 6), bool)
    head[1:4, 1:4, 1:4] = True
    lesion = np.zeros_like(head)
    lesion[3:5, 3, 3] = True  # one voxel in, one out
    clipped, warnings = measure.clip_lesion_to_head(head, lesion, aff)
    assert clipped.sum() == 1
    assert "1 lesion voxels (0.008 mL) lie outside the head" in warnings[0]
