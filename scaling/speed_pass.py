"""The study's speed pass: each trained network's inference speed, measured once it has
trained, alone on a GPU, after the workers have ended.

Measuring inside a trial cost the trial its time (new batch shapes mean new cuDNN plans)
and measured a GPU that other workers shared (under MPS, four at a time): latencies that
fit nothing. So on GPUs a trial records what it trained and how fast it trained; the pool
(:func:`scaling.pool.run_pool`) then measures every network that has no speed yet, one at
a time, with nothing else on the GPU, and writes it to the study as ``speed:NETWORK``
(the network's key; one attribute each, so that two machines never overwrite each other).
:func:`scaling.records.study_records` gives a trial its network's speed from there.

Most of a measurement's time is not its timed runs but its first forward pass at each batch
size, where cuDNN builds an execution plan on the host for every new layer shape (0.3-1 s a
depthwise shape on an H200): 84.6 s for the 23 networks of the GPU study's grid, done after
training, with the GPU idle. Where several workers share a GPU, the pool therefore starts
the pass as one more process beside them (``python -m scaling.speed_pass``, :func:`main`):
while they train it makes ready the networks the study will train (:func:`expected`,
:func:`prepare_study`): each one's eager passes run (the plans) and its graphs captured
(:class:`scaling.speed.Timing`), kept while the process holds less than a tenth of the GPU's
memory (:func:`hold_budget`; past it, only the plans). When the pool tells it that the
workers and their MPS daemon have ended, it times what is left unmeasured, alone on the GPU.
It is no client of the daemon. (Measured on that grid, 2026-12-02: 57.4 s after training
timing eager passes; 12.9 s timing graphs built after training, as the daemon's only
client; 5.7 s timing graphs kept ready: docs/BENCHMARKS.md.)

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


def measure_study(study: optuna.Study, device, say: Callable[[str], None] | None = None,
                  held: dict | None = None) -> int:
    """Measure on ``device`` (a GPU of this process; the CPU too, where it is what trained) the
    inference speed of every network of ``study`` trained on a device of the same model that
    has none yet; how many it measured. Each is written as soon as it is measured: an
    interrupted pass keeps what it did, and the next run measures the rest. ``held``: network
    key -> :class:`scaling.speed.Timing` made ready ahead (:func:`prepare_study`), timed as it
    is; every one is closed here, measured or not."""
    import time

    import torch

    from .bases import spec_from_dict
    from .speed import default_batch, inference_speed

    held = {} if held is None else held
    try:
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
            timing = held.pop(key, None)
            if timing is not None:
                with timing:
                    speed = timing.time()
            else:
                speed = inference_speed(spec_from_dict(spec), dev, batch=default_batch(dev))
            study.set_user_attr(PREFIX + key, {**speed, "device": where})
            if say is not None and i < len(todo) and time.perf_counter() - last >= PROGRESS_S:
                last = time.perf_counter()
                say(f"  {i}/{len(todo)} measured, {last - t0:.0f} s")
        if say is not None:
            say(f"inference speed measured: {len(todo)} in {time.perf_counter() - t0:.1f} s")
        return len(todo)
    finally:
        for timing in held.values():  # made ready for a network that did not complete
            timing.close()
        held.clear()


def expected(study: optuna.Study, config, model: str) -> list[tuple[str, object]]:
    """(network key, spec) of each network the pass will measure, as far as it is known now,
    each once: the trained ones without a speed (:func:`unmeasured`), then the queued and
    running members of a queued study (grid, family, sweep; a sampler's networks are not
    known ahead). A network some trial measured itself, or the pass already, is left out."""
    from .bases import spec_from_dict
    from .search import queue_param, queued, study_members

    out = [(key, spec_from_dict(spec)) for key, spec in unmeasured(study, model)]
    if not queued(config):
        return out
    members = study_members(config, study.user_attrs.get("num_classes"))
    by_key = {m.key: m for m in members}
    done = set(study_speeds(study)) | {k for k, _ in out}
    done |= {t.user_attrs.get("network") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    param = queue_param(study, config)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        m = by_key.get((t.system_attrs.get("fixed_params") or t.params).get(param))
        if m is None:
            continue
        key = m.spec.architecture_key()
        if key not in done:
            done.add(key)
            out.append((key, m.spec))
    return out


def prepare_study(study: optuna.Study, config, device, stop: Callable[[], bool], held: dict | None = None) -> int:
    """Make ready on ``device`` every network of :func:`expected`, in order, until ``stop()``
    says the workers have ended (asked between networks); how many it made ready. With
    ``held`` (a dict), each is kept there (key -> :class:`scaling.speed.Timing`: its forward
    passes captured, only the timed runs left) while this process holds less than
    :func:`hold_budget`; past it, and without ``held``, only cuDNN's plans are made
    (:func:`scaling.speed.prepare`). A network that cannot be made ready (out of memory, say)
    is passed over: its measurement builds what it needs."""
    import torch

    from .speed import default_batch, prepare, ready

    dev = torch.device(device)
    model = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    budget = hold_budget(dev) if held is not None else 0
    done = 0
    for key, spec in expected(study, config, model):
        if stop():
            break
        try:
            if held is not None and key not in held and held_bytes(dev) < budget:
                held[key] = ready(spec, dev, batch=default_batch(dev))
            else:
                prepare(spec, dev, batch=default_batch(dev))
        except (RuntimeError, ValueError):  # torch.OutOfMemoryError is a RuntimeError
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            continue
        done += 1
    return done


HOLD_SHARE, HOLD_MAX = 0.10, 16 * 2**30  # networks kept ready: at most this share of a GPU's memory, and bytes


def hold_budget(device) -> int:
    """The bytes of a GPU's memory the pass beside the workers may hold in networks kept ready
    (the workers train in the rest): a tenth of the GPU, at most 16 GiB; none on the CPU."""
    import torch

    if device.type != "cuda":
        return 0
    return int(min(HOLD_SHARE * torch.cuda.get_device_properties(device).total_memory, HOLD_MAX))


def held_bytes(device) -> int:
    """The bytes this process holds on ``device`` (its allocator's reservation; 0 on the CPU)."""
    import torch

    return torch.cuda.memory_reserved(device) if device.type == "cuda" else 0


LOG = "speed-pass.log"  # the pass's errors, in the study's folder, where it runs beside the workers
GO = "measure"  # the line the pool writes to the pass's standard input when the workers have ended


def main(argv: list[str] | None = None) -> int:
    """``python -m scaling.speed_pass NAME URL DEVICE``: prepare while the workers train, then,
    on the line :data:`GO` on standard input, measure and say it on standard output, a line at
    a time. Standard input closed without :data:`GO` (the pool was interrupted or failed):
    exit without measuring. Exit code 0, or 130 on Ctrl+C."""
    import sys

    from .storage import open_storage
    from .study import StudyConfig

    name, url, device = argv if argv is not None else sys.argv[1:]
    told: list[str] = []

    def stop() -> bool:  # a line (or the end) on standard input: the workers have ended
        return bool(told) or _readable(sys.stdin, told)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url, create=False))
        config = StudyConfig.from_json(study.user_attrs["definition"])
        held: dict = {}
        prepare_study(study, config, device, stop, held)
        while not told:
            _readable(sys.stdin, told, timeout=None)
        if told[0] != GO:
            return 0
        measure_study(study, device, say=say, held=held)
    except KeyboardInterrupt:
        return 130
    return 0


def _readable(stream, told: list[str], timeout: float | None = 0.0) -> bool:
    """Whether ``stream`` has a line (or its end) within ``timeout`` seconds (None: wait); the
    line read ("" at the end) is appended to ``told``."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    if ready:
        told.append(stream.readline().strip())
    return bool(ready)


if __name__ == "__main__":
    import os
    import sys

    code = main()
    # What it measured is in the storage and said; Python's own teardown (the held networks and
    # graphs freed one by one) would keep the search, which waits for this process, from its end.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
