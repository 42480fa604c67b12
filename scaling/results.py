"""A study's results: one row per network (seeds averaged), failures, the best triple."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from .compound import PAPER

COLUMNS = ["rank", "alpha", "beta", "gamma", "triples", "product", "d", "w", "r", "resolution", "repeats",
           "channels", "params", "flops", "top1", "top1_std", "seeds", "top5", "images_per_second", "wall_s",
           "device", "network"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that trained something (duplicates and skips left out)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("skipped") or a.get("duplicate_of") is not None or "network" not in a:
            continue
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value, "reason": a.get("reason", ""),
                     **{k: a.get(k) for k in COLUMNS if k not in ("rank", "top1", "top1_std", "seeds")}})
    return pd.DataFrame(rows)


def results_frame(study: optuna.Study) -> pd.DataFrame:
    """Completed networks, best first: top-1 averaged over seeds, with its spread."""
    df = trials_frame(study)
    if df.empty or not (df["state"] == "COMPLETE").any():
        return pd.DataFrame(columns=COLUMNS)
    done = df[df["state"] == "COMPLETE"]
    first = done.groupby("network", sort=False).first()
    agg = done.groupby("network", sort=False)["value"].agg(["mean", "std", "count"])
    out = first.drop(columns=["trial", "state", "value", "reason"]).join(agg)
    out = out.rename(columns={"mean": "top1", "std": "top1_std", "count": "seeds"}).reset_index()
    out = out.sort_values("top1", ascending=False, kind="stable").reset_index(drop=True)
    out["rank"] = range(1, len(out) + 1)
    return out[COLUMNS]


def failures_frame(study: optuna.Study) -> pd.DataFrame:
    df = trials_frame(study)
    if df.empty:
        return df
    return df[df["state"] == "FAIL"][["trial", "triples", "network", "reason"]].reset_index(drop=True)


def paper_rank(results: pd.DataFrame) -> int | None:
    """The rank of the network the paper's (1.2, 1.1, 1.15) rounds to, if it was trained."""
    hit = results[results["triples"].astype(str).str.contains(str(PAPER), regex=False)]
    return int(hit.iloc[0]["rank"]) if len(hit) else None


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        df.to_csv(f, index=False)
    os.replace(tmp, path)


def running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
