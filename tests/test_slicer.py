"""3D Slicer segmentations (issue 13): `--labels X.seg.nrrd` picks the head and lesion segments by
name or SNOMED CT code, whatever their order, label values, layers, cropping or voxel order, and
gives the plain label map's figures exactly; real Slicer files read; napari reader/writer round trip.
"""

from __future__ import annotations

import json
import os
import sys

import nibabel as nib
import nrrd
import numpy as np
import pytest
import slicerio

from pipeline.app.cli import main
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.io.scan import load_labels, load_scan
from pipeline.io.slicer import LPS_TO_RAS, is_slicer_segmentation, read_slicer_segmentation
from pipeline.masks.labels import import_masks
from pipeline.masks.segments import SCT_FEMORAL_HEAD, SCT_NECROSIS, label_map_from_segments, pick_segments

from conftest import ROOT, realdata

IMAGE = ROOT / "sample_data" / "ONFH01_m00_cor.nii.gz"
LABELS = ROOT / "sample_data" / "ONFH01_m00_cor_labels.nii.gz"
FIGURES = ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct")
HEAD_TERM = {"contextName": "Segmentation category and type - DICOM master list",
             "category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "2812003", "Head of Femur"]}
LESION_TERM = {"contextName": "Segmentation category and type - DICOM master list",
               "category": ["SCT", "49755003", "Morphologically Abnormal Structure"],
               "type": ["SCT", "6574001", "Necrosis"]}


# helpers ------------------------------------------------------------------------------------
def source_labels():
    """The sample label map in the image file's own voxel order, and that order's LPS affine
    (3D Slicer stores a segmentation in its reference image's IJK order, in LPS)."""
    img = nib.load(str(LABELS))
    return np.asarray(img.dataobj).astype(np.uint8), LPS_TO_RAS @ img.affine


def write_slicer(path, voxels, ijk_to_lps, segments):
    """A .seg.nrrd written by slicerio: ``voxels`` 3D (one layer) or 4D (layers first)."""
    slicerio.write_segmentation(str(path), {"voxels": voxels, "ijkToLPS": np.asarray(ijk_to_lps, float),
                                            "segments": [dict(s) for s in segments]})
    return path


def segment(name, value, layer=0, terminology=None):
    out = {"id": name.replace(" ", "_") or "s", "name": name, "labelValue": value, "layer": layer}
    if terminology:
        out["terminology"] = terminology
    return out


def crop(voxels, ijk_to_lps, shift_vox=(0.0, 0.0, 0.0)):
    """Crop to the segments' extent as Slicer saves by default (``shift_vox``: move the origin off
    the lattice by a fraction of a voxel)."""
    spatial = voxels if voxels.ndim == 3 else voxels.max(axis=0)
    idx = np.nonzero(spatial)
    lo = np.array([i.min() for i in idx])
    hi = np.array([i.max() + 1 for i in idx])
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out = voxels[box] if voxels.ndim == 3 else voxels[(slice(None),) + box]
    aff = np.array(ijk_to_lps, float)
    aff[:3, 3] = aff[:3, :3] @ (lo + np.asarray(shift_vox)) + aff[:3, 3]
    return np.ascontiguousarray(out), aff


def variant(kind):
    """(voxels, ijkToLPS, segments) of the sample label map stored as Slicer would store it."""
    lab, lps = source_labels()
    head_only, lesion = lab == 1, lab == 2
    if kind.startswith("necrosis-first"):  # Slicer numbers segments in creation order: Necrosis 1, head 2
        vox = np.where(lesion, 1, np.where(head_only, 2, 0)).astype(np.uint8)
        segs = [segment("Necrosis", 1), segment("Femoral head", 2)]
    elif kind.startswith("head-first"):
        vox = np.where(lesion, 2, np.where(head_only, 1, 0)).astype(np.uint8)
        segs = [segment("Femoral head", 1), segment("Necrosis", 2)]
    elif kind.startswith("overlapping"):  # head drawn whole, lesion inside: two layers
        vox = np.stack([(lab > 0).astype(np.uint8), lesion.astype(np.uint8)])
        segs = [segment("necrosis", 1, layer=1), segment("FEMORAL HEAD", 1, layer=0)]
    elif kind.startswith("codes-only"):  # unnamed segments, SNOMED CT codes only
        vox = np.where(lesion, 7, np.where(head_only, 3, 0)).astype(np.uint8)
        segs = [segment("Segment_1", 7, terminology=LESION_TERM), segment("Segment_2", 3, terminology=HEAD_TERM)]
    else:
        raise ValueError(kind)
    if kind.endswith("-flipped"):  # another voxel order: i and k reversed
        n = np.array(vox.shape[-3:])
        vox = np.ascontiguousarray(vox[..., ::-1, :, ::-1])
        flip = np.diag([-1.0, 1.0, -1.0, 1.0])
        flip[:3, 3] = [n[0] - 1, 0, n[2] - 1]
        lps = lps @ flip
    if kind.endswith("-cropped"):
        vox, lps = crop(vox, lps)
    return vox, lps, segs


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    path.write_text("outputs:\n  qc_png: false\n  stl: false\n")
    return path


def analyze(tmp_path, labels, config, *extra):
    out = tmp_path / f"out_{labels.name}"
    rc = main(["analyze", str(IMAGE), "--side", "right", "--labels", str(labels), "--out", str(out),
               "--config", str(config), *extra])
    metrics = json.loads((out / "metrics.json").read_text()) if rc == 0 else None
    return rc, metrics


@pytest.fixture(scope="module")
def plain(tmp_path_factory, config):
    rc, metrics = analyze(tmp_path_factory.mktemp("plain"), LABELS, config)
    assert rc == 0
    return metrics


# --labels X.seg.nrrd gives the plain label map's figures ------------------------------------
@pytest.mark.parametrize("kind", ["necrosis-first", "head-first", "overlapping", "codes-only",
                                  "necrosis-first-cropped", "overlapping-cropped", "head-first-flipped",
                                  "overlapping-flipped-cropped"])
def test_every_slicer_variant_gives_the_label_map_figures(tmp_path, config, plain, kind):
    vox, lps, segs = variant(kind)
    path = write_slicer(tmp_path / f"{kind}.seg.nrrd", vox, lps, segs)
    if "cropped" in kind:
        assert np.prod(vox.shape[-3:]) < 0.1 * np.prod(source_labels()[0].shape)  # really cropped
    assert (vox.ndim == 4) == kind.startswith("overlapping")
    rc, metrics = analyze(tmp_path, path, config)
    assert rc == 0
    for key in FIGURES:
        assert metrics[key] == plain[key], key
    assert 20 < metrics["necrotic_fraction_pct"] < 25  # issue 13: 78 % when read as a plain label map
    seg = metrics["segmentation"]
    assert seg["method"] == "imported 3D Slicer segmentation"
    picked_head, picked_lesion = seg["parameters"]["head_segment"], seg["parameters"]["lesion_segment"]
    by_name = {s["name"]: s for s in segs}
    assert by_name[picked_head["name"]]["labelValue"] == picked_head["label_value"]
    assert by_name[picked_lesion["name"]]["layer"] == picked_lesion["layer"]
    if kind.startswith("codes-only"):
        assert picked_head["code"] == list(SCT_FEMORAL_HEAD) and picked_lesion["code"] == list(SCT_NECROSIS)


def test_overlapping_and_disjoint_segments_give_one_label_map():
    settings = Settings()
    lab, _ = source_labels()
    whole = label_map_from_segments(lab > 0, lab == 2, settings)
    disjoint = label_map_from_segments(lab == 1, lab == 2, settings)
    np.testing.assert_array_equal(whole, disjoint)
    np.testing.assert_array_equal(whole, lab)
    custom = label_map_from_segments(lab == 1, lab == 2, Settings(labels={"head": 5, "lesion": 9}))
    np.testing.assert_array_equal(custom, np.select([lab == 2, lab == 1], [9, 5], 0))


def test_names_chosen_by_option(tmp_path, config, plain, capsys):
    lab, lps = source_labels()
    vox = np.where(lab == 2, 1, np.where(lab == 1, 2, 0)).astype(np.uint8)
    path = write_slicer(tmp_path / "de.seg.nrrd", vox, lps, [segment("Nekrose", 1), segment("Kopf", 2)])
    rc, _ = analyze(tmp_path, path, config)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert 'no head segment among "Nekrose", "Kopf": name it with --head-segment' in err
    rc, metrics = analyze(tmp_path, path, config, "--head-segment", "kopf", "--lesion-segment", "NEKROSE")
    assert rc == 0
    assert [metrics[k] for k in FIGURES] == [plain[k] for k in FIGURES]
    params = metrics["segmentation"]["parameters"]
    assert params["head_segment"]["name"] == "Kopf" and params["lesion_segment"]["name"] == "Nekrose"
    assert params["segments"] == ["Nekrose", "Kopf"]


@pytest.mark.parametrize("names, options, expected", [
    (["Head", "Femoral head", "Necrosis"], [], '2 segments could be the head ("Head", "Femoral head")'),
    (["Femoral head", "Bone"], [], 'no lesion segment among "Femoral head", "Bone": name it with --lesion-segment'),
    (["Femoral head", "Necrosis"], ["--head-segment", "Femur"],
     'no segment named "Femur" (--head-segment) among "Femoral head", "Necrosis"'),
    (["Femoral head", "Necrosis"], ["--head-segment", "Necrosis"], 'cannot be both the head and the lesion'),
])
def test_missing_or_ambiguous_segments_exit_2_listing_names(tmp_path, config, capsys, names, options, expected):
    lab, lps = source_labels()
    vox = np.zeros((len(names),) + lab.shape, np.uint8)
    for k in range(len(names)):
        vox[k] = lab > 0 if k == 0 else lab == 2
    path = write_slicer(tmp_path / "x.seg.nrrd", vox, lps, [segment(n, 1, layer=k) for k, n in enumerate(names)])
    rc, _ = analyze(tmp_path, path, config, *options)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("onfh: error: ") and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "out_x.seg.nrrd").exists()


