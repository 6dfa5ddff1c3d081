"""Timing a whole command as a separate process, as a user runs it (shared by the benchmarks)."""

from __future__ import annotations

import resource
import statistics
import subprocess
import time


def time_process(cmd: list[str], repeat: int, label_words: int = 3, env: dict | None = None) -> dict:
    """Wall time (median, min) over ``repeat`` runs and the children's peak resident memory.

    ``ru_maxrss`` of RUSAGE_CHILDREN is the largest child so far, hence ``peak_rss_mb_max_so_far``.
    ``env``: the command's environment (default: this process's).
    Raises RuntimeError with the command's stderr when it fails.
    """
    walls, peaks = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[:label_words + 1]} failed: {proc.stderr.strip()}")
        peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return {"wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
            "peak_rss_mb_max_so_far": round(max(peaks), 1), "repeat": repeat,
            "command": " ".join(cmd[:label_words])}
