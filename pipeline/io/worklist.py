"""Blinded worklists for core-lab reads (``onfh worklist``, ``onfh review --worklist``).

A worklist is one reader's reading order of a manifest's scans, shuffled with a recorded seed. Each
row carries a code (``R-KQXW``: consonants only, so it never reads as a subject number or a month)
in place of the subject and the timepoint, the hip to read, and the paths the reader opens. The
key file beside it (``FILE`` with ``.key.csv`` in place of ``.csv``) maps each code back to subject,
side and timepoint, for the coordinator only.

The shuffle and the codes come from :class:`random.Random` seeded with an integer, using only its
``random()`` stream, which Python keeps the same across versions for the same seed; by default the
seed is derived from the reader name, so every reader gets an order of their own and the same
reader always the same one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.audit import check_reader
from pipeline.io.manifest import ScanRow, read_manifest
from pipeline.io.outputs import recorded_path

COLUMNS = ("code", "side", "image", "labels", "reader")
KEY_COLUMNS = ("code", "subject", "side", "timepoint_months", "reader", "seed")
#: No vowels (no words), no digits (nothing that reads as a subject number or a timepoint).
CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
CODE = re.compile(rf"R-[{CODE_LETTERS}]{{4,}}")


@dataclass(frozen=True)
class Case:
    """One row of a worklist: what the reader sees."""

    code: str
    side: str
    image: Path
    labels: Path | None
    reader: str
    line: int = 0


def default_seed(reader: str) -> int:
    """The seed of a reader's worklist when none is given: from the reader name alone."""
    return int.from_bytes(hashlib.sha256(f"onfh worklist\0{reader}".encode()).digest()[:4], "big")


def key_path(worklist: str | Path) -> Path:
    """The key file of a worklist: ``X.csv`` -> ``X.key.csv`` (``X`` -> ``X.key.csv``)."""
    worklist = Path(worklist)
    name = worklist.name[:-4] if worklist.name.lower().endswith(".csv") else worklist.name
    return worklist.with_name(f"{name}.key.csv")


def shuffled(rows: list[ScanRow], seed: int) -> list[tuple[str, ScanRow]]:
    """(code, row) in reading order: a Fisher-Yates shuffle and distinct codes, from ``seed``."""
    rng = random.Random(seed)
    order = list(rows)
    for i in range(len(order) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    width = 4
    while len(CODE_LETTERS) ** width < 100 * len(order):  # sparse: a code does not hint at others
        width += 1
    codes: list[str] = []
    taken = set()
    while len(codes) < len(order):
        code = "R-" + "".join(CODE_LETTERS[int(rng.random() * len(CODE_LETTERS))] for _ in range(width))
        if code not in taken:
            taken.add(code)
            codes.append(code)
    return list(zip(codes, order))


def _csv(header, rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_worklist(manifest: str | Path, reader: str, out: str | Path,
                   seed: int | None = None) -> tuple[Path, Path, int]:
    """Write a reader's blinded worklist and its key file.

    Image and label paths inside the worklist's folder are written relative to it (the worklist
    travels with the data), others as the manifest gives them. Files are never replaced unless
    they already hold exactly what would be written (the same command run again).

    Returns
    -------
    worklist, key : Path
    seed : int
        The seed used (also in every row of the key file).
    """
    reader = check_reader(reader)
    if seed is None:
        seed = default_seed(reader)
    if seed < 0:
        raise InputError(f"--seed must be 0 or a positive integer, not {seed}")
    out = Path(out)
    if out.name.lower().endswith(".key.csv"):
        raise InputError(f"--out {out} ends in .key.csv, the key file's suffix: name the worklist e.g. "
                         f"worklist_{reader}.csv")
    key = key_path(out)
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    rows = read_manifest(manifest)
    order = shuffled(rows, seed)
    base = out.parent.absolute()

    def where(path):
        return recorded_path(path, base) if path is not None else ""

    worklist_bytes = _csv(COLUMNS, [(code, r.side, where(r.image), where(r.labels), reader) for code, r in order])
    key_bytes = _csv(KEY_COLUMNS, [(code, r.subject, r.side, f"{r.timepoint_months:g}", reader, seed)
                                   for code, r in order])
    todo = []
    for path, data in ((out, worklist_bytes), (key, key_bytes)):
        if path.exists() or path.is_symlink():
            if path.is_file() and path.read_bytes() == data:
                continue
            raise InputError(f"{path} exists: name a new file (onfh never replaces files it did not write)")
        todo.append((path, data))
    _write_all(todo)
    return out, key, seed


def _write_all(files: list[tuple[Path, bytes]]) -> None:
    """Write every file or none: each to a temporary name first, then moved into place."""
    staged, placed = [], []
    try:
        for path, data in files:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            staged.append((tmp, path))
        for tmp, path in staged:
            os.replace(tmp, path)
            placed.append(path)
    except OSError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        raise InputError(f"cannot write the worklist: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def read_worklist(path: str | Path, require_exists: bool = True) -> list[Case]:
    """Parse a worklist; InputError names the line (the header is line 1) and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read worklist {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("code", "side", "image") if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"worklist {path.name} lacks column(s) {', '.join(missing)}")
    base = path.parent
    cases, seen, readers = [], set(), set()
    try:
        for number, row in enumerate(reader, start=2):
            where = f"worklist {path.name} line {number}"
            code, side = (row.get("code") or "").strip(), (row.get("side") or "").strip()
            if not CODE.fullmatch(code):
                raise InputError(f"{where}: code {code!r} is not a worklist code (R- and consonants)")
            if code in seen:
                raise InputError(f"{where}: code {code} is listed twice")
            seen.add(code)
            if side not in ("left", "right"):
                raise InputError(f"{where}: side must be left or right, not {side!r}")
            paths = {}
            for column in ("image", "labels"):
                value = (row.get(column) or "").strip()
                paths[column] = None if not value else (Path(value) if Path(value).is_absolute() else base / value)
                if paths[column] is not None and require_exists and not paths[column].exists():
                    raise InputError(f"{where}: {column} of {code} does not exist")
            if paths["image"] is None:
                raise InputError(f"{where}: image is empty")
            name = (row.get("reader") or "").strip()
            if name:
                readers.add(check_reader(name))
            cases.append(Case(code, side, paths["image"], paths["labels"], name, number))
    except csv.Error as exc:
        raise InputError(f"worklist {path.name}: {exc}") from None
    if len(readers) > 1:
        raise InputError(f"worklist {path.name} names several readers ({', '.join(sorted(readers))}): one "
                         "worklist is one reader's")
    if not cases:
        raise InputError(f"worklist {path.name} lists no cases")
    return cases
