"""Audit trail of saved reads (pipeline/io/audit.py, pipeline/napari/_writer.py save_read, `onfh audit verify`).

Every byte of a log matters: changing any one byte makes verify name the line that byte is on; a
deleted or reordered line, a torn write, missing fields and time going backwards are named too. A
log written by an independent implementation of the documented format verifies. save_read counts
added and removed voxels exactly, its hashes are those of the files on disk, entries chain, and an
update never hides the earlier file.
"""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.errors import InputError
from pipeline.io import audit
from pipeline.io.audit import GENESIS, label_changes, open_log, verify
from pipeline.io.scan import Scan
from pipeline.napari._writer import save_read

H = [hashlib.sha256(bytes([i])).hexdigest() for i in range(8)]


def write_entries(path, specs):
    """Append entries through the library: specs of (action, file, before, after, added, removed, reason)."""
    for action, name, before, after, added, removed, reason in specs:
        with open_log(path) as log:
            log.write(log.seal("jdoe", action, name, before, after, added, removed, reason))


THREE = [
    ("create", "R-KQXW_labels.nii.gz", None, H[1], {"1": 500, "2": 40}, {}, ""),
    ("update", "R-KQXW_labels.nii.gz", H[1], H[2], {"2": 12}, {"1": 12}, "lesion margin extended, slices 30-33"),
    ("create", "R-BCDF_labels.nii.gz", None, H[3], {"1": 7}, {}, "Zoë's first read"),  # non-ASCII kept
]


