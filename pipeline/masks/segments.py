"""Named segments: the vocabulary shared by every multi-segment format (3D Slicer, DICOM SEG).

A multi-segment file holds several named masks, each with an optional coded meaning
(terminology); which one is the femoral head and which the lesion is decided here, once for all
formats (:func:`pick_segments`), and the two masks become the usual label map
(:func:`label_map_from_segments`), so everything downstream is the label-map path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import Settings
from pipeline.errors import InputError

#: SNOMED CT (coding scheme designator "SCT") codes, verified against DICOM PS3.16:
#: "Head of Femur" 2812003 is in CID 7304 (Implant Target Anatomy), a body structure;
#: "Necrosis" 6574001 is in CID 7159 (Lesion Segmentation Type) and CID 7168, a morphologically
#: abnormal structure. onfh writes these codes and recognises them when reading.
SCT_FEMORAL_HEAD = ("SCT", "2812003")
SCT_NECROSIS = ("SCT", "6574001")
#: Their property categories (DICOM CID 7150, Segmentation Property Categories): 123037004
#: "Anatomical Structure" (as 3D Slicer writes it for anatomy) and 49755003 "Morphologically
#: Abnormal Structure".
SCT_ANATOMICAL_STRUCTURE = ("SCT", "123037004")
SCT_MORPHOLOGICALLY_ABNORMAL = ("SCT", "49755003")
#: Code meanings (as PS3.16 spells them).
CODE_MEANINGS = {SCT_FEMORAL_HEAD: "Head of Femur", SCT_NECROSIS: "Necrosis",
                 SCT_ANATOMICAL_STRUCTURE: "Anatomical Structure",
                 SCT_MORPHOLOGICALLY_ABNORMAL: "Morphologically Abnormal Structure"}
#: Category of each code onfh writes.
CATEGORY_OF = {SCT_FEMORAL_HEAD: SCT_ANATOMICAL_STRUCTURE, SCT_NECROSIS: SCT_MORPHOLOGICALLY_ABNORMAL}

#: Segment names recognised without an option (compared case-insensitively, whole name).
HEAD_NAMES = ("femoral head", "head", "femur head", "head of femur")
LESION_NAMES = ("necrosis", "necrotic lesion", "lesion", "osteonecrosis", "necrotic")
#: Codes recognised without an option.
HEAD_CODES = (SCT_FEMORAL_HEAD,)
LESION_CODES = (SCT_NECROSIS,)

#: The names onfh gives the segments it writes.
HEAD_SEGMENT_NAME = "Femoral head"
LESION_SEGMENT_NAME = "Necrosis"


@dataclass(eq=False)
class Segment:
    """One named segment of a multi-segment file.

    Attributes
    ----------
    name : str
        The segment's name as stored in the file.
    mask : ndarray of bool, optional
        The segment on the image's canonical grid; ``None`` until read (see ``load``).
    code : (str, str), optional
        Coded meaning of the segment: (coding scheme designator, code value), e.g.
        ``("SCT", "2812003")``; the property type (Slicer terminology, DICOM SEG).
    label_value : int, optional
        The value of the segment in its layer (Slicer ``labelValue``, DICOM segment number).
    layer : int, optional
        The layer (Slicer: 4th axis of an overlapping segmentation); 0 for one-layer files.
    meta : dict
        Anything else worth recording (code meaning, category, Slicer segment id...).
    load : callable, optional
        Returns the mask on demand when ``mask`` is None (only the picked segments are read).
    """

    name: str
    mask: np.ndarray | None = None
    code: tuple[str, str] | None = None
    label_value: int | None = None
    layer: int | None = None
    meta: dict = field(default_factory=dict)
    load: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def get_mask(self) -> np.ndarray:
        """The mask as bool on the image's canonical grid (loaded once)."""
        if self.mask is None:
            if self.load is None:
                raise InputError(f"segment {self.name!r} has no voxels to read")
            self.mask = np.asarray(self.load(), dtype=bool)
        return self.mask

    def record(self) -> dict:
        """What the segmentation record says about this segment (no voxels)."""
        out = {"name": self.name, "code": list(self.code) if self.code else None,
               "label_value": self.label_value, "layer": self.layer}
        if self.meta.get("code_meaning"):
            out["code_meaning"] = self.meta["code_meaning"]
        return out


