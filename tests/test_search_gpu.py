"""A search on the GPU, end to end: two workers sharing it (MPS where the machine has it), then
the speed pass, alone on the GPU (scaling.speed_pass). Run on the GPU machine."""

import shutil
import subprocess

import optuna
import pytest
import torch
from typer.testing import CliRunner

from scaling.cli import app
from scaling.records import study_records
from scaling.speed_pass import study_speeds

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine"),
]

TOML = """
name = "gpu-pass"
[data]
source = "default"
base_resolution = 32
train_size = 512
val_size = 256
[grid]
phi = 1
alpha = [1.0, 1.2]
beta = [1.0, 1.2]
gamma = [1.0, 1.2]
step = 0.1
tolerance = 0.2
multiple = 4
flops_tolerance = 0.5
[search]
sampler = "grid"
trials = 3
per_gpu = 2
[recipe]
name = "proxy"
epochs = 1
batch_size = 128
"""


def test_search_on_the_gpu_measures_each_network_alone_after_training(tmp_path, monkeypatch, data_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpu.toml").write_text(TOML)
    r = CliRunner().invoke(app, ["search", "--study", "gpu.toml", "--gpus", "0", "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "measuring inference speed alone on cuda:0" in r.output
    study = optuna.load_study(study_name="gpu-pass", storage=f"sqlite:///{tmp_path / 'studies' / 'gpu-pass' / 'optuna.db'}")
    done = [rec for rec in study_records(study) if rec.status == "COMPLETE"]
    assert len(done) == 3
    speeds = study_speeds(study)
    assert set(speeds) == {rec.network for rec in done}
    for rec in done:
        assert rec.device.startswith("cuda:0 (")
        assert rec.latency_ms > 0 and rec.throughput > 0 and rec.inference_batch == 256
        # measured by the pass, not in the trial
        assert "latency_ms" not in study.trials[rec.number].user_attrs
    if shutil.which("nvidia-cuda-mps-control") or shutil.which("/usr/local/nvidia/bin/nvidia-cuda-mps-control"):
        left = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps"], capture_output=True, text=True).stdout.strip()
        assert left == "", f"an MPS process was left running: {left}"
