"""The report's view model: what :mod:`.html` and :mod:`.pdf` render, and all they read.

A :class:`Report` is a title, its provenance (key, value lines) and its :class:`Section`\\ s,
each of paragraphs, :class:`Table`\\ s and :class:`Plot`\\ s, in that order. Table cells are
text, formatted once by :mod:`.sections` (through :mod:`.formats`), so the HTML and the PDF
print the same numbers; paragraphs may quote commands between backticks
(`scaling family --train`), which the HTML shows as code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matplotlib.figure import Figure

DASH = "—"  # the cell of a value that is not there


@dataclass
class Table:
    """A table of strings. ``align`` holds "l" or "r" per column (default: right for numbers)."""

    caption: str
    columns: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: a row of {len(row)} cells for {len(self.columns)} columns")
        if not self.align:
            self.align = [guess_align([r[j] for r in self.rows]) for j in range(len(self.columns))]


@dataclass
class Plot:
    """A matplotlib figure with its caption."""

    figure: Figure
    caption: str


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)


@dataclass
class Report:
    title: str
    provenance: list[tuple[str, str]]
    sections: list[Section]
    name: str = ""

    def text(self) -> str:
        """Everything a reader sees, as plain text (paragraphs, table cells, captions)."""
        out = [self.title] + [f"{k}: {v}" for k, v in self.provenance]
        for s in self.sections:
            out += [s.heading, *s.paragraphs]
            for t in s.tables:
                out += [t.caption, " | ".join(t.columns)] + [" | ".join(r) for r in t.rows]
            out += [f.caption for f in s.figures]
        return "\n".join(out)


def guess_align(cells: list[str]) -> str:
    def numeric(c: str) -> bool:
        c = c.strip().rstrip("%").replace(",", "").lstrip("±+-−")
        try:
            float(c)
            return True
        except ValueError:
            return False

    filled = [c for c in cells if c not in ("", DASH)]
    return "r" if filled and all(numeric(c) for c in filled) else "l"

