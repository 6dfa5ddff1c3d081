"""`onfh batch` on a tiny phantom cohort: outputs against the phantoms' truth, failures recorded,
resume, interruption, worker counts, a Dask LocalCluster and real `dask scheduler`/`dask worker`
processes, progress lines, refusals. Every comparison is against the truth or another run."""

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _hip_pair import HipModel, grid, render, rotation, rotation_error_deg

from pipeline.app.batch import CHANGE_COLUMNS, SCAN_COLUMNS, TIMING_COLUMNS, Progress, run_batch
from pipeline.app.cli import main
from pipeline.config import load_settings

from conftest import save_nifti

BIN = Path(sys.executable).parent
# Fast settings: no isotropic reconstruction, STL or QC picture; registration on 2 mm voxels.
FAST = ("reconstruction: {isotropic: false}\noutputs: {stl: false, qc_png: false}\n"
        "longitudinal: {voxel_mm: 2.0}\n")
# (subject, side, months, lesion cap mm, pose of the follow-up (rotation axis, degrees, translation), outcome)
VISITS = (
    ("S01", "right", 0, 12.0, None, "healed"),
    ("S01", "right", 3, 8.0, ((1, 2, -1), 6.0, (3.0, -2.0, 2.0)), "healed"),
    ("S02", "left", 0, 10.0, None, "progressed"),
    ("S02", "left", 12, 12.5, ((2, -1, 1), 5.0, (-2.0, 3.0, 1.0)), "progressed"),
)
N_TASKS = 6  # 4 scans, 2 comparisons


