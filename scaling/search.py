"""The search: an Optuna study over the candidate networks, run by one or many workers.

Scheduling is Optuna's own. In grid mode every distinct network (times each seed) is
enqueued once as a WAITING trial, in an order that spreads the budget; a plan (family,
official, sweep) enqueues each member and seed. Every queued trial has one form,
``{"member": key, "seed": s}`` (:func:`queue_param`); workers pop them atomically from the
shared storage. Storage is SQLite under studies/NAME/ by default
(Optuna's RDB storage, chosen over the journal file because only RDB storage has
heartbeats), or any database URL for workers on many machines. A worker that dies
mid-trial stops its heartbeat; after the grace period another worker (or the next run)
fails the trial and Optuna's retry callback enqueues the same network again, once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .compound import (PAPER, Candidate, GridTooLarge, Triple, candidates, hold_to_budget, round_resolution,
                       scaled_spec)
from .complexity import count
from .faults import no_space, told
from .members import Member, candidate_member, grid_member
from .plans import MULTIPLIER_RANGE, PHI_RANGE, Plan, member
from .records import TrialRecord, write
from .selection import Selection
from .signals import interruptible, shielded
from .spec import spec_for
from .storage import creation_lock, fixed_params, open_storage, trial_key
from .study import StudyConfig, StudyError


DEFAULT_TRIALS = 20  # tpe and random, without --trials


class TrialFailed(Exception):
    """Training ended without a metric (NaN, out of memory): the trial is FAIL with its reason."""


def largest_resolution(config: StudyConfig) -> int:
    """The largest image size a study's trials ask for, so that one data cache (one cap on
    the stored size) serves every trial: its plan's largest member, or the grid's top gamma."""
    if config.plan is not None:
        return max(m.spec.resolution for m in study_members(config))
    return round_resolution(config.base_resolution * config.gamma[1] ** config.phi, config.multiple)


def base_spec(config: StudyConfig):
    return spec_for("efficientnet-b0", resolution=config.base_resolution, width=config.base_width,
                    depth=config.base_depth)


def study_classes(config: StudyConfig, num_classes: int | None = None) -> int:
    """The classes a study's networks are counted with: the data's (given, or the embedded
    set's 10), else the 1000 of ImageNet that `scaling candidates` counts with."""
    if num_classes is not None:
        return int(num_classes)
    if config.source == "default":
        from .data.load import DEFAULT_CLASSES

        return DEFAULT_CLASSES
    return base_spec(config).num_classes


def study_candidates(config: StudyConfig, num_classes: int | None = None) -> list[Candidate]:
    """The grid's candidates, held to their FLOPs as trained (with the data's classifier).

    Raises:
        StudyError: the grid is too large to enumerate.
    """
    base = base_spec(config).replace(num_classes=study_classes(config, num_classes))
    try:
        return candidates(config.phi, config.grid(), base, config.multiple, flops_tolerance=config.flops_tolerance)
    except GridTooLarge as e:
        raise StudyError(f"study {config.name!r}: {e}") from None


def spread_order(cands: list[Candidate]) -> list[int]:
    """Farthest-point order in (alpha, beta, gamma), from the paper's triple (or the first):
    any prefix of the order covers the grid as evenly as it can."""
    if not cands:
        return []
    pts = [(c.triple.alpha, c.triple.beta, c.triple.gamma) for c in cands]
    start = next((i for i, c in enumerate(cands) if PAPER in c.triples), 0)
    order, dist = [start], [math.dist(p, pts[start]) for p in pts]
    while len(order) < len(pts):
        i = max(range(len(pts)), key=lambda j: (dist[j], -j))
        order.append(i)
        dist = [min(d, math.dist(p, pts[i])) for d, p in zip(dist, pts)]
    return order


@dataclass(frozen=True)
class Selected:
    """A grid's chosen networks for one run: their queue keys, how many seeds each gets, and
    what was asked (such as "top 8 of study cifar10, the paper's (1.2, 1.1, 1.15)")."""

    keys: tuple[int, ...]
    seeds: int
    asked: str

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "seeds": self.seeds, "asked": self.asked}


