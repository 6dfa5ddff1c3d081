"""DICOM Segmentation (SEG) and measurement report (Comprehensive 3D SR), written and read with highdicom.

Written (``onfh analyze --dicom-seg``, ``outputs.dicom_seg``) for a DICOM input, so that the masks
and figures go back to the PACS beside the series they were measured on:

- :func:`write_seg`: a BINARY Segmentation with two segments, 1 the whole femoral head (lesion
  included) and 2 the necrotic lesion, one frame per source slice and segment (empty frames left
  out), frame k on the source instance k: the masks are put back from the canonical grid into
  the file's own voxel order (``Scan.to_source``) and its slices matched to the instances by
  ``scan.meta["slice_sop_uids"]``;
- :func:`write_sr`: a TID 1500 Measurement Report with one volumetric measurement group per
  segment (``ReferencedSegment``): head volume; lesion volume, necrotic fraction, combined
  necrotic angle, JIC type and size class; for a follow-up, the regeneration.

Both carry the source's Patient and Study modules (and its Frame of Reference and instance UIDs
as references): that is their purpose. Nothing else of the source header is copied: the source
datasets handed to highdicom are reduced to those modules and the geometry first
(:func:`_reference_dataset`), so institution, station or acquisition details never reach them.
Every other output stays free of identifiers.

Read (``--labels seg.dcm``): :func:`read_dicom_seg` maps each frame onto the image grid through the
source instance it references or, failing that, through its plane position, and returns the
segments (:class:`pipeline.masks.segments.Segment`); the caller picks head and lesion by name or
code (:func:`pipeline.masks.segments.pick_segments`).

Codes (SNOMED CT, verified against DICOM PS3.16 as shipped in pydicom's code dictionaries):
segmented property categories from CID 7150, types "Head of Femur" 2812003 and "Necrosis"
6574001 (CID 7194), laterality from CID 244, "Volume" 118565006 (CID 7469). The figures no
standard concept names (necrotic fraction, combined necrotic angle, JIC type, size class,
regeneration) and the methods are coded in onfh's private coding scheme :data:`ONFH_SCHEME`,
declared in each document's Coding Scheme Identification.
"""

from __future__ import annotations

import warnings
from collections.abc import MutableSequence
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.io.readers import LPS_TO_RAS, one_line
from pipeline.masks.segments import (
    CODE_MEANINGS,
    HEAD_SEGMENT_NAME,
    LESION_SEGMENT_NAME,
    SCT_FEMORAL_HEAD,
    SCT_MORPHOLOGICALLY_ABNORMAL,
    SCT_NECROSIS,
    Segment,
)

SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"

#: SOP classes of DICOM Segmentations: Segmentation Storage (BINARY, FRACTIONAL) and Label Map
#: Segmentation Storage (LABELMAP).
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")

# codes ------------------------------------------------------------------------------------
# (coding scheme designator, code value, code meaning)
#: CID 7150 Segmentation Property Categories: "Anatomical Structure" (PS3.16 gives SCT 91723000;
#: 123037004, which older 3D Slicer terminologies write, is "Body structure" there).
SCT_CATEGORY_ANATOMICAL_STRUCTURE = ("SCT", "91723000", "Anatomical Structure")
#: CID 7150: "Morphologically Abnormal Structure".
SCT_CATEGORY_MORPHOLOGICALLY_ABNORMAL = (*SCT_MORPHOLOGICALLY_ABNORMAL, "Morphologically Abnormal Structure")
#: Segmented property type of segment 1 (CID 7304 and others): "Head of Femur".
SCT_TYPE_FEMORAL_HEAD = (*SCT_FEMORAL_HEAD, CODE_MEANINGS[SCT_FEMORAL_HEAD])
#: Segmented property type of segment 2 (CID 7194, Morphologically Abnormal Structure Segmentation
#: Property Types; also CID 7159): "Necrosis".
SCT_TYPE_NECROSIS = (*SCT_NECROSIS, CODE_MEANINGS[SCT_NECROSIS])
#: CID 244 Laterality.
SCT_RIGHT = ("SCT", "24028007", "Right")
SCT_LEFT = ("SCT", "7771000", "Left")
#: CID 7469 Generic Intensity and Size Measurements: "Volume".
SCT_VOLUME = ("SCT", "118565006", "Volume")
#: CID 7162 Surface Processing Algorithm Families (onfh's segmentation: thresholds, morphology).
DCM_FAMILY_MORPHOLOGICAL = ("DCM", "123104", "Morphological Operations")

