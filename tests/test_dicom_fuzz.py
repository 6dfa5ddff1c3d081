"""Corrupted DICOM headers never crash: every malformed input ends with exit status 2 and one line.

A small valid series (tests/_dicom_fixtures.py) is written, then each tag the loader reads
(pipeline/io/dicom.py: identity, pixel description, geometry, rescale, frame count, functional
groups, pixel data) is damaged in each relevant way: deleted, a string where numbers are
expected, the wrong multiplicity, non-finite, zero or negative, undecodable bytes, inconsistent
with the pixel data. ``onfh info`` (folder and file) and ``onfh analyze`` must then exit 2 with
exactly one ``onfh: error:`` line naming the file or series and the tag, and leave nothing behind.
Damage the loader may tolerate (values it never uses, junk files beside a series) is checked to
read the very same voxels and geometry as the intact series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import write_enhanced, write_series
from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence

from pipeline.app.cli import main
from pipeline.io.scan import read_image

from conftest import grid_affine

SHAPE = (8, 7, 5)  # columns, rows, slices
SPACING = (0.8, 0.9, 3.0)
# Messages of the reader's own checks stay short; the refusal of a header without geometry is
# longer on purpose (it explains --spacing) and is marked ``explained`` below.
MAX_LINE = 200


def _volume():
    data = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)  # every voxel distinct
    return data, grid_affine(SHAPE, SPACING, (5.0, -10.0, 20.0))


def _series(tmp_path) -> tuple[Path, list[Path]]:
    data, affine = _volume()
    folder = tmp_path / "series"
    return folder, write_series(folder, data, affine)  # paths in slice order


def _enhanced(tmp_path) -> Path:
    data, affine = _volume()
    (tmp_path / "enhanced").mkdir()
    return write_enhanced(tmp_path / "enhanced" / "multi.dcm", data, affine)


# corruptions -----------------------------------------------------------------------------
def _edit(path: Path, change) -> None:
    """Apply ``change(dataset)`` to a file and save it, bypassing pydicom's value validation."""
    with config.disable_value_validation():
        ds = pydicom.dcmread(str(path), force=True)
        change(ds)
        ds.save_as(str(path))


def put(keyword, vr, value, where=lambda ds: ds):
    """Store ``value`` under ``keyword`` with ``vr`` (any VR: how a wrong type reaches a file)."""
    tag = tag_for_keyword(keyword)

    def change(ds):
        where(ds)[tag] = DataElement(tag, vr, value)
    return lambda path: _edit(path, change)


def raw(keyword, vr, data: bytes):
    """Store raw bytes pydicom cannot decode as ``vr`` (e.g. 3 bytes for a 2-byte US)."""
    tag = tag_for_keyword(keyword)

    def change(ds):
        ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)
    return lambda path: _edit(path, change)


def delete(keyword, where=lambda ds: ds):
    def change(ds):
        del where(ds)[keyword]
    return lambda path: _edit(path, change)


def shift(keyword, delta):
    """Add ``delta`` to an integer tag (Rows, BitsAllocated...) keeping its VR."""
    def change(ds):
        setattr(ds, keyword, int(getattr(ds, keyword)) + delta)
    return lambda path: _edit(path, change)


def pixels(transform):
    def change(ds):
        ds.PixelData = transform(ds.PixelData)
    return lambda path: _edit(path, change)


def cut(keep=None, before=None, into=0):
    """Truncate the file to ``keep`` bytes, or ``into`` bytes past the start of element ``before``."""
    def apply(path):
        data = path.read_bytes()
        n = keep
        if before is not None:
            group, element = divmod(tag_for_keyword(before), 0x10000)
            n = data.index(group.to_bytes(2, "little") + element.to_bytes(2, "little")) + into
        path.write_bytes(data[:n])
    return apply


def unknown_transfer_syntax(path):
    data = path.read_bytes()
    known = b"1.2.840.10008.1.2.1\x00"  # Explicit VR Little Endian, as the fixtures write
    assert data.count(known) == 1
    path.write_bytes(data.replace(known, b"1.2.840.10008.1.2.9\x00"))