def select_networks(config: StudyConfig, selection: Selection, seeds: int, ranked_url: str,
                    num_classes: int | None = None) -> Selected:
    """The networks of ``config``'s grid that ``selection`` names. ``top``/``bottom`` read the
    ranking (mean top-1 over seeds) of the study ``selection.ranked_by`` (``config``'s own
    where it names none), stored at ``ranked_url``.

    Raises:
        StudyError: not a grid study, no such ranked study, or a selection the grid cannot meet.
    """
    from .selection import SelectionError, select

    if config.sampler != "grid" or config.plan is not None:
        raise StudyError("--only chooses networks of a grid study (sampler \"grid\")")
    cands = study_candidates(config, num_classes)
    ranking = None
    if selection.ranked:
        ranking = _ranking(selection.ranked_by or config.name, ranked_url)
    try:
        keys = select(selection, cands, ranking)
    except SelectionError as e:
        raise StudyError(f"--only {selection.describe()}: {e}") from None
    return Selected(tuple(keys), seeds, selection.describe())


def _ranking(name: str, url: str) -> list[Triple]:
    """Each completed network's representative triple, best mean top-1 first, of study ``name``."""
    from .results import results_frame

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url, create=False))
    except (KeyError, StudyError):
        raise StudyError(f"no study {name!r} to rank by (looked in {url})") from None
    df = results_frame(study)
    return [Triple(float(r.alpha), float(r.beta), float(r.gamma)) for r in df.itertuples()]


def study_members(config: StudyConfig, num_classes: int | None = None) -> list[Member]:
    """The networks a queued study trains, for every kind: a grid's candidates in spread
    order (each keyed by its index among the candidates; the search queues the first
    ``trials``), a plan's members in its order. Empty for a sampled search (tpe, random).

    Raises:
        StudyError: the grid is too large to enumerate.
    """
    plan = plan_of(config)
    if plan is not None:
        base = base_spec(config).replace(num_classes=study_classes(config, num_classes))
        return [member(plan, base, k, config.multiple) for k in plan.keys]
    if config.sampler != "grid":
        return []
    cands = study_candidates(config, num_classes)
    return [candidate_member(k, cands[k]) for k in spread_order(cands)]


def plan_of(config: StudyConfig) -> Plan | None:
    return Plan.from_dict(config.plan) if config.plan is not None else None


MEMBER = "member"  # the parameter a queued trial names its network by: {"member": key, "seed": s}


def legacy_param(config: StudyConfig) -> str:
    """What a study queued before the one form named its member by: the grid's candidate
    index, a family's or the official networks' phi, a sweep's multiplier."""
    plan = plan_of(config)
    return plan.param if plan is not None else "candidate"


def queue_param(study: optuna.Study, config: StudyConfig) -> str:
    """The parameter a queued study's trials name their member by: ``"member"``; a study
    queued before the one form (its trials name ``"candidate"``, ``"phi"`` or
    ``"multiplier"``) keeps its own, so that it resumes as it was written."""
    legacy = legacy_param(config)
    if any(legacy in dict(trial_key(t)) for t in study.get_trials(deepcopy=False)):
        return legacy
    return MEMBER


def queued(config: StudyConfig) -> bool:
    """Whether workers take their networks from a queue (grid, family, sweep) rather than a sampler."""
    return config.sampler == "grid" or config.plan is not None


def create_study(config: StudyConfig, url: str, num_classes: int | None = None,
                 identity: dict | None = None, selected: Selected | None = None) -> optuna.Study:
    """Create or load the study; in grid mode enqueue each network and seed once; for a
    plan (family, official, sweep) each member and seed, adding members a re-run asks for.

    ``num_classes`` (the data's) is what the candidates are counted with; it is recorded in
    the study, so that every worker and the report hold the same candidates to their FLOPs.
    A network whose trials all failed (a full disk, a bug since fixed, a lost worker past
    its retries) is queued again.

    ``identity`` (:func:`scaling.checkpoint.data_identity` of the data) is recorded at
    creation; a later run, maybe on another machine with the data at another path, goes on
    only where its data have the same identity. The definition the workers read is the
    current one (its data path is this machine's).

    ``selected`` (a grid's chosen networks, :func:`select_networks`) queues those networks
    for each of its seeds that they lack, in a new study or an existing one, instead of the
    whole grid."""
    with told(url, config.name), creation_lock(url):
        study = _create_study(config, url, num_classes, selected)
        if identity is not None:
            check_identity(study, config, identity)
        study.set_user_attr("definition", json.dumps(config.to_dict()))
        requeue_failed(study)
    return study