#: onfh's private coding scheme (PS3.3 8.2: designators starting "99" are private).
ONFH_SCHEME = "99ONFH"
ONFH_SCHEME_NAME = "onfh femoral-head osteonecrosis volumetry"
ONFH_NECROTIC_FRACTION = (ONFH_SCHEME, "NF", "Necrotic fraction of the femoral head")
ONFH_CNA = (ONFH_SCHEME, "CNA", "Combined necrotic angle")
ONFH_JIC_TYPE = (ONFH_SCHEME, "JIC", "JIC type (mid-coronal plane)")
ONFH_SIZE_CLASS = (ONFH_SCHEME, "SIZE", "Necrotic size class (NF < 15, 15-30, > 30 %)")
ONFH_REGENERATION = (ONFH_SCHEME, "REGEN", "Regeneration of the necrotic lesion since baseline")
#: Measurement methods (docs/method.md sections 3-5).
ONFH_METHOD_VOXEL_VOLUME = (ONFH_SCHEME, "M-VOX", "Voxel count x voxel volume on the image grid")
ONFH_METHOD_NF = (ONFH_SCHEME, "M-NF", "100 x lesion voxel volume / head voxel volume")
ONFH_METHOD_CNA = (ONFH_SCHEME, "M-CNA", "Coronal + sagittal necrotic arc on head-frame mid-planes")
ONFH_METHOD_REGENERATION = (ONFH_SCHEME, "M-REGEN", "100 x (baseline - follow-up lesion volume) / baseline")
#: UCUM units (meanings of "%" and "deg" as CID 7181 / 7183 spell them).
UCUM_ML = ("UCUM", "ml", "milliliter")
UCUM_PERCENT = ("UCUM", "%", "Percent")
UCUM_DEGREE = ("UCUM", "deg", "Degree")

#: Series numbers of the written series (high, so that they sort after the acquisitions).
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
#: Segment numbers.
HEAD_SEGMENT_NUMBER = 1
LESION_SEGMENT_NUMBER = 2
#: Display colours (RGB 0-255): head green, lesion red, as in qc.png.
HEAD_RGB = (51, 209, 122)
LESION_RGB = (255, 64, 64)

#: Source attributes kept besides the Patient and Study modules: what identifies the instances
#: and places their pixels (Frame of Reference, Image Plane, pixel description, functional groups).
REFERENCE_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "DimensionOrganizationSequence",
)
#: Type 2 Patient and Study attributes highdicom reads from the source: present (empty) when the
#: source lacks them, as the standard allows.
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _code(triple):
    from pydicom.sr.coding import Code

    scheme, value, meaning = triple
    return Code(value, scheme, meaning)


def _laterality(side: str):
    return _code(SCT_RIGHT if side == "right" else SCT_LEFT)


def _private(kind: str, value: str):
    """A qualitative value in onfh's scheme, e.g. ("JIC", "C1") -> 99ONFH "JIC-C1"."""
    return _code((ONFH_SCHEME, f"{kind}-{value}", f"{'JIC type' if kind == 'JIC' else 'Size class'} {value}"))


# source instances -----------------------------------------------------------------------------
def is_dicom_scan(scan) -> bool:
    """Whether ``scan`` was read from DICOM (the only input a SEG or SR can refer to)."""
    return str(scan.meta.get("format", "")).startswith("dicom")


