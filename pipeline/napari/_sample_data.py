"""napari sample data: the synthetic sample cohort's scans with their label maps and landmarks.

The cohort is read lazily from a ``manifest.csv``, the first found of:

1. the folder named by the environment variable ``ONFH_SAMPLE_DATA`` (if set, the only one);
2. the repository's committed ``sample_data/`` (beside the ``pipeline`` package);
3. a cache folder (``$XDG_CACHE_HOME/onfh`` or ``~/.cache/onfh``), generated there on first use by
   :func:`pipeline.synthetic.sampledata.write_sample_cohort` (about 40 s, once).

Each sample opens the image, its label map (read as ``onfh analyze --labels`` reads it, so on
the image's exact grid) and, when the manifest gives one, the acetabular edge as a Points layer in
RAS mm. The image layer's metadata records the hip's side for the "Analyze hip" widget.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import __version__
from pipeline.io.manifest import read_manifest
from pipeline.napari._layers import points_layer_data, scan_with_labels, stem

REPO_SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"

#: Sample keys (image file stems of the cohort), as listed in napari.yaml.
SAMPLES = (
    "ONFH01_m00_cor", "ONFH01_m03_cor", "ONFH01_m12_cor", "ONFH02_m00_cor", "ONFH02_m12_cor",
    "ONFH03_m00_obl", "ONFH04_m00_bilat", "ONFH05_m00_3d",
)


def cache_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "onfh" / f"sample_data-{__version__}"


def sample_manifest(generate: bool = True) -> Path:
    """The cohort's manifest.csv (see the module docstring for where it is looked for).

    With ``ONFH_SAMPLE_DATA`` set, that folder is the only place looked at (and generated into).
    """
    env = os.environ.get("ONFH_SAMPLE_DATA")
    candidates = [Path(env)] if env else [REPO_SAMPLE_DATA, cache_folder()]
    for folder in candidates:
        if (folder / "manifest.csv").is_file():
            return folder / "manifest.csv"
    if not generate:
        raise FileNotFoundError(f"no sample cohort manifest in {', '.join(str(c) for c in candidates)}")
    from pipeline.synthetic.sampledata import write_sample_cohort

    return Path(write_sample_cohort(candidates[-1]))


def load_sample(key: str) -> list[tuple]:
    """Layer data for one scan of the cohort: image, label map, acetabular edge(s)."""
    # one row per hip: the sample's reader study adds other readers' reads and repeat acquisitions
    rows = [row for row in read_manifest(sample_manifest())
            if stem(row.image) == key and not row.reader and (row.repeat or 1) == 1]
    if not rows:
        raise KeyError(f"sample {key!r} is not in the cohort manifest")
    first = rows[0]
    layers = scan_with_labels(first.image, first.labels)
    image_meta = layers[0][1]["metadata"]
    image_meta["onfh_side"] = first.side
    image_meta["onfh_subject"] = first.subject
    image_meta["onfh_timepoint_months"] = first.timepoint_months
    bilateral = len({row.side for row in rows}) > 1
    for row in rows:
        if row.acetabular_edge is not None:
            name = f"acetabular edge ({row.side})" if bilateral else "acetabular edge"
            layers.append(points_layer_data([row.acetabular_edge], name))
    return layers


def _sample_function(key: str):
    def sample() -> list[tuple]:
        return load_sample(key)

    sample.__name__ = sample.__qualname__ = f"sample_{key}"
    sample.__doc__ = f"Sample cohort scan {key} with its label map."
    return sample


sample_ONFH01_m00_cor = _sample_function("ONFH01_m00_cor")
sample_ONFH01_m03_cor = _sample_function("ONFH01_m03_cor")
sample_ONFH01_m12_cor = _sample_function("ONFH01_m12_cor")
sample_ONFH02_m00_cor = _sample_function("ONFH02_m00_cor")
sample_ONFH02_m12_cor = _sample_function("ONFH02_m12_cor")
sample_ONFH03_m00_obl = _sample_function("ONFH03_m00_obl")
sample_ONFH04_m00_bilat = _sample_function("ONFH04_m00_bilat")
sample_ONFH05_m00_3d = _sample_function("ONFH05_m00_3d")
