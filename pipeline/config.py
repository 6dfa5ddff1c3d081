"""Settings: one typed, validated object read from YAML (configs/default.yaml mirrors the defaults).

Every choice METHOD.md leaves open is a field here, and every output records the resolved settings
and their SHA-256 (of the canonical JSON form, so two files with the same values hash alike).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSettings(_Section):
    head: int = Field(1, ge=1, description="label value of the femoral head outside the lesion")
    lesion: int = Field(2, ge=1, description="label value of the necrotic lesion (part of the head)")
    grid_tolerance_mm: float = Field(
        0.01, gt=0, description="largest spacing/origin difference (mm) for a mask to count as on the image grid"
    )

    @model_validator(mode="after")
    def _distinct(self):
        if self.head == self.lesion:
            raise ValueError("head and lesion labels must differ")
        return self


class HeadSettings(_Section):
    method: Literal["neck-plane", "sphere"] = Field(
        "neck-plane", description="head delimitation from a femur mask (METHOD.md section 2)"
    )
    max_sphere_rms_mm: float = Field(1.5, gt=0, description="sphere-fit RMS residual above which a warning is given")


class ReconstructionSettings(_Section):
    isotropic: bool = Field(True, description="shape-based interpolation to isotropic voxels (METHOD.md section 3)")
    voxel_mm: float = Field(0.5, gt=0.05, le=5, description="isotropic voxel size of the reconstruction, mm")
    stl_from_isotropic: bool = Field(True, description="write head.stl/lesion.stl from the isotropic masks")


class LocationSettings(_Section):
    default_edge_angle_deg: float = Field(
        30.0, gt=0, lt=90, description="default weight-bearing half-span: u = ±r·sin(angle) (METHOD.md section 4)"
    )
    plane_step_mm: float = Field(0.25, gt=0, le=2, description="sampling step on the mid-planes, mm")
    contact_shell_mm: float = Field(
        1.0, gt=0, le=5, description="depth under the head outline counted as lesion contact for the arcs, mm"
    )


class GateSettings(_Section):
    head_volume_ml: tuple[float, float] = Field((25.0, 80.0), description="plausible femoral-head volume, mL")
    max_slice_thickness_mm: float = Field(5.0, gt=0, description="thicker slices give a warning")


class OutputSettings(_Section):
    qc_png: bool = Field(True, description="draw qc.png (about 1-2 s per scan)")
    stl: bool = Field(True, description="write head.stl and lesion.stl")


class Settings(_Section):
    labels: LabelSettings = LabelSettings()
    head: HeadSettings = HeadSettings()
    reconstruction: ReconstructionSettings = ReconstructionSettings()
    location: LocationSettings = LocationSettings()
    gates: GateSettings = GateSettings()
    outputs: OutputSettings = OutputSettings()

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
