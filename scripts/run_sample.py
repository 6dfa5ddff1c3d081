"""`make run`: measure every scan of a manifest with its labels, print a table, write results/.

Sequential and simple on purpose: `onfh batch` (parallel, resumable, cohort report) supersedes it.
A scan that fails is reported in the table and the others go on; the exit status says so.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.analyze import run_analyze  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.errors import InputError  # noqa: E402
from pipeline.manifest import read_manifest  # noqa: E402

COLUMNS = ("scan", "head_ml", "lesion_ml", "nf_pct", "size", "jic", "arco", "cna_deg", "warnings", "status")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("manifest")
    ap.add_argument("--out", default="results")
    ap.add_argument("--config")
    args = ap.parse_args()
    try:
        rows = read_manifest(args.manifest)
        settings = load_settings(args.config)
    except InputError as exc:
        print(f"onfh: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, failures = [], 0
    started = time.perf_counter()
    print(" ".join(f"{c:>10}" if i else f"{c:<18}" for i, c in enumerate(COLUMNS)))
    for row in rows:
        try:
            analysis = run_analyze(
                row.image, row.side, out / row.key, settings, labels=row.labels,
                head_mask=row.head_mask, lesion_mask=row.lesion_mask,
                femur_mask=row.femur_mask, edge=row.acetabular_edge,
            )
            m = analysis.metrics
            record = {
                "scan": row.key, "head_ml": f"{m['head_volume_ml']:.2f}", "lesion_ml": f"{m['lesion_volume_ml']:.2f}",
                "nf_pct": f"{m['necrotic_fraction_pct']:.1f}", "size": m["size_class"] or "-",
                "jic": m["jic_type"] or "-", "arco": m["arco2021_type"] or "-",
                "cna_deg": "-" if m["cna_deg"] is None else f"{m['cna_deg']:.0f}",
                "warnings": len(m["warnings"]), "status": "ok",
            }
        except InputError as exc:
            failures += 1
            record = {c: "" for c in COLUMNS} | {"scan": row.key, "status": f"error: {exc}"}
        table.append(record)
        print(" ".join(f"{record[c]!s:>10}" if i else f"{record[c]:<18}" for i, c in enumerate(COLUMNS)), flush=True)
    with open(out / "scans.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    print(f"{len(rows) - failures} of {len(rows)} scans measured in {time.perf_counter() - started:.1f} s; "
          f"results in {out}/ (scans.csv, one folder per scan)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
