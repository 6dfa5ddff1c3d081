"""napari writer: a Labels layer as NIfTI on the original image's own voxel grid.

The file is what :func:`pipeline.io.scan.save_like` writes for the CLI's ``labels.nii.gz``: the
voxels in the image file's own order with its affine (sform and qform), so ``onfh analyze IMAGE
--labels FILE`` reads back exactly the layer's values, and ITK-SNAP or 3D Slicer overlay it voxel
for voxel on the image.

:func:`save_read` saves a core-lab read: a reader's label map under that reader's folder, with its
audit entry (the "Analyze hip" widget's Export).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.audit import LOG_NAME, check_reader, label_changes, last_state, open_log
from pipeline.io.outputs import sha256_of
from pipeline.io.scan import Scan, load_labels, save_like
from pipeline.napari._layers import META_KEY, label_dtype, scan_from_geometry

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_path(path: str | Path) -> Path:
    """``path`` with a NIfTI suffix (``.nii.gz`` added when it has none)."""
    path = Path(path)
    return path if path.name.lower().endswith(NIFTI_SUFFIXES) else path.with_name(path.name + ".nii.gz")


def labels_scan_geometry(data: np.ndarray, attributes: dict) -> Scan:
    """The grid a Labels layer's data lies on: the one the reader stored in its metadata, or
    (for a layer painted from scratch) its own data-to-world affine in napari."""
    geometry = (attributes.get("metadata") or {}).get(META_KEY)
    if geometry and "source_affine" in geometry:
        return scan_from_geometry(geometry)
    affine = attributes.get("affine")
    if affine is None:
        raise InputError("the labels layer has no geometry: open the image with the onfh reader first")
    affine = np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    scale = np.asarray(attributes.get("scale", np.ones(3)), dtype=float)
    translate = np.asarray(attributes.get("translate", np.zeros(3)), dtype=float)
    if not (np.allclose(scale, 1) and np.allclose(translate, 0)):
        base = np.eye(4)
        base[:3, :3] = np.diag(scale)
        base[:3, 3] = translate
        affine = affine @ base
    # The layer's own voxel order is the "file" order here: no reorientation.
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    return Scan(np.broadcast_to(np.uint8(0), np.shape(data)), affine, affine, identity, {})


def layer_on_grid(data, attributes: dict) -> tuple[np.ndarray, Scan]:
    """A Labels layer's 3D data and the grid it lies on, checked (what every onfh writer saves)."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"the onfh writer saves 3D label maps; this layer is {data.ndim}D")
    scan = labels_scan_geometry(data, attributes)
    if tuple(data.shape) != scan.shape:
        raise InputError(f"labels layer shape {data.shape} does not match its grid {scan.shape}")
    return data, scan


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers: NIfTI on the original grid.

    Returns
    -------
    list of str
        The path written.
    """
    data, scan = layer_on_grid(data, attributes)
    out = nifti_path(path)
    save_like(data, scan, out, dtype=label_dtype(data))
    return [str(out)]


#: A case name (the image layer's name: a file stem, or a worklist code) names files: no path parts.
_CASE = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,127}")


def read_paths(folder: str | Path, reader: str, case: str) -> tuple[Path, Path, Path]:
    """Where a reader's read of a case goes under the reads folder ``folder``.

    Returns
    -------
    labels, analysis, log : Path
        ``folder/<reader>/<case>_labels.nii.gz`` (the read), ``folder/<reader>/<case>/`` (what
        ``onfh analyze`` writes for it) and ``folder/<reader>/audit.jsonl``.
    """
    reader = check_reader(reader)
    if not _CASE.fullmatch(case or ""):
        raise InputError(f"cannot name a read after the image layer {case!r}: rename the layer "
                         "(no '/', '\\', leading '.')")
    mine = Path(folder) / reader
    return mine / f"{case}_labels.nii.gz", mine / case, mine / LOG_NAME


def save_read(label_map: np.ndarray, scan: Scan, folder: str | Path, reader: str, case: str,
              reason: str = "", opened: np.ndarray | None = None, before_commit=None) -> dict:
    """Save a reader's label map of a case and append its audit entry, all or nothing.

    The map (on ``scan``'s canonical grid, its label values as painted) is written as
    ``<case>_labels.nii.gz`` under ``folder/<reader>/`` (:func:`read_paths`) on the image's own
    grid, as :func:`write_labels` writes it; every content saved is also kept, never replaced, as
    ``versions/<sha256>.nii.gz`` there, so an update never hides the earlier read (21 CFR
    11.10(e)). ``audit.jsonl`` beside it gets one entry (:mod:`pipeline.io.audit`): action
    ``create`` (voxels added and removed against ``opened``, the labels as opened, or an empty
    map) or ``update`` (against the file's previous content; a reason is then required).

    An existing file must be the one the audit trail last recorded: a file onfh did not write,
    or changed outside onfh, is refused (never replaced). ``before_commit`` (e.g. writing the
    analysis folder) runs once every check has passed, before the file is replaced; if it fails,
    nothing of the read is saved.

    Returns
    -------
    dict
        The audit entry written, with ``path`` (the labels file) added.
    """
    label_map = np.asarray(label_map)
    target, _, log_path = read_paths(folder, reader, case)
    mine = target.parent
    if mine.exists() and not mine.is_dir():
        raise InputError(f"{mine} exists and is not a folder")
    created = [p for p in (mine, *mine.parents) if not p.exists()]
    mine.mkdir(parents=True, exist_ok=True)
    log_existed = log_path.exists()
    tmp = mine / f".{target.name[:-len('.nii.gz')]}.tmp-{os.getpid()}.nii.gz"
    try:
        with open_log(log_path) as log:
            known = last_state(log_path, target.name)
            if target.exists():
                before = sha256_of(target)
                if before != known:
                    raise InputError(f"{target} is not the read this audit trail last recorded (a file onfh "
                                     "did not write, or changed outside onfh): move it away; it is never "
                                     "replaced")
                if not (reason or "").strip():
                    raise InputError(f"{target.name} exists: type the reason for this change")
                previous, action = load_labels(target, scan), "update"
            else:
                before, previous, action = None, opened, "create"
            added, removed = label_changes(previous, label_map)
            save_like(label_map, scan, tmp, dtype=label_dtype(label_map))
            after = sha256_of(tmp)
            line = log.seal(reader, action, target.name, before, after, added, removed, (reason or "").strip())
            if before_commit is not None:
                before_commit()
            _keep_version(tmp, mine / "versions", after)
            os.replace(tmp, target)
            log.write(line)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if not log_existed and log_path.exists() and log_path.stat().st_size == 0:
            log_path.unlink()
        for path in created:  # folders this call made (deepest first), if still empty
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return {**json.loads(line), "path": str(target)}


def _keep_version(source: Path, versions: Path, sha256: str) -> None:
    """Copy a saved read to ``versions/<sha256>.nii.gz`` unless that content is already kept."""
    versions.mkdir(exist_ok=True)
    kept = versions / f"{sha256}.nii.gz"
    if kept.exists():
        return
    partial = versions / f".{sha256}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, kept)
    finally:
        partial.unlink(missing_ok=True)
