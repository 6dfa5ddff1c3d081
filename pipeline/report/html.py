"""report.html: one self-contained page (images embedded) for a cohort run.

The cohort tables (cohort.md rendered), every hip's necrotic fraction over time coloured by
outcome, where regeneration happened (JIC zones and antero-posterior regions, by outcome), and a
QC thumbnail per scan and per comparison, each linking to its folder (relative links, so the
output folder can be moved or shared whole). The collapse of every scan (head depression, ARCO 2019
stage) is listed with the literature cut-offs it meets, each labelled as a literature cut-off, a
published group figure and never a prediction for the hip (docs/method.md section 6). Tasks that
failed are listed with their error. A reader study adds the Agreement section: the combine rule,
ICCs, a Bland-Altman plot per reader pair, kappas, lesion Dice and HD95 per scan, the discordant
reads (open ones flagged at the top), test-retest repeatability and the follow-ups whose change
lies within measurement noise.
Pictures are PNG (plots) and JPEG (thumbnails) in ``data:`` URIs: the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path

OUTCOME_COLOURS = {"healed": "#2e8b57", "progressed": "#d2691e", "arthroplasty": "#b22222"}
NO_OUTCOME_COLOUR = "#4682b4"
THUMB_WIDTH = 480
#: At most this many thumbnails per gallery (a trial's thousands would make a page of hundreds of MB);
#: failed tasks come first, the others in table order; the rest are listed as links.
THUMBNAIL_LIMIT = 200
#: Hip names beside the NF lines only up to this many hips (beyond, they would be unreadable).
LABELLED_HIPS = 30


def write_report(out_dir: Path, scans: list[dict], changes: list[dict], summary: dict,
                 study: dict | None = None) -> Path:
    """Write ``out_dir/report.html`` atomically and return its path.

    Parameters
    ----------
    out_dir : Path
    scans, changes : list of dict
        Every read's scans.csv and changes.csv record.
    summary : dict
        cohort.json.
    study : dict, optional
        A reader study (:func:`pipeline.app.batch.reader_study_outputs`): combined ``scans``,
        ``agreement``, ``repeatability``; adds the Agreement section.
    """
    import matplotlib

    matplotlib.use("Agg")
    from pipeline.report.cohort import REGIONS, ZONES, cohort_markdown, reads_markdown

    parts = [_HEAD, "<h1>onfh cohort report</h1>",
             f"<p class='lead'>{summary['n_scans_ok']} of {summary['n_scans']} scans measured, "
             f"{summary['n_comparisons_ok']} of {summary['n_comparisons']} follow-up comparisons, "
             f"{summary['n_hips']} hips. Quantities are defined in docs/method.md; each scan's folder holds its "
             "metrics.json, label and zone maps and QC picture, each comparison's its longitudinal.json and "
             "change map. Tables: scans.csv, changes.csv, cohort.json.</p>"]
    failed = [r for r in scans + changes if r.get("status") != "ok"]
    if failed:
        parts.append("<h2>Failed</h2><ul class='failed'>" + "".join(
            f"<li><b>{'scan' if r in scans else 'comparison'} {html.escape(r['key'])}</b>: "
            f"{html.escape(r.get('error') or '')}</li>" for r in failed) + "</ul>")
    open_pairs = [p for p in (study or {}).get("agreement", {}).get("discordant", []) if p["status"] == "open"]
    if open_pairs:
        parts.append("<p class='err'><b>" + f"{len(open_pairs)} discordant read pair(s) await adjudication" + "</b>: "
                     + "; ".join(html.escape(f"{p['scan']} ({' vs '.join(p['readers'])}: {', '.join(p['discordant'])})")
                                 for p in open_pairs) + " (adjudication.csv, section Agreement).</p>")
    parts.append("<div class='plots'>")
    caption = "Necrotic fraction over time, one line per hip, coloured by outcome"
    if study:
        caption += f" (value used for the cohort: reads.combine = {summary['reads']['combine']})"
    parts.append(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                 + _img(_nf_plot(study["scans"] if study else scans)) + "</figure>")
    if any(groups for groups in summary["regenerated_share_by_zone"].values()):
        parts.append("<figure><figcaption>Where regeneration happened: share of the regenerated volume per JIC "
                     "zone and antero-posterior region</figcaption>"
                     + _img(_zone_plot(summary, ZONES, REGIONS)) + "</figure>")
    parts.append("</div>")
    plain = {k: v for k, v in summary.items() if k != "reads"}  # the reads get their own section below
    parts.append("<h2>Cohort tables</h2>" + _markdown_tables(cohort_markdown(plain)))
    parts.append(_collapse_table(scans))
    if study:
        parts.append(_agreement_section(summary["reads"], study, reads_markdown))
    parts.append("<h2>Scans</h2>" + _gallery(out_dir, scans, _scan_caption))
    if changes:
        parts.append("<h2>Follow-up against baseline</h2>" + _gallery(out_dir, changes, _change_caption))
    parts.append("</body></html>")
    path = out_dir / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts) + "\n")
    os.replace(tmp, path)
    return path


def _gallery(out_dir: Path, records: list[dict], caption, limit: int = THUMBNAIL_LIMIT) -> str:
    items = []
    ordered = [r for r in records if r.get("status") != "ok"] + [r for r in records if r.get("status") == "ok"]
    shown, rest = ordered[:limit], ordered[limit:]
    for r in shown:
        folder = r["folder"]
        qc = (out_dir / folder / "qc.png") if r.get("status") == "ok" else None
        thumb = _thumbnail(qc) if qc is not None and qc.is_file() else "<div class='nothumb'>no picture</div>"
        items.append(f"<figure><a href='{html.escape(folder)}/'>{thumb}</a><figcaption>"
                     f"<a href='{html.escape(folder)}/'>{html.escape(r['key'])}</a><br>{caption(r)}"
                     "</figcaption></figure>")
    html_text = "<div class='grid'>" + "".join(items) + "</div>"
    if rest:
        html_text += (f"<p>{len(rest)} more (no thumbnail): " + ", ".join(
            f"<a href='{html.escape(r['folder'])}/'>{html.escape(r['key'])}</a>" for r in rest) + "</p>")
    return html_text


#: What a literature cut-off is, said wherever one is shown.
LITERATURE_NOTE = ("a literature cut-off is a published figure for a group of hips, never a prediction for "
                   "this hip")


def _flags(r: dict) -> list[str]:
    """The literature cut-offs of a scans.csv or changes.csv record (one cell, " | " apart)."""
    from pipeline.measures.results import HipMetrics

    return [f for f in (r.get("literature_flags") or "").split(HipMetrics.FLAG_SEPARATOR) if f]


def _collapse_table(scans: list[dict]) -> str:
    """Head depression, ARCO 2019 stage and literature cut-offs of every measured read."""
    rows = [r for r in scans if r.get("status") == "ok"]
    if not rows:
        return ""
    out = ["<h3>Collapse per scan</h3>",
           "<p>Head depression below the fitted head sphere and ARCO 2019 collapse (none: no depression above "
           "the detection limit; IIIA up to 2 mm; IIIB over 2 mm); literature cut-offs: "
           f"{html.escape(LITERATURE_NOTE)}.</p>",
           "<table><tr><th>scan</th><th>months</th><th>outcome</th><th>head depression (mm)</th>"
           "<th>ARCO 2019 collapse</th><th>literature cut-offs</th></tr>"]
    for r in rows:
        flags = "<br>".join(html.escape(f) for f in _flags(r)) or "-"
        out.append(f"<tr><td>{html.escape(r['key'])}</td><td class='num'>{r['timepoint_months']:g}</td>"
                   f"<td>{html.escape(r.get('outcome') or 'no outcome')}</td>"
                   f"<td class='num'>{_fmt(r.get('head_depression_mm'), '.2f')}</td>"
                   f"<td>{html.escape(_stage_cell(r))}</td><td class='lit'>{flags}</td></tr>")
    return "\n".join(out) + "</table>"


def _agreement_section(reads: dict, study: dict, reads_markdown) -> str:
    """The Agreement section: Bland-Altman plots per reader pair, then the tables of cohort.md."""
    agreement = study["agreement"]
    out = ["<h2>Agreement</h2>"]
    figures = []
    pairs = list(next(iter(agreement["measures"].values()))["bland_altman"]) if agreement["measures"] else []
    for pair in pairs:
        if any(agreement["measures"][m]["bland_altman"][pair].get("bias") is not None for m in agreement["measures"]):
            figures.append(f"<figure><figcaption>Bland-Altman, {html.escape(pair)}: difference against mean, bias "
                           "and 95 % limits of agreement</figcaption>" + _img(_bland_altman_plot(agreement, pair))
                           + "</figure>")
    if figures:
        out.append("<div class='plots'>" + "".join(figures) + "</div>")
    text = reads_markdown(reads, agreement, study["repeatability"])
    out.append(_markdown_tables(text.split("\n", 1)[1]))  # its "## Agreement" is the heading above
    return "\n".join(out)


def _bland_altman_plot(agreement: dict, pair: str):
    """One panel per measure: each scan's difference (second - first reader) against the pair's mean."""
    import matplotlib.pyplot as plt

    measures = agreement["measures"]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.0 * len(measures), 3.0), dpi=100, squeeze=False)
    for ax, (name, d) in zip(axes[0], measures.items()):
        ba = d["bland_altman"][pair]
        points = [p["values"] for p in ba.get("points", [])]
        ax.scatter([(a + b) / 2 for a, b in points], [b - a for a, b in points], s=18, color="#1a5fb4", zorder=3)
        if ba.get("bias") is not None:
            ax.axhline(ba["bias"], color="#333333", lw=1.0)
            for limit in (ba["lower"], ba["upper"]):
                ax.axhline(limit, color="#b22222", lw=0.9, ls="--")
        ax.axhline(0, color="#aaaaaa", lw=0.6, ls=":")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(f"mean of the two reads ({d['unit']})", fontsize=7)
        ax.set_ylabel(f"{ba['difference']} ({d['unit']})", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(color="#eeeeee")
    fig.tight_layout()
    return fig


def _fmt(value, spec=".1f", unit="") -> str:
    return "-" if value is None else f"{format(value, spec)}{unit}"


def _scan_caption(r: dict) -> str:
    if r.get("status") != "ok":
        return f"<span class='err'>failed: {html.escape(r.get('error') or '')}</span>"
    nf = _fmt(r.get("necrotic_fraction_pct"), ".1f", " %")
    read = f"read by {r['reader']}; " if r.get("scan_key") and r["key"] != r["scan_key"] else ""
    caption = html.escape(f"{read}{r.get('outcome') or 'no outcome'}; NF {nf}, "
                          f"lesion {_fmt(r.get('lesion_volume_ml'), '.2f', ' mL')}, JIC {r.get('jic_type') or '-'}, "
                          f"{_collapse_caption(r)}, {r.get('n_warnings') or 0} warning(s)")
    review = r.get("review") or ""
    if review.startswith("review"):
        # the scans to open in napari: an automatic segmentation the algorithm is unsure of, or an
        # implausible figure from any masks
        caption += f"<br><span class='err'>{html.escape(review)}</span>"
    return caption


def _stage_cell(r: dict) -> str:
    """The stage of a scans.csv record, with what a "none" leaves open at the dome's top."""
    stage = r.get("arco2019_collapse") or "-"
    return f"{stage} ({r['collapse_caveat']})" if stage == "none" and r.get("collapse_caveat") else stage