def _reference_dataset(ds):
    """The part of a source header the SEG and SR may carry: Patient and Study modules (as
    highdicom copies them) and the instance identity and geometry; nothing else."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
    from pydicom.dataset import Dataset, FileMetaDataset

    ref = Dataset()
    keep = set(REFERENCE_KEYWORDS) | set(TYPE2_KEYWORDS)
    modules = get_module_attribute_map()
    iod = get_sop_class_iod_map().get(str(ds.get("SOPClassUID", "")))
    if iod is not None:
        for module in get_iod_module_map()[iod]:
            if module["ie"] in ("Patient", "Study"):
                keep.update(str(item["keyword"]) for item in modules[module["key"]] if not item["path"])
    for keyword in sorted(keep):
        if keyword in ds:
            ref[keyword] = ds[keyword]
    for keyword in TYPE2_KEYWORDS:
        if keyword not in ref:
            setattr(ref, keyword, "")
    ref.file_meta = FileMetaDataset()
    ref.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # what highdicom writes; headers are parsed already
    return ref


def source_instances(scan) -> tuple[list, np.ndarray]:
    """The reduced source datasets (:func:`_reference_dataset`) and, per SEG frame position, the
    source slice it lies on.

    Returns ``(datasets, slice_of_frame)``: for a classic series one dataset per slice in the
    file's slice order (frame k on slice k); for one Enhanced multi-frame file the one dataset and
    the slice of each of its frames (frame numbers are the file's).

    Raises
    ------
    InputError
        Not DICOM, no geometry in the header (read with --spacing), source files changed since
        they were read, or several multi-frame files.
    """
    import pydicom

    if not is_dicom_scan(scan):
        raise InputError("a DICOM SEG refers to DICOM source images: the input is not DICOM")
    uids = list(scan.meta.get("slice_sop_uids") or [])
    frames = list(scan.meta.get("slice_frame_numbers") or [])
    if not uids or len(uids) != scan.source_shape[2] or not all(uids):
        raise InputError("the DICOM series has no SOPInstanceUID for every slice: cannot write a DICOM SEG")
    by_uid = {}
    for name in scan.meta.get("files") or []:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(name, stop_before_pixels=True)
        except Exception as exc:
            raise InputError(f"cannot re-read DICOM file {Path(name).name} for the DICOM SEG: "
                             f"{one_line(exc, 100) or type(exc).__name__}") from None
        by_uid[str(ds.get("SOPInstanceUID", ""))] = ds
    missing = [u for u in dict.fromkeys(uids) if u not in by_uid]
    if missing:
        raise InputError(f"DICOM instance {missing[0]} is no longer among the series' files: cannot write a DICOM SEG")
    first = by_uid[uids[0]]
    if "ImagePositionPatient" not in first and "PerFrameFunctionalGroupsSequence" not in first:
        raise InputError("the DICOM series has no geometry in its header (read with --spacing): a DICOM SEG "
                         "cannot be placed on it")
    if all(f is None for f in frames):
        return [_reference_dataset(by_uid[u]) for u in uids], np.arange(len(uids))
    if len(set(uids)) != 1:
        raise InputError("the DICOM series spreads its slices over several multi-frame files: writing a DICOM "
                         "SEG for it is not supported")
    n = int(first.get("NumberOfFrames", 1) or 1)
    slice_of_frame = np.full(n, -1)
    for k, f in enumerate(frames):
        slice_of_frame[int(f) - 1] = k
    if (slice_of_frame < 0).any():
        raise InputError("the multi-frame DICOM file has frames that are no slice of the volume: writing a DICOM "
                         "SEG for it is not supported")
    return [_reference_dataset(first)], slice_of_frame


def _frames(mask: np.ndarray, scan, slice_of_frame: np.ndarray) -> np.ndarray:
    """A canonical-grid mask as SEG frames (frames, rows, columns): the file's own voxel order
    (columns, rows, slices) transposed, slices in source-frame order."""
    source = scan.to_source(np.asarray(mask, dtype=np.uint8))
    return np.ascontiguousarray(source.transpose(2, 1, 0)[slice_of_frame])


# writing ----------------------------------------------------------------------------------------
def algorithm_types(mask_source: str) -> tuple[str, str]:
    """The SEG algorithm types of the head and the lesion for a mask source
    (:func:`pipeline.masks.labels.mask_source`): MANUAL for masks the user gave, AUTOMATIC for
    onfh's segmentation, SEMIAUTOMATIC for a head onfh isolated from the user's femur mask."""
    return {
        "labels": ("MANUAL", "MANUAL"),
        "masks": ("MANUAL", "MANUAL"),
        "femur": ("SEMIAUTOMATIC", "MANUAL"),
        "femur+auto": ("SEMIAUTOMATIC", "AUTOMATIC"),
        "automatic": ("AUTOMATIC", "AUTOMATIC"),
    }[mask_source]


def _segment_description(number: int, label: str, category, kind, algorithm_type: str, side: str, rgb,
                         tracking_uid: str):
    import highdicom as hd

    algorithm = None
    if algorithm_type != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(name="onfh", family=_code(DCM_FAMILY_MORPHOLOGICAL),
                                                       version=__version__, source="onfh")
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=_code(category),
        segmented_property_type=_code(kind), algorithm_type=algorithm_type,
        algorithm_identification=algorithm, tracking_uid=tracking_uid, tracking_id=label,
        anatomic_regions=[_code(SCT_TYPE_FEMORAL_HEAD)] if number != HEAD_SEGMENT_NUMBER else None,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )
    # laterality as a modifier of the property type (head) or of the anatomic region (lesion)
    modifier = hd.sr.CodedConcept.from_code(_laterality(side))
    if number == HEAD_SEGMENT_NUMBER:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    else:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [modifier]
    return description


def write_seg(path: str | Path, scan, head: np.ndarray, lesion: np.ndarray, side: str, mask_source: str,
              sources=None):
    """Write the head (lesion included) and the lesion as a BINARY DICOM Segmentation.

    Parameters
    ----------
    path : path
    scan : Scan
        Read from DICOM; its ``meta`` names the source files and the instance of every slice.
    head, lesion : ndarray of bool on ``scan``'s canonical grid
        The head as measured (its lesion is part of it, and is added to it here in any case).
    side : {"left", "right"}
    mask_source : str
        :func:`pipeline.masks.labels.mask_source`: sets each segment's algorithm type.
    sources : (datasets, slice_of_frame), optional
        :func:`source_instances`, when already read.

    Returns
    -------
    highdicom.seg.Segmentation
        The written dataset (for the SR's references).

    Raises
    ------
    InputError
        Not DICOM, or the series cannot be referenced (see :func:`source_instances`).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    datasets, slice_of_frame = sources or source_instances(scan)
    head = np.asarray(head, bool) | np.asarray(lesion, bool)
    pixels = np.stack([_frames(head, scan, slice_of_frame), _frames(lesion, scan, slice_of_frame)], axis=-1)
    head_type, lesion_type = algorithm_types(mask_source)
    descriptions = [
        _segment_description(HEAD_SEGMENT_NUMBER, HEAD_SEGMENT_NAME, SCT_CATEGORY_ANATOMICAL_STRUCTURE,
                             SCT_TYPE_FEMORAL_HEAD, head_type, side, HEAD_RGB, generate_uid()),
        _segment_description(LESION_SEGMENT_NUMBER, LESION_SEGMENT_NAME, SCT_CATEGORY_MORPHOLOGICALLY_ABNORMAL,
                             SCT_TYPE_NECROSIS, lesion_type, side, LESION_RGB, generate_uid()),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="onfh",
            manufacturer_model_name="onfh", software_versions=__version__, device_serial_number=__version__,
            content_label="ONFH", content_description=f"{side} femoral head and necrotic lesion",
            series_description=f"onfh {side} femoral head and necrosis",
        )
    seg.save_as(str(path))
    return seg


def _num(name, value: float, unit, method):
    import highdicom as hd

    return hd.sr.Measurement(name=_code(name), value=float(value), unit=_code(unit), method=_code(method))


def _group(seg, number: int, label: str, kind, category, side: str, measurements, evaluations):
    import highdicom as hd

    description = next(d for d in seg.SegmentSequence if int(d.SegmentNumber) == number)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=str(description.TrackingUID), identifier=label),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        ),
        finding_type=_code(kind), finding_category=_code(category),
        finding_sites=[hd.sr.FindingSite(anatomic_location=_code(SCT_TYPE_FEMORAL_HEAD),
                                         laterality=_laterality(side))],
        algorithm_id=hd.sr.AlgorithmIdentification(name="onfh", version=__version__),
        measurements=measurements or None, qualitative_evaluations=evaluations or None,
    )