@dataclass
class Case:
    id: str
    apply: object
    words: tuple = ()  # must all appear in the error line (case-insensitive)
    scopes: tuple = ("one", "all")
    explained: bool = False  # the long, established "no geometry ... --spacing" refusal
    file_words: tuple | None = None  # when `onfh info FILE` refuses for another reason than the folder


CLASSIC = [
    # identity
    # A folder whose files all lack it is read as one series (see TOLERATED); one file without it
    # among others cannot be placed, and read alone it is a single slice.
    Case("uid-deleted", delete("SeriesInstanceUID"), ("no SeriesInstanceUID", "unlike the other"), scopes=("one",),
         file_words=("1 slice",)),
    # geometry
    Case("ipp-deleted", delete("ImagePositionPatient"), ("no ImagePositionPatient", "no geometry"),
         explained=True),
    Case("ipp-string", put("ImagePositionPatient", "LO", ["abc", "def", "ghi"]),
         ("ImagePositionPatient", "not numeric")),
    Case("ipp-2-values", put("ImagePositionPatient", "DS", ["1", "2"]),
         ("ImagePositionPatient", "2 values, expected 3")),
    Case("ipp-nan", put("ImagePositionPatient", "DS", ["nan", "0", "0"]), ("ImagePositionPatient", "not finite")),
    Case("iop-deleted", delete("ImageOrientationPatient"), ("no ImageOrientationPatient", "no geometry"),
         explained=True),
    Case("iop-string", put("ImageOrientationPatient", "LO", ["a", "b", "c", "d", "e", "f"]),
         ("ImageOrientationPatient", "not numeric")),
    Case("iop-2-values", put("ImageOrientationPatient", "DS", ["1", "0"]),
         ("ImageOrientationPatient", "2 values, expected 6")),
    Case("iop-7-values", put("ImageOrientationPatient", "DS", ["1", "0", "0", "0", "1", "0", "0"]),
         ("ImageOrientationPatient", "7 values, expected 6")),
    Case("iop-inf", put("ImageOrientationPatient", "DS", ["inf", "0", "0", "0", "1", "0"]),
         ("ImageOrientationPatient", "not finite")),
    Case("iop-zero", put("ImageOrientationPatient", "DS", ["0"] * 6),
         ("ImageOrientationPatient", "row direction of length 0.000")),
    Case("iop-not-unit", put("ImageOrientationPatient", "DS", ["1", "0", "0", "0", "2", "0"]),
         ("ImageOrientationPatient", "column direction of length 2.000")),
    Case("spacing-deleted", delete("PixelSpacing"), ("no PixelSpacing", "no geometry"), explained=True),
    Case("spacing-string", put("PixelSpacing", "LO", "abc"), ("PixelSpacing", "1 value, expected 2")),
    Case("spacing-strings", put("PixelSpacing", "LO", ["abc", "0.8"]), ("PixelSpacing", "not numeric")),
    Case("spacing-1-value", put("PixelSpacing", "DS", "0.8"), ("PixelSpacing", "1 value, expected 2")),
    Case("spacing-3-values", put("PixelSpacing", "DS", ["0.8", "0.8", "0.8"]),
         ("PixelSpacing", "3 values, expected 2")),
    Case("spacing-zero", put("PixelSpacing", "DS", ["0", "0.8"]), ("PixelSpacing", "not positive")),
    Case("spacing-negative", put("PixelSpacing", "DS", ["0.9", "-0.8"]), ("PixelSpacing", "not positive")),
    Case("spacing-nan", put("PixelSpacing", "DS", ["nan", "0.8"]), ("PixelSpacing", "not finite")),
    Case("spacing-inf", put("PixelSpacing", "DS", ["0.9", "inf"]), ("PixelSpacing", "not finite")),
    Case("thickness-string", put("SliceThickness", "LO", "thick"), ("SliceThickness", "not numeric")),
    Case("thickness-negative", put("SliceThickness", "DS", "-3"), ("SliceThickness", "negative")),
    Case("thickness-nan", put("SliceThickness", "DS", "nan"), ("SliceThickness", "not finite")),
    Case("thickness-2-values", put("SliceThickness", "DS", ["3", "3"]), ("SliceThickness", "2 values")),
    # pixel description
    Case("rows-deleted", delete("Rows"), ("Rows", "missing")),
    Case("rows-string", put("Rows", "LO", "seven"), ("Rows", "not an integer")),
    Case("rows-fraction", put("Rows", "DS", "7.5"), ("Rows", "not an integer")),
    Case("rows-zero", put("Rows", "US", 0), ("Rows", "not positive")),
    Case("rows-2-values", put("Rows", "US", [7, 7]), ("Rows", "2 values, expected 1")),
    Case("rows-undecodable", raw("Rows", "US", b"abc"), ("Rows", "cannot be decoded")),
    Case("rows-too-few", shift("Rows", -1), ("pixel data", "Rows 6", "need"), scopes=("all",)),
    Case("rows-too-many", shift("Rows", 1), ("pixel data", "Rows 8", "need"), scopes=("all",)),
    Case("rows-mixed", shift("Rows", -1), ("mixes image sizes",), scopes=("one",)),
    Case("columns-deleted", delete("Columns"), ("Columns", "missing")),
    Case("columns-string", put("Columns", "LO", "eight"), ("Columns", "not an integer")),
    Case("columns-zero", put("Columns", "US", 0), ("Columns", "not positive")),
    Case("columns-too-few", shift("Columns", -1), ("pixel data", "Columns 7", "need"), scopes=("all",)),
    Case("bits-allocated-deleted", delete("BitsAllocated"), ("BitsAllocated", "missing")),
    Case("bits-allocated-7", put("BitsAllocated", "US", 7), ("BitsAllocated", "7", "multiple of 8")),
    Case("bits-allocated-0", put("BitsAllocated", "US", 0), ("BitsAllocated", "0")),
    Case("bits-allocated-string", put("BitsAllocated", "LO", "sixteen"), ("BitsAllocated", "not an integer")),
    Case("bits-allocated-32", put("BitsAllocated", "US", 32), ("pixel data", "32 bits", "need")),
    Case("bits-allocated-undecodable", raw("BitsAllocated", "US", b"\x10"), ("BitsAllocated", "cannot be decoded")),
    Case("bits-stored-deleted", delete("BitsStored"), ("Bits Stored",)),
    Case("bits-stored-0", put("BitsStored", "US", 0), ("BitsStored", "0 is not between 1 and BitsAllocated")),
    Case("bits-stored-17", put("BitsStored", "US", 17), ("BitsStored", "17", "BitsAllocated (16)")),
    Case("bits-stored-string", put("BitsStored", "LO", "x"), ("BitsStored", "not an integer")),
    Case("pixel-representation-deleted", delete("PixelRepresentation"), ("Pixel Representation",)),
    Case("pixel-representation-2", put("PixelRepresentation", "US", 2), ("PixelRepresentation", "2")),
    Case("pixel-representation-string", put("PixelRepresentation", "LO", "signed"),
         ("PixelRepresentation", "not an integer")),
    Case("samples-deleted", delete("SamplesPerPixel"), ("SamplesPerPixel", "missing")),
    Case("samples-0", put("SamplesPerPixel", "US", 0), ("SamplesPerPixel", "not positive")),
    Case("samples-3", put("SamplesPerPixel", "US", 3), ("colour",)),
    Case("samples-undecodable", raw("SamplesPerPixel", "US", b"abc"), ("SamplesPerPixel", "cannot be decoded")),
    Case("photometric-deleted", delete("PhotometricInterpretation"), ("PhotometricInterpretation", "missing")),
    Case("photometric-unknown", put("PhotometricInterpretation", "CS", "XYZ"), ("Photometric Interpretation", "XYZ")),
    Case("photometric-2-values", put("PhotometricInterpretation", "CS", ["MONOCHROME2", "RGB"]),
         ("PhotometricInterpretation", "not one name")),
    Case("photometric-palette", put("PhotometricInterpretation", "CS", "PALETTE COLOR"), ("colour",)),
    # rescale
    Case("slope-string", put("RescaleSlope", "LO", "steep"), ("RescaleSlope", "not numeric")),
    Case("slope-zero", put("RescaleSlope", "DS", "0"), ("RescaleSlope", "zero")),
    Case("slope-nan", put("RescaleSlope", "DS", "nan"), ("RescaleSlope", "not finite")),
    Case("slope-2-values", put("RescaleSlope", "DS", ["1", "2"]), ("RescaleSlope", "2 values")),
    Case("intercept-string", put("RescaleIntercept", "LO", "low"), ("RescaleIntercept", "not numeric")),
    Case("intercept-inf", put("RescaleIntercept", "DS", "-inf"), ("RescaleIntercept", "not finite")),
    # frame count on a single-frame file
    Case("frames-string", put("NumberOfFrames", "LO", "many"), ("NumberOfFrames", "not an integer")),
    Case("frames-word-in-IS", raw("NumberOfFrames", "IS", b"many"), ("NumberOfFrames", "not an integer")),
    Case("frames-zero", put("NumberOfFrames", "IS", "0"), ("NumberOfFrames", "not positive")),
    Case("frames-negative", put("NumberOfFrames", "IS", "-2"), ("NumberOfFrames", "not positive")),
    Case("frames-3", put("NumberOfFrames", "IS", "3"), ("no per-frame geometry",), explained=True),
    # pixel data and the file itself
    Case("pixels-deleted", delete("PixelData"), ("no pixel data",)),
    Case("pixels-short", pixels(lambda b: b[:-4]), ("pixel data", "108 bytes", "need 112")),
    Case("pixels-long", pixels(lambda b: b + bytes(10)), ("pixel data", "122 bytes", "need 112")),
    Case("transfer-syntax-unknown", unknown_transfer_syntax, ("pixel data",)),
    Case("cut-in-meta", cut(keep=200), ("no data set", "truncated")),
    Case("cut-before-uid", cut(before="SeriesInstanceUID"), ("Rows is missing",)),
    Case("cut-inside-uid", cut(before="SeriesInstanceUID", into=20), ("truncated", "inside SeriesInstanceUID")),
    Case("cut-before-rows", cut(before="Rows"), ("Rows", "missing")),
    Case("cut-inside-spacing", cut(before="PixelSpacing", into=10), ("truncated", "inside PixelSpacing")),
    Case("cut-before-pixels", cut(before="PixelData"), ("no pixel data",)),
    Case("cut-in-pixels", lambda path: path.write_bytes(path.read_bytes()[:-25]), ("pixel data",)),
]


