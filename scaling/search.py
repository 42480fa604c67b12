"""The study a search runs: the networks it trains (a grid's candidates, held to their FLOPs
and in an order that spreads the budget, or those ``--only`` chooses; a plan's members for
a family, the official networks or a sweep), and the Optuna study that queues each network
and seed once as a WAITING trial of one form, ``{"member": key, "seed": s}``
(:func:`queue_param`), for the workers (:mod:`scaling.worker`) to pop from the shared
storage (:mod:`scaling.storage`); scheduling is Optuna's own. A network whose trials all
failed is queued again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from .compound import PAPER, Candidate, GridTooLarge, Triple, candidates, round_resolution
from .faults import told
from .members import Member, candidate_member
from .plans import Plan, member
from .selection import Selection
from .storage import creation_lock, open_storage, trial_key
from .study import StudyConfig, StudyError

DEFAULT_TRIALS = 20  # tpe and random, without --trials


def largest_resolution(config: StudyConfig) -> int:
    """The largest image size a study's trials ask for, so that one data cache (one cap on
    the stored size) serves every trial: its plan's largest member, or the grid's top gamma."""
    if config.plan is not None:
        return max(m.spec.resolution for m in study_members(config))
    return round_resolution(config.base_resolution * config.gamma[1] ** config.phi, config.multiple)


def base_spec(config: StudyConfig):
    """The study's base network: its base (:mod:`scaling.bases`) at the study's width, depth
    and resolution, with ImageNet's classes (callers replace them by the data's).

    Raises:
        StudyError: a user's base that does not import or has the wrong signature.
    """
    from .bases import BaseError, get_base

    try:
        base = get_base(config.base)
        return base.spec(width=config.base_width, depth=config.base_depth, resolution=config.base_resolution)
    except (BaseError, ValueError) as e:
        raise StudyError(f"study {config.name!r}: {e}") from None


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
    key = (config.phi, config.grid(), base, config.multiple, config.flops_tolerance)
    if key not in _CANDIDATES:
        try:
            _CANDIDATES[key] = tuple(candidates(config.phi, config.grid(), base, config.multiple,
                                                flops_tolerance=config.flops_tolerance))
        except GridTooLarge as e:
            raise StudyError(f"study {config.name!r}: {e}") from None
    return list(_CANDIDATES[key])


# A grid's candidates by everything they depend on: a search asks for them in its estimate, its
# creation, its objective and its summary, and a process works them out once (0.2-0.3 s each).
_CANDIDATES: dict[tuple, tuple[Candidate, ...]] = {}


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
        study.set_metric_names(["top1" if config.objective == "accuracy" else config.objective])
    plan = plan_of(config)
    param = queue_param(study, config)
    if plan is not None:
        have = _queued_pairs(study, param)
        for seed in range(config.seeds):
            for key in plan.keys:
                if (key, seed) not in have:
                    study.enqueue_trial({param: key, "seed": seed})
        # the progress bar's total: this plan's members and any an earlier plan of the study trained
        study.set_user_attr("enqueued", len(have | {(k, seed) for seed in range(config.seeds) for k in plan.keys}))
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
