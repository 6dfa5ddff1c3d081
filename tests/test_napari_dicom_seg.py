"""A DICOM SEG opens on its own, without its source series: in pipeline.io and in napari.

The SEG is written by onfh itself (``onfh analyze --dicom-seg``) for the real Siemens sagittal
series in ../shared/realdata (35 slices, 4 mm thick, 4.8 mm apart), from a ball head with a
top-cap lesion drawn around its middle. The truth is that label map and the series' own grid
as pipeline's DICOM loader reads it: the SEG's frames must rebuild both, voxel for voxel.

Needs napari, pytest-qt and a display (run under `xvfb-run -a`), as the other napari tests.
"""

from __future__ import annotations

import itertools

import pytest

from conftest import napari_or_skip  # noqa: E402

napari = napari_or_skip()

import npe2  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from _dicom_fixtures import light_config  # noqa: E402
from pydicom.pixels import pack_bits  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from test_napari_default_reader import PLUGIN, napari_settings  # noqa: E402, F401 (a fixture)

from pipeline.app.cli import main  # noqa: E402
from pipeline.errors import InputError  # noqa: E402
from pipeline.io.dicom_seg import is_dicom_seg, read_dicom_seg_own_grid  # noqa: E402
from pipeline.io.scan import Scan, load_labels, load_scan, place_on_grid  # noqa: E402
from pipeline.napari._reader import napari_get_reader, read_paths  # noqa: E402

from conftest import ball_and_cap_labels, realdata, save_nifti  # noqa: E402

SERIES = ("dicom", "mr_t1_sag_brain")


@pytest.fixture(scope="module")
def real_seg(tmp_path_factory):
    """seg.dcm written by ``onfh analyze --dicom-seg`` for the real series, with the series' scan
    and the label map it was given (on the scan's canonical grid)."""
    series = realdata(*SERIES)
    tmp = tmp_path_factory.mktemp("real_seg")
    scan = load_scan(series)
    # a 22 mm ball about the series' middle voxel: 9 of its 35 slices, none at either end, so
    # the SEG's own grid is a slab of the series' grid at a known offset
    centre = scan.source_affine @ np.array([128.0, 128.0, 17.0, 1.0])
    lab = ball_and_cap_labels(scan.source_shape, scan.source_affine, centre[:3], 22.0, 7.0)
    labels = save_nifti(tmp / "labels.nii.gz", lab, scan.source_affine)
    out = tmp / "out"
    # --side left: the side the ball's position shows (the anatomy check reads it so)
    assert main([str(a) for a in ("analyze", series, "--labels", labels, "--side", "left", "--out", out,
                                  "--dicom-seg", "--config", light_config(tmp))]) == 0
    return {"series": series, "scan": scan, "labels": load_labels(labels, scan), "seg": out / "seg.dcm",
            "sr": out / "sr.dcm", "tmp": tmp}


def _slab(real_seg) -> tuple[int, slice, np.ndarray]:
    """(canonical axis of the series' slices, the slices the labels touch, 4x4 shift of the
    series' voxel indices to the slab's): the truth the SEG's own grid must match."""
    scan, labels = real_seg["scan"], real_seg["labels"]
    axis = int(scan.source_ornt[2, 0])
    touched = np.flatnonzero((labels > 0).any(axis=tuple(a for a in range(3) if a != axis)))
    assert 0 < touched[0] and touched[-1] < scan.shape[axis] - 1
    shift = np.eye(4)
    shift[axis, 3] = touched[0]
    return axis, slice(int(touched[0]), int(touched[-1]) + 1), shift


def _crop(array, axis: int, slab: slice):
    index = [slice(None)] * 3
    index[axis] = slab
    return array[tuple(index)]


