"""DICOM SEG and SR: written for DICOM input (valid, on the right instances, with the figures of
metrics.json and the patient's identifiers in them only), and read back as labels.

The series are written by tests/_dicom_fixtures.py from a ball head with a top-cap lesion
(conftest.ball_and_cap_labels); voxels are checked against that label map slice by slice through
each source file, not through onfh's reorientation code.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import yaml
from _dicom_fixtures import light_config, write_series

from pipeline.app.cli import main
from pipeline.io.dicom_seg import HEAD_SEGMENT_NUMBER, LESION_SEGMENT_NUMBER, read_dicom_seg
from pipeline.io.scan import load_labels, load_scan

from conftest import ball_and_cap_labels, grid_affine, rotation_matrix, save_nifti

SECRETS = ("DOE^JANE", "SECRET123")
FIGURES = ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct")
SHAPE = (64, 64, 16)
SPACING = (0.8, 0.8, 3.0)
CENTRE = (60.0, -20.0, 10.0)


#: Directions (RAS, columns) of the array axes (columns, rows, slices) of each test series.
ORIENTATIONS = {
    # rows, columns and slices rotated 12 deg from R, A, S: oblique, canonical order = file order
    "oblique": rotation_matrix((0, 1, 1), 12),
    # DICOM's usual sagittal (rows run posterior, columns inferior): axes permuted and flipped
    "sagittal": np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    # DICOM's usual axial (rows run to the left, columns posterior), files stored from head to
    # feet: file k is the (n-1-k)th slice along the slice normal, and the canonical order flips
    "reversed": np.diag([-1.0, -1.0, -1.0]),
}


def _geometry(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(RAS affine, label map) of a test series (:data:`ORIENTATIONS`)."""
    aff = grid_affine(SHAPE, SPACING, center_mm=CENTRE, rotation=ORIENTATIONS[kind])
    return aff, ball_and_cap_labels(SHAPE, aff, (60.2, -19.8, 10.1), 22.0, 7.0)


def _series(folder, kind: str, series_uid=None, seed=3):
    """Write the DICOM series and its label map (on the image grid); returns (paths in slice
    order, label map in file order, label-map path)."""
    aff, lab = _geometry(kind)
    img = (np.random.default_rng(seed).normal(300, 20, SHAPE) + 300 * (lab > 0)).astype(np.int16)
    paths = write_series(folder / "dcm", img, aff, patient_name="DOE^JANE", patient_id="SECRET123",
                         series_uid=series_uid, description="cor t1")
    labels = save_nifti(folder / "labels.nii.gz", lab, aff)
    return paths, lab, labels


def _run(capsys, *args) -> tuple[int, list[str]]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


