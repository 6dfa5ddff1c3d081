"""Malformed numeric options end with exit 2 and one `onfh: error:` line, before any file is read."""

from __future__ import annotations

import pytest

from pipeline.app.cli import main


@pytest.mark.parametrize("option, value, expected", [
    ("--spacing", "1,2", "--spacing expects three positive numbers"),
    ("--spacing", "0,1,1", "--spacing expects three positive numbers"),
    ("--spacing", "inf,1,1", "--spacing expects three positive numbers"),
    ("--spacing", "1,a,1", "--spacing expects three positive numbers"),
    ("--roi", "0,0,0,1,0,1", "--roi expects X0,Y0,Z0,X1,Y1,Z1"),
    ("--roi", "0,0,0,1,1", "--roi expects X0,Y0,Z0,X1,Y1,Z1"),
    ("--roi", "nan,0,0,1,1,1", "--roi expects X0,Y0,Z0,X1,Y1,Z1"),
])
def test_bad_numbers_exit_2_one_line(tmp_path, capsys, option, value, expected):
    image = tmp_path / "missing.nii.gz"  # never opened: the option is refused first
    rc = main(["analyze", str(image), "--side", "right", "--out", str(tmp_path / "out"), f"{option}={value}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("onfh: error: ") and err.count("\n") == 1
    assert expected in err and repr(value) in err
    assert not (tmp_path / "out").exists()
