"""Settings: one typed, validated object read from YAML (configs/default.yaml mirrors the defaults).

Every choice docs/method.md leaves open is a field here, and every output records the resolved settings
and their SHA-256 (of the canonical JSON form, so two files with the same values hash alike).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSettings(_Section):
    head: int = Field(1, ge=1, description="label value of the femoral head outside the lesion")
    lesion: int = Field(2, ge=1, description="label value of the necrotic lesion (part of the head)")
    grid_tolerance_mm: float = Field(
        0.01, gt=0, description="largest spacing/origin difference (mm) for a mask to count as on the image grid"
    )
    max_distinct_values: int = Field(
        16, ge=2,
        description="a label map with more distinct non-zero values is refused as an image: a segmentation has a "
        "handful of classes (raise it for multi-class maps such as TotalSegmentator's, up to about 120)",
    )

    @model_validator(mode="after")
    def _distinct(self):
        if self.head == self.lesion:
            raise ValueError("head and lesion labels must differ")
        return self


class HeadSettings(_Section):
    method: Literal["neck-plane", "sphere"] = Field(
        "neck-plane", description="head delimitation from a femur mask (docs/method.md section 2)"
    )
    max_sphere_rms_mm: float = Field(1.5, gt=0, description="sphere-fit RMS residual above which a warning is given")
    plausible_radius_mm: tuple[float, float] = Field(
        (10.0, 40.0),
        description="a head whose radius (fitted, or of the ball of its volume) is outside this is refused, mm: adult "
        "heads are 20-25 mm (docs/method.md 9); 10 is half the smallest, 40 the largest the sphere fit searches",
    )
    sphere_volume_ratio: tuple[float, float] = Field(
        (0.5, 1.5),
        description="a head whose volume is outside this many times its fitted sphere's is refused as no ball (a "
        "head cut at the neck fills 0.85-1.0 of its sphere; a slab or a rod is far off)",
    )

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("plausible_radius_mm", "sphere_volume_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi:
                raise ValueError(f"{name} must be two increasing positive numbers")
        return self


class ReconstructionSettings(_Section):
    isotropic: bool = Field(True, description="shape-based interpolation to isotropic voxels (docs/method.md 3)")
    voxel_mm: float = Field(0.5, gt=0.05, le=5, description="isotropic voxel size of the reconstruction, mm")
    stl_from_isotropic: bool = Field(True, description="write head.stl/lesion.stl from the isotropic masks")


class LocationSettings(_Section):
    default_edge_angle_deg: float = Field(
        30.0, gt=0, lt=90, description="default weight-bearing half-span: u = ±r·sin(angle) (docs/method.md section 4)"
    )
    plane_step_mm: float = Field(0.25, gt=0, le=2, description="sampling step on the mid-planes, mm")
    contact_shell_mm: float = Field(
        1.0, gt=0, le=5, description="depth under the head outline counted as lesion contact for the arcs, mm"
    )
    # acetabular roof read from an acetabulum mask (measures/location.py: find_acetabular_roof)
    roof_reach_mm: float = Field(
        10.0, gt=0, le=40, description="acetabular roof: bone farther than r + this from the head centre is not the "
        "roof, mm (the joint space and subchondral plate lie within a few mm of the head)"
    )
    roof_inner_mm: float = Field(
        5.0, ge=0, le=20, description="acetabular roof: rays are searched from this far inside the head surface, mm "
        "(a mask overlapping the head by a voxel or two is still read)"
    )
    roof_fossa_step_mm: float = Field(
        3.0, gt=0, description="acetabular roof: bone receding more than this beyond the lateral roof's median "
        "distance marks the fossa, the medial end of the sourcil, mm"
    )
    roof_step_deg: float = Field(
        0.5, gt=0, le=5, description="acetabular roof: angular step of the rays in the mid-coronal plane, degrees"
    )
    roof_gap_deg: float = Field(
        2.0, ge=0, le=20, description="acetabular roof: gaps in the bone up to this wide are bridged (a mask with "
        "pinholes is one roof), degrees"
    )
    roof_radial_step_mm: float = Field(
        0.25, gt=0, le=2, description="acetabular roof: radial sampling step along each ray at most this, mm"
    )
    roof_steps_per_voxel: int = Field(
        4, ge=1, le=16, description="acetabular roof: and at least this many radial samples per finest voxel"
    )


class GateSettings(_Section):
    head_volume_ml: tuple[float, float] = Field((25.0, 80.0), description="plausible femoral-head volume, mL")
    max_slice_thickness_mm: float = Field(5.0, gt=0, description="thicker slices give a warning")
    max_plausible_nf_pct: float = Field(
        70.0, gt=0, le=100,
        description="a larger necrotic fraction is warned about and flagged for review, %: the pilot cohort's "
        "lesions are 18.7 +- 10.2 % of the head, so 70 % is 5 SD above their mean",
    )


class CollapseSettings(_Section):
    region_min_elevation_deg: float = Field(
        0.0, ge=0, lt=90, description="weight-bearing surface for the head depression: directions from the head centre "
        "at least this far above the equator, degrees (0: w > 0; docs/method.md section 6)",
    )
    averaging_sigma_mm: float = Field(
        1.0, gt=0, le=5, description="surface depth averaged with a Gaussian of this sigma over the surface, which "
        "cancels most of the voxel staircase of a binary mask, mm",
    )
    reference_passes: int = Field(
        2, ge=1, le=5, description="the reference sphere as the grid images it is built at the fitted sphere, then "
        "again at the sphere matched to the intact surface through it (2 passes)",
    )
    detection_limit_factor: float = Field(
        0.7, gt=0, le=2, description="detection limit = this x the scan voxel's extent along the radial direction; a "
        "shallower depression is stage 'none' (set from the null distribution on intact heads, docs/method.md 6)",
    )
    roughness_limit_factor: float = Field(
        7.0, ge=0, le=20, description="the detection limit is at least this x the surface roughness (robust SD of the "
        "averaged depth over the weight-bearing surface): a hand-drawn outline's slice-to-slice wobble is not "
        "collapse (docs/method.md 6)",
    )
    breadth_sigma_mm: float = Field(
        2.5, gt=0, le=10, description="the depth is also averaged with a Gaussian of this sigma, mm: a collapse spans "
        "millimetres of the dome, a voxel or two that an outline missed do not (docs/method.md 6)",
    )
    breadth_factor: float = Field(
        0.6, ge=0, le=1, description="a point counts as depressed only where that wider average also reaches this x "
        "its detection limit (phantom dents above the limit: 0.81 or more; a rough outline's false dent: 0.42)",
    )
    floor_extrapolation: bool = Field(
        True, description="a collapsed head's depression is extrapolated to zero averaging width from the two "
        "averages (averaging_sigma_mm, breadth_sigma_mm): the Gaussian average lowers a rounded dent's floor by "
        "its curvature x sigma^2, e.g. 0.2 mm for a 12 mm wide dent on 1 mm voxels (docs/method.md 6)",
    )
    nf_cutoff_pct: float = Field(
        25.0, gt=0, le=100, description="literature cut-off flagged at or above this NF, % (Hip Int 2022: collapse "
        "within a year 90.6 % vs 31.3 %)",
    )
    jic_cutoff_types: tuple[str, ...] = Field(
        ("C2",), description="literature cut-off flagged for these JIC types (Kuroda et al., Bone Joint Res 2019: "
        "C2 collapsed in 84.8 % at 5 years)",
    )
    small_lesion_nf_pct: float = Field(
        10.0, gt=0, le=100, description="literature cut-off flagged for a follow-up below this NF, % (pilot study, "
        "Bone Joint Res 2022: hips under 10 % at 3 months did not progress)",
    )


class OutputSettings(_Section):
    qc_png: bool = Field(True, description="draw qc.png (about 0.5 s of CPU per scan)")
    stl: bool = Field(True, description="write head.stl and lesion.stl")
    input_paths: Literal["as-given", "name"] = Field(
        "as-given", description="input paths in metrics.json: as the user gave them (batch: relative to the "
        "manifest), or the file name only (folder names often carry patient names)"
    )
    dicom_seg: bool = Field(
        False, description="for a DICOM input, also write seg.dcm (DICOM SEG) and sr.dcm (measurement report); "
        "they carry the source's patient and study modules, on purpose (onfh analyze --dicom-seg)"
    )


class LongitudinalSettings(_Section):
    """`onfh compare`: rigid registration of a follow-up to the baseline and its checks (docs/method.md 5)."""

    mask_dilation_mm: float = Field(
        12.0, ge=0, le=30,
        description="fixed-image mask: the baseline head mask dilated by this, mm (takes in the neck stub)",
    )
    voxel_mm: float = Field(1.0, gt=0.2, le=4, description="isotropic voxel of the baseline region registered, mm")
    shrink_factors: tuple[int, ...] = Field((4, 2, 1), description="multi-resolution shrink factor per level")
    smoothing_sigmas_mm: tuple[float, ...] = Field((2.0, 1.0, 0.0), description="Gaussian sigma per level, mm")
    histogram_bins: int = Field(32, ge=8, le=256, description="Mattes mutual information histogram bins")
    sampling_percentage: float = Field(0.3, gt=0, le=1, description="share of masked voxels sampled per level")
    seed: int = Field(1, ge=1, description="seed of the metric sampling (fixed: same input, same numbers)")
    max_iterations: int = Field(200, ge=1, description="optimizer iterations per level, at most")
    learning_rate_mm: float = Field(2.0, gt=0, description="first optimizer step, mm of physical shift")
    min_step_mm: float = Field(0.02, gt=0, description="the optimizer stops when its step falls below this, mm")
    relaxation_factor: float = Field(0.9, gt=0, lt=1, description="step shrink factor at each reversal of direction")
    refine_passes: int = Field(1, ge=0, le=5, description="full-resolution passes restarted after the pyramid")
    refine_learning_rate_mm: float = Field(1.0, gt=0, description="first step of each refinement pass, mm")
    min_head_dice: float = Field(
        0.85, ge=0, le=1, description="head-mask Dice after alignment below which a warning is given"
    )
    max_rotation_deg: float = Field(20.0, gt=0, description="a larger recovered rotation gives a warning, degrees")
    max_head_radius_difference_mm: float = Field(
        3.0, gt=0, description="larger head-radius difference between visits: refused as another patient or hip, mm"
    )
    side_offset_mm: float = Field(
        40.0, gt=0,
        description="head centres farther than this from x = 0 on opposite sides: refused as the other hip, mm",
    )

    @model_validator(mode="after")
    def _levels(self):
        if not self.shrink_factors or len(self.shrink_factors) != len(self.smoothing_sigmas_mm):
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one value per level, as many of each")
        if min(self.shrink_factors) < 1 or min(self.smoothing_sigmas_mm) < 0:
            raise ValueError("shrink factors must be >= 1 and smoothing sigmas >= 0")
        return self


class SegmentationSettings(_Section):
    """Automatic segmentation (``onfh analyze`` without masks; docs/segmentation.md)."""

    coarse_voxel_mm: float = Field(2.0, gt=0.5, le=6, description="voxel of the whole-image search grid, mm")
    bias_sigma_mm: float = Field(30.0, gt=5, description="Gaussian width of the bright-tissue bias estimate, mm")
    hough_radius_mm: tuple[float, float] = Field(
        (15.0, 28.0), description="marrow-sphere radii searched by the Hough vote, mm"
    )
    hough_candidates: int = Field(6, ge=1, le=50, description="Hough peaks verified as femoral-head candidates")
    head_radius_mm: tuple[float, float] = Field(
        (17.0, 32.0), description="plausible femoral-head radius (bone surface), mm; outside it: no head"
    )
    working_voxel_mm: float = Field(
        0.7, gt=0.2, le=3, description="target voxel of the head crop; thick slices are subdivided to it, mm"
    )
    crop_margin_mm: float = Field(25.0, ge=15, description="head crop half-size beyond the head radius, mm")
    surface_level: float = Field(
        0.5, gt=0.1, lt=0.95, description="marrow-surface iso-level, fraction of the head's marrow signal"
    )
    fit_resolution_mm: float = Field(
        1.25, gt=0.3, le=5,
        description="sphere fit uses marrow-surface points whose voxel extent along the normal is at most this, mm",
    )
    fit_radius_tolerance_mm: float = Field(
        4.0, gt=0.5, le=20,
        description="marrow sphere radius within this of the candidate's verified marrow radius, mm",
    )
    cortex_offset_mm: float = Field(
        1.0, ge=0, le=4, description="fitted marrow sphere radius + this = head (bone surface) radius, mm"
    )
    bright_level: float = Field(
        0.55, gt=0.1, lt=0.95, description="marrow-like signal: fraction of the head's marrow signal"
    )
    healthy_level: float = Field(
        0.72, gt=0.1, lt=0.95,
        description="healthy-marrow signal for femur connectivity and the lesion test, fraction of the head's marrow "
        "signal",
    )
    gap_mm: float = Field(
        1.5, ge=0, le=5, description="erosion radius before marrow reconstruction: closes band gaps < 2x this, mm"
    )
    band_gap_slice_fraction: float = Field(
        0.4, ge=0, le=1,
        description="in the lesion test the erosion radius is at least this fraction of the slice thickness: a band "
        "lying between two thick slices is averaged into both and leaves a hole about a slice wide",
    )
    slice_bridge_level: float = Field(
        0.9, ge=0, lt=1.2,
        description="lesion test: signal (fraction of marrow, smoothed in plane) a boundary between two thick slices "
        "needs to connect healthy marrow; a band lying between two slices is averaged to below it (0: off)",
    )
    opening_mm: float = Field(
        2.5, gt=0, le=8, description="lesion opening radius; > drill-track radius (1.5-2 mm) and cortex shell, mm"
    )
    margin_refine_voxels: float = Field(
        0.5, ge=0, le=3,
        description="lesion margin moved to the band/marrow half-maximum by at most this many acquisition voxels "
        "(0: off)",
    )
    margin_refine_dark_voxels: float = Field(
        1.0, ge=0, le=3,
        description="the same reach where the core behind the margin is dark (Mitchell C/D): along thick slices a "
        "whole end slice can hold 30-50 % lesion, under the strict connectivity level, and between a dark core and "
        "marrow the half level holds at any depth (behind a bright core it does not: margin_refine_voxels there); "
        "acquisition voxels, <= margin_refine_voxels: off",
    )
    track_min_length_mm: float = Field(
        5.0, ge=0, le=40,
        description="drill track (core decompression): a thin dark piece at least this long in the head marrow, "
        "touching the lesion and much longer than wide, is a track; it and its straight continuation into the "
        "lesion, as far as it is seen, are not lesion (a tube of fluid or granulation tissue, not necrosis); "
        "0: off, mm",
    )
    track_max_radius_mm: float = Field(
        3.0, gt=0, le=6, description="drill track: a thin piece wider than this radius is no track (drills: 1.5-2 mm "
        "radius; the opening removes only pieces thinner than 2 x opening_mm anyway), mm"
    )
    track_contrast: float = Field(
        0.05, ge=0, le=1,
        description="drill track: followed into the lesion while its axis is darker than a coaxial ring 1-3 mm "
        "around it by at least this (fraction of the head's marrow signal): where the core is as dark as the "
        "track it cannot be seen and is not followed",
    )
    track_axis_length_mm: float = Field(
        20.0, ge=0, le=60,
        description="drill track: its direction is read from the dark line it draws through the femur's marrow "
        "over this length back from the piece next to the lesion (a few mm long, its own axis unreliable on "
        "thick slices); 0: the piece's principal axis, mm",
    )
    track_axis_cone_deg: float = Field(
        50.0, ge=0, le=90,
        description="drill track: directions searched for its line, within this angle of the principal axis of "
        "the piece next to the lesion, degrees",
    )
    min_lesion_ml: float = Field(0.15, ge=0, description="lesion components smaller than this are dropped, mL")
    surface_contact_mm: float = Field(
        3.0, gt=0, description="a lesion component must reach this close to the head surface (subchondral), mm"
    )
    neck_cortex_mm: float = Field(1.5, ge=0, le=5, description="marrow -> bone outer surface in the neck, mm")
    min_inner_signal: float = Field(
        0.7, gt=0, lt=1.5, description="head candidate: lower inner ball signal / bright-tissue level at least"
    )
    min_surface_coverage: float = Field(
        0.35, gt=0, le=1, description="head candidate: share of sphere directions with a marrow-surface inlier"
    )
    acetabulum_plate_mm: float = Field(
        2.5, ge=0, le=6, description="pelvic marrow -> acetabular bone surface (subchondral plate), mm"
    )
    acetabulum_opening_mm: float = Field(
        2.0, ge=0, le=6, description="opening radius separating pelvic marrow from sheets of fat (< 2x this thick), mm"
    )
    acetabulum_edge_tolerance_mm: float = Field(
        6.0, gt=0, description="joined and bulk acetabular edges further apart than this: ambiguous, bulk used, mm"
    )
    acetabulum_reach_mm: float = Field(
        20.0, gt=2, description="pelvic marrow farther than this beyond the head surface is ignored, mm"
    )
    max_sphere_rms_mm: float = Field(1.0, gt=0, description="QC flag when the marrow-sphere RMS residual is larger, mm")
    min_band_contrast: float = Field(
        0.25, ge=0, description="QC flag when the lesion margin is less than this darker than marrow (fraction)"
    )
    max_validated_slice_mm: float = Field(
        4.0, gt=0, description="QC flag for thicker slices (the lesion's band may blur away; validated up to this), mm"
    )
    min_head_coverage: float = Field(
        0.5, ge=0, le=1, description="QC flag when the head surface is seen over a smaller share of directions"
    )
    small_lesion_ml: float = Field(
        1.0, ge=0, description="QC flag for a lesion smaller than this (a mimic such as a vessel or cyst?), mL"
    )
    rival_votes_share: float = Field(
        0.25, ge=0, le=1,
        description="a verified head-like candidate with at least this share of the chosen head's Hough votes is a "
        "rival head",
    )
    max_head_candidates: int = Field(
        2, ge=1, description="QC flag when more rival head-like candidates are found (two hips are expected)"
    )
    thick_slice_ratio: float = Field(
        1.5, ge=1,
        description="acetabular-edge QC flag: slices are thick when the coarsest voxel spacing is at least this times "
        "the finest",
    )
    coronal_tolerance_deg: float = Field(
        30.0, ge=0, le=90,
        description="acetabular-edge QC flag: thick slices whose normal lies more than this from anterior-posterior "
        "(not coronal) lose the roof's thin lateral lip, degrees",
    )
    head_box_margin_mm: float = Field(
        3.0, ge=0, le=20,
        description="lesion test: healthy marrow is traced in the head's bounding box grown by this, mm",
    )
    other_hip_neck_lateral: float = Field(
        0.05, gt=-1, lt=1,
        description="a head whose neck axis points less than this (x-component) toward the given side is refused as "
        "the other hip",
    )
    marrow_inner_fraction: float = Field(
        0.6, gt=0, le=1,
        description="head marrow signal read in the lower inner ball of this fraction of the marrow radius (never "
        "lesion)",
    )
    marrow_percentile: float = Field(
        80.0, gt=0, le=100, description="head marrow signal: this percentile of the inner ball (yellow marrow)"
    )
    crop_smoothing_mm: float = Field(
        0.5, ge=0, le=3, description="Gaussian smoothing of the head crop on the working grid, mm (noise)"
    )
    dome_surface: bool = Field(
        True, description="follow a collapsed dome: the surface found along radial lines where it lies inside "
        "the sphere"
    )
    dome_search_mm: float = Field(7.0, gt=1, le=15, description="dome surface searched this far inside the sphere, mm")
    dome_outer_mm: float = Field(
        1.2, ge=0.3, le=3, description="and this far outside it (short of the joint film and acetabular cartilage), mm"
    )
    dome_profile_sigma_mm: float = Field(0.3, ge=0, le=2, description="Gaussian smoothing along each radial line, mm")
    dome_min_rise: float = Field(
        0.15, gt=0, lt=1, description="a cortical dip: the signal rises this much (marrow = 1) farther out"
    )
    dome_min_dip: float = Field(
        0.08, gt=0, lt=1, description="and rises this much within 3 mm inward (a dark line, not a fluid plateau)"
    )
    dome_min_slope: float = Field(0.08, gt=0, lt=2, description="a rising edge: outward slope at least this, per mm")
    dome_median_mm: float = Field(
        2.0, ge=0, le=5, description="median of the depths within this arc before the Gaussian, mm (lone wrong edges)"
    )
    dome_sigma_mm: float = Field(1.0, gt=0.2, le=5, description="Gaussian averaging of the depth over the surface, mm")
    dome_min_elevation: float = Field(
        0.0, ge=-0.5, lt=0.9, description="dome directions: world-superior component above this"
    )
    dome_neck_margin_mm: float = Field(
        4.0, ge=0, le=15, description="dome directions end this far from the neck cut, mm")
    dome_min_top_share: float = Field(
        0.4, ge=0, le=1, description="review when fewer of the radial lines over the dome's top (within 45 degrees of "
        "superior) find the bone surface: a collapse there would be missed (axial 3-3.5 mm slices 0.04-0.31, "
        "coronal 5 mm 0.33-0.38, coronal 4 mm 0.46 and up, 3.5 mm coronal and sagittal 0.69-0.82)",
    )


class SideSettings(_Section):
    on_contradiction: Literal["refuse", "warn"] = Field(
        "refuse", description="--side against the anatomy: refuse (exit 2), or warn and keep the given side "
        "(--trust-side, for a scan whose anatomy is misread)"
    )
    min_neck_lateral: float = Field(
        0.25, gt=0, lt=1, description="neck axis x-component beyond which the neck is read as running to that side "
        "(a femoral neck runs 0.6-0.75 laterally)"
    )
    min_acetabulum_offset: float = Field(
        0.15, gt=0, lt=1, description="acetabulum centroid this far (x head radius) medial to the head centre: read "
        "as that side's socket"
    )
    read_neck_from_image: bool = Field(
        True, description="without a femur mask, find the femoral neck in the T1 marrow signal to read the side"
    )


class ReadsSettings(_Section):
    """Reader studies and test-retest acquisitions in ``onfh batch`` (docs/method.md section 7)."""

    combine: Literal["adjudicated_or_first", "adjudicated_or_mean", "mean", "first_reader"] = Field(
        "adjudicated_or_mean",
        description="the value of a scan read several times used downstream (cohort statistics, regeneration): the "
        "adjudicator's read where one exists, else the readers' mean (adjudicated_or_mean, the core-lab convention), "
        "or else the first read listed in the manifest (adjudicated_or_first: adding a reader then never changes a "
        "locked cohort's figures); mean: always the readers' mean; first_reader: always the first read",
    )
    adjudicator: str = Field(
        "adjudicator", min_length=1, description="the reader name of adjudicated reads (not counted in agreement)"
    )
    default_reader: str = Field(
        "reader1", min_length=1, description="the reader of manifest rows whose reader cell is empty"
    )
    discordant_nf_points: float = Field(
        5.0, gt=0, description="two reads of a scan whose necrotic fractions differ by more are discordant, % points"
    )
    min_lesion_dice: float = Field(
        0.7, ge=0, le=1, description="two reads of a scan whose lesion masks overlap less (Dice) are discordant"
    )


class Settings(_Section):
    labels: LabelSettings = LabelSettings()
    head: HeadSettings = HeadSettings()
    reconstruction: ReconstructionSettings = ReconstructionSettings()
    location: LocationSettings = LocationSettings()
    gates: GateSettings = GateSettings()
    collapse: CollapseSettings = CollapseSettings()
    outputs: OutputSettings = OutputSettings()
    segmentation: SegmentationSettings = SegmentationSettings()
    longitudinal: LongitudinalSettings = LongitudinalSettings()
    side: SideSettings = SideSettings()
    reads: ReadsSettings = ReadsSettings()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def load_settings(path: str | Path | None = None, **overrides) -> Settings:
    """Read settings from a YAML file (missing keys take the defaults), then apply overrides.

    Raises
    ------
    InputError
        If the file is unreadable or a value is invalid (the message names the field).
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise InputError(f"config {path} is not a mapping of settings")
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"invalid config value {where}: {first['msg']}") from None