# pipeline.io: the SEG alone -----------------------------------------------------------------------
def test_seg_alone_gives_the_labels_on_the_series_grid(real_seg):
    grid, segments = read_dicom_seg_own_grid(real_seg["seg"])
    scan, labels = real_seg["scan"], real_seg["labels"]
    axis, slab, shift = _slab(real_seg)
    # the series' affine from pipeline's loader, moved to the slab's first slice. To 10 nm, not
    # 1 nm: the series' positions are float32 values ("19.200000762939"), the loader lays its
    # slices on an even grid from the first one, and the slab's first instance lies 1.1e-6 mm
    # off that grid; the SEG keeps the instance's own position, exactly (below)
    np.testing.assert_allclose(grid.affine, scan.affine @ shift, rtol=0, atol=1e-5)
    # the SEG's own voxel (0, 0, 0) is the first pixel of its lowest frame along the slice
    # normal: the source instance of the lowest slice the labels touch (the loader stacks the
    # series along the normal too), at that instance's ImagePositionPatient (LPS)
    lowest = int(np.flatnonzero(scan.to_source(labels).any(axis=(0, 1)))[0])
    uid = scan.meta["slice_sop_uids"][lowest]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in real_seg["series"].iterdir()]
    ipp = np.array(next(h for h in headers if h.SOPInstanceUID == uid).ImagePositionPatient, float)
    np.testing.assert_allclose(grid.source_affine[:3, 3], ipp * [-1, -1, 1], rtol=0, atol=1e-9)
    # the slice step is the positions' 4.8 mm (SpacingBetweenSlices), not the 4 mm SliceThickness
    measures = pydicom.dcmread(real_seg["seg"], stop_before_pixels=True).SharedFunctionalGroupsSequence[0] \
        .PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 4.0 and abs(grid.spacing[axis] - 4.8) < 1e-5
    assert grid.shape == _crop(labels, axis, slab).shape
    by_name = {s.name: s for s in segments}
    assert sorted(by_name) == ["Femoral head", "Necrosis"]
    head, lesion = by_name["Femoral head"], by_name["Necrosis"]
    assert (head.code, head.label_value, lesion.code, lesion.label_value) == (
        ("SCT", "2812003"), 1, ("SCT", "6574001"), 2)
    assert np.array_equal(head.get_mask(), _crop(labels, axis, slab) > 0)
    assert np.array_equal(lesion.get_mask(), _crop(labels, axis, slab) == 2)
    # pasted back onto the series' grid (as the Analyze hip widget places a cropped layer): the labels
    as_scan = Scan(head.get_mask().astype(np.uint8) + lesion.get_mask(), grid.affine, grid.source_affine,
                   grid.source_ornt)
    assert np.array_equal(place_on_grid(as_scan, scan, 1e-5, "seg"), labels)


def _rewrite(src, dst, order=None, edit=None):
    """The SEG with its frames (functional-group items and pixels) in ``order``, then ``edit(ds)``."""
    ds = pydicom.dcmread(src)
    if order is not None:
        frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
        ds.PerFrameFunctionalGroupsSequence = Sequence([ds.PerFrameFunctionalGroupsSequence[i] for i in order])
        ds.PixelData = pack_bits(np.ascontiguousarray(frames[order]))  # BINARY: 1 bit per pixel
    if edit is not None:
        edit(ds)
    ds.save_as(dst)
    return dst


def _no_spacing_between_slices(ds):
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices


@pytest.mark.parametrize("variant", ["reversed", "shuffled", "no SpacingBetweenSlices"])
def test_frame_order_does_not_matter(real_seg, tmp_path, variant):
    """Frames stored backwards or in random order (or without SpacingBetweenSlices, whose step
    then comes from the positions) give the same grid and the same masks."""
    n = int(pydicom.dcmread(real_seg["seg"], stop_before_pixels=True).NumberOfFrames)
    order = {"reversed": np.arange(n)[::-1], "shuffled": np.random.default_rng(7).permutation(n)}.get(variant)
    if order is not None:
        assert not np.array_equal(order, np.arange(n))
    edit = _no_spacing_between_slices if variant == "no SpacingBetweenSlices" else None
    path = _rewrite(real_seg["seg"], tmp_path / "seg.dcm", order, edit)
    grid, segments = read_dicom_seg_own_grid(real_seg["seg"])
    again, moved = read_dicom_seg_own_grid(path)
    np.testing.assert_allclose(again.affine, grid.affine, rtol=0, atol=1e-9)
    assert again.shape == grid.shape
    for a, b in zip(segments, moved):
        assert a.name == b.name and np.array_equal(a.get_mask(), b.get_mask())


def _normal(ds) -> np.ndarray:
    iop = np.array(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    return np.cross(iop[:3], iop[3:])


def _shift_one_frame(ds):
    """Frame 4 moved 1.7 mm along the slice normal: off the 4.8 mm grid of the others."""
    position = ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0]
    position.ImagePositionPatient = [f"{v:.6f}" for v in np.array(position.ImagePositionPatient, float)
                                     + 1.7 * _normal(ds)]


def _drop_one_position(ds):
    del ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence


@pytest.mark.parametrize("edit, message", [
    (_shift_one_frame, "off an even grid of 4.8 mm slice steps"),
    (_drop_one_position, "frame 4 has no ImagePositionPatient"),
])
def test_frames_that_are_no_volume_are_refused_in_one_line(real_seg, tmp_path, edit, message):
    path = _rewrite(real_seg["seg"], tmp_path / "seg.dcm", edit=edit)
    with pytest.raises(InputError, match=message) as caught:
        read_dicom_seg_own_grid(path)
    assert "\n" not in str(caught.value)
    # the napari reader: the file is still its to open (a DICOM SEG), and it says why it cannot
    assert napari_get_reader(str(path)) is not None
    with pytest.raises(InputError, match=message):
        read_paths(str(path))


def test_a_dicom_image_file_is_not_taken_for_a_seg(real_seg):
    one = sorted(real_seg["series"].iterdir())[0]
    assert is_dicom_seg(real_seg["seg"])
    assert not is_dicom_seg(one) and not is_dicom_seg(real_seg["sr"])
    [(data, kwargs, kind)] = read_paths(str(one))
    scan = real_seg["scan"]
    assert kind == "image" and np.array_equal(data, scan.data)
    np.testing.assert_array_equal(kwargs["affine"], scan.affine)
    with pytest.raises(InputError, match="not a segmentation"):
        read_dicom_seg_own_grid(one)


