"""The typed result model: what ``metrics.json`` and ``longitudinal.json`` hold.

* :class:`HipMetrics`: one hip at one visit (``metrics.json``; docs/method.md sections 1-4 and 8),
  assembled by :func:`pipeline.measures.hip.measure_hip` only;
* :class:`FollowupMetrics`: one follow-up against its baseline (an entry of ``longitudinal.json``'s
  ``followups``; docs/method.md section 5), assembled by
  :func:`pipeline.longitudinal.change.compare_visits` only;
* :class:`Longitudinal`: the whole ``longitudinal.json`` (baseline, follow-ups, the latest
  follow-up's figures repeated at the top, every warning prefixed with its visit).

Each class is the single owner of its keys (its field names, in the written order), their units
(in the names: ``_ml`` mL, ``_mm`` mm, ``_deg`` degrees, ``_pct`` %) and its schema version.
``to_json()`` gives the content exactly as written (floats rounded to 6 decimals, NaN as null);
``from_json()`` reads it back, so that ``from_json(d).to_json() == d``, and refuses a document with
a key it does not know (a newer schema is never read in part) or without a key it needs. The
tables, pictures, the CLI and napari read attributes and the formatting methods below, never keys.
Nested records whose content is open (``input``, ``weight_bearing``, ``zones_ml``,
``reconstruction``, ``segmentation``, ``side_check``, ``sphere_fit``, ``zones``, ``head_change``,
``registration``, ``provenance``) stay dicts; ``review_flags`` and ``warnings`` are lists of text.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.errors import InputError
from pipeline.io.outputs import clean_json

#: Version of the metrics.json and longitudinal.json schemas (keys and their meaning).
SCHEMA_VERSION = "1.0"

#: Decimals of every float written (mL, mm, degrees, %: 1e-6 is far below any measurement's precision).
NDIGITS = 6


def _fmt(value, spec: str, unit: str = "", none: str = "-") -> str:
    return none if value is None else f"{format(value, spec)}{unit}"


def _document(data, what: str) -> dict:
    """A JSON object (dict, or its text) checked to be one."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise InputError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_keys(data: dict, known, optional, what: str, version: str) -> None:
    """Refuse another schema version, unknown keys (a newer schema) and missing ones (an older)."""
    found = data.get("schema_version", version)
    if found != version:
        raise InputError(f"{what}: schema_version {found!r}, but this onfh reads schema {version!r}")
    unknown = [k for k in data if k not in known]
    if unknown:
        raise InputError(f"{what}: unknown key(s) {', '.join(map(repr, unknown))}: not in schema {version} "
                         "(written by a newer onfh?); refused rather than read in part")
    missing = [k for k in known if k not in data and k not in optional]
    if missing:
        raise InputError(f"{what}: missing key(s) {', '.join(map(repr, missing))} of schema {version}")


def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# --------------------------------------------------------------------------------------------
# one hip at one visit
# --------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class HipMetrics:
    """Every figure of one hip at one visit: the content of ``metrics.json``.

    Fields are the JSON keys, in the written order; absent figures are None (null), never NaN.
    Voxel-count volumes are the headline; ``reconstruction`` holds the isotropic ones (section 3).
    """

    SCHEMA_VERSION: ClassVar[str] = SCHEMA_VERSION
    #: The figure columns of scans.csv (:meth:`csv_row`), in table order.
    CSV_COLUMNS: ClassVar[tuple[str, ...]] = (
        "head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct", "size_class", "jic_type", "jic_type_3d",
        "arco2021_type", "cna_deg", "kerboul_grade", "arc_coronal_deg", "arc_sagittal_deg", "head_depression_mm",
        "arco2019_collapse", "collapse_caveat", "head_radius_mm", "sphere_fit_rms_mm", "weight_bearing_source",
        "segmentation", "review", "n_warnings", "literature_flags", "image_sha256",
    )
    #: Separator of several literature cut-offs in one table cell (their texts may hold "; ").
    FLAG_SEPARATOR: ClassVar[str] = " | "

    #: Keys added to schema 1.0 later (docs/method.md 6); a file written before them reads them as null.
    _ADDED: ClassVar[tuple[str, ...]] = ("head_depression_mm", "arco2019_collapse", "collapse", "literature_flags")

    schema_version: str = SCHEMA_VERSION
    #: "left" or "right"
    side: str
    #: the input image: path (as recorded), sha256, format, shape, spacing_mm, axcodes
    input: dict | None = None
    #: head volume by voxel count, mL (lesion included)
    head_volume_ml: float | None = None
    #: head volume inside its marching-cubes mesh, mL
    head_mesh_volume_ml: float | None = None
    #: fitted head-sphere centre, RAS mm
    head_center_ras_mm: list[float] | None = None
    #: fitted head-sphere radius, mm
    head_radius_mm: float | None = None
    #: RMS residual of the sphere fit, mm
    sphere_fit_rms_mm: float | None = None
    #: lesion volume by voxel count (inside the head), mL
    lesion_volume_ml: float | None = None
    #: lesion volume inside its mesh, mL
    lesion_mesh_volume_ml: float | None = None
    #: necrotic fraction 100 x lesion / head, %
    necrotic_fraction_pct: float | None = None
    #: A, B or C (NF < 15, 15-30, > 30 %); None for an empty lesion
    size_class: str | None = None
    #: weight-bearing span on the mid-coronal plane: u_med_mm, u_lat_mm, lce_angle_deg, source, details
    weight_bearing: dict | None = None
    #: lesion volume per JIC zone, antero-posterior region and combination ("C2/posterior"), mL
    zones_ml: dict | None = None
    #: JIC type on the mid-coronal plane (A, B, C1, C2)
    jic_type: str | None = None
    #: JIC type from the lesion voxels above the equator
    jic_type_3d: str | None = None
    #: ARCO 2021 location type (1, 2, 3)
    arco2021_type: int | None = None
    #: necrotic arc on the mid-coronal plane, degrees
    arc_coronal_deg: float | None = None
    #: necrotic arc on the mid-sagittal plane, degrees
    arc_sagittal_deg: float | None = None
    #: combined necrotic angle (coronal + sagittal arc), degrees
    cna_deg: float | None = None
    #: modified Kerboul grade (1-4)
    kerboul_grade: int | None = None
    #: Koo-Kim necrotic index
    koo_kim_index: float | None = None
    #: lesion centroid latitude, degrees
    centroid_latitude_deg: float | None = None
    #: lesion centroid longitude (0 lateral, +90 anterior), degrees
    centroid_longitude_deg: float | None = None
    #: largest inward depth of the weight-bearing surface below the fitted head sphere, mm (docs/method.md 6)
    head_depression_mm: float | None = None
    #: ARCO 2019 collapse: "none" (below the detection limit), "IIIA" (<= 2 mm) or "IIIB" (> 2 mm)
    arco2019_collapse: str | None = None
    #: the depression: location_uvw_mm, location_ras_mm, jic_zone, depressed_area_mm2 (mm^2),
    #: missing_volume_ml (mL), detection_limit_mm, depth_to_limit, detection_limit_factor, region,
    #: averaging_sigma_mm, reference_center_ras_mm, reference_radius_mm, method, surface
    collapse: dict | None = None
    #: literature cut-offs the hip meets (NF >= 25 %, JIC C2), each worded as a cut-off, never a prediction
    literature_flags: list[str] = field(default_factory=list)
    #: isotropic reconstruction: method, voxel_mm, head/lesion volumes and mesh volumes (mL), NF (%)
    reconstruction: dict | None = None
    #: how the masks were obtained: method, parameters, an automatic segmentation's confidence
    segmentation: dict | None = None
    #: measurement findings a person should review (e.g. an implausible NF)
    review_flags: list[str] = field(default_factory=list)
    #: every warning of the measurement, one short line each
    warnings: list[str] = field(default_factory=list)
    #: the given side against the anatomy: given, found, status, cues
    side_check: dict | None = None
    #: the robust sphere fit: center_ras_mm, radius_mm, rms_mm, n_inliers, n_points
    sphere_fit: dict | None = None
    #: software, versions and settings of the run that wrote the file (written files only)
    provenance: dict | None = None

    # JSON -------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The figures under their keys in the written order, unrounded (nested records shared)."""
        out = {name: getattr(self, name) for name in _names(self)}
        if self.provenance is None:
            del out["provenance"]
        return out

    def to_json(self) -> dict:
        """The ``metrics.json`` content exactly as written (floats rounded to 6 decimals)."""
        return clean_json(self.as_dict(), NDIGITS)

    @classmethod
    def from_json(cls, data, what: str = "metrics.json") -> HipMetrics:
        """Read a ``metrics.json`` content (dict or JSON text) back; InputError for another schema."""
        data = _document(data, what)
        _check_keys(data, _names(cls), ("provenance", *cls._ADDED), what, cls.SCHEMA_VERSION)
        return cls(**copy.deepcopy(data))

    # derived figures --------------------------------------------------------------------------
    def confidence(self) -> dict | None:
        """The automatic segmentation's ``confidence`` record (status, flags): its own, or its
        lesion's with ``--femur-mask`` alone; None for masks a person gave."""
        seg = self.segmentation or {}
        return seg.get("confidence") or (seg.get("lesion_segmentation") or {}).get("confidence")

    def review(self) -> str | None:
        """The scans.csv ``review`` cell: "ok" for an automatic segmentation without doubt, its
        flags and the measurement's ``review_flags`` (whoever gave the masks) after "review: ",
        None for masks a person gave with nothing to review."""
        confidence = self.confidence() or {}
        flags = list(confidence.get("flags") or []) if confidence.get("status") == "review" else []
        flags += self.review_flags or []
        if flags:
            return "review: " + "; ".join(flags)
        return "ok" if confidence else None

    def arc_deg(self, plane: str) -> float | None:
        """The necrotic arc on the mid-``plane`` ("coronal" or "sagittal"), degrees."""
        return {"coronal": self.arc_coronal_deg, "sagittal": self.arc_sagittal_deg}[plane]

    def input_name(self) -> str:
        """The input's file (or folder) name without its directories: a picture names its scan
        even when no title was given, without spelling out where the data lives."""
        path = (self.input or {}).get("path")
        return Path(str(path)).name if path else ""

    # formatted --------------------------------------------------------------------------------
    def csv_row(self) -> dict:
        """The scans.csv figures (:attr:`CSV_COLUMNS`), unformatted."""
        return {
            "head_volume_ml": self.head_volume_ml, "lesion_volume_ml": self.lesion_volume_ml,
            "necrotic_fraction_pct": self.necrotic_fraction_pct, "size_class": self.size_class,
            "jic_type": self.jic_type, "jic_type_3d": self.jic_type_3d, "arco2021_type": self.arco2021_type,
            "cna_deg": self.cna_deg, "kerboul_grade": self.kerboul_grade, "arc_coronal_deg": self.arc_coronal_deg,
            "arc_sagittal_deg": self.arc_sagittal_deg, "head_depression_mm": self.head_depression_mm,
            "arco2019_collapse": self.arco2019_collapse, "collapse_caveat": self.collapse_caveat(),
            "head_radius_mm": self.head_radius_mm,
            "sphere_fit_rms_mm": self.sphere_fit_rms_mm,
            "weight_bearing_source": (self.weight_bearing or {}).get("source"),
            "segmentation": (self.segmentation or {}).get("method"),
            "review": self.review(),
            "n_warnings": len(self.warnings or []),
            "literature_flags": self.FLAG_SEPARATOR.join(self.literature_flags or []) or None,
            "image_sha256": (self.input or {}).get("sha256"),
        }

    def headline(self) -> str:
        """"right hip: head 53.84 mL, lesion 11.82 mL, NF 22.0 %" (napari's status line)."""
        return (f"{self.side} hip: head {_fmt(self.head_volume_ml, '.2f')} mL, lesion "
                f"{_fmt(self.lesion_volume_ml, '.2f')} mL, NF {_fmt(self.necrotic_fraction_pct, '.1f')} %")

    def summary_line(self) -> str:
        """The one line ``onfh analyze`` prints: the headline, size class, collapse stage and warning count."""
        return (f"{self.headline()}, size class {self.size_class or '-'}, {self.collapse_short()}; "
                f"{len(self.warnings or [])} warning(s)")

    def detection_limit_mm(self) -> float | None:
        """The depression's detection limit at the reported point, mm (docs/method.md 6)."""
        return (self.collapse or {}).get("detection_limit_mm")

    def collapse_caveat(self) -> str | None:
        """What a stage "none" leaves open at the dome's top (:func:`pipeline.measures.collapse.top_caveat`)."""
        # imported here: pipeline.measures.collapse brings SciPy (0.8 s), which reading a
        # metrics.json (napari's reader, onfh report) does not otherwise need
        from pipeline.measures.collapse import top_caveat

        return top_caveat(self.arco2019_collapse, self.collapse or {})

    def collapse_short(self) -> str:
        """"collapse IIIB (2.63 mm)", "collapse none" or "collapse -" (not measured): the stage
        in a few words, for the CLI line and table captions."""
        if self.arco2019_collapse is None:
            return "collapse -"
        if self.arco2019_collapse == "none":
            caveat = self.collapse_caveat()
            return "collapse none" + (f" ({caveat})" if caveat else "")
        return f"collapse {self.arco2019_collapse} ({_fmt(self.head_depression_mm, '.2f')} mm)"

    def collapse_text(self) -> str:
        """The depression in one sentence, for qc.png and napari: "head depression 2.63 mm, ARCO
        2019 IIIB (zone C1)" or, below the limit, "no depression above the 0.62 mm detection limit
        (deepest 0.09 mm)"."""
        stage, limit = self.arco2019_collapse, self.detection_limit_mm()
        if stage is None:
            return "head depression not measured"
        if stage == "none" and (self.collapse or {}).get("narrow"):
            return (f"no collapse: the deepest dip ({_fmt(self.head_depression_mm, '.2f')} mm) is narrower than "
                    f"a collapse (a voxel or two of the outline)")
        if stage == "none":
            caveat = self.collapse_caveat()
            return (f"no depression above the {_fmt(limit, '.2f')} mm detection limit "
                    f"(deepest {_fmt(self.head_depression_mm, '.2f')} mm)" + (f"; {caveat}" if caveat else ""))
        zone = (self.collapse or {}).get("jic_zone")
        return (f"head depression {_fmt(self.head_depression_mm, '.2f')} mm, ARCO 2019 {stage}"
                + (f" (zone {zone})" if zone else ""))

    def qc_title(self, title: str = "") -> str:
        """The title of qc.png: the headline figures, where the masks came from, then the collapse."""
        def f(value, spec):
            return _fmt(value, spec)

        head = f"{title}  {self.side} hip" if title else f"{self.side} hip"
        return (f"{head}: head {f(self.head_volume_ml, '.1f')} mL, lesion {f(self.lesion_volume_ml, '.2f')} mL, "
                f"NF {f(self.necrotic_fraction_pct, '.1f')} % (size {self.size_class or '-'}), "
                f"JIC {self.jic_type or '-'} (3D {self.jic_type_3d or '-'}), ARCO {f(self.arco2021_type, 'd')}, "
                f"CNA {f(self.cna_deg, '.0f')}° (Kerboul {f(self.kerboul_grade, 'd')}), "
                f"sphere rms {f(self.sphere_fit_rms_mm, '.2f')} mm; warnings: {len(self.warnings or [])}"
                + self.masks_line()
                # a result without the figure (read from an older metrics.json) gets no collapse line
                + (f"\ncollapse: {self.collapse_text()}" if self.arco2019_collapse is not None else ""))

    def masks_line(self) -> str:
        """Where the masks came from, and an automatic segmentation's review flags (a reviewer
        decides from the picture which scans to open)."""
        seg = self.segmentation or {}
        line = f"\nmasks: {seg.get('method', '-')}"
        confidence = self.confidence()
        if confidence and confidence.get("status") == "review":
            flags = "; ".join(confidence.get("flags") or [])
            line += f" | REVIEW: {flags if len(flags) <= 150 else flags[:147] + '...'}"
        elif confidence:
            line += " | automatic QC ok"
        return line

    def segmentation_text(self) -> str:
        """How the masks were obtained, with the automatic segmentation's confidence."""
        seg = self.segmentation or {}
        text = str(seg.get("method", "–"))
        confidence = seg.get("confidence")
        if confidence:
            flags = confidence.get("flags") or []
            text += f" ({confidence.get('status', '?')}" + (f": {'; '.join(flags)})" if flags else ")")
        return text

    def table_rows(self) -> list[tuple[str, str]]:
        """The (name, text) rows of napari's Analyze hip table."""
        def num(value, spec, unit=""):
            return _fmt(value, spec, unit, none="–")

        rows = [
            ("Side", str(self.side)),
            ("Segmentation", self.segmentation_text()),
            ("Head volume", num(self.head_volume_ml, ".2f", " mL")),
            ("Lesion volume", num(self.lesion_volume_ml, ".2f", " mL")),
            ("Necrotic fraction (NF)", num(self.necrotic_fraction_pct, ".1f", " %")),
            ("Size class (Steinberg/ARCO 1994 extent)", self.size_class or "–"),
        ]
        rec = self.reconstruction
        if rec:
            rows.append((f"Isotropic {rec['voxel_mm']:g} mm reconstruction",
                         f"head {rec['head_volume_ml']:.2f} mL, lesion {rec['lesion_volume_ml']:.2f} mL, "
                         f"NF {num(rec['necrotic_fraction_pct'], '.1f', ' %')}"))
        rows += [
            ("Head sphere", f"r {num(self.head_radius_mm, '.1f', ' mm')}, "
                            f"RMS {num(self.sphere_fit_rms_mm, '.2f', ' mm')}"),
        ]
        span = self.weight_bearing or {}
        if span:
            rows.append(("Weight-bearing span (u)", f"{span['u_med_mm']:.1f} .. {span['u_lat_mm']:.1f} mm "
                                                    f"({span['source']})"))
        rows += [
            ("JIC type (mid-coronal)", self.jic_type or "–"),
            ("JIC type 3D", self.jic_type_3d or "–"),
            ("ARCO 2021 type", num(self.arco2021_type, "d")),
            ("Necrotic arc coronal / sagittal", f"{num(self.arc_coronal_deg, '.0f', '°')} / "
                                                f"{num(self.arc_sagittal_deg, '.0f', '°')}"),
            ("CNA (combined necrotic angle)", num(self.cna_deg, ".0f", "°")),
            ("Kerboul grade (modified)", num(self.kerboul_grade, "d")),
            ("Koo-Kim index", num(self.koo_kim_index, ".1f")),
            ("Head depression", num(self.head_depression_mm, ".2f", " mm")
             + (f" (detection limit {num(self.detection_limit_mm(), '.2f', ' mm')})"
                if self.detection_limit_mm() is not None else "")),
            ("ARCO 2019 collapse", (self.arco2019_collapse or "–")
             + (" (the dip is narrower than a collapse)" if (self.collapse or {}).get("narrow") else "")
             + (f"; {self.collapse_caveat()}" if self.collapse_caveat() else "")),
        ]
        flags = self.literature_flags or []
        rows += [(f"Literature cut-off{f' {k}' if len(flags) > 1 else ''}", flag.removeprefix("literature cut-off: "))
                 for k, flag in enumerate(flags, 1)]
        zones = self.zones_ml or {}
        if zones:
            rows.append(("Lesion in JIC zones A/B/C1/C2",
                         " / ".join(f"{zones.get(z, 0.0):.2f}" for z in ("A", "B", "C1", "C2")) + " mL"))
        rows.append(("Warnings", str(len(self.warnings or []))))
        return rows


