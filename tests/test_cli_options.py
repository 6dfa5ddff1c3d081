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


@pytest.mark.parametrize("given, expected", [(None, "1"), ("3", "3")])
def test_onfh_runs_blas_on_one_thread_unless_the_environment_says(given, expected):
    """`onfh` sets OPENBLAS_NUM_THREADS (and MKL's, vecLib's) to 1 before numpy loads; a user's own value wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    code = ("import os, sys; from pipeline.app.cli import one_blas_thread; one_blas_thread(); "
            "assert 'numpy' not in sys.modules; print(os.environ['OPENBLAS_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected
