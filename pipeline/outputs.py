"""Writing results: atomic output folders, JSON without NaN, file hashes, provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from . import __version__

PACKAGES = ("numpy", "scipy", "nibabel", "SimpleITK", "scikit-image", "pydicom", "pydantic", "PyYAML")


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path):
    """Yield a temporary folder beside ``out_dir``; on success it replaces ``out_dir`` whole.

    On any exception the temporary folder is removed and ``out_dir`` is left as it was, so a
    failure never leaves half-written results.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_json(value, ndigits: int | None = None):
    """numpy scalars/arrays to plain Python; NaN and Inf to None (JSON has neither).

    With ``ndigits``, floats are rounded to that many decimals: figures carry no false precision,
    and the last-bit differences of floating-point order (e.g. the same scan stored in another
    axis order) do not change the written numbers.
    """
    if isinstance(value, dict):
        return {str(k): clean_json(v, ndigits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, ndigits) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist(), ndigits)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return value if ndigits is None else round(value, ndigits) + 0.0  # + 0.0: no "-0.0"
    return value


def write_json(path: str | Path, payload: dict, ndigits: int | None = 6) -> None:
    """JSON with floats rounded to ``ndigits`` decimals (mL, mm, degrees: 1e-6 is far below any
    measurement's precision)."""
    Path(path).write_text(json.dumps(clean_json(payload, ndigits), indent=2, allow_nan=False) + "\n")


def sha256_of(path: str | Path, files: list[str] | None = None) -> str:
    """SHA-256 of a file, or of a DICOM series (its files' bytes in sorted name order)."""
    path = Path(path)
    digest = hashlib.sha256()
    targets = [Path(f) for f in sorted(files)] if files else ([path] if path.is_file() else sorted(path.iterdir()))
    for target in targets:
        if target.is_file():
            with open(target, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def provenance(settings, elapsed_s: float | None = None) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "software": "onfh-pipeline",
        "software_version": __version__,
        "python": platform.python_version(),
        "packages": versions,
        "config_sha256": settings.sha256,
        "config": settings.model_dump(mode="json"),
        "elapsed_seconds": None if elapsed_s is None else round(elapsed_s, 3),
    }
