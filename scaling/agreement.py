"""How far a ranking can be trusted: the same networks ranked by two seeds, or by two proxies.

Spearman's rank correlation over the networks both sides trained (ties get their mean rank).
With two seeds it is the ranking's noise floor: a grid whose order changes with the seed
cannot tell apart networks closer than that. With two proxies it is the proxy's fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.trial import TrialState

from .members import Member

MIN_NETWORKS = 3  # a rank correlation over fewer says nothing


@dataclass(frozen=True)
class Agreement:
    """Spearman's rho between two rankings of ``networks`` networks, and the mean absolute
    difference of their top-1 (a fraction) where both are on the same scale."""

    networks: int
    spearman: float
    mean_abs_diff: float

    def text(self, what: str) -> str:
        return (f"{what}: Spearman rank correlation {self.spearman:+.2f} over {self.networks} networks, "
                f"top-1 {100 * self.mean_abs_diff:.2f} points apart on average")


def agreement(a: pd.Series, b: pd.Series) -> Agreement | None:
    """Of two top-1 series indexed alike (by network); None with fewer than MIN_NETWORKS in common."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if len(both) < MIN_NETWORKS:
        return None
    rho = both["a"].rank().corr(both["b"].rank())  # Pearson of the ranks: Spearman's rho
    return Agreement(len(both), float(rho), float((both["a"] - both["b"]).abs().mean()))


def member_top1(study: optuna.Study, param: str) -> pd.DataFrame:
    """Top-1 of every completed trial that trained a queued member: one row per member key
    (the trials' ``param``, such as ``"member"`` or a grid's ``"candidate"``), one column per seed."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        params = t.system_attrs.get("fixed_params") or t.params
        if param in params and t.value is not None and not t.user_attrs.get("skipped"):
            rows.append({"key": params[param], "seed": int(params.get("seed", 0)), "top1": t.value})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).pivot_table(index="key", columns="seed", values="top1", aggfunc="first")


def seed_agreement(table: pd.DataFrame) -> Agreement | None:
    """Seed 0's ranking against seed 1's (``member_top1``), over the members trained with both."""
    if table.empty or 0 not in table.columns or 1 not in table.columns:
        return None
    return agreement(table[0], table[1])


def grid_agreement(table: pd.DataFrame, members: list[Member], other: pd.DataFrame,
                   other_members: list[Member]) -> Agreement | None:
    """Two grids' rankings (``member_top1`` tables, mean over seeds) of the same networks:
    each network of the first is matched with the network of the second that holds its
    representative triple (the grids may differ in base resolution, so their networks merge
    other triples), as ``--only ... --ranked-by`` chose them."""
    from .selection import holding

    mine = table.mean(axis=1)
    theirs = other.mean(axis=1)
    by_key = {m.key: m for m in members}
    a, b = {}, {}
    for key, top1 in mine.items():
        m = by_key.get(key)
        i = holding(other_members, m.triple) if m is not None and m.triple is not None else None
        match = other_members[i] if i is not None else None
        if match is None or match.key not in theirs.index or match.key in b:
            continue
        a[match.key], b[match.key] = top1, theirs[match.key]
    return agreement(pd.Series(a, dtype=float), pd.Series(b, dtype=float))
