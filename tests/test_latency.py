"""Latency against FLOPs and activations (issue 15): the fits, the report's section, `scaling flops --measure`.

No timing is asserted: measured fields exist and are positive; the fits are exact on synthetic members.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from scaling.cli import app
from scaling.latency import MIN_POINTS, fit_frame, fit_latency, fit_log
from scaling.records import TrialRecord
from scaling.report.sections import latency as latency_section, latency_frame
from scaling.spec import custom_spec
from scaling.speed import default_batch, measure


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# Synthetic members: log latency = 1 + 0.5 log FLOPs + r, the residuals r = (d, -d, -d, d) orthogonal to
# 1 and log FLOPs = (0, 1, 2, 3), so the FLOPs fit is slope 0.5, intercept 1, RMSE d exactly; log latency is
# exactly 2 + 0.8 log activations, so that fit has RMSE 0.
D = 0.1
U = np.arange(4.0)
Y = 1 + 0.5 * U + D * np.array([1, -1, -1, 1])
FLOPS = np.exp(U)
ACTS = np.exp((Y - 2) / 0.8)
LATENCY = np.exp(Y)


def test_activations_fit_exactly_and_are_chosen():
    fits = fit_latency(FLOPS, ACTS, LATENCY)
    assert fits.ok and fits.n == 4 and fits.better == "activations"
    assert fits.flops.slope == pytest.approx(0.5, abs=1e-12)
    assert fits.flops.intercept == pytest.approx(1.0, abs=1e-12)
    assert fits.flops.rmse == pytest.approx(D, abs=1e-12)
    assert fits.flops.pct == pytest.approx(100 * (math.exp(D) - 1), abs=1e-9)
    assert fits.activations.slope == pytest.approx(0.8, abs=1e-12)
    assert fits.activations.intercept == pytest.approx(2.0, abs=1e-12)
    assert fits.activations.rmse == pytest.approx(0.0, abs=1e-12)
    assert fits.sentence() == "activations predict latency better than FLOPs here (0.0% vs 10.5%)"
    assert fits.activations.predict([ACTS[2]])[0] == pytest.approx(LATENCY[2])
    d = fits.to_dict()
    assert d["better"] == "activations" and d["flops"]["slope"] == pytest.approx(0.5)


def test_flops_chosen_when_they_fit_better():
    fits = fit_latency(ACTS, FLOPS, LATENCY)  # the roles swapped
    assert fits.better == "flops" and fits.flops.rmse == pytest.approx(0.0, abs=1e-12)
    assert fits.activations.rmse == pytest.approx(D, abs=1e-12)
    assert fits.sentence() == "FLOPs predict latency better than activations here (0.0% vs 10.5%)"


def test_a_tie_and_too_few_members():
    same = fit_latency(FLOPS, FLOPS, LATENCY)
    assert same.better == "tie" and "equally well" in same.sentence()
    # three rows but two distinct networks (a shared base): too few; two always lie on a line
    few = fit_latency([1e8, 1e8, 2e8], [1e6, 1e6, 3e6], [1.0, 1.2, 2.0])
    assert not few.ok and few.n == 2 and few.flops is None and few.better is None
    assert few.sentence() == f"too few members: 2 distinct networks with a measured latency, and a fit needs {MIN_POINTS}"
    # a missing or non-positive latency is left out
    assert fit_latency([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, math.nan, 0]).n == 2


def test_duplicates_are_one_point_at_the_geometric_mean():
    # the first network twice, at latencies 1 and 4: one point at 2, so the line through 2, 4, 8 is exact
    fits = fit_latency([1, 1, 2, 4], [1, 1, 3, 9], [1, 4, 4, 8])
    assert fits.n == 3 and fits.flops.slope == pytest.approx(1.0) and fits.flops.rmse == pytest.approx(0, abs=1e-12)
    assert fits.flops.intercept == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="distinct"):
        fit_log([1, 1, 2], [0, 0, 1], "flops")


def _series(devices=None):
    n = len(FLOPS)
    return pd.DataFrame({"series": ["compound"] * n, "kind": ["family"] * n, "flops": FLOPS * 1e8,
                         "activations": ACTS * 1e6, "latency_ms": LATENCY,
                         "device": devices or ["cuda:0 (NVIDIA H200)"] * n})


def test_report_section_tables_both_fits_and_says_which():
    assert fit_frame(_series()).better == "activations"
    sec = latency_section(_series())
    assert sec.heading == "Latency against FLOPs and activations"
    assert "Activations predict latency better than FLOPs here (0.0% vs 10.5%)." in sec.paragraphs
    assert "on cuda:0 (NVIDIA H200)" in sec.paragraphs[0]
    (table,) = sec.tables
    assert table.columns == ("predictor", "points", "slope", "R²", "RMSE (log)", "error", "verdict")
    # R² of the FLOPs fit: 1 - 0.1² / var(1.1, 1.4, 1.9, 2.6) = 1 - 0.01 / 0.3225
    assert table.rows == (("log FLOPs", "4", "0.500", "0.97", "0.100", "10.5%", "—"),
                          ("log activations", "4", "0.800", "1.00", "0.000", "0.0%", "better"))


def test_a_fit_predicts_only_a_latency_that_grows_with_it_and_that_it_explains():
    fits = fit_latency(FLOPS, ACTS, LATENCY)
    assert fits.flops.r2 == pytest.approx(1 - D ** 2 / 0.3225, abs=1e-12) and fits.activations.r2 == pytest.approx(1)
    # activations exact but latency falling as they grow: not a predictor, so FLOPs are the better
    falling = fit_latency(FLOPS, 1 / ACTS, LATENCY)
    assert falling.activations.slope == pytest.approx(-0.8) and falling.activations.rmse == pytest.approx(0, abs=1e-12)
    assert not falling.activations.predicts and falling.flops.predicts and falling.better == "flops"
    # latencies that neither explains (measured while other work shared the device): "neither"
    noise = fit_latency([1, 2, 4, 8], [1, 3, 2, 5], [4, 3, 5, 2])
    assert noise.better == "neither" and not noise.flops.predicts and not noise.activations.predicts
    assert noise.sentence().startswith("neither FLOPs nor activations predicts latency here (R² ")
    sec = latency_section(_series().assign(flops=[1, 2, 4, 8], activations=[1, 3, 2, 5], latency_ms=[4, 3, 5, 2]))
    (table,) = sec.tables
    assert [r[-1] for r in table.rows] == ["predicts nothing", "predicts nothing"]
    assert sec.paragraphs[-1].startswith("Neither FLOPs nor activations predicts latency here")


def test_report_section_too_few_members_other_devices_and_none():
    few = latency_section(_series().iloc[:2])
    assert few.tables == () and few.paragraphs[-1].startswith("Too few members: 2 distinct networks")
    mixed = latency_section(_series(["cuda:0 (NVIDIA H200)"] * 3 + ["cpu"]))
    assert "only the 3 measured on cuda:0 (NVIDIA H200) are compared" in mixed.paragraphs[0]
    assert mixed.paragraphs[-1].startswith("Too few members: 3") is False  # 3 distinct points fit
    assert latency_section(_series().assign(latency_ms=None)) is None
    assert latency_section(pd.DataFrame(columns=["flops", "activations", "latency_ms"])) is None


def test_the_report_reads_every_completed_trial_with_a_latency():
    recs = [TrialRecord(status="COMPLETE", network=f"n{i}", flops=int(f), activations=int(a), latency_ms=t,
                        device="cuda:0 (NVIDIA H200)", kind=kind)
            for i, (f, a, t, kind) in enumerate(zip(FLOPS * 1e8, ACTS * 1e6, LATENCY, ["grid", "grid", "family",
                                                                                     "sweep"]))]
    recs += [TrialRecord(status="COMPLETE", network="x", flops=10, activations=10),  # no latency (the CPU's grid)
             TrialRecord(status="FAIL", network="y", flops=10, activations=10, latency_ms=1.0)]

    class Study:
        records = tuple(recs)

    df = latency_frame(Study())
    assert list(df["network"]) == ["n0", "n1", "n2", "n3"]
    sec = latency_section(df)
    assert sec.tables[0].rows[1][-1] == "better" and "Activations predict" in sec.paragraphs[-1]


def test_measure_says_where_and_how():
    spec = custom_spec(0.1, 0.1, 32, num_classes=10)
    s = measure(spec, "cpu", batch=2, repeats=1)
    assert s["device"] == "cpu" and s["precision"] == "fp32" and s["inference_batch"] == 2
    assert s["latency_ms"] > 0 and s["throughput"] > 0
    assert default_batch(torch.device("cpu")) == 32 and default_batch(torch.device("cuda")) == 256


@pytest.fixture
def fake_speed(monkeypatch):
    """inference_speed without the timing (the CPU is slow and shared): latency from the FLOPs."""
    import scaling.speed as speed
    from scaling.bases import count

    def fake(spec, device="cpu", *, batch=256, repeats=None):
        ms = count(spec).flops / 1e7
        return {"latency_ms": ms, "throughput": round(batch * 1e3 / ms, 1), "inference_batch": batch}

    monkeypatch.setattr(speed, "inference_speed", fake)


def test_flops_measure_one_network_json():
    r = run("flops", "--width", 0.1, "--depth", 0.1, "--resolution", 32, "--by", "total", "--measure",
            "--device", "cpu", "--batch", 2, "--repeats", 1, "--format", "json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    assert row["flops"] > 0 and row["activations"] > 0 and row["params"] > 0
    assert row["latency_ms"] > 0 and row["throughput"] > 0 and row["inference_batch"] == 2
    assert row["device"] == "cpu" and row["precision"] == "fp32"


def test_flops_measure_with_a_base(fake_speed):
    r = run("flops", "--base", "mobilenetv2", "--width", 0.25, "--resolution", 32, "--by", "total", "--measure",
            "--device", "cpu", "--batch", 2, "--repeats", 1)
    assert r.exit_code == 0, r.output
    assert "latency" in r.output and "img/s at batch 2" in r.output and "fp32, cpu" in r.output


def test_flops_several_networks_measured_and_fitted(tmp_path, fake_speed):
    out = tmp_path / "m.json"
    r = run("flops", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "mobilenetv2", "--resolution", 32,
            "--measure", "--device", "cpu", "--batch", 2, "--repeats", 1, "-o", out)
    assert r.exit_code == 0, r.output
    assert "4 networks" in r.output and "against log FLOPs: slope" in r.output
    # the fake latency is proportional to FLOPs: that fit is exact (slope 1) and the better one
    assert "against log FLOPs: slope 1.000, RMSE 0.000 (log) = 0.0%" in r.output
    assert "FLOPs predict latency better than activations here (0.0% vs" in r.output
    rows = json.loads(out.read_text())
    assert [x["network"] for x in rows] == ["efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "mobilenetv2"]
    assert all(x["resolution"] == 32 and x["latency_ms"] > 0 and x["throughput"] > 0 for x in rows)
    # without --measure: the totals alone
    r = run("flops", "efficientnet-b0", "mobilenet-v2", "--resolution", 32, "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["base"] for x in rows] == ["efficientnet-b0", "mobilenetv2"] and "latency_ms" not in rows[0]
    r = run("flops", "efficientnet-b0", "efficientnet-b9")
    assert r.exit_code == 2 and "unknown network" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_flops_measure_on_a_missing_gpu_is_one_line():
    r = run("flops", "efficientnet-b0", "--measure", "--device", "cuda")
    assert r.exit_code == 2 and "--device" in r.output and "Traceback" not in r.output