def test_crop_off_the_lattice_is_refused(tmp_path, config, capsys):
    lab, lps = source_labels()
    vox = np.where(lab == 2, 2, np.where(lab == 1, 1, 0)).astype(np.uint8)
    shifted, aff = crop(vox, lps, shift_vox=(0.5, 0.0, 0.0))
    path = write_slicer(tmp_path / "shift.seg.nrrd", shifted, aff,
                        [segment("Femoral head", 1), segment("Necrosis", 2)])
    rc, _ = analyze(tmp_path, path, config)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "grid differs from the image" in err and "0.350 mm off the image's voxel centres" in err
    # the same crop on the lattice is accepted (see the variants); a different spacing is refused
    aff2 = np.array(crop(vox, lps)[1])
    aff2[:3, :3] *= 1.1
    path = write_slicer(tmp_path / "spacing.seg.nrrd", crop(vox, lps)[0], aff2,
                        [segment("Femoral head", 1), segment("Necrosis", 2)])
    rc, _ = analyze(tmp_path, path, config)
    assert rc == 2 and "spacing" in capsys.readouterr().err


def test_segment_options_need_a_slicer_file(tmp_path, config, capsys):
    rc, _ = analyze(tmp_path, LABELS, config, "--head-segment", "Femoral head")
    err = capsys.readouterr().err
    assert rc == 2 and "--head-segment and --lesion-segment pick segments of a 3D Slicer segmentation" in err
    rc = main(["compare", str(IMAGE), str(IMAGE), "--side", "right", "--out", str(tmp_path / "c"),
               "--lesion-segment", "Necrosis"])
    assert rc == 2 and "--baseline-labels and --followup-labels" in capsys.readouterr().err


