"""The report as a PDF: A4 pages laid out with matplotlib, the plots placed on them with pypdf.

Text is text (TrueType fonts embedded, ``pdf.fonttype`` 42, so it can be searched, copied and
extracted), wrapped to the measured width of each line. Tables are drawn as text and rules,
columns sized to their content, long cells wrapped, and split across pages with their header
repeated. Figures stay vector graphics: each page's text and rules are one A4 figure, each
plot on it its own figure at its size, each saved as a PDF by matplotlib, and pypdf stamps
every plot's page onto the A4 page at its place. Only public APIs: matplotlib's ``savefig``
and pypdf's page merging.
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .model import Plot, Report, Section, Table
from ..files import atomic_path

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
LEFT, RIGHT, TOP, BOTTOM = 0.75, 0.75, 0.7, 0.8
WIDTH = PAGE_W - LEFT - RIGHT
FIGURE_W = 6.2  # figures a little narrower than the text: two fit on a page with their captions
PT = 1 / 72  # inches per point

FONT = "DejaVu Sans"  # bundled with matplotlib: always there, and it has α β γ φ ± × —
INK, MUTED, ACCENT = "#1a1a1a", "#555555", "#0b2545"
RULE, HEAD_BG, ZEBRA, BOX_BG = "#c5ced8", "#e3e9f0", "#f4f6f9", "#f2f5f8"

TITLE_PT, HEADING_PT, BODY_PT, CAPTION_PT, FOOT_PT = 20, 13, 9.5, 8.5, 7.5
TABLE_PTS = (7.5, 7.0, 6.5, 6.0)  # a wide table tries these sizes before wrapping its cells
CELL_PAD = 3.5 * PT  # left and right inside a cell
CELL_VPAD = 2.0 * PT
LEADING = 1.32  # line height over font size


# ----------------------------------------------------------------------------- measuring text

MEASURE_DPI = 720  # fine enough that hinting does not change the widths


@functools.lru_cache(maxsize=1)
def _renderer() -> RendererAgg:
    return RendererAgg(10, 10, MEASURE_DPI)


@functools.lru_cache(maxsize=200_000)
def _width(text: str, size: float, bold: bool = False) -> float:
    """Width of one line of text, in inches."""
    if not text:
        return 0.0
    prop = FontProperties(family=FONT, size=size, weight="bold" if bold else "normal")
    w, _, _ = _renderer().get_text_width_height_descent(text, prop, ismath=False)
    return w / MEASURE_DPI


def _break_word(word: str, size: float, width: float, bold: bool) -> list[str]:
    """A word too long for ``width``, cut into pieces that fit (at least one character each)."""
    pieces = []
    while len(word) > 1 and _width(word, size, bold) > width + 1e-6:
        k = len(word) - 1
        while k > 1 and _width(word[:k], size, bold) > width + 1e-6:
            k -= 1
        pieces.append(word[:k])
        word = word[k:]
    return pieces + ([word] if word else [])


def wrap(text: str, size: float, width: float, bold: bool = False) -> list[str]:
    """Greedy word wrap of ``text`` to ``width`` inches; words longer than a line are cut."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split():
            joined = f"{line} {word}" if line else word
            if _width(joined, size, bold) <= width + 1e-6:
                line = joined
                continue
            if line:
                lines.append(line)
            pieces = _break_word(word, size, width, bold)
            lines += pieces[:-1]
            line = pieces[-1] if pieces else ""
        lines.append(line)
    return lines or [""]


def _plain(text: str) -> str:
    """Paragraph text without the backticks that mark commands (the HTML shows them as code)."""
    return str(text).replace("`", "")


# ----------------------------------------------------------------------------- pages

@dataclass
class _Page:
    """One finished page: its text and rules as a figure (the pages are written as one PDF at
    the end), and each plot as a one-page PDF with its place (x, y: inches from the bottom
    left, as PDF coordinates go)."""

    body: Figure  # the page's text and tables, written with the others into one PDF
    plots: list[tuple[bytes, float, float]] = field(default_factory=list)


def _pdf_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", facecolor="white")
    return buf.getvalue()