# napari -----------------------------------------------------------------------------------------
def test_napari_opens_the_seg_over_its_series(real_seg, napari_settings, make_napari_viewer):  # noqa: F811
    viewer = make_napari_viewer()
    npe2.PluginManager.instance().deactivate(PLUGIN)  # a new napari session: onfh not yet the default
    [image] = viewer.open(str(real_seg["series"]), plugin=PLUGIN)
    [named] = viewer.open(str(real_seg["seg"]), plugin=PLUGIN)
    [default] = viewer.open(str(real_seg["seg"]), plugin=None)  # onfh's reader, by preference
    assert default.source.reader_plugin == PLUGIN
    axis, slab, shift = _slab(real_seg)
    for layer in (named, default):
        assert layer._type_string == "labels"
        assert list(layer.features["segment"]) == ["", "Femoral head", "Necrosis"]
        assert list(layer.features["code"]) == ["", "SCT 2812003", "SCT 6574001"]
        assert layer.metadata["dicom_seg_picked"] == {"head": "Femoral head", "lesion": "Necrosis"}
        assert np.array_equal(layer.data, _crop(real_seg["labels"], axis, slab))
    # world = RAS mm for both layers: each corner of the SEG's voxels is where the image puts
    # the corner of the voxel one slab's offset further
    for corner in itertools.product(*[(-0.5, s - 0.5) for s in named.data.shape]):
        corner = np.array(corner)
        # (to 10 nm: the float32 positions of the real series, see the first test)
        np.testing.assert_allclose(named.data_to_world(corner), image.data_to_world(corner + shift[:3, 3]),
                                   rtol=0, atol=1e-5)


def _renamed(ds):
    """Segments named and coded as nothing onfh recognises (a SEG from another tool)."""
    for number, item in enumerate(ds.SegmentSequence, 1):
        item.SegmentLabel = f"structure {number}"
        code = item.SegmentedPropertyTypeCodeSequence[0]
        code.CodeValue, code.CodeMeaning = "272673000", "Bone"


def test_other_segments_open_as_one_layer_per_non_overlapping_set(real_seg, tmp_path):
    """Unrecognised BINARY segments that overlap (here the head holds the lesion) cannot share
    one label map: one Labels layer each, the segment number as value, names in features."""
    path = _rewrite(real_seg["seg"], tmp_path / "other.dcm", edit=_renamed)
    axis, slab, _ = _slab(real_seg)
    labels = _crop(real_seg["labels"], axis, slab)
    first, second = read_paths(str(path))
    assert first[2] == second[2] == "labels"
    assert list(first[1]["features"]["segment"]) == ["", "structure 1"]
    assert list(second[1]["features"]["segment"]) == ["", "", "structure 2"]
    assert np.array_equal(first[0], (labels > 0).astype(np.uint8))
    assert np.array_equal(second[0], np.where(labels == 2, 2, 0))


def test_labelmap_seg_from_highdicom_opens_as_one_layer(real_seg, tmp_path):
    """A LABELMAP SEG highdicom writes from the real source files, segments named by the user:
    one Labels layer (labels cannot overlap), values and names as written, on the series' grid."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    scan = real_seg["scan"]
    by_uid = {}
    for path in real_seg["series"].iterdir():
        ds = pydicom.dcmread(path)
        by_uid[ds.SOPInstanceUID] = ds
    sources = [by_uid[uid] for uid in scan.meta["slice_sop_uids"]]  # file slice order
    frames = scan.to_source(real_seg["labels"]).transpose(2, 1, 0)  # (slices, rows, columns)
    descriptions = [
        hd.seg.SegmentDescription(segment_number=n, segment_label=label, segmented_property_category=codes.SCT.Tissue,
                                  segmented_property_type=codes.SCT.Bone, algorithm_type="MANUAL")
        for n, label in ((1, "bone"), (2, "dead bone"))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames.astype(np.uint8), segmentation_type="LABELMAP",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1",
    )
    seg.save_as(tmp_path / "labelmap.dcm")
    axis, slab, shift = _slab(real_seg)
    grid, segments = read_dicom_seg_own_grid(tmp_path / "labelmap.dcm")
    # highdicom describes the background as segment 0: napari's background, no layer value
    assert [s.label_value for s in segments] == [0, 1, 2]
    np.testing.assert_allclose(grid.affine, scan.affine @ shift, rtol=0, atol=1e-5)
    [(data, kwargs, kind)] = read_paths(str(tmp_path / "labelmap.dcm"))
    assert kind == "labels" and list(kwargs["features"]["segment"]) == ["", "bone", "dead bone"]
    assert np.array_equal(data, _crop(real_seg["labels"], axis, slab))
    np.testing.assert_allclose(kwargs["affine"], scan.affine @ shift, rtol=0, atol=1e-5)
