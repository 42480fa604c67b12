"""Which networks of a grid one run trains: the best or worst of a ranked study, or named triples.

A study's grid trains every network once per seed. A run can also train a chosen few:
more seeds for the contenders of a finished grid (the noise floor of its ranking), or the
same networks at another proxy (does the cheap proxy rank them as the rich one does?):

    scaling search --name cifar10 --only top8,paper --seeds 2
    scaling search --study studies/cifar10-proxy.toml --only top5,bottom3,paper --ranked-by cifar10

``top8`` and ``bottom3`` read the ranking (by mean top-1) of the study named by
``--ranked-by`` (the study itself where none is named); ``paper`` is the network the paper's
(1.2, 1.1, 1.15) rounds to; ``1.2:1.1:1.15`` the network a triple rounds to. A network of the
ranked study is found in the grid trained here by its triples, so the two grids may differ in
base resolution or FLOPs hold: each network is taken where its first triple lies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .compound import PAPER, Candidate, Triple


class SelectionError(ValueError):
    """A selection that does not parse, or names networks the grid does not hold."""


@dataclass(frozen=True)
class Selection:
    top: int = 0
    bottom: int = 0
    triples: tuple[Triple, ...] = ()
    ranked_by: str | None = None  # the study whose ranking top/bottom read; None: the study trained

    @property
    def ranked(self) -> bool:
        """Whether it needs a ranking (top or bottom)."""
        return bool(self.top or self.bottom)

    def describe(self) -> str:
        parts = [f"top {self.top}"] * bool(self.top) + [f"bottom {self.bottom}"] * bool(self.bottom)
        parts += ["the paper's (1.2, 1.1, 1.15)" if t == PAPER else str(t) for t in self.triples]
        where = f" of study {self.ranked_by}" if self.ranked and self.ranked_by else ""
        return ", ".join(parts) + where


_TOKEN = re.compile(r"(top|bottom)(\d+)$")


def parse_selection(text: str, ranked_by: str | None = None) -> Selection:
    """``top8,bottom3,paper,1.2:1.1:1.15`` (any of them, comma-separated) as a Selection."""
    top = bottom = 0
    triples: list[Triple] = []
    for raw in text.split(","):
        token = raw.strip().lower()
        if not token:
            continue
        m = _TOKEN.match(token)
        if m:
            n = int(m.group(2))
            if n < 1:
                raise SelectionError(f"{token!r}: give at least 1 network")
            top, bottom = (n, bottom) if m.group(1) == "top" else (top, n)
        elif token == "paper":
            triples.append(PAPER)
        else:
            parts = token.split(":")
            try:
                values = [float(p) for p in parts]
            except ValueError:
                values = []
            if len(values) != 3 or not all(v >= 1 for v in values):
                raise SelectionError(f"{raw.strip()!r} is none of topN, bottomN, paper or alpha:beta:gamma "
                                     "(three numbers >= 1, such as 1.2:1.1:1.15)")
            triples.append(Triple(*values))
    if not (top or bottom or triples):
        raise SelectionError(f"{text!r} selects no network: give topN, bottomN, paper or alpha:beta:gamma")
    return Selection(top, bottom, tuple(dict.fromkeys(triples)), ranked_by)


def holding(networks: list, triple: Triple) -> int | None:
    """The index of the network (a grid's :class:`Candidate` or :class:`~scaling.members.Member`)
    that ``triple`` rounds to, if the grid holds it."""
    for k, c in enumerate(networks):
        if any(_same(triple, t) for t in c.triples):
            return k
    return None


def _same(a: Triple, b: Triple) -> bool:
    return all(abs(x - y) < 1e-6 for x, y in zip((a.alpha, a.beta, a.gamma), (b.alpha, b.beta, b.gamma)))


def select(selection: Selection, cands: list[Candidate], ranking: list[Triple] | None = None) -> list[int]:
    """The candidates a selection names, each once, in the order named: the ranking's best
    ``top``, then its worst ``bottom`` (``ranking``: each ranked network's first triple, best
    first), then the named triples.

    Raises:
        SelectionError: a ranking is needed and missing or too short, or a network is not in the grid.
    """
    wanted: list[tuple[str, Triple]] = []
    if selection.ranked:
        if not ranking:
            raise SelectionError(f"{selection.describe()}: no completed network to rank yet")
        n = selection.top + selection.bottom
        if n > len(ranking):
            raise SelectionError(f"{selection.describe()}: the ranking has only {len(ranking)} networks")
        wanted += [(f"rank {i + 1}", t) for i, t in enumerate(ranking[: selection.top])]
        first_bottom = len(ranking) - selection.bottom
        wanted += [(f"rank {first_bottom + i + 1}", t) for i, t in enumerate(ranking[first_bottom:])]
    wanted += [("named", t) for t in selection.triples]
    out: list[int] = []
    missing = []
    for why, t in wanted:
        k = holding(cands, t)
        if k is None:
            missing.append(f"{t} ({why})")
        elif k not in out:
            out.append(k)
    if missing:
        raise SelectionError(f"the grid trained here holds no network for {', '.join(missing)} "
                             "(its ranges or FLOPs hold leave them out)")
    return out
