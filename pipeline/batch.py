"""`onfh batch`: a cohort from a manifest, on local processes or a Dask cluster, resumable.

Every manifest row is an *analyze* task; every follow-up row (timepoint > 0) whose hip has a
baseline row (timepoint 0) is also a *compare* task. Tasks are independent, so they run in any
order on any worker. Each task writes its folder atomically, then a small record
(``.records/<key>.json``) with the task's fingerprint: the SHA-256 of its input files, the
resolved settings and the software version. ``--resume`` skips a task whose record says it
succeeded with the same fingerprint, and redoes the rest (changed inputs, changed settings,
failures, tasks an interrupted run never finished).

The tables (scans.csv, changes.csv), cohort statistics (cohort.json, cohort.md) and report.html
are rebuilt from the records at the end, sorted by key, so identical inputs give identical tables
whatever the worker count or the order of completion (apart from the ``elapsed_s`` column).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .errors import InputError
from .manifest import ScanRow, read_manifest
from .outputs import clean_json, sha256_of, write_json

SCAN_COLUMNS = (
    "key", "subject", "side", "timepoint_months", "outcome", "status", "error",
    "head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct", "size_class", "jic_type", "jic_type_3d",
    "arco2021_type", "cna_deg", "kerboul_grade", "head_radius_mm", "sphere_fit_rms_mm",
    "weight_bearing_source", "n_warnings", "folder", "elapsed_s",
)
CHANGE_COLUMNS = (
    "key", "subject", "side", "timepoint_months", "outcome", "status", "error",
    "baseline_lesion_ml", "followup_lesion_ml", "regeneration_pct", "regenerated_ml", "new_ml", "persistent_ml",
    "head_dice", "rotation_deg", "translation_mm", "n_warnings", "folder", "elapsed_s",
)


# planning -----------------------------------------------------------------------------------
def plan_tasks(rows: list[ScanRow], out_dir: Path, settings) -> list[dict]:
    """Analyze and compare tasks as plain, picklable dicts (they travel to Dask workers)."""
    config_json = settings.canonical_json()
    baselines = {(r.subject, r.side): r for r in rows if r.timepoint_months == 0}
    tasks = []
    for row in rows:
        tasks.append(_task("scan", row.key, out_dir / "scans" / row.key, config_json, row))
    for row in rows:
        base = baselines.get((row.subject, row.side))
        if row.timepoint_months > 0 and base is not None:
            tasks.append(_task("change", row.key, out_dir / "changes" / row.key, config_json, row, base))
    return tasks


def _task(kind, key, folder, config_json, row, baseline=None) -> dict:
    return {"kind": kind, "key": key, "folder": str(folder), "config_json": config_json,
            "row": _row_dict(row), "baseline": _row_dict(baseline) if baseline else None}


def _row_dict(row: ScanRow) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(row).items()}


def fingerprint(task: dict) -> str:
    """SHA-256 of what decides a task's result: inputs' bytes, settings, software version."""
    digest = hashlib.sha256()
    digest.update(f"{task['kind']}|{__version__}|{task['config_json']}".encode())
    for row in (task["row"], task["baseline"]):
        if row is None:
            continue
        for name in ("image", "labels", "head_mask", "lesion_mask", "femur_mask"):
            if row.get(name):
                digest.update(f"|{name}:{sha256_of(row[name])}".encode())
        digest.update(f"|{row['side']}|{row.get('acetabular_edge')}".encode())
    return digest.hexdigest()


# running one task (in a worker) ---------------------------------------------------------------
def execute_task(task: dict) -> dict:
    """Run one task and return its record; bad input is recorded, never raised."""
    from .config import Settings

    started = time.perf_counter()
    row = task["row"]
    record = {"key": task["key"], "kind": task["kind"], "fingerprint": task.get("fingerprint"),
              "subject": row["subject"], "side": row["side"], "timepoint_months": row["timepoint_months"],
              "outcome": row.get("outcome"), "folder": os.path.relpath(task["folder"], task.get("root", "."))}
    try:
        settings = Settings.model_validate_json(task["config_json"])
        if task["kind"] == "scan":
            record.update(_run_scan(task, settings))
        else:
            record.update(_run_change(task, settings))
        record["status"] = "ok"
        record["error"] = ""
    except InputError as exc:
        record.update(status="error", error=str(exc))
    except Exception as exc:  # a bug must not stop the cohort; it is recorded with its type
        record.update(status="error", error=f"internal error: {type(exc).__name__}: {exc}")
    record["elapsed_s"] = round(time.perf_counter() - started, 2)
    return record


def _run_scan(task: dict, settings) -> dict:
    from .analyze import run_analyze

    row = task["row"]
    analysis = run_analyze(
        row["image"], row["side"], task["folder"], settings, labels=row.get("labels"),
        head_mask=row.get("head_mask"), lesion_mask=row.get("lesion_mask"), femur_mask=row.get("femur_mask"),
        edge=row.get("acetabular_edge"), title=f"{row['subject']} {row['timepoint_months']:g} months",
    )
    m = analysis.metrics
    return {
        "head_volume_ml": m["head_volume_ml"], "lesion_volume_ml": m["lesion_volume_ml"],
        "necrotic_fraction_pct": m["necrotic_fraction_pct"], "size_class": m["size_class"],
        "jic_type": m["jic_type"], "jic_type_3d": m["jic_type_3d"], "arco2021_type": m["arco2021_type"],
        "cna_deg": m["cna_deg"], "kerboul_grade": m["kerboul_grade"], "head_radius_mm": m["head_radius_mm"],
        "sphere_fit_rms_mm": m["sphere_fit_rms_mm"], "weight_bearing_source": (m["weight_bearing"] or {}).get("source"),
        "n_warnings": len(m["warnings"]), "zones_ml": m["zones_ml"],
    }


def _run_change(task: dict, settings) -> dict:
    from .compare import run_compare

    row, base = task["row"], task["baseline"]
    result = run_compare(
        base["image"], [row["image"]], row["side"], task["folder"], settings,
        baseline_labels=base.get("labels"), followup_labels=[row.get("labels")],
    )
    return summarize_change(result)


def summarize_change(result: dict) -> dict:
    """The changes.csv figures of one comparison's longitudinal.json content."""
    follow = result["followups"][0] if "followups" in result else result
    reg = follow.get("registration") or {}
    zones = follow.get("zones") or {}
    return {
        "baseline_lesion_ml": result["baseline"]["lesion_volume_ml"],
        "followup_lesion_ml": follow["followup"]["lesion_volume_ml"] if "followup" in follow else None,
        "regeneration_pct": follow.get("regeneration_pct"), "regenerated_ml": follow.get("regenerated_ml"),
        "new_ml": follow.get("new_ml"), "persistent_ml": follow.get("persistent_ml"),
        "head_dice": reg.get("head_dice"), "rotation_deg": reg.get("rotation_deg"),
        "translation_mm": reg.get("translation_mm"), "n_warnings": len(follow.get("warnings", [])),
        "zones": {z: (v or {}).get("regenerated_ml") for z, v in zones.items()},
    }


