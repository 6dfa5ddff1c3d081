"""`onfh batch`: a cohort from a manifest, on local processes or a Dask cluster, resumable.

Every manifest row is a *scan* task (``onfh analyze``); every follow-up row (timepoint > 0) whose
hip has a baseline row (timepoint 0) is also a *change* task (``onfh compare`` of that follow-up
against the baseline). A change task measures both visits itself, so no task waits for another:
they run in any order on any worker. The long change tasks are submitted first, so that the last
minutes of a run are not one comparison running alone.

Each task writes its folder atomically (``scans/<key>/``, ``changes/<key>/``), then its *record*
(``.records/<kind>-<key>.json``, written by the worker, atomically): the figures of the tables,
the status and one-line error, and the task's *fingerprint*: SHA-256 over the task kind, the
software version, the resolved settings, the side and landmarks, and the SHA-256 of every input
file the task reads. ``--resume`` skips a task whose record says it succeeded with the same
fingerprint (and whose folder is there), and redoes the rest: changed inputs, changed settings,
failures, tasks an interrupted run never finished. A file's SHA-256 is cached in
``.records/input_hashes.json`` under its size and modification time, so a resume does not reread
unchanged inputs.

The tables (scans.csv, changes.csv), cohort statistics (cohort.json, cohort.md) and report.html
are rebuilt from the records at the end, sorted by hip and timepoint, with the subject, side,
timepoint and outcome of the *current* manifest. Identical inputs give identical tables whatever
the worker count, the order of completion or the number of interruptions, apart from the
``elapsed_s`` column.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.io.manifest import ScanRow, read_manifest
from pipeline.io.outputs import (
    check_output_dir,
    clean_json,
    is_onfh_temporary,
    remove_output_dir,
    sha256_of,
    write_json,
    write_marker,
)
from pipeline.itk_threads import one_itk_thread
from pipeline.measures.results import FollowupMetrics, HipMetrics, Longitudinal

RECORDS = ".records"

#: scans.csv: the task's facts, the figures of :meth:`HipMetrics.csv_row`, folder and wall time.
SCAN_COLUMNS = (
    "key", "subject", "side", "timepoint_months", "outcome", "status", "error",
    *HipMetrics.CSV_COLUMNS, "folder", "elapsed_s",
)
#: changes.csv: the task's facts, the figures of :meth:`FollowupMetrics.csv_row`, folder and wall time.
CHANGE_COLUMNS = (
    "key", "subject", "side", "timepoint_months", "baseline_key", "outcome", "status", "error",
    *FollowupMetrics.CSV_COLUMNS, "folder", "elapsed_s",
)
#: Columns that may differ between two runs on identical inputs.
TIMING_COLUMNS = ("elapsed_s",)

#: Thread-count variables of numerical libraries, set to 1 in worker processes.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


# planning -----------------------------------------------------------------------------------
def plan_tasks(rows: list[ScanRow], out_dir: Path, settings) -> list[dict]:
    """Change and scan tasks as plain, picklable dicts (they travel to Dask workers), longest first."""
    config_json = settings.canonical_json()
    baselines = {(r.subject, r.side): r for r in rows if r.timepoint_months == 0}
    records = out_dir / RECORDS
    tasks = []
    for row in rows:
        base = baselines.get((row.subject, row.side))
        if row.timepoint_months > 0 and base is not None:
            tasks.append(_task("change", row, out_dir / "changes" / row.key, records, config_json, base))
    for row in rows:
        tasks.append(_task("scan", row, out_dir / "scans" / row.key, records, config_json))
    return tasks


def _task(kind, row, folder, records, config_json, baseline=None) -> dict:
    return {"kind": kind, "key": row.key, "folder": str(folder), "records_dir": str(records),
            "config_json": config_json, "row": _row_dict(row),
            "baseline": _row_dict(baseline) if baseline else None}


def _row_dict(row: ScanRow) -> dict:
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(row).items()}
    d["key"] = row.key
    return d


def scan_inputs(row: dict) -> dict[str, str]:
    """The files a scan task reads, by the batch's precedence: a label map; else a head and a
    lesion mask; else a femur mask (with a lesion mask, or an automatic lesion inside its head);
    else none (automatic segmentation). A lesion mask alone is kept, to be refused by
    :func:`pipeline.masks.labels.mask_source` (never silently ignored)."""
    used = {"image": row["image"]}
    if row.get("labels"):
        used["labels"] = row["labels"]
    elif row.get("head_mask"):
        used.update(head_mask=row["head_mask"], lesion_mask=row.get("lesion_mask"))
    else:
        used.update(femur_mask=row.get("femur_mask"), lesion_mask=row.get("lesion_mask"))
    return {k: v for k, v in used.items() if v}


def change_inputs(row: dict) -> dict[str, str]:
    """The files a comparison reads of one visit: its image and label map (compare takes label maps)."""
    return {k: row[k] for k in ("image", "labels") if row.get(k)}


class InputHashes:
    """SHA-256 of input files, cached under (size, mtime_ns) in one JSON file, as make/git do.

    Keyed by a hash of the path, not the path: folder names often carry patient names, and this
    file lies among the outputs."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.cache = json.loads(path.read_text())
        except (OSError, ValueError):
            self.cache = {}
        self.changed = False

    def sha256(self, name: str) -> str:
        path = Path(name)
        try:
            st = path.stat()
        except OSError:
            return "missing"
        if not path.is_file():  # a DICOM folder: always hashed (its own mtime says little)
            return sha256_of(path)
        stamp = [st.st_size, st.st_mtime_ns]
        key = hashlib.sha256(str(path.absolute()).encode()).hexdigest()
        hit = self.cache.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
        digest = sha256_of(path)
        self.cache[key] = stamp + [digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            _atomic_text(self.path, json.dumps(self.cache, sort_keys=True, indent=0))


def fingerprint(task: dict, hashes: InputHashes | None = None) -> str:
    """SHA-256 of what decides a task's result: its inputs' bytes, settings, software version,
    side and landmarks (not file names or locations: a moved cohort keeps its fingerprints)."""
    hashes = hashes or InputHashes(Path(os.devnull))
    digest = hashlib.sha256()
    digest.update(f"{task['kind']}|{__version__}|{task['config_json']}".encode())
    inputs = scan_inputs if task["kind"] == "scan" else change_inputs
    for row in (task["baseline"], task["row"]):
        if row is None:
            continue
        for name, path in sorted(inputs(row).items()):
            digest.update(f"|{name}:{hashes.sha256(path)}".encode())
        digest.update(f"|{row['side']}|{row.get('acetabular_edge')}".encode())
    return digest.hexdigest()


# running one task (in a worker) ---------------------------------------------------------------
def execute_task(task: dict) -> dict:
    """Run one task, write and return its record; bad input is recorded, never raised."""
    from pipeline.config import Settings

    started = time.perf_counter()
    record = {"kind": task["kind"], "key": task["key"], "fingerprint": task.get("fingerprint")}
    try:
        with one_itk_thread():
            settings = Settings.model_validate_json(task["config_json"])
            if task["kind"] == "scan":
                record.update(_run_scan(task, settings))
            else:
                record.update(_run_change(task, settings))
        record.update(status="ok", error="")
    except InputError as exc:
        record.update(status="error", error=one_line(str(exc)))
    except MemoryError:
        record.update(status="error", error="internal error: out of memory")
    except Exception as exc:  # a bug must not stop the cohort; it is recorded with its type
        record.update(status="error", error=one_line(f"internal error: {type(exc).__name__}: {exc}"))
    if record["status"] != "ok":  # no stale results from an earlier run beside an error
        remove_output_dir(task["folder"], "analyze" if task["kind"] == "scan" else "compare")
    record["elapsed_s"] = round(time.perf_counter() - started, 2)
    record["worker"] = _worker_facts()
    record = clean_json(record, 6)
    if task.get("records_dir"):
        write_record(Path(task["records_dir"]), record)
    return record


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _worker_facts() -> dict:
    import resource

    return {"host": socket.gethostname(), "pid": os.getpid(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def _missing(inputs: dict[str, str]) -> None:
    for name, path in inputs.items():
        if not Path(path).exists():
            raise InputError(f"{name} {Path(path).name} does not exist")


def _run_scan(task: dict, settings) -> dict:
    from pipeline.app.analyze import run_analyze

    row = task["row"]
    inputs = scan_inputs(row)
    _missing(inputs)
    analysis = run_analyze(
        row["image"], row["side"], task["folder"], settings, labels=inputs.get("labels"),
        head_mask=inputs.get("head_mask"), lesion_mask=inputs.get("lesion_mask"),
        femur_mask=inputs.get("femur_mask"), edge=row.get("acetabular_edge"),
        title=f"{row['subject']} {row['side']} {row['timepoint_months']:g} months", path_base=task.get("path_base"),
    )
    return scan_record(analysis.result)


def scan_record(result: HipMetrics) -> dict:
    """The scans.csv figures (and the zones, for the report) of one hip's metrics."""
    return {**result.csv_row(), "zones_ml": result.zones_ml}


def _run_change(task: dict, settings) -> dict:
    from pipeline.app.compare import run_compare
    from pipeline.masks.labels import mask_source

    row, base = task["row"], task["baseline"]
    for visit, what in ((base, "baseline"), (row, "follow-up")):
        masks = {k: v for k, v in scan_inputs(visit).items() if k != "image"}
        if mask_source(**masks) not in ("labels", "automatic"):
            raise InputError(f"the {what} row of {row['subject']} {row['side']} gives masks but no label map: "
                             "a comparison reads label maps (labels column)")
    _missing({**{f"baseline {k}": v for k, v in change_inputs(base).items()}, **change_inputs(row)})
    result = run_compare(
        base["image"], [row["image"]], row["side"], task["folder"], settings,
        baseline_labels=base.get("labels"), followup_labels=[row.get("labels")],
        acetabular_edge=base.get("acetabular_edge"),
        title=f"{row['subject']} {row['side']} {row['timepoint_months']:g} vs 0 months",
        path_base=task.get("path_base"),
    )
    return change_record(Longitudinal.from_json(result))


def change_record(result: Longitudinal) -> dict:
    """The changes.csv figures (and the regenerated mL per zone, for the statistics) of a
    one-follow-up comparison."""
    follow = result.latest
    return {**follow.csv_row(result.baseline), "zones": follow.regenerated_by_zone()}


# the run ------------------------------------------------------------------------------------
def run_batch(manifest: str | Path, out_dir: str | Path, settings, workers: int | None = None,
              scheduler: str | None = None, resume: bool = False, stream=None) -> int:
    """Run a cohort; returns the exit status (0 all ok, 1 some tasks failed).

    Raises
    ------
    InputError
        For a manifest that cannot be read, an output folder another run is writing, or a Dask
        scheduler that cannot be reached (nothing is run; an output folder this call created is
        removed again).
    """
    stream = stream or sys.stderr
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    rows = read_manifest(manifest, require_exists=False)
    out_dir = check_output_dir(out_dir, "batch").resolve()
    records_dir = out_dir / RECORDS
    created = not out_dir.exists()
    records_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, "batch")
    try:
        return _run_locked(out_dir, records_dir, rows, settings, workers, scheduler, resume, stream,
                           Path(manifest).parent.resolve())
    except InputError:
        # refused before any work (e.g. no scheduler): a folder this run made holds nothing
        if created and not any(records_dir.glob("*-*.json")):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _run_locked(out_dir: Path, records_dir: Path, rows, settings, workers, scheduler, resume, stream,
                manifest_dir: Path) -> int:
    with _lock(records_dir):
        _remove_leftovers(out_dir)
        tasks = plan_tasks(rows, out_dir, settings)
        for task in tasks:  # input paths in the outputs: relative to the manifest, as its rows give them
            task["path_base"] = str(manifest_dir)
        hashes = InputHashes(records_dir / "input_hashes.json")
        for task in tasks:
            task["fingerprint"] = fingerprint(task, hashes)
        hashes.save()
        records: dict[str, dict] = {}
        todo = []
        for task in tasks:
            old = read_record(records_dir, task)
            if resume and _reusable(old, task):
                records[record_name(task)] = old
            else:
                todo.append(task)
        n_workers = min(_workers(workers), len(todo))
        where = (f"the Dask cluster at {scheduler}" if scheduler else
                 "1 worker (this process)" if n_workers == 1 else f"{n_workers} local worker processes")
        n_scans = sum(t["kind"] == "scan" for t in tasks)
        # connect first: a scheduler that is not there is refused before anything is announced
        client = connect_dask(scheduler) if scheduler and todo else None
        progress = Progress(len(tasks), len(records), stream)
        plan = f"{len(todo)} to run on {where}" if todo else "nothing to run"
        progress.line(f"{len(tasks)} tasks ({n_scans} scans, {len(tasks) - n_scans} comparisons); "
                      f"{len(records)} already done; {plan}")
        try:
            for task, record in _execute(todo, workers, client):
                records[record_name(task)] = record
                progress.update(task, record)
        finally:
            progress.close()
        write_tables(out_dir, tasks, records)
    failed = sum(1 for r in records.values() if r["status"] != "ok")
    progress.line(f"{len(records) - failed} of {len(records)} tasks ok, {failed} failed; "
                  f"report: {out_dir / 'report.html'}")
    return 1 if failed else 0


def _workers(workers: int | None) -> int:
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _reusable(record: dict | None, task: dict) -> bool:
    if not record or record.get("status") != "ok" or record.get("fingerprint") != task["fingerprint"]:
        return False
    result = "metrics.json" if task["kind"] == "scan" else "longitudinal.json"
    return (Path(task["folder"]) / result).is_file()


@contextlib.contextmanager
def _lock(records_dir: Path):
    """One run at a time per output folder; a lock left by a killed run is taken over."""
    path = records_dir / "lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = path.read_text().split()
            except (OSError, ValueError):
                host, pid = "", "0"
            if host == socket.gethostname() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
                continue
            raise InputError(f"another onfh batch (pid {pid} on {host}) is writing {records_dir.parent}; "
                             f"if it is gone, delete {path}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary folders a killed run left (atomic writes that never finished)."""
    for sub in ("scans", "changes"):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if is_onfh_temporary(path):
                    shutil.rmtree(path, ignore_errors=True)
    for path in (out_dir / RECORDS).glob("*.tmp"):
        path.unlink(missing_ok=True)


def record_name(task_or_record: dict) -> str:
    return f"{task_or_record['kind']}-{task_or_record['key']}"


def read_record(records_dir: Path, task: dict) -> dict | None:
    try:
        return json.loads((records_dir / f"{record_name(task)}.json").read_text())
    except (OSError, ValueError):
        return None


def write_record(records_dir: Path, record: dict) -> None:
    path = records_dir / f"{record_name(record)}.json"
    _atomic_text(path, json.dumps(clean_json(record, 6), sort_keys=True))


def _error_record(task: dict, error: str) -> dict:
    record = {"kind": task["kind"], "key": task["key"], "fingerprint": task.get("fingerprint"),
              "status": "error", "error": one_line(error), "elapsed_s": None, "worker": None}
    write_record(Path(task["records_dir"]), record)
    return record


def _execute(tasks: list[dict], workers: int | None, client=None):
    """Yield (task, record) as tasks finish: in this process (1 worker), local processes, or on
    the Dask cluster of ``client`` (closed at the end)."""
    if client is not None:
        yield from _execute_dask(tasks, client)
        return
    if not tasks:
        return
    workers = min(_workers(workers), len(tasks))
    if workers == 1:
        for task in tasks:
            yield task, execute_task(task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: SimpleITK and BLAS keep threads that a forked child must not inherit. The
    # thread variables reach the children through the environment before they import anything.
    ctx = multiprocessing.get_context("spawn")
    with _environment({var: "1" for var in THREAD_VARIABLES}), \
            ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(execute_task, t): t for t in tasks}
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    record = _error_record(task, f"worker process lost: {type(exc).__name__}: {exc}")
                yield task, record
        except BaseException:
            for f in futures:
                f.cancel()
            raise


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect_dask(scheduler: str, wait_s: float = 60.0):
    """A client of the Dask scheduler at ``scheduler`` with at least one worker, or InputError."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs Dask distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {one_line(exc)}") from None
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, OSError):
        client.close()
        raise InputError(f"no Dask worker joined the scheduler at {scheduler} within {wait_s:g} s") from None
    return client


def _execute_dask(tasks: list[dict], client):
    from distributed import as_completed

    try:
        futures = {}
        for task in tasks:  # comparisons (long) first; a worker that dies is not retried elsewhere
            future = client.submit(execute_task, task, pure=False, retries=0,
                                   key=f"onfh-{record_name(task)}-{task['fingerprint'][:12]}",
                                   priority=1 if task["kind"] == "change" else 0)
            futures[future] = task
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # KilledWorker, lost connection
                record = _error_record(task, f"Dask worker lost: {type(exc).__name__}: {exc}")
            yield task, record
    finally:
        client.close()


class Progress:
    """A progress bar on stderr when it is a terminal (tasks done/total, failures, time left),
    plain log lines otherwise (CI, log files): one line per finished task."""

    def __init__(self, total: int, already: int, stream, width: int = 28):
        self.total, self.done, self.failed = total, already, 0
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.fresh = 0
        self.width = width
        self.drawn = False

    def eta_s(self) -> float | None:
        if not self.fresh:
            return None
        return (self.total - self.done) * (time.perf_counter() - self.started) / self.fresh

    def update(self, task: dict, record: dict) -> None:
        self.done += 1
        self.fresh += 1
        ok = record["status"] == "ok"
        self.failed += not ok
        eta = _clock(self.eta_s())
        elapsed = "-" if record.get("elapsed_s") is None else f"{record['elapsed_s']:.1f} s"
        if self.tty:
            if not ok:
                self.line(f"{task['kind']} {task['key']} FAILED: {record['error']}")
            filled = int(self.width * self.done / max(self.total, 1))
            self.stream.write(f"\r\x1b[2Konfh batch [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{self.done}/{self.total} done, {self.failed} failed, "
                              f"{_clock(time.perf_counter() - self.started)} elapsed, ~{eta} left")
            self.stream.flush()
            self.drawn = True
        else:
            status = "ok" if ok else f"FAILED: {record['error']}"
            self.line(f"[{self.done}/{self.total}] {task['kind']} {task['key']} {status} "
                      f"({elapsed}; {self.failed} failed so far; ~{eta} left)")

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def line(self, text: str) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[2K")
            self.drawn = False
        print(f"onfh batch: {text}", file=self.stream, flush=True)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


# tables, statistics, report -------------------------------------------------------------------
def table_rows(tasks: list[dict], records: dict[str, dict], kind: str, root: Path) -> list[dict]:
    """Records joined with the current manifest's facts, sorted by hip and timepoint."""
    rows = []
    for task in tasks:
        record = records.get(record_name(task))
        if task["kind"] != kind or record is None:
            continue
        row = task["row"]
        facts = {"key": task["key"], "subject": row["subject"], "side": row["side"],
                 "timepoint_months": row["timepoint_months"], "outcome": row.get("outcome"),
                 "folder": Path(os.path.relpath(task["folder"], root)).as_posix()}
        if task["baseline"]:
            facts["baseline_key"] = task["baseline"]["key"]
        rows.append({**record, **facts})
    return sorted(rows, key=lambda r: (r["subject"], r["side"], r["timepoint_months"]))


def write_tables(out_dir: Path, tasks: list[dict], records: dict[str, dict]) -> None:
    """scans.csv, changes.csv, cohort.json, cohort.md and report.html from the records."""
    from pipeline.report.cohort import cohort_markdown, cohort_summary
    from pipeline.report.html import write_report

    scans = table_rows(tasks, records, "scan", out_dir)
    changes = table_rows(tasks, records, "change", out_dir)
    _atomic_text(out_dir / "scans.csv", to_csv(scans, SCAN_COLUMNS))
    _atomic_text(out_dir / "changes.csv", to_csv(changes, CHANGE_COLUMNS))
    summary = cohort_summary(scans, changes)
    tmp = out_dir / "cohort.json.tmp"
    write_json(tmp, summary)
    os.replace(tmp, out_dir / "cohort.json")
    _atomic_text(out_dir / "cohort.md", cohort_markdown(summary))
    write_report(out_dir, scans, changes, summary)


def to_csv(records: list[dict], columns: tuple) -> str:
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
    if column == "elapsed_s":
        return f"{value:.1f}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
