"""A study run from its definition, for the command line and :mod:`scaling.api` alike.

* :func:`define`: the definition as it will run (a saved study reopened by name, a study
  file, a :class:`~scaling.study.StudyConfig`, or options with the CPU budget of
  :mod:`scaling.budget`), checked against ``studies/NAME/study.json`` and saved there;
* :func:`train_plans`: plans (:mod:`scaling.plans`: the family, the official networks, a
  sweep) trained as studies beside the search through the worker pool
  (:func:`scaling.pool.run_pool`), their members written to ``series.csv`` and their laws
  to ``laws.csv``; a :class:`Trained` holds what they gave.

Both raise :class:`~scaling.study.StudyError` (one line) for what cannot be done; they say what
they do on a rich console (stderr by default) and print no table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .study import StudyConfig, StudyError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from .data import DataSet
    from .plans import Plan


class SourceMissing(StudyError):
    """The definition's data path does not exist."""

    def __init__(self, source: str):
        self.source = source
        super().__init__(f"data {source}: no such file or folder")


@dataclass(frozen=True)
class Definition:
    """A study's definition as it runs, its folder and storage, and the budget's note ('' where none)."""

    config: StudyConfig
    folder: Path
    url: str
    note: str = ""


def define(study: StudyConfig | str | Path | None = None, *, studies_dir: str | Path = "studies",
           storage: str | None = None, gpus: int = 0, must_exist: bool = False, epochs: int | None = None,
           batch_size: int | None = None, **explicit) -> Definition:
    """The study's resolved definition, checked against (or saved as) ``studies_dir/NAME/study.json``.

    ``study``: a definition, a study TOML file, or None: the options ``explicit`` (StudyConfig
    fields; None where not given) on the defaults, reduced on a machine with no GPU (``gpus``
    0) for the embedded data (:func:`scaling.budget.cpu_budget`). A ``name`` without ``study``
    reopens study NAME as it was defined (by options or by a file); options given beside it
    must agree with that definition. With ``must_exist`` (family and sweep training) a NAME
    that does not exist is refused, listing those that do. ``epochs`` and ``batch_size``
    replace the recipe's.

    Raises:
        StudyError: a definition that differs from the saved one, a storage that cannot be
            used, a grid without candidates; :class:`SourceMissing` for data that are not there.
    """
    from .budget import cpu_budget
    from .faults import told
    from .search import study_candidates
    from .storage import open_storage, storage_url
    from .study import check_or_save, resolve

    name = explicit.get("name")
    if storage is not None:
        open_storage(storage)  # refuse a bad URL before anything is created
    saved = saved_definition(name, studies_dir, storage) if name and study is None else None
    note = ""
    if saved is not None:
        config = saved.replace(**{k: v for k, v in explicit.items() if k != "name"})
    elif must_exist and name and study is None:
        raise study_missing(name, studies_dir, storage)
    elif isinstance(study, StudyConfig):
        config = study.replace(**explicit)
    else:
        config = resolve(study, **explicit)
        budget = cpu_budget(config, dict(explicit, epochs=epochs, batch_size=batch_size), gpus=gpus,
                            from_file=study is not None)
        config, note = budget.config, budget.note
    if epochs or batch_size:
        config = config.replace(recipe={**config.recipe, **{k: v for k, v in
                                                            (("epochs", epochs), ("batch_size", batch_size)) if v}})
    if config.source != "default" and not Path(config.source).expanduser().exists():
        raise SourceMissing(config.source)
    if not study_candidates(config):
        raise StudyError("the grid has no candidate network; widen its ranges or tolerance")
    folder = Path(studies_dir) / config.name
    with told(None, config.name):
        check_or_save(config, folder)
    return Definition(config, folder, storage_url(config, folder, storage), note)


def saved_definition(name: str, studies_dir: str | Path, storage: str | None) -> StudyConfig | None:
    """Study NAME's definition: studies/NAME/study.json, else the record of it in the storage
    (``storage``, or the folder's own optuna.db: a storage file brought from another machine
    without its study.json); None where neither."""
    from .storage import load_study, storage_url
    from .study import saved_config

    folder = Path(studies_dir) / name
    config = saved_config(folder)
    if config is None and storage is None and (folder / "optuna.db").is_file():
        storage = storage_url(StudyConfig(name=name), folder, None)
    if config is None and storage is not None:
        try:
            definition = load_study(StudyConfig(name=name), storage).user_attrs.get("definition")
        except StudyError:
            definition = None
        if definition:
            config = StudyConfig.from_json(definition)
    return config


