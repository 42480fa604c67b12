"""A study's results: one row per network (seeds averaged), failures, the best triple."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from .compound import PAPER
from .records import TrialRecord, study_records

COLUMNS = ["rank", "alpha", "beta", "gamma", "triples", "product", "d", "w", "r", "resolution", "repeats",
           "channels", "params", "flops", "flops_ratio", "top1", "top1_std", "seeds", "top1_residual", "rank_matched",
           "top5", "images_per_second", "latency_ms", "throughput", "wall_s", "device", "network"]


# A family, official or sweep study: one row per member, in the plan's order.
SERIES_COLUMNS = ["series", "kind", "label", "phi", "multiplier", "matched_phi", "alpha", "beta", "gamma", "d", "w",
                  "r", "resolution", "repeats", "channels", "params", "flops", "activations", "flops_ratio", "top1",
                  "top1_std", "seeds", "top5", "images_per_second", "latency_ms", "throughput", "inference_batch", "peak_memory_mb", "wall_s",
                  "device", "network"]
_AGGREGATED = ("rank", "top1", "top1_std", "seeds", "top1_residual", "rank_matched")
_FIELD = {"triples": "triples_text"}  # a column that is not the record's field of the same name


def _cell(rec: TrialRecord, column: str):
    """A record's value in a column, as the trial stored it (a member's "does not apply" as None)."""
    if column in ("series", "label", "kind") and rec.kind == "grid":
        return None  # a grid trial records no series, label or kind of its own
    return getattr(rec, _FIELD.get(column, column))


def trials_frame(study: optuna.Study, columns: list[str] = COLUMNS,
                 records: list[TrialRecord] | None = None) -> pd.DataFrame:
    """One row per trial that trained something (duplicates and skips left out)."""
    rows = []
    for rec in study_records(study) if records is None else records:
        if not rec.trained:
            continue
        value = rec.top1 if rec.status == "COMPLETE" else None
        rows.append({"trial": rec.number, "state": rec.status, "value": value, "reason": rec.reason or "",
                     **{k: _cell(rec, k) for k in columns if k not in _AGGREGATED},
                     "base": rec.base_network, "objective": rec.objective if rec.status == "COMPLETE" else None})
    return pd.DataFrame(rows)


def _per_network(df: pd.DataFrame) -> pd.DataFrame:
    """Completed trials of ``trials_frame``, one row per network: top-1 averaged over seeds."""
    done = df[df["state"] == "COMPLETE"]
    first = done.groupby("network", sort=False).first()
    agg = done.groupby("network", sort=False)["value"].agg(["mean", "std", "count"])
    out = first.drop(columns=["trial", "state", "value", "reason", "objective"], errors="ignore").join(agg)
    if "objective" in done and done["objective"].notna().any():  # the study's objective, averaged as top-1 is
        out = out.join(done.groupby("network", sort=False)["objective"].mean())
    return out.rename(columns={"mean": "top1", "std": "top1_std", "count": "seeds"}).reset_index()


def results_frame(study: optuna.Study, records: list[TrialRecord] | None = None) -> pd.DataFrame:
    """Completed networks, best first: top-1 averaged over seeds, with its spread; ``records``:
    the study's (study_records), where they have been read already. A study whose objective is
    not accuracy alone ranks by its ``objective`` (averaged over seeds, a column after the
    others); one of another base than efficientnet-b0 has a ``base`` column last."""
    df = trials_frame(study, records=records)
    if df.empty or not (df["state"] == "COMPLETE").any():
        return pd.DataFrame(columns=COLUMNS)
    out = _per_network(df)
    by = "objective" if "objective" in out else "top1"
    out = out.sort_values(by, ascending=False, kind="stable").reset_index(drop=True)
    out["rank"] = range(1, len(out) + 1)
    extra = ["objective"] if by == "objective" else []
    extra += ["base"] if (out["base"] != "efficientnet-b0").any() else []
    return matched_flops(out)[COLUMNS + extra]


MIN_MATCHED = 3  # networks of distinct FLOPs for a line through top-1 against log FLOPs


def matched_flops(results: pd.DataFrame) -> pd.DataFrame:
    """The ranking at matched FLOPs: ``top1_residual`` is each network's top-1 minus the
    grid's own least-squares line of top-1 against log FLOPs, ``rank_matched`` its rank by
    that residual (1 is the most accurate for its FLOPs). Both are empty with fewer than
    3 distinct FLOPs values. ``rank`` stays the ranking by top-1 alone. The line is fitted by
    :func:`scaling.laws.line_residuals`.
    """
    import numpy as np

    from .laws import line_residuals

    out = results.copy()
    out["top1_residual"], out["rank_matched"] = np.nan, pd.array([pd.NA] * len(out), dtype="Int64")
    flops = pd.to_numeric(out["flops"], errors="coerce")
    ok = flops.gt(0) & out["top1"].notna()
    if flops[ok].nunique() < MIN_MATCHED:
        return out
    out.loc[ok, "top1_residual"] = line_residuals(flops[ok].to_numpy(dtype=float),
                                                  out.loc[ok, "top1"].to_numpy(dtype=float))
    order = out.loc[ok, "top1_residual"].rank(ascending=False, method="first")
    out.loc[ok, "rank_matched"] = order.astype(int).to_numpy()
    return out


def plan_studies(url: str, name: str) -> list[optuna.Study]:
    """The family, official and sweep studies beside the search ``name`` in one storage."""
    from .storage import open_storage

    storage = open_storage(url)
    names = sorted(n for n in optuna.get_all_study_names(storage) if n.startswith(f"{name}."))
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    return [s for s in studies if "plan" in s.user_attrs]


def _plan_order(df: pd.DataFrame) -> pd.DataFrame:
    key = df["phi"].where(df["phi"].notna(), df["multiplier"])
    return df.assign(_key=key.astype(float)).sort_values("_key", kind="stable").drop(columns="_key")


def series_frame(studies: list[optuna.Study], records: list[list[TrialRecord]] | None = None) -> pd.DataFrame:
    """Every trained member of the family, official and sweep ``studies`` (see plan_studies):
    one row per network (seeds averaged), series by series, each in the order of its parameter;
    ``records``: each study's (study_records), where they have been read already."""
    parts = []
    for i, study in enumerate(studies):
        df = trials_frame(study, SERIES_COLUMNS, records=None if records is None else records[i])
        if df.empty or not (df["state"] == "COMPLETE").any():
            continue
        parts.append(_plan_order(_per_network(df)))
    if not parts:
        return pd.DataFrame(columns=SERIES_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    for col in ("phi", "multiplier", "matched_phi", "alpha", "beta", "gamma", "latency_ms", "throughput"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out[SERIES_COLUMNS]


def _failed(study: optuna.Study, trials: list | None = None) -> list[dict]:
    """Every failed trial that was to train a network (whether or not it got as far as
    recording it), with its reason and whether its network completed on another trial;
    ``trials``: the study's (get_trials), where they have been read already."""
    from .storage import trial_key

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    completed = {trial_key(t) for t in trials if t.state == TrialState.COMPLETE}
    waiting = {trial_key(t) for t in trials if t.state == TrialState.WAITING}
    rows = []
    for t in trials:
        rec = TrialRecord.from_trial(t)
        if rec.status != "FAIL" or rec.skipped:
            continue
        key = trial_key(t)
        later = bool(key) and any(o.number > t.number and trial_key(o) == key for o in trials)
        reason = rec.reason or ("worker lost, retried" if later else "worker lost")  # its heartbeat went stale
        rows.append({"trial": rec.number, "triples": rec.triples_text, "network": rec.network,
                     "label": rec.label if rec.kind != "grid" else None, "reason": reason,
                     "recovered": bool(key) and key in completed,
                     "queued": bool(key) and key not in completed and key in waiting})
    return rows


def series_failures(studies: list[optuna.Study], trials: list[list] | None = None) -> pd.DataFrame:
    """Failed trials of the family, official and sweep ``studies``; ``recovered``: trained again and
    completed; ``queued``: queued again, for the next run to train; ``trials``: each study's, where
    they have been read already."""
    rows = [{"study": study.study_name, **r} for i, study in enumerate(studies)
            for r in _failed(study, None if trials is None else trials[i])]
    return pd.DataFrame(rows, columns=["study", "trial", "network", "label", "reason", "recovered", "queued"])


def failures_frame(study: optuna.Study, trials: list | None = None) -> pd.DataFrame:
    """Failed trials of a search; ``recovered``: the network was trained again and completed;
    ``queued``: queued again, for the next run to train; ``trials``: the study's, where they
    have been read already."""
    return pd.DataFrame(_failed(study, trials), columns=["trial", "triples", "network", "reason", "recovered", "queued"])


def paper_network(records: list[TrialRecord]) -> str | None:
    """The network (architecture key) that the paper's (1.2, 1.1, 1.15) rounds to, where a trial trained it."""
    return next((r.network for r in records if r.trained and r.kind == "grid" and PAPER in r.triples), None)


def paper_rank(results: pd.DataFrame, records: list[TrialRecord]) -> int | None:
    """The rank in ``results`` (results_frame) of the network the paper's (1.2, 1.1, 1.15)
    rounds to, if it was trained; ``records`` are the search's (study_records)."""
    network = paper_network([r for r in records if r.status == "COMPLETE"])
    hit = results[results["network"] == network] if network is not None else results.iloc[0:0]
    return int(hit.iloc[0]["rank"]) if len(hit) else None


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    from .files import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, df.to_csv(index=False))


def running(study: optuna.Study, records: list[TrialRecord] | None = None) -> int:
    """The trials in training now; ``records``: the study's, where they have been read already."""
    if records is not None:
        return sum(r.status == TrialState.RUNNING.name for r in records)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