def _shared(ds):
    return ds.SharedFunctionalGroupsSequence[0]


def _frame(k):
    return lambda ds: ds.PerFrameFunctionalGroupsSequence[k]


def _in(holder, sequence):
    return lambda ds: getattr(holder(ds), sequence)[0]


def _drop_last_frame_item(path):
    _edit(path, lambda ds: ds.PerFrameFunctionalGroupsSequence.pop())


def _empty_sequence(holder, sequence):
    return lambda path: _edit(path, lambda ds: setattr(holder(ds), sequence, Sequence([])))


ENHANCED = [
    Case("frames-deleted", delete("NumberOfFrames"), ("NumberOfFrames is 1", "5 item")),
    Case("frames-string", put("NumberOfFrames", "LO", "five"), ("NumberOfFrames", "not an integer")),
    Case("frames-garbage-in-IS", raw("NumberOfFrames", "IS", b"5.5.5"), ("NumberOfFrames", "not an integer")),
    Case("frames-zero", put("NumberOfFrames", "IS", "0"), ("NumberOfFrames", "not positive")),
    Case("frames-too-many", put("NumberOfFrames", "IS", "6"), ("NumberOfFrames is 6", "5 item")),
    Case("frames-too-few", put("NumberOfFrames", "IS", "4"), ("NumberOfFrames is 4", "5 item")),
    Case("per-frame-item-missing", _drop_last_frame_item, ("NumberOfFrames is 5", "4 item")),
    Case("per-frame-deleted", delete("PerFrameFunctionalGroupsSequence"), ("no ImagePositionPatient",),
         explained=True),
    Case("per-frame-not-a-sequence", put("PerFrameFunctionalGroupsSequence", "LO", "frames"),
         ("PerFrameFunctionalGroupsSequence", "not a sequence")),
    Case("shared-deleted", delete("SharedFunctionalGroupsSequence"), ("no ImageOrientationPatient",),
         explained=True),
    Case("position-empty", _empty_sequence(_frame(2), "PlanePositionSequence"), ("no ImagePositionPatient",),
         explained=True),
    Case("position-2-values", put("ImagePositionPatient", "DS", ["1", "2"], _in(_frame(2), "PlanePositionSequence")),
         ("frame 3", "ImagePositionPatient", "2 values, expected 3")),
    Case("position-string", put("ImagePositionPatient", "LO", ["a", "b", "c"], _in(_frame(2), "PlanePositionSequence")),
         ("frame 3", "ImagePositionPatient", "not numeric")),
    Case("position-nan", put("ImagePositionPatient", "DS", ["0", "nan", "0"], _in(_frame(0), "PlanePositionSequence")),
         ("frame 1", "ImagePositionPatient", "not finite")),
    Case("orientation-5-values", put("ImageOrientationPatient", "DS", ["1", "0", "0", "0", "1"],
                                     _in(_shared, "PlaneOrientationSequence")),
         ("ImageOrientationPatient", "5 values, expected 6")),
    Case("orientation-string", put("ImageOrientationPatient", "LO", "axial", _in(_shared, "PlaneOrientationSequence")),
         ("ImageOrientationPatient", "1 value, expected 6")),
    Case("measures-not-a-sequence", put("PixelMeasuresSequence", "LO", "mm", _shared),
         ("PixelMeasuresSequence", "not a sequence")),
    Case("spacing-zero", put("PixelSpacing", "DS", ["0", "0"], _in(_shared, "PixelMeasuresSequence")),
         ("PixelSpacing", "not positive")),
    Case("spacing-negative", put("PixelSpacing", "DS", ["-1", "0.8"], _in(_shared, "PixelMeasuresSequence")),
         ("PixelSpacing", "not positive")),
    Case("spacing-1-value", put("PixelSpacing", "DS", "0.8", _in(_shared, "PixelMeasuresSequence")),
         ("PixelSpacing", "1 value, expected 2")),
    Case("spacing-string", put("PixelSpacing", "LO", ["x", "y"], _in(_shared, "PixelMeasuresSequence")),
         ("PixelSpacing", "not numeric")),
    Case("thickness-negative", put("SliceThickness", "DS", "-3", _in(_shared, "PixelMeasuresSequence")),
         ("SliceThickness", "negative")),
    Case("slope-string", put("RescaleSlope", "LO", "x", _in(_frame(4), "PixelValueTransformationSequence")),
         ("frame 5", "RescaleSlope", "not numeric")),
    Case("slope-zero", put("RescaleSlope", "DS", "0", _in(_frame(4), "PixelValueTransformationSequence")),
         ("frame 5", "RescaleSlope", "zero")),
    Case("intercept-nan", put("RescaleIntercept", "DS", "nan", _in(_frame(1), "PixelValueTransformationSequence")),
         ("frame 2", "RescaleIntercept", "not finite")),
    Case("rows-too-few", shift("Rows", -1), ("pixel data", "5 frames", "need")),
    Case("bits-allocated-deleted", delete("BitsAllocated"), ("BitsAllocated", "missing")),
    Case("pixels-short", pixels(lambda b: b[:-100]), ("pixel data", "need 560")),
    Case("cut-in-pixels", lambda path: path.write_bytes(path.read_bytes()[:-25]), ("pixel data",)),
]