# --------------------------------------------------------------------------------------------
# one follow-up against its baseline
# --------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class FollowupMetrics:
    """One follow-up against its baseline: an entry of ``longitudinal.json``'s ``followups``.

    ``baseline_lesion_ml`` and ``followup_lesion_ml`` are each visit's own voxel-count lesion
    volume; ``regenerated_ml``, ``new_ml``, ``persistent_ml`` and
    ``followup_lesion_in_baseline_ml`` are voxel maps on the baseline grid (mL). ``index``,
    ``folder`` and ``files`` are set when ``onfh compare`` writes the comparison (omitted before).
    """

    SCHEMA_VERSION: ClassVar[str] = SCHEMA_VERSION
    #: The figure columns of changes.csv (:meth:`csv_row`), in table order.
    CSV_COLUMNS: ClassVar[tuple[str, ...]] = (
        "baseline_lesion_ml", "followup_lesion_ml", "regeneration_pct", "regenerated_ml", "new_ml", "persistent_ml",
        "head_depression_change_mm", "new_collapse", "head_dice", "rotation_deg", "translation_norm_mm", "n_warnings",
        "literature_flags",
    )
    #: Figures repeated at the top of longitudinal.json for the latest follow-up.
    HEADLINE_KEYS: ClassVar[tuple[str, ...]] = (
        "regeneration_pct", "regeneration_pct_isotropic", "baseline_lesion_ml", "followup_lesion_ml",
        "regenerated_ml", "new_ml", "persistent_ml", "followup_lesion_in_baseline_ml", "zones", "head_change",
        "head_depression_change_mm", "new_collapse", "registration",
    )
    _WRITTEN: ClassVar[tuple[str, ...]] = ("index", "folder", "files")
    #: Keys added to schema 1.0 later (docs/method.md 6); a file written before them reads them as null.
    _ADDED: ClassVar[tuple[str, ...]] = ("head_depression_change_mm", "new_collapse", "literature_flags")

    #: 1, 2, ... in command-line order
    index: int | None = None
    #: the folder of its maps relative to the output folder ("." for a single follow-up)
    folder: str | None = None
    #: its files (change_map, followup_in_baseline, followup_labels_in_baseline, qc_png)
    files: dict | None = None
    #: the follow-up measured in its own space
    followup: HipMetrics
    #: 100 (V0 - Vt) / V0 from each visit's own lesion volume, %; None for an empty baseline lesion
    regeneration_pct: float | None
    #: the same from the isotropic reconstructions, %
    regeneration_pct_isotropic: float | None
    #: baseline lesion volume, mL
    baseline_lesion_ml: float | None
    #: follow-up lesion volume, mL
    followup_lesion_ml: float | None
    #: baseline lesion gone at the follow-up (change map 2), mL
    regenerated_ml: float | None
    #: lesion new at the follow-up (change map 3), mL
    new_ml: float | None
    #: lesion at both visits (change map 1), mL
    persistent_ml: float | None
    #: follow-up lesion mapped onto the baseline grid, mL
    followup_lesion_in_baseline_ml: float | None
    #: per zone, region and combination: baseline_ml, followup_ml, regenerated_ml, new_ml,
    #: persistent_ml, share_pct, regeneration_pct, regenerated_fraction_pct
    zones: dict | None
    #: head volume, radius, sphere-fit RMS and sphere-fill changes (a collapse hint)
    head_change: dict | None
    #: follow-up minus baseline head depression, each in its own space, mm (docs/method.md 6)
    head_depression_change_mm: float | None = None
    #: True when the baseline's ARCO 2019 collapse is "none" and the follow-up's IIIA or IIIB; None if unknown
    new_collapse: bool | None = None
    #: literature cut-offs of the follow-up (NF < 10 %, read at 3 months in the pilot study), worded as cut-offs
    literature_flags: list[str] = field(default_factory=list)
    #: the rigid registration: method, transform, rotation_deg, translation_mm, head_dice, ...
    registration: dict | None
    #: warnings of the comparison itself
    warnings: list[str] = field(default_factory=list)

    # JSON -------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The entry under its keys in the written order, unrounded."""
        out = {name: getattr(self, name) for name in _names(self)}
        for name in self._WRITTEN:
            if out[name] is None:
                del out[name]
        out["followup"] = self.followup.as_dict()
        return out

    def to_json(self) -> dict:
        """The ``followups`` entry exactly as written."""
        return clean_json(self.as_dict(), NDIGITS)

    @classmethod
    def from_json(cls, data, what: str = "longitudinal.json follow-up") -> FollowupMetrics:
        data = _document(data, what)
        _check_keys(data, _names(cls), (*cls._WRITTEN, *cls._ADDED), what, cls.SCHEMA_VERSION)
        data = copy.deepcopy(data)
        data["followup"] = HipMetrics.from_json(data["followup"], f"{what}: followup")
        return cls(**data)

    # derived figures --------------------------------------------------------------------------
    def headline_figures(self) -> dict:
        """The figures repeated at the top of longitudinal.json (:attr:`HEADLINE_KEYS`)."""
        return {key: getattr(self, key) for key in self.HEADLINE_KEYS}

    def n_warnings(self, baseline: HipMetrics) -> int:
        """Every warning of this comparison: the baseline's, the follow-up's and its own."""
        return len(baseline.warnings or []) + len(self.followup.warnings or []) + len(self.warnings or [])

    def regenerated_by_zone(self) -> dict:
        """Regenerated mL per zone, region and combination (for the cohort statistics)."""
        return {zone: (v or {}).get("regenerated_ml") for zone, v in (self.zones or {}).items()}

    # formatted --------------------------------------------------------------------------------
    def csv_row(self, baseline: HipMetrics) -> dict:
        """The changes.csv figures (:attr:`CSV_COLUMNS`), unformatted."""
        reg = self.registration or {}
        return {
            "baseline_lesion_ml": self.baseline_lesion_ml, "followup_lesion_ml": self.followup_lesion_ml,
            "regeneration_pct": self.regeneration_pct, "regenerated_ml": self.regenerated_ml,
            "new_ml": self.new_ml, "persistent_ml": self.persistent_ml,
            "head_depression_change_mm": self.head_depression_change_mm, "new_collapse": self.new_collapse,
            "head_dice": reg.get("head_dice"), "rotation_deg": reg.get("rotation_deg"),
            "translation_norm_mm": reg.get("translation_norm_mm"),
            "n_warnings": self.n_warnings(baseline),
            "literature_flags": HipMetrics.FLAG_SEPARATOR.join(self.literature_flags or []) or None,
        }

    def collapse_change(self, baseline: HipMetrics | None = None) -> str | None:
        """"collapse none -> IIIB (new), depression +2.63 mm": the ARCO 2019 stage at both visits
        and the change of depression; None when the follow-up's stage is unknown."""
        after = self.followup.arco2019_collapse
        if after is None:
            return None
        before = baseline.arco2019_collapse if baseline is not None else None
        text = f"collapse {before or '-'} -> {after}" if baseline is not None else f"collapse {after}"
        if self.new_collapse:
            text += " (new)"
        if self.head_depression_change_mm is not None:
            text += f", depression {self.head_depression_change_mm:+.2f} mm"
        return text

    def headline(self, baseline: HipMetrics | None = None) -> str:
        """"regeneration 40.0 %, regenerated 4.80 mL, ...; rotation 5.4 deg, head Dice 0.973;
        collapse none -> IIIB (new), depression +2.63 mm" (the line ``onfh compare`` prints per
        follow-up; the collapse part when the follow-up's stage is known, with the baseline's
        when given)."""
        reg = self.registration or {}
        collapse = self.collapse_change(baseline)
        return (f"regeneration {_fmt(self.regeneration_pct, '.1f')} %, "
                f"regenerated {_fmt(self.regenerated_ml, '.2f')} mL, new {_fmt(self.new_ml, '.2f')} mL, "
                f"persistent {_fmt(self.persistent_ml, '.2f')} mL; rotation {_fmt(reg.get('rotation_deg'), '.1f')} "
                f"deg, head Dice {_fmt(reg.get('head_dice'), '.3f')}" + (f"; {collapse}" if collapse else ""))

    def head_moved_mm(self) -> float | None:
        """How far the registration moved the baseline head centre, mm."""
        shift = (self.registration or {}).get("head_centre_displacement_mm")
        return None if shift is None else float(np.linalg.norm(shift))

    def qc_title(self, title: str = "") -> str:
        """The title of the comparison's qc.png."""
        reg = self.registration or {}
        head = f"{title}: " if title else ""
        return (f"{head}regeneration {_fmt(self.regeneration_pct, '.1f')} % (lesion "
                f"{_fmt(self.baseline_lesion_ml, '.2f')} -> {_fmt(self.followup_lesion_ml, '.2f')} mL); regenerated "
                f"{_fmt(self.regenerated_ml, '.2f')} mL, new {_fmt(self.new_ml, '.2f')} mL, persistent "
                f"{_fmt(self.persistent_ml, '.2f')} mL\n"
                f"registration: rotation {_fmt(reg.get('rotation_deg'), '.1f')}°, head moved "
                f"{_fmt(self.head_moved_mm(), '.1f')} mm, head Dice "
                f"{_fmt(reg.get('head_dice'), '.3f')}; warnings: {len(self.warnings or [])}"
                + (f"\n{self.collapse_change()}" if self.collapse_change() else ""))

    def table_rows(self, baseline: HipMetrics) -> list[tuple[str, str, int | None]]:
        """(figure, text, change-map value for a colour swatch or None) rows of napari's Compare
        visits table; the warning count is the whole comparison's (:meth:`n_warnings`)."""
        def num(value, spec, unit=""):
            return _fmt(value, spec, unit, none="–")

        reg = self.registration or {}
        t = reg["translation_mm"]
        rows = [("Regeneration", num(self.regeneration_pct, ".1f", " %"), None)]
        if self.regeneration_pct_isotropic is not None:
            rows.append(("Regeneration, isotropic recon.", num(self.regeneration_pct_isotropic, ".1f", " %"), None))
        rows += [
            ("Lesion, baseline → follow-up",
             f"{num(self.baseline_lesion_ml, '.2f')} → {num(self.followup_lesion_ml, '.2f')} mL", None),
            ("Regenerated (2)", num(self.regenerated_ml, ".2f", " mL"), 2),
            ("New (3)", num(self.new_ml, ".2f", " mL"), 3),
            ("Persistent (1)", num(self.persistent_ml, ".2f", " mL"), 1),
            ("Rotation", num(reg["rotation_deg"], ".2f", "°"), None),
            ("Translation R, A, S", f"{t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f} mm (|t| {reg['translation_norm_mm']:.1f} mm)",
             None),
            ("Head centre moved", f"{self.head_moved_mm():.1f} mm", None),
            ("Head Dice after registration", num(reg["head_dice"], ".3f"), None),
        ]
        if self.followup.arco2019_collapse is not None:
            stages = f"{baseline.arco2019_collapse or '–'} → {self.followup.arco2019_collapse}"
            rows += [
                ("ARCO 2019 collapse, baseline → follow-up", stages + (" (new collapse)" if self.new_collapse else ""),
                 None),
                ("Head depression change", num(self.head_depression_change_mm, "+.2f", " mm"), None),
            ]
        rows += [("Literature cut-off (follow-up)", flag.removeprefix("literature cut-off: "), None)
                 for flag in self.literature_flags or []]
        zones = self.zones or {}
        if zones:
            rows.append(("Regenerated in zones A/B/C1/C2",
                         " / ".join(f"{zones[z]['regenerated_ml']:.2f}" for z in ("A", "B", "C1", "C2")) + " mL",
                         None))
        rows.append(("Warnings", str(self.n_warnings(baseline)), None))
        return rows


