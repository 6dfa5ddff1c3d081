"""Automatic segmentation (issue #4) against the phantom truth of the committed sample data.

The sample scans are rendered by ``pipeline.synthetic.phantom`` with exact truth; the tests check head and
lesion Dice for a dark (Mitchell C) and a bright (Mitchell A) core, a healthy head, the drill
track, side selection in a bilateral field of view, invariance to the storage order, and the
refusal of an image with no femoral head. The wider validation set is scripts/validate_segmentation.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from pipeline.app.cli import main
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.frame import select_side
from pipeline.io.scan import load_labels, load_scan
from pipeline.measures.hip import measure_hip
from pipeline.segment import segment_hip

from conftest import realdata

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def dice(a, b) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


_CACHE: dict = {}


def segmented(stem: str, side: str):
    """(scan, result, truth head, truth lesion), computed once per module run."""
    key = (stem, side)
    if key not in _CACHE:
        scan = load_scan(SAMPLE / f"{stem}.nii.gz")
        labels = load_labels(SAMPLE / f"{stem}_labels.nii.gz", scan, 0.01)
        hip = select_side(labels > 0, scan.affine, side)
        result = segment_hip(scan, side, Settings())
        _CACHE[key] = (scan, result, hip, (labels == 2) & hip)
    return _CACHE[key]


def test_head_and_dark_core_lesion_match_the_truth():
    scan, res, head, lesion = segmented("ONFH01_m00_cor", "right")  # Mitchell C, 3.5 mm slices
    assert dice(res.head, head) >= 0.97
    assert dice(res.lesion, lesion) >= 0.85
    assert res.confidence["sphere_fit_rms_mm"] < 1.0
    record = res.record()
    assert record["method"] == "automatic" and "gap_mm" in record["parameters"]


def test_slices_thicker_than_validated_are_flagged_for_review():
    scan, res, _, _ = segmented("ONFH01_m00_cor", "right")  # 3.5 mm slices: inside the validated range
    assert not any(f.startswith("slices of") for f in res.confidence["flags"])
    strict = segment_hip(scan, "right", Settings(segmentation={"max_validated_slice_mm": 3.0}))
    flags = [f for f in strict.confidence["flags"] if f.startswith("slices of")]
    assert flags == ["slices of 3.5 mm exceed the 3 mm validated for the lesion: check its margin"]
    assert strict.confidence["status"] == "review"


def test_bright_core_lesion_mitchell_a_on_an_oblique_scan():
    scan, res, head, lesion = segmented("ONFH03_m00_obl", "right")  # fat-like core, oblique
    assert dice(res.head, head) >= 0.97
    assert dice(res.lesion, lesion) >= 0.85


def test_healthy_head_has_no_lesion_and_sides_are_chosen_by_ras_x():
    _, right, right_head, right_lesion = segmented("ONFH04_m00_bilat", "right")  # Mitchell B + healthy
    scan, left, left_head, _ = segmented("ONFH04_m00_bilat", "left")
    assert dice(right.head, right_head) >= 0.97 and dice(left.head, left_head) >= 0.97
    assert right.confidence["head_center_ras_mm"][0] > left.confidence["head_center_ras_mm"][0]
    assert left.lesion.sum() * scan.voxel_volume_mm3 / 1000.0 < 0.3
    assert dice(right.lesion, right_lesion) >= 0.85


def test_drill_track_is_not_lesion():
    scan, res, head, lesion = segmented("ONFH01_m03_cor", "right")
    track = json.loads((SAMPLE / "ONFH01_m03_cor_truth.json").read_text())["drill_track"]
    a, b = np.asarray(track["entry_ras_mm"]), np.asarray(track["end_ras_mm"])
    pts = scan.index_to_ras(np.argwhere(res.head))
    t = np.clip((pts - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    near_track = np.linalg.norm(pts - (a + t[:, None] * (b - a)), axis=1) <= track["diameter_mm"] / 2
    idx = np.argwhere(res.head)[near_track]
    on_track = np.zeros_like(res.head)
    on_track[tuple(idx.T)] = True
    from scipy import ndimage

    away = on_track & ~ndimage.binary_dilation(lesion, iterations=2)
    assert away.sum() > 20  # the track does cross healthy head
    assert (res.lesion & away).sum() * scan.voxel_volume_mm3 / 1000.0 < 0.05
    assert dice(res.lesion, lesion) >= 0.85


def test_same_scan_in_another_axis_order_gives_identical_masks(tmp_path):
    src = nib.load(SAMPLE / "ONFH05_m00_3d.nii.gz")
    data = np.asarray(src.dataobj)
    # store it R, I, A instead of L, P, S: a permutation with flips, no resampling
    target = ornt.axcodes2ornt(("I", "R", "A"))
    transform = ornt.ornt_transform(ornt.io_orientation(src.affine), target)
    moved = ornt.apply_orientation(data, transform)
    affine = src.affine @ ornt.inv_ornt_aff(transform, data.shape)
    path = tmp_path / "restored.nii.gz"
    nib.save(nib.Nifti1Image(moved, affine), path)
    a = segment_hip(load_scan(SAMPLE / "ONFH05_m00_3d.nii.gz"), "left", Settings())
    b = segment_hip(load_scan(path), "left", Settings())
    assert load_scan(path).axcodes == ("I", "R", "A")
    assert np.array_equal(a.head, b.head) and np.array_equal(a.lesion, b.lesion)
    assert a.head.any() and a.lesion.any()
    # 1 mm isotropic: necrotic fraction within 1 point of the truth labels
    scan = load_scan(SAMPLE / "ONFH05_m00_3d.nii.gz")
    labels = load_labels(SAMPLE / "ONFH05_m00_3d_labels.nii.gz", scan, 0.01)
    hip = select_side(labels > 0, scan.affine, "left")
    truth_nf = 100.0 * ((labels == 2) & hip).sum() / hip.sum()
    assert abs(100.0 * a.lesion.sum() / a.head.sum() - truth_nf) <= 1.0


def test_image_without_femoral_head_is_refused(tmp_path, capsys):
    path = realdata("example_mr_sm.nii.gz")
    with pytest.raises(InputError, match="no femoral head found"):
        segment_hip(load_scan(path), "right", Settings())
    code = main(["analyze", str(path), "--side", "right", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no femoral head found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_roi_and_lesion_seed_are_parsed_and_recorded(tmp_path):
    _, res, _, lesion = segmented("ONFH04_m00_bilat", "right")
    centre = res.confidence["head_center_ras_mm"]
    scan = load_scan(SAMPLE / "ONFH04_m00_bilat.nii.gz")
    seed = scan.index_to_ras(np.argwhere(lesion).mean(axis=0).round())
    roi = [c - 40 for c in centre] + [c + 40 for c in centre]
    out = tmp_path / "out"
    code = main(["analyze", str(SAMPLE / "ONFH04_m00_bilat.nii.gz"), "--side", "right", "--out", str(out),
                 "--roi", ",".join(f"{v:.1f}" for v in roi), "--lesion-seed", ",".join(f"{v:.1f}" for v in seed)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    seg = metrics["segmentation"]
    assert seg["method"] == "automatic"
    assert seg["parameters"]["roi_ras_mm"] is not None and len(seg["parameters"]["lesion_seeds_ras_mm"]) == 1
    assert metrics["lesion_volume_ml"] > 5.0


def _truth(stem: str, side: str) -> dict:
    path = SAMPLE / f"{stem}_truth.json"
    if not path.exists():
        path = SAMPLE / f"{stem}_{side}_truth.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("stem", ["ONFH01_m00_cor", "ONFH03_m00_obl", "ONFH04_m00_bilat", "ONFH01_m03_cor"])
def test_necrotic_fraction_within_one_point_and_head_radius_of_the_truth(stem):
    # 3.5 mm coronal (C), oblique (A), bilateral (B), follow-up with the drill track: the head
    # radius is read where the slices resolve the cortex and the lesion margin sits at the
    # band/marrow half-maximum, so NF is within the 1-point target of issue #4
    scan, res, head, lesion = segmented(stem, "right")
    truth = _truth(stem, "right")
    nf = 100.0 * res.lesion.sum() / res.head.sum()
    truth_nf = 100.0 * lesion.sum() / head.sum()
    assert abs(nf - truth_nf) <= 1.0
    assert abs(res.confidence["head_radius_mm"] - truth["head_radius_mm"]) <= 0.3
    centre_error = np.linalg.norm(np.asarray(res.confidence["head_center_ras_mm"]) - truth["head_center_ras_mm"])
    assert centre_error <= 0.5


def test_acetabular_edge_matches_the_truth_or_is_flagged():
    from pipeline.geometry.frame import HeadFrame
    from pipeline.measures.location import find_acetabular_roof

    for stem, side in (("ONFH01_m00_cor", "right"), ("ONFH03_m00_obl", "right"), ("ONFH04_m00_bilat", "right"),
                       ("ONFH04_m00_bilat", "left")):
        scan, res, _, _ = segmented(stem, side)
        truth = _truth(stem, side)
        frame = HeadFrame(np.asarray(truth["head_center_ras_mm"]), truth["head_radius_mm"], side)
        edge = find_acetabular_roof(res.acetabulum, scan.affine, frame)["edge_u_mm"]
        error = edge - truth["weight_bearing"]["u_lat_mm"]
        info = res.confidence["acetabulum"]
        if info["ambiguous"]:
            # a bright sheet joined the roof: the bone-bulk edge is used, flagged and warned
            assert any("acetabular edge ambiguous" in f for f in res.confidence["flags"])
            assert any("acetabular edge ambiguous" in w for w in res.warnings)
            assert res.confidence["status"] == "review"
            assert abs(error) <= 5.0
        else:
            assert abs(error) <= 1.5, (stem, side, error)
    # the plain coronal scan is not ambiguous
    assert not segmented("ONFH01_m00_cor", "right")[1].confidence["acetabulum"]["ambiguous"]


@pytest.mark.parametrize("seed, case, without", [
    # coronal 5 mm, Mitchell B core: the band runs along the slices at the lesion's posterior end
    # (either rule alone closes this hole: both are switched off to show it is there)
    (5505, "v07_B_5mm", {"band_gap_slice_fraction": 0.0, "slice_bridge_level": 0.0}),
    # axial 3.5 mm, Mitchell A (fat-like) core: the lesion's deep margin is nearly horizontal
    (4404, "v17_A_axial_3.5mm", {"slice_bridge_level": 0.0}),
])
def test_band_lying_between_two_thick_slices_still_encloses_the_lesion(monkeypatch, seed, case, without):
    """A band lying between two thick slices is averaged into both and vanishes from the data over a
    patch; a core nearly as bright as marrow then reached healthy marrow through it (lesion Dice
    0.33-0.39, NF 22-31 points low). The lesion test's erosion grows with the slice thickness and
    a slice boundary connects marrow only where its in-plane signal stays near marrow level.
    """
    scan, side, _, head_t, lesion_t = _validation_case(monkeypatch, seed, case)
    result = segment_hip(scan, side, Settings())
    assert dice(result.lesion, lesion_t) >= 0.9
    nf = 100.0 * result.lesion.sum() / result.head.sum()
    assert nf == pytest.approx(100.0 * lesion_t.sum() / head_t.sum(), abs=1.0)
    old = segment_hip(scan, side, Settings(segmentation=without))
    assert dice(old.lesion, lesion_t) < 0.5  # the case does exercise the hole
    # the roof's lateral lip read across thick axial slices is flagged; across coronal ones it is not
    across = [f for f in result.confidence["flags"] if f.startswith("acetabular edge read across")]
    assert across == (["acetabular edge read across 3.5 mm axial slices: it may lie a few mm medial "
                       "(check the JIC span)"] if "axial" in case else [])


def _validation_case(monkeypatch, seed: int, case: str):
    """One case of scripts/validate_segmentation.py rendered for ``seed``: (scan, side, truth, head, lesion)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "validate_segmentation.py"
    spec = importlib.util.spec_from_file_location("validate_segmentation", path)
    validation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validation)
    monkeypatch.setattr(validation, "SEED", seed)
    index = next(i for i, c in enumerate(validation.CASES) if c[0] == case)
    scan, side, truth, head_t, lesion_t, _ = validation.build_case(validation.CASES[index], index)
    return scan, side, truth, head_t, lesion_t