# checks ------------------------------------------------------------------------------------
def _refused(capsys, argv, words, names, explained=False) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and lines[0].startswith("onfh: error: "), err
    assert out == ""
    line = lines[0]
    assert "Traceback" not in line and "internal error" not in line
    if not explained:
        assert len(line) < MAX_LINE, line
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in: {line}"
    assert any(name in line for name in names), f"none of {names} in: {line}"
    return line


def _refused_everywhere(capsys, tmp_path, folder, file, case, names):
    """info on the folder and on one file, analyze on the folder: refused, nothing written."""
    results = tmp_path / "results"
    results.mkdir()
    _refused(capsys, ["info", folder], case.words, names, case.explained)
    _refused(capsys, ["info", file], case.file_words or case.words, names, case.explained)
    _refused(capsys, ["analyze", folder, "--side", "right", "--out", results / "out"], case.words, names,
             case.explained)
    # no output folder, and no hidden temporary folder beside it
    assert list(results.iterdir()) == []


@pytest.mark.parametrize("case, scope", [pytest.param(c, scope, id=f"{c.id}-{scope}")
                                         for c in CLASSIC for scope in c.scopes])
def test_corrupted_series_is_refused_in_one_line(tmp_path, capsys, case, scope):
    folder, paths = _series(tmp_path)
    # one: the last slice, whose loss would leave a valid-looking shorter volume
    damaged = paths[-1:] if scope == "one" else paths
    for path in damaged:
        case.apply(path)
    names = [p.name for p in damaged] + ['"synthetic t1"']
    _refused_everywhere(capsys, tmp_path, folder, damaged[0], case, names)


