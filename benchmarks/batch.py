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

Usage: python benchmarks/batch.py [--out benchmarks/results] [--repeat 1] [--manifest M]
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


def run_once(manifest: Path, out: Path, workers: int | None, resume: bool = False) -> dict:
    cmd = [str(ONFH), "batch", str(manifest), "--out", str(out)]
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
    from pipeline.batch import plan_tasks, record_name
    from pipeline.config import Settings
    from pipeline.manifest import read_manifest

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--manifest", default=str(ROOT / "sample_data" / "manifest.csv"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count (the median is reported)")
    args = ap.parse_args()
    manifest = Path(args.manifest).resolve()
    n_scans = sum(1 for line in manifest.read_text().splitlines()[1:] if line.strip())
    work = Path(tempfile.mkdtemp(prefix="onfh-bench-batch-"))
    result: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "manifest": str(manifest.relative_to(ROOT)) if manifest.is_relative_to(ROOT) else manifest.name,
        "n_scans": n_scans,
        "settings": "defaults (configs/default.yaml)",
        "runs": {},
    }
    try:
        for workers in (1, 2):
            runs = []
            for k in range(args.repeat):
                out = work / f"w{workers}-{k}"
                runs.append(run_once(manifest, out, workers))
                print(f"workers {workers} run {k + 1}: {runs[-1]['wall_s']} s wall, {runs[-1]['cpu_s']} s CPU, "
                      f"load {runs[-1]['load_average_before']}", file=sys.stderr)
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            result["runs"][f"workers_{workers}"] = {
                "wall_s_median": round(wall, 2),
                "scans_per_minute": round(n_scans / (wall / 60.0), 2),
                "tasks_per_minute": round(runs[0]["n_tasks"] / (wall / 60.0), 2),
                "cpu_use_ratio": round(cpu / (wall * workers), 3),
                "runs": runs,
            }
        w1, w2 = result["runs"]["workers_1"], result["runs"]["workers_2"]
        result["speedup_2_vs_1"] = round(w1["wall_s_median"] / w2["wall_s_median"], 3)
        result["target_speedup"] = 1.8
        result["bound_from_task_times"] = schedule_bound(manifest, w1["runs"][0])
        result["peak_rss_mb_per_worker"] = {
            "workers_1": max(r["worker_peak_rss_mb"][0] for r in w1["runs"]),
            "workers_2": max(max(r["worker_peak_rss_mb"]) for r in w2["runs"]),
        }
        finished = work / "w2-0"
        resumes = [run_once(manifest, finished, None, resume=True) for _ in range(max(args.repeat, 2))]
        result["resume_of_finished_run"] = {
            "wall_s_median": round(statistics.median(r["wall_s"] for r in resumes), 2),
            "wall_s": [r["wall_s"] for r in resumes], "no_task_redone": all(r["nothing_to_run"] for r in resumes),
            "last_line": resumes[-1]["stderr_tail"].replace(str(work), "<tmp>"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_2_vs_1", "bound_from_task_times",
                                              "peak_rss_mb_per_worker", "resume_of_finished_run")}, indent=2))
    print(f"scans/min: 1 worker {w1['scans_per_minute']}, 2 workers {w2['scans_per_minute']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
