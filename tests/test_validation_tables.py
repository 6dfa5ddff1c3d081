"""The README's validation tables are those the validation script's committed results give."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import validation_tables as vt  # noqa: E402


def test_readme_tables_are_generated_from_the_committed_results():
    runs = vt.load_runs()
    assert sorted(runs) == [4404, 5505, 6606, 7707, 8808, 9909]
    text = vt.README.read_text()
    assert vt.readme_with_tables(text, runs) == text, "run: python scripts/validation_tables.py"


def test_summary_reads_the_results_it_names():
    """A figure in the table is the one in the file: change a case, the table changes."""
    runs = vt.load_runs()
    worst = max(abs(c["nf_error_pts"]) for c in runs[4404]["cases"] if "error" not in c)
    assert f"{worst:.2f} |" in vt.summary_table({4404: runs[4404]})
    runs[4404]["summary"]["max_abs_nf_error_pts"] = 9.87
    assert "/ 9.87 |" in vt.summary_table({4404: runs[4404]})
