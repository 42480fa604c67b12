"""The report as one self-contained HTML file: CSS inline, figures as base64 SVG (vector, any zoom), no URL of any kind."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from ..files import atomic_path
from .model import Plot, Report, Section, Table


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #1a1a1a;
       font: 15px/1.5 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 64rem; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1#title { font-size: 2rem; line-height: 1.2; margin: 0 0 1.25rem; color: #0b2545; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.75rem; padding-bottom: 0.25rem; border-bottom: 2px solid #0b2545;
     color: #0b2545; break-after: avoid; page-break-after: avoid; }
p { margin: 0.5rem 0 0.75rem; max-width: 52rem; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; background: #eef1f5;
       padding: 0.05em 0.3em; border-radius: 3px; }
nav ol { margin: 0.25rem 0 1rem; padding-left: 1.5rem; columns: 2; }
nav a { color: #0b4f8a; text-decoration: none; }
nav a:hover { text-decoration: underline; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0 0 1.5rem;
                padding: 0.75rem 1rem; background: #f5f7fa; border: 1px solid #dde3ea; font-size: 0.9rem; }
dl.provenance dt { font-weight: bold; color: #333; }
dl.provenance dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 0.75rem 0 1.5rem; }
table { border-collapse: collapse; font-size: 0.82rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0 0 0.35rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #dde3ea; vertical-align: top; }
th { background: #e8edf3; text-align: left; white-space: nowrap; border-bottom: 2px solid #9aa9b8; }
td.r, th.r { text-align: right; white-space: nowrap; }
td.l { max-width: 28rem; }
td.nw { white-space: nowrap; }
tbody tr:nth-child(even) { background: #f7f9fb; }
figure { margin: 1rem 0 2rem; break-inside: avoid; page-break-inside: avoid; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; margin-top: 0.35rem; max-width: 52rem; }
@page { size: A4; margin: 15mm; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  .table-wrap { overflow: visible; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { margin-top: 1.5rem; }
}
"""


def _inline(text: str) -> str:
    """Escaped text, with `backticks` as <code>."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _svg(fig) -> tuple[str, int, int]:
    """The figure as base64 SVG (its text as text, in the report's font) and its size in CSS
    pixels (96 per inch). In an <img>, so that the ids of one figure's clip paths cannot meet
    another's."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "scaling-report"}):
        fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})  # the same study, the same bytes
    w, h = fig.get_size_inches()
    return base64.b64encode(buf.getvalue()).decode("ascii"), round(w * 96), round(h * 96)


def _table(t: Table) -> str:
    head = "".join(f'<th scope="col" class="{a}">{html.escape(c)}</th>' for c, a in zip(t.columns, t.align))
    def cell(text: str, align: str) -> str:
        cls = align if " " in text.strip() or len(text) > 40 else f"{align} nw"  # 1-1-2-2-3 stays on one line
        return f'<td class="{cls}">{html.escape(text)}</td>'

    body = "\n".join("<tr>" + "".join(cell(c, a) for c, a in zip(row, t.align)) + "</tr>" for row in t.rows)
    return (f'<div class="table-wrap"><table>\n<caption>{html.escape(t.caption)}</caption>\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>")


def _figure(f: Plot, number: int) -> str:
    data, w, h = _svg(f.figure)
    alt = html.escape(f"Figure {number}: {f.caption}", quote=True)
    return (f'<figure><img alt="{alt}" width="{w}" height="{h}" src="data:image/svg+xml;base64,{data}">'
            f"<figcaption><b>Figure {number}.</b> {_inline(f.caption)}</figcaption></figure>")


def _section(s: Section, index: int, counter: list[int]) -> str:
    out = [f'<section id="s{index}"><h2>{html.escape(s.heading)}</h2>']
    out += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
    out += [_table(t) for t in s.tables]
    for f in s.figures:
        counter[0] += 1
        out.append(_figure(f, counter[0]))
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """The whole page as a string."""
    prov = "\n".join(f"<dt>{html.escape(k)}</dt><dd>{_inline(v)}</dd>" for k, v in report.provenance)
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s.heading)}</a></li>' for i, s in enumerate(report.sections, 1))
    counter = [0]
    body = "\n".join(_section(s, i, counter) for i, s in enumerate(report.sections, 1))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(report.title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1 id="title">{html.escape(report.title)}</h1>
<dl class="provenance">
{prov}
</dl>
<nav><b>Contents</b><ol>{toc}</ol></nav>
{body}
</main>
</body>
</html>
"""


def write_html(report: Report, path: str | Path) -> Path:
    """Write the report to ``path`` atomically."""
    path = Path(path)
    text = render_html(report)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
