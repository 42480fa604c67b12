"""The search's speed on GPUs: wall time, trials per hour, the GPUs' busy share and the
share of each trial spent training, for GPU counts and workers per GPU in one run.

    python bench/search_bench.py --data .data/cifar10-jpeg.tar.gz --study studies/cifar10.toml \\
        --trials 0 --gpus 1 --per-gpu auto,1 --out $OUT

For each (GPU count, workers per GPU) it runs ``scaling search --study STUDY`` as a fresh
study (``bench-gG-kK``, or ``--name``) over the first ``--trials`` networks of the grid's
spread order (0: all of them), samples ``nvidia-smi``'s utilization of the GPUs every
200 ms while it runs, then reads the study back:

- wall time and trials per hour of the whole command (start-up, MPS, data cache included);
- GPU busy share: the mean of the samples (nvidia-smi's "utilization.gpu": the share of
  time a kernel was running), per GPU;
- training share of each trial: its training steps' seconds (``times["train"]``, after the
  first steps) over its wall time (``times["total"]``); the warm-up (the first steps: cuDNN
  plans, graph capture) is counted apart, so the rest is data, building, warm-up,
  evaluation, counting and storage;
- the command in three phases, each with its seconds and the GPU's busy share: the start
  (to the first trial's start), the trials (first start to last end) and the end (the speed
  pass, the summary); what the search said on stderr, each line with its second;
- with ``--recheck-speed N``: N of the networks the speed pass measured, measured again
  in a fresh process with no MPS daemon, against what the pass wrote (the pass beside the
  workers measures as their daemon's only client once they have ended).

A study folder left by an earlier run (``--studies-dir``, brought back between machines)
is resumed, not restarted: the wall time then covers only what this run trained, and the
table says how many trials that is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna


class GpuSampler:
    """nvidia-smi's utilization.gpu of each GPU, every ``period_ms``, on a thread; each sample
    with the wall-clock second it was read."""

    def __init__(self, gpus: int, period_ms: int = 200):
        self.gpus, self.samples = gpus, {i: [] for i in range(gpus)}
        self.stamped = {i: [] for i in range(gpus)}
        self.proc = None
        if shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits",
             f"-lms={period_ms}", f"--id={','.join(str(i) for i in range(gpus))}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[1].isdigit():
                self.samples.setdefault(int(parts[0]), []).append(int(parts[1]))
                self.stamped.setdefault(int(parts[0]), []).append((time.time(), int(parts[1])))

    def stop(self) -> dict[int, float | None]:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(timeout=2)
        return {i: round(statistics.fmean(v) / 100, 3) if v else None for i, v in self.samples.items()}

    def between(self, start: float, end: float) -> dict[int, float | None]:
        """The busy share of each GPU over the wall-clock seconds [start, end]."""
        return {i: round(statistics.fmean(u for t, u in v if start <= t <= end) / 100, 3)
                if any(start <= t <= end for t, _ in v) else None for i, v in self.stamped.items()}


def _said(proc: subprocess.Popen, t0: float, lines: list) -> None:
    """The search's stderr, passed on, each line kept with its second since the command started."""
    for line in proc.stderr:
        sys.stderr.write(line)
        for part in line.rstrip("\n").split("\r"):
            if part.strip():
                lines.append((round(time.time() - t0, 2), part))


def run(gpus: int, per_gpu: str, args) -> dict:
    name = args.name or f"bench-g{gpus}-k{per_gpu}"
    folder = Path(args.studies_dir) / name
    db = folder / "optuna.db"
    before = _done(db, name)
    cmd = [sys.executable, "-m", "scaling.cli", "search", "--study", args.study, "--data", args.data,
           "--name", name, "--gpus", ",".join(str(i) for i in range(gpus)) or "none", "--per-gpu", per_gpu,
           "--studies-dir", args.studies_dir, "--no-report"]
    if args.trials:
        cmd += ["--trials", str(args.trials)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    sampler = GpuSampler(gpus)
    t0, start = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), stderr=subprocess.PIPE, text=True)
    said: list = []
    reader = threading.Thread(target=_said, args=(proc, start, said), daemon=True)
    reader.start()
    proc.wait()
    reader.join(timeout=5)
    wall, end = time.perf_counter() - t0, time.time()
    busy = sampler.stop()
    done = []
    if db.exists():
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    new = [t for t in done if t.number not in before]
    trials = []
    for t in new:
        times = t.user_attrs.get("times", {})
        total = times.get("total") or t.user_attrs.get("wall_s") or 0
        trials.append({"trial": t.number, "network": t.user_attrs.get("triples") or t.user_attrs.get("label"),
                       "resolution": t.user_attrs.get("resolution"), "top1": t.value,
                       "images_per_second": t.user_attrs.get("images_per_second"),
                       "worker_start_s": t.user_attrs.get("worker_start_s"),
                       **{k: round(v, 2) for k, v in times.items()},
                       "training_share": round(times.get("train", 0) / total, 3) if total else None})
    shares = [r["training_share"] for r in trials if r["training_share"] is not None]
    first = min((t.datetime_start.timestamp() for t in new), default=None)
    last = max((t.datetime_complete.timestamp() for t in new if t.datetime_complete), default=None)
    phases = {}
    if first is not None and last is not None:  # Optuna stamps local time; the same clock as time.time()
        for phase, (a, b) in {"start": (start, first), "trials": (first, last), "end": (last, end)}.items():
            phases[phase] = {"seconds": round(b - a, 1), "gpu_busy": sampler.between(a, b)}
    return {"gpus": gpus, "per_gpu": per_gpu, "name": name, "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "trials_run": len(new), "trials_total": len(done),
            "trials_per_hour": round(3600 * len(new) / wall, 1) if new else 0.0,
            "gpu_busy": busy, "phases": phases, "training_share_min": min(shares) if shares else None,
            "training_share_median": round(statistics.median(shares), 3) if shares else None,
            "trials": trials, "device": done[0].user_attrs.get("device") if done else None, "said": said}