class _Pages:
    """A flowing layout: blocks go down the page from ``y`` (inches from the top) until one
    does not fit, then the page is finished and a new one starts."""

    def __init__(self, footer: str):
        self.footer = footer
        self.number = 0
        self.done: list[_Page] = []
        self._start()

    def _start(self) -> None:
        self.ops: list = []
        self.plots: list[tuple[Figure, tuple[float, float, float, float]]] = []
        self.y = TOP

    @property
    def room(self) -> float:
        return PAGE_H - BOTTOM - self.y

    @property
    def empty(self) -> bool:
        return not self.ops and not self.plots

    def ensure(self, height: float) -> None:
        """Start a new page unless ``height`` fits on this one (or this one is empty)."""
        if height > self.room + 1e-9 and not self.empty:
            self.flush()

    # drawing, recorded to be replayed on the page's figure
    def text(self, x: float, y: float, s: str, size: float, bold: bool = False, color: str = INK,
             ha: str = "left") -> None:
        """``s`` with its baseline at ``y`` inches from the top."""
        def draw(fig: Figure) -> None:
            fig.text(x / PAGE_W, 1 - y / PAGE_H, s, fontsize=size, fontweight="bold" if bold else "normal",
                     color=color, ha=ha, va="baseline", family=FONT, parse_math=False)
        self.ops.append(draw)

    def rect(self, x: float, y: float, w: float, h: float, color: str) -> None:
        def draw(fig: Figure) -> None:
            fig.add_artist(Rectangle((x / PAGE_W, 1 - (y + h) / PAGE_H), w / PAGE_W, h / PAGE_H,
                                     transform=fig.transFigure, facecolor=color, edgecolor="none", zorder=-1))
        self.ops.append(draw)

    def rule(self, x0: float, x1: float, y: float, color: str = RULE, width: float = 0.6) -> None:
        def draw(fig: Figure) -> None:
            fig.add_artist(Line2D([x0 / PAGE_W, x1 / PAGE_W], [1 - y / PAGE_H] * 2, transform=fig.transFigure,
                                  color=color, linewidth=width))
        self.ops.append(draw)

    def lines(self, lines: list[str], size: float, x: float = LEFT, bold: bool = False, color: str = INK,
              gap_after: float = 0.0) -> None:
        """Lines of text at ``x``, each on this page or, when it is full, the next."""
        step = size * LEADING * PT
        for line in lines:
            self.ensure(step)
            self.text(x, self.y + size * PT, line, size, bold, color)
            self.y += step
        self.y += gap_after

    def place(self, fig: Figure, x: float, y: float, w: float, h: float) -> None:
        """``fig`` drawn at (x, y) inches from the top left, ``w`` by ``h``."""
        self.plots.append((fig, (x, y, w, h)))

    def flush(self) -> None:
        """Write this page and start the next."""
        self.number += 1
        self.rule(LEFT, PAGE_W - RIGHT, PAGE_H - BOTTOM + 0.25)  # the footer
        fy = PAGE_H - BOTTOM + 0.45
        self.text(LEFT, fy, self.footer, FOOT_PT, color=MUTED)
        self.text(PAGE_W - RIGHT, fy, f"page {self.number}", FOOT_PT, color=MUTED, ha="right")
        page = Figure(figsize=(PAGE_W, PAGE_H), facecolor="white")
        for draw in self.ops:
            draw(page)
        self.done.append(_Page(page, [(_pdf_bytes(_resized(f, w, h)), x, PAGE_H - y - h)
                                      for f, (x, y, w, h) in self.plots]))
        self._start()

    def close(self) -> None:
        if not self.empty:
            self.flush()


def _resized(source: Figure, w: float, h: float) -> Figure:
    """A copy of ``source`` at ``w`` by ``h`` inches (its layout redone at that size); the figure
    itself, resized, if it cannot be copied."""
    try:
        fig = pickle.loads(pickle.dumps(source))
    except (pickle.PicklingError, TypeError, AttributeError):
        fig = source
    fig.set_size_inches(w, h)
    fig.patch.set_facecolor("white")
    return fig


# ----------------------------------------------------------------------------- blocks

def _title(pages: _Pages, report: Report) -> None:
    for line in wrap(report.title, TITLE_PT, WIDTH, bold=True):
        pages.text(LEFT, pages.y + TITLE_PT * PT, line, TITLE_PT, bold=True, color=ACCENT)
        pages.y += TITLE_PT * 1.25 * PT
    pages.y += 0.08
    pages.rule(LEFT, PAGE_W - RIGHT, pages.y, color=ACCENT, width=1.2)
    pages.y += 0.18


def _provenance(pages: _Pages, items: list[tuple[str, str]]) -> None:
    size = 8.0
    key_w = max(_width(k, size, True) for k, _ in items) + 0.15 if items else 0
    key_w = min(key_w, 2.2)
    value_w = WIDTH - key_w - 2 * CELL_PAD
    step = size * LEADING * PT
    for key, value in items:
        klines = wrap(key, size, key_w - 0.1, bold=True)
        vlines = wrap(_plain(value), size, value_w)
        h = max(len(klines), len(vlines)) * step + 2 * CELL_VPAD
        pages.ensure(h)
        pages.rect(LEFT, pages.y, WIDTH, h, BOX_BG)
        for i, line in enumerate(klines):
            pages.text(LEFT + CELL_PAD, pages.y + CELL_VPAD + size * PT + i * step, line, size, bold=True)
        for i, line in enumerate(vlines):
            pages.text(LEFT + CELL_PAD + key_w, pages.y + CELL_VPAD + size * PT + i * step, line, size)
        pages.y += h
    pages.y += 0.2


