"""A study run from its definition, for the command line and :mod:`scaling.api` alike.

* :func:`define`: the definition as it will run (a saved study reopened by name, a study
  file, a :class:`~scaling.study.StudyConfig`, or options with the CPU budget of
  :mod:`scaling.budget`), checked against ``studies/NAME/study.json`` and saved there.

It raises :class:`~scaling.study.StudyError` (one line) for what cannot be done and prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .study import StudyConfig, StudyError


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
    """Study NAME's definition: studies/NAME/study.json, else the storage's record of it; None where neither."""
    from .storage import load_study
    from .study import saved_config

    config = saved_config(Path(studies_dir) / name)
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
