"""The study report, built in three steps, each a module with one job:

- :mod:`.load` reads the study (storage, definition, the grid's candidates) once, into a frozen
  :class:`~.load.StudyData`;
- :mod:`.sections` and :mod:`.provenance` build the view model of :mod:`.model` from it (a
  :class:`Report` of :class:`Section`\\ s of paragraphs, :class:`Table`\\ s and :class:`Plot`\\ s),
  with the series' laws fitted by :func:`scaling.laws.check_series`; numbers are formatted by
  :mod:`.formats`;
- :mod:`.html` renders it as a self-contained HTML page, :mod:`.pdf` as an A4 PDF.

    html, pdf = write_report("cifar10", Path("studies"), Path("reports"))
"""

from __future__ import annotations

from pathlib import Path

from ..laws import check_series
from .html import write_html
from .load import read_study
from .model import Plot, Report, Section, Table
from .pdf import write_pdf
from .provenance import build_provenance
from .sections import BOOTSTRAP, build_sections

__all__ = ["Plot", "Report", "Section", "Table", "build_report", "write_html", "write_pdf", "write_report"]


def build_report(name: str, studies_dir: Path = Path("studies"), storage: str | None = None) -> Report:
    """Read study NAME (and its family and sweep studies) and build the report's view model.

    Raises:
        StudyError: no such study (one line, for the command line's exit code 2).
    """
    s = read_study(name, Path(studies_dir), storage)
    built = build_sections(s, check_series(s.series, bootstrap=BOOTSTRAP))
    return Report(title=f"Compound-scaling study {name}", provenance=build_provenance(s), sections=built, name=name)


def write_report(name: str, studies_dir: Path = Path("studies"), reports_dir: Path = Path("reports"),
                 storage: str | None = None) -> tuple[Path, Path]:
    """Build study NAME's report and write reports_dir/NAME/index.html and report.pdf (each atomically).

    Raises:
        StudyError: there is no study NAME.
    """
    report = build_report(name, Path(studies_dir), storage)
    folder = Path(reports_dir) / name
    return write_html(report, folder / "index.html"), write_pdf(report, folder / "report.pdf")