def _name_and_code(item) -> tuple[str, tuple[str, str] | None]:
    if isinstance(item, Segment):
        return item.name, item.code
    if isinstance(item, str):
        return item, None
    name, code = item
    return str(name), (tuple(str(c) for c in code) if code else None)


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names) if names else "none"


def _pick_one(items, what: str, option: str, explicit: str | None, names: tuple, codes: tuple) -> int:
    listed = [n for n, _ in items]
    if explicit is not None:
        hits = [i for i, (n, _) in enumerate(items) if _norm(n) == _norm(explicit)]
        if not hits:
            raise InputError(f'no segment named "{explicit}" ({option}) among {_quoted(listed)}')
        if len(hits) > 1:
            raise InputError(f'{len(hits)} segments are named "{explicit}" ({option}): rename them so the name '
                             f"is unique")
        return hits[0]
    wanted = {_norm(n) for n in names}
    hits = [i for i, (n, c) in enumerate(items) if _norm(n) in wanted or (c is not None and c in codes)]
    if not hits:
        raise InputError(f"no {what} segment among {_quoted(listed)}: name it with {option}")
    if len(hits) > 1:
        raise InputError(f"{len(hits)} segments could be the {what} ({_quoted([listed[i] for i in hits])}): "
                         f"name one with {option}")
    return hits[0]


def pick_segments(
    names_and_codes: Sequence, head_segment: str | None = None, lesion_segment: str | None = None,
) -> tuple[int, int]:
    """Indices of the head and the lesion segment among a file's segments.

    A segment named by an option is found by its name (case-insensitive, whole name). Otherwise
    the head is the one segment named "Femoral head", "Head", "Femur head" or "Head of femur", or
    coded SNOMED CT 2812003 (head of femur); the lesion the one named "Necrosis", "Necrotic
    lesion", "Lesion", "Osteonecrosis" or "Necrotic", or coded SNOMED CT 6574001 (necrosis). The
    order of the segments and their label values play no part.

    Parameters
    ----------
    names_and_codes : sequence of Segment, (name, code) pairs or names
        ``code`` is (coding scheme designator, code value) or None.
    head_segment, lesion_segment : str, optional
        Names given by the user (``--head-segment``, ``--lesion-segment``).

    Returns
    -------
    head_index, lesion_index : int

    Raises
    ------
    InputError
        A segment missing or ambiguous, or one segment picked as both; the message lists the
        segment names found. A healthy head needs an (empty) lesion segment too.
    """
    items = [_name_and_code(x) for x in names_and_codes]
    head = _pick_one(items, "head", "--head-segment", head_segment, HEAD_NAMES, HEAD_CODES)
    lesion = _pick_one(items, "lesion", "--lesion-segment", lesion_segment, LESION_NAMES, LESION_CODES)
    if head == lesion:
        raise InputError(f'segment "{items[head][0]}" cannot be both the head and the lesion: name them with '
                         f"--head-segment and --lesion-segment")
    return head, lesion


def label_map_from_segments(head_mask: np.ndarray, lesion_mask: np.ndarray, settings: Settings) -> np.ndarray:
    """The usual label map from a head and a lesion segment.

    Head = head segment ∪ lesion segment (the lesion is part of the head), so a head drawn whole
    with the lesion inside it and a head drawn around the lesion give the same map:
    ``settings.labels.head`` in the head outside the lesion, ``settings.labels.lesion`` in the
    lesion, 0 elsewhere.
    """
    head_mask = np.asarray(head_mask, dtype=bool)
    lesion_mask = np.asarray(lesion_mask, dtype=bool)
    if head_mask.shape != lesion_mask.shape:
        raise InputError(f"head and lesion segments differ in shape: {head_mask.shape} vs {lesion_mask.shape}")
    top = max(settings.labels.head, settings.labels.lesion)
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    out = np.zeros(head_mask.shape, dtype)
    out[head_mask] = settings.labels.head
    out[lesion_mask] = settings.labels.lesion
    return out