def _collapse_caption(r: dict) -> str:
    """"collapse IIIB (depression 2.63 mm)" or "collapse none (0.09 mm)" of a scans.csv record."""
    stage = r.get("arco2019_collapse")
    if stage is None:
        return "collapse -"
    return f"collapse {stage} (depression {_fmt(r.get('head_depression_mm'), '.2f', ' mm')})"


def _change_caption(r: dict) -> str:
    if r.get("status") != "ok":
        return f"<span class='err'>failed: {html.escape(r.get('error') or '')}</span>"
    caption = html.escape(f"{r['timepoint_months']:g} vs 0 months, {r.get('outcome') or 'no outcome'}; regeneration "
                          f"{_fmt(r.get('regeneration_pct'), '.1f', ' %')}, head Dice {_fmt(r.get('head_dice'), '.3f')}"
                          + (f", depression change {_fmt(r.get('head_depression_change_mm'), '+.2f', ' mm')}"
                             if r.get("head_depression_change_mm") is not None else ""))
    if r.get("new_collapse"):
        caption += "<br><span class='err'>new collapse since baseline</span>"
    flags = _flags(r)
    if flags:
        caption += "<br><span class='lit'>" + "<br>".join(html.escape(f) for f in flags) + "</span>"
    return caption


def _nf_plot(scans):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.6, 4.0), dpi=100)
    hips = {}
    for r in scans:
        if r.get("status") == "ok" and r.get("necrotic_fraction_pct") is not None:
            hips.setdefault((r["subject"], r["side"]), []).append(r)
    outcomes_seen = []
    ends = []
    for (subject, side), rows in sorted(hips.items()):
        rows = sorted(rows, key=lambda r: r["timepoint_months"])
        outcome = rows[0].get("outcome")
        colour = OUTCOME_COLOURS.get(outcome, NO_OUTCOME_COLOUR)
        many = len(hips) > LABELLED_HIPS
        ax.plot([r["timepoint_months"] for r in rows], [r["necrotic_fraction_pct"] for r in rows], "o-",
                color=colour, lw=0.6 if many else 1.6, ms=2 if many else 5, alpha=0.35 if many else 0.9)
        if outcome not in outcomes_seen:
            outcomes_seen.append(outcome)
        ends.append((rows[-1]["timepoint_months"], rows[-1]["necrotic_fraction_pct"], f"{subject} {side[0].upper()}",
                     colour))
    # Every visit sets the top, not only each hip's last one: a healing cohort's baselines lie far
    # above its last visits.
    ymax = max([r["necrotic_fraction_pct"] for rows in hips.values() for r in rows] + [12.0]) * 1.12
    if len(ends) <= LABELLED_HIPS:
        _label_ends(ax, ends, ymax)
    ax.axhline(10, color="#999999", ls=":", lw=0.9)
    ax.text(1.0, 10, "10 % ", color="#777777", fontsize=7, ha="right", va="bottom", transform=ax.get_yaxis_transform())
    times = sorted({r["timepoint_months"] for rows in hips.values() for r in rows}) or [0]
    ax.set_xticks(times)
    ax.set_xlim(min(times) - 0.5, max(times) + max(1.5, 0.22 * (max(times) - min(times))))
    ax.set_ylim(-0.04 * ymax, ymax)
    ax.set_xlabel("months after baseline")
    ax.set_ylabel("necrotic fraction (% of head)")
    ax.grid(axis="y", color="#eeeeee")
    handles = [Line2D([], [], color=OUTCOME_COLOURS.get(o, NO_OUTCOME_COLOUR), marker="o", label=o or "no outcome")
               for o in sorted(outcomes_seen, key=lambda o: (o is None, o or ""))]
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="outcome",
                  title_fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _label_ends(ax, ends, ymax):
    """Hip names beside each line's last point, nudged apart vertically so that none overlap."""
    from matplotlib.transforms import ScaledTranslation

    shift = ax.transData + ScaledTranslation(6 / 72.0, 0, ax.figure.dpi_scale_trans)
    min_gap = ymax * 0.045
    by_time: dict = {}
    for x, y, text, colour in ends:
        by_time.setdefault(x, []).append([y, text, colour])
    for x, items in by_time.items():
        items.sort(key=lambda it: it[0])
        for i in range(1, len(items)):
            items[i][0] = max(items[i][0], items[i - 1][0] + min_gap)
        for y, text, colour in items:
            ax.text(x, y, text, fontsize=7, color=colour, ha="left", va="center", transform=shift, clip_on=False,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})


