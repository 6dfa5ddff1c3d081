"""napari opens NIfTI, NRRD, MetaImage and DICOM folders with onfh's reader without being told
(pipeline/napari/_preferences.py: the reader preference registered when onfh first runs).

Needs napari, pytest-qt and a display (run under `xvfb-run -a`); skipped cleanly otherwise.
"""

from __future__ import annotations

import os

import pytest

from conftest import napari_or_skip  # noqa: E402

napari = napari_or_skip()

import nibabel as nib  # noqa: E402
import npe2  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from _dicom_fixtures import write_series  # noqa: E402
from napari.errors import MultipleReaderError  # noqa: E402
from napari.settings import NapariSettings  # noqa: E402

from pipeline.napari._preferences import prefer_onfh_reader, reader_patterns  # noqa: E402

from conftest import grid_affine, rotation_matrix, save_nifti  # noqa: E402

PLUGIN = "onfh-pipeline"


@pytest.fixture
def napari_settings(monkeypatch, tmp_path):
    """napari's settings in this test's own file (listed before make_napari_viewer, which resets them)."""
    from napari import settings as napari_settings_module

    fresh = NapariSettings(config_path=tmp_path / "napari_settings.yaml")
    fresh._connect_events()
    monkeypatch.setattr(napari_settings_module, "_SETTINGS", fresh)
    return fresh


def medical_files(folder):
    """The same oblique volume as NIfTI, NRRD, MetaImage and a DICOM series folder."""
    shape = (12, 10, 6)
    affine = grid_affine(shape, (0.8, 0.9, 2.5), (10.0, -20.0, 5.0), rotation_matrix((1, 0, 1), 12.0))
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    files = {"nifti": save_nifti(folder / "scan.nii.gz", data, affine)}
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # ITK's direction, origin in LPS
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    img.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    for suffix in ("nrrd", "mha"):
        files[suffix] = folder / f"scan.{suffix}"
        sitk.WriteImage(img, str(files[suffix]))
    write_series(folder / "series", data, affine)
    files["dicom"] = folder / "series"
    return files


def test_medical_images_open_with_onfh_without_naming_it(napari_settings, make_napari_viewer, tmp_path, monkeypatch):
    files = medical_files(tmp_path)
    viewer = make_napari_viewer()
    npe2.PluginManager.instance().deactivate(PLUGIN)  # a new napari session in which onfh has not run yet
    assert dict(napari_settings.plugins.extension2reader) == {}
    # before: napari's own reader claims these files too, and napari cannot choose
    with pytest.raises(MultipleReaderError):
        viewer.open(str(files["nifti"]), plugin=None)
    # the first use of onfh (here its reader, chosen once) registers it as the default
    viewer.open(str(files["nifti"]), plugin=PLUGIN)
    # napari scan.nii.gz, File > Open and drag-and-drop go through _qt_open (no plugin): a reader
    # dialog there would mean no default
    monkeypatch.setattr("napari._qt.qt_viewer.handle_gui_reading",
                        lambda *a, **k: pytest.fail("napari asked which reader to use"))
    for kind, path in files.items():
        [named] = viewer.open(str(path), plugin=PLUGIN)
        [default] = viewer.open(str(path), plugin=None)
        assert default._type_string == "image", kind
        assert default.source.reader_plugin == PLUGIN, kind
        np.testing.assert_array_equal(default.affine.affine_matrix, named.affine.affine_matrix)
        np.testing.assert_array_equal(default.data, named.data)
        before = len(viewer.layers)
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)
        [gui] = viewer.layers[before:]
        assert gui.source.reader_plugin == PLUGIN, kind
        np.testing.assert_array_equal(gui.affine.affine_matrix, named.affine.affine_matrix)
    # the four files share one geometry: the affine is onfh's true one, not napari's identity
    nib_affine = nib.load(str(files["nifti"])).affine
    assert not np.allclose(default.affine.affine_matrix, np.eye(4))
    np.testing.assert_allclose(np.abs(np.linalg.det(default.affine.affine_matrix[:3, :3])),
                               abs(np.linalg.det(nib_affine[:3, :3])), rtol=1e-6)
    # saved: a later napari session reads the same preference from its settings file
    later = NapariSettings(config_path=napari_settings.config_path)
    _, patterns = reader_patterns()
    assert {p: later.plugins.extension2reader.get(p) for p in patterns} == {p: PLUGIN for p in patterns}
    # viewer.open(path) without plugin= means plugin="napari" in napari 0.9.2: napari's own reader
    with pytest.raises(OSError, match="backend"):
        viewer.open(str(files["nifti"]))


def test_a_reader_the_user_chose_is_kept(napari_settings):
    napari_settings.plugins.extension2reader = {"*.nii.gz": "napari", "/data/zarr_folder/": "napari"}
    added = prefer_onfh_reader()
    prefs = napari_settings.plugins.extension2reader
    assert prefs["*.nii.gz"] == "napari" and prefs["/data/zarr_folder/"] == "napari"
    assert "*.nii.gz" not in added and added["*.nii"] == PLUGIN and added["*" + os.sep] == PLUGIN
    assert prefer_onfh_reader() == {}  # nothing left to add


def test_manifest_wires_the_activation_hook():
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.on_activate == "pipeline.napari._preferences:on_activate"
    name, patterns = reader_patterns()
    assert name == PLUGIN
    [reader] = manifest.contributions.readers
    assert patterns == [*reader.filename_patterns, "*" + os.sep]