def study_missing(name: str, studies_dir: str | Path, storage: str | None = None) -> StudyError:
    """The StudyError for a study NAME that does not exist, listing those that do (in the folder or the storage)."""
    from .study import existing_studies, no_study

    if storage is None:
        return no_study(name, studies_dir, existing_studies(studies_dir))
    import optuna
    from sqlalchemy.engine import make_url

    from .storage import open_storage

    names = sorted(n for n in optuna.get_all_study_names(storage=open_storage(storage)) if "." not in n)
    return no_study(name, make_url(storage).render_as_string(hide_password=True), names)


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Trained:
    """Plans trained beside a search study: what they gave, and where it was written."""

    name: str  # the search study's
    folder: Path  # its folder: series.csv and laws.csv are there
    url: str  # the storage, shared by the search and every series
    plans: tuple  # the plans.Plan trained
    members: pd.DataFrame  # one row per member of these plans (seeds averaged): series.csv's rows of their series
    series: pd.DataFrame  # every series trained beside the search, as written to series.csv
    laws: pd.DataFrame  # each series' law of top-1 against FLOPs, as written to laws.csv
    failures: pd.DataFrame  # the failed trials of every series, recovered or queued again or not
    code: int = 0  # the workers' exit code: 0, 1 (a worker failed), 2, or 130 / 143 (interrupted)

    @property
    def interrupted(self) -> bool:
        from .pool import INTERRUPTED

        return self.code in INTERRUPTED


def train_plans(config: StudyConfig, plans: list[Plan], data: DataSet, url: str, folder: Path, gpu_ids: list[int],
                *, workers: int = 1, seeds: int = 1, quiet: bool = True, console: Console | None = None) -> Trained:
    """Train ``plans`` beside the search ``config`` (one study each, ``NAME.family-...`` and so on,
    with its data, recipe, storage ``url`` and workers), write every series and its law beside
    the search's results (``folder/series.csv``, ``folder/laws.csv``); what they gave.

    A re-run trains only what is missing. A worker that failed or an interruption stops it after
    the plan it was in (``Trained.code`` says which); an interrupted run writes no file.

    Raises:
        StudyError: the machine's fault (a full disk, a read-only or damaged storage).
    """
    from rich.console import Console

    from .budget import cpu_estimate
    from .checkpoint import data_identity
    from .faults import told
    from .laws import check_series, fits_frame
    from .pool import INTERRUPTED, run_pool
    from .repair import write_snapshot
    from .results import plan_studies, series_failures, series_frame, write_csv
    from .search import create_study, study_members
    from .units import plural

    err = console if console is not None else Console(stderr=True)
    if not gpu_ids:
        specs = [m.spec for plan in plans for m in study_members(config.replace(plan=plan.to_dict()), data.num_classes)]
        err.print(cpu_estimate(specs, len(data.train), len(data.val), config.training_recipe().epochs, seeds),
                  soft_wrap=True)
    code = 0
    for plan in plans:
        sub = config.replace(name=f"{config.name}.{plan.suffix()}", plan=plan.to_dict(), seeds=seeds)
        err.print(f"training {plan.series()}: {plural(len(plan.keys), 'member')} x {plural(seeds, 'seed')} in "
                  f"study {sub.name}", soft_wrap=True)
        study = create_study(sub, url, identity=data_identity(data))
        code = run_pool(sub, url, study, gpu_ids, workers, quiet, console=err)
        if code:  # interrupted (a re-run trains what is missing) or a worker failed
            break
    with told(url, config.name):
        studies = plan_studies(url, config.name)
        every = series_frame(studies)  # beside the search's results.csv: every series, and its law
        laws = fits_frame(check_series(every, bootstrap=0) if not every.empty else {})
        if code not in INTERRUPTED:  # interrupted: the files stay those of the last run that ended
            write_snapshot(url, config.name, folder)  # what `scaling study repair` rebuilds from
            write_csv(every, folder / "series.csv")
            write_csv(laws, folder / "laws.csv")
    mine = every[every["series"].isin([p.series() for p in plans])] if not every.empty else every
    return Trained(config.name, folder, url, tuple(plans), mine, every, laws, series_failures(studies), code)