# the run ------------------------------------------------------------------------------------
def run_batch(manifest: str | Path, out_dir: str | Path, settings, workers: int | None = None,
              scheduler: str | None = None, resume: bool = False, stream=None) -> int:
    """Run a cohort; returns the exit status (0 all ok, 1 some tasks failed).

    Raises
    ------
    InputError
        For a manifest that cannot be read (nothing is run).
    """
    stream = stream or sys.stderr
    rows = read_manifest(manifest)
    out_dir = Path(out_dir)
    (out_dir / ".records").mkdir(parents=True, exist_ok=True)
    tasks = plan_tasks(rows, out_dir, settings)
    records: dict[str, dict] = {}
    todo = []
    for task in tasks:
        task["fingerprint"] = fingerprint(task)
        task["root"] = str(out_dir)
        old = _read_record(out_dir, task)
        if resume and old and old.get("fingerprint") == task["fingerprint"] and old.get("status") == "ok" \
                and Path(task["folder"]).is_dir():
            records[_record_name(task)] = old
        else:
            todo.append(task)
    progress = Progress(len(tasks), len(records), stream)
    for record in _execute(todo, workers, scheduler):
        records[f"{record['kind']}-{record['key']}"] = record
        _write_record(out_dir, record)
        progress.update(record)
    progress.close()
    write_tables(out_dir, list(records.values()))
    failed = sum(1 for r in records.values() if r["status"] != "ok")
    print(f"onfh batch: {len(records) - failed} of {len(records)} tasks ok, {failed} failed; "
          f"report: {out_dir / 'report.html'}", file=stream)
    return 1 if failed else 0


