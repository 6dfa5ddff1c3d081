"""report.html's necrotic-fraction plot shows every visit, not just each hip's last one."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from pipeline.report.html import _nf_plot  # noqa: E402


def _healing_cohort(n_hips):
    """Baselines at NF 40 %, 3-month visits at 20 %, last visits at 5 %: every line ends far below
    where it starts, the case where a y-axis sized on the last visits drops the baselines."""
    scans = []
    for i in range(n_hips):
        for months, nf in ((0, 40.0 + i), (3, 20.0), (12, 5.0)):
            scans.append({"status": "ok", "subject": f"S{i:02d}", "side": "right" if i % 2 else "left",
                          "timepoint_months": months, "necrotic_fraction_pct": nf, "outcome": "healed"})
    return scans


@pytest.mark.parametrize("n_hips", [3, 40])  # with and without the hip names beside the lines
def test_every_plotted_point_lies_inside_the_axes(n_hips):
    scans = _healing_cohort(n_hips)
    fig = _nf_plot(scans)
    try:
        (ax,) = fig.axes
        x0, x1 = sorted(ax.get_xlim())
        y0, y1 = sorted(ax.get_ylim())
        data_lines = [line for line in ax.get_lines() if line.get_transform() == ax.transData]
        plotted = [(x, y) for line in data_lines for x, y in zip(line.get_xdata(), line.get_ydata())]
        # one marker per visit: the lines are the data, not decoration
        assert sorted(plotted) == sorted((s["timepoint_months"], s["necrotic_fraction_pct"]) for s in scans)
        outside = [(x, y) for x, y in plotted if not (x0 <= x <= x1 and y0 <= y <= y1)]
        assert not outside, f"points outside x {x0:.1f}..{x1:.1f}, y {y0:.1f}..{y1:.1f}: {outside[:5]}"
    finally:
        plt.close(fig)
