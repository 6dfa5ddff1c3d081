"""Manifests as spreadsheets write them: comma, semicolon or tab separated, quoted or not, with a
byte-order mark and CRLF line ends, relative and absolute paths; every refusal names the file's
real line (the header is line 1) and the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.app.cli import main
from pipeline.errors import InputError
from pipeline.io.manifest import read_manifest

HEADER = ("subject", "side", "timepoint_months", "image", "labels", "acetabular_edge", "outcome")


@pytest.fixture
def study(tmp_path):
    """A manifest folder with two images and a label map, and a data store elsewhere."""
    folder = tmp_path / "study"
    store = tmp_path / "store" / "mri"
    for f in (folder / "a.nii.gz", folder / "b.nii.gz", folder / "seg" / "a_labels.nii.gz",
              store / "c.nii.gz", store / "c_labels.nii.gz"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"placeholder")
    return {"folder": folder, "store": store}


def _write(folder: Path, lines, delimiter=",", newline="\n", bom=False, name="m.csv") -> Path:
    text = newline.join(delimiter.join(fields) if isinstance(fields, tuple) else fields for fields in lines)
    path = folder / name
    path.write_bytes((("\ufeff" if bom else "") + text + newline).encode("utf-8"))
    return path


def _refusal(path: Path, capsys, tmp_path, cli: bool = True) -> str:
    """read_manifest's refusal and, with ``cli``, the same as the one error line of `onfh batch`
    (exit 2, nothing written). A missing file is no refusal of `onfh batch` (its task fails)."""
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    if not cli:
        return str(exc.value)
    out = tmp_path / "out"
    rc = main(["batch", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err == f"onfh: error: {exc.value}\n", err
    assert not out.exists()
    return str(exc.value)


def _rows(delimiter, edge):
    return [HEADER,
            ("S01", "right", "0", "a.nii.gz", "seg/a_labels.nii.gz", edge, "healed"),
            ("S01", "right", "3", "b.nii.gz", "", "", "")]


# delimiters, quoting, BOM, CRLF ------------------------------------------------------------
@pytest.mark.parametrize("delimiter, edge", [
    (",", '"-31.2,4,7"'),   # comma file: the point is quoted
    (";", "-31.2,4,7"),     # semicolon file: commas inside a field need no quotes
    (";", '"-31.2,4,7"'),
    ("\t", "-31.2,4,7"),
    (",", ' "-31.2, 4, 7"'),  # a space after the separator before the quote (hand-edited files)
])
@pytest.mark.parametrize("newline, bom", [("\n", False), ("\r\n", True)])
def test_every_separator_reads_the_same_rows(study, delimiter, edge, newline, bom):
    path = _write(study["folder"], _rows(delimiter, edge), delimiter, newline, bom)
    rows = read_manifest(path)
    folder = study["folder"].resolve()
    assert [(r.subject, r.side, r.timepoint_months, r.line) for r in rows] == [("S01", "right", 0.0, 2),
                                                                                ("S01", "right", 3.0, 3)]
    assert rows[0].image == folder / "a.nii.gz" and rows[0].labels == folder / "seg" / "a_labels.nii.gz"
    assert rows[1].image == folder / "b.nii.gz" and rows[1].labels is None
    assert rows[0].acetabular_edge == (-31.2, 4.0, 7.0) and rows[1].acetabular_edge is None
    assert rows[0].outcome == rows[1].outcome == "healed"  # the hip's outcome reaches its other row


def test_excel_semicolon_export_with_bom_and_crlf(study):
    """What Excel writes in a locale with decimal commas: BOM, semicolons, CRLF, nothing quoted."""
    path = study["folder"] / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfsubject;side;timepoint_months;image;acetabular_edge\r\n"
                     b"S02;left;0;a.nii.gz;31.5,-2,6.25\r\n")
    (row,) = read_manifest(path)
    assert (row.subject, row.side, row.timepoint_months) == ("S02", "left", 0.0)
    assert row.acetabular_edge == (31.5, -2.0, 6.25)


def test_trailing_empty_fields_are_no_extra_columns(study):
    path = _write(study["folder"], ["subject,side,timepoint_months,image", "S01,right,0,a.nii.gz,,,"])
    (row,) = read_manifest(path)
    assert row.image == study["folder"].resolve() / "a.nii.gz"


# the unquoted point ------------------------------------------------------------------------
def test_unquoted_commas_name_the_real_line_and_the_field_counts(study, capsys, tmp_path):
    lines = [",".join(HEADER),
             'S01,right,0,a.nii.gz,,"-31.2,4,7",healed',
             "",  # a blank line still counts
             "S01,right,3,b.nii.gz,,-30.8,4.4,7.1,healed"]
    msg = _refusal(_write(study["folder"], lines), capsys, tmp_path)
    assert msg == ("manifest m.csv line 4: the row has 9 fields for 7 columns: a field containing commas "
                   '(such as acetabular_edge X,Y,Z) must be quoted, e.g. "-31.2,4,7"')


def test_unquoted_point_in_the_last_column(study, capsys, tmp_path):
    lines = ["subject,side,timepoint_months,image,acetabular_edge", "S01,right,0,a.nii.gz,-31.2,4,7"]
    msg = _refusal(_write(study["folder"], lines), capsys, tmp_path)
    assert msg.startswith("manifest m.csv line 2: the row has 7 fields for 5 columns: a field containing commas")


def test_a_semicolon_inside_a_field_of_a_semicolon_file(study, capsys, tmp_path):
    lines = ["subject;side;timepoint_months;image;outcome", "S01;right;0;a.nii.gz;healed;;x"]
    msg = _refusal(_write(study["folder"], lines), capsys, tmp_path)
    assert msg.startswith("manifest m.csv line 2: the row has 7 fields for 5 columns: a field containing "
                          "semicolons (such as acetabular_edge X,Y,Z) must be quoted")


def test_a_quoted_field_over_two_lines_keeps_later_line_numbers(study, capsys, tmp_path):
    lines = ["subject,side,timepoint_months,image,acetabular_edge",
             'S01,right,0,a.nii.gz,"-31.2,',
             '4,7"',
             "S01,middle,3,b.nii.gz,"]
    path = _write(study["folder"], lines)
    assert _refusal(path, capsys, tmp_path) == "manifest m.csv line 4: side must be left or right, not 'middle'"


# every other refusal names its line and column ----------------------------------------------
@pytest.mark.parametrize("row, message", [
    ("S01,middle,0,a.nii.gz,,", "line 3: side must be left or right, not 'middle'"),
    ("S01,right,three,a.nii.gz,,", "line 3: timepoint_months 'three' is not a number"),
    ("S01,right,-1,a.nii.gz,,", "line 3: timepoint_months must be 0 (baseline) or a positive number of months, "
                                "not '-1'"),
    (",right,0,a.nii.gz,,", "line 3: subject is empty"),
    ("S/01,right,0,a.nii.gz,,", "line 3: subject 'S/01' may hold only letters, digits, '.', '_' and '-' "
                                "(it names output folders)"),
    ("S01,right,0,a.nii.gz,,cured", "line 3: outcome must be one of healed, progressed, arthroplasty, not 'cured'"),
    ('S01,right,0,a.nii.gz,"1,2",', "line 3: acetabular_edge: expected a point X,Y,Z in RAS mm, got '1,2'"),
    ("S01,right,0,,,", "line 3: image is empty (a path is required)"),
    ("S01,right,0,missing.nii.gz,,", "line 3: image 'missing.nii.gz' does not exist"),
    ("S01,right,0,../store/mri/c.nii.gz,,", "line 3: image path '../store/mri/c.nii.gz' is outside the manifest's "
                                            "folder (give files elsewhere as absolute paths)"),
    ("S02,left,0,a.nii.gz,,", "line 3: S02 left hip at 0 months is listed twice (also on line 2)"),
])
def test_row_refusals_name_line_and_column(study, capsys, tmp_path, row, message):
    lines = ["subject,side,timepoint_months,image,acetabular_edge,outcome", "S02,left,0,b.nii.gz,,", row]
    path = _write(study["folder"], lines)
    assert _refusal(path, capsys, tmp_path, cli="does not exist" not in message) == f"manifest m.csv {message}"


def test_a_missing_column_names_what_the_header_gave(study, capsys, tmp_path):
    path = _write(study["folder"], ["subject|side|timepoint_months|image", "S01|right|0|a.nii.gz"])
    assert _refusal(path, capsys, tmp_path) == ("manifest m.csv lacks column(s) subject, side, timepoint_months, "
                                                "image (its header line gives: subject|side|timepoint_months|image)")
    path = _write(study["folder"], ["subject;side;image", "S01;right;a.nii.gz"])
    assert _refusal(path, capsys, tmp_path) == ("manifest m.csv lacks column(s) timepoint_months (its header line "
                                                "gives: subject, side, image)")


def test_a_decimal_comma_is_refused_with_its_column(study, capsys, tmp_path):
    path = _write(study["folder"], ["subject;side;timepoint_months;image", "S01;right;1,5;a.nii.gz"])
    assert _refusal(path, capsys, tmp_path) == "manifest m.csv line 2: timepoint_months '1,5' is not a number"


# absolute paths -------------------------------------------------------------------------------
def test_absolute_paths_are_used_as_written_and_relative_ones_stay_relative(study):
    store = study["store"]
    lines = [("subject", "side", "timepoint_months", "image", "labels"),
             ("S01", "right", "0", str(store / "c.nii.gz"), str(store / "c_labels.nii.gz")),
             ("S01", "right", "6", "a.nii.gz", "seg/a_labels.nii.gz")]
    rows = read_manifest(_write(study["folder"], lines, delimiter="\t"))
    assert rows[0].image == store / "c.nii.gz" and rows[0].labels == store / "c_labels.nii.gz"
    assert rows[0].image.is_absolute() and not rows[0].image.is_relative_to(study["folder"])
    assert rows[1].image == study["folder"].resolve() / "a.nii.gz"


def test_a_missing_absolute_path_is_an_error_only_when_files_must_exist(study, capsys, tmp_path):
    gone = study["store"] / "gone.nii.gz"
    path = _write(study["folder"], ["subject,side,timepoint_months,image", f"S01,right,0,{gone}"])
    assert _refusal(path, capsys, tmp_path, cli=False) == f"manifest m.csv line 2: image {str(gone)!r} does not exist"
    (row,) = read_manifest(path, require_exists=False)  # onfh batch: that scan's task fails, the rest go on
    assert row.image == gone