def test_compare_passes_segment_names_to_every_visit(tmp_path, monkeypatch):
    seen = {}

    def fake_run_compare(*args, **kwargs):
        seen.update(kwargs)
        raise InputError("stop here")

    monkeypatch.setattr("pipeline.app.compare.run_compare", fake_run_compare)
    rc = main(["compare", "b.nii.gz", "f.nii.gz", "--side", "right", "--out", str(tmp_path / "c"),
               "--baseline-labels", "b.seg.nrrd", "--followup-labels", "f.seg.nrrd",
               "--head-segment", "Kopf", "--lesion-segment", "Nekrose"])
    assert rc == 2
    assert seen["head_segment"] == "Kopf" and seen["lesion_segment"] == "Nekrose"


def test_compare_visit_reads_slicer_segments(tmp_path):
    from pipeline.app.compare import load_visit

    lab, lps = source_labels()
    vox, aff = crop(np.stack([(lab > 0).astype(np.uint8), (lab == 2).astype(np.uint8)]), lps)
    path = write_slicer(tmp_path / "v.seg.nrrd", vox, aff, [segment("Kopf", 1), segment("Nekrose", 1, layer=1)])
    settings = Settings(outputs={"qc_png": False, "stl": False})
    visit = load_visit(IMAGE, path, "right", settings, head_segment="Kopf", lesion_segment="Nekrose")
    plain = load_visit(IMAGE, LABELS, "right", settings)
    np.testing.assert_array_equal(visit.head, plain.head)
    np.testing.assert_array_equal(visit.lesion, plain.lesion)