def check_identity(study: optuna.Study, config: StudyConfig, identity: dict) -> None:
    """Record the data's identity in a new study; refuse other data for an existing one."""
    from .checkpoint import identity_difference

    saved = study.user_attrs.get("data_identity")
    if saved is None:
        study.set_user_attr("data_identity", identity)
        return
    diff = identity_difference(saved, identity)
    if diff:
        raise StudyError(f"study {config.name!r} was trained on other data than {config.source} ({diff}); "
                         "give the data it was trained on, or another --name")


def _create_study(config: StudyConfig, url: str, num_classes: int | None = None,
                  selected: Selected | None = None) -> optuna.Study:
    storage = open_storage(url)
    sampler = {"grid": optuna.samplers.RandomSampler(seed=0), "random": optuna.samplers.RandomSampler(),
               "tpe": optuna.samplers.TPESampler()}[config.sampler]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if config.prune \
        else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=config.name, storage=storage, direction="maximize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if not study.metric_names:  # optuna-dashboard names the objective
        study.set_metric_names(["top1"])
    plan = plan_of(config)
    param = queue_param(study, config)
    if plan is not None:
        have = _queued_pairs(study, param)
        for seed in range(config.seeds):
            for key in plan.keys:
                if (key, seed) not in have:
                    study.enqueue_trial({param: key, "seed": seed})
        study.set_user_attr("enqueued", len(plan.keys) * config.seeds)  # the progress bar's total
        study.set_user_attr("plan", json.dumps(plan.to_dict()))
        study.set_user_attr("definition", json.dumps(config.to_dict()))
        return study
    if "num_classes" not in study.user_attrs:  # fixed at creation: the candidates never change under a study
        study.set_user_attr("num_classes", study_classes(config, num_classes))
    if config.sampler == "grid" and selected is not None:
        have = _queued_pairs(study, param)
        add = [(k, seed) for seed in range(selected.seeds) for k in selected.keys if (k, seed) not in have]
        cands = study_candidates(config, study.user_attrs["num_classes"])
        for k, seed in add:
            study.enqueue_trial(_grid_queued(param, k, cands[k], seed))
        study.set_user_attr("enqueued", (study.user_attrs.get("enqueued") or 0) + len(add))
        study.set_user_attr("selections", [*study.user_attrs.get("selections", []), selected.to_dict()])
        study.set_user_attr("definition", json.dumps(config.to_dict()))
        return study
    if config.sampler == "grid" and not study.user_attrs.get("enqueued"):
        cands = study_candidates(config, study.user_attrs["num_classes"])
        if not cands:
            held = ("" if config.flops_tolerance is None
                    else f" within {config.flops_tolerance:.0%} of its FLOPs budget")
            raise StudyError(f"study {config.name!r}: the grid has no candidate network{held}; widen its ranges, "
                             "tolerance or flops_tolerance")
        order = spread_order(cands)[: config.trials or None]
        for seed in range(config.seeds):
            for k in order:
                study.enqueue_trial(_grid_queued(param, k, cands[k], seed), skip_if_exists=True)
        study.set_user_attr("enqueued", len(order) * config.seeds)
        study.set_user_attr("definition", json.dumps(config.to_dict()))
    return study


def _queued_pairs(study: optuna.Study, param: str) -> set[tuple]:
    """(member key, seed) of every trial, queued ones included (a WAITING trial has no params
    yet: only its fixed ones)."""
    return {(dict(trial_key(t)).get(param), dict(trial_key(t)).get("seed")) for t in study.get_trials(deepcopy=False)}


def _grid_queued(param: str, key: int, cand: Candidate, seed: int) -> dict:
    """A grid network's queued parameters: ``{"member": key, "alpha": .., "beta": .., "gamma": ..,
    "seed": s}``, its representative triple beside its key so that optuna-dashboard plots the
    landscape in the paper's terms; a study queued before the one form keeps ``{param: key, "seed": s}``."""
    if param != MEMBER:
        return {param: key, "seed": seed}
    t = cand.triple
    return {MEMBER: key, "alpha": t.alpha, "beta": t.beta, "gamma": t.gamma, "seed": seed}


def requeue_failed(study: optuna.Study) -> int:
    """Queue again each network whose trials all failed and none is queued or running; how many."""
    trials = study.get_trials(deepcopy=False)
    settled, failed = set(), {}
    for t in trials:
        key = trial_key(t)
        if not key:
            continue
        if t.state == TrialState.FAIL:
            failed.setdefault(key, t)
        elif t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING, TrialState.PRUNED):
            settled.add(key)
    again = [k for k in failed if k not in settled]
    for key in again:
        study.enqueue_trial(dict(key), skip_if_exists=False)
    return len(again)


