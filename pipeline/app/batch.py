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

A manifest with ``reader`` or ``repeat`` columns (docs/method.md section 7) makes every read its
own scan task and folder (``scans/S01_right_m00_reader2``), compares each reader's follow-up
against the same reader's baseline, and adds the reader study: ``reader`` and ``repeat`` columns
in the tables, the value used downstream per scan by ``reads.combine``
(:func:`pipeline.report.cohort.combine_reads`), agreement.json (ICC, Bland-Altman, kappa, lesion
Dice and HD95 per scan and reader pair), repeatability.json (test-retest pairs), adjudication.csv
(discordant read pairs) and the Agreement section of cohort.md and report.html.
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
from pipeline.io.manifest import ScanRow, has_reads, read_manifest
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
#: scans.csv of a reader study (a manifest with reader or repeat columns): who read which acquisition.
READ_SCAN_COLUMNS = (*SCAN_COLUMNS[:4], "repeat", "reader", *SCAN_COLUMNS[4:])
#: changes.csv of a reader study: the reader whose two reads were compared, and the change against
#: the repeatability coefficient (docs/method.md section 7).
READ_CHANGE_COLUMNS = (*CHANGE_COLUMNS[:4], "reader", *CHANGE_COLUMNS[4:-2], "nf_change_points",
                       "nf_change_within_noise", "regeneration_within_noise", *CHANGE_COLUMNS[-2:])
#: adjudication.csv: the discordant read pairs of a reader study.
ADJUDICATION_COLUMNS = ("scan", "subject", "side", "timepoint_months", "repeat", "reader_a", "reader_b", "reasons",
                        "necrotic_fraction_a", "necrotic_fraction_b", "jic_type_a", "jic_type_b", "lesion_dice",
                        "lesion_hd95_mm", "status", "adjudicated_read")
#: Columns that may differ between two runs on identical inputs.
TIMING_COLUMNS = ("elapsed_s",)

#: Thread-count variables of numerical libraries, set to 1 in worker processes.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


# planning -----------------------------------------------------------------------------------
def plan_tasks(rows: list[ScanRow], out_dir: Path, settings) -> list[dict]:
    """Change and scan tasks as plain, picklable dicts (they travel to Dask workers), longest first.

    A follow-up is compared with the baseline read by the same reader, first acquisitions only
    (repeat acquisitions serve the repeatability): each reader's regeneration comes from that
    reader's own masks at both visits.
    """
    config_json = settings.canonical_json()
    default = settings.reads.default_reader

    def hip(r):
        return r.subject, r.side, r.reader or default

    first = [r for r in rows if (r.repeat or 1) == 1]
    baselines = {hip(r): r for r in first if r.timepoint_months == 0}
    records = out_dir / RECORDS
    tasks = []
    for row in first:
        base = baselines.get(hip(row))
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
    digest.update(f"{task['kind']}|{__version__}|{_result_settings(task['config_json'])}".encode())
    inputs = scan_inputs if task["kind"] == "scan" else change_inputs
    for row in (task["baseline"], task["row"]):
        if row is None:
            continue
        for name, path in sorted(inputs(row).items()):
            digest.update(f"|{name}:{hashes.sha256(path)}".encode())
        digest.update(f"|{row['side']}|{row.get('acetabular_edge')}".encode())
    return digest.hexdigest()


def _result_settings(config_json: str) -> str:
    """The settings that decide a task's figures: all but ``reads`` (how reads are combined and
    which pairs count as discordant is decided when the tables are built; changing it must not
    redo a cohort's scans)."""
    config = json.loads(config_json)
    config.pop("reads", None)
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


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
        title=f"{row['subject']} {row['side']} {row['timepoint_months']:g} months{_read_title(row)}",
        path_base=task.get("path_base"),
    )
    return scan_record(analysis.result)


def _read_title(row: dict) -> str:
    """", repeat 2, reader2" for a picture's title (nothing for a manifest without reads)."""
    return "".join(f", {text}" for text in (f"repeat {row['repeat']}" if row.get("repeat") else "",
                                            f"read by {row['reader']}" if row.get("reader") else "") if text)


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
        title=f"{row['subject']} {row['side']} {row['timepoint_months']:g} vs 0 months{_read_title(row)}",
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
    _check_reader_names(rows, settings, Path(manifest).name)
    if settings.outputs.dicom_seg:
        _check_dicom_rows(rows, Path(manifest).name)
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