def _dciodvfy(path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dicom3tools' validator."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed (make test installs it)")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def _metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


_RUNS: dict[str, dict] = {}


def _analysed(kind: str, tmp_path_factory) -> dict:
    """A series analysed with --labels and --dicom-seg (oblique: default settings, as a user runs
    it), then analysed again from the seg.dcm it wrote; once per geometry."""
    if kind not in _RUNS:
        _RUNS[kind] = _analyse(kind, tmp_path_factory.mktemp(f"dicom_seg_{kind}"))
    return _RUNS[kind]


@pytest.fixture(scope="module", params=list(ORIENTATIONS))
def analysed(request, tmp_path_factory):
    return _analysed(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    return _analysed("oblique", tmp_path_factory)


def _analyse(kind: str, tmp) -> dict:
    paths, lab, labels = _series(tmp, kind)
    config = [] if kind == "oblique" else ["--config", light_config(tmp)]
    out, again = tmp / "out", tmp / "again"
    assert main([str(a) for a in ("analyze", tmp / "dcm", "--labels", labels, "--side", "right", "--out", out,
                                  "--dicom-seg", *config)]) == 0
    assert main([str(a) for a in ("analyze", tmp / "dcm", "--labels", out / "seg.dcm", "--side", "right",
                                  "--out", again, *config)]) == 0
    return {"kind": kind, "tmp": tmp, "paths": paths, "lab": lab, "labels": labels, "out": out, "again": again}


def test_seg_and_sr_are_written_and_valid(analysed):
    out = analysed["out"]
    marker = json.loads((out / ".onfh-output.json").read_text())
    for name in ("seg.dcm", "sr.dcm"):
        assert (out / name).is_file() and name in marker["entries"]
        errors, warnings = _dciodvfy(out / name)
        assert not errors, f"dciodvfy {name}:\n" + "\n".join(errors + warnings)
    seg = pydicom.dcmread(out / "seg.dcm")
    sr = pydicom.dcmread(out / "sr.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(segments) == [HEAD_SEGMENT_NUMBER, LESION_SEGMENT_NUMBER]
    head_type = segments[1].SegmentedPropertyTypeCodeSequence[0]
    lesion_type = segments[2].SegmentedPropertyTypeCodeSequence[0]
    assert (head_type.CodingSchemeDesignator, head_type.CodeValue) == ("SCT", "2812003")
    assert (lesion_type.CodingSchemeDesignator, lesion_type.CodeValue) == ("SCT", "6574001")
    # masks the user gave: manual, no algorithm named
    assert {s.SegmentAlgorithmType for s in segments.values()} == {"MANUAL"}
    # every source instance of the series is referenced, and the SEG sits in its study
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in analysed["paths"]]
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in source}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID


def test_seg_frames_lie_on_their_source_instances(analysed):
    """highdicom reads the SEG back; each source file's frame equals that slice of the label map."""
    import highdicom as hd

    seg = hd.seg.segread(analysed["out"] / "seg.dcm")
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in analysed["paths"]]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])  # (slices, rows, cols, segments)
    lab = analysed["lab"]  # (columns, rows, slices), slice k is the file analysed["paths"][k]
    expected = np.stack([lab > 0, lab == 2], axis=-1).transpose(2, 1, 0, 3)
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels.astype(bool), expected)
    assert expected[..., 1].any() and (expected[..., 0] & ~expected[..., 1]).any()


def test_seg_read_back_gives_the_same_figures(analysed):
    first, again = _metrics(analysed["out"]), _metrics(analysed["again"])
    for key in FIGURES:
        assert again[key] == first[key], key
    assert again["segmentation"]["method"] == "imported DICOM SEG"
    assert again["segmentation"]["parameters"]["head_segment"]["code"] == ["SCT", "2812003"]


def test_seg_frames_are_placed_by_position_without_references(analysed, tmp_path):
    """A SEG whose frames name no source instance is placed by its plane positions: same masks."""
    scan = load_scan(analysed["tmp"] / "dcm")
    expected = load_labels(analysed["labels"], scan)
    ds = pydicom.dcmread(analysed["out"] / "seg.dcm")
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    stripped = tmp_path / "no_refs.dcm"
    ds.save_as(stripped)
    for path in (analysed["out"] / "seg.dcm", stripped):
        segments = {s.label_value: s for s in read_dicom_seg(path, scan)}
        assert np.array_equal(segments[1].get_mask(), expected > 0), path.name
        assert np.array_equal(segments[2].get_mask(), expected == 2), path.name


def _sr_groups(path) -> dict[int, dict]:
    """Per referenced segment number: {concept code value: NUM value (float) or CODE value}."""
    sr = pydicom.dcmread(path)
    report = sr.ContentSequence
    container = next(i for i in report if i.ConceptNameCodeSequence[0].CodeValue == "126010")  # Imaging Measurements
    groups = {}
    for group in container.ContentSequence:
        values, number = {}, None
        for item in group.ContentSequence:
            code = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "NUM":
                measured = item.MeasuredValueSequence[0]
                unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
                values[code] = (float(measured.get("FloatingPointValue", measured.NumericValue)), unit)
                values[code + ":method"] = item.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "CODE":
                values[code] = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "IMAGE":
                number = int(item.ReferencedSOPSequence[0].ReferencedSegmentNumber)
                assert item.ReferencedSOPSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
        groups[number] = values
    return groups


