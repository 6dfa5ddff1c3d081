"""A femur mask that is a TotalSegmentator label map: ``femur_<side>`` and ``hip_<side>`` by name.

The user runs TotalSegmentator (onfh never downloads model weights). Its ``--ml`` output is one
map of every structure; a map given as ``--femur-mask`` gives the femur of the ``--side`` asked
(the head is isolated from it as from any femur mask) and the hip bone of that side (the
acetabulum for the weight-bearing span, unless ``--acetabulum-mask`` is given).

The label numbers changed between versions (femur_right is 89 in TotalSegmentator 1, 76 in the
CT task ``total`` of version 2, 37 in ``total_mr``), so the names are read where the file carries
them: the NIfTI header extension that TotalSegmentator writes with ``--ml`` (an XML
``CaretExtension`` whose ``LabelTable`` lists ``<Label Key="76">femur_right</Label>``, written by
its ``nifti_ext_header.add_label_map_to_nifti``), else a sidecar JSON beside the map. Only when the
file carries no names and holds more than one label are the documented numbers assumed
(:data:`NUMBERINGS`), which the segmentation record and a warning say. A binary mask (one label)
is the whole femur, as always.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.scan import Scan, load_labels

#: TotalSegmentator's documented label numbers of the femurs and hip bones (its
#: ``map_to_binary.class_map``), used only for a map without label names; ``max`` is the task's
#: largest label.
NUMBERINGS = {
    "total": {"description": "TotalSegmentator 2 'total' (CT)", "max": 117,
              "femur_left": 75, "femur_right": 76, "hip_left": 77, "hip_right": 78},
    "total_mr": {"description": "TotalSegmentator 2 'total_mr' (MR)", "max": 50,
                 "femur_left": 36, "femur_right": 37, "hip_left": 38, "hip_right": 39},
}

#: Names listed in a message; more are counted (a message stays one line).
MAX_LISTED_NAMES = 8

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class FemurMap:
    """What a ``--femur-mask`` file gives: the femur, and the hip bone of a multilabel map."""

    path: str
    femur: np.ndarray  # bool on the scan's grid
    hip: np.ndarray | None = None  # bool; a multilabel map's hip_<side>, when present
    record: dict | None = None  # which labels were used and where their names came from (None: binary)
    warnings: list[str] = field(default_factory=list)


def read_femur_mask(path, scan: Scan, side: str, tolerance_mm: float) -> FemurMap:
    """The femur (and hip bone) of ``side`` from a ``--femur-mask`` file on ``scan``'s grid.

    A binary mask (one non-zero value, no label table naming femurs or hip bones) is the femur,
    exactly as before. A label map is read by the names it carries (:func:`label_names`), else by
    TotalSegmentator's documented numbers (:data:`NUMBERINGS`: ``total`` when a value exceeds 50,
    ``total_mr`` otherwise), with a warning naming the numbering assumed.

    Raises
    ------
    InputError
        An empty mask; a map without ``femur_<side>`` (the message names the labels present);
        a map without names whose values are no TotalSegmentator labels.
    """
    from pipeline.masks.labels import present_labels

    name = Path(path).name
    data = load_labels(path, scan, tolerance_mm)
    present = present_labels(data)
    names, names_from, note = label_names(path)
    named = names is not None and any(n.startswith(("femur_", "hip_")) for n in names.values())
    if len(present) <= 1 and not named:  # a plain binary mask: the whole femur
        femur = data != 0
        if not femur.any():
            raise InputError(f"mask {name} is empty")
        return FemurMap(str(path), femur)
    femur_key, hip_key = f"femur_{side}", f"hip_{side}"
    warnings: list[str] = []
    if names is not None:
        femur_values = [v for v, n in names.items() if n == femur_key]
        hip_values = [v for v, n in names.items() if n == hip_key]
        where = "its label table"
        listing = _names_listing([names.get(v, str(v)) for v in present])
    else:
        table = _assumed_numbering(present, name)
        numbering = NUMBERINGS[table]
        femur_values, hip_values = [numbering[femur_key]], [numbering[hip_key]]
        names_from = f"assumed: {numbering['description']} numbering (the file carries no label names)"
        where = f"{numbering['description']} numbering, assumed: the file carries no label names"
        listing = _names_listing([str(v) for v in present])
        warnings.append(f"femur mask {name} carries no label names{note}: {numbering['description']} numbering "
                        f"assumed ({femur_key} = {femur_values[0]}, {hip_key} = {hip_values[0]}); check its version")
    femur_present = [v for v in femur_values if v in present]
    if not femur_present:
        label = f"label {femur_values[0]} of {where}" if femur_values else f"not in {where}"
        raise InputError(f"{femur_key} ({label}) is absent from femur mask {name} (labels present: {listing})")
    hip_present = [v for v in hip_values if v in present]
    femur = np.isin(data, femur_present)
    hip = np.isin(data, hip_present) if hip_present else None
    record = {
        "label_names": names_from,
        "femur": {"name": femur_key, "labels": femur_present},
        "hip": {"name": hip_key, "labels": hip_present} if hip_present else None,
    }
    return FemurMap(str(path), femur, hip, record, warnings)


def label_names(path) -> tuple[dict[int, str] | None, str | None, str]:
    """The label table a map file carries: ``({value: name}, where it came from, note)``.

    Looked up in order: a NIfTI header extension holding an XML label table (TotalSegmentator's
    ``CaretExtension``: ``<Label Key="N">name</Label>``) or a JSON object; then a sidecar JSON
    beside the map (``seg.json`` for ``seg.nii.gz``) mapping values to names (``{"76":
    "femur_right"}``, TotalSegmentator's class-map form) or names to values (``{"femur_right":
    76}``), at the top level or under ``"labels"``. Names are compared in lower case with spaces
    and hyphens as underscores. ``(None, None, note)`` when there is none; ``note`` says why a
    sidecar that exists was not used.
    """
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        table = _nifti_extension_table(path)
        if table:
            return table, "NIfTI header extension (label table)", ""
    stem = next((path.name[: -len(s)] for s in MAP_SUFFIXES if lower.endswith(s)), path.stem)
    sidecar = path.with_name(stem + ".json")
    if sidecar.is_file():
        try:
            table = _table_from_json(json.loads(sidecar.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError):
            table = None
        if table:
            return table, f"sidecar {sidecar.name}", ""
        return None, None, f" (sidecar {sidecar.name} holds no label table)"
    return None, None, ""


def _nifti_extension_table(path: Path) -> dict[int, str] | None:
    import nibabel as nib

    try:
        extensions = nib.load(str(path)).header.extensions
    except Exception:  # the voxels were read already: a header nibabel cannot parse has no table
        return None
    for ext in extensions:
        try:
            content = ext.get_content()
        except Exception:
            continue
        text = (content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)).strip("\x00 \n\r\t")
        table = None
        if text.startswith("<"):
            table = _table_from_xml(text)
        elif text.startswith("{"):
            try:
                table = _table_from_json(json.loads(text))
            except ValueError:
                table = None
        if table:
            return table
    return None


def _table_from_xml(text: str) -> dict[int, str] | None:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    table = {}
    for label in root.iter("Label"):
        key, name = label.get("Key"), (label.text or "").strip()
        if key is not None and name:
            try:
                table[int(key)] = _norm(name)
            except ValueError:
                continue
    return table or None


def _table_from_json(obj) -> dict[int, str] | None:
    if isinstance(obj, dict) and isinstance(obj.get("labels"), dict):
        obj = obj["labels"]
    if not isinstance(obj, dict) or not obj:
        return None
    table = {}
    for key, value in obj.items():
        if isinstance(value, str) and _is_int(key):  # {"76": "femur_right"}
            table[int(key)] = _norm(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # {"femur_right": 76}
            table[value] = _norm(str(key))
    return table or None


def _assumed_numbering(present: list[int], name: str) -> str:
    """Which TotalSegmentator numbering a map without names follows (values beyond 50: ``total``)."""
    top = max(present)
    if min(present) < 0 or top > NUMBERINGS["total"]["max"]:
        raise InputError(f"femur mask {name} has {len(present):,} distinct values from {min(present)} to {top} and "
                         "no label names: neither a binary mask nor a TotalSegmentator map")
    return "total" if top > NUMBERINGS["total_mr"]["max"] else "total_mr"


def _names_listing(names: list[str]) -> str:
    if len(names) <= MAX_LISTED_NAMES:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED_NAMES]) + f", ... ({len(names)} labels)"


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _is_int(text) -> bool:
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True