def test_drill_track_follow_up_is_within_one_point_and_the_track_is_not_lesion(monkeypatch):
    """A dark-core (Mitchell C) follow-up with a core-decompression track on 3.5 mm coronal slices
    (the validation's worst case: NF 1.56 points high on seed 6606). The track, a tube of fluid
    signal from the lateral cortex into the lesion, was counted as lesion where it runs inside it
    (0.15 mL), and the lesion's end slices, holding 30-50 % lesion, stayed lesion because the margin
    was re-read over only half a slice (0.5 mL): now the track seen in the marrow is followed into
    the lesion and left out, and behind a dark core the margin is re-read a full acquisition voxel deep.
    """
    scan, side, truth, head_t, lesion_t = _validation_case(monkeypatch, 6606, "v14_track_C_3.5mm")

    def nf_error(res):
        return 100.0 * (res.lesion.sum() / res.head.sum() - lesion_t.sum() / head_t.sum())

    track = truth["drill_track"]
    a, b = np.asarray(track["entry_ras_mm"]), np.asarray(track["end_ras_mm"])
    pts = scan.index_to_ras(np.argwhere(head_t))
    t = np.clip((pts - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    inside = np.linalg.norm(pts - (a + t[:, None] * (b - a)), axis=1) <= track["diameter_mm"] / 2 - 0.5
    on_track = np.zeros_like(head_t)
    on_track[tuple(np.argwhere(head_t)[inside].T)] = True
    assert on_track.sum() > 50

    res = segment_hip(scan, side, Settings())
    assert abs(nf_error(res)) <= 1.0
    found = res.confidence["drill_track"]
    assert found is not None and abs(found["radius_mm"] - track["diameter_mm"] / 2) < 0.5
    axis = (b - a) / np.linalg.norm(b - a)
    assert np.dot(found["axis"], axis) > 0.98  # the tube's direction, read from where it crosses the marrow
    # the track is not lesion where it is seen (healthy marrow around it and its first mm inside the
    # lesion); deeper, in a core as dark as itself, it cannot be seen and is not followed
    assert (res.lesion & on_track).sum() <= 0.5 * on_track.sum()
    old = segment_hip(scan, side, Settings(segmentation={"track_min_length_mm": 0.0, "margin_refine_dark_voxels": 0.0}))
    assert nf_error(old) > 1.0  # the case does exercise both
    assert (old.lesion & on_track).sum() > 0.6 * on_track.sum()


def test_drill_track_axis_is_read_from_its_line_through_the_marrow(monkeypatch):
    """Seed 7707's track follow-up (held out when the track step was written: NF 1.03 points high).
    The piece of track next to the lesion is 8 mm long and spans two 3.5 mm slices: its principal
    axis tilted 30 degrees toward the slice axis, so the track was followed into the lesion
    along the wrong line and its last 10 mm before the lesion stayed lesion. The direction is now
    read from the dark line the track draws through the neck's marrow."""
    scan, side, truth, head_t, lesion_t = _validation_case(monkeypatch, 7707, "v14_track_C_3.5mm")
    track = truth["drill_track"]
    a, b = np.asarray(track["entry_ras_mm"]), np.asarray(track["end_ras_mm"])
    axis = (b - a) / np.linalg.norm(b - a)

    def nf_error(res):
        return 100.0 * (res.lesion.sum() / res.head.sum() - lesion_t.sum() / head_t.sum())

    res = segment_hip(scan, side, Settings())
    found = res.confidence["drill_track"]
    assert np.dot(found["stub_axis"], axis) < 0.9  # the short piece's own axis is far off...
    assert np.dot(found["axis"], axis) > 0.995  # ...the line through the marrow is within 6 degrees
    assert found["line_contrast"] > 3 * found["stub_axis_line_contrast"]
    assert abs(nf_error(res)) <= 1.0
    old = segment_hip(scan, side, Settings(segmentation={"track_axis_length_mm": 0.0}))
    assert old.confidence["drill_track"]["axis"] == found["stub_axis"]
    assert nf_error(old) > 1.0


def test_acetabulum_joined_on_thick_slices_is_ambiguous(monkeypatch):
    """Seed 8808's 4 mm Mitchell C case (held out): on the working grid the joined acetabulum's
    edge was right (17.6 mm, truth 17.0), but taken to 4 mm slices the mask joined tissue running
    on around the head, and the measurement read the edge at 25.6 mm: a centre-edge angle of
    89.5 degrees, JIC type C1 for C2, status ok. The scan-grid read is now checked against the
    working grid's: the bulk edge is used and the scan flagged."""
    scan, side, truth, head_t, lesion_t = _validation_case(monkeypatch, 8808, "v06_C_4mm")
    settings = Settings()
    res = segment_hip(scan, side, settings)
    info = res.confidence["acetabulum"]
    assert info["edge_u_scan_grid_mm"] - info["edge_u_joined_mm"] > settings.segmentation.acetabulum_edge_tolerance_mm
    assert info["chosen"] == "bulk" and info["ambiguous"]
    assert res.confidence["status"] == "review"
    assert any("on the scan's slices" in w for w in res.warnings)
    quick = settings.model_copy(
        update={"reconstruction": settings.reconstruction.model_copy(update={"isotropic": False})})
    m = measure_hip(scan, res.head, res.lesion, side, quick, acetabulum=res.acetabulum).metrics
    wb = truth["weight_bearing"]
    assert m["weight_bearing"]["lce_angle_deg"] < 45.0
    assert abs(m["weight_bearing"]["u_lat_mm"] - wb["u_lat_mm"]) < 6.0
    assert m["jic_type"] == truth["jic_type"]


def test_acetabulum_joined_on_thick_slices_without_a_bulk_mask_is_flagged(monkeypatch):
    """The same case when no bone bulk was found to fall back on: the joined mask is kept (it is
    all there is), but the disagreement is not hidden: the edge is ambiguous, the scan goes to
    review and the warning asks for the JIC span to be checked, without claiming a bulk edge."""
    from pipeline.segment import acetabulum as A

    original = A.acetabulum_mask

    def without_bulk(*args, **kwargs):
        out, info, _ = original(*args, **kwargs)
        return out, info, None

    scan, side, truth, head_t, lesion_t = _validation_case(monkeypatch, 8808, "v06_C_4mm")
    monkeypatch.setattr(A, "acetabulum_mask", without_bulk)
    res = segment_hip(scan, side, Settings())
    info = res.confidence["acetabulum"]
    assert info["chosen"] == "joined" and info["ambiguous"]
    assert info["edge_u_scan_grid_mm"] - info["edge_u_joined_mm"] > Settings().segmentation.acetabulum_edge_tolerance_mm
    assert res.confidence["status"] == "review"
    note = [w for w in res.warnings if "on the scan's slices" in w]
    assert len(note) == 1 and note[0].endswith("check the JIC span") and "bulk" not in note[0]


def test_track_axis_recovers_a_tube_from_a_tilted_guess():
    """A dark tube (radius 1.75 mm, 50 % of marrow) on a 0.7 mm grid: from a guess 30 degrees off,
    the line search finds its direction within the grid of directions (about 5 degrees)."""
    from pipeline.segment.lesion import track_axis

    sp = 0.7
    n = 90
    affine = np.diag([sp, sp, sp, 1.0])
    idx = np.indices((n, n, n)).reshape(3, -1).T * sp
    anchor = np.full(3, n * sp / 2)
    true = np.array([0.3, -0.4, 0.866])
    true /= np.linalg.norm(true)
    rel = idx - anchor
    t = rel @ true
    r = np.linalg.norm(rel - t[:, None] * true, axis=1)
    image = np.where((r <= 1.75) & (t <= 0), 0.5, 1.0).reshape(n, n, n).astype(np.float32)
    bone = np.ones((n, n, n), dtype=bool)
    perp = np.cross(true, [1.0, 0.0, 0.0])
    perp /= np.linalg.norm(perp)
    guess = np.cos(np.radians(30)) * true + np.sin(np.radians(30)) * perp
    found, seen, guess_seen = track_axis(image, bone, affine, anchor, guess, 1.75, Settings())
    assert np.degrees(np.arccos(np.clip(found @ true, -1, 1))) < 5.0
    assert seen > 0.4 and guess_seen < 0.1  # the tube's contrast 0.5 along the right line
    # a line fainter than track_contrast (0.05) is not taken for the track: the piece's own axis is
    # kept (no bone behind the piece, e.g. the neck outside the field of view, scores 0 alike)
    faint = np.where(image < 1.0, 0.97, 1.0).astype(np.float32)
    found, seen, guess_seen = track_axis(faint, bone, affine, anchor, guess, 1.75, Settings())
    assert np.allclose(found, guess / np.linalg.norm(guess))
    assert seen == guess_seen < Settings().segmentation.track_contrast
    assert track_axis(faint, bone, affine, anchor, guess, 1.75,
                      Settings(segmentation={"track_contrast": 0.01}))[0] @ true > 0.99  # seen when asked less


def test_femur_mask_alone_isolates_the_head_and_segments_the_lesion_inside(tmp_path):
    """docs/design.md's `--femur-mask M` without a lesion mask: the head comes from the femur mask by
    the neck-plane rule (as with a lesion mask), the lesion from the automatic segmentation."""
    image = SAMPLE / "ONFH01_m00_cor.nii.gz"
    femur = SAMPLE / "ONFH01_m00_cor_femur.nii.gz"
    scan = load_scan(image)
    labels = nib.load(str(SAMPLE / "ONFH01_m00_cor_labels.nii.gz"))
    lesion_file = tmp_path / "lesion.nii.gz"
    nib.save(nib.Nifti1Image((np.asanyarray(labels.dataobj) == 2).astype(np.uint8), labels.affine), str(lesion_file))
    assert main(["analyze", str(image), "--side", "right", "--femur-mask", str(femur),
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["analyze", str(image), "--side", "right", "--femur-mask", str(femur), "--lesion-mask",
                 str(lesion_file), "--out", str(tmp_path / "b")]) == 0
    alone = json.loads((tmp_path / "a" / "metrics.json").read_text())
    given = json.loads((tmp_path / "b" / "metrics.json").read_text())
    truth = json.loads((SAMPLE / "ONFH01_m00_cor_truth.json").read_text())
    assert alone["head_volume_ml"] == given["head_volume_ml"]  # the same head isolation
    assert alone["necrotic_fraction_pct"] == pytest.approx(truth["necrotic_fraction_pct"], abs=1.0)
    assert alone["segmentation"]["method"].endswith("lesion segmented automatically inside it")
    assert alone["segmentation"]["lesion_segmentation"]["method"] == "automatic"
    assert given["segmentation"]["parameters"]["lesion_mask"] == str(lesion_file)
    written = load_labels(tmp_path / "a" / "labels.nii.gz", scan, 0.01)
    head_from_femur = load_labels(tmp_path / "b" / "labels.nii.gz", scan, 0.01) > 0
    assert not (written[~head_from_femur] > 0).any()  # the lesion stays inside the user's head