def test_sr_values_equal_metrics_json(oblique):
    analysed = oblique
    metrics = _metrics(analysed["out"])
    groups = _sr_groups(analysed["out"] / "sr.dcm")
    assert sorted(groups) == [HEAD_SEGMENT_NUMBER, LESION_SEGMENT_NUMBER]
    head, lesion = groups[1], groups[2]
    assert head["118565006"] == (metrics["head_volume_ml"], "ml")
    assert lesion["118565006"] == (metrics["lesion_volume_ml"], "ml")
    assert lesion["NF"] == (metrics["necrotic_fraction_pct"], "%")
    assert lesion["CNA"] == (metrics["cna_deg"], "deg")
    assert lesion["JIC"] == f"JIC-{metrics['jic_type']}" and lesion["SIZE"] == f"SIZE-{metrics['size_class']}"
    assert all(isinstance(v, float) for v in (metrics["cna_deg"], metrics["necrotic_fraction_pct"]))
    assert "voxel" in head["118565006:method"].lower()
    assert "REGEN" not in lesion  # a single visit has no regeneration


def test_identifiers_only_in_seg_and_sr(oblique):
    analysed = oblique
    out = analysed["out"]
    for name in ("seg.dcm", "sr.dcm"):
        blob = (out / name).read_bytes()
        assert all(secret.encode() in blob for secret in SECRETS), name
        # nothing but the patient and study modules of the source: not its institution or scanner
        assert b"Secret General Hospital" not in blob and b"SYNTH" not in blob, name
    files = [p for folder in (out, analysed["again"]) for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 8
    for path in files:
        if path.parent == out and path.name in ("seg.dcm", "sr.dcm"):
            continue
        blob = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in blob, f"{secret} leaked into {path.relative_to(analysed['tmp'])}"


def test_dicom_seg_refused_for_nifti_input(tmp_path, capsys):
    aff, lab = _geometry("oblique")
    image = save_nifti(tmp_path / "img.nii.gz", (lab * 100).astype(np.int16), aff)
    labels = save_nifti(tmp_path / "labels.nii.gz", lab, aff)
    rc, err = _run(capsys, "analyze", image, "--labels", labels, "--side", "right", "--out", tmp_path / "out",
                   "--dicom-seg")
    assert rc == 2 and len(err) == 1 and "DICOM input only" in err[0]
    assert not (tmp_path / "out").exists()


def test_batch_refuses_dicom_seg_for_a_nifti_row_before_any_scan(tmp_path, capsys):
    """outputs.dicom_seg with a NIfTI row after a DICOM one: exit 2 and one line naming the row,
    before the DICOM row runs; no output folder."""
    _series(tmp_path, "oblique")
    aff, lab = _geometry("oblique")
    save_nifti(tmp_path / "img.nii.gz", (lab * 100).astype(np.int16), aff)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,side,timepoint_months,image,labels\n"
                        "S01,right,0,dcm,labels.nii.gz\n"
                        "S02,right,0,img.nii.gz,labels.nii.gz\n")
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({"outputs": {"dicom_seg": True, "qc_png": False, "stl": False}}))
    rc, err = _run(capsys, "batch", manifest, "--out", tmp_path / "out", "--config", config, "--workers", "1")
    assert rc == 2 and len(err) == 1, err
    assert "line 3" in err[0] and "S02 right hip" in err[0] and "DICOM input only" in err[0]
    assert not (tmp_path / "out").exists()


def test_seg_of_another_series_is_refused(oblique, tmp_path, capsys):
    analysed = oblique
    _series(tmp_path, "oblique", seed=5)  # same grid, another SeriesInstanceUID
    rc, err = _run(capsys, "analyze", tmp_path / "dcm", "--labels", analysed["out"] / "seg.dcm", "--side", "right",
                   "--out", tmp_path / "out")
    assert rc == 2 and len(err) == 1 and "not the image's series" in err[0]
    assert not (tmp_path / "out").exists()