def write_sr(path: str | Path, result, seg, sources, regeneration_pct: float | None = None):
    """Write the figures of one hip as a Comprehensive 3D SR (TID 1500 Measurement Report).

    Parameters
    ----------
    path : path
    result : HipMetrics
        The figures as ``metrics.json`` holds them (rounded to its 6 decimals).
    seg : highdicom.seg.Segmentation
        :func:`write_seg`'s dataset: each measurement group references one of its segments.
    sources : (datasets, slice_of_frame)
        :func:`source_instances`: the evidence, and the Patient and Study modules.
    regeneration_pct : float, optional
        A follow-up's regeneration since the baseline, %.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    side = result.side
    head_measurements = []
    if result.head_volume_ml is not None:
        head_measurements.append(_num(SCT_VOLUME, result.head_volume_ml, UCUM_ML, ONFH_METHOD_VOXEL_VOLUME))
    lesion_measurements, evaluations = [], []
    for name, value, unit, method in (
        (SCT_VOLUME, result.lesion_volume_ml, UCUM_ML, ONFH_METHOD_VOXEL_VOLUME),
        (ONFH_NECROTIC_FRACTION, result.necrotic_fraction_pct, UCUM_PERCENT, ONFH_METHOD_NF),
        (ONFH_CNA, result.cna_deg, UCUM_DEGREE, ONFH_METHOD_CNA),
        (ONFH_REGENERATION, regeneration_pct, UCUM_PERCENT, ONFH_METHOD_REGENERATION),
    ):
        if value is not None:
            lesion_measurements.append(_num(name, value, unit, method))
    for name, kind, value in ((ONFH_JIC_TYPE, "JIC", result.jic_type), (ONFH_SIZE_CLASS, "SIZE", result.size_class)):
        if value is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(name=_code(name), value=_private(kind, str(value))))
    groups = [
        _group(seg, HEAD_SEGMENT_NUMBER, HEAD_SEGMENT_NAME, SCT_TYPE_FEMORAL_HEAD, SCT_CATEGORY_ANATOMICAL_STRUCTURE,
               side, head_measurements, []),
        _group(seg, LESION_SEGMENT_NUMBER, LESION_SEGMENT_NAME, SCT_TYPE_NECROSIS,
               SCT_CATEGORY_MORPHOLOGICALLY_ABNORMAL, side, lesion_measurements, evaluations),
    ]
    datasets, _ = sources
    modality = str(datasets[0].get("Modality", ""))
    procedure = {"MR": codes.LN.MRIUnspecifiedBodyRegion, "CT": codes.LN.CTUnspecifiedBodyRegion}.get(
        modality, codes.SCT.ImagingProcedure)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["onfh", __version__]),  # the same device UID for every report
            name="onfh", manufacturer_name="onfh", model_name=f"onfh {__version__}"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure, imaging_measurements=groups,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*datasets, seg], content=report[0], series_instance_uid=generate_uid(),
            series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="onfh", is_complete=True, is_final=False, is_verified=False,
            series_description=f"onfh {side} femoral head measurements",
        )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = ONFH_SCHEME
    scheme.CodingSchemeName = ONFH_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "onfh"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.save_as(str(path))
    return sr


def mask_source_of(segmentation: dict | None) -> str:
    """The mask source (:func:`pipeline.masks.labels.mask_source`) a segmentation record tells:
    "automatic", "femur+auto" (an automatic lesion in a head isolated from the user's femur mask),
    "femur", or "labels" for masks the user gave (label map, masks, 3D Slicer, DICOM SEG, or
    labels edited in napari)."""
    method = str((segmentation or {}).get("method", ""))
    if method == "automatic":
        return "automatic"
    if "lesion segmented automatically" in method:
        return "femur+auto"
    if method.startswith("head isolated"):
        return "femur"
    return "labels"


def check_dicom_input(image) -> None:
    """Refuse ``--dicom-seg`` (``outputs.dicom_seg``) for an input that is not DICOM, before any work."""
    from pipeline.io.scan import image_format

    fmt = image_format(Path(image))
    if fmt != "dicom":
        raise InputError(f"--dicom-seg (outputs.dicom_seg) writes a DICOM SEG and SR for DICOM input only: "
                         f"{Path(image).name} is {fmt.upper() if fmt != 'nifti' else 'NIfTI'}")


def write_dicom_outputs(folder: Path, analysis, regeneration_pct: float | None = None, prefix: str = "") -> list[str]:
    """``seg.dcm`` and ``sr.dcm`` (names after ``prefix``) of one analysed hip into ``folder``;
    returns the names written. Segment algorithm types follow the analysis' segmentation record
    (:func:`mask_source_of`); the SR holds the figures as ``metrics.json`` writes them."""
    from pipeline.measures.results import HipMetrics

    sources = source_instances(analysis.scan)
    seg = write_seg(folder / f"{prefix}{SEG_FILE}", analysis.scan, analysis.head, analysis.lesion,
                    analysis.result.side, mask_source_of(analysis.result.segmentation), sources)
    # the figures exactly as metrics.json writes them (rounded)
    written = HipMetrics.from_json(analysis.result.to_json())
    write_sr(folder / f"{prefix}{SR_FILE}", written, seg, sources, regeneration_pct)
    return [f"{prefix}{SEG_FILE}", f"{prefix}{SR_FILE}"]


# reading ----------------------------------------------------------------------------------------
def is_dicom_seg(path: str | Path) -> bool:
    """A DICOM Segmentation file (Modality SEG or a Segmentation SOP class)."""
    path = Path(path)
    if not path.is_file():
        return False
    from pipeline.io.scan import image_format

    if image_format(path) != "dicom":
        return False
    import pydicom  # here: a NIfTI or NRRD label map never pays pydicom's import

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "Modality"])
    except Exception:
        return False
    return str(ds.get("Modality", "")) == "SEG" or str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def _first(item, keyword):
    seq = item.get(keyword) if item is not None else None
    return seq[0] if seq else None


def _frame_group(ds, i: int, sequence: str):
    """Item of a functional-group ``sequence`` for frame ``i``: per-frame first, then shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    item = _first(per[i], sequence) if per is not None and i < len(per) else None
    if item is None:
        item = _first(_first(ds, "SharedFunctionalGroupsSequence"), sequence)
    return item


def _frame_references(ds, i: int) -> set[tuple[str, int | None]]:
    """(ReferencedSOPInstanceUID, ReferencedFrameNumber or None) of the source images of frame i."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    items = [per[i]] if per is not None and i < len(per) else []
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        items.append(shared)
    refs = set()
    for item in items:
        for derivation in item.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                uid = str(source.get("ReferencedSOPInstanceUID", "") or "")
                numbers = source.get("ReferencedFrameNumber")
                if numbers is None or numbers == "":
                    refs.add((uid, None))
                else:
                    refs.update((uid, int(n)) for n in (numbers if isinstance(numbers, MutableSequence) else [numbers]))
        if refs:
            break
    return refs


def _slices_by_reference(ds, scan, n: int) -> np.ndarray | None:
    """Source slice of each SEG frame through its referenced instance; None when some frame
    references no single slice of the scan."""
    uids = scan.meta.get("slice_sop_uids") or []
    frames = scan.meta.get("slice_frame_numbers") or [None] * len(uids)
    if not uids:
        return None
    slice_of = {}
    for k, (uid, f) in enumerate(zip(uids, frames)):
        slice_of[(uid, f)] = k
        if f is None:
            slice_of[(uid, 1)] = k  # a single-frame instance may be referenced as its frame 1
    out = np.full(n, -1)
    for i in range(n):
        hits = {slice_of[r] for r in _frame_references(ds, i) if r in slice_of}
        if len(hits) != 1:
            return None
        out[i] = hits.pop()
    return out


def _slices_by_position(ds, scan, n: int, name: str, tolerance_mm: float) -> np.ndarray:
    """Source slice of each SEG frame through its plane position and orientation.

    Raises
    ------
    InputError
        A frame without position, or off the image's slices, orientation or pixel spacing.
    """
    source = scan.source_affine
    spacing = np.linalg.norm(source[:3, :3], axis=0)
    axes = source[:3, :3] / spacing
    inverse = np.linalg.inv(source)
    out = np.full(n, -1)
    for i in range(n):
        position = _frame_group(ds, i, "PlanePositionSequence")
        orientation = _frame_group(ds, i, "PlaneOrientationSequence")
        measures = _frame_group(ds, i, "PixelMeasuresSequence")
        try:
            ipp = np.array([float(v) for v in position.ImagePositionPatient])
            iop = np.array([float(v) for v in orientation.ImageOrientationPatient])
            ps = np.array([float(v) for v in measures.PixelSpacing])
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"{name}: frame {i + 1} references no image of the series and has no plane "
                             "position, orientation and pixel spacing: cannot place it on the image") from None
        rows_dir = (LPS_TO_RAS[:3, :3] @ iop[:3])  # along a row: the source's first axis
        cols_dir = (LPS_TO_RAS[:3, :3] @ iop[3:])
        if (np.abs(rows_dir - axes[:, 0]).max() > tolerance_mm / 100
                or np.abs(cols_dir - axes[:, 1]).max() > tolerance_mm / 100):
            raise InputError(f"{name}: frame {i + 1} is not in the plane of the image's slices (its "
                             "ImageOrientationPatient differs): cannot place it on the image")
        if np.abs(ps[::-1] - spacing[:2]).max() > tolerance_mm:
            raise InputError(f"{name}: frame {i + 1} has pixel spacing {ps.round(4).tolist()} mm, the image "
                             f"{spacing[1::-1].round(4).tolist()} mm")
        index = (inverse @ np.append(LPS_TO_RAS[:3, :3] @ ipp, 1.0))[:3]
        k = int(round(index[2]))
        off = np.array([index[0], index[1], index[2] - k])
        miss = float(np.linalg.norm(source[:3, :3] @ off))
        if miss > tolerance_mm or not 0 <= k < scan.source_shape[2]:
            raise InputError(f"{name}: frame {i + 1} lies {miss:.3f} mm off the image's slices"
                             + ("" if 0 <= k < scan.source_shape[2] else " (outside the image)")
                             + ": a segmentation of another series or grid?")
        out[i] = k
    return out


def _open_seg(path: Path):
    """(dataset, name for messages, SegmentationType) of a DICOM Segmentation file.

    Raises
    ------
    InputError
        Unreadable file, not a segmentation, or a SegmentationType other than BINARY,
        FRACTIONAL or LABELMAP.
    """
    import pydicom

    name = f"DICOM SEG {path.name}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"cannot read {name}: {one_line(exc, 100) or type(exc).__name__}") from None
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES and str(ds.get("Modality", "")) != "SEG":
        raise InputError(f"{path.name} is a DICOM {ds.get('Modality', '')} object, not a segmentation")
    kind = str(ds.get("SegmentationType", "") or "")
    if kind not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InputError(f"{name} has SegmentationType {kind or '(none)'}: expected BINARY, FRACTIONAL or LABELMAP")
    return ds, name, kind


def _rgb(item) -> tuple[float, float, float] | None:
    """RecommendedDisplayCIELabValue as RGB in 0-1 (as 3D Slicer's colours are), or None."""
    value = item.get("RecommendedDisplayCIELabValue")
    if value is None or len(value) != 3:
        return None
    try:
        from highdicom.color import CIELabColor

        return tuple(c / 255.0 for c in CIELabColor.from_dicom_value(tuple(int(v) for v in value)).to_rgb(clip=True))
    except (TypeError, ValueError):
        return None


def _segments_on(ds, name: str, kind: str, slices: np.ndarray, shape: tuple[int, int, int],
                 to_canonical) -> list[Segment]:
    """The segments of an open SEG whose frame i lies on slice ``slices[i]`` of a grid.

    Parameters
    ----------
    ds : pydicom.Dataset
        The SEG (:func:`_open_seg`).
    name : str
        The file as named in messages.
    kind : {"BINARY", "FRACTIONAL", "LABELMAP"}
    slices : ndarray of int, shape (frames,)
        The slice (third index of the grid in its own voxel order) of every frame.
    shape : (columns, rows, slices)
        The grid in its own voxel order; frames are (rows, columns).
    to_canonical : callable
        Puts an array of ``shape`` into the canonical order the masks are returned in
        (``Scan.from_source_order``).

    Returns
    -------
    list of Segment
        One per SegmentSequence item, masks read on demand; a FRACTIONAL segment counts where
        its value is at least half its maximum.

    Raises
    ------
    InputError
        A frame that names no segment, undecodable pixels, or no segments at all.
    """
    n = len(slices)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    numbers = np.zeros(n, dtype=int)  # the segment of each frame (BINARY, FRACTIONAL)
    if kind != "LABELMAP":
        for i in range(n):
            ident = _first(per[i], "SegmentIdentificationSequence") if per is not None and i < len(per) else None
            ident = ident or _first(_first(ds, "SharedFunctionalGroupsSequence"), "SegmentIdentificationSequence")
            if ident is None:
                raise InputError(f"{name}: frame {i + 1} names no segment (SegmentIdentificationSequence)")
            numbers[i] = int(ident.ReferencedSegmentNumber)
    cache: dict = {}

    def pixels() -> np.ndarray:
        if "frames" not in cache:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    array = np.asarray(ds.pixel_array)
            except Exception as exc:
                raise InputError(f"cannot decode the pixel data of {name}: "
                                 f"{one_line(exc, 100) or type(exc).__name__}") from None
            cache["frames"] = array.reshape(n, rows, cols)
        return cache["frames"]

    threshold = None
    if kind == "FRACTIONAL":
        threshold = float(ds.get("MaximumFractionalValue", 255) or 255) / 2.0

    def load(number: int) -> np.ndarray:
        frames = pixels()
        volume = np.zeros(shape, dtype=bool)
        for i in range(n):
            if kind == "LABELMAP":
                plane = frames[i] == number
            elif numbers[i] != number:
                continue
            else:
                plane = frames[i] >= threshold if threshold is not None else frames[i] != 0
            volume[:, :, slices[i]] |= plane.T
        return to_canonical(volume)

    segments = []
    for item in ds.get("SegmentSequence") or []:
        number = int(item.SegmentNumber)
        kind_code = _first(item, "SegmentedPropertyTypeCodeSequence")
        category = _first(item, "SegmentedPropertyCategoryCodeSequence")
        code = (str(kind_code.CodingSchemeDesignator), str(kind_code.CodeValue)) if kind_code is not None else None
        meta = {"segment_number": number, "algorithm_type": str(item.get("SegmentAlgorithmType", "") or "")}
        if kind_code is not None:
            meta["code_meaning"] = str(kind_code.get("CodeMeaning", ""))
        if category is not None:
            meta["category"] = [str(category.CodingSchemeDesignator), str(category.CodeValue),
                                str(category.get("CodeMeaning", ""))]
        if _rgb(item) is not None:
            meta["color"] = _rgb(item)
        segments.append(Segment(name=str(item.get("SegmentLabel", "") or f"segment {number}"), code=code,
                                label_value=number, layer=0, meta=meta,
                                load=lambda number=number: load(number)))
    if not segments:
        raise InputError(f"{name} describes no segments (SegmentSequence)")
    return segments


def read_dicom_seg(path: str | Path, scan, tolerance_mm: float = 0.01) -> list[Segment]:
    """The segments of a DICOM Segmentation (BINARY, FRACTIONAL or LABELMAP) on ``scan``'s grid.

    Each frame is placed on the image slice of the source instance it references
    (ReferencedSOPInstanceUID, and ReferencedFrameNumber for a multi-frame source, against
    ``scan.meta["slice_sop_uids"]``) or, when some frame references none of them, by its plane
    position and orientation, which must then lie on the image's slices within ``tolerance_mm``.
    A FRACTIONAL segment counts where its value is at least half its maximum.

    Returns
    -------
    list of Segment
        One per SegmentSequence item: its label, property-type code, segment number; the masks
        are read on demand (``Segment.get_mask``) on the canonical grid.

    Raises
    ------
    InputError
        Unreadable file, not a segmentation, a SEG of another series (ReferencedSeriesSequence),
        frames of another size, or frames that cannot be placed on the image.
    """
    path = Path(path)
    ds, name, kind = _open_seg(path)
    series = [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence") or []]
    own = str(scan.meta.get("series_uid", "") or "")
    if own and series and own not in series:
        raise InputError(f"{name} segments series {series[0]}, not the image's series {own}: give the SEG of "
                         "this series")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    shape = scan.source_shape
    if (cols, rows) != shape[:2]:
        raise InputError(f"{name} has frames of {cols}x{rows} pixels, the image's slices are {shape[0]}x{shape[1]}")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    slices = _slices_by_reference(ds, scan, n) if own else None
    if slices is None:
        slices = _slices_by_position(ds, scan, n, name, tolerance_mm)
    return _segments_on(ds, name, kind, slices, shape, scan.from_source_order)


def _own_slices(ds, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The grid a SEG's frames span, from their own plane positions: (RAS affine of the grid in
    (columns, rows, slices) voxel order, slice of every frame).

    The frames are checked as the DICOM loader checks an Enhanced image's (pipeline/io/dicom.py:
    ``_frames``, ``_check_orientations``, ``_in_plane_axes``, ``_slice_drift``), except that frames
    of different segments may share a position and positions may be missing (empty frames are
    usually left out): every position must then lie on one even grid of slices, whose step is
    the frames' SpacingBetweenSlices or else the smallest step between their positions (within
    the loader's tolerance, 5 % of a step). The grid's step is then the distance from the lowest
    to the highest position over the number of steps between them (as the loader takes a
    series' step from its positions), its origin the lowest frame's ImagePositionPatient.

    Raises
    ------
    InputError
        A frame without position, orientation or pixel spacing; mixed orientations or pixel
        spacings; positions off an even grid; tilted or shifted slices; one plane of unknown
        thickness.
    """
    from pipeline.io import dicom as loader

    frames = loader._frames([loader._File(path, ds)])
    if not frames:
        raise InputError(f"{name} has no frames")
    for tag, attr in (("ImagePositionPatient (PlanePositionSequence)", "ipp"),
                      ("ImageOrientationPatient (PlaneOrientationSequence)", "iop"),
                      ("PixelSpacing (PixelMeasuresSequence)", "pixel_spacing")):
        missing = next((f for f in frames if getattr(f, attr) is None), None)
        if missing is not None:
            raise InputError(f"{name}: {missing.label} has no {tag}: the SEG cannot be placed without its "
                             "source series (open it together with the series' images)")
    loader._check_orientations(frames, name)
    row, col, normal, pixel_spacing = loader._in_plane_axes(frames, name)
    ipp = np.array([f.ipp for f in frames])
    d = ipp @ normal
    order = [int(i) for i in np.argsort(d, kind="stable")]
    depth = d - d[order[0]]
    # frames of several segments share a position: the step is between distinct positions
    along = depth[order]
    distinct = along[np.concatenate([[True], np.diff(along) >= loader.SAME_POSITION_MM])]
    spacing = _spacing_between_slices(ds)
    if spacing is None and len(distinct) > 1:
        spacing = float(np.diff(distinct).min())
    if spacing is None:
        # one plane: no step places a frame, but the voxels still need a depth in mm
        spacing = _float_or_none(_frame_group(ds, 0, "PixelMeasuresSequence"), "SliceThickness")
        if spacing is None:
            raise InputError(f"{name} has frames in one plane only and no SpacingBetweenSlices or SliceThickness: "
                             "the depth of its voxels is unknown")
    index = depth / spacing
    off = np.abs(index - np.round(index)) * spacing
    tolerance = max(loader.STEP_TOLERANCE_MM, 0.05 * spacing)
    if off.max() > tolerance:
        k = int(np.argmax(off))
        raise InputError(f"{name}: {frames[k].label} lies {off[k]:.3f} mm off an even grid of {spacing:.4g} mm "
                         "slice steps (uneven spacing): refusing to stack its frames as one volume")
    index = np.round(index).astype(int)
    if index.max() > 0:
        # the step the positions span, as the loader takes a series' (a rounded header value
        # would put the far slices of a long slab off their frames)
        spacing = float(depth.max() / index.max())
    if len(distinct) > 1:
        drift = loader._slice_drift(ipp[order], d[order], normal, pixel_spacing)
        if drift.tilted:
            loader._refuse_tilt(frames, order, drift, spacing, name)
    else:
        shift = np.linalg.norm(ipp - ipp[order[0]], axis=1)
        if shift.max() > loader.TILT_TOLERANCE_PIXELS * pixel_spacing.min():
            k = int(np.argmax(shift))
            raise InputError(f"{name}: {frames[k].label} is shifted {shift[k]:.2f} mm in-plane from the other "
                             "frames of its plane: not one volume")
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = ipp[order[0]]
    return LPS_TO_RAS @ lps, index


def _float_or_none(item, keyword: str) -> float | None:
    try:
        value = float(item.get(keyword)) if item is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and np.isfinite(value) and value > 0 else None


def _spacing_between_slices(ds) -> float | None:
    """The SEG's SpacingBetweenSlices (shared or per-frame PixelMeasuresSequence), mm; None when
    absent, zero (which some writers use for "unknown") or not the same for every frame."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    values = {_float_or_none(_frame_group(ds, i, "PixelMeasuresSequence"), "SpacingBetweenSlices") for i in range(n)}
    return values.pop() if len(values) == 1 else None


def read_dicom_seg_own_grid(path: str | Path) -> tuple:
    """A DICOM Segmentation on the grid its own frames span, without the source series.

    For a viewer opening the SEG alone (napari): the frames' plane positions, orientation and
    pixel spacing (functional groups, per-frame or shared) give the grid (:func:`_own_slices`),
    from the lowest to the highest frame position along the slice normal, whatever the order of
    the frames in the file; positions without a frame (empty frames left out) are empty slices.
    For onfh's own ``seg.dcm`` this is the source series' grid cut to the slices the segments
    touch: the same voxels in space, so it overlays the image (and pastes back onto it with
    :func:`pipeline.io.scan.place_on_grid`).

    Parameters
    ----------
    path : str or Path
        A BINARY, FRACTIONAL or LABELMAP DICOM SEG.

    Returns
    -------
    grid : Scan
        Canonical (closest-RAS) order, ``affine`` canonical voxel index -> RAS mm; ``data`` is
        zeros (the grid only); ``meta["format"]`` is "dicom-seg".
    segments : list of Segment
        As :func:`read_dicom_seg` gives them (names, SNOMED property codes, segment numbers as
        label values, display colours in ``meta["color"]``), masks on ``grid``.

    Raises
    ------
    InputError
        Not a readable segmentation, or frames that do not stack into one volume (see
        :func:`_own_slices`).
    """
    from pipeline.io.scan import Scan

    path = Path(path)
    ds, name, kind = _open_seg(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on header values: the checks here speak
        affine, slices = _own_slices(ds, path, name)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    shape = (cols, rows, int(slices.max()) + 1)
    try:
        grid = Scan.from_source(np.zeros(shape, np.uint8), affine,
                                {"path": str(path), "format": "dicom-seg", "warnings": []})
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    return grid, _segments_on(ds, name, kind, slices, shape, grid.from_source_order)
