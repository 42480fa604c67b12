"""The tool from Python: a study searched, its family and sweeps trained, and its results read, as the command line does.

    from scaling.api import Study, run_family, run_search, run_sweep

    study = run_search("studies/cifar10.toml", data="cifar10-jpeg.tar.gz", gpus="all")
    study.ranking().head()           # one row per network, best first (results.csv)
    study.optuna_study()             # the Optuna study itself
    fam = run_family("studies/cifar10.toml", phis=range(8), official=True, gpus="all")
    fam.members                      # one row per member: top-1, FLOPs, speed (series.csv)
    run_sweep("studies/cifar10.toml", dimension="width", match="family", gpus="all").members
    Study.open("cifar10").series()   # the family and sweeps trained beside it

A study is its folder (``studies/NAME/``: ``study.json``, ``optuna.db``, ``trials.json``):
:meth:`Study.open` reads one written by the command line, another process or another
machine. :func:`run_search` creates or resumes one, and :func:`run_family` and
:func:`run_sweep` train beside it, with the same definition (:func:`scaling.runs.define`,
the CPU budget of :mod:`scaling.budget` included), data checks, queue, worker pool
(:func:`scaling.pool.run_pool`) and storage as ``scaling search``, ``scaling family
--train`` and ``scaling sweep --train``; a re-run trains only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .errors import InputError
from .runs import Trained
from .study import StudyConfig, StudyError

if TYPE_CHECKING:
    import optuna



@dataclass(frozen=True)
class Study:
    """A study in its folder: its definition and storage, and its results as DataFrames."""

    name: str
    folder: Path
    url: str  # the Optuna storage
    config: StudyConfig | None  # its definition (None where neither study.json nor the storage holds one)

    @classmethod
    def open(cls, name: str, studies_dir: str | Path = "studies", storage: str | None = None) -> Study:
        """Study ``name`` under ``studies_dir`` (or in the database ``storage``).

        Raises:
            InputError: there is no such study.
        """
        from .storage import load_study, storage_url
        from .study import saved_config

        folder = Path(studies_dir).absolute() / name
        config = saved_config(folder)
        url = storage_url(config or StudyConfig(name=name), folder, storage)
        try:
            load_study(StudyConfig(name=name), url)
        except (StudyError, KeyError) as e:
            raise InputError(f"no study {name!r} in {url}: {e}") from None
        return cls(name, folder, url, config)

    def optuna_study(self) -> optuna.Study:
        """The Optuna study itself (for optuna's own plots, or optuna-dashboard)."""
        from .storage import load_study

        return load_study(self.config or StudyConfig(name=self.name), self.url)

    def ranking(self) -> pd.DataFrame:
        """One row per trained network, best mean top-1 first, with the ranking at matched FLOPs."""
        from .results import results_frame

        return results_frame(self.optuna_study())

    def records(self) -> list:
        """Every trial's :class:`scaling.records.TrialRecord`, in trial order."""
        from .records import study_records

        return study_records(self.optuna_study())

    def failures(self) -> pd.DataFrame:
        """The failed trials, their reasons, and whether their network was trained again."""
        from .results import failures_frame

        return failures_frame(self.optuna_study())

    def series(self) -> pd.DataFrame:
        """The family, official and sweep members trained beside the search (``NAME.family-...`` and so on)."""
        from .results import plan_studies, series_frame

        return series_frame(plan_studies(self.url, self.name))

    def laws(self, bootstrap: int = 0) -> dict:
        """Each series' scaling-law fit of top-1 against FLOPs (:func:`scaling.laws.fit_series`)."""
        from .laws import fit_series

        series = self.series()
        return fit_series(series, bootstrap=bootstrap) if not series.empty else {}

    def seed_agreement(self):
        """Seed 0's ranking against seed 1's over the networks trained with both (None with fewer than 3)."""
        from .agreement import member_top1, seed_agreement
        from .search import queue_param

        study = self.optuna_study()
        return seed_agreement(member_top1(study, queue_param(study, self.config or StudyConfig(name=self.name))))


def run_search(study: StudyConfig | str | Path | None = None, *, data: str | None = None, name: str | None = None,
               gpus: str | list[int] | None = None, per_gpu: int | str | None = None, workers: int = 1,
               studies_dir: str | Path = "studies", storage: str | None = None, quiet: bool = True) -> Study:
    """Create or resume a study and train what it has queued; its :class:`Study`.

    Args:
        study: a definition, a study TOML file (``studies/cifar10.toml``), or None: the default
            study, as ``scaling search`` defines it without ``--study`` (with ``name``: study NAME
            as it was defined). On the CPU the default study on the embedded data gets the
            reduced budget of :func:`scaling.budget.cpu_budget` (``default-cpu``), said on stderr.
        data: the data (``"default"``, an ImageFolder folder or archive) in place of the definition's.
        name: the study's name in place of the definition's.
        gpus: ``"all"``, a list of GPU indices, or None / ``[]`` for the CPU.
        per_gpu, workers: workers on each GPU, or on the CPU.
        quiet: no progress line while it runs (what it starts and its last line are still said on stderr).

    Raises:
        InputError: a definition that differs from the saved one, data that is not there or not the
            study's, a full disk or an unusable storage.
        KeyboardInterrupt: Ctrl+C or SIGTERM (the running trials are queued again).
    """
    from .checkpoint import data_identity
    from .pool import INTERRUPTED, run_pool
    from .repair import write_snapshot
    from .results import results_frame, write_csv
    from .search import create_study, largest_resolution

    gpu_ids = _gpu_ids(gpus)
    d = _define(study, gpu_ids, studies_dir, storage, name=name, source=data, per_gpu=per_gpu)
    config, folder, url = d.config, d.folder, d.url
    ds = _load(config, quiet, max_resolution=largest_resolution(config))
    try:
        opt = create_study(config, url, num_classes=ds.num_classes, identity=data_identity(ds))
        code = run_pool(config, url, opt, gpu_ids, workers, quiet)
        write_csv(results_frame(opt), folder / "results.csv")
        write_snapshot(url, config.name, folder)
    except StudyError as e:
        raise InputError(str(e)) from None
    if code in INTERRUPTED:
        raise KeyboardInterrupt(f"the search was interrupted (exit code {code}); run it again to resume")
    if code:
        raise InputError(f"the search of {config.name!r} ended with exit code {code}: a worker failed")
    return Study(config.name, folder, url, config)


def run_family(study: StudyConfig | str | Path | None = None, *, alpha: float = 1.2, beta: float = 1.1,
               gamma: float = 1.15, phis=range(8), official: bool = False, seeds: int = 1, **run) -> Trained:
    """Train the phi-scaled family of (``alpha``, ``beta``, ``gamma``) on the study's base network
    (``scaling family --train``), and with ``official`` the official B0..B7 at the whole
    ``phis`` in 0..7 (``--official``); what they gave (:class:`scaling.runs.Trained`: ``members``
    one row per member, also in ``series.csv``).

    Each is a study beside the search (``NAME.family-1.2-1.1-1.15``, ``NAME.official``), with its
    data, recipe, storage and workers; a re-run trains only what is missing, more ``phis`` only
    the new members. A worker that failed is no exception: ``code`` is 1 and its trials are in
    ``failures`` (what did train is in ``members``), as the command prints them and exits 1.

    Args:
        study, name: the search study whose data and recipe the members train with: as for
            :func:`run_search` (None: the default study, reduced on the CPU); a ``name`` alone
            must be a study that exists.
        seeds: train each member with this many seeds.
        run: ``data``, ``name``, ``gpus``, ``per_gpu``, ``workers``, ``epochs``, ``batch_size``
            (must match the study's), ``studies_dir``, ``storage``, ``quiet``, ``console`` (where
            it says what it does; default stderr).

    Raises:
        InputError: bad bases or phis, a study that does not exist or other settings, missing data,
            a full disk or an unusable storage.
        KeyboardInterrupt: Ctrl+C or SIGTERM (the running member is queued again).
    """
    from .plans import family_plans

    try:
        plans = family_plans(phis, alpha, beta, gamma, official=official)
    except ValueError as e:
        raise InputError(str(e)) from None
    return _train(study, lambda config, base: plans, seeds, **run)


def run_sweep(study: StudyConfig | str | Path | None = None, *, dimension: str, values=None, match: str | None = None,
              alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15, phis=range(1, 8), seeds: int = 1,
              **run) -> Trained:
    """Train the study's base network grown along ``dimension`` alone (``scaling sweep --train``):
    by the multipliers ``values``, or with ``match="family"`` by the one nearest in FLOPs to each
    member of the family of (``alpha``, ``beta``, ``gamma``) at ``phis``; what they gave
    (:class:`scaling.runs.Trained`). A study beside the search, ``NAME.sweep-DIMENSION``.

    Args:
        dimension: ``width``, ``depth`` or ``resolution``.
        study, seeds, run: as for :func:`run_family`.

    Raises:
        InputError: both or neither of ``values`` and ``match``, a dimension or multiplier out of
            range, and what :func:`run_family` raises.
        KeyboardInterrupt: Ctrl+C or SIGTERM.
    """
    from .compound import DIMENSIONS
    from .plans import family_plans, sweep_plan, sweep_values

    if dimension not in DIMENSIONS:
        raise InputError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    if (values is None) == (match is None):
        raise InputError("give either values or match='family'")
    if match is not None and match != "family":
        raise InputError(f"match: only 'family' is known, got {match!r}")
    try:  # checked before anything is defined or loaded
        family = family_plans(phis, alpha, beta, gamma)[0] if match else None
        values = sweep_values(values) if values is not None else None
    except ValueError as e:
        raise InputError(str(e)) from None

    def plans(config, base):
        try:
            return [sweep_plan(dimension, base, config.multiple, values=values, match=family)]
        except ValueError as e:
            raise InputError(str(e)) from None

    return _train(study, plans, seeds, **run)


def _train(study, make_plans, seeds: int, *, data: str | None = None, name: str | None = None,
           gpus: str | list[int] | None = None, per_gpu: int | str | None = None, workers: int = 1,
           epochs: int | None = None, batch_size: int | None = None, studies_dir: str | Path = "studies",
           storage: str | None = None, quiet: bool = True, console=None) -> Trained:
    """The plans ``make_plans(config, base)`` gives trained beside the study (:func:`scaling.runs.train_plans`)."""
    from .runs import train_plans
    from .search import base_spec

    gpu_ids = _gpu_ids(gpus)
    d = _define(study, gpu_ids, studies_dir, storage, must_exist=True, epochs=epochs, batch_size=batch_size,
                name=name, source=data, per_gpu=per_gpu, console=console)
    ds = _load(d.config, quiet)
    base = base_spec(d.config).replace(num_classes=ds.num_classes)  # FLOPs as trained
    try:
        trained = train_plans(d.config, make_plans(d.config, base), ds, d.url, d.folder, gpu_ids, workers=workers,
                              seeds=seeds, quiet=quiet, console=console)
    except StudyError as e:
        raise InputError(str(e)) from None
    if trained.interrupted:
        raise KeyboardInterrupt(f"the training was interrupted (exit code {trained.code}); run it again to resume")
    return trained


def _define(study, gpu_ids: list[int], studies_dir, storage, *, console=None, **options):
    """:func:`scaling.runs.define`, its budget's note said on stderr, its errors as InputError."""
    from .runs import define

    try:
        d = define(study if study is None or isinstance(study, StudyConfig) else Path(study),
                   studies_dir=Path(studies_dir).absolute(), storage=storage, gpus=len(gpu_ids), **options)
    except StudyError as e:
        raise InputError(str(e)) from None
    if d.note:
        _console(console).print(d.note, soft_wrap=True)
    return d


def _console(console):
    from rich.console import Console

    return console if console is not None else Console(stderr=True)


def _load(config: StudyConfig, quiet: bool, **kw):
    """The study's data, or an InputError that says what is wrong with them."""
    from .data import DataError, load_data
    from .faults import no_space

    source = None if config.source == "default" else Path(config.source).expanduser()
    try:
        return load_data(source, config.base_resolution, quiet=quiet, train_size=config.train_size,
                         val_size=config.val_size, **kw)
    except (DataError, OSError) as e:
        full = no_space(e)
        raise InputError(str(full) if full is not None else f"data {config.source}: {e}") from None


def _gpu_ids(gpus) -> list[int]:
    if gpus is None or gpus == "none":
        return []
    if gpus == "all":
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    if isinstance(gpus, str):
        return [int(g) for g in gpus.split(",") if g.strip()]
    return [int(g) for g in gpus]