def _write_visit(folder: Path, subject, side, months, cap, pose, seed=None):
    model = HipModel(side=side, center=(6.0 if side == "right" else -6.0, -4.0, 3.0))
    rot, t = (np.eye(3), np.zeros(3)) if pose is None else (rotation(pose[0], pose[1]), np.asarray(pose[2]))
    shape, spacing = (40, 40, 36), (2.2, 2.2, 2.4)
    affine = grid(shape, spacing, rot @ model.c + t + np.array([8.0 if side == "right" else -8.0, 0.0, -10.0]))
    image, labels = render(model, shape, affine, cap, pose=None if pose is None else (rot, t),
                           seed=months + 1 if seed is None else seed)
    stem = f"{subject}_m{months:02d}"
    save_nifti(folder / f"{stem}.nii.gz", image, affine)
    save_nifti(folder / f"{stem}_labels.nii.gz", labels, affine)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    return stem, {"head_ml": (labels > 0).sum() * voxel_ml, "lesion_ml": (labels == 2).sum() * voxel_ml,
                  "rotation": rot, "translation": t}


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    columns = ["subject", "side", "timepoint_months", "image", "labels", "outcome"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    rows, truth = [], {}
    for subject, side, months, cap, pose, outcome in VISITS:
        stem, facts = _write_visit(folder, subject, side, months, cap, pose)
        rows.append({"subject": subject, "side": side, "timepoint_months": months, "image": f"{stem}.nii.gz",
                     "labels": f"{stem}_labels.nii.gz", "outcome": outcome})
        truth[f"{subject}_{side}_m{months:02d}"] = facts
    (folder / "fast.yaml").write_text(FAST)
    return {"folder": folder, "manifest": _write_manifest(folder / "manifest.csv", rows), "rows": rows,
            "truth": truth, "config": folder / "fast.yaml"}


def _run(manifest, out, config, **kwargs):
    log = io.StringIO()
    rc = run_batch(manifest, out, load_settings(config), stream=log, **kwargs)
    return rc, log.getvalue()


def _tables(out: Path) -> dict:
    """scans.csv and changes.csv without the timing column, and cohort.json, as text."""
    tables = {}
    for name in ("scans.csv", "changes.csv"):
        rows = list(csv.reader((out / name).read_text().splitlines()))
        keep = [i for i, c in enumerate(rows[0]) if c not in TIMING_COLUMNS]
        tables[name] = "\n".join(",".join(r[i] for i in keep) for r in rows)
    tables["cohort.json"] = (out / "cohort.json").read_text()
    return tables


def _rows(out: Path, name: str) -> dict:
    return {r["key"]: r for r in csv.DictReader(open(out / name))}


def _task_lines(log: str) -> list[str]:
    return re.findall(r"^onfh batch: \[\d+/\d+\] (\w+ \S+) ", log, flags=re.M)


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory):
    """The uninterrupted run on 2 local worker processes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    rc, log = _run(cohort["manifest"], out, cohort["config"], workers=2)
    return {"out": out, "rc": rc, "log": log}


def test_batch_outputs_match_the_phantom_truth(cohort, reference):
    out = reference["out"]
    assert reference["rc"] == 0, reference["log"]
    for name in ("scans.csv", "changes.csv", "cohort.json", "cohort.md", "report.html"):
        assert (out / name).is_file(), name
    scans, changes = _rows(out, "scans.csv"), _rows(out, "changes.csv")
    assert list(csv.reader(open(out / "scans.csv")))[0] == list(SCAN_COLUMNS)
    assert list(csv.reader(open(out / "changes.csv")))[0] == list(CHANGE_COLUMNS)
    assert set(scans) == set(cohort["truth"]) and set(changes) == {"S01_right_m03", "S02_left_m12"}
    for key, t in cohort["truth"].items():
        r = scans[key]
        assert r["status"] == "ok" and r["error"] == ""
        assert r["review"] == ""  # label maps a person gave: nothing for the algorithm to flag
        assert (out / r["folder"] / "metrics.json").is_file()
        assert float(r["head_volume_ml"]) == pytest.approx(t["head_ml"], abs=2e-4), key
        assert float(r["lesion_volume_ml"]) == pytest.approx(t["lesion_ml"], abs=2e-4), key
        assert float(r["necrotic_fraction_pct"]) == pytest.approx(100 * t["lesion_ml"] / t["head_ml"], abs=1e-3)
    for key, r in changes.items():
        base, follow = cohort["truth"][r["baseline_key"]], cohort["truth"][key]
        assert (out / r["folder"] / "longitudinal.json").is_file()
        v0, vt = base["lesion_ml"], follow["lesion_ml"]
        assert float(r["baseline_lesion_ml"]) == pytest.approx(v0, abs=2e-4)
        assert float(r["regeneration_pct"]) == pytest.approx(100 * (v0 - vt) / v0, abs=1e-3)
        # persistent and regenerated partition the baseline lesion on the baseline grid
        assert float(r["persistent_ml"]) + float(r["regenerated_ml"]) == pytest.approx(v0, abs=1e-3)
        # the registration recovers the phantom's motion: |t| is the same for either direction
        assert float(r["translation_norm_mm"]) == pytest.approx(np.linalg.norm(follow["translation"]), abs=1.0)
        true_angle = rotation_error_deg(np.eye(3), follow["rotation"])
        assert float(r["rotation_deg"]) == pytest.approx(true_angle, abs=1.0)
        assert float(r["head_dice"]) > 0.9
    summary = json.loads((out / "cohort.json").read_text())
    assert summary["n_scans_ok"] == 4 and summary["n_comparisons_ok"] == 2
    healed = summary["regeneration"]["3 months"]["healed"]["per_hip_pct"]["mean"]
    assert healed == pytest.approx(float(changes["S01_right_m03"]["regeneration_pct"]), abs=1e-3)
    # progress as plain lines (the stream is not a terminal): one per task, then the summary
    log = reference["log"].splitlines()
    assert all(line.startswith("onfh batch: ") for line in log)
    assert sorted(_task_lines(reference["log"])) == sorted(
        [f"scan {k}" for k in scans] + [f"change {k}" for k in changes])
    assert [int(n) for n in re.findall(r"^onfh batch: \[(\d+)/6\]", reference["log"], re.M)] == list(range(1, 7))
    assert "6 of 6 tasks ok, 0 failed" in log[-1] and "report.html" in log[-1]


def test_one_worker_gives_the_same_tables_as_two(cohort, reference, tmp_path):
    rc, log = _run(cohort["manifest"], tmp_path / "out", cohort["config"], workers=1)
    assert rc == 0, log
    assert _tables(tmp_path / "out") == _tables(reference["out"])


def test_resume_of_a_finished_run_does_no_work(cohort, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    records = {p.name: p.stat().st_mtime_ns for p in (out / ".records").glob("*-*.json")}
    started = time.perf_counter()
    rc, log = _run(cohort["manifest"], out, cohort["config"], resume=True)
    elapsed = time.perf_counter() - started
    assert rc == 0 and "6 already done; nothing to run" in log and not _task_lines(log)
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".records").glob("*-*.json")} == records
    for name in ("scans.csv", "changes.csv", "cohort.json", "cohort.md"):  # even elapsed_s is kept
        assert (out / name).read_bytes() == (reference["out"] / name).read_bytes(), name
    assert elapsed < 30


def _copy_cohort(cohort, reference, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(cohort["folder"], inputs)
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    return inputs, out


def test_a_changed_input_redoes_only_its_tasks(cohort, reference, tmp_path):
    inputs, out = _copy_cohort(cohort, reference, tmp_path)
    # a new modification time with the same bytes is not a change
    os.utime(inputs / "S01_m03.nii.gz", ns=(time.time_ns(), time.time_ns()))
    rc, log = _run(inputs / "manifest.csv", out, inputs / "fast.yaml", workers=1, resume=True)
    assert rc == 0 and "nothing to run" in log
    # new image bytes (another noise draw) of the S01 3-month scan: its scan and its comparison
    subject, side, months, cap, pose, _ = VISITS[1]
    _write_visit(inputs, subject, side, months, cap, pose, seed=99)
    rc, log = _run(inputs / "manifest.csv", out, inputs / "fast.yaml", workers=1, resume=True)
    assert rc == 0, log
    assert "4 already done" in log
    assert sorted(_task_lines(log)) == ["change S01_right_m03", "scan S01_right_m03"]
    before, after = _rows(reference["out"], "scans.csv"), _rows(out, "scans.csv")
    assert after["S01_right_m03"]["image_sha256"] != before["S01_right_m03"]["image_sha256"]
    for key in ("S01_right_m00", "S02_left_m00", "S02_left_m12"):
        assert after[key] == before[key]
    # same label map: the same volumes
    assert after["S01_right_m03"]["lesion_volume_ml"] == before["S01_right_m03"]["lesion_volume_ml"]


def test_a_changed_config_redoes_everything_and_the_report_embeds_its_pictures(cohort, reference, tmp_path):
    inputs, out = _copy_cohort(cohort, reference, tmp_path)
    config = inputs / "fast.yaml"
    config.write_text(FAST.replace("qc_png: false", "qc_png: true"))  # pictures only: the figures stay
    rc, log = _run(inputs / "manifest.csv", out, config, workers=1, resume=True)
    assert rc == 0, log
    assert "0 already done; 6 to run" in log and len(_task_lines(log)) == N_TASKS
    assert _tables(out) == _tables(reference["out"])
    page = (out / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert sources and all(s.startswith("data:image/") for s in sources)  # self-contained
    assert sum(s.startswith("data:image/jpeg") for s in sources) == N_TASKS  # a thumbnail per scan and comparison
    links = set(re.findall(r"href='([^']*)'", page))
    expected = {f"{r['folder']}/" for name in ("scans.csv", "changes.csv") for r in _rows(out, name).values()}
    assert links == expected
    assert all(not Path(link).is_absolute() and (out / link / "qc.png").is_file() for link in links)


def _corrupt_cohort(cohort, tmp_path):
    """S01 as in the cohort, S03 with an unreadable baseline and a good follow-up, S04 missing."""
    folder = tmp_path / "inputs"
    shutil.copytree(cohort["folder"], folder)
    (folder / "S03_m00.nii.gz").write_bytes(b"not a NIfTI file at all")
    shutil.copy(folder / "S01_m00_labels.nii.gz", folder / "S03_m00_labels.nii.gz")
    shutil.copy(folder / "S01_m03.nii.gz", folder / "S03_m06.nii.gz")
    shutil.copy(folder / "S01_m03_labels.nii.gz", folder / "S03_m06_labels.nii.gz")
    rows = [r for r in cohort["rows"] if r["subject"] == "S01"] + [
        {"subject": "S03", "side": "right", "timepoint_months": 0, "image": "S03_m00.nii.gz",
         "labels": "S03_m00_labels.nii.gz", "outcome": "healed"},
        {"subject": "S03", "side": "right", "timepoint_months": 6, "image": "S03_m06.nii.gz",
         "labels": "S03_m06_labels.nii.gz"},
        {"subject": "S04", "side": "left", "timepoint_months": 0, "image": "S04_m00.nii.gz"},
    ]
    return _write_manifest(folder / "manifest.csv", rows)


def test_failed_rows_are_recorded_and_the_rest_go_on(cohort, reference, tmp_path, capsys):
    manifest = _corrupt_cohort(cohort, tmp_path)
    out = tmp_path / "out"
    rc = main(["batch", str(manifest), "--out", str(out), "--config", str(cohort["config"]), "--workers", "1"])
    printed = capsys.readouterr()
    err = printed.err
    assert rc == 1, err
    assert printed.out.splitlines()[-1] == str((out / "report.html").resolve())  # what make run ends with
    scans, changes = _rows(out, "scans.csv"), _rows(out, "changes.csv")
    failed = {k for k, r in {**scans, **changes}.items() if r["status"] != "ok"}
    assert failed == {"S03_right_m00", "S04_left_m00"} | {"S03_right_m06"}  # the comparison needs its baseline
    assert scans["S03_right_m06"]["status"] == "ok"
    assert "does not exist" in scans["S04_left_m00"]["error"]
    assert scans["S03_right_m00"]["error"] and changes["S03_right_m06"]["error"]
    for r in (scans["S03_right_m00"], scans["S04_left_m00"], changes["S03_right_m06"]):
        assert "\n" not in r["error"] and not (out / r["folder"]).exists()
    assert scans["S03_right_m06"]["outcome"] == "healed"  # the hip's outcome, given on its baseline row
    ref_scans, ref_changes = _rows(reference["out"], "scans.csv"), _rows(reference["out"], "changes.csv")
    for key in ("S01_right_m00", "S01_right_m03"):
        assert {k: v for k, v in scans[key].items() if k != "elapsed_s"} == \
            {k: v for k, v in ref_scans[key].items() if k != "elapsed_s"}
    assert changes["S01_right_m03"]["regeneration_pct"] == ref_changes["S01_right_m03"]["regeneration_pct"]
    assert "3 failed" in err.splitlines()[-1]
    assert "Traceback" not in err
    page = (out / "report.html").read_text()
    assert "S04_left_m00" in page and "does not exist" in page


@pytest.mark.parametrize("text, message", [
    ("subject,side,image\nS01,right,a.nii.gz\n", "lacks column"),
    ("subject,side,timepoint_months,image\nS01,right,0,../outside.nii.gz\n", "outside the manifest"),
    ("subject,side,timepoint_months,image\nS01,middle,0,a.nii.gz\n", "side must be"),
    ("subject,side,timepoint_months,image\nS01,right,0,a.nii.gz\nS01,right,0.0,b.nii.gz\n", "listed twice"),
    ("subject,side,timepoint_months,image\n../S01,right,0,a.nii.gz\n", "subject"),
    ("subject,side,timepoint_months,image,outcome\nS01,right,0,a.nii.gz,healed\nS01,right,3,b.nii.gz,progressed\n",
     "differs"),
    ("subject,side,timepoint_months,image\nS01,right,-3,a.nii.gz\n", "timepoint_months"),
])
def test_a_bad_manifest_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, text, message):
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "manifest.csv"
    manifest.write_text(text)
    out = tmp_path / "out"
    rc = main(["batch", str(manifest), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("onfh: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_an_interrupted_run_resumes_to_the_same_tables(cohort, reference, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "onfh"), "batch", str(cohort["manifest"]), "--out", str(out),
                             "--config", str(cohort["config"]), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list((out / ".records").glob("*-*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run: the program and its worker processes
        proc.wait(timeout=30)
    done = len(list((out / ".records").glob("*-*.json")))
    assert 1 <= done < N_TASKS and not (out / "scans.csv").exists()
    rc, log = _run(cohort["manifest"], out, cohort["config"], workers=1, resume=True)
    assert rc == 0, log
    assert f"{done} already done" in log
    assert _tables(out) == _tables(reference["out"])
    assert not [p for p in (out / "scans").iterdir() if p.name.startswith(".")]  # no temporary folder left


def _distributed():
    """The optional Dask extra, or a skip of the test that needs it when it is not importable
    (absent, or installed against another dask: ImportError, which importorskip lets through)."""
    try:
        import distributed
    except ImportError as exc:
        pytest.skip(f"Dask distributed is not importable: {exc}")
    return distributed


def test_a_dask_local_cluster_gives_the_same_tables(cohort, reference, tmp_path):
    distributed = _distributed()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        rc, log = _run(cohort["manifest"], tmp_path / "out", cohort["config"], scheduler=cluster.scheduler_address)
    assert rc == 0, log
    assert "Dask cluster" in log
    assert _tables(tmp_path / "out") == _tables(reference["out"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and one `dask worker` (1 process, 1 thread) on 127.0.0.1, always stopped."""
    _distributed()  # `dask worker` needs it, and so does `onfh batch --scheduler`
    if not (BIN / "dask").exists():
        pytest.skip("the dask command is not installed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "worker.log", "w")]
    procs = []
    try:
        procs.append(subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT,
                                      start_new_session=True))
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(tmp_path / "dask-worker")],
                                      stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True))
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        for log in logs:
            log.close()


