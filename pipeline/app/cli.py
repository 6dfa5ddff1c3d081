"""The `onfh` program (contract in docs/design.md).

Bad input ends with exit status 2 and one line ``onfh: error: ...`` on stderr; nothing is written.
Heavy modules are imported inside the commands so that `onfh info` and `onfh analyze` start fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.io.parsing import parse_point

LANDMARK_OPTIONS = ("--acetabular-edge", "--acetabular-roof-medial", "--lesion-seed", "--roi")
_TRIPLE = re.compile(r"^-?\d*\.?\d+(e-?\d+)?,")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for any bad input
        self.exit(2, f"onfh: error: {message}\n")


def _join_negative_points(argv: list[str]) -> list[str]:
    """`--acetabular-edge -31.2,4,7` would read as an unknown option: glue it as `--opt=value`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in LANDMARK_OPTIONS and i + 1 < len(argv) and _TRIPLE.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _side_options(p) -> None:
    """--side and its override (analyze and compare)."""
    p.add_argument("--side", required=True, choices=("left", "right"), help="the patient's hip")
    p.add_argument("--trust-side", action="store_true",
                   help="keep --side even where the anatomy (femoral neck, acetabulum) shows the other hip")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onfh", description="Femoral-head osteonecrosis MRI volumetry (see README.md).")
    parser.add_argument("--version", action="version", version=f"onfh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("analyze", help="measure one hip of one scan")
    p.add_argument("image", help="NIfTI, NRRD, MHA/MHD file, or DICOM folder/file")
    _side_options(p)
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--labels", help="label map on the image grid (head and lesion labels), or a 3D Slicer "
                   "segmentation (.seg.nrrd) or DICOM SEG (head and lesion segments by name or SNOMED CT code)")
    p.add_argument("--head-label", type=int, help="label of the femoral head (default 1)")
    p.add_argument("--lesion-label", type=int, help="label of the lesion (default 2)")
    _segment_options(p)
    p.add_argument("--head-mask", help="binary femoral-head mask (lesion included)")
    p.add_argument("--lesion-mask", help="binary lesion mask")
    p.add_argument("--femur-mask", help="binary proximal-femur mask, or a TotalSegmentator label map (femur_<side>; "
                   "its hip_<side> is the acetabulum); the head is isolated from it (without "
                   "--lesion-mask the lesion is segmented automatically inside that head)")
    p.add_argument("--acetabulum-mask", help="binary hip-bone/acetabulum mask for the weight-bearing span")
    p.add_argument("--acetabular-edge", help="lateral acetabular edge X,Y,Z (RAS mm)")
    p.add_argument("--acetabular-roof-medial", help="medial end of the acetabular roof X,Y,Z (RAS mm)")
    p.add_argument("--lesion-seed", action="append", default=None, metavar="X,Y,Z",
                   help="a point inside the lesion, RAS mm (repeatable; automatic segmentation)")
    p.add_argument("--roi", metavar="X0,Y0,Z0,X1,Y1,Z1",
                   help="RAS mm box holding the head centre and the lesion (automatic segmentation)")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when a folder holds several series")
    p.add_argument("--spacing", help="voxel size SX,SY,SZ mm for files whose header has none")
    p.add_argument("--config", help="YAML settings (defaults: configs/default.yaml)")
    _dicom_seg_option(p)

    p = sub.add_parser("compare", help="follow-up scans of one hip against its baseline: registration, regeneration")
    p.add_argument("baseline", help="baseline image")
    p.add_argument("followups", nargs="+", metavar="followup", help="follow-up image(s), in visit order")
    _side_options(p)
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--baseline-labels", help="label map on the baseline grid (head and lesion labels); "
                   "without label maps every visit is segmented automatically")
    p.add_argument("--followup-labels", nargs="+", metavar="MAP", help="one label map per follow-up, in order")
    _segment_options(p, " (every visit's .seg.nrrd)")
    p.add_argument("--acetabular-edge", help="baseline lateral acetabular edge X,Y,Z (RAS mm): sets the zones")
    p.add_argument("--acetabular-roof-medial", help="baseline medial end of the acetabular roof X,Y,Z (RAS mm)")
    p.add_argument("--config", help="YAML settings (defaults: configs/default.yaml)")
    _dicom_seg_option(p, " of every visit (followup_*: with the regeneration)")

    p = sub.add_parser("info", help="geometry and series facts of an image (no patient identifiers)")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--series", help="DICOM SeriesInstanceUID when a folder holds several series")
    p.add_argument("--spacing", help="voxel size SX,SY,SZ mm for files whose header has none")

    p = sub.add_parser("batch", help="a cohort from a manifest: every scan, every follow-up against baseline")
    p.add_argument("manifest", help="CSV: subject, side, timepoint_months, image [, labels, ..., reader, repeat]")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="YAML settings")
    p.add_argument("--workers", type=int, help="local worker processes (default: the core count)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--resume", action="store_true", help="skip tasks whose inputs and settings are unchanged")

    p = sub.add_parser("sample-data", help="write the synthetic sample cohort with ground truth")
    p.add_argument("dir")

    p = sub.add_parser("review", help="open napari with the images, their label maps and the Analyze hip and "
                       "Compare visits widgets")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="NIfTI, NRRD, MHA/MHD file, or DICOM folder/file")
    p.add_argument("--labels", help="label map of the (single) IMAGE; default: IMAGE_labels.* beside it")
    p.add_argument("--side", choices=("left", "right"), help="preset the widget's hip side")
    p.add_argument("--acetabular-edge", help="lateral acetabular edge X,Y,Z (RAS mm), as a landmark layer")
    p.add_argument("--config", help="YAML settings for the widget's measurements")
    p.add_argument("--measure", action="store_true", help="measure the first image's hip on opening")
    p.add_argument("--compare", action="store_true",
                   help="compare the last IMAGE (follow-up) with the first (baseline) on opening")
    p.add_argument("--screenshot", metavar="PNG", help="write a picture of the window and exit (no interaction)")
    p.add_argument("--reader", metavar="NAME", help="your reader name: Export saves the read under it, with an "
                   "audit entry")
    p.add_argument("--worklist", metavar="FILE", help="a blinded worklist (onfh worklist): step through its cases, "
                   "shown by code only")

    p = sub.add_parser("worklist", help="a reader's blinded reading order of a manifest (and its key file)")
    p.add_argument("manifest", help="CSV: subject, side, timepoint_months, image [, labels, ...]")
    p.add_argument("--reader", required=True, metavar="NAME", help="the reader (letters, digits, '.', '_', '-')")
    p.add_argument("--out", required=True, metavar="FILE", help="the worklist CSV; the key goes to FILE.key.csv")
    p.add_argument("--seed", type=int, help="shuffle seed (default: derived from the reader name)")

    p = sub.add_parser("audit", help="audit trails of saved reads")
    audit = p.add_subparsers(dest="audit_command", metavar="verify", required=True, parser_class=_Parser)
    p = audit.add_parser("verify", help="check an audit.jsonl: exit 0 if every entry is intact, else 2 naming "
                         "the first broken line")
    p.add_argument("file", help="audit.jsonl")
    return parser