def code_version() -> str:
    from . import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def code_modified() -> bool | None:
    """Whether the checkout this code runs from has uncommitted changes to tracked files (None:
    not a git checkout, or git is missing)."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                              text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def software() -> dict[str, str]:
    """The versions that make a trial's numbers: Python, torch, and the CUDA and cuDNN torch runs on."""
    import platform

    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "cudnn": str(cudnn) if cudnn else "none"}


def _seed_high(config: StudyConfig, fixed: dict | None) -> int:
    """The seed's upper bound: the definition's seeds, or a queued seed beyond them (``--only ... --seeds``)."""
    return max(0, config.seeds - 1, int((fixed or {}).get("seed", 0)))


class Objective:
    """Trains one network per trial and returns its held-out top-1."""

    def __init__(self, config: StudyConfig, device=None, quiet: bool = True, num_classes: int | None = None,
                 folder: Path | None = None):
        self.config, self.device, self.quiet = config, device, quiet
        self.folder = folder  # where a full disk is said to be when the error names no file
        self.plan = plan_of(config)
        self.num_classes = study_classes(config, num_classes)
        self.members = {m.key: m for m in study_members(config, self.num_classes)}  # grid and plans: by queue key
        self.recipe = config.training_recipe()
        self.max_resolution = largest_resolution(config)
        self.version, self.modified, self.software = code_version(), code_modified(), software()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.current: optuna.Trial | None = None
        self.record = TrialRecord()  # what the current trial has recorded so far

    def network(self, trial: optuna.Trial) -> tuple:
        """The trial's network (its spec as trained), its member and its seed."""
        c = self.config
        fixed = fixed_params(trial)
        if queued(c) and fixed is None:
            self._write(trial, skipped=True)
            raise optuna.TrialPruned("no queued network left")
        name = MEMBER if MEMBER in (fixed or {}) else legacy_param(c)  # a study queued before the one form: its own
        if self.plan is not None:
            lo, hi = MULTIPLIER_RANGE if self.plan.param == "multiplier" else PHI_RANGE
            key = trial.suggest_float(name, lo, hi)
            seed = trial.suggest_int("seed", 0, _seed_high(c, fixed))
            # A member queued by an earlier definition of the plan (no longer in it) is still its plan's network.
            m = self.members.get(key) or member(self.plan, base_spec(c).replace(num_classes=self.num_classes), key,
                                                c.multiple)
            return m.spec, m, seed
        if c.sampler == "grid":
            k = trial.suggest_categorical(name, list(range(len(self.members))))
            m = self.members[k]
            if "alpha" in (fixed or {}):  # the one form: the triple is a parameter too (its queued value)
                for p, (lo, hi) in zip(("alpha", "beta", "gamma"), (c.alpha, c.beta, c.gamma)):
                    trial.suggest_float(p, lo, hi)
            seed = trial.suggest_int("seed", 0, _seed_high(c, fixed))
            return m.spec, m, seed
        lo, hi = c.alpha
        alpha = trial.suggest_float("alpha", lo, hi, step=c.step)
        beta = trial.suggest_float("beta", c.beta[0], c.beta[1], step=c.step)
        gamma = math.sqrt(c.target / (alpha * beta**2))
        if not c.gamma[0] - 1e-9 <= gamma <= c.gamma[1] + 1e-9:
            self._write(trial, skipped=True)
            raise optuna.TrialPruned(f"gamma {gamma:.3f} outside {c.gamma} for alpha {alpha}, beta {beta}")
        t = Triple(alpha, beta, round(gamma, 4))
        spec = self._held(scaled_spec(base_spec(c).replace(num_classes=self.num_classes), t, c.phi, c.multiple))
        if spec is None:
            self._write(trial, skipped=True)
            raise optuna.TrialPruned(f"no resolution holds {t} within {c.flops_tolerance:.0%} of its FLOPs budget")
        return spec, grid_member(math.nan, (t,), spec, c.phi), trial.number % c.seeds

    def _held(self, spec):
        """A sampled triple's network held to its FLOPs budget, as the grid's candidates are."""
        c = self.config
        if c.flops_tolerance is None:
            return spec
        base = base_spec(c).replace(num_classes=self.num_classes)
        resolutions = tuple(round_resolution(base.resolution * g**c.phi, c.multiple) for g in c.gamma)
        return hold_to_budget(spec, count(base).flops * c.target**c.phi, c.flops_tolerance, resolutions,
                              c.multiple, lambda s: count(s).flops)

    def __call__(self, trial: optuna.Trial) -> float:
        self.current, self.record = trial, TrialRecord()
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM: Optuna marks the trial FAIL next
            with contextlib.suppress(Exception):  # a refused write must not hide the interruption
                self._write(trial, reason="interrupted")
            raise
        except optuna.TrialPruned:
            raise
        except TrialFailed:
            raise
        except Exception as e:  # a bug or a bad file: FAIL with its reason, the study goes on
            full = no_space(e, self.folder)
            if full is not None:  # a full disk: the search stops; the trial is queued again by the next run
                with contextlib.suppress(Exception):
                    self._write(trial, reason=f"no space left on {full.folder}")
                raise full from None
            reason = f"{type(e).__name__}: {e}"
            self._write(trial, reason=reason)
            raise TrialFailed(reason) from e

    def _write(self, trial: optuna.Trial, record: TrialRecord | None = None, **changes) -> None:
        """Record on the trial ``record`` (or the current record with ``changes``): the attributes that changed."""
        record = (record or self.record).replace(**changes)
        write(trial, record, self.record)
        self.record = record

    def _run(self, trial: optuna.Trial) -> float:
        spec, m, seed = self.network(trial)
        # The member first, before anything can fail (the data included): a failure is listed with its network.
        self._write(trial, TrialRecord.for_member(m, spec, seed, self.worker, self.version, self.modified,
                                                        self.software))
        with interruptible():
            data, data_s = self._data(spec.resolution)
        spec = spec.replace(num_classes=data.num_classes)  # counted as trained: the data's classifier
        n = count(spec)
        base_flops = count(base_spec(self.config).replace(num_classes=data.num_classes)).flops
        key = spec.architecture_key()
        self._write(trial, network=key, params=n.params, flops=n.flops, activations=n.activations,
                    flops_ratio=round(n.flops / base_flops, 4), classes=tuple(data.classes),
                    num_classes=data.num_classes)
        done = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("network") == key and t.user_attrs.get("seed") == seed]
        if done:  # the same network was trained already (TPE, random): reuse, never retrain
            self._write(trial, duplicate_of=done[0].number)
            return done[0].value
        with interruptible():
            return self._train(trial, spec, seed, data, data_s)

    def _data(self, resolution: int):
        """The study's data at ``resolution`` (from the cache after the first trial), and the seconds it took."""
        from .data import load_data

        t0 = time.perf_counter()
        data = load_data(None if self.config.source == "default" else self.config.source, resolution,
                         quiet=True, seed=0, train_size=self.config.train_size, val_size=self.config.val_size,
                         max_resolution=self.max_resolution)
        return data, time.perf_counter() - t0

    def _train(self, trial: optuna.Trial, spec, seed: int, data, data_s: float) -> float:
        from .train import train

        def report(epoch: int, top1: float) -> None:
            with shielded():
                trial.report(top1, epoch)
                prune = self.config.prune and trial.should_prune()
            if prune:
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} at top-1 {top1:.4f}")

        result = train(spec, data, self.recipe, device=self.device, seed=seed, quiet=self.quiet,
                       on_epoch=report, data_seconds=data_s)
        self._write(trial, curve=tuple(h["top1"] for h in result.history),
                    loss_curve=tuple(h["loss"] for h in result.history),
                    images_per_second=result.images_per_second, peak_memory_mb=result.peak_memory_mb,
                    wall_s=result.times.get("total"), times=tuple((k, round(v, 3)) for k, v in result.times.items()),
                    device=result.device, top5=result.top5)
        if result.status != "ok":
            self._write(trial, reason=f"{result.status}: {result.reason}")
            raise TrialFailed(f"{result.status}: {result.reason}")
        if self.plan is not None:  # family and sweep members: how fast they run, beside how well
            from .speed import inference_speed
            from .train import resolve_device

            dev = resolve_device(self.device)
            speed = inference_speed(spec.replace(resolution=data.resolution), dev,
                                    batch=256 if dev.type == "cuda" else 32)
            with shielded():
                self._write(trial, **speed)
        return result.top1