def test_dask_scheduler_and_worker_processes_give_the_same_tables(cohort, reference, tmp_path, dask_cluster):
    out = tmp_path / "out"
    done = subprocess.run([str(BIN / "onfh"), "batch", str(cohort["manifest"]), "--out", str(out),
                           "--config", str(cohort["config"]), "--scheduler", dask_cluster],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert f"Dask cluster at {dask_cluster}" in done.stderr
    assert _tables(out) == _tables(reference["out"])
    records = [json.loads(p.read_text()) for p in (out / ".records").glob("*-*.json")]
    assert len({r["worker"]["pid"] for r in records}) == 1  # all on the one worker process


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_and_terminal_bar():
    tasks = [{"kind": "scan", "key": f"S0{i}_right_m00"} for i in range(3)]
    records = [{"status": "ok", "error": "", "elapsed_s": 1.25}, {"status": "error", "error": "bad image",
                                                                    "elapsed_s": 0.5},
               {"status": "ok", "error": "", "elapsed_s": 2.0}]
    plain = io.StringIO()
    progress = Progress(4, 1, plain)
    for t, r in zip(tasks, records):
        progress.update(t, r)
    progress.close()
    lines = plain.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in plain.getvalue()
    assert re.fullmatch(r"onfh batch: \[2/4\] scan S00_right_m00 ok \(1\.2 s; 0 failed so far; ~\d+ s left\)",
                        lines[0]), lines[0]
    assert lines[1].startswith("onfh batch: [3/4] scan S01_right_m00 FAILED: bad image (0.5 s; 1 failed so far")
    assert lines[2].startswith("onfh batch: [4/4] scan S02_right_m00 ok") and "~0 s left" in lines[2]
    tty = _Terminal()
    progress = Progress(4, 1, tty)
    for t, r in zip(tasks, records):
        progress.update(t, r)
    progress.close()
    text = tty.getvalue()
    assert "\r" in text and "[" in text and "4/4 done, 1 failed" in text and "left" in text
    assert "scan S01_right_m00 FAILED: bad image" in text  # failures stay visible above the bar
    assert text.endswith("\n")


def test_report_gallery_keeps_a_trial_page_small(tmp_path):
    from pipeline.report.html import _gallery, _scan_caption

    records = [{"key": f"S{i:02d}_left_m00", "folder": f"scans/S{i:02d}_left_m00", "status": "ok",
                "necrotic_fraction_pct": 10.0} for i in range(5)]
    records[3] = {**records[3], "status": "error", "error": "unreadable"}
    for r in records:
        (tmp_path / r["folder"]).mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "docs" / "report_screenshot.png",
                tmp_path / records[0]["folder"] / "qc.png")
    page = _gallery(tmp_path, records, _scan_caption, limit=2)
    assert page.count("<figure>") == 2 and page.count("data:image/jpeg") == 1
    assert page.index("S03_left_m00") < page.index("S00_left_m00")  # the failure is shown first
    assert "3 more (no thumbnail)" in page and all(f"href='{r['folder']}/'" in page for r in records)


