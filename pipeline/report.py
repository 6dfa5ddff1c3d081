"""report.html: one self-contained page (images embedded) for a cohort run.

The cohort tables (cohort.md rendered), every hip's necrotic fraction over time coloured by
outcome, where regeneration happened (JIC zones and antero-posterior regions, by outcome), and a
QC thumbnail per scan linking to its folder. Scans that failed are listed with their error.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

OUTCOME_COLOURS = {"healed": "#2e8b57", "progressed": "#d2691e", "arthroplasty": "#b22222", None: "#4682b4"}


def write_report(out_dir: Path, scans: list[dict], changes: list[dict], summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from .cohort import REGIONS, ZONES, cohort_markdown

    parts = [_HEAD, "<h1>onfh cohort report</h1>",
             f"<p>{summary['n_scans_ok']} of {summary['n_scans']} scans measured, {summary['n_hips']} hips. "
             "Figures are defined in METHOD.md; per-scan details are in each folder's metrics.json.</p>"]
    failed = [r for r in scans + changes if r.get("status") != "ok"]
    if failed:
        parts.append("<h2>Failed</h2><ul>" + "".join(
            f"<li><b>{html.escape(r['kind'])} {html.escape(r['key'])}</b>: {html.escape(r.get('error', ''))}</li>"
            for r in failed) + "</ul>")
    parts.append("<h2>Necrotic fraction over time</h2>" + _img(_nf_plot(scans)))
    if changes:
        parts.append("<h2>Where regeneration happened</h2>" + _img(_zone_plot(summary, ZONES + REGIONS)))
    parts.append("<h2>Tables</h2>" + _markdown_tables(cohort_markdown(summary)))
    parts.append("<h2>Scans</h2><div class='grid'>")
    for r in scans:
        folder = out_dir / r["folder"] if not os.path.isabs(r["folder"]) else Path(r["folder"])
        qc = folder / "qc.png"
        nf = r.get("necrotic_fraction_pct")
        caption = (f"{html.escape(r['key'])}<br>NF {nf:.1f} %, JIC {r.get('jic_type') or '-'}"
                   if r.get("status") == "ok" and nf is not None else f"{html.escape(r['key'])}<br>{r.get('status')}")
        thumb = _thumbnail(qc) if qc.exists() else ""
        parts.append(f"<figure><a href='{html.escape(r['folder'])}/'>{thumb}</a><figcaption>{caption}"
                     "</figcaption></figure>")
    parts.append("</div></body></html>")
    path = out_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, path)
    return path


def _nf_plot(scans):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    hips = {}
    for r in scans:
        if r.get("status") == "ok" and r.get("necrotic_fraction_pct") is not None:
            hips.setdefault((r["subject"], r["side"]), []).append(r)
    seen = set()
    for (subject, side), rows in sorted(hips.items()):
        rows = sorted(rows, key=lambda r: r["timepoint_months"])
        outcome = rows[0].get("outcome")
        label = outcome or "no outcome"
        ax.plot([r["timepoint_months"] for r in rows], [r["necrotic_fraction_pct"] for r in rows], "o-",
                color=OUTCOME_COLOURS.get(outcome, "#777777"), label=None if label in seen else label)
        seen.add(label)
        last = rows[-1]
        ax.annotate(f"{subject} {side[0].upper()}", (last["timepoint_months"], last["necrotic_fraction_pct"]),
                    fontsize=7, xytext=(3, 0), textcoords="offset points")
    ax.axhline(10, color="#999999", ls=":", lw=0.8)
    ax.set_xlabel("months after surgery")
    ax.set_ylabel("necrotic fraction (% of head)")
    if seen:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _zone_plot(summary, zones):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    bars = []
    for tp, groups in summary["regenerated_share_by_zone"].items():
        for name, d in groups.items():
            if name != "all":
                bars.append((f"{tp}, {name}", d["share_pct"]))
    if not bars:
        bars = [(f"{tp}, all", g["all"]["share_pct"]) for tp, g in summary["regenerated_share_by_zone"].items()
                if "all" in g]
    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(zones))
    for i, (label, shares) in enumerate(bars):
        ax.bar(x + i * width, [shares.get(z) or 0 for z in zones], width, label=label)
    ax.set_xticks(x + width * (len(bars) - 1) / 2, zones)
    ax.set_ylabel("share of regenerated volume (%)")
    ax.axvline(3.5 + width * (len(bars) - 1) / 2, color="#aaaaaa", lw=0.8)  # zones | regions
    if bars:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _img(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _thumbnail(path: Path, width: int = 420) -> str:
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    img = mpimg.imread(path)
    h, w = img.shape[:2]
    fig = plt.figure(figsize=(width / 100, width / 100 * h / w), dpi=100)
    fig.figimage(img[:: max(1, w // width), :: max(1, w // width)], resize=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='qc' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _markdown_tables(markdown: str) -> str:
    """The few Markdown constructs cohort.md uses (headings, tables, paragraphs) as HTML."""
    out, table = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("# "):
            continue
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


_HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>onfh cohort report</title><style>
body{font-family:sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;font-size:12px}
img{max-width:100%}</style></head><body>"""
