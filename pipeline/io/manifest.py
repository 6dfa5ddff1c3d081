"""Cohort manifests (docs/design.md): one row per scan of one hip.

Columns: ``subject, side, timepoint_months, image`` and optionally ``labels, head_mask, lesion_mask,
femur_mask, acetabular_edge, outcome, reader, repeat``. Fields are separated by commas, semicolons or tabs (found
from the header line: spreadsheets in many locales write semicolons); a comma inside a field of a
comma-separated file (``acetabular_edge``) needs quotes. A UTF-8 byte-order mark and CRLF line
ends are fine.

A relative path is relative to the manifest's folder and must stay inside it (a manifest cannot
reach arbitrary files of a shared machine through ``..``); an absolute path is used as written
(core labs keep their data stores elsewhere).

Reads and repeats (docs/method.md section 7): rows with the same subject, side and timepoint but
different ``reader`` are reads of one scan, each with its own masks (a row without masks is the
automatic segmentation, which may be named as a reader, e.g. ``onfh``). An empty ``reader`` is the
default reader (setting ``reads.default_reader``). ``repeat`` numbers repeated acquisitions of one
hip at one timepoint (test-retest: 1, 2; empty = 1). The reads of one acquisition must share its
image. A manifest without these columns means one read of one acquisition per row, as before.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.parsing import parse_point

REQUIRED = ("subject", "side", "timepoint_months", "image")
OPTIONAL_PATHS = ("labels", "head_mask", "lesion_mask", "femur_mask")
OUTCOMES = ("healed", "progressed", "arthroplasty")
#: Columns of reader studies and test-retest acquisitions (optional).
READ_COLUMNS = ("reader", "repeat")
#: Subjects name output folders: letters, digits, ".", "_", "-" only (no path separators).
SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Field separators a manifest may use, in order of preference when the header fits several.
DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}


@dataclass(frozen=True)
class ScanRow:
    subject: str
    side: str
    timepoint_months: float
    image: Path
    labels: Path | None = None
    head_mask: Path | None = None
    lesion_mask: Path | None = None
    femur_mask: Path | None = None
    acetabular_edge: tuple[float, float, float] | None = None
    outcome: str | None = None
    line: int = 0
    #: who read the scan (None: the default reader, ``reads.default_reader``)
    reader: str | None = None
    #: acquisition number at this timepoint (None: the first; 2, 3, ... repeat acquisitions)
    repeat: int | None = None

    @property
    def scan_key(self) -> str:
        """Folder-safe name of this acquisition of this hip, read by anyone: ``S01_right_m03``,
        ``S01_right_m03_rep2`` for a repeat acquisition."""
        months = f"{self.timepoint_months:g}".replace(".", "p")
        key = f"{self.subject}_{self.side}_m{months.zfill(2)}"
        return key if (self.repeat or 1) == 1 else f"{key}_rep{self.repeat}"

    @property
    def key(self) -> str:
        """Folder-safe name of this read, e.g. ``S01_right_m03``, ``S01_right_m03_reader2``.

        The default reader's first acquisition keeps the name it had before reads existed, so that
        adding a second reader to a cohort keeps its folders and records (``--resume``)."""
        return self.scan_key if not self.reader else f"{self.scan_key}_{self.reader}"

    def describe(self) -> str:
        """"S01 right hip at 3 months" (with the reader and repeat when given)."""
        text = f"{self.subject} {self.side} hip at {self.timepoint_months:g} months"
        if self.repeat:
            text += f", repeat {self.repeat}"
        if self.reader:
            text += f", reader {self.reader}"
        return text


def has_reads(rows: list[ScanRow]) -> bool:
    """Whether a manifest names readers or repeat acquisitions (then batch writes the reader-study
    outputs: agreement.json, repeatability.json, adjudication.csv)."""
    return any(r.reader or r.repeat for r in rows)


def read_manifest(path: str | Path, require_exists: bool = True) -> list[ScanRow]:
    """Parse and check a manifest; InputError names the line (the header is line 1) and the column.

    With ``require_exists=False`` (``onfh batch``) a listed file that does not exist is not an
    error of the manifest: that scan's task fails and is recorded, and the others go on. A
    relative path that leaves the manifest's folder is always refused.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel starts its UTF-8 files with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    delimiter = _delimiter(text.split("\n", 1)[0])
    # skipinitialspace: `a, "x,y,z"` quotes its field as `a,"x,y,z"` does
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    try:
        columns = [c.strip() for c in next(reader, [])]
        records = list(_records(reader))
    except csv.Error as exc:
        raise InputError(f"manifest {path.name} line {reader.line_num}: {exc}") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        found = ", ".join(c for c in columns if c) or "nothing"
        found = found if len(found) <= 120 else found[:117] + "..."
        raise InputError(f"manifest {path.name} lacks column(s) {', '.join(missing)} (its header line gives: "
                         f"{found})")
    base = path.parent.resolve()
    rows: list[ScanRow] = []
    seen: dict[str, ScanRow] = {}
    for n, fields in records:
        where = f"manifest {path.name} line {n}"
        if not any(f.strip() for f in fields):
            continue
        if any(f.strip() for f in fields[len(columns):]):
            name = _DELIMITER_NAMES[delimiter]
            raise InputError(f"{where}: the row has {len(fields)} fields for {len(columns)} columns: a field "
                             f"containing {name} (such as acetabular_edge X,Y,Z) must be quoted, e.g. "
                             f'"-31.2,4,7"')
        row = {c: (fields[i].strip() if i < len(fields) else "") for i, c in enumerate(columns) if c}
        side = row["side"].lower()
        if side not in ("left", "right"):
            raise InputError(f"{where}: side must be left or right, not {row['side']!r}")
        try:
            months = float(row["timepoint_months"])
        except ValueError:
            raise InputError(f"{where}: timepoint_months {row['timepoint_months']!r} is not a number") from None
        if not math.isfinite(months) or months < 0:
            raise InputError(f"{where}: timepoint_months must be 0 (baseline) or a positive number of months, "
                             f"not {row['timepoint_months']!r}")
        if not row["subject"]:
            raise InputError(f"{where}: subject is empty")
        if not SUBJECT.fullmatch(row["subject"]):
            raise InputError(f"{where}: subject {row['subject']!r} may hold only letters, digits, '.', '_' and '-' "
                             "(it names output folders)")
        outcome = row.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise InputError(f"{where}: outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        try:
            edge = parse_point(row["acetabular_edge"]) if row.get("acetabular_edge") else None
        except InputError as exc:
            raise InputError(f"{where}: acetabular_edge: {exc}") from None
        paths = {name: _resolve(base, row.get(name), where, name, require_exists)
                 for name in ("image",) + OPTIONAL_PATHS}
        if paths["image"] is None:
            raise InputError(f"{where}: image is empty (a path is required)")
        reader, repeat = _read_fields(row, where)
        scan = ScanRow(row["subject"], side, months, paths["image"], paths["labels"], paths["head_mask"],
                       paths["lesion_mask"], paths["femur_mask"], edge, outcome, n, reader, repeat)
        if scan.key in seen:
            raise InputError(f"{where}: {scan.describe()} is listed twice (also on line {seen[scan.key].line})")
        seen[scan.key] = scan
        rows.append(scan)
    if not rows:
        raise InputError(f"manifest {path.name} lists no scans")
    _one_image_per_acquisition(rows, path.name)
    return _hip_outcomes(rows, path.name)


def _read_fields(row: dict, where: str) -> tuple[str | None, int | None]:
    """The ``reader`` (folder-safe name or None) and ``repeat`` (1, 2, ... or None) of a row."""
    reader = row.get("reader") or None
    if reader is not None and not SUBJECT.fullmatch(reader):
        raise InputError(f"{where}: reader {reader!r} may hold only letters, digits, '.', '_' and '-' "
                         "(it names output folders)")
    text = row.get("repeat") or ""
    if not text:
        return reader, None
    try:
        repeat = float(text)
    except ValueError:
        repeat = float("nan")
    if not (math.isfinite(repeat) and repeat >= 1 and repeat == int(repeat)):
        raise InputError(f"{where}: repeat must be 1, 2, ... (the acquisition's number at this timepoint), "
                         f"not {text!r}")
    return reader, int(repeat)


def _one_image_per_acquisition(rows: list[ScanRow], name: str) -> None:
    """Reads of one acquisition compare masks voxel by voxel: they must read the same image."""
    first: dict[str, ScanRow] = {}
    for r in rows:
        other = first.setdefault(r.scan_key, r)
        if other.image != r.image:
            raise InputError(f"manifest {name} line {r.line}: a read of {r.subject} {r.side} at "
                             f"{r.timepoint_months:g} months (repeat {r.repeat or 1}) gives image "
                             f"{r.image.name}, line {other.line} gives {other.image.name}: reads of one "
                             "acquisition share its image (a new acquisition needs its own repeat number)")


def _delimiter(header: str) -> str:
    """The separator that splits ``header`` into the most known column names (ties: the first).

    Decided on the header alone, where no field holds a separator, so that a semicolon file
    whose fields contain commas (acetabular_edge -31.2,4,7) is not taken for a comma file.
    """
    known = set(REQUIRED + OPTIONAL_PATHS + ("acetabular_edge", "outcome") + READ_COLUMNS)

    def score(delimiter):
        fields = next(csv.reader([header], delimiter=delimiter, skipinitialspace=True), [])
        return sum(f.strip() in known for f in fields)

    return max(DELIMITERS, key=score)  # max keeps the first of equal scores


def _records(reader):
    """(line, fields) of every record after the header; ``line`` is where the record starts
    (1-based, the header being line 1), so a quoted field spanning lines does not shift it."""
    last = reader.line_num
    for fields in reader:
        yield last + 1, fields
        last = reader.line_num


def _hip_outcomes(rows: list[ScanRow], name: str) -> list[ScanRow]:
    """The outcome belongs to the hip: one value per hip, given on any of its rows (or none)."""
    outcomes: dict[tuple[str, str], ScanRow] = {}
    for r in rows:
        if r.outcome is None:
            continue
        first = outcomes.setdefault((r.subject, r.side), r)
        if first.outcome != r.outcome:
            raise InputError(f"manifest {name} line {r.line}: outcome {r.outcome!r} differs from {first.outcome!r} "
                             f"on line {first.line} for the same hip ({r.subject} {r.side})")
    return [r if r.outcome or (r.subject, r.side) not in outcomes
            else replace(r, outcome=outcomes[(r.subject, r.side)].outcome) for r in rows]


def _resolve(base: Path, value: str | None, where: str, column: str, require_exists: bool = True) -> Path | None:
    """An absolute path as written; a relative one inside ``base`` (the manifest's folder)."""
    if not value:
        return None
    given = Path(value)
    if given.is_absolute():
        # Not resolved: outputs record input paths as given (folder names may carry patient names).
        target = given
    else:
        target = (base / given).resolve()
        if not target.is_relative_to(base):
            raise InputError(f"{where}: {column} path {value!r} is outside the manifest's folder (give files "
                             "elsewhere as absolute paths)")
    if require_exists and not target.exists():
        raise InputError(f"{where}: {column} {value!r} does not exist")
    return target
