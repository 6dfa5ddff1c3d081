"""Writing results: atomic output folders, JSON without NaN, file hashes, provenance."""

from __future__ import annotations

import contextlib
import functools
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

from pipeline import __version__
from pipeline.errors import InputError

PACKAGES = ("numpy", "scipy", "nibabel", "SimpleITK", "scikit-image", "pydicom", "pydantic", "PyYAML")


#: written into every output folder once it is complete: what wrote it and every path it holds.
#: Only a folder whose every entry is listed here is ever replaced or removed by onfh.
MARKER = ".onfh-output.json"
_TMP_TAG, _OLD_TAG = ".tmp-", ".old-"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), since
    setting it to read it would race with other threads writing files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_kind(folder: str | Path) -> str | None:
    """The kind of onfh output (analyze, compare, batch, sample-data) ``folder`` holds, from its
    marker; None when there is no readable marker."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("onfh_output") if isinstance(marker, dict) else None


def _entries(folder: Path) -> list[str]:
    """Every file and folder below ``folder``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def foreign_entries(folder: str | Path, kind: str) -> list[str]:
    """Entries of an existing ``folder`` that an onfh output of ``kind`` did not write.

    Empty for an empty folder, or for a complete earlier output of the same kind that nobody
    added to; every entry when the marker is missing or names another kind. A batch folder is
    updated in place, never replaced, so its marker alone makes it onfh's.
    """
    folder = Path(folder)
    present = _entries(folder)
    if not present:
        return []
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return present
    if not isinstance(marker, dict) or marker.get("onfh_output") != kind:
        return present
    if kind == "batch":
        return []
    listed = set(marker.get("entries") or []) | {MARKER}
    return [entry for entry in present if entry not in listed]


def check_output_dir(out_dir: str | Path, kind: str) -> Path:
    """Refuse an output folder that onfh may not write; return it as an absolute path.

    Allowed: a folder that does not exist yet and can be created, an empty folder, or a complete
    earlier onfh output of the same ``kind`` to which nothing was added (see :func:`foreign_entries`).
    Called before the work starts, so that a long run is not wasted on an --out it cannot use.

    Raises
    ------
    InputError
        Naming the folder and what to do.
    """
    given = str(out_dir)
    out = Path(out_dir).absolute()
    here = Path.cwd().resolve()
    real = out.resolve()
    if real == here or real in here.parents:
        raise InputError(f"--out {given} is the current folder{'' if real == here else ' or one above it'}: "
                         "name a new folder for the results, e.g. --out results")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"--out {given} exists and is not a folder: name a new folder for the results")
        foreign = foreign_entries(out, kind)
        if foreign:
            other = output_kind(out)
            what = (f"an onfh {other} output, not {kind}" if other and other != kind else
                    f"{len(foreign)} file(s) onfh did not write, e.g. {foreign[0]}")
            raise InputError(f"--out {given} already holds {what}: name a new or empty folder "
                             "(onfh never replaces files it did not write)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"--out {given} is not writable")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {given}: cannot write into {ancestor} (permission denied or not a folder)")
    return out


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents (umask permissions); return those created,
    deepest last."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    missing.reverse()
    try:
        for path in missing:
            path.mkdir()
    except OSError as exc:
        _remove_empty(missing)
        raise InputError(f"cannot create {folder}: {exc.strerror}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        with contextlib.suppress(OSError):
            path.rmdir()


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` as a complete onfh output of ``kind`` listing every entry it holds."""
    entries = [] if kind == "batch" else _entries(folder)
    payload = {"onfh_output": kind, "software_version": __version__, "entries": entries}
    (folder / MARKER).write_text(json.dumps(payload, indent=1) + "\n")


def is_onfh_temporary(path: Path) -> bool:
    """A temporary or set-aside folder of an atomic write that a killed process left behind:
    named as :func:`atomic_output_dir` names them and holding its start marker."""
    name = path.name
    return (name.startswith(".") and (_TMP_TAG in name or _OLD_TAG in name) and path.is_dir()
            and (output_kind(path) or "").startswith(("pending", "analyze", "compare", "sample-data")))


def remove_output_dir(folder: str | Path, kind: str) -> bool:
    """Remove ``folder`` only if it is wholly an onfh output of ``kind``; return whether it was."""
    folder = Path(folder)
    if not folder.is_dir() or foreign_entries(folder, kind) or output_kind(folder) != kind:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path, kind: str):
    """Yield a temporary folder beside ``out_dir``; on success it replaces ``out_dir`` whole.

    ``out_dir`` must pass :func:`check_output_dir` (new, empty, or an earlier output of ``kind``
    nobody added to): onfh never deletes a file it did not write. Folders and files get the
    user's umask permissions (a colleague on a shared drive can open them). On any exception the
    temporary folder (and any parent this call created) is removed and ``out_dir`` is left as it
    was, so a failure never leaves half-written results.
    """
    out_dir = check_output_dir(out_dir, kind)
    created = _make_parents(out_dir.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{_TMP_TAG}", dir=out_dir.parent))
    except OSError as exc:
        _remove_empty(created)
        raise InputError(f"cannot write into {out_dir.parent}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        # a start marker, so that a killed run's leftover is recognised as onfh's own
        (tmp / MARKER).write_text(json.dumps({"onfh_output": f"pending {kind}"}) + "\n")
        yield tmp
        write_marker(tmp, kind)
        # checked again: the folder may have changed during a long run
        check_output_dir(out_dir, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}{_OLD_TAG}{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recorded_path(path: str | Path, base: str | Path | None = None, name_only: bool = False) -> str:
    """An input path as outputs record it: the file name only, or as the user gave it, except
    that a path inside ``base`` (a batch manifest's folder) is written relative to it. Never
    resolved to an absolute path: folder names often carry patient names."""
    path = Path(path)
    if name_only:
        return path.name
    if base is not None and path.is_absolute():
        base = Path(base).absolute()
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return str(path)


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


@functools.cache
def _package_versions() -> tuple:
    """(name, version or None) of :data:`PACKAGES`, looked up once per process (each lookup
    searches every sys.path entry: about 0.05 s a scan in a batch)."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, None))
    return tuple(versions)


def provenance(settings, elapsed_s: float | None = None) -> dict:
    return {
        "software": "onfh-pipeline",
        "software_version": __version__,
        "python": platform.python_version(),
        "packages": dict(_package_versions()),
        "config_sha256": settings.sha256,
        "config": settings.model_dump(mode="json"),
        "elapsed_seconds": None if elapsed_s is None else round(elapsed_s, 3),
    }
