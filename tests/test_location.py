"""Location metrics: weight-bearing span, JIC / ARCO types, zones, arcs, centroid.

Analytic anatomy (world RAS mm): a femoral head, i.e. a ball of radius 22 mm cut by the neck
plane, with lesions defined in head-frame coordinates (u lateral, v anterior, w superior),
voxelised by voxel centre on straight, thick-slice, oblique and mirrored (left hip) grids.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from skimage import measure

from pipeline.errors import InputError
from pipeline.geometry import frame as F
from pipeline.geometry.affine import index_to_mm, voxel_volume_mm3
from pipeline.measures import location as L

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

C0 = np.array([60.3, -12.7, 35.1])
R0 = 22.0
RHO0 = 14.0
N0 = np.array([0.75, -0.2, -0.63]) / np.linalg.norm([0.75, -0.2, -0.63])
U_LAT = R0 / 2  # default span: r sin 30°
T1 = -U_LAT + 2 * U_LAT / 3


# ---------------------------------------------------------------------------------- phantoms
def rotation(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def grid_covering(lo, hi, spacing, rot=None):
    """Affine and shape of a grid (spacing, direction ``rot``) covering the world box [lo, hi]."""
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rot is None else rot) @ np.diag(spacing)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = corners @ np.linalg.inv(affine[:3, :3]).T
    first, last = np.floor(ijk.min(0)) - 1, np.ceil(ijk.max(0)) + 1
    affine[:3, 3] = affine[:3, :3] @ first
    return affine, tuple(int(n) for n in last - first + 1)


def voxel_centres(affine, shape):
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk).T + affine[:3, 3]


def angle_from(q, axis):
    cos = q @ np.asarray(axis, float) / np.maximum(np.linalg.norm(q, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def cone_about_e_sup(alpha_deg):
    """Cone of half-angle alpha about e_sup with its apex at c (cut by the head sphere)."""
    return lambda q: angle_from(q, [0, 0, 1]) <= alpha_deg


LESIONS = {
    "lateral": lambda q: (q[:, 0] > U_LAT + 2) & (q[:, 2] > 0),
    "medial": lambda q: (q[:, 0] < T1 - 2) & (q[:, 2] > 5),
    "posterior": lambda q: (q[:, 1] < -12) & (q[:, 2] > 0),
    "ball": lambda q: ((q - [5.0, -8.0, 14.0]) ** 2).sum(1) <= 5.0**2,
    "empty": lambda q: np.zeros(len(q), bool),
    "medial-cone30": lambda q: angle_from(q, [-1, 0, 0]) <= 30,
    **{f"cone{a}": cone_about_e_sup(a) for a in (25, 55, 68, 80)},
}


@cache
def right_case(spacing=(1.0, 1.0, 1.0), tilt_deg=0.0, lesion="lateral"):
    """Head and lesion masks of a right hip and the grid's affine."""
    affine, shape = grid_covering(C0 - 30, C0 + 30, spacing, rotation([1, 2, 3], tilt_deg))
    p = voxel_centres(affine, shape)
    d = p - C0
    head = ((d**2).sum(-1) <= R0**2) & (d @ N0 <= np.sqrt(R0**2 - RHO0**2))
    lesion_mask = head & LESIONS[lesion](d)  # right hip: (u, v, w) = (x, y, z) - c
    return head.reshape(shape), lesion_mask.reshape(shape), affine