@pytest.fixture
def log3(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_entries(path, THREE)
    return path


def forge(entries: list[dict]) -> bytes:
    """A log written from the documented format alone (not the library's writer)."""
    out, prev = [], GENESIS
    for fields in entries:
        body = {**fields, "prev": prev}
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        body["entry_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        line = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        out.append(line + b"\n")
        prev = hashlib.sha256(line).hexdigest()
    return b"".join(out)


def fields(time="2024-05-01T10:00:00.000000Z", **changes):
    base = {"time": time, "reader": "jdoe", "action": "create", "file": "a_labels.nii.gz", "sha256_before": None,
            "sha256_after": H[4], "voxels_added": {"1": 3}, "voxels_removed": {}, "reason": ""}
    base.update(changes)
    return base


def test_label_changes_count_each_value_exactly():
    before = np.zeros((4, 5, 6), np.uint8)
    before[0, :, :] = 1  # 30 head voxels
    before[1, 0, :3] = 2  # 3 lesion voxels
    after = before.copy()
    after[0, 0, :4] = 2  # 4 head -> lesion
    after[1, 0, 0] = 0  # 1 lesion erased
    after[3, 4, :2] = 7  # 2 voxels of another label
    added, removed = label_changes(before, after)
    assert added == {"2": 4, "7": 2}
    assert removed == {"1": 4, "2": 1}
    assert label_changes(None, before) == ({"1": 30, "2": 3}, {})
    assert label_changes(before, before) == ({}, {})


def test_entries_chain_from_genesis_with_every_field(log3):
    assert verify(log3) is None
    lines = log3.read_bytes().split(b"\n")[:-1]
    entries = [json.loads(line) for line in lines]
    assert [e["prev"] for e in entries] == [GENESIS] + [hashlib.sha256(line).hexdigest() for line in lines[:-1]]
    assert all(list(e) == list(audit.FIELDS) for e in entries)
    assert entries[1]["voxels_added"] == {"2": 12} and entries[1]["voxels_removed"] == {"1": 12}
    assert entries[0]["sha256_before"] is None and entries[1]["sha256_before"] == H[1]
    assert all(e["time"].endswith("Z") and e["reader"] == "jdoe" for e in entries)
    assert "Zoë" in lines[2].decode()
    assert audit.last_line_sha256(log3) == hashlib.sha256(lines[-1]).hexdigest()


def test_one_byte_changed_anywhere_names_its_line(log3):
    data = log3.read_bytes()
    line_of = np.cumsum([0] + [b == ord("\n") for b in data[:-1]]) + 1  # 1-based line of each byte
    for position in range(len(data)):
        for flip in (0x01, 0x20):
            changed = bytearray(data)
            changed[position] ^= flip
            log3.write_bytes(bytes(changed))
            broken = verify(log3)
            assert broken is not None, (position, flip)
            assert broken.line == line_of[position], (position, flip, broken)


def test_deleted_inserted_or_reordered_lines_are_found(log3):
    lines = log3.read_bytes().splitlines(keepends=True)
    for kept, line in (([lines[0], lines[2]], 2), ([lines[1], lines[2]], 1), ([lines[1], lines[0], lines[2]], 1),
                       ([lines[0], lines[1], lines[1], lines[2]], 3)):
        log3.write_bytes(b"".join(kept))
        broken = verify(log3)
        assert broken is not None and broken.line == line and "prev" in broken.reason


def test_appending_valid_entries_keeps_the_log_intact(log3):
    write_entries(log3, [("update", "R-BCDF_labels.nii.gz", H[3], H[5], {}, {"1": 2}, "stray voxels erased")])
    assert verify(log3) is None
    assert len(audit.entries(log3)) == 4
    # an independent writer of the documented format chains as well
    forged = forge([fields(), fields("2024-05-01T10:00:00.000000Z", action="update", sha256_before=H[4],
                                     sha256_after=H[5], reason="same second")])
    (log3.parent / "forged.jsonl").write_bytes(forged)
    assert verify(log3.parent / "forged.jsonl") is None


def test_time_going_backwards_missing_fields_malformed_and_torn_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    cases = [
        (forge([fields(), fields("2024-04-30T23:59:59.999999Z")]), 2, "earlier"),
        (forge([fields(), {k: v for k, v in fields().items() if k != "reason"}]), 2, "missing field(s) reason"),
        (forge([fields(time="2024-05-01 10:00:00")]), 1, "time"),
        (forge([fields(sha256_before=H[1])]), 1, "create"),
        (forge([fields(voxels_added={"1": -3})]), 1, "voxels_added"),
        (forge([fields()]) + b"{not json\n", 2, "malformed JSON"),
        (forge([fields(), fields()])[:-1], 2, "torn"),
        (b"\n" + forge([fields()]), 1, "malformed"),
    ]
    for data, line, why in cases:
        path.write_bytes(data)
        broken = verify(path)
        assert broken is not None and broken.line == line and why in broken.reason, (why, broken)


def test_nothing_is_appended_to_a_broken_log_or_with_the_clock_behind(log3, monkeypatch):
    data = bytearray(log3.read_bytes())
    data[30] ^= 1
    log3.write_bytes(bytes(data))
    with pytest.raises(InputError, match="broken at line 1"), open_log(log3) as log:
        log.seal("jdoe", "create", "x_labels.nii.gz", None, H[6], {}, {}, "")
    assert log3.read_bytes() == bytes(data)

    fresh = log3.parent / "fresh.jsonl"
    write_entries(fresh, THREE[:1])
    before = fresh.read_bytes()
    monkeypatch.setattr(audit, "utc_now", lambda: "2000-01-01T00:00:00.000000Z")
    with pytest.raises(InputError, match="clock"), open_log(fresh) as log:
        log.seal("jdoe", "create", "x_labels.nii.gz", None, H[6], {}, {}, "")
    assert fresh.read_bytes() == before


def test_cli_audit_verify(log3, capsys):
    assert main(["audit", "verify", str(log3)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("3 entries intact")
    assert audit.last_line_sha256(log3) in out[0]

    lines = log3.read_bytes().splitlines(keepends=True)
    log3.write_bytes(lines[0] + lines[2])
    assert main(["audit", "verify", str(log3)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("onfh: error:") and "line 2" in err[0] and "prev" in err[0]

    for bad in ([str(log3.parent / "absent.jsonl")], [str(log3.parent)]):
        assert main(["audit", "verify", *bad]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("onfh: error: ")
    with pytest.raises(SystemExit) as exit_info:  # the subcommand is required (argparse exits)
        main(["audit"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["onfh: error: the following arguments are required: verify"]


# save_read: the audited writer -----------------------------------------------------------------
def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scan():
    affine = np.diag([-0.8, 0.8, 2.0, 1.0])  # stored L-A-S: the file order is not the canonical one
    affine[:3, 3] = (30.0, -10.0, 5.0)
    return Scan.from_source(np.zeros((10, 12, 8), np.int16), affine)


def test_save_read_counts_hashes_chains_and_keeps_every_version(tmp_path, scan):
    opened = np.zeros(scan.shape, np.int32)
    opened[2:6, 2:6, 2:6] = 1  # 64 head voxels, as opened
    first = opened.copy()
    first[2:4, 2:6, 2:6] = 2  # 32 of them painted lesion
    first[8, 8, 1] = 1  # one more head voxel
    entry = save_read(first, scan, tmp_path / "reads", "jdoe", "R-KQXW", opened=opened)
    target = tmp_path / "reads" / "jdoe" / "R-KQXW_labels.nii.gz"
    assert entry["path"] == str(target) and entry["action"] == "create"
    assert entry["voxels_added"] == {"1": 1, "2": 32} and entry["voxels_removed"] == {"1": 32}
    assert entry["sha256_before"] is None and entry["sha256_after"] == sha(target)
    # the file is the map on the image's own grid, the label values as painted
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(target)).dataobj), scan.to_source(first))

    with pytest.raises(InputError, match="reason"):
        save_read(first, scan, tmp_path / "reads", "jdoe", "R-KQXW")
    second = first.copy()
    second[2, 2:6, 2:6] = 0  # 16 lesion voxels erased
    second[7, 7, 7] = 2
    old_hash = sha(target)
    entry2 = save_read(second, scan, tmp_path / "reads", "jdoe", "R-KQXW", reason="erased a slice")
    assert entry2["action"] == "update" and entry2["reason"] == "erased a slice"
    assert entry2["voxels_added"] == {"2": 1} and entry2["voxels_removed"] == {"2": 16}
    assert entry2["sha256_before"] == old_hash and entry2["sha256_after"] == sha(target)
    log = tmp_path / "reads" / "jdoe" / "audit.jsonl"
    lines = log.read_bytes().splitlines()
    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert verify(log) is None
    versions = tmp_path / "reads" / "jdoe" / "versions"
    assert sorted(p.name for p in versions.iterdir()) == sorted([f"{old_hash}.nii.gz", f"{sha(target)}.nii.gz"])
    assert sha(versions / f"{old_hash}.nii.gz") == old_hash  # the earlier read, byte for byte


def test_save_read_refuses_foreign_files_and_leaves_nothing_on_failure(tmp_path, scan):
    label_map = np.zeros(scan.shape, np.int32)
    label_map[1:3, 1:3, 1:3] = 1
    with pytest.raises(InputError, match="reader"):
        save_read(label_map, scan, tmp_path / "reads", "  ", "R-KQXW")
    with pytest.raises(InputError, match="reader name"):
        save_read(label_map, scan, tmp_path / "reads", "../x", "R-KQXW")
    assert not (tmp_path / "reads").exists()

    def fail():
        raise InputError("analysis refused")

    with pytest.raises(InputError, match="analysis refused"):
        save_read(label_map, scan, tmp_path / "reads", "jdoe", "R-KQXW", before_commit=fail)
    assert not (tmp_path / "reads").exists()  # no log, no file, no folder

    mine = tmp_path / "reads" / "jdoe"
    mine.mkdir(parents=True)
    foreign = mine / "R-KQXW_labels.nii.gz"
    foreign.write_bytes(b"someone else's file")
    with pytest.raises(InputError, match="never replaced"):
        save_read(label_map, scan, tmp_path / "reads", "jdoe", "R-KQXW", reason="x")
    assert foreign.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in mine.iterdir()) == ["R-KQXW_labels.nii.gz"]