def _record_name(task_or_record: dict) -> str:
    return f"{task_or_record['kind']}-{task_or_record['key']}"


def _read_record(out_dir: Path, task: dict) -> dict | None:
    path = out_dir / ".records" / f"{_record_name(task)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_record(out_dir: Path, record: dict) -> None:
    path = out_dir / ".records" / f"{_record_name(record)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean_json(record, 6), sort_keys=True))
    os.replace(tmp, path)


def _execute(tasks: list[dict], workers: int | None, scheduler: str | None):
    """Yield records as tasks finish: in this process (1 worker), local processes, or Dask."""
    if not tasks:
        return
    if scheduler:
        yield from _execute_dask(tasks, scheduler)
        return
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for task in tasks:
            yield execute_task(task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: SimpleITK and BLAS keep threads that a forked child must not inherit.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as pool:
        futures = [pool.submit(execute_task, t) for t in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _one_thread() -> None:
    """Workers use one thread each: N processes on N cores, and deterministic registration."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = "1"
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except ImportError:
        pass


def _execute_dask(tasks: list[dict], scheduler: str):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("--scheduler needs Dask distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        client.run(_one_thread)
        futures = client.map(execute_task, tasks, pure=False)
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()


class Progress:
    """A progress bar on a terminal, plain log lines otherwise (e.g. in CI or a log file)."""

    def __init__(self, total: int, already: int, stream):
        self.total, self.done, self.failed = total, already, 0
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.started = time.perf_counter()
        self.fresh = 0
        if already:
            self._line(f"{already} of {total} tasks already done (resume)")

    def update(self, record: dict) -> None:
        self.done += 1
        self.fresh += 1
        self.failed += record["status"] != "ok"
        elapsed = time.perf_counter() - self.started
        left = (self.total - self.done) * elapsed / self.fresh
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} "
                              f"failed {self.failed}  ~{left:.0f} s left ")
            self.stream.flush()
        else:
            status = "ok" if record["status"] == "ok" else f"FAILED: {record['error']}"
            self._line(f"[{self.done}/{self.total}] {record['kind']} {record['key']} {status} "
                       f"({record['elapsed_s']:.1f} s; ~{left:.0f} s left)")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")

    def _line(self, text: str) -> None:
        print(f"onfh batch: {text}", file=self.stream, flush=True)


# tables, statistics, report -------------------------------------------------------------------
def write_tables(out_dir: Path, records: list[dict]) -> None:
    """scans.csv, changes.csv, cohort.json, cohort.md and report.html from the records."""
    from .cohort import cohort_markdown, cohort_summary
    from .report import write_report

    records = sorted(records, key=lambda r: (r["kind"], r["subject"], r["side"], r["timepoint_months"]))
    scans = [r for r in records if r["kind"] == "scan"]
    changes = [r for r in records if r["kind"] == "change"]
    _atomic_text(out_dir / "scans.csv", _csv(scans, SCAN_COLUMNS))
    _atomic_text(out_dir / "changes.csv", _csv(changes, CHANGE_COLUMNS))
    summary = cohort_summary(scans, changes)
    tmp = out_dir / "cohort.json.tmp"
    write_json(tmp, summary)
    os.replace(tmp, out_dir / "cohort.json")
    _atomic_text(out_dir / "cohort.md", cohort_markdown(summary))
    write_report(out_dir, scans, changes, summary)


def _csv(records: list[dict], columns: tuple) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({c: _cell(r.get(c), c) for c in columns})
    return buf.getvalue()


def _cell(value, column: str = "") -> str:
    if value is None:
        return ""
    if column == "timepoint_months":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