def _zone_plot(summary, zones, regions):
    import matplotlib.pyplot as plt
    import numpy as np

    bars = []
    for tp, groups in summary["regenerated_share_by_zone"].items():
        named = [(name, d) for name, d in groups.items() if name != "all" and d["regenerated_ml"] > 0]
        if not named:  # no outcomes given: the whole cohort
            named = [(name, d) for name, d in groups.items() if name == "all" and d["regenerated_ml"] > 0]
        bars += [(f"{tp}, {name} (n={d['n_hips']})", d["share_pct"]) for name, d in named]
    names = zones + regions
    fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=100)
    width = 0.8 / max(len(bars), 1)
    x = np.concatenate([np.arange(len(zones)), np.arange(len(regions)) + len(zones) + 0.6])
    colours = plt.get_cmap("tab10")
    for i, (label, shares) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, [shares.get(z) or 0 for z in names], width * 0.95,
               label=label, color=colours(i % 10))
    ax.set_xticks(x, names)
    ax.axvline(len(zones) - 0.2, color="#aaaaaa", lw=0.8)
    ax.text((len(zones) - 1) / 2, 1.0, "JIC zones", ha="center", va="bottom", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.text(len(zones) + 0.6 + (len(regions) - 1) / 2, 1.0, "antero-posterior regions", ha="center", va="bottom",
            fontsize=8, transform=ax.get_xaxis_transform())
    ax.set_ylabel("share of regenerated volume (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", color="#eeeeee")
    if bars:
        ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return fig


def _img(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return f"<img class='plot' alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _thumbnail(path: Path, width: int = THUMB_WIDTH) -> str:
    """A JPEG thumbnail of a QC picture (smooth downscaling), embedded."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        height = max(1, round(im.height * width / im.width))
        im = im.resize((width, height), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82, optimize=True)
    return (f"<img class='thumb' alt='QC picture' width='{width}' height='{height}' "
            f"src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>")


def _markdown_tables(markdown: str) -> str:
    """The few Markdown constructs cohort.md uses (headings, tables, paragraphs) as HTML."""
    out, table = [], []
    skip_lead = False
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} and c for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.startswith("### "):
            out.append(f"<h4>{html.escape(line[4:])}</h4>")
        elif line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("# "):
            skip_lead = True
            continue
        elif line.strip() and skip_lead:  # the summary sentence: already at the top of the page
            skip_lead = False
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def _td(cell: str) -> str:
    numeric = re.fullmatch(r"[-<>\d.\s()%]+", cell) is not None
    return f"<td class='num'>{html.escape(cell)}</td>" if numeric else f"<td>{html.escape(cell)}</td>"


_HEAD = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>onfh cohort report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>
body{font-family:system-ui,"DejaVu Sans",sans-serif;margin:1.5em 2em;max-width:1250px;color:#222;line-height:1.35}
h1{margin:0 0 .3em}h2{border-bottom:1px solid #ddd;padding-bottom:.15em;margin-top:1.4em}h3{margin:1.1em 0 .3em}
h4{margin:.8em 0 .2em;font-size:14px}.lead{color:#444;font-size:14px}
table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;
text-align:left}td.num{text-align:right;white-space:nowrap}th{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots figure{margin:0;flex:1 1 520px;max-width:620px}
.plots figcaption{font-size:13px;color:#444;margin-bottom:4px}img.plot{width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.grid figure{margin:0;font-size:12px;border:1px solid #e3e3e3;padding:6px;border-radius:4px}
img.thumb{width:100%;height:auto;display:block}.nothumb{height:80px;background:#f6f6f6;color:#999;
display:flex;align-items:center;justify-content:center}.lit{color:#555;font-size:11px}
.err,.failed li{color:#a11}a{color:#1a5fb4}
</style></head><body>"""
