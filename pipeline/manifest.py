"""Cohort manifests (DESIGN.md): one row per scan of one hip.

Columns: ``subject, side, timepoint_months, image`` and optionally ``labels, head_mask, lesion_mask,
femur_mask, acetabular_edge, outcome``. Paths are relative to the manifest's folder and must stay
inside it (a manifest cannot reach arbitrary files on a shared machine).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InputError
from .parsing import parse_point

REQUIRED = ("subject", "side", "timepoint_months", "image")
OPTIONAL_PATHS = ("labels", "head_mask", "lesion_mask", "femur_mask")
OUTCOMES = ("healed", "progressed", "arthroplasty")
#: Subjects name output folders: letters, digits, ".", "_", "-" only (no path separators).
SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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

    @property
    def key(self) -> str:
        """Folder-safe name of this scan of this hip, e.g. ``S01_right_m03``."""
        months = f"{self.timepoint_months:g}".replace(".", "p")
        return f"{self.subject}_{self.side}_m{months.zfill(2)}"


def read_manifest(path: str | Path, require_exists: bool = True) -> list[ScanRow]:
    """Parse and check a manifest; InputError names the line and the problem.

    With ``require_exists=False`` (``onfh batch``) a listed file that does not exist is not an
    error of the manifest: that scan's task fails and is recorded, and the others go on. A path
    outside the manifest's folder is always refused.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"manifest {path.name} lacks column(s) {', '.join(missing)}")
    base = path.parent.resolve()
    rows, seen = [], set()
    for n, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        where = f"manifest {path.name} line {n}"
        if not any(row.values()):
            continue
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
            raise InputError(f"{where}: empty subject")
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
            raise InputError(f"{where}: empty image path")
        scan = ScanRow(row["subject"], side, months, paths["image"], paths["labels"], paths["head_mask"],
                       paths["lesion_mask"], paths["femur_mask"], edge, outcome, n)
        if scan.key in seen:
            raise InputError(f"{where}: {scan.subject} {side} hip at {months:g} months is listed twice")
        seen.add(scan.key)
        rows.append(scan)
    if not rows:
        raise InputError(f"manifest {path.name} lists no scans")
    return _hip_outcomes(rows, path.name)


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
    if not value:
        return None
    target = (base / value).resolve()
    if not target.is_relative_to(base):
        raise InputError(f"{where}: {column} path {value!r} is outside the manifest's folder")
    if require_exists and not target.exists():
        raise InputError(f"{where}: {column} {value!r} does not exist")
    return target