def _check_dicom_rows(rows, manifest_name: str) -> None:
    """Refuse ``outputs.dicom_seg`` for a cohort with a non-DICOM image before any scan runs: a
    SEG refers to DICOM instances, and the row would otherwise fail only when its turn came."""
    from pipeline.io.dicom_seg import check_dicom_input

    for row in rows:
        try:
            check_dicom_input(row.image)
        except InputError as exc:
            raise InputError(f"manifest {manifest_name} line {row.line} ({row.describe()}): {exc}") from None


def _check_reader_names(rows: list[ScanRow], settings, name: str) -> None:
    """A reader named like the default reader is that reader: with an unnamed row of the same scan
    it would be the same read twice."""
    default = settings.reads.default_reader
    unnamed = {r.scan_key: r for r in rows if not r.reader}
    for r in rows:
        if r.reader == default and r.scan_key in unnamed:
            raise InputError(f"manifest {name} line {r.line}: {r.describe()} is also line "
                             f"{unnamed[r.scan_key].line}, whose empty reader cell means the default reader "
                             f"{default!r} (reads.default_reader)")


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
        write_tables(out_dir, tasks, records, settings, reads=has_reads(rows))
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
def table_rows(tasks: list[dict], records: dict[str, dict], kind: str, root: Path,
               default_reader: str = "reader1") -> list[dict]:
    """Records joined with the current manifest's facts, sorted by hip, timepoint, acquisition and
    manifest order (the order of the reads of one scan: the first read listed comes first)."""
    rows = []
    for task in tasks:
        record = records.get(record_name(task))
        if task["kind"] != kind or record is None:
            continue
        row = task["row"]
        facts = {"key": task["key"], "subject": row["subject"], "side": row["side"],
                 "timepoint_months": row["timepoint_months"], "outcome": row.get("outcome"),
                 "folder": Path(os.path.relpath(task["folder"], root)).as_posix(),
                 "reader": row.get("reader") or default_reader, "repeat": row.get("repeat") or 1,
                 "scan_key": _scan_key(row), "line": row.get("line", 0)}
        if task["baseline"]:
            facts["baseline_key"] = task["baseline"]["key"]
        rows.append({**record, **facts})
    return sorted(rows, key=lambda r: (r["subject"], r["side"], r["timepoint_months"], r["repeat"], r["line"]))


def _scan_key(row: dict) -> str:
    """The acquisition's key (the read's key without its reader) of a task's row dict."""
    return ScanRow(row["subject"], row["side"], row["timepoint_months"], Path(row["image"]),
                   repeat=row.get("repeat")).scan_key


def write_tables(out_dir: Path, tasks: list[dict], records: dict[str, dict], settings=None,
                 reads: bool = False) -> None:
    """scans.csv, changes.csv, cohort.json, cohort.md and report.html from the records; for a
    reader study (``reads``) also agreement.json, repeatability.json and adjudication.csv."""
    from pipeline.config import Settings
    from pipeline.report.cohort import cohort_markdown, cohort_summary
    from pipeline.report.html import write_report

    settings = settings or Settings()
    scans = table_rows(tasks, records, "scan", out_dir, settings.reads.default_reader)
    changes = table_rows(tasks, records, "change", out_dir, settings.reads.default_reader)
    if not reads:
        _atomic_text(out_dir / "scans.csv", to_csv(scans, SCAN_COLUMNS))
        _atomic_text(out_dir / "changes.csv", to_csv(changes, CHANGE_COLUMNS))
        summary = cohort_summary(scans, changes)
        _write_json(out_dir / "cohort.json", summary)
        _atomic_text(out_dir / "cohort.md", cohort_markdown(summary))
        write_report(out_dir, scans, changes, summary)
        return
    study = reader_study_outputs(out_dir, scans, changes, settings.reads)
    _atomic_text(out_dir / "scans.csv", to_csv(scans, READ_SCAN_COLUMNS))
    _atomic_text(out_dir / "changes.csv", to_csv(changes, READ_CHANGE_COLUMNS))
    _atomic_text(out_dir / "adjudication.csv", to_csv(study["adjudication"], ADJUDICATION_COLUMNS))
    _write_json(out_dir / "agreement.json", study["agreement"])
    _write_json(out_dir / "repeatability.json", study["repeatability"])
    summary = cohort_summary(study["scans"], study["changes"])
    summary["reads"] = study["reads"]
    _write_json(out_dir / "cohort.json", summary)
    _atomic_text(out_dir / "cohort.md", cohort_markdown(summary, study["agreement"], study["repeatability"]))
    write_report(out_dir, scans, changes, summary, study)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write_json(tmp, data)
    os.replace(tmp, path)


