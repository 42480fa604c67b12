"""What a trial recorded: one frozen :class:`TrialRecord`, written to and read from a trial's flat user attributes.

A trial stores its record as Optuna user attributes under flat names (``alpha``, ``triples``,
``flops``, ``curve``, ...), so that optuna-dashboard and studies written by earlier code read
them as they are. :meth:`TrialRecord.to_attrs` gives exactly those names and values, and
:meth:`TrialRecord.from_trial` reads them back (a name an older trial lacks becomes None).
The search writes through the record; the results tables and the report read records.

The attributes come in groups, each written at one point of a trial (what a trial that failed
early lacks is a whole group):

- the member, before anything can fail: a grid network's ``alpha beta gamma triples product d w r``,
  a plan member's ``phi multiplier dimension alpha beta gamma d w r [matched_phi] label series kind
  triples product``; then ``resolution repeats channels seed worker code_version`` and, from
  2026-12-01 on, ``code_modified`` (the checkout had uncommitted changes) and ``software``
  (Python, torch, CUDA and cuDNN versions of the machine that trained); since bases are a
  choice, ``base`` (efficientnet-b0, resnet50, mobilenetv2 or module:function; a trial without
  it is efficientnet-b0's);
- the complexity, once the data are loaded: ``network params flops activations flops_ratio classes``,
  and since bases are a choice ``spec`` (the network as trained, its spec's dict);
- a study whose objective is not accuracy alone: ``top1 objective objective_target`` (the
  trial's value is the objective, top-1 x (X / T)^w);
- the training: ``curve loss_curve images_per_second peak_memory_mb wall_s times device top5``;
  from 2026-12-02 also ``depthwise``, what ran its depthwise convolutions (``triton``:
  :mod:`scaling.depthwise`, or ``torch``; without it, torch's), and on a worker's first trial
  ``worker_start_s``, the worker's seconds from its start to that trial (imports, the storage,
  CUDA's context, torch's compiler front end, the depthwise kernels), which no trial's ``times`` hold;
- the inference speed of a search ranked by latency, and of a plan member on the CPU:
  ``latency_ms throughput inference_batch`` (until 2026-12-02 also of every member and trial
  on a GPU; since then a network trained on a GPU is measured after the workers end, alone on
  the GPU, and its speed is the study's ``speed:NETWORK`` attribute, which :func:`study_records`
  gives the trial: :mod:`scaling.speed_pass`);
- alone: ``reason`` (why it failed), ``skipped`` (no network to train), ``duplicate_of``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .compound import Triple, constraint
from .members import Member
from .spec import NetworkSpec

PLAN_KINDS = ("family", "official", "sweep")

GRID_ATTRS = ("alpha", "beta", "gamma", "triples", "product", "d", "w", "r")
PLAN_ATTRS = ("phi", "multiplier", "dimension", "alpha", "beta", "gamma", "d", "w", "r", "label", "series", "kind",
              "triples", "product")
NETWORK_ATTRS = ("resolution", "repeats", "channels", "seed", "worker", "code_version", "code_modified", "software",
                 "base", "spec")
COMPLEXITY_ATTRS = ("network", "params", "flops", "activations", "flops_ratio", "classes")
TRAINING_ATTRS = ("curve", "loss_curve", "images_per_second", "peak_memory_mb", "wall_s", "times", "device", "top5")
SPEED_ATTRS = ("latency_ms", "throughput", "inference_batch")
OBJECTIVE_ATTRS = ("top1", "objective", "objective_target")
ALONE_ATTRS = ("reason", "skipped", "duplicate_of", "depthwise", "worker_start_s")  # written only where known
QUEUE_PARAMS = ("member", "candidate", "phi", "multiplier")  # the one form's name first, then the older ones'


@dataclass(frozen=True)
class TrialRecord:
    """One trial: the network it trained, how it went, and where.

    ``triples``: a grid network's triples that round to it, its representative first (the
    ``triples`` attribute is their display string, ``label``); a family member's triple; none
    for the official networks and sweeps. ``num_classes`` is the classifier's classes as
    trained (the data's, from the recorded ``classes``; for a trial that recorded none, what
    :meth:`from_trial` was given). ``top1`` is the trial's value, or where the study's objective
    is not accuracy alone, the recorded ``top1`` beside the ``objective`` that is the value.
    ``base`` is None for a trial written before bases were a choice: :attr:`base_network`
    then says efficientnet-b0.
    """

    # The trial, as Optuna holds it
    number: int | None = None
    status: str | None = None  # COMPLETE, FAIL, PRUNED, RUNNING or WAITING
    top1: float | None = None
    key: float | None = None  # the member's queue key: a grid candidate's index, a plan member's phi or multiplier
    started: object = None  # datetime
    finished: object = None  # datetime
    # The member
    kind: str | None = None  # grid, family, official or sweep
    series: str | None = None  # grid trials record none: "grid"
    label: str | None = None  # a grid network's triples as displayed: "(1.2, 1.1, 1.15) (1.25, 1.1, 1.15)"
    triples: tuple[Triple, ...] = ()
    d: float | None = None
    w: float | None = None
    r: float | None = None
    phi: float | None = None
    multiplier: float | None = None
    dimension: str | None = None
    matched_phi: float | None = None
    seed: int | None = None
    # The network as trained
    resolution: int | None = None
    repeats: str | None = None  # per stage: "1-2-2-3-3-4-1"
    channels: str | None = None  # per stage: "16-24-40-80-112-192-320"
    network: str | None = None  # the spec's architecture_key()
    base: str | None = None  # efficientnet-b0, resnet50, mobilenetv2 or module:function (None: before bases)
    spec: dict | None = None  # the network as trained: its spec's to_dict() (None: before bases)
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    params: int | None = None
    flops: int | None = None
    activations: int | None = None
    flops_ratio: float | None = None
    # Metrics
    top5: float | None = None
    curve: tuple[float | None, ...] | None = None  # held-out top-1 per epoch (None where not evaluated)
    loss_curve: tuple[float, ...] | None = None
    # Speed and where it ran
    images_per_second: float | None = None
    peak_memory_mb: float | None = None
    latency_ms: float | None = None
    throughput: float | None = None
    inference_batch: int | None = None
    speed_alone: bool | None = None  # True: by the study's speed pass, alone on the device; False: in the trial
    device: str | None = None
    worker: str | None = None
    code_version: str | None = None
    code_modified: bool | None = None  # the checkout that trained it had uncommitted changes (None: not known)
    software: tuple[tuple[str, str], ...] | None = None  # python, torch, cuda, cudnn of the machine that trained it
    wall_s: float | None = None
    times: tuple[tuple[str, float], ...] | None = None  # seconds per phase: data, setup, warmup, train, eval, other, total
    depthwise: str | None = None  # what ran the depthwise convolutions: "triton" or "torch" (None: torch's, before 2026-12-02)
    worker_start_s: float | None = None  # a worker's first trial: the worker's seconds from its start to the trial
    # The objective, where the study's is not accuracy alone
    objective: float | None = None  # top1 x (X / objective_target)^w: the trial's value
    objective_target: float | None = None  # T, as used
    # How it ended
    reason: str | None = None
    skipped: bool | None = None
    duplicate_of: int | None = None

    # ------------------------------------------------------------------ derived

    @property
    def triple(self) -> Triple | None:
        """The representative triple (a grid network's first, a family's own); None for the others."""
        return self.triples[0] if self.triples else None

    @property
    def alpha(self) -> float | None:
        return self.triple.alpha if self.triple else None

    @property
    def beta(self) -> float | None:
        return self.triple.beta if self.triple else None

    @property
    def gamma(self) -> float | None:
        return self.triple.gamma if self.triple else None

    @property
    def product(self) -> float | None:
        """A grid network's alpha * beta^2 * gamma^2 to 4 decimals (plan members record none)."""
        t = self.triple
        return round(constraint(t.alpha, t.beta, t.gamma), 4) if self.kind == "grid" and t else None

    @property
    def triples_text(self) -> str:
        """The ``triples`` attribute: a grid network's triples as displayed, else empty."""
        return (self.label or "") if self.kind == "grid" else ""

    @property
    def base_network(self) -> str:
        """The base it scaled; efficientnet-b0 for a trial that recorded none (written before bases were a choice)."""
        from .bases import DEFAULT

        return self.base or DEFAULT

    def network_spec(self):
        """The spec it trained (:func:`scaling.bases.spec_from_dict`); None where it recorded none."""
        from .bases import spec_from_dict

        return spec_from_dict(self.spec) if self.spec is not None else None

    @property
    def trained(self) -> bool:
        """Whether it trained a network of its own (not skipped, not a duplicate, its network recorded)."""
        return not self.skipped and self.duplicate_of is None and self.network is not None

    def replace(self, **changes) -> TrialRecord:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ writing

    @classmethod
    def for_member(cls, m: Member, spec: NetworkSpec, seed: int, worker: str, code_version: str,
                   code_modified: bool | None = None, software: dict | None = None) -> TrialRecord:
        """What a trial of member ``m`` (its network ``spec``) records before it trains."""
        from .bases import base_name, structure

        shape = structure(spec)
        return cls(kind=m.kind, series=m.series, label=m.label, triples=m.triples if m.kind in ("grid", "family")
                   else (), d=m.d, w=m.w, r=m.r, phi=_number(m.phi), multiplier=_number(m.multiplier),
                   dimension=m.dimension or None, matched_phi=m.matched_phi, seed=seed, resolution=spec.resolution,
                   repeats=shape.repeats_text if shape else None, channels=shape.channels_text if shape else None,
                   base=base_name(spec), worker=worker, code_version=code_version, code_modified=code_modified,
                   software=tuple(software.items()) if software else None, key=_number(m.key))

    def to_attrs(self) -> dict:
        """The trial's flat user attributes, as today's and earlier code wrote them: each group
        (see the module's docstring) that the record holds, a quantity that does not apply as None."""
        groups = [(self.kind == "grid", GRID_ATTRS), (self.kind in PLAN_KINDS, PLAN_ATTRS),
                  (self.network is not None, COMPLEXITY_ATTRS), (self.curve is not None, TRAINING_ATTRS),
                  (self.inference_batch is not None, SPEED_ATTRS), (self.objective is not None, OBJECTIVE_ATTRS)]
        out = {k: self._attr(k) for held, names in groups if held for k in names}
        if self.kind in PLAN_KINDS and self.matched_phi is not None:
            out["matched_phi"] = self.matched_phi
        out.update({k: self._attr(k) for k in NETWORK_ATTRS + ALONE_ATTRS if getattr(self, k) is not None})
        return out

    def _attr(self, name: str):
        """One attribute's stored value: tuples as the lists (``times`` as the dict) Optuna stores."""
        v = self.triples_text if name == "triples" else getattr(self, name)
        if isinstance(v, tuple):
            return dict(v) if name in ("times", "software") else list(v)
        return v

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_trial(cls, trial, num_classes: int | None = None) -> TrialRecord:
        """The record of an Optuna trial (frozen or running), from its user attributes.

        Args:
            trial: an ``optuna.trial.FrozenTrial`` (or anything with ``user_attrs``, ``params``,
                ``system_attrs``, ``number``, ``state``, ``value``).
            num_classes: the classes of a trial that recorded none (it failed before its data
                were loaded): the study's ``num_classes`` attribute or its spec's. Never guessed.
        """
        a = trial.user_attrs
        kind = a.get("kind") or ("grid" if a.get("triples") else None)
        if kind == "grid":
            triples = _decode_triples(a["triples"], a.get("alpha"), a.get("beta"), a.get("gamma"))
        elif kind == "family" and a.get("alpha") is not None:
            triples = (Triple(a["alpha"], a["beta"], a["gamma"]),)
        else:
            triples = ()
        params = getattr(trial, "system_attrs", {}).get("fixed_params") or getattr(trial, "params", {})
        key = next((params[p] for p in QUEUE_PARAMS if p in params), None)
        classes = tuple(a["classes"]) if a.get("classes") is not None else None
        state = getattr(trial, "state", None)
        status = state.name if state is not None else None
        top1 = getattr(trial, "value", None) if status == "COMPLETE" else None
        if a.get("objective") is not None:  # the value is the objective: top-1 is recorded beside it
            top1 = a.get("top1") if status == "COMPLETE" else None
        return cls(
            number=getattr(trial, "number", None), status=status,
            top1=top1, key=key,
            started=getattr(trial, "datetime_start", None), finished=getattr(trial, "datetime_complete", None),
            kind=kind, series=a.get("series") or ("grid" if kind == "grid" else None),
            label=a.get("label") if kind != "grid" else a.get("triples"), triples=triples,
            d=a.get("d"), w=a.get("w"), r=a.get("r"), phi=a.get("phi"), multiplier=a.get("multiplier"),
            dimension=a.get("dimension"), matched_phi=a.get("matched_phi"), seed=a.get("seed"),
            resolution=a.get("resolution"), repeats=a.get("repeats"), channels=a.get("channels"),
            network=a.get("network"), base=a.get("base"), spec=a.get("spec"), num_classes=len(classes) if classes is not None else num_classes,
            classes=classes, params=a.get("params"), flops=a.get("flops"), activations=a.get("activations"),
            flops_ratio=a.get("flops_ratio"), top5=a.get("top5"), curve=_tuple(a.get("curve")),
            loss_curve=_tuple(a.get("loss_curve")), images_per_second=a.get("images_per_second"),
            peak_memory_mb=a.get("peak_memory_mb"), latency_ms=a.get("latency_ms"), throughput=a.get("throughput"),
            inference_batch=a.get("inference_batch"), speed_alone=False if a.get("latency_ms") is not None else None,
            device=a.get("device"), worker=a.get("worker"),
            code_version=a.get("code_version"), code_modified=a.get("code_modified"),
            software=tuple(a["software"].items()) if isinstance(a.get("software"), dict) else None,
            wall_s=a.get("wall_s"),
            times=tuple(a["times"].items()) if isinstance(a.get("times"), dict) else None,
            objective=a.get("objective"), objective_target=a.get("objective_target"),
            reason=a.get("reason"), skipped=a.get("skipped"), duplicate_of=a.get("duplicate_of"),
            depthwise=a.get("depthwise"), worker_start_s=a.get("worker_start_s"))


