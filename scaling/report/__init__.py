"""The study report: one content model (:mod:`.content`), rendered to a self-contained HTML page
(:mod:`.html`) and to an A4 PDF (:mod:`.pdf`).

    html, pdf = write_report("cifar10", Path("studies"), Path("reports"))
"""

from __future__ import annotations

from pathlib import Path

from .content import Plot, Report, Section, Table, build_report
from .html import write_html
from .pdf import write_pdf

__all__ = ["Plot", "Report", "Section", "Table", "build_report", "write_html", "write_pdf", "write_report"]


def write_report(name: str, studies_dir: Path = Path("studies"), reports_dir: Path = Path("reports"),
                 storage: str | None = None) -> tuple[Path, Path]:
    """Build study NAME's report and write reports_dir/NAME/index.html and report.pdf (each atomically).

    Raises:
        StudyError: there is no study NAME.
    """
    report = build_report(name, Path(studies_dir), storage)
    folder = Path(reports_dir) / name
    return write_html(report, folder / "index.html"), write_pdf(report, folder / "report.pdf")
