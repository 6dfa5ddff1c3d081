"""Speed and memory of `onfh batch` on the sample cohort: 1 and 2 local workers, and a resume; JSON out.

The sample manifest (sample_data/manifest.csv) lists 9 scans of 6 hips and 3 follow-ups, so a
run is 12 tasks: 9 analyses and 3 comparisons (each comparison measures both of its visits,
registers them, maps the change and draws its QC picture). The whole program runs as a
separate process, as a user runs it, from a fresh output folder, with the default settings:

* wall time with ``--workers 1`` and ``--workers 2``; scans per minute = 9 / wall minutes (the
  comparisons included), tasks per minute = 12 / wall minutes; speed-up = wall(1) / wall(2);
* where the time goes: the sum of the tasks' own times (``elapsed_s`` of the records), the
  longest task, and the CPU time the run used (user + system of all its processes). The CPU
  use ratio, CPU time / (wall x workers), below 1 means the workers waited: for the machine
  (other programs running: see the load averages) or for work (the last task alone);
* peak resident memory per worker process (``ru_maxrss`` each worker records after each task)
  and of the whole run's largest process;
* wall time of ``--resume`` on the finished run (no task redone: reading the records, hashing
  unchanged inputs through the size/mtime cache, rewriting tables, statistics and report).

``--copies N`` runs a cohort of N copies of the manifest (subjects renamed, files copied, so
every input is hashed and every task done): the sample's 12 tasks take about 18 s of work, so
the fixed costs (starting the program and a worker, the tables and report: about 1.5 s, plus the
longest comparison ending alone) weigh on its speed-up more than they do on a trial's cohort.

Usage: python benchmarks/batch.py [--out benchmarks/results] [--repeat 1] [--manifest M] [--copies N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONFH = Path(sys.executable).parent / "onfh"


def _load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(manifest: Path, out: Path, workers: int | None, config: Path, resume: bool = False) -> dict:
    cmd = [str(ONFH), "batch", str(manifest), "--out", str(out), "--config", str(config)]
    if workers:
        cmd += ["--workers", str(workers)]
    if resume:
        cmd.append("--resume")
    load_before, cpu_before = _load(), _children_cpu_s()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    records = [json.loads(p.read_text()) for p in sorted((out / ".records").glob("*-*.json"))]
    task_s = {f"{r['kind']}-{r['key']}": r["elapsed_s"] for r in records if r.get("elapsed_s") is not None}
    per_worker: dict[int, float] = {}
    for r in records:
        w = r.get("worker") or {}
        if w.get("pid") is not None:
            per_worker[w["pid"]] = max(per_worker.get(w["pid"], 0.0), w["peak_rss_mb"])
    tasks = [r["elapsed_s"] for r in records if r.get("elapsed_s") is not None]
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(_children_cpu_s() - cpu_before, 2),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "n_tasks": len(records),
        "sum_task_s": round(sum(tasks), 2),
        "longest_task_s": round(max(tasks), 2) if tasks else None,
        "worker_peak_rss_mb": sorted(per_worker.values(), reverse=True),
        "largest_process_peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "stderr_tail": proc.stderr.strip().splitlines()[-1],
        "nothing_to_run": "nothing to run" in proc.stderr,
        "task_s": task_s,
    }


def schedule_bound(manifest: Path, run1: dict) -> dict:
    """What 2 workers could at best do with this task list, from the 1-worker task times.

    The tasks are handed out in the batch's order (comparisons first, then scans), each to the
    first free worker, as ProcessPoolExecutor does; the part of the 1-worker wall time outside
    the tasks (start-up, imports, hashing, tables, report) is counted as serial.
    """
    sys.path.insert(0, str(ROOT))
    from pipeline.app.batch import plan_tasks, record_name
    from pipeline.config import Settings
    from pipeline.io.manifest import read_manifest

    order = [record_name(t) for t in plan_tasks(read_manifest(manifest), Path("/nonexistent"), Settings())]
    times = [run1["task_s"][name] for name in order]
    free = [0.0, 0.0]
    for t in times:
        i = free.index(min(free))
        free[i] += t
    serial = run1["wall_s"] - run1["sum_task_s"]
    makespan = max(free)
    return {"serial_s": round(serial, 2), "sum_task_s": run1["sum_task_s"], "two_worker_makespan_s": round(makespan, 2),
            "even_split_s": round(sum(times) / 2, 2), "predicted_wall_2_workers_s": round(serial + makespan, 2),
            "predicted_speedup": round(run1["wall_s"] / (serial + makespan), 3),
            "speedup_if_tasks_split_evenly": round(run1["wall_s"] / (serial + sum(times) / 2), 3)}


def scale_probe(work: Path, n_hips: int = 4000) -> dict:
    """The bookkeeping of a 10,000-scan trial without its image work, in this process.

    4,000 hips: each a baseline, 2,000 of them with one follow-up and 2,000 with two (10,000 scans,
    6,000 comparisons). Synthetic records (plausible figures) are written as a run writes them;
    then what every run and every resume does at the end is timed: reading the records, writing
    scans.csv / changes.csv, the cohort statistics and report.html (no QC thumbnails beyond the
    report's limit). And the resume's input check: the size/mtime stat of 20,000 input files
    whose hashes are cached (tiny files here: the SHA-256 of real scans is what the cache saves).
    """
    import random

    sys.path.insert(0, str(ROOT))
    from pipeline.app.batch import (
        RECORDS,
        InputHashes,
        plan_tasks,
        read_record,
        record_name,
        write_record,
        write_tables,
    )
    from pipeline.config import Settings
    from pipeline.io.manifest import read_manifest

    folder = work / "scale"
    inputs = folder / "inputs"
    inputs.mkdir(parents=True)
    rng = random.Random(1)
    lines = ["subject,side,timepoint_months,image,labels,outcome"]
    for h in range(n_hips):
        outcome = rng.choice(["healed", "progressed", "arthroplasty"])
        visits = (0, 3) if h % 2 else (0, 3, 12)
        for t in visits:
            stem = f"P{h:05d}_m{t:02d}"
            lines.append(f"P{h:05d},{'left' if h % 3 else 'right'},{t},{stem}.nii.gz,{stem}_labels.nii.gz,{outcome}")
            for name in (f"{stem}.nii.gz", f"{stem}_labels.nii.gz"):
                (inputs / name).write_bytes(name.encode())
    manifest = inputs / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = folder / "out"
    (out / RECORDS).mkdir(parents=True)
    t0 = time.perf_counter()
    rows = read_manifest(manifest, require_exists=False)
    tasks = plan_tasks(rows, out, Settings())
    t_plan = time.perf_counter() - t0
    hashes = InputHashes(out / RECORDS / "input_hashes.json")
    for row in rows:  # fill the cache as a first run does
        hashes.sha256(str(row.image)), hashes.sha256(str(row.labels))
    hashes.save()
    t0 = time.perf_counter()
    cached = InputHashes(out / RECORDS / "input_hashes.json")
    for row in rows:
        cached.sha256(str(row.image)), cached.sha256(str(row.labels))
    t_stat = time.perf_counter() - t0
    for task in tasks:
        nf = rng.uniform(0, 45)
        if task["kind"] == "scan":
            rec = {"head_volume_ml": 50.0, "lesion_volume_ml": nf / 2, "necrotic_fraction_pct": nf}
        else:
            v0, vt = rng.uniform(1, 15), rng.uniform(0, 15)
            zones = {z: rng.uniform(0, 1) for z in ("A", "B", "C1", "C2", "anterior", "central", "posterior")}
            rec = {"baseline_lesion_ml": v0, "followup_lesion_ml": vt, "regeneration_pct": 100 * (v0 - vt) / v0,
                   "regenerated_ml": sum(zones[z] for z in ("A", "B", "C1", "C2")), "zones": zones}
        write_record(out / RECORDS, {"kind": task["kind"], "key": task["key"], "status": "ok", "error": "",
                                     "fingerprint": "0" * 64, "elapsed_s": 1.0, **rec})
    t0 = time.perf_counter()
    records = {record_name(t): read_record(out / RECORDS, t) for t in tasks}
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_tables(out, tasks, records)
    t_tables = time.perf_counter() - t0
    return {"n_scans": len(rows), "n_tasks": len(tasks), "plan_s": round(t_plan, 2),
            "cached_input_check_s": round(t_stat, 2), "n_input_files": 2 * len(rows),
            "read_records_s": round(t_read, 2), "tables_statistics_report_s": round(t_tables, 2),
            "report_html_mb": round((out / "report.html").stat().st_size / 1e6, 2)}


def sha256_throughput_mb_s(size_mb: int = 256) -> float:
    """SHA-256 speed on this machine (what an uncached resume pays per MB of input)."""
    import hashlib

    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(size_mb):
        digest.update(block)
    return round(size_mb / (time.perf_counter() - t0), 1)


def replicate(manifest: Path, folder: Path, copies: int) -> Path:
    """A manifest of ``copies`` copies of ``manifest``: subject S becomes S_c1, S_c2...; every file
    it names is copied into c1/, c2/... (paths stay relative to the new manifest)."""
    import csv

    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    path_columns = ("image", "labels", "head_mask", "lesion_mask", "femur_mask")
    out_rows = []
    for c in range(1, copies + 1):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for row in rows:
            new = dict(row, subject=f"{row['subject']}_c{c}")
            for col in path_columns:
                if row.get(col):
                    target = folder / f"c{c}" / row[col]
                    if not target.exists():
                        shutil.copy2(manifest.parent / row[col], target)
                    new[col] = f"c{c}/{row[col]}"
            out_rows.append(new)
    out = folder / "manifest.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(out_rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--manifest", default=str(ROOT / "sample_data" / "manifest.csv"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count (the median is reported)")
    ap.add_argument("--scale-only", action="store_true", help="only the 10,000-scan bookkeeping probe")
    ap.add_argument("--copies", type=int, default=1, help="run a cohort of this many copies of the manifest")
    args = ap.parse_args()
    source = Path(args.manifest).resolve()
    label = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else source.name
    work = Path(tempfile.mkdtemp(prefix="onfh-bench-batch-"))
    manifest = replicate(source, work / "cohort", args.copies) if args.copies > 1 else source
    n_scans = sum(1 for line in manifest.read_text().splitlines()[1:] if line.strip())
    # the default settings, frozen for all runs (a settings change between runs would redo everything)
    sys.path.insert(0, str(ROOT))
    import yaml

    from pipeline.config import load_settings

    config = work / "settings.yaml"
    config.write_text(yaml.safe_dump(load_settings(None).model_dump(mode="json")))
    result: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "manifest": f"{args.copies} copies of {label}" if args.copies > 1 else label,
        "n_scans": n_scans,
        "settings": "defaults (pipeline.config.Settings()), frozen in a file for all runs",
        "runs": {},
    }
    if args.scale_only:
        try:
            print(json.dumps({"trial_bookkeeping_10000_scans": scale_probe(work),
                              "sha256_mb_per_s": sha256_throughput_mb_s()}, indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        all_runs: dict[int, list[dict]] = {1: [], 2: []}
        for k in range(args.repeat):  # interleaved: a busy spell of the machine hits both counts
            for workers in (1, 2):
                run = run_once(manifest, work / f"w{workers}-{k}", workers, config)
                all_runs[workers].append(run)
                print(f"workers {workers} run {k + 1}: {run['wall_s']} s wall, {run['cpu_s']} s CPU, "
                      f"load {run['load_average_before']}", file=sys.stderr)
        for workers, runs in all_runs.items():
            wall = statistics.median(r["wall_s"] for r in runs)
            kinds = {"scan": [], "change": []}
            for r in runs:
                for name, t in r["task_s"].items():
                    kinds[name.split("-")[0]].append(t)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            result["runs"][f"workers_{workers}"] = {
                "wall_s_median": round(wall, 2),
                "scans_per_minute": round(n_scans / (wall / 60.0), 2),
                "tasks_per_minute": round(runs[0]["n_tasks"] / (wall / 60.0), 2),
                "cpu_use_ratio": round(cpu / (wall * workers), 3),
                "wall_s_min": min(r["wall_s"] for r in runs),
                "scan_task_s_median": round(statistics.median(kinds["scan"]), 2),
                "change_task_s_median": round(statistics.median(kinds["change"]), 2),
                "runs": runs,
            }
        w1, w2 = result["runs"]["workers_1"], result["runs"]["workers_2"]
        result["speedup_2_vs_1"] = round(w1["wall_s_median"] / w2["wall_s_median"], 3)
        result["speedup_2_vs_1_fastest_runs"] = round(w1["wall_s_min"] / w2["wall_s_min"], 3)
        result["target_speedup"] = 1.8
        result["bound_from_task_times"] = schedule_bound(manifest, w1["runs"][0])
        result["peak_rss_mb_per_worker"] = {
            "workers_1": max(r["worker_peak_rss_mb"][0] for r in w1["runs"]),
            "workers_2": max(max(r["worker_peak_rss_mb"]) for r in w2["runs"]),
        }
        finished = work / "w2-0"
        resumes = [run_once(manifest, finished, None, config, resume=True) for _ in range(max(args.repeat, 2))]
        result["trial_bookkeeping_10000_scans"] = scale_probe(work)
        result["sha256_mb_per_s"] = sha256_throughput_mb_s()
        result["resume_of_finished_run"] = {
            "wall_s_median": round(statistics.median(r["wall_s"] for r in resumes), 2),
            "wall_s": [r["wall_s"] for r in resumes], "no_task_redone": all(r["nothing_to_run"] for r in resumes),
            "last_line": resumes[-1]["stderr_tail"].replace(str(work), "<tmp>"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "batch.json" if args.copies == 1 else f"batch_x{args.copies}.json"
    (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_2_vs_1", "speedup_2_vs_1_fastest_runs", "bound_from_task_times",
                                              "peak_rss_mb_per_worker", "resume_of_finished_run")}, indent=2))
    print(f"scans/min: 1 worker {w1['scans_per_minute']}, 2 workers {w2['scans_per_minute']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