def _heading(pages: _Pages, text: str, keep: float) -> None:
    """A section heading, on the page where ``keep`` inches of what follows fit too."""
    lines = wrap(text, HEADING_PT, WIDTH, bold=True)
    step = HEADING_PT * 1.25 * PT
    pages.ensure(0.4 + len(lines) * step + keep)
    if pages.y > TOP + 1e-9:
        pages.y += 0.22
    for line in lines:
        pages.text(LEFT, pages.y + HEADING_PT * PT, line, HEADING_PT, bold=True, color=ACCENT)
        pages.y += step
    pages.y += 0.04
    pages.rule(LEFT, PAGE_W - RIGHT, pages.y, color=ACCENT, width=0.9)
    pages.y += 0.14


def _paragraph(pages: _Pages, text: str) -> None:
    pages.lines(wrap(_plain(text), BODY_PT, WIDTH), BODY_PT, gap_after=0.08)


def _column_widths(t: Table, size: float) -> tuple[list[float], bool]:
    """Widths (inches) of the columns at font ``size``, and whether they fit the page without
    cutting a word: text columns may wrap at spaces (down to a readable width), numbers never."""
    natural, floor = [], []
    for j, head in enumerate(t.columns):
        cells = [row[j] for row in t.rows]
        nat = max([_width(head, size, True)] + [_width(c, size) for c in cells])
        head_word = max(_width(w, size, True) for w in head.split()) if head.split() else 0.0
        if t.align[j] == "r":
            low = max([head_word] + [_width(c, size) for c in cells])
        else:
            longest = max([head_word] + [_width(w, size) for c in cells for w in c.split()])
            low = min(nat, max(longest, 0.8))
        natural.append(nat + 2 * CELL_PAD)
        floor.append(low + 2 * CELL_PAD)
    if sum(natural) <= WIDTH:
        return natural, True
    if sum(floor) <= WIDTH:
        return _share(t, size, natural, floor), True
    scale = WIDTH / sum(floor)  # too wide even wrapped: squeeze every column, cutting words
    return [f * scale for f in floor], False


def _share(t: Table, size: float, natural: list[float], floor: list[float]) -> list[float]:
    """Widths between ``floor`` and ``natural`` that fill the text width, given out in small
    steps to the column where a step saves the most lines of the table (estimated from the
    cells' widths), so that long texts wrap and short ones stay on one line."""
    import numpy as np

    text = np.array([[_width(c, size) for c in row] for row in t.rows] or [[0.0] * len(t.columns)])
    widths = np.array(floor, dtype=float)
    top = np.array(natural, dtype=float)

    def height(w: np.ndarray) -> float:
        return float(np.maximum(np.ceil(text / np.maximum(w - 2 * CELL_PAD, 1e-6) - 1e-9), 1).max(axis=1).sum())

    left = WIDTH - widths.sum()
    step = max(left / 200, 0.005)
    while left > 1e-9:
        open_ = [j for j in range(len(widths)) if widths[j] < top[j] - 1e-9]
        if not open_:
            break
        now = height(widths)
        best, gain = None, -1.0
        for j in open_:
            trial = widths.copy()
            trial[j] = min(top[j], trial[j] + step)
            g = now - height(trial)
            if g > gain + 1e-9 or (abs(g - gain) <= 1e-9 and top[j] - widths[j] > top[best] - widths[best]):
                best, gain = j, g
        add = min(step, top[best] - widths[best], left)
        widths[best] += add
        left -= add
    return widths.tolist()


