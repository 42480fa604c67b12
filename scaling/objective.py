"""What one trial does: the :class:`Objective` takes the trial's network (its queued member
and seed, or the sampler's triple held to its FLOPs budget), loads the data, trains it
(where no earlier trial trained the same network and seed) and returns its held-out top-1,
recording on the trial all the while what it trained, on what code and software, and why
it failed.

Where the study's objective is not accuracy alone (:func:`objective_value`), the trial's
value is the paper's NAS objective ACC x (X / T)^w, X the network's FLOPs or its latency on
this device (ms, batch 1), T the target, w the exponent (-0.07); top-1 is recorded as it is,
beside the objective and the T used.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .compound import Triple, hold_to_budget, round_resolution, scaled_spec
from .complexity import count
from .faults import no_space
from .members import grid_member
from .plans import MULTIPLIER_RANGE, PHI_RANGE, member
from .records import TrialRecord, write
from .search import (MEMBER, base_spec, largest_resolution, legacy_param, plan_of, queued, study_classes,
                     study_members)
from .signals import interruptible, shielded
from .storage import fixed_params
from .study import StudyConfig


def shape_key(spec) -> str:
    """What decides a network's layer shapes at one batch size: its spec at depth 1. Depth
    repeats blocks of the shapes each stage already has, so networks that differ only in
    depth build (almost) the same cuDNN plans."""
    import dataclasses
    import json

    if dataclasses.is_dataclass(spec):
        names = {f.name for f in dataclasses.fields(spec)}
        spec = dataclasses.replace(spec, **{k: v for k, v in (("depth", 1.0), ("name", "")) if k in names})
    return json.dumps(spec.to_dict(), sort_keys=True, default=str)


def objective_value(top1: float, x: float, target: float, exponent: float) -> float:
    """The paper's objective, ACC x (X / T)^w (Tan & Le 2019, after MnasNet)."""
    return top1 * (x / target) ** exponent


class TrialFailed(Exception):
    """Training ended without a metric (NaN, out of memory): the trial is FAIL with its reason."""


def code_version() -> str:
    from . import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def code_modified(package: Path = Path(__file__).parent) -> bool | None:
    """Whether the code that runs differs from the commit it names: uncommitted changes to the
    package's files (new ones included) or to pyproject.toml. Other files of the checkout (a
    study's storage under studies/, docs, reports) are data, not code. None: not a git checkout,
    or git is missing."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(top)pyproject.toml"],
                              capture_output=True, text=True, timeout=5, cwd=package)
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
        self.built: set[str] = set()  # shape_key of every network this worker trained: its cuDNN plans exist
        self.worker_start_s: float | None = None  # the worker's start, written on its next trial (its first)

    def queued_rank(self, fixed: dict) -> int:
        """0 for a queued network whose layer shapes this worker has built already (its first
        steps then take no new cuDNN plans), 1 for any other: the worker takes the first queued
        network of the lowest rank (scaling.storage.prefer_queued)."""
        name = MEMBER if MEMBER in fixed else legacy_param(self.config)
        m = self.members.get(fixed.get(name)) if name in fixed else None
        return 0 if m is not None and shape_key(m.spec) in self.built else 1

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
                                                        self.software).replace(worker_start_s=self.worker_start_s))
        self.worker_start_s = None
        with interruptible():
            data, data_s = self._data(spec.resolution)
        spec = spec.replace(num_classes=data.num_classes)  # counted as trained: the data's classifier
        n = count(spec)
        base_flops = count(base_spec(self.config).replace(num_classes=data.num_classes)).flops
        key = spec.architecture_key()
        self._write(trial, network=key, params=n.params, flops=n.flops, activations=n.activations,
                    flops_ratio=round(n.flops / base_flops, 4), classes=tuple(data.classes),
                    num_classes=data.num_classes, spec=spec.to_dict())
        done = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("network") == key and t.user_attrs.get("seed") == seed]
        if done:  # the same network was trained already (TPE, random): reuse, never retrain
            was = {k: done[0].user_attrs[k] for k in ("top1", "objective", "objective_target")
                   if k in done[0].user_attrs}
            self._write(trial, duplicate_of=done[0].number, **was)
            return done[0].value
        self.base_flops = base_flops
        self.built.add(shape_key(spec.replace(num_classes=self.num_classes)))
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
                    device=result.device, top5=result.top5, depthwise=result.depthwise or None)
        if result.status != "ok":
            self._write(trial, reason=f"{result.status}: {result.reason}")
            raise TrialFailed(f"{result.status}: {result.reason}")
        objective = self.config.objective
        from .train import resolve_device

        dev = resolve_device(self.device)
        # How fast they run, beside how well. Here only where the value needs it or on the CPU for a
        # plan's members; on a GPU every other network is measured after the workers end, alone on
        # the GPU (scaling.speed_pass): here it would cost the trial new cuDNN plans and measure a
        # GPU that other workers share.
        if objective == "accuracy-latency" or (self.plan is not None and dev.type != "cuda"):
            from .speed import inference_speed

            speed = inference_speed(spec.replace(resolution=data.resolution), dev,
                                    batch=256 if dev.type == "cuda" else 32)
            with shielded():
                self._write(trial, **speed)
        if objective == "accuracy":
            return result.top1
        c = self.config
        x = self.record.flops if objective == "accuracy-flops" else self.record.latency_ms
        target = c.objective_target if c.objective_target is not None else self.base_flops  # T: the base's FLOPs
        value = objective_value(result.top1, x, target, c.objective_exponent)
        with shielded():
            self._write(trial, top1=result.top1, objective=value, objective_target=target)
        return value