def test_labelmap_seg_from_highdicom_is_read(tmp_path_factory, tmp_path, capsys):
    """A LABELMAP SEG written by highdicom itself from the source files of the reversed series
    (segments named by the user, no codes onfh knows): --head-segment/--lesion-segment pick them;
    same figures."""
    analysed = _analysed("reversed", tmp_path_factory)
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in analysed["paths"]]
    for ds in sources:  # type 2 attributes highdicom insists on; the fixture leaves them out
        for keyword in ("PatientSex", "StudyDate", "StudyTime", "StudyID"):
            setattr(ds, keyword, "")
    lab = analysed["lab"].transpose(2, 1, 0)  # (frames, rows, columns), frame k on file k
    descriptions = [
        hd.seg.SegmentDescription(segment_number=n, segment_label=label,
                                  segmented_property_category=codes.SCT.Tissue,
                                  segmented_property_type=codes.SCT.Bone, algorithm_type="MANUAL")
        for n, label in ((1, "bone"), (2, "dead bone"))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=lab.astype(np.uint8), segmentation_type="LABELMAP",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1",
    )
    seg.save_as(tmp_path / "labelmap.dcm")
    # the head segment holds the head outside the lesion: onfh adds the lesion to it
    rc, err = _run(capsys, "analyze", analysed["tmp"] / "dcm", "--labels", tmp_path / "labelmap.dcm", "--side",
                   "right", "--out", tmp_path / "out", "--head-segment", "bone", "--lesion-segment", "dead bone",
                   "--config", light_config(tmp_path))
    assert rc == 0, err
    first, again = _metrics(analysed["out"]), _metrics(tmp_path / "out")
    for key in FIGURES:
        assert again[key] == first[key], key


