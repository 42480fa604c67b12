"""The search's speed on GPUs: wall time, trials per hour, and the share of the workers' time
spent in training steps, for one or more GPU counts in one run.

    python bench/search_bench.py --data .data/cifar10-jpeg.tar.gz --trials 8 --gpus 1,2,4 --out $OUT

For each GPU count it runs ``scaling search --study studies/proxy.toml`` as a fresh study
(``bench-gN``) over the first ``--trials`` networks of the grid's spread order, then reads
the study back. "training share" is the time of the training steps (warm-up included)
summed over trials, over the GPUs' wall time (GPUs x wall): what remains is start-up,
data, model building, evaluation, counting and storage. A study folder left by an earlier
run (``--studies-dir``, brought back between machines) is resumed, not restarted: the
wall time then covers only what this run trained, and the table says how many trials that is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna


def run(gpus: int, args) -> dict:
    name = f"bench-g{gpus}"
    folder = Path(args.studies_dir) / name
    db = folder / "optuna.db"
    before = _done(db, name)
    cmd = [sys.executable, "-m", "scaling.cli", "search", "--study", args.study, "--data", args.data,
           "--name", name, "--trials", str(args.trials), "--gpus", ",".join(str(i) for i in range(gpus)),
           "--studies-dir", args.studies_dir, "--no-report", "-q"]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    new = [t for t in done if t.number not in before]
    train_s = sum(t.user_attrs.get("times", {}).get("train", 0) + t.user_attrs.get("times", {}).get("warmup", 0)
                  for t in new)
    return {"gpus": gpus, "exit_code": proc.returncode, "wall_s": round(wall, 1), "trials_run": len(new),
            "trials_total": len(done), "trials_per_hour": round(3600 * len(new) / wall, 1) if new else 0.0,
            "training_share": round(train_s / (gpus * wall), 3) if new else 0.0,
            "trial_wall_s": [round(t.user_attrs.get("wall_s", 0), 1) for t in new],
            "device": done[0].user_attrs.get("device") if done else None}


def _done(db: Path, name: str) -> set[int]:
    if not db.exists():
        return set()
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.resolve()}")
    except KeyError:
        return set()
    return {t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 archive (ImageFolder layout)")
    ap.add_argument("--study", default="studies/proxy.toml")
    ap.add_argument("--trials", type=int, default=8, help="networks per GPU count (the first of the spread order)")
    ap.add_argument("--epochs", type=int, default=None, help="override the study's epochs (say so when reporting)")
    ap.add_argument("--gpus", default="1", help="GPU counts to run, such as 1,2,4")
    ap.add_argument("--studies-dir", default="bench-studies")
    ap.add_argument("--out", default=None, help="folder for the JSON result")
    args = ap.parse_args()
    rows = [run(int(g), args) for g in args.gpus.split(",")]
    base = next((r for r in rows if r["gpus"] == 1 and r["trials_run"]), None)
    print(f"{'GPUs':>4} {'trials':>6} {'wall s':>8} {'trials/h':>9} {'speed-up':>8} {'training share':>15}")
    for r in rows:
        up = r["trials_per_hour"] / base["trials_per_hour"] if base and r["trials_per_hour"] else float("nan")
        r["speedup"] = round(up, 2)
        print(f"{r['gpus']:>4} {r['trials_run']:>6} {r['wall_s']:>8.1f} {r['trials_per_hour']:>9.1f} {up:>8.2f} "
              f"{100 * r['training_share']:>14.1f}%")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "search_bench.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