def test_detection_by_name_or_header(tmp_path):
    lab, lps = source_labels()
    vox = np.where(lab > 0, lab, 0).astype(np.uint8)
    renamed = write_slicer(tmp_path / "hip_segmentation.nrrd", vox, lps,
                           [segment("Femoral head", 1), segment("Necrosis", 2)])
    assert is_slicer_segmentation(renamed)  # Segment0_Name in the header
    plain_nrrd = tmp_path / "plain.nrrd"
    nrrd.write(str(plain_nrrd), vox, {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,
                                      "space origin": lps[:3, 3]})
    assert not is_slicer_segmentation(plain_nrrd) and not is_slicer_segmentation(LABELS)
    scan = load_scan(IMAGE)
    head, lesion, seg, _ = import_masks(scan, Settings(), "right", labels=renamed)
    expected = load_labels(LABELS, scan)
    np.testing.assert_array_equal(head, expected > 0)
    np.testing.assert_array_equal(lesion, expected == 2)
    assert seg["parameters"]["head_segment"]["label_value"] == 1


# real files written by 3D Slicer (chest CT: no femoral head) ----------------------------------
def raw_shape(folder):
    return tuple(int(n) for n in nrrd.read_header(str(folder / "CTChest4.nrrd"))["sizes"])


REAL_NAMES = ["ribs", "cervical vertebral column", "thoracic vertebral column", "lumbar vertebral column",
              "right lung", "left lung", "tissue"]


def test_real_slicer_one_layer_file():
    folder = realdata("slicer")
    ct = load_scan(folder / "CTChest4.nrrd")
    segments = read_slicer_segmentation(folder / "Segmentation.seg.nrrd", ct)
    assert [s.name for s in segments] == REAL_NAMES
    assert [s.label_value for s in segments] == [1, 2, 3, 4, 5, 6, 7] and {s.layer for s in segments} == {0}
    assert segments[0].code == ("SCT", "113197003") and segments[0].meta["code_meaning"] == "Rib"
    assert segments[4].code == segments[5].code == ("SCT", "39607008")  # lungs: left/right by modifier
    raw = nrrd.read(str(folder / "Segmentation.seg.nrrd"))[0]
    for s in segments:  # same grid as the CT: each mask is the raw voxels of its value, reoriented
        mask = s.get_mask()
        assert mask.shape == ct.shape and mask.any()
        np.testing.assert_array_equal(mask, ct.from_source_order(raw == s.label_value))
    with pytest.raises(InputError, match='no head segment among "ribs", "cervical vertebral column"'):
        pick_segments(segments)
    assert pick_segments(segments, "Right Lung", "ribs") == (4, 0)