def test_an_unreachable_scheduler_exits_2_and_leaves_no_folder_behind(cohort, tmp_path, capsys):
    _distributed()  # without it --scheduler is refused before any connection is tried
    out = tmp_path / "out"
    rc = main(["batch", str(cohort["manifest"]), "--out", str(out), "--scheduler", "bogus://nowhere"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("onfh: error: cannot reach the Dask scheduler") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()
    # a folder that was there before (a finished run, say) is left as it was
    out.mkdir()
    (out / "scans.csv").write_text("kept\n")
    assert main(["batch", str(cohort["manifest"]), "--out", str(out), "--scheduler", "bogus://nowhere"]) == 2
    assert (out / "scans.csv").read_text() == "kept\n"


def test_review_column_and_report_name_the_automatic_segmentations_to_open():
    from pipeline.measures.results import HipMetrics
    from pipeline.report.html import _scan_caption

    def review_flags(segmentation, measurement_flags=()):
        return HipMetrics(side="right", segmentation=segmentation, review_flags=list(measurement_flags)).review()

    assert review_flags({"method": "imported label map"}) is None
    assert review_flags({"method": "automatic", "confidence": {"status": "ok", "flags": []}}) == "ok"
    flags = ["lesion touches the ROI edge", "small lesion (0.40 mL): check it is not a mimic"]
    flagged = review_flags({"method": "automatic", "confidence": {"status": "review", "flags": flags}})
    assert flagged == "review: lesion touches the ROI edge; small lesion (0.40 mL): check it is not a mimic"
    femur_only = {"method": "head isolated from a femur mask (neck-plane); lesion segmented automatically inside it",
                  "lesion_segmentation": {"confidence": {"status": "review", "flags": flags[:1]}}}
    assert review_flags(femur_only) == "review: lesion touches the ROI edge"
    row = {"status": "ok", "necrotic_fraction_pct": 20.0, "lesion_volume_ml": 9.0, "jic_type": "C1", "n_warnings": 1}
    assert "review: lesion touches the ROI edge" in _scan_caption({**row, "review": flagged})
    assert "review" not in _scan_caption({**row, "review": "ok"}) and "review" not in _scan_caption(row)