def mirrored(mask, affine):
    """The patient's mirror image (x -> -x) as a right-handed grid: the array flipped on axis 0."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, mask.shape[0] - 1
    return np.flip(mask, axis=0).copy(), np.diag([-1.0, 1, 1, 1]) @ affine @ flip


def analytic_frame(side="right"):
    return F.HeadFrame(C0 * ([1, 1, 1] if side == "right" else [-1, 1, 1]), R0, side)


def metrics(head, lesion, affine, frame=None, side="right", span=None):
    if frame is None:
        frame, _ = F.head_frame_from_mask(head, affine, side)
    span = L.weight_bearing_span(frame) if span is None else span
    return L.location_metrics(head, lesion, affine, frame, span)


def surface_area_mm2(mask, affine):
    verts, faces, *_ = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
    return measure.mesh_surface_area(index_to_mm(affine, verts - 1), faces)


# ---------------------------------------------------------------------------------- rules
def test_rule_thresholds():
    span = {"u_med_mm": -9.0, "u_lat_mm": 12.0}
    assert L.thirds(span) == (-2.0, 5.0)
    assert [L.jic_type_of(u, span) for u in (-2.0, -1.99, 5.0, 5.01, 11.99, 12.0)] == [
        "A",
        "B",
        "B",
        "C1",
        "C1",
        "C2",
    ]
    assert [L.arco2021_type_of(u, span) for u in (0.0, 0.01, 11.99, 12.0)] == [1, 2, 2, 3]
    assert [L.kerboul_grade_of(a) for a in (199.9, 200.0, 249.9, 250.0, 299.9, 300.0)] == [1, 2, 2, 3, 3, 4]


def test_circular_span_wraps_around():
    assert L.circular_span_deg([170.0, -170.0, 179.0]) == pytest.approx(20.0)
    assert L.circular_span_deg([-30.0, 30.0]) == pytest.approx(60.0)
    assert L.circular_span_deg([10.0]) == 0.0
    assert L.circular_span_deg(np.arange(0, 360, 1.0)) == pytest.approx(359.0)


def test_zone_labels_table():
    assert sorted(L.ZONE_LABELS) == list(range(1, 13))
    assert L.ZONE_LABELS[1] == "A/anterior" and L.ZONE_LABELS[12] == "C2/posterior"


# ---------------------------------------------------------------------------------- types
@pytest.mark.parametrize(
    "spacing,tilt", [((1.0, 1.0, 1.0), 0.0), ((0.7, 0.7, 3.5), 20.0)], ids=["1mm", "thick-oblique"]
)
def test_lateral_lesion_is_c2_arco3_all_in_zone_c2(spacing, tilt):
    head, lesion, affine = right_case(spacing, tilt, "lateral")
    m = metrics(head, lesion, affine)
    assert set(m) == set(L.LOCATION_KEYS)
    assert (m["jic_type"], m["jic_type_3d"], m["arco2021_type"]) == ("C2", "C2", 3)
    total = lesion.sum() * voxel_volume_mm3(affine) / 1000
    assert m["zones_ml"]["C2"] == pytest.approx(total)
    assert m["zones_ml"]["A"] == m["zones_ml"]["B"] == m["zones_ml"]["C1"] == 0.0
    assert sum(m["zones_ml"][r] for r in L.AP_REGIONS) == pytest.approx(total)
    assert sum(v for k, v in m["zones_ml"].items() if "/" in k) == pytest.approx(total)
    # the lesion lies lateral of u = 13 mm: the sagittal plane u = 0 misses it, so it touches no
    # surface there: arc 0, and the combined figures stay defined (CNA = coronal arc + 0)
    assert m["arc_coronal_deg"] > 0 and m["arc_sagittal_deg"] == 0.0
    assert m["cna_deg"] == m["arc_coronal_deg"] and m["kerboul_grade"] == L.kerboul_grade_of(m["cna_deg"])
    assert m["koo_kim_index"] == 0.0 and any("mid-sagittal plane: arc 0" in w for w in m["warnings"])


def test_medial_lesion_is_a_arco1():
    head, lesion, affine = right_case(lesion="medial")
    m = metrics(head, lesion, affine)
    assert (m["jic_type"], m["jic_type_3d"], m["arco2021_type"]) == ("A", "A", 1)
    assert m["zones_ml"]["A"] == pytest.approx(lesion.sum() / 1000)


def test_lesion_absent_from_mid_coronal_plane():
    head, lesion, affine = right_case(lesion="posterior")
    m = metrics(head, lesion, affine)
    assert m["jic_type"] is None and m["arco2021_type"] is None and m["arc_coronal_deg"] == 0.0
    assert m["jic_type_3d"] is not None and m["arc_sagittal_deg"] > 0
    assert m["cna_deg"] == m["arc_sagittal_deg"] and m["koo_kim_index"] == 0.0
    assert any("mid-coronal plane: arc 0" in w for w in m["warnings"])
    assert m["zones_ml"]["posterior"] == pytest.approx(lesion.sum() / 1000)


def test_empty_lesion_gives_nulls_and_zero_zones():
    head, lesion, affine = right_case(lesion="empty")
    m = metrics(head, lesion, affine)
    assert set(m) == set(L.LOCATION_KEYS)
    assert all(m[k] is None for k in L.LOCATION_KEYS if k not in ("zones_ml", "warnings"))
    assert len(m["zones_ml"]) == 19 and set(m["zones_ml"].values()) == {0.0}
    assert any("empty" in w for w in m["warnings"])


def test_lesion_outside_the_head_is_ignored_with_a_warning():
    head, lesion, affine = right_case(lesion="ball")
    extra = lesion.copy()
    extra[0, 0, 0] = True
    m = metrics(head, extra, affine, frame=analytic_frame())
    assert sum(m["zones_ml"][z] for z in L.JIC_ZONES) == pytest.approx(lesion.sum() / 1000)
    assert any("outside the head" in w for w in m["warnings"])


# ---------------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("lesion", ["lateral", "cone55", "ball"])
@pytest.mark.parametrize(
    "spacing,tilt", [((1.0, 1.0, 1.0), 0.0), ((0.7, 0.7, 3.5), 20.0)], ids=["1mm", "thick-oblique"]
)
def test_left_mirror_gives_the_same_types_and_zones(spacing, tilt, lesion):
    head, les, affine = right_case(spacing, tilt, lesion)
    head_l, affine_l = mirrored(head, affine)
    les_l, _ = mirrored(les, affine)
    right = metrics(head, les, affine, frame=analytic_frame("right"))
    left = metrics(head_l, les_l, affine_l, frame=analytic_frame("left"))
    for key in ("jic_type", "jic_type_3d", "arco2021_type", "kerboul_grade"):
        assert right[key] == left[key]
    for key in ("arc_coronal_deg", "arc_sagittal_deg", "centroid_latitude_deg", "centroid_longitude_deg"):
        assert right[key] == pytest.approx(left[key], abs=1e-6)
    voxel_ml = voxel_volume_mm3(affine) / 1000
    for zone, volume in right["zones_ml"].items():
        assert left["zones_ml"][zone] == pytest.approx(volume, abs=0.5 * voxel_ml)
    # and with the sphere fitted on each side (the whole chain), the types still agree
    fitted_r = metrics(head, les, affine)
    fitted_l = metrics(head_l, les_l, affine_l, side="left")
    assert [fitted_r[k] for k in ("jic_type", "jic_type_3d", "arco2021_type")] == [
        fitted_l[k] for k in ("jic_type", "jic_type_3d", "arco2021_type")
    ]


@pytest.mark.parametrize("lesion", ["lateral", "medial", "cone55", "ball"])
def test_oblique_acquisition_matches_straight(lesion):
    straight = right_case((1.0, 1.0, 1.0), 0.0, lesion)
    oblique = right_case((1.0, 1.0, 1.0), 25.0, lesion)
    m_s, m_o = metrics(*straight), metrics(*oblique)
    for key in ("jic_type", "jic_type_3d", "arco2021_type", "kerboul_grade"):
        assert m_s[key] == m_o[key]
    # Discretisation bound: each voxelisation of the lesion stands off the true surface by at
    # most half a voxel, so a (zone) volume differs by at most area x half a voxel.
    bound_ml = surface_area_mm2(straight[1], straight[2]) * 0.5 / 1000
    for zone, volume in m_s["zones_ml"].items():
        assert abs(m_o["zones_ml"][zone] - volume) <= bound_ml, (
            zone,
            volume,
            m_o["zones_ml"][zone],
            bound_ml,
        )
    for key in ("arc_coronal_deg", "arc_sagittal_deg"):
        if m_s[key] is not None:
            assert abs(m_s[key] - m_o[key]) < 3.0


# ---------------------------------------------------------------------------------- angles
@pytest.mark.parametrize("alpha,grade", [(25, 1), (55, 2), (68, 3), (80, 4)])
def test_cone_lesion_arcs_cna_kerboul_koo_kim(alpha, grade):
    head, lesion, affine = right_case((1.0, 1.0, 1.0), 0.0, f"cone{alpha}")
    m = metrics(head, lesion, affine)
    assert m["arc_coronal_deg"] == pytest.approx(2 * alpha, abs=2.0)
    assert m["arc_sagittal_deg"] == pytest.approx(2 * alpha, abs=2.0)
    assert m["cna_deg"] == pytest.approx(m["arc_coronal_deg"] + m["arc_sagittal_deg"])
    assert m["kerboul_grade"] == grade == L.kerboul_grade_of(4 * alpha)
    assert m["koo_kim_index"] == pytest.approx(m["arc_coronal_deg"] * m["arc_sagittal_deg"] / 180**2 * 100)
    assert m["koo_kim_index"] == pytest.approx((2 * alpha / 180) ** 2 * 100, rel=0.05)
    assert m["centroid_latitude_deg"] > 85  # on the axis e_sup


def test_cone_lesion_arc_on_thick_oblique_slices():
    head, lesion, affine = right_case((0.7, 0.7, 3.5), 20.0, "cone55")
    m = metrics(head, lesion, affine)
    # a 3.5 mm slice moves the boundary by up to 1.75 mm, i.e. about 4.5° per end at r = 22 mm
    assert m["arc_coronal_deg"] == pytest.approx(110, abs=6.0)
    assert m["arc_sagittal_deg"] == pytest.approx(110, abs=6.0)
    assert m["kerboul_grade"] == 2


def test_coronal_arc_across_the_medial_wrap_around():
    # a cone about -e_lat: on the coronal plane its angles straddle ±180°
    head, lesion, affine = right_case((1.0, 1.0, 1.0), 0.0, "medial-cone30")
    m = metrics(head, lesion, affine, frame=analytic_frame())
    assert m["arc_coronal_deg"] == pytest.approx(60.0, abs=2.0)
    assert m["centroid_longitude_deg"] == pytest.approx(180.0, abs=1.0) or m[
        "centroid_longitude_deg"
    ] == pytest.approx(-180.0, abs=1.0)


def test_centroid_latitude_and_longitude():
    head, lesion, affine = right_case(lesion="ball")
    m = metrics(head, lesion, affine, frame=analytic_frame())
    u, v, w = 5.0, -8.0, 14.0
    assert m["centroid_latitude_deg"] == pytest.approx(
        np.degrees(np.arcsin(w / np.linalg.norm([u, v, w]))), abs=0.5
    )
    assert m["centroid_longitude_deg"] == pytest.approx(np.degrees(np.arctan2(v, u)), abs=0.5)


# ---------------------------------------------------------------------------------- zone map
def test_zone_map_labels_match_zone_volumes():
    head, lesion, affine = right_case(lesion="cone55")
    frame = analytic_frame()
    span = L.weight_bearing_span(frame)
    zones = L.zone_map(head, affine, frame, span)
    assert zones.dtype == np.uint8 and set(np.unique(zones[~head])) == {0}
    assert set(np.unique(zones[head])) == set(range(1, 13))
    volumes = L.zone_volumes_ml(lesion, affine, frame, span)
    for label, name in L.ZONE_LABELS.items():
        assert volumes[name] == pytest.approx(np.sum(lesion & (zones == label)) / 1000)
    # slabs: every voxel of label C2/* lies lateral of u_lat
    u = frame.uvw_of_voxels(zones >= 10, affine)[:, 0]
    assert u.min() > span["u_lat_mm"]


# ---------------------------------------------------------------------------------- span
def test_default_span_and_landmarks():
    frame = analytic_frame("left")
    span = L.weight_bearing_span(frame)
    assert span["u_lat_mm"] == pytest.approx(11.0) and span["u_med_mm"] == pytest.approx(-11.0)
    assert span["source"] == "default" and span["lce_angle_deg"] is None
    # left hip: lateral is -x
    edge = frame.center + np.array([-12.0, 3.0, 20.0])
    roof = frame.center + np.array([4.0, 0.0, 21.0])
    span = L.weight_bearing_span(frame, edge_ras=edge.tolist(), roof_medial_ras=roof.tolist())
    assert span["u_lat_mm"] == pytest.approx(12.0) and span["u_med_mm"] == pytest.approx(-4.0)
    assert span["source"] == "landmark" and span["details"]["source_med"] == "landmark"
    assert span["lce_angle_deg"] == pytest.approx(np.degrees(np.arctan2(12, 20)))
    with pytest.raises(InputError):
        L.weight_bearing_span(frame, edge_ras=roof.tolist(), roof_medial_ras=edge.tolist())
    with pytest.raises(InputError):  # a landmark edge medial of the default roof end
        L.weight_bearing_span(frame, edge_ras=frame.to_world([-15.0, 0, 10]).tolist())


def acetabulum(p, c, side, lce=30.0, abduction=45.0, fossa=25.0):
    """A cup of bone r+2..r+8 mm from c whose axis tilts medially by ``abduction``; its rim lies
    ``lce`` degrees lateral of vertical on the mid-coronal plane; the fossa (bone 4 mm farther)
    spans ``fossa`` degrees about the cup axis."""
    a = np.radians(abduction)
    axis = np.array([-side * np.sin(a), 0.0, np.cos(a)])
    d = p - c
    dist = np.linalg.norm(d, axis=1)
    ang = angle_from(d, axis)
    cup = (dist >= R0 + 2) & (dist <= R0 + 8) & (ang <= lce + abduction)
    return cup & ~((ang < fossa) & (dist < R0 + 6))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    "spacing,tilt", [((1.0, 1.0, 1.0), 0.0), ((0.7, 0.7, 3.5), 20.0)], ids=["1mm", "thick-oblique"]
)
def test_span_from_an_acetabulum_mask(spacing, tilt, side):
    sign = 1 if side == "right" else -1
    frame = analytic_frame(side)
    affine, shape = grid_covering(frame.center - 35, frame.center + 35, spacing, rotation([1, 2, 3], tilt))
    cup = acetabulum(voxel_centres(affine, shape), frame.center, sign).reshape(shape)
    span = L.weight_bearing_span(frame, acetabulum_mask=cup, affine=affine)
    assert span["source"] == "acetabulum-mask" and span["details"]["source_med"] == "acetabulum-mask"
    # the voxelised rim stands off the true one by up to half the largest voxel edge
    half_voxel = 0.5 * max(spacing)
    assert span["lce_angle_deg"] == pytest.approx(30.0, abs=1.0 + np.degrees(half_voxel / (R0 + 2)))
    # the edge lies on the rim face, between the cup's inner and outer surfaces
    assert (R0 + 2) * 0.5 - half_voxel <= span["u_lat_mm"] <= (R0 + 8) * 0.5 + half_voxel
    # the sourcil ends where the fossa starts, 20° medial of vertical on the inner surface
    assert span["u_med_mm"] == pytest.approx(-(R0 + 2) * np.sin(np.radians(20)), abs=0.5 + half_voxel)
    # a landmark beats the mask, per end
    with_landmark = L.weight_bearing_span(
        frame, edge_ras=frame.to_world([10.0, 0, 20]).tolist(), acetabulum_mask=cup, affine=affine
    )
    assert with_landmark["source"] == "landmark" and with_landmark["u_lat_mm"] == pytest.approx(10.0)
    assert with_landmark["details"]["source_med"] == "acetabulum-mask"


def test_span_without_bone_above_the_head_falls_back_to_default():
    frame = analytic_frame()
    affine, shape = grid_covering(frame.center - 35, frame.center + 35, (2.0, 2.0, 2.0))
    span = L.weight_bearing_span(frame, acetabulum_mask=np.zeros(shape, bool), affine=affine)
    assert span["source"] == "default" and span["u_lat_mm"] == pytest.approx(11.0)
    assert span["details"]["warnings"]


# ---------------------------------------------------------------------------------- real CT
def test_real_ct_lateral_centre_edge_angle(record_property):
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder absent: {REALDATA}")
    from pipeline.io.scan import load_labels, load_scan

    scan = load_scan(REALDATA / "example_ct.nii.gz")
    labels = REALDATA / "ct_pelvis_labels"
    femur = load_labels(labels / "femur_right.nii.gz", scan) > 0
    hip = load_labels(labels / "hip_right.nii.gz", scan) > 0
    head, info = F.isolate_head(femur, scan.affine)
    frame = F.HeadFrame(info["center_ras_mm"], info["radius_mm"], "right")
    span = L.weight_bearing_span(frame, acetabulum_mask=hip, affine=scan.affine)
    figures = {
        "lce_angle_deg": span["lce_angle_deg"],
        "u_lat_mm": round(span["u_lat_mm"], 2),
        "u_med_mm": round(span["u_med_mm"], 2),
        "source": span["source"],
        "source_med": span["details"]["source_med"],
        "edge_ras_mm": [round(x, 2) for x in span["details"]["edge_ras_mm"]],
        "warnings": span["details"]["warnings"],
    }
    print("real CT right acetabulum:", figures)
    for key, value in figures.items():
        record_property(key, value)
    assert span["source"] == "acetabulum-mask"
    assert 20 <= span["lce_angle_deg"] <= 45
    assert 0 < span["u_lat_mm"] < info["radius_mm"]
    # the whole location chain runs on real anatomy (an upper-pole cone lesion)
    q = frame.uvw_of_voxels(head, scan.affine)
    lesion = np.zeros_like(head)
    lesion[head] = angle_from(q, [0, 0, 1]) <= 40
    m = L.location_metrics(head, lesion, scan.affine, frame, span)
    assert m["jic_type"] in ("B", "C1") and m["arco2021_type"] == 2
    assert m["arc_coronal_deg"] == pytest.approx(80, abs=8) and m["arc_sagittal_deg"] == pytest.approx(
        80, abs=8
    )