def _table(pages: _Pages, t: Table) -> None:
    for size in TABLE_PTS:  # the largest size at which the table fits, wrapping text at spaces
        widths, fits = _column_widths(t, size)
        if fits:
            break
    step = size * LEADING * PT
    cap = wrap(t.caption, CAPTION_PT, WIDTH, bold=True)
    cap_step = CAPTION_PT * LEADING * PT
    cap_h = len(cap) * cap_step + 0.04
    head = [wrap(c, size, w - 2 * CELL_PAD, bold=True) for c, w in zip(t.columns, widths)]
    head_h = max(len(c) for c in head) * step + 2 * CELL_VPAD
    rows = [[wrap(c, size, w - 2 * CELL_PAD) if a == "l" else [c] for c, w, a in zip(row, widths, t.align)]
            for row in t.rows]
    heights = [max(len(c) for c in r) * step + 2 * CELL_VPAD for r in rows]
    total = sum(widths)
    xs = [LEFT + sum(widths[:j]) for j in range(len(widths))]

    def caption(more: bool) -> None:
        lines = cap if not more else wrap(f"{t.caption} (continued)", CAPTION_PT, WIDTH, bold=True)
        for line in lines:
            pages.text(LEFT, pages.y + CAPTION_PT * PT, line, CAPTION_PT, bold=True)
            pages.y += cap_step
        pages.y += 0.04

    def cells(parts: list[list[str]], h: float, bold: bool) -> None:
        for j, lines in enumerate(parts):
            for i, line in enumerate(lines):
                y = pages.y + CELL_VPAD + size * PT + i * step
                if t.align[j] == "r":
                    pages.text(xs[j] + widths[j] - CELL_PAD, y, line, size, bold, ha="right")
                else:
                    pages.text(xs[j] + CELL_PAD, y, line, size, bold)
        pages.y += h

    def header() -> None:
        pages.rect(LEFT, pages.y, total, head_h, HEAD_BG)
        cells(head, head_h, True)
        pages.rule(LEFT, LEFT + total, pages.y, color="#8795a5", width=0.8)

    pages.ensure(cap_h + head_h + sum(heights[:3]))
    caption(False)
    header()
    n = len(rows)
    for k, (parts, h) in enumerate(zip(rows, heights)):
        # A page break leaves at least the last 3 rows (or all) together on the next page.
        tail = sum(heights[k:]) if 0 < k and n - k == 3 else h
        if h > pages.room or tail > pages.room:
            pages.flush()
            caption(True)
            header()
        if k % 2:
            pages.rect(LEFT, pages.y, total, h, ZEBRA)
        cells(parts, h, False)
    pages.rule(LEFT, LEFT + total, pages.y, color="#8795a5", width=0.8)
    pages.y += 0.22


def _figure(pages: _Pages, plot: Plot, number: int) -> None:
    w0, h0 = plot.figure.get_size_inches()
    w = min(FIGURE_W, w0)
    h = h0 * w / w0
    cap = wrap(f"Figure {number}. {_plain(plot.caption)}", CAPTION_PT, WIDTH)
    pages.ensure(h + 0.08 + len(cap) * CAPTION_PT * LEADING * PT)
    pages.place(plot.figure, LEFT + (WIDTH - w) / 2, pages.y, w, h)
    pages.y += h + 0.08
    pages.lines(cap, CAPTION_PT, color=MUTED, gap_after=0.25)


def _first_block(s: Section) -> float:
    """About how tall the start of the section's first block is: what its heading stays with."""
    if s.paragraphs:
        return min(3, len(wrap(_plain(s.paragraphs[0]), BODY_PT, WIDTH))) * BODY_PT * LEADING * PT
    if s.tables:
        return 0.3 + (min(3, len(s.tables[0].rows)) + 2) * TABLE_PTS[0] * LEADING * PT
    if s.figures:
        w, h = s.figures[0].figure.get_size_inches()
        return h * min(FIGURE_W, w) / w + 0.3
    return 0.0


def _section(pages: _Pages, s: Section, counter: list[int]) -> None:
    _heading(pages, s.heading, _first_block(s))
    for p in s.paragraphs:
        _paragraph(pages, p)
    for t in s.tables:
        _table(pages, t)
    for f in s.figures:
        counter[0] += 1
        _figure(pages, f, counter[0])


def write_pdf(report: Report, path: str | Path) -> Path:
    """Write the report to ``path`` (A4) atomically."""
    from pypdf import PdfReader, PdfWriter, Transformation

    path = Path(path)
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": FONT}):
        pages = _Pages(report.title)
        _title(pages, report)
        _provenance(pages, report.provenance)
        counter = [0]
        for s in report.sections:
            _section(pages, s, counter)
        pages.close()
        bodies = io.BytesIO()
        with PdfPages(bodies) as document:  # the pages in one file: their fonts embedded once, not once a page
            for page in pages.done:
                document.savefig(page.body, facecolor="white")
    bodies = PdfReader(bodies)
    writer = PdfWriter()
    for i, page in enumerate(pages.done):
        writer.add_page(bodies.pages[i])
        body = writer.pages[-1]  # merged onto as the writer's own page, as pypdf asks
        for plot, x, y in page.plots:
            body.merge_transformed_page(PdfReader(io.BytesIO(plot)).pages[0],
                                        Transformation().translate(x * 72, y * 72))
    writer.add_metadata({"/Title": report.title, "/Creator": "scaling report"})
    if hasattr(writer, "compress_identical_objects"):  # pypdf 4.3+: each plot embeds its fonts; share them
        writer.compress_identical_objects()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer.write(f)
    return path
