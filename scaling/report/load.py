"""What the report reads about a study: its storage (the search's trials and results, its family,
official and sweep studies, their failures), its definition, and the grid's candidates as the
search counted them; read by :func:`read_study` into one frozen :class:`StudyData`.

Each study's trials are read from the storage once, and every table is made from that one
read, so that a study still training gives a report of one moment. The sections
(:mod:`.sections`) and the provenance (:mod:`.provenance`) build from it and read nothing
more from the storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from ..records import TrialRecord, trial_records
from ..results import failures_frame, plan_studies, results_frame, running, series_failures, series_frame
from ..study import StudyConfig, StudyError


@dataclass(frozen=True)
class StudyData:
    """Everything the report reads from a study."""

    name: str
    url: str  # the storage's
    config: StudyConfig | None  # the study's definition, where one is readable
    enqueued: object  # the study's "enqueued" attribute: how many networks were queued (None if not recorded)
    results: pd.DataFrame  # results.results_frame: one row per trained network, best first
    failures: pd.DataFrame  # results.failures_frame of the search
    running: int  # the search's trials in training now
    series: pd.DataFrame  # results.series_frame: the family, official and sweep members trained
    series_failures: pd.DataFrame  # results.series_failures of those studies
    search_records: tuple[TrialRecord, ...]  # every trial of the search
    records: tuple[TrialRecord, ...]  # every trial of the search and its series studies
    candidates: tuple = ()  # the grid's candidates (search.study_candidates), none without a definition
    candidates_frame: pd.DataFrame | None = None  # tables.candidates_frame of them; None without any


def _read(study: optuna.Study) -> tuple[dict, list, list[TrialRecord]]:
    """A study's attributes, its trials and their records (as records.study_records makes them),
    read from the storage once."""
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    return attrs, trials, trial_records(trials, attrs)


def _config(attrs: dict, folder: Path) -> StudyConfig | None:
    """The study's resolved definition: studies/NAME/study.json, else the study's own copy (its attribute)."""
    text = None
    path = folder / "study.json"
    if path.is_file():
        text = path.read_text()
    elif attrs.get("definition"):
        text = attrs["definition"]
    if not text:
        return None
    try:
        return StudyConfig.from_json(text)
    except StudyError:
        return None


def _study_classes(attrs: dict, search: list[TrialRecord]) -> int | None:
    """The classes the study counted its candidates with: its ``num_classes`` attribute; for a
    study from before it was recorded, its trials' (the data's classes, as they recorded them);
    None where neither is known (the study's spec then counts them: :func:`scaling.search.study_classes`)."""
    classes = attrs.get("num_classes")
    if classes is None:
        classes = next((r.num_classes for r in search if r.classes is not None), None)
    return classes


def _candidates(config: StudyConfig | None, classes: int | None) -> tuple[tuple, pd.DataFrame | None]:
    """The grid's candidates, counted as the search counted them, and their candidates_frame."""
    if config is None:
        return (), None
    from ..search import base_spec, study_candidates
    from ..tables import candidates_frame

    found = study_candidates(config, classes)
    if not found:
        return (), None
    base = base_spec(config).replace(num_classes=found[0].spec.num_classes)
    return tuple(found), candidates_frame(found, base, target=config.target)


def read_study(name: str, studies_dir: Path = Path("studies"), storage: str | None = None) -> StudyData:
    """Open study NAME (raises StudyError, one line, when there is none)."""
    from ..storage import load_study, storage_url

    config = StudyConfig(name=name)  # refuses a name that is not a plain folder name
    folder = Path(studies_dir) / name
    if storage is None and not (folder / "optuna.db").exists():
        raise StudyError(f"no study {name!r} in {studies_dir}")
    url = storage_url(config, folder, storage)
    study = load_study(config, url)
    attrs, trials, search = _read(study)
    plans = plan_studies(url, name)
    _, plan_trials, plan_records = zip(*map(_read, plans)) if plans else ((), (), ())
    records = search + [r for rs in plan_records for r in rs]
    definition = _config(attrs, folder)
    found, frame = _candidates(definition, _study_classes(attrs, search))
    return StudyData(name=name, url=url, config=definition, enqueued=attrs.get("enqueued"),
                     results=results_frame(study, search), failures=failures_frame(study, trials),
                     running=running(study, search), series=series_frame(plans, plan_records),
                     series_failures=series_failures(plans, plan_trials), search_records=tuple(search),
                     records=tuple(records), candidates=found, candidates_frame=frame)
