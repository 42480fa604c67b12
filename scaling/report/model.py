"""The report's view model: what :mod:`.html` and :mod:`.pdf` render, and all they read.

A :class:`Report` is a title, its provenance (key, value lines) and its :class:`Section`\\ s,
each of paragraphs, :class:`Table`\\ s and :class:`Plot`\\ s, in that order. Every piece is a
frozen dataclass holding tuples: a renderer cannot change what the other renders. Table
cells are text, formatted once by :mod:`.sections` (through :mod:`.formats`), so the HTML
and the PDF print the same numbers; paragraphs may quote commands between backticks
(`scaling family --train`), which the HTML shows as code.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure

DASH = "—"  # the cell of a value that is not there


def _tuple(self, name: str) -> None:
    object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class Table:
    """A table of text cells. ``align`` holds "l" or "r" per column (default: right for a column
    of numbers, see :func:`guess_align`)."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _tuple(self, "columns")
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: a row of {len(row)} cells for {len(self.columns)} columns")
        _tuple(self, "align")
        if not self.align:
            object.__setattr__(self, "align", tuple(guess_align([r[j] for r in self.rows])
                                                    for j in range(len(self.columns))))


@dataclass(frozen=True)
class Plot:
    """A matplotlib figure with its caption; the renderers number the figures in order."""

    figure: Figure
    caption: str


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    figures: tuple[Plot, ...] = ()

    def __post_init__(self) -> None:
        for name in ("paragraphs", "tables", "figures"):
            _tuple(self, name)


@dataclass(frozen=True)
class Report:
    title: str
    provenance: tuple[tuple[str, str], ...]
    sections: tuple[Section, ...]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", tuple(tuple(kv) for kv in self.provenance))
        _tuple(self, "sections")

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
    """"r" for a column whose filled cells all read as numbers (84.13%, ±0.12, 1,234), else "l"."""
    def numeric(c: str) -> bool:
        c = c.strip().rstrip("%").replace(",", "").lstrip("±+-−")
        try:
            float(c)
            return True
        except ValueError:
            return False

    filled = [c for c in cells if c not in ("", DASH)]
    return "r" if filled and all(numeric(c) for c in filled) else "l"
