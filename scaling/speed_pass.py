"""The study's speed pass: each trained network's inference speed, measured once it has
trained, alone on a GPU, after the workers have ended.

Measuring inside a trial cost the trial its time (new batch shapes mean new cuDNN plans)
and measured a GPU that other workers shared (under MPS, four at a time): latencies that
fit nothing. So on GPUs a trial records what it trained and how fast it trained; the pool
(:func:`scaling.pool.run_pool`) then measures every network that has no speed yet, one at
a time, with nothing else on the GPU, and writes it to the study as ``speed:NETWORK``
(the network's key; one attribute each, so that two machines never overwrite each other).
:func:`scaling.records.study_records` gives a trial its network's speed from there.

A trial whose value needs its latency (``--objective accuracy-latency``) still measures
inside the trial, as does every trial on the CPU where it measures at all.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

PREFIX = "speed:"
PROGRESS_S = 10.0  # a line of progress at most this often while the pass measures


def study_speeds(study: optuna.Study) -> dict[str, dict]:
    """The speeds the pass wrote: network key -> ``latency_ms throughput inference_batch device``."""
    return speeds_of(study.user_attrs)


def speeds_of(attrs: dict) -> dict[str, dict]:
    """:func:`study_speeds` from a study's user attributes, read already."""
    return {k[len(PREFIX):]: v for k, v in attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)}


def device_model(device: str | None) -> str | None:
    """The kind of device a recorded device string names: ``cuda:0 (NVIDIA H200)`` -> ``NVIDIA
    H200``, ``cpu`` -> ``cpu``; None where nothing usable is recorded (or several devices)."""
    if not device:
        return None
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda") and "(" in device:
        return device[device.index("(") + 1: device.rindex(")")]
    return None


def unmeasured(study: optuna.Study, model: str) -> list[tuple[str, dict]]:
    """(network key, spec dict) of each network trained on a device of ``model`` that has no
    speed yet, neither its trial's own nor the pass's, in trial order, each once."""
    have = set(study_speeds(study))
    out, seen = [], set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        key, spec = a.get("network"), a.get("spec")
        measured = a.get("latency_ms") is not None or key in have or key in seen
        if key is None or not isinstance(spec, dict) or measured or a.get("duplicate_of") is not None:
            continue
        if device_model(a.get("device")) != model:
            continue
        seen.add(key)
        out.append((key, spec))
    return out


def measure_study(study: optuna.Study, device, say: Callable[[str], None] | None = None) -> int:
    """Measure on ``device`` (a GPU of this process; the CPU too, where it is what trained) the
    inference speed of every network of ``study`` trained on a device of the same model that
    has none yet; how many it measured. Each is written as soon as it is measured: an
    interrupted pass keeps what it did, and the next run measures the rest."""
    import time

    import torch

    from .bases import spec_from_dict
    from .speed import default_batch, inference_speed

    dev = torch.device(device)
    model = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    todo = unmeasured(study, model)
    if not todo:
        return 0
    where = f"{dev} ({model})" if dev.type == "cuda" else "cpu"
    if say is not None:
        say(f"measuring inference speed alone on {where}: {len(todo)} network{'s' * (len(todo) != 1)}")
    t0 = last = time.perf_counter()
    for i, (key, spec) in enumerate(todo, 1):
        speed = inference_speed(spec_from_dict(spec), dev, batch=default_batch(dev))
        study.set_user_attr(PREFIX + key, {**speed, "device": where})
        if say is not None and i < len(todo) and time.perf_counter() - last >= PROGRESS_S:
            last = time.perf_counter()
            say(f"  {i}/{len(todo)} measured, {last - t0:.0f} s")
    if say is not None:
        say(f"inference speed measured: {len(todo)} in {time.perf_counter() - t0:.1f} s")
    return len(todo)