def _segment_options(p, scope: str = "") -> None:
    """--head-segment / --lesion-segment: which segments of a 3D Slicer segmentation to measure."""
    p.add_argument("--head-segment", metavar="NAME", help="name of the femoral-head segment of a .seg.nrrd "
                   f"(default: \"Femoral head\", \"Head\"... or SNOMED CT 2812003){scope}")
    p.add_argument("--lesion-segment", metavar="NAME", help="name of the lesion segment of a .seg.nrrd "
                   f"(default: \"Necrosis\", \"Lesion\"... or SNOMED CT 6574001){scope}")


def _dicom_seg_option(p, scope: str = "") -> None:
    """--dicom-seg: outputs.dicom_seg for this run."""
    p.add_argument("--dicom-seg", action="store_true",
                   help=f"DICOM input: also write seg.dcm (DICOM SEG: head, lesion) and sr.dcm (measurement report)"
                   f"{scope}; they carry the patient and study modules, to go back to the PACS")


#: BLAS thread-count variables that `onfh` sets to 1 unless the environment sets them (see main)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def one_blas_thread() -> None:
    """Let BLAS run on one thread in this process, unless the user's environment says otherwise.

    The products of one scan are small (points x 3 by 3 x 3); a second BLAS thread only spins,
    and on a busy machine it made them several times slower (docs/batch.md: batch workers run
    with one thread already, so `onfh analyze` now computes exactly as they do). Only effective
    before numpy is first imported, which the commands do lazily.
    """
    if "numpy" in sys.modules:
        return
    for var in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(var, "1")


