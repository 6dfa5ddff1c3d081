"""Audit trail of saved reads: ``audit.jsonl`` beside the label files it describes.

Every saved change of a label file appends one JSON line: UTC time, reader, action, file name,
the file's SHA-256 before (``null`` for a new file) and after, the voxels added and removed per
label value, the reason the reader typed, ``prev`` (SHA-256 of the previous line's exact bytes;
:data:`GENESIS` for the first line) and ``entry_sha256`` (SHA-256 of the line's own bytes up to
that field). The log is only ever appended to (``O_APPEND``, flushed and fsynced): a change never
hides the earlier record (21 CFR 11.10(e)), and the earlier file itself is kept by the writer
(``versions/<sha256>.nii.gz``, :func:`pipeline.napari._writer.save_read`).

Tamper evidence, not tamper proofing: any changed byte, a deleted or reordered line, or a torn write
makes :func:`verify` name the entry; a log rewritten whole with recomputed hashes, or cut after its
last entry, is only caught against a copy of the last line's SHA-256 kept elsewhere (``onfh audit
verify`` prints it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.errors import InputError

LOG_NAME = "audit.jsonl"
#: ``prev`` of the first entry: the SHA-256 of this fixed text (so a log cannot start mid-chain unseen).
GENESIS = hashlib.sha256(b"onfh audit trail genesis").hexdigest()
#: Every entry's fields, in the order they are written (``entry_sha256`` last).
FIELDS = ("time", "reader", "action", "file", "sha256_before", "sha256_after", "voxels_added",
          "voxels_removed", "reason", "prev", "entry_sha256")
ACTIONS = ("create", "update")
#: Reader names name folders: letters, digits, ".", "_", "-" (no spaces or path separators).
READER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Broken:
    """The first entry of a log that fails :func:`verify`."""

    line: int  #: 1-based line number in the file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def check_reader(name: str) -> str:
    """The reader name, stripped; InputError when it is empty or cannot name a folder."""
    name = (name or "").strip()
    if not name:
        raise InputError("enter the reader name: every saved read is signed with it")
    if not READER.fullmatch(name):
        raise InputError(f"reader name {name!r} may hold only letters, digits, '.', '_' and '-' (at most 64; "
                         "it names the reader's folder), e.g. jdoe")
    return name


def utc_now() -> str:
    """The current UTC time, ISO 8601 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def label_changes(before: np.ndarray | None, after: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Voxels added and removed per label value (0, the background, not listed).

    A voxel repainted from label 1 to 2 counts as added to 2 and removed from 1. ``before`` None
    (no earlier map) counts every labelled voxel as added.

    Returns
    -------
    added, removed : dict of str to int
        Keyed by the label value as text (JSON keys), only values that changed, in value order.
    """
    after = np.asarray(after)
    before = np.zeros_like(after) if before is None else np.asarray(before)
    if before.shape != after.shape:
        raise InputError(f"cannot compare label maps of shapes {before.shape} and {after.shape}")
    changed = before != after
    added, removed = {}, {}
    new_values, new_counts = np.unique(after[changed], return_counts=True)
    old_values, old_counts = np.unique(before[changed], return_counts=True)
    for values, counts, out in ((new_values, new_counts, added), (old_values, old_counts, removed)):
        for value, count in zip(values.tolist(), counts.tolist()):
            if value != 0:
                out[str(value)] = int(count)
    return added, removed


def _dumps(entry: dict) -> str:
    """The one serialisation the log uses (verify requires each line to be exactly this)."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _sealed(fields: dict) -> bytes:
    """A line (without its newline) from the fields up to ``prev``, ``entry_sha256`` appended."""
    body = _dumps(fields)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return _dumps({**fields, "entry_sha256": digest}).encode("utf-8")


def _lines(data: bytes) -> list[bytes]:
    """The log's lines without their newlines; a last line without one is kept as it is."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _check_entry(raw: bytes, prev: str, last_time: datetime | None) -> tuple[str | None, datetime | None]:
    """Why one line is broken (None if intact), and its time."""
    try:
        text = raw.decode("utf-8")
        entry = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return "malformed JSON", None
    if not isinstance(entry, dict):
        return "malformed JSON (not an object)", None
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        return f"missing field(s) {', '.join(missing)}", None
    extra = [k for k in entry if k not in FIELDS]
    if extra:
        return f"unknown field(s) {', '.join(extra)}", None
    if _dumps(entry) != text or list(entry) != list(FIELDS):
        return "altered (not the bytes onfh writes for its content)", None
    if entry["prev"] != prev:
        return "wrong prev hash (an earlier line was changed, removed or inserted)", None
    body = dict(entry)
    seal = body.pop("entry_sha256")
    if hashlib.sha256(_dumps(body).encode("utf-8")).hexdigest() != seal:
        return "entry hash does not match its content (the line was changed)", None
    problem = _field_problem(entry)
    if problem:
        return problem, None
    try:
        when = datetime.fromisoformat(entry["time"][:-1] + "+00:00")
    except ValueError:
        return f"time {entry['time']} is not a valid date and time", None
    if last_time is not None and when < last_time:
        return f"time {entry['time']} is earlier than the previous entry's", None
    return None, when


def _field_problem(entry: dict) -> str | None:
    """What is wrong with an entry's values (types and forms), or None."""
    if not isinstance(entry["time"], str) or not _TIME.fullmatch(entry["time"]):
        return "time is not UTC ISO 8601 (YYYY-MM-DDTHH:MM:SS.ffffffZ)"
    if not isinstance(entry["reader"], str) or not READER.fullmatch(entry["reader"]):
        return "reader is missing or not a reader name"
    if entry["action"] not in ACTIONS:
        return f"action must be one of {', '.join(ACTIONS)}"
    name = entry["file"]
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        return "file must be the name of a file beside the log"
    before, after = entry["sha256_before"], entry["sha256_after"]
    if not (before is None or (isinstance(before, str) and _HEX64.fullmatch(before))):
        return "sha256_before must be null or 64 hex digits"
    if not (isinstance(after, str) and _HEX64.fullmatch(after)):
        return "sha256_after must be 64 hex digits"
    if (before is None) != (entry["action"] == "create"):
        return "sha256_before must be null exactly for action create"
    for key in ("voxels_added", "voxels_removed"):
        counts = entry[key]
        if not isinstance(counts, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts.values()):
            return f"{key} must map label values to positive voxel counts"
    if not isinstance(entry["reason"], str):
        return "reason must be text"
    return None


def verify(path: str | Path) -> Broken | None:
    """The first broken entry of an audit log, or None when every entry is intact.

    Checked per line, in order: UTF-8 JSON object with exactly the fields :data:`FIELDS` in that
    order and written byte for byte as onfh writes them (:func:`_dumps`); ``prev`` equal to the
    SHA-256 of the previous line's bytes (:data:`GENESIS` for line 1); ``entry_sha256`` equal to
    the SHA-256 of the line without it; values of the right form; time not earlier than the
    previous entry's; the line ended by a newline (else a torn write).

    Raises
    ------
    InputError
        When the file cannot be read.
    """
    data = _read(path)
    prev, last_time = GENESIS, None
    lines = _lines(data)
    for number, raw in enumerate(lines, start=1):
        problem, last_time = _check_entry(raw, prev, last_time)
        if problem is None and number == len(lines) and not data.endswith(b"\n"):
            problem = "incomplete (no line end: a torn write)"
        if problem:
            return Broken(number, problem)
        prev = _line_hash(raw)
    return None


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"audit log {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"audit log {path} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read audit log {path}: {exc.strerror}") from None


def entries(path: str | Path) -> list[dict]:
    """The entries of an intact log (InputError naming the first broken line otherwise)."""
    broken = verify(path)
    if broken is not None:
        raise InputError(f"audit log {path} {broken}")
    return [json.loads(raw) for raw in _lines(_read(path))]


def last_line_sha256(path: str | Path) -> str:
    """SHA-256 of the log's last line (:data:`GENESIS` for an empty log): the value to keep elsewhere."""
    lines = _lines(_read(path))
    return _line_hash(lines[-1]) if lines else GENESIS


def last_state(path: str | Path, name: str) -> str | None:
    """The ``sha256_after`` of the last entry about file ``name`` in an intact log, or None."""
    if not Path(path).exists():
        return None
    found = None
    for entry in entries(path):
        if entry["file"] == name:
            found = entry["sha256_after"]
    return found


class AuditLog:
    """An audit log held open for appending, under an exclusive lock (see :func:`open_log`)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def seal(self, reader: str, action: str, file: str, sha256_before: str | None, sha256_after: str,
             added: dict, removed: dict, reason: str) -> bytes:
        """The next line (with its newline), checked, not yet written: the caller makes the change
        and then :meth:`write` s it, both under this lock."""
        broken = verify(self.path)
        if broken is not None:
            raise InputError(f"audit log {self.path} is broken at {broken}: nothing saved (the study "
                             "coordinator must look into it before more reads are saved)")
        lines = _lines(_read(self.path))
        prev = _line_hash(lines[-1]) if lines else GENESIS
        now = utc_now()
        if lines and json.loads(lines[-1])["time"] > now:  # same fixed format: text order is time order
            raise InputError(f"the clock reads {now}, earlier than the last entry of {self.path}: set the "
                             "computer's clock right before saving")
        fields = {"time": now, "reader": check_reader(reader), "action": action, "file": file,
                  "sha256_before": sha256_before, "sha256_after": sha256_after,
                  "voxels_added": dict(added), "voxels_removed": dict(removed), "reason": str(reason),
                  "prev": prev}
        line = _sealed(fields)
        problem = _field_problem(json.loads(line))
        if problem:
            raise InputError(f"audit entry refused: {problem}")
        return line + b"\n"

    def write(self, line: bytes) -> None:
        """Append one sealed line in a single write, then flush it to the disk."""
        written = os.write(self._fd, line)
        if written != len(line):  # a short write leaves a torn line, which verify reports
            raise OSError(f"short write to {self.path}")
        os.fsync(self._fd)


@contextlib.contextmanager
def open_log(path: str | Path):
    """The audit log at ``path`` (created if absent) for appending, exclusively locked.

    The lock (``flock``, where the system has it) keeps two savers from chaining to the same
    previous line; it is released when the block ends.
    """
    path = Path(path)
    new = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise InputError(f"cannot open audit log {path}: {exc.strerror}") from None
    try:
        _lock(fd)
        if new:
            _fsync_dir(path.parent)  # the new file's name survives a crash too
        yield AuditLog(path, fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one saver per reader folder is the rule there
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