# --------------------------------------------------------------------------------------------
# longitudinal.json
# --------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Longitudinal:
    """The content of ``longitudinal.json``: the baseline, one entry per follow-up in visit order,
    the latest follow-up's figures repeated at the top (so a one-follow-up file reads flat), the
    change-map legend and every warning prefixed with its visit."""

    SCHEMA_VERSION: ClassVar[str] = SCHEMA_VERSION
    _DERIVED: ClassVar[tuple[str, ...]] = ("latest_followup", *FollowupMetrics.HEADLINE_KEYS, "warnings")

    schema_version: str = SCHEMA_VERSION
    side: str
    baseline: HipMetrics
    followups: list[FollowupMetrics]
    #: change-map value (as text) -> name
    change_map_labels: dict
    provenance: dict | None = None

    @property
    def latest(self) -> FollowupMetrics:
        """The last follow-up given (by convention the latest visit)."""
        return self.followups[-1]

    @property
    def warnings(self) -> list[str]:
        """Every warning: the baseline's, then each follow-up's and its comparison's, prefixed."""
        several = len(self.followups) > 1
        out = [f"baseline: {w}" for w in self.baseline.warnings]
        for f in self.followups:
            who = f"follow-up {f.index}" if several else "follow-up"
            out += [f"{who}: {w}" for w in f.followup.warnings]
            out += [f"{who} vs baseline: {w}" for w in f.warnings]
        return out

    def as_dict(self) -> dict:
        latest = self.latest
        out = {
            "schema_version": self.schema_version,
            "side": self.side,
            "baseline": self.baseline.as_dict(),
            "followups": [f.as_dict() for f in self.followups],
            "latest_followup": latest.index,
            **latest.headline_figures(),
            "change_map_labels": self.change_map_labels,
            "warnings": self.warnings,
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    def to_json(self) -> dict:
        """The ``longitudinal.json`` content exactly as written."""
        return clean_json(self.as_dict(), NDIGITS)

    @classmethod
    def from_json(cls, data, what: str = "longitudinal.json") -> Longitudinal:
        """Read a ``longitudinal.json`` content back (the repeated figures and the warnings are
        derived from the baseline and the follow-ups)."""
        data = _document(data, what)
        known = ("schema_version", "side", "baseline", "followups", "change_map_labels", "provenance",
                 *cls._DERIVED)
        _check_keys(data, known, ("provenance", *FollowupMetrics._ADDED), what, cls.SCHEMA_VERSION)
        if not isinstance(data["followups"], list) or not data["followups"]:
            raise InputError(f"{what}: followups must be a non-empty list")
        return cls(
            schema_version=data["schema_version"], side=data["side"],
            baseline=HipMetrics.from_json(data["baseline"], f"{what}: baseline"),
            followups=[FollowupMetrics.from_json(f, f"{what}: followups[{k}]")
                       for k, f in enumerate(data["followups"])],
            change_map_labels=copy.deepcopy(data["change_map_labels"]),
            provenance=copy.deepcopy(data.get("provenance")),
        )