def test_real_slicer_overlapping_file_and_its_crop(tmp_path):
    folder = realdata("slicer")
    ct = load_scan(folder / "CTChest4.nrrd")
    segments = read_slicer_segmentation(folder / "SegmentationOverlapping.seg.nrrd", ct)
    assert [s.name for s in segments] == REAL_NAMES + ["overlapping sphere"]
    sphere = segments[-1]
    assert (sphere.layer, sphere.label_value, sphere.code) == (1, 1, ("SCT", "19227008"))
    others = np.any([s.get_mask() for s in segments[:-1]], axis=0)
    assert (sphere.get_mask() & others).any()  # overlaps: why it is in a second layer
    h, les = pick_segments(segments, head_segment="right lung", lesion_segment="overlapping sphere")
    label_map = label_map_from_segments(segments[h].get_mask(), segments[les].get_mask(), Settings())
    assert (label_map == 2).sum() == sphere.get_mask().sum()
    assert (label_map > 0).sum() == (segments[h].get_mask() | sphere.get_mask()).sum()

    # cropped to the sphere's extent, as Slicer saves by default: placed back at its offset
    seg = slicerio.read_segmentation(str(folder / "SegmentationOverlapping.seg.nrrd"))
    e = [s for s in seg["segments"] if s["name"] == "overlapping sphere"][0]["extent"]
    lo = np.array(e[0::2])
    box = (slice(None),) + tuple(slice(int(a), int(b) + 1) for a, b in zip(e[0::2], e[1::2]))
    seg["voxels"] = np.ascontiguousarray(seg["voxels"][box])
    seg["ijkToLPS"] = np.array(seg["ijkToLPS"])
    seg["ijkToLPS"][:3, 3] += seg["ijkToLPS"][:3, :3] @ lo
    cropped = tmp_path / "cropped.seg.nrrd"
    slicerio.write_segmentation(str(cropped), seg)
    assert nrrd.read_header(str(cropped))["sizes"].tolist() == [2, 49, 49, 15]
    crop_segments = read_slicer_segmentation(cropped, ct)
    np.testing.assert_array_equal(crop_segments[-1].get_mask(), sphere.get_mask())
    in_box = np.zeros(raw_shape(folder), bool)
    in_box[box[1:]] = True
    box_mask = ct.from_source_order(in_box)
    for full, part in zip(segments, crop_segments):
        np.testing.assert_array_equal(part.get_mask(), full.get_mask() & box_mask)


# napari reader and writer (Qt-free functions; the viewer test needs a display) ---------------
def test_napari_reader_opens_seg_nrrd_as_head_lesion_labels(tmp_path):
    pytest.importorskip("napari")
    from pipeline.napari._reader import napari_get_reader

    vox, lps, segs = variant("necrosis-first-cropped")
    path = write_slicer(tmp_path / "hip.seg.nrrd", vox, lps, segs)
    (data, kwargs, kind), = napari_get_reader(str(path))(str(path))
    assert kind == "labels" and kwargs["name"] == "hip"
    assert sorted(np.unique(data).tolist()) == [0, 1, 2]  # head 1, lesion 2 whatever Slicer's values
    assert kwargs["features"]["segment"] == ["", "Femoral head", "Necrosis"]
    assert [s["name"] for s in kwargs["metadata"]["slicer_segments"]] == ["Necrosis", "Femoral head"]
    # on the file's own (cropped) grid, placed in RAS mm by its affine: the widget pastes it back
    import napari

    from pipeline.napari._layers import labels_on_scan

    layer = napari.layers.Labels(data, **kwargs)
    scan = load_scan(IMAGE)
    np.testing.assert_array_equal(labels_on_scan(layer, scan), load_labels(LABELS, scan))


