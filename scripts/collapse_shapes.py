"""Head depression on dents of other shapes and places than the validation's (docs/method.md section 6).

``scripts/collapse_validation.py`` validates one dent shape, a flat cut over the lesion. A real
collapse need not be flat nor centred on the lesion's axis, so this table measures the same
head (:func:`collapse_validation.subject`) with

* ``crater 8 mm`` and ``crater 12 mm``: a spherical crater of that radius pressed into the head
  over the lesion (``HipState.dent_radius_mm``), narrower and steeper than the flat cut of the
  same depth (10-13 mm across at 2.5 mm deep, against 21 mm);
* ``flat, medial`` and ``flat, postero-lateral``: the flat cut with its axis moved off the
  lesion, near the pole and towards the posterior-lateral dome;
* ``flat, cartilage on the dent``: the validation's flat cut with the articular cartilage sunk
  with the bone (``HipState.dent_cartilage_follows``) instead of left on the sphere over a
  fluid-filled dent (the labels are the same; the image differs);
* ``flat, head radius 20 mm`` and ``27 mm``: the validation's flat cut on a smaller and a larger
  head (23.5 mm there),

at 1.5, 2.5 and 3.5 mm on the validation's five grids, from the truth labels and (``auto_*``)
from the automatic segmentation of a rendered MRI (one noise seed per case,
[AUTO_SEED + 1, shape, grid, depth]). Writes ``docs/validation/collapse_shapes.json``.

Run: ``python scripts/collapse_shapes.py`` (about 17-25 minutes on one core for the 105 rows;
``--no-auto``: labels only, 2 minutes; ``--grids``/``--shapes`` select cases and print without
writing unless ``--out``; ``--table``: docs/method.md's table from the committed JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import collapse_validation as V  # noqa: E402

OUT = ROOT / "docs" / "validation" / "collapse_shapes.json"
DEPTHS = (1.5, 2.5, 3.5)
#: name -> HipState fields of the dent (hip-local u lateral, v anterior, w superior)
SHAPES = {
    "crater 8 mm": {"dent_radius_mm": 8.0},
    "crater 12 mm": {"dent_radius_mm": 12.0},
    "flat, medial": {"dent_direction": (-0.15, 0.25, 0.96)},
    "flat, postero-lateral": {"dent_direction": (0.55, -0.25, 0.80)},
    "flat, cartilage on the dent": {"dent_cartilage_follows": True},
    "flat, head radius 20 mm": {"head_radius_mm": 20.0},
    "flat, head radius 27 mm": {"head_radius_mm": 27.0},
}


def shape_case(subj, shape: str, depth: float, grid: str, auto: bool) -> dict:
    """One row: the label measurement (:func:`collapse_validation.dent_case`) and, with ``auto``,
    the automatic one (:func:`collapse_validation.auto_case`). ``subj``: the validation's subject
    (a shape with ``head_radius_mm`` builds its own)."""
    kw = dict(SHAPES[shape])
    radius = kw.pop("head_radius_mm", None)
    if radius is not None:
        subj = V.subject(radius)
    row = {"shape": shape, **V.dent_case(subj, depth, grid, shape=kw)}
    if auto:
        seed = [V.AUTO_SEED + 1, list(SHAPES).index(shape), list(V.GRIDS).index(grid), DEPTHS.index(depth)]
        row.update(V.auto_case(subj, depth, grid, shape=kw, seed=seed))
    return row


def markdown_table(rows: list[dict]) -> str:
    """docs/method.md's table of the shapes: per shape and grid, the error at each depth (labels;
    automatic) and the stages called, "-" for a dent found "none"."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for grid in dict.fromkeys(r["grid"] for r in rows if r["shape"] == shape):
            cases = [r for r in rows if r["shape"] == shape and r["grid"] == grid]
            lab = " / ".join(f"{r['error_mm']:+.2f}" for r in cases)
            auto = " / ".join(f"{r['auto_error_mm']:+.2f}" for r in cases)
            calls = " / ".join(f"{r['stage'] if r['stage'] != 'none' else '-'}, "
                               f"{r['auto_stage'] if r['auto_stage'] != 'none' else '-'}" for r in cases)
            out.append(f"| {shape} | {grid} | {lab} | {auto} | {calls} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-auto", action="store_true", help="label maps only")
    ap.add_argument("--grids", help="grid names or unique substrings, comma-separated")
    ap.add_argument("--shapes", help="shape names or unique substrings, comma-separated")
    ap.add_argument("--out", type=Path, help="write here (default: docs/validation/collapse_shapes.json on a full run)")
    ap.add_argument("--table", action="store_true", help="print the committed table as markdown rows and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(OUT.read_text())["rows"]))
        return
    grids = V._pick_grids(args.grids)
    shapes = [s for s in SHAPES if not args.shapes or any(k in s for k in args.shapes.split(","))]
    started = time.perf_counter()
    subj = V.subject()
    rows = []
    for shape in shapes:
        for grid in grids:
            for depth in DEPTHS:
                row = shape_case(subj, shape, depth, grid, not args.no_auto)
                rows.append(row)
                print(f"| {shape} ", end="")
                V._print_row(row)
    report = {
        "what": "head depression on dents of other shapes and places than the flat cut over the lesion of "
                "collapse.json, from their truth labels and (auto_*) the automatic segmentation of a rendered MRI "
                "(docs/method.md section 6); written by scripts/collapse_shapes.py",
        "shapes": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
                   for k, v in SHAPES.items()},
        "auto": None if args.no_auto else {"noise_pct": V.AUTO_NOISE_PCT, "bias_pct": V.AUTO_BIAS_PCT,
                                          "seed": f"[{V.AUTO_SEED + 1}, shape index, grid index, depth index]"},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    partial = bool(args.grids or args.shapes or args.no_auto)
    out = args.out or (None if partial else OUT)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
