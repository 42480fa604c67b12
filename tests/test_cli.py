"""The command line, through Typer's CliRunner: output, files and exit codes."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from scaling import EfficientNet
from scaling.cli import app


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_help_everywhere():
    for cmd in ([], ["candidates"], ["family"], ["flops"], ["export"]):
        r = run(*cmd, "-h")
        assert r.exit_code == 0, r.output
        assert "Usage" in r.output
    assert "Example: scaling candidates" in run("candidates", "--help").output


def test_candidates_csv(tmp_path):
    out = tmp_path / "c.csv"
    r = run("candidates", "--phi", 1, "--format", "csv", "--output", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 25 and df["n_triples"].sum() == 73
    paper = df[df["triples"].str.contains(r"\(1.2, 1.1, 1.15\)", regex=True)]
    # held to its FLOPs: 2.40x of B0 at the 256 px gamma gives, 2.19x at 248 px
    assert len(paper) == 1 and paper.iloc[0]["resolution"] == 248 and paper.iloc[0]["nominal_resolution"] == 256
    assert (df["flops_ratio"] == (df["flops"] / 385814752).round(4)).all()
    assert df["flops_ratio"].between(1.8, 2.2).all()
    loose = pd.read_csv(out) if run("candidates", "--flops-tolerance", 9, "-o", out).exit_code == 0 else None
    assert len(loose) == 65 and loose["n_triples"].sum() == 108  # a tolerance that holds nothing back


def test_candidates_table_and_json(tmp_path):
    r = run("candidates", "--phi", 1)
    assert r.exit_code == 0 and "phi=1: 25 networks from 73 of 108 triples, FLOPs within 10% of 2^1 x the base" in r.output
    r = run("candidates", "--phi", 2, "--step", 0.1, "--format", "json")
    rows = json.loads(r.stdout)
    assert r.exit_code == 0 and rows and all(abs(x["product"] - 2) < 0.1 for x in rows)
    assert all(x["budget_ratio"] == 4.0 and 3.6 <= x["flops_ratio"] <= 4.4 for x in rows)
    assert all(x["nominal_ratio"] == pytest.approx(x["product"] ** 2, abs=1e-3) for x in rows)


@pytest.mark.parametrize("args, grid", [(["--step", "0.0001"], dict(step=0.0001)),
                                        (["--alpha-range", "1,1e9"], dict(alpha=(1.0, 1e9)))])
def test_candidates_refuse_a_grid_too_large_to_build(args, grid):
    from scaling.compound import Grid

    size = f"{Grid(**grid).size:,}"
    assert len(size) > 12  # hundreds of billions of points: it hung before
    r = run("candidates", *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"the grid has {size} points" in r.stderr and "--max-grid" in r.stderr
    assert run("candidates", "--max-grid", 2000).exit_code == 2  # 2,541 points
    assert run("candidates", "--max-grid", 2541, "--format", "csv").exit_code == 0


@pytest.mark.parametrize("command", [["candidates"], ["candidates", "--base-resolution", "32"],
                                     ["family", "--phi", "0-7"]])
def test_tables_fit_100_columns(command, monkeypatch):
    from scaling.cli.app import console

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(console, "width", 100)
    r = run(*command)
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout and "..." not in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 100
    wide = run(*command, "--wide")
    heads = [next(line for line in out.splitlines() if "┃" in line).count("┃") for out in (r.stdout, wide.stdout)]
    assert wide.exit_code == 0 and heads[1] > heads[0]  # --wide: every column


def test_family_json(tmp_path):
    out = tmp_path / "f.json"
    r = run("family", "--alpha", 1.2, "--beta", 1.1, "--gamma", 1.15, "--phi", "1-7", "--format", "json", "-o", out)
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    fam = [x for x in rows if x["series"].startswith("compound")]
    off = [x for x in rows if x["series"] == "official"]
    assert [x["phi"] for x in fam] == [1, 2, 3, 4, 5, 6, 7]
    assert fam[0]["resolution"] == 256 and fam[0]["d"] == 1.2
    assert [x["name"] for x in off] == [f"efficientnet-b{i}" for i in range(8)]
    assert off[0]["flops"] == 385814752 and off[7]["params"] == 66347960


def test_family_table():
    r = run("family", "--phi", "0-2")
    assert r.exit_code == 0
    assert "Compound family (1.2, 1.1, 1.15)" in r.output and "efficientnet-b7" in r.output


def test_flops(tmp_path):
    r = run("flops", "efficientnet-b3", "--by", "stage")
    assert r.exit_code == 0 and "1,827,141,392" in r.output and "12,233,232" in r.output
    out = tmp_path / "layers.csv"
    r = run("flops", "--width", 1.1, "--depth", 1.2, "--resolution", 256, "--by", "layer", "--format", "csv", "-o", out)
    assert r.exit_code == 0
    df = pd.read_csv(out)
    assert df.iloc[0]["layer"] == "stem.conv" and df.iloc[-1]["layer"] == "classifier"
    r = run("flops", "b0", "--by", "total", "--traced")
    assert r.exit_code == 0 and "plain fvcore agrees" in r.output


BAD = [
    (["candidates", "--phi", -1], "--phi"),
    (["candidates", "--phi", 11], "--phi"),
    (["candidates", "--phi", "one"], "--phi"),
    (["candidates", "--step", 0], "--step"),
    (["candidates", "--step", -0.1], "--step"),
    (["candidates", "--tolerance", 0], "--tolerance"),
    (["candidates", "--alpha-range", "0.5,2"], "--alpha-range"),
    (["candidates", "--beta-range", "x"], "--beta-range"),
    (["candidates", "--tolerance", 1e-6, "--target", 2.05], "no candidate"),
    (["family", "--alpha", 0.9], "--alpha"),
    (["family", "--beta", "abc"], "--beta"),
    (["family", "--gamma", 0.5], "--gamma"),
    (["family", "--phi", "11"], "--phi"),
    (["family", "--phi", "-1"], "--phi"),
    (["flops", "efficientnet-b9"], "unknown network"),
    (["flops"], "--width"),
    (["export", "resnet50", "--onnx", "x.onnx"], "unknown network"),
]


@pytest.mark.parametrize("args, names", BAD, ids=lambda a: " ".join(map(str, a)) if isinstance(a, list) else None)
def test_bad_input_is_one_line_exit_2(args, names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0], r.output
    assert "Traceback" not in r.output
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written, not even the count cache


@pytest.mark.parametrize("cmd", [["candidates"], ["family"], ["flops", "b0"]])
def test_unwritable_output(cmd, tmp_path):
    for target in (tmp_path / "missing" / "x.csv", tmp_path):
        r = run(*cmd, "--output", target)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and "--output" in r.output


@pytest.mark.parametrize("cmd", [["candidates"], ["flops", "b0"]])
def test_read_only_output_folder(cmd, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run(*cmd, "--output", ro / "x.csv")
        if r.exit_code == 0:  # root ignores permissions
            pytest.skip("running as root: permissions are not enforced")
        assert r.exit_code == 2 and "--output" in r.output
        assert not (ro / "x.csv").exists()
    finally:
        ro.chmod(0o700)


def test_export_onnx_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-b0").eval()
    weights = tmp_path / "b0.pt"
    net.save(weights)
    out = tmp_path / "b0.onnx"
    r = run("export", "efficientnet-b0", "--onnx", out, "--weights", weights)
    assert r.exit_code == 0, r.output
    x = torch.randn(2, 3, 224, 224)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (2, 1000)
    assert np.abs(got - want).max() <= 1e-4


def test_sweep_matches_the_family(tmp_path):
    out = tmp_path / "sweep.csv"
    r = run("sweep", "--dimension", "resolution", "--match", "family", "--phi", "1-3", "--format", "csv", "-o", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df["matched_phi"]) == [1, 2, 3]
    assert ((df["flops"] / df["target_flops"] - 1).abs() < 0.1).all()
    assert (df["repeats"] == "1-2-2-3-3-4-1").all()  # resolution alone: depth untouched
    for args in (["--dimension", "height", "--values", "2"], ["--dimension", "width"],
                 ["--dimension", "width", "--values", "0.5"], ["--dimension", "depth", "--match", "paper"]):
        r = run("sweep", *args)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, (args, r.output)


@pytest.mark.parametrize("module", ["onnx", "onnxscript"])
def test_export_without_the_export_extra_says_how_to_install_it(module, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # `import onnx` raises ImportError
    r = run("export", "efficientnet-b0", "--onnx", tmp_path / "b0.onnx")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'scaling[export]'" in lines[0] and module in lines[0], r.output
    assert not (tmp_path / "b0.onnx").exists()


# ---------------------------------------------------------------------------- formats, files, help


def test_output_files_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        for cmd in (["candidates", "--format", "csv"], ["flops", "b0", "--format", "json"]):
            out = tmp_path / f"{cmd[0]}.out"
            r = run(*cmd, "-o", out)
            assert r.exit_code == 0, r.output
            assert out.stat().st_mode & 0o777 == 0o640, oct(out.stat().st_mode)
    finally:
        os.umask(old)


@pytest.mark.parametrize("fmt, parse", [("json", json.loads), ("csv", lambda t: pd.read_csv(__import__("io").StringIO(t)))])
def test_format_with_output_also_prints(fmt, parse, tmp_path):
    out = tmp_path / f"c.{fmt}"
    r = run("candidates", "--phi", 1, "--format", fmt, "-o", out)
    assert r.exit_code == 0, r.output
    assert len(parse(r.stdout)) == len(parse(out.read_text())) == 25  # "Also write": both (25 networks held to their FLOPs)


def test_table_with_output_prints_the_table_and_writes_by_extension(tmp_path):
    out = tmp_path / "c.json"
    r = run("candidates", "--phi", 1, "-o", out)
    assert r.exit_code == 0 and "phi=1: 25 networks from 73 of 108 triples" in r.stdout
    assert len(json.loads(out.read_text())) == 25


def test_plurals():
    # (1, 1, 1.4) alone: B0 at 312 px, 2.004x its FLOPs, within the budget by itself
    r = run("candidates", "--alpha-range", "1,1", "--beta-range", "1,1", "--gamma-range", "1.4,1.4")
    assert r.exit_code == 0, r.output
    assert "phi=1: 1 network from 1 of 1 triple," in r.output and "networks" not in r.output.split("\n")[0]


@pytest.mark.parametrize("cmd", [[], ["family"], ["search"], ["train"], ["flops"]])
def test_help_has_no_type_after_flags(cmd):
    r = run(*cmd, "-h")
    assert r.exit_code == 0 and "--help" in r.output
    assert "<bool>" not in r.output, r.output


def test_version_and_completion():
    from importlib.metadata import version

    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"scaling {version('scaling')}"
    r = run("-h")
    assert "--install-completion" in r.output and "--show-completion" in r.output


def test_python_dash_m_scaling(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), SCALING_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "scaling", "flops", "b0", "--by", "total"], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FLOPs 385,814,752" in r.stdout
    r = subprocess.run([sys.executable, "-m", "scaling"], capture_output=True, text=True, env=dict(
        env, _SCALING_COMPLETE="complete_bash", COMP_WORDS="scaling cand", COMP_CWORD="1"), cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["candidates"], (r.stdout, r.stderr)


def test_base_width_and_depth_options():
    from scaling.complexity import count
    from scaling.spec import spec_for

    base = spec_for("efficientnet-b0", resolution=64, width=0.5, depth=0.25)
    args = ["--base-resolution", 64, "--base-width", 0.5, "--base-depth", 0.25, "--format", "json"]
    rows = json.loads(run("candidates", "--phi", 1, *args).stdout)
    base_flops = count(base).flops
    assert rows and all(x["flops_ratio"] == round(x["flops"] / base_flops, 4) for x in rows)
    fam = [x for x in json.loads(run("family", "--phi", "0-1", *args).stdout) if x["series"].startswith("compound")]
    assert fam[0]["flops"] == base_flops and fam[0]["params"] == count(base).params
    sw = json.loads(run("sweep", "--dimension", "width", "--values", "2", *args).stdout)
    assert sw[0]["flops"] == count(base.replace(width=1.0)).flops
    for cmd in (["candidates"], ["family"], ["sweep", "--dimension", "width", "--values", "2"]):
        r = run(*cmd, "--base-width", 0)
        assert r.exit_code == 2 and "--base-width" in r.output
