"""Commands on a study's storage: study repair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import InputError, app, console

study_app = typer.Typer(help="A study's storage: repair a damaged one.", no_args_is_help=True,
                        context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(study_app, name="study")


@study_app.command()
def repair(
    name: Annotated[str, typer.Argument(help="The study's name (its folder under --studies-dir).")],
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
):
    """Rebuild a damaged studies/NAME/optuna.db: finished trials from what the file still
    holds or else from studies/NAME/trials.json; the rest queued again for the next run.

    Example: scaling study repair default-cpu
    """
    from ..faults import told
    from ..repair import repair as rebuild
    from ..study import StudyError

    try:
        with told(None, name):
            done = rebuild(name, studies_dir)
    except StudyError as e:
        raise InputError(str(e))
    where = {"storage": "the readable part of the damaged file", "snapshot": f"{studies_dir / name / 'trials.json'}",
             "nothing": "nothing (no snapshot was kept)"}[done.source]
    console.print(f"rebuilt {studies_dir / name / 'optuna.db'} from {where}: {done.trials} finished trial(s) kept, "
                  f"{done.queued} network(s) queued again; the damaged file is {done.kept}", markup=False,
                  highlight=False)
    console.print("run the same `scaling search` (or `family --train`) to train the queued networks", markup=False)