def test_compare_writes_each_visit_and_the_regeneration(tmp_path, capsys):
    """onfh compare --dicom-seg: the baseline's and the follow-up's SEG and SR; the follow-up SR
    carries the regeneration of longitudinal.json."""
    visits = []
    for name, cap in (("v0", 7.0), ("v1", 4.0)):
        aff = grid_affine(SHAPE, SPACING, center_mm=CENTRE)
        lab = ball_and_cap_labels(SHAPE, aff, (60.2, -19.8, 10.1), 22.0, cap)
        img = (np.random.default_rng(len(visits)).normal(300, 20, SHAPE) + 300 * (lab > 0)).astype(np.int16)
        write_series(tmp_path / name, img, aff, patient_name="DOE^JANE", patient_id="SECRET123")
        visits.append((tmp_path / name, save_nifti(tmp_path / f"{name}_labels.nii.gz", lab, aff)))
    out = tmp_path / "cmp"
    rc, err = _run(capsys, "compare", visits[0][0], visits[1][0], "--side", "right", "--out", out,
                   "--baseline-labels", visits[0][1], "--followup-labels", visits[1][1], "--dicom-seg",
                   "--config", light_config(tmp_path))
    assert rc == 0, err
    longitudinal = json.loads((out / "longitudinal.json").read_text())
    entry = longitudinal["followups"][0]
    assert entry["files"]["followup_seg"] == "followup_seg.dcm" and entry["files"]["followup_sr"] == "followup_sr.dcm"
    for name in ("baseline_seg.dcm", "baseline_sr.dcm", "followup_seg.dcm", "followup_sr.dcm"):
        errors, warnings = _dciodvfy(out / name)
        assert not errors, f"dciodvfy {name}:\n" + "\n".join(errors + warnings)
    follow, base = _sr_groups(out / "followup_sr.dcm"), _sr_groups(out / "baseline_sr.dcm")
    assert entry["regeneration_pct"] > 0
    assert follow[2]["REGEN"] == (entry["regeneration_pct"], "%")
    assert follow[2]["118565006"] == (entry["followup"]["lesion_volume_ml"], "ml")
    assert base[2]["118565006"] == (longitudinal["baseline"]["lesion_volume_ml"], "ml") and "REGEN" not in base[2]
    follow_series = pydicom.dcmread(next((tmp_path / "v1").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert pydicom.dcmread(out / "followup_seg.dcm").ReferencedSeriesSequence[0].SeriesInstanceUID == follow_series
    for path in out.rglob("*"):
        if path.is_file() and not path.name.endswith(".dcm"):
            assert not any(s.encode() in path.read_bytes() for s in SECRETS), path.name


def test_empty_lesion_gives_a_valid_seg(tmp_path, capsys):
    """A lesion-free head: the lesion segment is described without frames, and reads back empty."""
    aff, lab = _geometry("oblique")
    lab = np.where(lab > 0, 1, 0).astype(np.uint8)
    img = (np.random.default_rng(1).normal(300, 20, SHAPE) + 300 * (lab > 0)).astype(np.int16)
    write_series(tmp_path / "dcm", img, aff, patient_name="DOE^JANE", patient_id="SECRET123")
    labels = save_nifti(tmp_path / "labels.nii.gz", lab, aff)
    config = light_config(tmp_path)
    rc, err = _run(capsys, "analyze", tmp_path / "dcm", "--labels", labels, "--side", "right", "--out",
                   tmp_path / "out", "--dicom-seg", "--config", config)
    assert rc == 0, err
    for name in ("seg.dcm", "sr.dcm"):
        errors, warnings = _dciodvfy(tmp_path / "out" / name)
        assert not errors, f"dciodvfy {name}:\n" + "\n".join(errors + warnings)
    rc, err = _run(capsys, "analyze", tmp_path / "dcm", "--labels", tmp_path / "out" / "seg.dcm", "--side", "right",
                   "--out", tmp_path / "again", "--config", config)
    assert rc == 0, err
    again = _metrics(tmp_path / "again")
    assert again["lesion_volume_ml"] == 0 and again["head_volume_ml"] == _metrics(tmp_path / "out")["head_volume_ml"]
    assert any('lesion segment "Necrosis" is empty' in w for w in again["warnings"])


def test_enhanced_multiframe_source(tmp_path, capsys):
    """One Enhanced MR file with its frames in shuffled order: SEG frame f lies on source frame f."""
    import highdicom as hd
    from _dicom_fixtures import write_enhanced

    aff, lab = _geometry("oblique")
    img = (np.random.default_rng(2).normal(300, 20, SHAPE) + 300 * (lab > 0)).astype(np.int16)
    (tmp_path / "mr").mkdir()
    path = write_enhanced(tmp_path / "mr" / "enhanced.dcm", img, aff, patient_name="DOE^JANE", patient_id="SECRET123")
    labels = save_nifti(tmp_path / "labels.nii.gz", lab, aff)
    rc, err = _run(capsys, "analyze", path, "--labels", labels, "--side", "right", "--out", tmp_path / "out",
                   "--dicom-seg", "--config", light_config(tmp_path))
    assert rc == 0, err
    for name in ("seg.dcm", "sr.dcm"):
        errors, warnings = _dciodvfy(tmp_path / "out" / name)
        assert not errors, f"dciodvfy {name}:\n" + "\n".join(errors + warnings)
    source = pydicom.dcmread(path, stop_before_pixels=True)
    # slice k of the label map is the frame whose InStackPositionNumber is k + 1
    stack = [int(item.FrameContentSequence[0].InStackPositionNumber) - 1
             for item in source.PerFrameFunctionalGroupsSequence]
    assert stack != sorted(stack)
    seg = hd.seg.segread(tmp_path / "out" / "seg.dcm")
    pixels = seg.get_pixels_by_source_frame(source.SOPInstanceUID, list(range(1, len(stack) + 1)),
                                            segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    expected = np.stack([lab > 0, lab == 2], axis=-1).transpose(2, 1, 0, 3)[stack]
    assert np.array_equal(pixels.astype(bool), expected)
    scan = load_scan(path)
    segments = {s.label_value: s for s in read_dicom_seg(tmp_path / "out" / "seg.dcm", scan)}
    assert np.array_equal(segments[2].get_mask(), load_labels(labels, scan) == 2)


def test_automatic_segmentation_is_marked_automatic(tmp_path):
    """Segments of onfh's own segmentation: AUTOMATIC, algorithm "onfh" at its version (a valid SEG)."""
    from dataclasses import replace

    from pipeline import __version__
    from pipeline.app.analyze import run_analyze
    from pipeline.config import load_settings
    from pipeline.io.dicom_seg import write_dicom_outputs

    _series(tmp_path, "oblique")
    analysis = run_analyze(tmp_path / "dcm", "right", tmp_path / "out", load_settings(light_config(tmp_path)),
                           labels=tmp_path / "labels.nii.gz")
    # as segment_hip records it (pipeline.segment.SegmentationResult.record)
    analysis.result = replace(analysis.result, segmentation={"method": "automatic", "parameters": {}})
    (tmp_path / "auto").mkdir()
    assert write_dicom_outputs(tmp_path / "auto", analysis) == ["seg.dcm", "sr.dcm"]
    seg = pydicom.dcmread(tmp_path / "auto" / "seg.dcm")
    for segment in seg.SegmentSequence:
        assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == "onfh"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmVersion == __version__
    errors, warnings = _dciodvfy(tmp_path / "auto" / "seg.dcm")
    assert not errors, "dciodvfy seg.dcm:\n" + "\n".join(errors + warnings)
