"""Settings: defaults, the shipped YAML, validation, hashing."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import Settings, load_settings
from pipeline.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_equals_the_built_in_defaults():
    shipped = load_settings(ROOT / "configs" / "default.yaml")
    assert shipped.model_dump() == Settings().model_dump()
    assert shipped.sha256 == Settings().sha256


def test_overrides_and_hash_change(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"reconstruction": {"voxel_mm": 0.7}}))
    s = load_settings(path, labels__lesion=3)
    assert s.reconstruction.voxel_mm == 0.7 and s.labels.lesion == 3 and s.labels.head == 1
    assert s.sha256 != Settings().sha256


@pytest.mark.parametrize("text, field", [
    ("head: {method: cube}", "head.method"),
    ("labels: {head: 2, lesion: 2}", "labels"),
    ("reconstruction: {voxel_mm: -1}", "reconstruction.voxel_mm"),
    ("unknown_section: {a: 1}", "unknown_section"),
    ("- just a list", "not a mapping"),
])
def test_invalid_settings_are_refused_naming_the_field(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        load_settings(path)