def main(argv: list[str] | None = None) -> int:
    one_blas_thread()
    argv = _join_negative_points(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except InputError as exc:
        print(f"onfh: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onfh: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("ONFH_DEBUG"):
            raise
        print(f"onfh: internal error: {type(exc).__name__}: {exc} (set ONFH_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


def _cmd_analyze(args) -> int:
    from pipeline.app.analyze import run_analyze
    from pipeline.config import load_settings

    settings = load_settings(args.config, labels__head=args.head_label, labels__lesion=args.lesion_label,
                             side__on_contradiction=_trust(args), outputs__dicom_seg=args.dicom_seg or None)
    # which masks may go together: pipeline.masks.labels.mask_source, first thing in run_analyze
    analysis = run_analyze(
        args.image, args.side, args.out, settings,
        labels=args.labels, head_mask=args.head_mask, lesion_mask=args.lesion_mask, femur_mask=args.femur_mask,
        acetabulum_mask=args.acetabulum_mask,
        edge=parse_point(args.acetabular_edge) if args.acetabular_edge else None,
        roof_medial=parse_point(args.acetabular_roof_medial) if args.acetabular_roof_medial else None,
        lesion_label_explicit=args.lesion_label is not None, series_uid=args.series,
        head_segment=args.head_segment, lesion_segment=args.lesion_segment,
        spacing=_spacing(args.spacing),
        lesion_seeds=[parse_point(p) for p in args.lesion_seed] if args.lesion_seed else None,
        roi=_roi(args.roi),
    )
    result = analysis.result
    print(f"{result.summary_line()}; -> {args.out}")
    for w in result.warnings:
        print(f"  warning: {w}", file=sys.stderr)
    return 0


def _cmd_compare(args) -> int:
    from pipeline.app.compare import run_compare
    from pipeline.config import load_settings
    from pipeline.measures.results import Longitudinal

    settings = load_settings(args.config, side__on_contradiction=_trust(args),
                             outputs__dicom_seg=args.dicom_seg or None)
    content = run_compare(
        args.baseline, args.followups, args.side, args.out, settings,
        baseline_labels=args.baseline_labels, followup_labels=args.followup_labels,
        head_segment=args.head_segment, lesion_segment=args.lesion_segment,
        acetabular_edge=parse_point(args.acetabular_edge) if args.acetabular_edge else None,
        acetabular_roof_medial=parse_point(args.acetabular_roof_medial) if args.acetabular_roof_medial else None,
        # steps on a terminal only: in logs and pipes stderr stays the warnings or one error line
        progress=(lambda text: print(f"onfh compare: {text}...", file=sys.stderr, flush=True))
        if sys.stderr.isatty() else None,
    )
    result = Longitudinal.from_json(content)
    several = len(result.followups) > 1
    for f in result.followups:
        who = f"follow-up {f.index}" if several else "follow-up"
        print(f"{result.side} hip, {who}: {f.headline(result.baseline)}")
    warnings = result.warnings
    print(f"{len(warnings)} warning(s); -> {args.out}")
    for w in warnings:
        print(f"  warning: {w}", file=sys.stderr)
    return 0


def _trust(args) -> str | None:
    """--trust-side: a contradiction between --side and the anatomy warns instead of refusing."""
    return "warn" if args.trust_side else None


def _cmd_info(args) -> int:
    from pipeline.io.info import format_info, scan_info

    info = scan_info(args.image, series_uid=args.series, spacing=_spacing(args.spacing))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _numbers(text: str, count: int, valid, expected: str) -> tuple[float, ...]:
    """Comma-separated numbers of an option; InputError naming what was expected."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values) or not valid(values):
        raise InputError(f"{expected}, got {text!r}")
    return values


def _roi(text: str | None):
    """--roi X0,Y0,Z0,X1,Y1,Z1 (RAS mm box)."""
    if not text:
        return None
    return _numbers(text, 6, lambda box: all(lo < hi for lo, hi in zip(box[:3], box[3:])),
                    "--roi expects X0,Y0,Z0,X1,Y1,Z1 in RAS mm with X0 < X1, Y0 < Y1, Z0 < Z1")


def _spacing(text: str | None):
    """--spacing SX,SY,SZ (mm) for headers without geometry."""
    if not text:
        return None
    return _numbers(text, 3, lambda s: min(s) > 0, "--spacing expects three positive numbers SX,SY,SZ (mm)")


def _cmd_sample_data(args) -> int:
    from pipeline.synthetic.sampledata import write_sample_cohort

    manifest = write_sample_cohort(Path(args.dir), progress=lambda msg: print(msg, file=sys.stderr))
    print(manifest)
    return 0


def _cmd_batch(args) -> int:
    from pipeline.app.batch import run_batch
    from pipeline.config import load_settings

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    settings = load_settings(args.config)
    rc = run_batch(args.manifest, args.out, settings, workers=args.workers, scheduler=args.scheduler,
                   resume=args.resume)
    # the last line is the report a person opens (make run ends with it)
    print(Path(args.out).resolve() / "report.html")
    return rc


def _cmd_review(args) -> int:
    from pipeline.napari._review import run_review

    return run_review(args.images, labels=args.labels, side=args.side, config=args.config,
                      screenshot=args.screenshot, measure=args.measure, compare=args.compare,
                      edge=parse_point(args.acetabular_edge) if args.acetabular_edge else None,
                      reader=args.reader, worklist=args.worklist)


def _cmd_worklist(args) -> int:
    from pipeline.io.worklist import write_worklist

    out, key, seed = write_worklist(args.manifest, args.reader, args.out, args.seed)
    print(f"{out} (key for the coordinator only: {key}; seed {seed})")
    return 0


def _cmd_audit(args) -> int:
    from pipeline.io.audit import entries, last_line_sha256, verify

    broken = verify(args.file)
    if broken is not None:
        raise InputError(f"audit log {args.file} is broken at {broken}")
    count = len(entries(args.file))
    # the last line's hash, to keep elsewhere: a log cut after its last entry is caught only against it
    print(f"{count} {'entry' if count == 1 else 'entries'} intact; last line SHA-256 {last_line_sha256(args.file)}")
    return 0


_COMMANDS = {"analyze": _cmd_analyze, "batch": _cmd_batch, "compare": _cmd_compare, "info": _cmd_info,
             "sample-data": _cmd_sample_data, "review": _cmd_review, "worklist": _cmd_worklist,
             "audit": _cmd_audit}

if __name__ == "__main__":
    sys.exit(main())