@pytest.mark.parametrize("case", ENHANCED, ids=[c.id for c in ENHANCED])
def test_corrupted_enhanced_file_is_refused_in_one_line(tmp_path, capsys, case):
    path = _enhanced(tmp_path)
    case.apply(path)
    _refused_everywhere(capsys, tmp_path, path.parent, path, case, [path.name])


def test_fixtures_read_before_corruption(tmp_path):
    """The intact series and Enhanced file read exactly: the refusals above come from the damage."""
    data, affine = _volume()
    folder, _ = _series(tmp_path)
    got, got_affine, _ = read_image(folder)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)
    got, got_affine, _ = read_image(_enhanced(tmp_path))
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)


# whole inputs that are no image ------------------------------------------------------------
def test_empty_folder_non_dicom_and_junk_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    junk_folder = tmp_path / "junk"
    junk_folder.mkdir()
    junk = junk_folder / "image.dcm"
    junk.write_bytes(np.random.default_rng(1).bytes(4000))
    text = tmp_path / "notes.dcm"
    text.write_text("not an image\n")
    zero = tmp_path / "zero.dcm"
    zero.write_bytes(b"")
    fake = tmp_path / "fake"
    fake.mkdir()
    # the DICOM marker, then garbage
    (fake / "marker.dcm").write_bytes(bytes(128) + b"DICM" + np.random.default_rng(2).bytes(500))
    for path, words, name in (
        (empty, ("no DICOM images",), "empty"),
        (junk_folder, ("no DICOM images",), "junk"),
        (junk, ("not a readable image",), "image.dcm"),
        (text, ("not a readable image",), "notes.dcm"),
        (zero, ("empty",), "zero.dcm"),
        (fake, ("no DICOM images",), "fake"),
        (fake / "marker.dcm", ("not a readable image",), "marker.dcm"),
    ):
        results = tmp_path / "results"
        results.mkdir()
        _refused(capsys, ["info", path], words, [name])
        _refused(capsys, ["analyze", path, "--side", "right", "--out", results / "out"], words, [name])
        assert list(results.iterdir()) == [], path
        results.rmdir()