def reader_study_outputs(out_dir: Path, scans: list[dict], changes: list[dict], reads) -> dict:
    """The reader study of a batch from its read records (docs/method.md section 7).

    Parameters
    ----------
    out_dir : Path
        The batch folder (each read's ``labels.nii.gz`` is read for the lesion Dice and HD95).
    scans, changes : list of dict
        :func:`table_rows` of the scan and change tasks, every read.
    reads : ReadsSettings
        ``combine``, ``adjudicator``, ``discordant_nf_points``, ``min_lesion_dice``.

    Returns
    -------
    dict
        ``scans`` and ``changes`` (one record per hip and timepoint, combined), ``agreement``,
        ``repeatability``, ``adjudication`` (rows of adjudication.csv) and ``reads`` (cohort.json's
        summary of the reads). The change rows gain the NF change and the within-noise flags.
    """
    from pipeline.report import agreement as A
    from pipeline.report.cohort import COMBINE_RULES, combine_reads, followup_noise

    ok = [s for s in scans if s.get("status") == "ok"]
    overlaps = {}
    for scan_key in dict.fromkeys(s["scan_key"] for s in ok):
        same = [s for s in ok if s["scan_key"] == scan_key and s["reader"] != reads.adjudicator]
        for i, a in enumerate(same):
            for b in same[i + 1:]:
                overlaps[(scan_key, a["reader"], b["reader"])] = _overlap(out_dir, a, b)
    agreement = A.reader_study(ok, overlaps, reads.adjudicator, reads.discordant_nf_points, reads.min_lesion_dice)
    agreement = {"schema": "onfh-agreement/1", "combine": reads.combine, "rule": COMBINE_RULES[reads.combine],
                 **agreement}

    # test-retest: the first two acquisitions of a hip at one timepoint, combined as downstream but
    # over the readers who read both (a reader read only once would add reader variance to the
    # acquisition's), and per reader
    reads_of: dict[tuple, dict[int, list]] = {}
    for s in ok:
        reads_of.setdefault((s["subject"], s["side"], s["timepoint_months"]), {}).setdefault(s["repeat"], []).append(s)
    pairs = []
    for acquisitions in reads_of.values():
        if len(acquisitions) < 2:
            continue
        first, second = (acquisitions[r] for r in sorted(acquisitions)[:2])
        common = {s["reader"] for s in first} & {s["reader"] for s in second}
        pair = []
        for reads_of_one in (first, second):
            used = [s for s in reads_of_one if s["reader"] in common] or reads_of_one
            pair.extend(combine_reads(used, reads.combine, reads.adjudicator, per_acquisition=True))
        pairs.append(tuple(pair))
    per_reader: dict[str, list] = {}
    for reader in dict.fromkeys(s["reader"] for s in ok):
        mine: dict[tuple, dict[int, dict]] = {}
        for s in ok:
            if s["reader"] == reader:
                mine.setdefault((s["subject"], s["side"], s["timepoint_months"]), {})[s["repeat"]] = s
        found = [tuple(v[r] for r in sorted(v)[:2]) for v in mine.values() if len(v) >= 2]
        if found:
            per_reader[reader] = found
    repeatability = {"schema": "onfh-repeatability/1", **A.repeatability_study(pairs, per_reader)}
    rc_nf, rc_lesion = A.rc_of(repeatability, "necrotic_fraction_pct"), A.rc_of(repeatability, "lesion_volume_ml")

    combined_scans = combine_reads(scans, reads.combine, reads.adjudicator)
    combined_changes = combine_reads(changes, reads.combine, reads.adjudicator, kind="change")
    # each reader's comparison against that reader's own reads of the two visits
    nf = {(s["subject"], s["side"], s["timepoint_months"], s["reader"]): s.get("necrotic_fraction_pct")
          for s in ok if s["repeat"] == 1}
    for c in changes:
        before = nf.get((c["subject"], c["side"], 0, c["reader"]))
        after = nf.get((c["subject"], c["side"], c["timepoint_months"], c["reader"]))
        change = None if before is None or after is None or c.get("status") != "ok" else after - before
        v0, vt = c.get("baseline_lesion_ml"), c.get("followup_lesion_ml")
        c["nf_change_points"] = change
        c["nf_change_within_noise"] = A.within_noise(change, rc_nf)
        c["regeneration_within_noise"] = A.within_noise(None if v0 is None or vt is None else vt - v0, rc_lesion)

    adjudication = [{"scan": p["scan"], "subject": p["subject"], "side": p["side"],
                     "timepoint_months": p["timepoint_months"], "repeat": p["repeat"], "reader_a": p["readers"][0],
                     "reader_b": p["readers"][1], "reasons": "; ".join(p["discordant"]),
                     "necrotic_fraction_a": p["necrotic_fraction_pct"][0],
                     "necrotic_fraction_b": p["necrotic_fraction_pct"][1], "jic_type_a": p["jic_type"][0],
                     "jic_type_b": p["jic_type"][1], "lesion_dice": p["lesion_dice"],
                     "lesion_hd95_mm": p["lesion_hd95_mm"], "status": p["status"],
                     "adjudicated_read": p["adjudicated_read"]} for p in agreement["discordant"]]
    sources: dict[str, int] = {}
    for c in combined_scans:
        if c.get("combined_by"):
            name = "mean of reads" if c["combined_by"].startswith("mean") else c["combined_by"]
            sources[name] = sources.get(name, 0) + 1
    summary = {
        "combine": reads.combine, "rule": COMBINE_RULES[reads.combine], "adjudicator": reads.adjudicator,
        "readers": list(dict.fromkeys(s["reader"] for s in scans if s["reader"] != reads.adjudicator)),
        "n_adjudicated_reads": sum(s["reader"] == reads.adjudicator for s in scans),
        "n_reads": len(scans), "n_reads_ok": len(ok),
        "n_repeat_acquisitions": len({s["scan_key"] for s in scans if s["repeat"] > 1}),
        "scans_by_source": dict(sorted(sources.items())),
        "discordant_pairs": {"open": sum(p["status"] == "open" for p in agreement["discordant"]),
                             "resolved": sum(p["status"] == "resolved" for p in agreement["discordant"])},
        "followup_changes": followup_noise(combined_scans, combined_changes, rc_nf, rc_lesion),
    }
    return {"scans": combined_scans, "changes": combined_changes, "agreement": agreement,
            "repeatability": repeatability, "adjudication": adjudication, "reads": summary}


def _overlap(out_dir: Path, a: dict, b: dict) -> dict:
    """Lesion Dice and HD95 of two reads of one scan, from the label maps in their folders."""
    import nibabel as nib
    import numpy as np

    from pipeline.report.agreement import lesion_overlap

    try:
        maps = [nib.load(str(out_dir / r["folder"] / "labels.nii.gz")) for r in (a, b)]
        arrays = [np.asarray(m.dataobj) for m in maps]
    except (OSError, ValueError) as exc:
        return {"lesion_dice": None, "lesion_hd95_mm": None, "reason": f"label map unreadable: {one_line(exc)}"}
    if arrays[0].shape != arrays[1].shape or not np.allclose(maps[0].affine, maps[1].affine, atol=1e-3):
        return {"lesion_dice": None, "lesion_hd95_mm": None, "reason": "the reads' label maps lie on different grids"}
    spacing = np.sqrt((maps[0].affine[:3, :3] ** 2).sum(axis=0))
    return lesion_overlap(arrays[0] == 2, arrays[1] == 2, spacing)


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