def recheck_speeds(db: Path, name: str, n: int) -> list[dict]:
    """``n`` of the networks whose speed the study's pass wrote, measured again here (a fresh
    process, on the first GPU, no MPS daemon: the bench starts none), beside what it wrote."""
    from scaling.bases import spec_from_dict
    from scaling.speed import measure
    from scaling.speed_pass import study_speeds

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
    specs = {t.user_attrs["network"]: t.user_attrs["spec"] for t in study.trials if "spec" in t.user_attrs}
    out = []
    for key, wrote in list(study_speeds(study).items())[:n]:
        again = measure(spec_from_dict(specs[key]), "cuda:0", batch=wrote.get("inference_batch"))
        out.append({"network": key, "pass": {k: wrote.get(k) for k in ("latency_ms", "throughput")},
                    "again": {k: again[k] for k in ("latency_ms", "throughput")},
                    "ratio": {k: round(again[k] / wrote[k], 3) for k in ("latency_ms", "throughput") if wrote.get(k)}})
    return out


def _done(db: Path, name: str) -> set[int]:
    if not db.exists():
        return set()
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
    except KeyError:
        return set()
    return {t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def _shares(busy: dict) -> str:
    return ", ".join(f"{100 * v:.0f}%" for v in busy.values() if v is not None) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 archive (ImageFolder layout)")
    ap.add_argument("--study", default="studies/cifar10.toml")
    ap.add_argument("--trials", type=int, default=0, help="networks per setting (the first of the spread order; 0: all)")
    ap.add_argument("--epochs", type=int, default=None, help="override the study's epochs (say so when reporting)")
    ap.add_argument("--gpus", default="1", help="GPU counts to run, such as 1,2,4 (0: the CPU, a smoke run)")
    ap.add_argument("--per-gpu", default="auto", help="workers per GPU to run, such as auto,1")
    ap.add_argument("--name", default=None, help="the study's name (one setting only): e.g. to keep it as a study")
    ap.add_argument("--studies-dir", default="bench-studies")
    ap.add_argument("--out", default=None, help="folder for the JSON result")
    ap.add_argument("--recheck-speed", type=int, default=0, metavar="N",
                    help="after each setting, N of the pass's networks measured again with no MPS daemon")
    args = ap.parse_args()
    settings = [(int(g), k) for g in args.gpus.split(",") for k in args.per_gpu.split(",")]
    if args.name and len(settings) > 1:
        ap.error("--name names one study: give one GPU count and one --per-gpu")
    rows = []
    for g, k in settings:
        rows.append(run(g, k, args))
        if args.recheck_speed and rows[-1]["trials_run"]:
            folder = Path(args.studies_dir) / rows[-1]["name"]
            rows[-1]["recheck_speed"] = recheck_speeds(folder / "optuna.db", rows[-1]["name"], args.recheck_speed)
        if args.out:  # after every setting: a later one that runs out of time leaves these
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "search_bench.json").write_text(json.dumps(rows, indent=2))
    base = next((r for r in rows if r["gpus"] == 1 and r["trials_run"]), None)
    print(f"{'GPUs':>4} {'per GPU':>7} {'trials':>6} {'wall s':>8} {'trials/h':>9} {'vs first':>8} {'GPU busy':>9} "
          f"{'train share (min/median)':>25}  phases: seconds (busy)")
    for r in rows:
        up = r["trials_per_hour"] / base["trials_per_hour"] if base and r["trials_per_hour"] else float("nan")
        r["speedup"] = round(up, 2)
        busy = ", ".join(f"{100 * v:.0f}%" for v in r["gpu_busy"].values() if v is not None) or "-"
        share = (f"{100 * r['training_share_min']:.0f}% / {100 * r['training_share_median']:.0f}%"
                 if r["training_share_min"] is not None else "-")
        print(f"{r['gpus']:>4} {r['per_gpu']:>7} {r['trials_run']:>6} {r['wall_s']:>8.1f} {r['trials_per_hour']:>9.1f} "
              f"{up:>8.2f} {busy:>9} {share:>25}  " + ", ".join(
                  f"{p} {v['seconds']:.0f} s ({_shares(v['gpu_busy'])})" for p, v in r["phases"].items()))
        for c in r.get("recheck_speed", []):
            print(f"  again without MPS: {c['network'][:40]} latency x{c['ratio'].get('latency_ms')}, "
                  f"throughput x{c['ratio'].get('throughput')}")
    if args.out:
        (Path(args.out) / "search_bench.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