def test_napari_reader_keeps_every_segment_of_other_files():
    pytest.importorskip("napari")
    from pipeline.napari._reader import napari_get_reader

    path = realdata("slicer", "SegmentationOverlapping.seg.nrrd")
    layers = napari_get_reader(str(path))(str(path))
    assert [k["name"] for _, k, _ in layers] == ["SegmentationOverlapping layer 0", "SegmentationOverlapping layer 1"]
    assert layers[0][1]["features"]["segment"][1:] == REAL_NAMES
    assert layers[1][1]["features"]["segment"] == ["", "overlapping sphere"]
    raw = nrrd.read(str(path))[0]
    assert (layers[1][0] > 0).sum() == (raw[1] == 1).sum()


def test_napari_writer_round_trip(tmp_path):
    pytest.importorskip("napari")
    from pipeline.napari._layers import scan_with_labels
    from pipeline.napari._slicer import write_slicer_labels

    scan = load_scan(IMAGE)
    (_, _, _), (data, kwargs, _) = scan_with_labels(IMAGE, LABELS)
    written = write_slicer_labels(str(tmp_path / "corrected"), data, kwargs)
    assert written == [str(tmp_path / "corrected.seg.nrrd")]
    header = nrrd.read_header(written[0])
    assert header["space"] == "left-posterior-superior" and header["kinds"] == ["list", "domain", "domain", "domain"]
    assert header["sizes"].tolist()[1:] == list(nib.load(str(IMAGE)).shape)  # the image file's own grid
    np.testing.assert_allclose(header["space directions"][1:], (LPS_TO_RAS @ nib.load(str(IMAGE)).affine)[:3, :3].T,
                               atol=1e-6)
    assert header["Segment0_Name"] == "Femoral head" and "SCT^2812003^Head of Femur" in header["Segment0_Tags"]
    assert header["Segment1_Name"] == "Necrosis" and "SCT^6574001^Necrosis" in header["Segment1_Tags"]
    segments = read_slicer_segmentation(written[0], scan)
    h, les = pick_segments(segments)
    back = label_map_from_segments(segments[h].get_mask(), segments[les].get_mask(), Settings())
    np.testing.assert_array_equal(back, load_labels(LABELS, scan))
    # Slicer's own segment volumes are onfh's: the head segment holds the whole head
    assert segments[h].get_mask().sum() == (load_labels(LABELS, scan) > 0).sum()
    # through the reader again: the same layer data
    (data2, _, _), = __import__("pipeline.napari._reader", fromlist=["x"]).read_paths(written[0])
    np.testing.assert_array_equal(data2, data)
    with pytest.raises(InputError, match=r"also holds \[3\]"):
        write_slicer_labels(str(tmp_path / "bad.seg.nrrd"), np.where(data == 1, 3, data), kwargs)


@pytest.mark.skipif(sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
                    reason="no display for Qt/OpenGL: run under xvfb-run -a")
def test_napari_viewer_opens_and_saves_seg_nrrd(make_napari_viewer, tmp_path):
    pytest.importorskip("pytestqt")
    viewer = make_napari_viewer()
    vox, lps, segs = variant("overlapping-cropped")
    path = write_slicer(tmp_path / "hip.seg.nrrd", vox, lps, segs)
    layers = viewer.open(str(path), plugin="onfh-pipeline")
    assert len(layers) == 1 and layers[0].features["segment"].tolist() == ["", "FEMORAL HEAD", "necrosis"]
    out = tmp_path / "saved.seg.nrrd"
    viewer.layers.save(str(out), selected=False, plugin="onfh-pipeline")
    segments = read_slicer_segmentation(out, load_scan(IMAGE))
    h, les = pick_segments(segments)
    back = label_map_from_segments(segments[h].get_mask(), segments[les].get_mask(), Settings())
    np.testing.assert_array_equal(back, load_labels(LABELS, load_scan(IMAGE)))
