"""The report command: a study as one self-contained HTML page and an A4 PDF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import InputError, app, console


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
    storage: Annotated[Optional[str], typer.Option(help="Database URL (default: SQLite in the study folder).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Reports go to OUTPUT_DIR/NAME/.")] = Path("reports"),
):
    """Write reports/NAME/index.html (self-contained) and reports/NAME/report.pdf from the study,
    its family and its sweeps: provenance, candidates, ranking, family, sweeps, fits, figures, failures.

    Example: scaling report default-cpu   |   scaling report cifar10 --storage postgresql://user@host/db
    """
    from ..study import StudyError
    from .searching import require_study

    require_study(name, studies_dir, storage)
    folder = output_dir / name
    for path in (output_dir, folder):
        if path.exists() and not path.is_dir():
            raise typer.BadParameter(f"{path} is not a folder", param_hint="--output-dir")
    existing = next((p for p in (folder, output_dir, *output_dir.resolve().parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise typer.BadParameter(f"{existing} is not writable", param_hint="--output-dir")
    from ..report import write_report

    try:
        html, pdf = write_report(name, studies_dir, output_dir, storage=storage)
    except StudyError as e:
        raise InputError(str(e))
    console.print(str(html), markup=False, highlight=False)
    console.print(str(pdf), markup=False, highlight=False)
