"""Blinded worklists (`onfh worklist`, pipeline/io/worklist.py).

The worklist holds no subject or timepoint except inside the paths the reader must open; the same
reader (and seed) always gets the same order, two readers different ones; the key file maps every
code back to exactly its manifest row; files are never replaced and bad input writes nothing.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from pipeline.app.cli import main
from pipeline.io.manifest import read_manifest
from pipeline.io.worklist import COLUMNS, KEY_COLUMNS, default_seed, key_path, read_worklist

SUBJECTS = ("ONFH07", "HIP-112", "S3", "KQ.19")
MONTHS = (0, 3, 12, 24)


@pytest.fixture
def manifest(tmp_path):
    """Four subjects, four visits, one of them bilateral: 20 scans whose file names carry subject and month."""
    data = tmp_path / "data"
    data.mkdir()
    rows = ["subject,side,timepoint_months,image,labels"]
    for subject in SUBJECTS:
        sides = ("left", "right") if subject == "S3" else ("right",)
        for months in MONTHS:
            image = data / f"{subject}_m{months:02d}_cor.nii.gz"
            image.write_bytes(b"not read by onfh worklist")
            labels = ""
            if subject == "ONFH07":
                labels = f"data/{subject}_m{months:02d}_cor_labels.nii.gz"
                (tmp_path / labels).write_bytes(b"labels")
            for side in sides:
                rows.append(f"{subject},{side},{months},data/{image.name},{labels}")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run(capsys, *args) -> tuple[int, list[str], list[str]]:
    code = main(["worklist", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def order(path: Path) -> list[tuple]:
    key = {row["code"]: row for row in table(key_path(path))}
    return [(key[r["code"]]["subject"], r["side"], key[r["code"]]["timepoint_months"]) for r in table(path)]


def test_worklist_holds_no_subject_or_timepoint_outside_paths(manifest, tmp_path, capsys):
    out = tmp_path / "worklist_jdoe.csv"
    code, stdout, stderr = run(capsys, manifest, "--reader", "jdoe", "--out", out)
    assert code == 0 and stderr == [] and len(stdout) == 1
    assert str(key_path(out)) in stdout[0] and f"seed {default_seed('jdoe')}" in stdout[0]
    rows = table(out)
    assert len(rows) == 20 and tuple(rows[0]) == COLUMNS
    assert len({r["code"] for r in rows}) == 20
    for row in rows:
        outside_paths = ",".join(v for k, v in row.items() if k not in ("image", "labels"))
        assert re.fullmatch(r"R-[A-Z]{4}", row["code"])
        # no digit at all outside the paths: no month, no numbered subject can appear there
        assert not re.search(r"\d", outside_paths), row
        assert not any(s.lower() in outside_paths.lower() for s in SUBJECTS), row
        assert row["reader"] == "jdoe" and row["side"] in ("left", "right")
        # the paths are there (the reader opens them), relative to the worklist's folder
        assert row["image"].startswith("data/") and (out.parent / row["image"]).is_file()
    assert any(s in r["image"] for r in rows for s in SUBJECTS)  # ...and do leak: review shows codes only


def test_the_key_maps_every_code_back_to_exactly_its_row(manifest, tmp_path, capsys):
    out = tmp_path / "worklist_jdoe.csv"
    assert run(capsys, manifest, "--reader", "jdoe", "--out", out, "--seed", 77)[0] == 0
    key = table(tmp_path / "worklist_jdoe.key.csv")
    assert tuple(key[0]) == KEY_COLUMNS
    assert {r["seed"] for r in key} == {"77"} and {r["reader"] for r in key} == {"jdoe"}
    by_code = {r["code"]: r for r in key}
    assert len(by_code) == len(key) == 20
    listed = [(by_code[r["code"]]["subject"], r["side"], float(by_code[r["code"]]["timepoint_months"]),
               (out.parent / r["image"]).resolve(), (out.parent / r["labels"]).resolve() if r["labels"] else None)
              for r in table(out)]
    assert all(by_code[r["code"]]["side"] == r["side"] for r in table(out))
    expected = [(r.subject, r.side, r.timepoint_months, r.image, r.labels) for r in read_manifest(manifest)]
    assert sorted(listed, key=str) == sorted(expected, key=str)

    cases = read_worklist(out)  # what `onfh review --worklist` reads
    assert [c.code for c in cases] == [r["code"] for r in table(out)]
    assert [c.image.resolve() for c in cases] == [row[3] for row in listed]
    assert {c.reader for c in cases} == {"jdoe"}


def test_same_reader_same_order_two_readers_different_orders(manifest, tmp_path, capsys):
    for name, args in (("a", ("--reader", "jdoe")), ("b", ("--reader", "jdoe")), ("c", ("--reader", "asmith")),
                       ("d", ("--reader", "jdoe", "--seed", 5)), ("e", ("--reader", "jdoe", "--seed", 5))):
        assert run(capsys, manifest, *args, "--out", tmp_path / f"{name}.csv")[0] == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.key.csv").read_bytes() == (tmp_path / "b.key.csv").read_bytes()
    assert order(tmp_path / "d.csv") == order(tmp_path / "e.csv")
    assert order(tmp_path / "a.csv") != order(tmp_path / "c.csv")
    assert order(tmp_path / "a.csv") != order(tmp_path / "d.csv")  # the seed, not the reader, sets the order
    assert {r["code"] for r in table(tmp_path / "a.csv")}.isdisjoint({r["code"] for r in table(tmp_path / "c.csv")})
    expected = sorted(order(tmp_path / "a.csv"))
    for name in "cd":  # every order is a permutation of the manifest's scans
        assert sorted(order(tmp_path / f"{name}.csv")) == expected


def test_files_are_never_replaced_and_bad_input_writes_nothing(manifest, tmp_path, capsys):
    out = tmp_path / "wl.csv"
    assert run(capsys, manifest, "--reader", "jdoe", "--out", out)[0] == 0
    before = out.read_bytes(), key_path(out).read_bytes()
    assert run(capsys, manifest, "--reader", "jdoe", "--out", out)[0] == 0  # the same command again
    code, stdout, stderr = run(capsys, manifest, "--reader", "asmith", "--out", out)
    assert code == 2 and stdout == [] and len(stderr) == 1 and "exists" in stderr[0]
    assert (out.read_bytes(), key_path(out).read_bytes()) == before

    bad = tmp_path / "bad.csv"
    bad.write_text("subject,side,timepoint_months,image\nS1,middle,0,data/S3_m00_cor.nii.gz\n")
    for args in ((bad, "--reader", "jdoe"), (manifest, "--reader", "j doe"),
                 (manifest, "--reader", "jdoe", "--seed", -1), (tmp_path / "absent.csv", "--reader", "jdoe")):
        code, stdout, stderr = run(capsys, *args, "--out", tmp_path / "new.csv")
        assert code == 2 and len(stderr) == 1 and stderr[0].startswith("onfh: error: "), args
    code, _, stderr = run(capsys, manifest, "--reader", "jdoe", "--out", tmp_path / "nofolder" / "w.csv")
    assert code == 2 and "does not exist" in stderr[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "data", "manifest.csv", "wl.csv", "wl.key.csv"]
