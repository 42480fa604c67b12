"""The speed pass (scaling.speed_pass): networks trained on a GPU are measured after the workers
end, alone on the GPU, once each; the records read their network's speed from the study.

On the CPU the pass is run on trials recorded as trained on the CPU (no GPU here); the pool's
call is checked with the workers stood in for. No timing is asserted: measured fields exist and
are positive, and what is measured, skipped and written is exact.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from scaling import pool, speed_pass
from scaling.records import TrialRecord, study_records
from scaling.results import results_frame
from scaling.spec import custom_spec
from scaling.speed_pass import PREFIX, device_model, measure_study, study_speeds, unmeasured
from scaling.study import StudyConfig

H200 = "cuda:0 (NVIDIA H200)"


def _trial(study, spec, device: str, value: float = 0.5, **attrs) -> None:
    key = spec.architecture_key()
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=value, params={"phi": 1.0}, distributions={"phi": FloatDistribution(0, 4)},
        user_attrs={"network": key, "spec": spec.to_dict(), "device": device, "resolution": spec.resolution,
                    "flops": 1, **attrs}))


@pytest.fixture
def study():
    return optuna.create_study(direction="maximize")


def test_device_model_of_recorded_devices():
    assert device_model(H200) == "NVIDIA H200"
    assert device_model("cuda:3 (NVIDIA H100 80GB HBM3)") == "NVIDIA H100 80GB HBM3"
    assert device_model("cpu") == "cpu"
    assert device_model("4 x cuda (NVIDIA H200)") is None  # data-parallel: not one device
    assert device_model(None) is None and device_model("") is None


def test_only_unmeasured_networks_of_the_devices_model_each_once(study):
    a, b, c, d = (custom_spec(0.1, 0.1, r, num_classes=10) for r in (32, 40, 48, 56))
    _trial(study, a, H200)
    _trial(study, a, "cuda:1 (NVIDIA H200)")  # the same network, another seed: measured once
    _trial(study, b, H200, latency_ms=1.5, throughput=9.0, inference_batch=256)  # measured in its trial
    _trial(study, c, "cuda:0 (NVIDIA H100 80GB HBM3)")  # another kind of GPU: not this one's to measure
    _trial(study, d, H200, duplicate_of=0)  # reused another trial's result: trained nothing
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"network": "x", "spec": a.to_dict(),
                                                                    "device": H200}))
    todo = unmeasured(study, "NVIDIA H200")
    assert todo == [(a.architecture_key(), a.to_dict())]
    study.set_user_attr(PREFIX + a.architecture_key(), {"latency_ms": 2.0})
    assert unmeasured(study, "NVIDIA H200") == []
    assert [k for k, _ in unmeasured(study, "NVIDIA H100 80GB HBM3")] == [c.architecture_key()]


def test_the_pass_writes_each_networks_speed_and_the_records_read_it(study):
    a, b = custom_spec(0.1, 0.1, 32, num_classes=10), custom_spec(0.1, 0.2, 40, num_classes=10)
    _trial(study, a, "cpu", value=0.4, seed=0)
    _trial(study, a, "cpu", value=0.6, seed=1)
    _trial(study, b, "cpu", value=0.7, seed=0)
    lines = []
    assert measure_study(study, "cpu", say=lines.append) == 2
    assert lines[0] == "measuring inference speed alone on cpu: 2 networks"
    assert lines[1].startswith("inference speed measured: 2 in ")
    speeds = study_speeds(study)
    assert set(speeds) == {a.architecture_key(), b.architecture_key()}
    for s in speeds.values():
        assert s["latency_ms"] > 0 and s["throughput"] > 0 and s["inference_batch"] == 32 and s["device"] == "cpu"
    records = study_records(study)
    for r in records:
        assert (r.latency_ms, r.throughput, r.inference_batch) == tuple(speeds[r.network][k] for k in
                                                                       ("latency_ms", "throughput", "inference_batch"))
    # the trials themselves are as they were: the speed is the study's, given to the record when read
    assert all(TrialRecord.from_trial(t).latency_ms is None for t in study.get_trials())
    from scaling.report.load import _read  # the report reads its records the same way

    assert _read(study)[2] == records
    assert measure_study(study, "cpu") == 0  # everything measured: the next run has nothing to do


def test_a_long_pass_says_how_far_it_is(study, monkeypatch):
    for r in (32, 40, 48):
        _trial(study, custom_spec(0.1, 0.1, r, num_classes=10), "cpu")
    monkeypatch.setattr(speed_pass, "PROGRESS_S", 0.0)  # a line after every network but the last
    lines = []
    assert measure_study(study, "cpu", say=lines.append) == 3
    assert [line.split(",")[0] for line in lines[1:3]] == ["  1/3 measured", "  2/3 measured"]
    assert len(lines) == 4 and lines[3].startswith("inference speed measured: 3 in ")


def test_a_trials_own_speed_is_kept(study):
    a = custom_spec(0.1, 0.1, 32, num_classes=10)
    _trial(study, a, "cpu", latency_ms=1.25, throughput=100.0, inference_batch=32)
    study.set_user_attr(PREFIX + a.architecture_key(), {"latency_ms": 9.0, "throughput": 1.0, "inference_batch": 1})
    (r,) = study_records(study)
    assert (r.latency_ms, r.throughput, r.inference_batch) == (1.25, 100.0, 32)


def test_results_table_has_the_pass_speeds(study):
    a = custom_spec(0.1, 0.1, 32, num_classes=10)
    _trial(study, a, "cpu", seed=0, alpha=1.0, beta=1.0, gamma=1.0, triples="(1, 1, 1)", kind="grid")
    measure_study(study, "cpu")
    df = results_frame(study)
    assert len(df) == 1 and df["latency_ms"].iloc[0] == study_speeds(study)[a.architecture_key()]["latency_ms"]


@pytest.mark.parametrize("code, measured", [(0, True), (1, True), (2, False)])
def test_the_pool_measures_after_the_workers_end_on_its_first_gpu(tmp_path, monkeypatch, code, measured):
    calls = []
    monkeypatch.setattr(pool, "_run_workers", lambda config, url, workers, quiet=False, err=None, started=None: code)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr(speed_pass, "measure_study", lambda study, device, say=None: calls.append((study, device)))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="k", storage=url)
    assert pool.run_pool(StudyConfig(name="k"), url, None, [1, 2], 1, True) == code
    if measured:
        ((study, device),) = calls
        assert study.study_name == "k" and device == "cuda:1"  # GPU 1 of this process's view: the first used
    else:  # 2: the storage cannot be used; the workers said so, and nothing more is written
        assert calls == []


def test_no_gpu_to_measure_on_means_no_pass(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pool, "_run_workers", lambda config, url, workers, quiet=False, err=None, started=None: 0)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(speed_pass, "measure_study", lambda *a, **k: calls.append(a))
    assert pool.run_pool(StudyConfig(name="k"), f"sqlite:///{tmp_path / 'optuna.db'}", None, [0], 1, True) == 0
    assert calls == []


def test_the_report_says_how_the_latencies_were_measured():
    import pandas as pd

    from scaling.report.sections import how_measured

    assert how_measured(pd.Series([True, True])) == "after the workers ended, one network at a time alone on the device"
    trial = how_measured(pd.Series([False, False]))
    assert trial.startswith("right after each one's training, while the study's other workers")
    assert how_measured(pd.Series([True, False, False])) == (
        f"for 1 of 3 after the workers ended, alone on the device, for the others {trial}")
