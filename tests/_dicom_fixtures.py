"""Write small DICOM series and Enhanced MR files with pydicom, from a known array and RAS affine.

The writer is the ground truth for the readers: it follows the standard directly (LPS patient
coordinates; ImageOrientationPatient = row direction then column direction; PixelSpacing =
[between rows, between columns]; pixel rows run along the column direction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry(affine_ras):
    """(row cosine, column cosine, column spacing, row spacing, LPS affine) of a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine_ras, float)
    col_spacing = np.linalg.norm(lps[:3, 0])  # distance between columns: along the row direction
    row_spacing = np.linalg.norm(lps[:3, 1])
    return lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing, col_spacing, row_spacing, lps


def _base(sop_class, series_uid, description, patient_name, patient_id, modality):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesDescription = description
    ds.SeriesNumber = 7
    ds.Modality = modality
    ds.Manufacturer = "SYNTH"
    ds.ManufacturerModelName = "Phantom 1"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610203"
    ds.InstitutionName = "Secret General Hospital"
    ds.ReferringPhysicianName = "WHO^KNOWS"
    ds.AccessionNumber = "ACC998877"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def _set_pixels(ds, planes: np.ndarray):
    """``planes``: (rows, cols) or (frames, rows, cols), uint16 or int16."""
    ds.PixelRepresentation = 1 if planes.dtype.kind == "i" else 0
    ds.Rows, ds.Columns = int(planes.shape[-2]), int(planes.shape[-1])
    ds.PixelData = np.ascontiguousarray(planes.astype(planes.dtype.newbyteorder("<"))).tobytes()


def write_series(folder, data, affine_ras, *, series_uid=None, description="synthetic t1", patient_name="ANON",
                 patient_id="ANON", slope=1.0, intercept=0.0, seed=0, positions=None, orientations=None,
                 instance_numbers=None, skip=(), extra=None):
    """Write ``data`` (columns, rows, slices) as one classic file per slice, in shuffled file order.

    ``positions`` / ``orientations`` override the per-slice ImagePositionPatient (LPS) and
    ImageOrientationPatient to make broken stacks; ``skip`` leaves slices out; ``slope`` and
    ``intercept`` may be per-slice sequences. Instance numbers run opposite to the slice order by
    default, so a reader that trusts them instead of positions gets the stack backwards.
    Returns the written paths in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    n = data.shape[2]
    row, col, col_spacing, row_spacing, lps = geometry(affine_ras)
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(seed)
    names = [f"{generate_uid()[-12:]}_{x}.dcm" for x in rng.permutation(n)]
    slopes = np.broadcast_to(np.asarray(slope, float), (n,))
    intercepts = np.broadcast_to(np.asarray(intercept, float), (n,))
    paths = []
    for k in range(n):
        if k in skip:
            continue
        ds = _base(MR_IMAGE, series_uid, description, patient_name, patient_id, "MR")
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else n - k
        ipp = lps[:3, 3] + k * lps[:3, 2] if positions is None else positions[k]
        iop = np.concatenate([row, col]) if orientations is None else orientations[k]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in iop]
        ds.PixelSpacing = [f"{row_spacing:.10g}", f"{col_spacing:.10g}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6g}"
        ds.RescaleSlope = f"{slopes[k]:.10g}"
        ds.RescaleIntercept = f"{intercepts[k]:.10g}"
        for key, value in (extra or {}).items():
            setattr(ds, key, value(k) if callable(value) else value)
        _set_pixels(ds, data[:, :, k].T)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(path, data, affine_ras, *, shared_geometry=True, slopes=None, seed=0,
                   description="synthetic enhanced", patient_name="ANON", patient_id="ANON"):
    """Write ``data`` (columns, rows, slices) as one Enhanced MR file with frames in shuffled order.

    Orientation and pixel measures go to the shared functional groups (``shared_geometry``) or
    to every per-frame item; positions and the rescale (``slopes``, per slice) are per frame.
    """
    data = np.asarray(data)
    n = data.shape[2]
    row, col, col_spacing, row_spacing, lps = geometry(affine_ras)
    ds = _base(ENHANCED_MR_IMAGE, generate_uid(), description, patient_name, patient_id, "MR")
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    slopes = np.ones(n) if slopes is None else np.asarray(slopes, float)
    frame_order = np.random.default_rng(seed).permutation(n)

    def orientation():
        item = Dataset()
        item.ImageOrientationPatient = [f"{v:.10g}" for v in np.concatenate([row, col])]
        return Sequence([item])

    def measures():
        item = Dataset()
        item.PixelSpacing = [f"{row_spacing:.10g}", f"{col_spacing:.10g}"]
        item.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6g}"
        return Sequence([item])

    shared = Dataset()
    if shared_geometry:
        shared.PlaneOrientationSequence = orientation()
        shared.PixelMeasuresSequence = measures()
    per_frame = []
    for k in frame_order:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, 3] + k * lps[:3, 2]]
        item.PlanePositionSequence = Sequence([pos])
        if not shared_geometry:
            item.PlaneOrientationSequence = orientation()
            item.PixelMeasuresSequence = measures()
        transform = Dataset()
        transform.RescaleSlope = f"{slopes[k]:.10g}"
        transform.RescaleIntercept = "0"
        transform.RescaleType = "US"
        item.PixelValueTransformationSequence = Sequence([transform])
        content = Dataset()
        content.InStackPositionNumber = int(k) + 1
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _set_pixels(ds, np.stack([data[:, :, k].T for k in frame_order]))
    ds.save_as(Path(path), enforce_file_format=True)
    return Path(path)


def read_raw(path):
    return pydicom.dcmread(str(path))


def light_config(folder):
    """Settings without the outputs the DICOM SEG tests do not look at (faster): a YAML file in
    ``folder``."""
    path = Path(folder) / "light.yaml"
    path.write_text(yaml.safe_dump({"outputs": {"qc_png": False, "stl": False},
                                    "reconstruction": {"isotropic": False}}))
    return path