# damage the loader tolerates: same voxels, same geometry ----------------------------------
def _unused_tag_undecodable(path):
    raw("LargestImagePixelValue", "US", b"abc")(path)


TOLERATED = [
    ("uid-deleted-everywhere", delete("SeriesInstanceUID")),
    ("thickness-deleted", delete("SliceThickness")),
    ("thickness-zero", put("SliceThickness", "DS", "0")),
    ("modality-deleted", delete("Modality")),
    ("instance-number-string", put("InstanceNumber", "LO", "first")),
    ("unused-tag-undecodable", _unused_tag_undecodable),
    ("position-as-binary-floats", lambda path: _edit(path, lambda ds: ds.__setitem__(
        tag_for_keyword("ImagePositionPatient"),
        DataElement(tag_for_keyword("ImagePositionPatient"), "FD", [float(v) for v in ds.ImagePositionPatient])))),
]


@pytest.mark.parametrize("edit", [e for _, e in TOLERATED], ids=[i for i, _ in TOLERATED])
def test_harmless_damage_reads_the_same_volume(tmp_path, edit):
    data, affine = _volume()
    folder, paths = _series(tmp_path)
    for path in paths:
        edit(path)
    got, got_affine, _ = read_image(folder)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)


def test_junk_and_other_series_damage_beside_a_series_are_noted(tmp_path):
    data, affine = _volume()
    folder, paths = _series(tmp_path)
    (folder / "thumbnail.dcm").write_bytes(np.random.default_rng(3).bytes(2000))
    other = write_series(tmp_path / "other", data, affine, description="other")[0]
    delete("BitsAllocated")(other)
    other.rename(folder / other.name)
    got, got_affine, meta = read_image(folder)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)
    assert any("1 file(s) in series are not DICOM images" in w for w in meta["warnings"]), meta["warnings"]
    assert any("1 damaged DICOM file(s) of other series" in w for w in meta["warnings"]), meta["warnings"]