def study_records(study, num_classes: int | None = None) -> list[TrialRecord]:
    """The records of every trial of ``study``, in trial order; ``num_classes`` for trials
    that recorded no classes (default: the study's ``num_classes`` attribute, where it has one)."""
    return trial_records(study.get_trials(deepcopy=False), study.user_attrs, num_classes)


def trial_records(trials, attrs: dict, num_classes: int | None = None) -> list[TrialRecord]:
    """:func:`study_records` of a study's trials and user attributes, read already: each trial's
    record, with its network's speed from the study's speed pass where the trial measured none."""
    from .speed_pass import speeds_of

    if num_classes is None:
        num_classes = attrs.get("num_classes")
    speeds = speeds_of(attrs)
    records = [TrialRecord.from_trial(t, num_classes) for t in trials]
    return [_with_speed(r, speeds[r.network]) if r.latency_ms is None and r.network in speeds else r
            for r in records]


def _with_speed(record: TrialRecord, speed: dict) -> TrialRecord:
    """``record`` with its network's speed as the study's speed pass measured it."""
    return record.replace(speed_alone=True, **{k: speed.get(k) for k in SPEED_ATTRS})


def write(trial, record: TrialRecord, before: TrialRecord | None = None) -> None:
    """Set on ``trial`` the attributes of ``record`` that differ from those of ``before`` (all without one)."""
    old = before.to_attrs() if before is not None else {}
    for k, v in record.to_attrs().items():
        if k not in old or old[k] != v:
            trial.set_user_attr(k, v)


_TRIPLE = re.compile(r"\(\s*([^,()]+),\s*([^,()]+),\s*([^,()]+)\)")


def _decode_triples(text: str, alpha=None, beta=None, gamma=None) -> tuple[Triple, ...]:
    """A grid trial's ``triples`` attribute, "(1.2, 1.1, 1.15) (1.25, 1.1, 1.15)", as Triples.

    It is written as ``str(Triple)`` (``:g``, 6 significant digits), which holds a grid's
    coefficients exactly; the representative triple is taken from the ``alpha``, ``beta``,
    ``gamma`` attributes where the trial has them (they are the exact floats)."""
    found = [Triple(float(a), float(b), float(g)) for a, b, g in _TRIPLE.findall(text)]
    if found and alpha is not None and beta is not None and gamma is not None:
        found[0] = Triple(alpha, beta, gamma)
    return tuple(found)


def _number(v) -> float | None:
    """NaN (a member's "does not apply") as None, as the trial stores it."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _tuple(v):
    return tuple(v) if v is not None else None