def test_damaged_sibling_of_unknown_series(tmp_path, capsys):
    """Unknown series: it blocks a folder (it may be a slice), not a file the user named."""
    data, affine = _volume()
    folder, paths = _series(tmp_path)
    cut(before="SeriesInstanceUID", into=20)(paths[-1])
    _refused(capsys, ["info", folder], ("truncated", "inside SeriesInstanceUID"), [paths[-1].name])
    got, _, meta = read_image(paths[0])
    np.testing.assert_array_equal(got, data[:, :, :-1])
    assert any(f"1 damaged DICOM file(s) of unknown series beside {paths[0].name}" in w
               for w in meta["warnings"]), meta["warnings"]


def test_damaged_file_of_the_requested_series_is_named(tmp_path, capsys):
    data, affine = _volume()
    folder, paths = _series(tmp_path)
    uid = str(pydicom.dcmread(str(paths[0])).SeriesInstanceUID)
    put("PixelSpacing", "DS", ["0.9", "-0.8"])(paths[1])
    _refused(capsys, ["info", folder, "--series", uid], ("PixelSpacing", "not positive"), [paths[1].name])
    _refused(capsys, ["info", paths[0]], ("PixelSpacing", "not positive"), [paths[1].name])


def test_nested_sequence_item_holder_helpers_touch_the_right_frame(tmp_path):
    """The Enhanced corruptions edit what they claim: frame 3's position, shared spacing."""
    path = _enhanced(tmp_path)
    put("ImagePositionPatient", "DS", ["1", "2"], _in(_frame(2), "PlanePositionSequence"))(path)
    put("PixelSpacing", "DS", ["0", "0"], _in(_shared, "PixelMeasuresSequence"))(path)
    ds = pydicom.dcmread(str(path))
    assert list(ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient) == [1, 2]
    assert len(ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient) == 3
    assert list(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing) == [0, 0]
