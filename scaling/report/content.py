"""The report's content: one model (title, provenance, sections of paragraphs, tables and
figures) built from a study's storage; :mod:`.html` and :mod:`.pdf` render the same model.

Every number is formatted here, once, so both renderings read the same: top-1 as 84.13%,
FLOPs in MFLOPs or GFLOPs with 3 significant digits, parameters in millions.
Paragraphs may quote commands between backticks (`scaling family --train`).
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import optuna
import pandas as pd
from matplotlib.figure import Figure

from .. import laws, plots
from ..compound import PAPER
from ..records import TrialRecord, study_records
from ..results import (failures_frame, paper_network, paper_rank, plan_studies, results_frame, running,
                       series_failures, series_frame, trials_frame)
from ..study import StudyConfig, StudyError
from ..units import flops_unit

PACKAGES = ("torch", "torchvision", "optuna", "fvcore", "pandas", "matplotlib")
BOOTSTRAP = 200  # resamples for the fits' 95% intervals (1000 take seconds per series)
DASH = "—"


# ----------------------------------------------------------------------------- the model

@dataclass
class Table:
    """A table of strings. ``align`` holds "l" or "r" per column (default: right for numbers)."""

    caption: str
    columns: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: a row of {len(row)} cells for {len(self.columns)} columns")
        if not self.align:
            self.align = [_guess_align([r[j] for r in self.rows]) for j in range(len(self.columns))]


@dataclass
class Plot:
    """A matplotlib figure with its caption."""

    figure: Figure
    caption: str


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)


@dataclass
class Report:
    title: str
    provenance: list[tuple[str, str]]
    sections: list[Section]
    name: str = ""

    def text(self) -> str:
        """Everything a reader sees, as plain text (paragraphs, table cells, captions)."""
        out = [self.title] + [f"{k}: {v}" for k, v in self.provenance]
        for s in self.sections:
            out += [s.heading, *s.paragraphs]
            for t in s.tables:
                out += [t.caption, " | ".join(t.columns)] + [" | ".join(r) for r in t.rows]
            out += [f.caption for f in s.figures]
        return "\n".join(out)


def _guess_align(cells: list[str]) -> str:
    def numeric(c: str) -> bool:
        c = c.strip().rstrip("%").replace(",", "").lstrip("±+-−")
        try:
            float(c)
            return True
        except ValueError:
            return False

    filled = [c for c in cells if c not in ("", DASH)]
    return "r" if filled and all(numeric(c) for c in filled) else "l"


# ----------------------------------------------------------------------------- formatting

def _missing(v) -> bool:
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def sig3(v) -> str:
    """3 significant digits, never in exponent notation: 1234 -> "1234", 12.34 -> "12.3", 0.01234 -> "0.0123"."""
    if _missing(v):
        return DASH
    v = float(v)
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) < 1e-3:  # 0.000000000000174 reads better as 1.74e-13
        return f"{v:.2e}"
    decimals = max(0, 2 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    # Rounding may add a digit (9.996 -> "10.00"): format the rounded value again.
    rounded = float(text)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) != math.floor(math.log10(abs(v))):
        text = f"{rounded:.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"
    return text


def pct(v, digits: int = 2) -> str:
    """A fraction as a percentage: 0.84127 -> "84.13%"."""
    return DASH if _missing(v) else f"{100 * float(v):.{digits}f}%"


def points(v) -> str:
    """A spread of a fraction in percentage points: 0.0012 -> "±0.12"."""
    return DASH if _missing(v) else f"±{100 * float(v):.2f}"


def flops_text(v) -> str:
    """FLOPs with their unit: 386e6 -> "386 MFLOPs", 1.8e9 -> "1.80 GFLOPs"."""
    if _missing(v):
        return DASH
    unit, scale = flops_unit([v])
    return f"{sig3(float(v) / scale)} {unit}"


def params_m(v) -> str:
    return DASH if _missing(v) else sig3(float(v) / 1e6)


def count(v) -> str:
    """A rate or count as a whole number with thousands separators."""
    return DASH if _missing(v) else f"{float(v):,.0f}"


def num(v) -> str:
    """A coefficient as written in the grid: 1.15, 1."""
    return DASH if _missing(v) else f"{float(v):g}"


def triple_text(alpha, beta, gamma) -> str:
    return f"({num(alpha)}, {num(beta)}, {num(gamma)})"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# ----------------------------------------------------------------------------- loading

@dataclass
class _Study:
    """Everything the report reads from the storage."""

    name: str
    url: str
    study: optuna.Study
    config: StudyConfig | None
    results: pd.DataFrame
    failures: pd.DataFrame
    running: int
    series: pd.DataFrame
    series_failures: pd.DataFrame
    trials: pd.DataFrame  # the search's trials (results.trials_frame)
    search_records: list[TrialRecord]  # every trial of the search
    records: list[TrialRecord]  # every trial of the search and its series studies
    fits: dict = field(default_factory=dict)  # series -> (law or reason, held-out check or reason)


def _config(study: optuna.Study, folder: Path) -> StudyConfig | None:
    """The study's resolved definition: studies/NAME/study.json, else the study's own copy."""
    text = None
    path = folder / "study.json"
    if path.is_file():
        text = path.read_text()
    elif study.user_attrs.get("definition"):
        text = study.user_attrs["definition"]
    if not text:
        return None
    try:
        return StudyConfig.from_json(text)
    except StudyError:
        return None


def load(name: str, studies_dir: Path = Path("studies"), storage: str | None = None) -> _Study:
    """Open study NAME (raises StudyError, one line, when there is none)."""
    from ..storage import load_study, storage_url

    config = StudyConfig(name=name)  # refuses a name that is not a plain folder name
    folder = Path(studies_dir) / name
    if storage is None and not (folder / "optuna.db").exists():
        raise StudyError(f"no study {name!r} in {studies_dir}")
    url = storage_url(config, folder, storage)
    study = load_study(config, url)
    plans = plan_studies(url, name)
    search = study_records(study)
    records = search + [r for p in plans for r in study_records(p)]
    return _Study(name=name, url=url, study=study, config=_config(study, folder), results=results_frame(study),
                  failures=failures_frame(study), running=running(study), series=series_frame(plans),
                  series_failures=series_failures(plans), trials=trials_frame(study, records=search),
                  search_records=search, records=records)


# ----------------------------------------------------------------------------- provenance

def _masked(url: str) -> str:
    """The storage URL without its password; a SQLite file under the working folder by its
    relative path (a report committed beside its study names no machine's folders)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        with contextlib.suppress(ValueError):
            return f"sqlite:///{path.resolve().relative_to(Path.cwd().resolve())}"
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _versions() -> str:
    parts = []
    for pkg in PACKAGES:
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def _code_text(r) -> str | None:
    if r.code_version is None:
        return None
    return r.code_version + (" with uncommitted changes" if r.code_modified else "")


def _software_text(r) -> str:
    """"Python 3.12.3, torch 2.11.0+cu130, CUDA 13.0, cuDNN 91900" of a trial, or that it recorded none."""
    if not r.software:
        return "not recorded (trained before the records held it)"
    v = dict(r.software)
    return (f"Python {v.get('python', '?')}, torch {v.get('torch', '?')}, CUDA {v.get('cuda', '?')}, "
            f"cuDNN {v.get('cudnn', '?')}")


def _tally(values) -> str:
    """"a (3), b (1)": distinct values, most common first."""
    c = Counter(str(v) for v in values if not _missing(v) and str(v) != "")
    return ", ".join(f"{v} ({_plural(n, 'trial')})" for v, n in c.most_common()) or "not recorded"


def _data_text(config: StudyConfig) -> str:
    if config.source == "default":
        from ..data.synthetic import VERSION

        return (f"the embedded synthetic set (scaling/data/synthetic.py, drawing version {VERSION}, seed 0): "
                f"{config.train_size or 5000:,} training and {config.val_size or 1000:,} validation images, "
                f"10 classes")
    sizes = ""
    if config.train_size or config.val_size:
        sizes = (f"; subsets of {config.train_size or 'all'} training and {config.val_size or 'all'} "
                 "validation images")
    path = Path(config.source).expanduser()
    try:
        if path.is_file():
            from ..data.folder import TarSource

            fp = TarSource(path).fingerprint("train")
            return f"{config.source} (fingerprint {fp}: path, size and modification time){sizes}"
        if path.is_dir():
            return f"{config.source} (a folder; not fingerprinted, which would read every file's metadata){sizes}"
    except OSError:
        pass
    return f"{config.source} (not found where this report was made){sizes}"


def _recipe_text(config: StudyConfig) -> str:
    try:
        r = config.training_recipe()
    except StudyError as e:
        return f"unreadable ({e})"
    parts = [f"{_plural(r.epochs, 'epoch')}", f"batch {r.batch_size}",
             f"{r.optimizer.upper() if r.optimizer == 'sgd' else r.optimizer} lr {r.lr:g} per 256 images",
             f"{r.warmup_epochs:g} warm-up epoch{'' if r.warmup_epochs == 1 else 's'}"]
    parts.append("cosine schedule" if r.schedule == "cosine"
                 else f"decay x{r.decay_rate:g} every {r.decay_epochs:g} epochs")
    parts += [f"weight decay {r.weight_decay:g}", f"label smoothing {r.label_smoothing:g}"]
    if r.ema:
        parts.append(f"EMA {r.ema:g}")
    return f"{r.name}: " + ", ".join(parts)


def _grid_text(config: StudyConfig) -> str:
    base = f"B0 at width {config.base_width:g}, depth {config.base_depth:g}, {config.base_resolution} px"
    rng = ", ".join(f"{k} {lo:g}–{hi:g}" for k, (lo, hi) in
                    (("α", config.alpha), ("β", config.beta), ("γ", config.gamma)))
    held = ("nominal FLOPs only" if config.flops_tolerance is None else
            f"realized FLOPs within {100 * config.flops_tolerance:g}% of {config.target:g}^φ × the base's")
    return (f"φ = {config.phi:g}; {rng} in steps of {config.step:g}; α·β²·γ² within {100 * config.tolerance:g}% "
            f"of {config.target:g}; {held}; base {base}; resolutions to multiples of {config.multiple}; "
            f"sampler {config.sampler}" + (f", {config.trials} trials" if config.trials else ""))


def _seeds_text(s: _Study) -> str:
    seeds = sorted({int(r.seed) for r in s.records if isinstance(r.seed, (int, float))})
    per = f"{s.config.seeds} per network in the search" if s.config else ""
    listed = ", ".join(map(str, seeds)) if seeds else "none recorded"
    return listed + (f" ({per})" if per else "")


def _provenance(s: _Study) -> list[tuple[str, str]]:
    from ..objective import code_version

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [("study", s.name), ("storage", _masked(s.url)),
           ("generated", f"{now} by scaling {code_version()}"),
           ("code version of the trials", _tally(_code_text(r) for r in s.records if r.network is not None)),
           ("software of the trials", _tally(_software_text(r) for r in s.records if r.network is not None)),
           ("packages (report environment)", _versions()),
           ("devices", _tally(r.device for r in s.records if r.network is not None)),
           ("seeds", _seeds_text(s))]
    if s.config is not None:
        out += [("data", _data_text(s.config)), ("recipe", _recipe_text(s.config)), ("grid", _grid_text(s.config))]
    else:
        out.append(("definition", "not found (no readable studies/NAME/study.json, no definition in the storage)"))
    return out


# ----------------------------------------------------------------------------- sections

def _summary(s: _Study, cands: pd.DataFrame | None, found: list | None = None) -> Section:
    sec = Section("Summary")
    queued = s.study.user_attrs.get("enqueued")
    r = s.results
    if r.empty:
        sec.paragraphs.append(f"No trial of study {s.name} has completed yet."
                              + (f" {_plural(s.running, 'trial is', 'trials are')} running." if s.running else ""))
    else:
        of = f" of the {queued} queued" if queued else ""
        grid = f" (the grid has {_plural(len(cands), 'distinct network')})" if cands is not None else ""
        sec.paragraphs.append(f"The search trained {_plural(len(r), 'network')}{of}{grid}, ranked by held-out "
                              "top-1 accuracy (the mean over seeds), and also at matched FLOPs (by the residual "
                              "over the grid's own line of top-1 against log FLOPs).")
        sec.paragraphs.append(_best_sentence(r))
        sec.paragraphs.append(_paper_sentence(s, cands, found))
    if s.running and not r.empty:
        sec.paragraphs.append(f"The study is still running: {_plural(s.running, 'trial is', 'trials are')} "
                              f"in training. This report is a snapshot; run `scaling report {s.name}` again later "
                              "to bring it up to date.")
    fails = len(s.failures) + len(s.series_failures)
    queued = int(s.failures["queued"].astype(bool).sum()) + int(s.series_failures["queued"].astype(bool).sum()) \
        if fails else 0
    if fails:
        again = (f" ({queued} of them stopped and queued again: the next run trains them)" if queued else "")
        sec.paragraphs.append(f"{_plural(fails, 'trial')} failed{again}; the section Failures lists them with their "
                              "reasons.")
    elif not r.empty or not s.series.empty:
        sec.paragraphs.append("No trial failed.")
    if s.series.empty:
        sec.paragraphs.append("No family or sweep has been trained for this study yet: `scaling family --train` "
                              "adds them (and `scaling sweep ... --train` the single-dimension sweeps).")
    return sec


def _best_sentence(r: pd.DataFrame) -> str:
    """The best triple by top-1 (the ranking the report's "best" uses), and the best at matched FLOPs."""
    best = r.iloc[0]
    tie = (r["top1"] == best["top1"]).sum()
    tied = f" ({tie} networks tie at this accuracy; the first trained is listed)" if tie > 1 else ""
    ratio = "" if _missing(best.get("flops_ratio")) else f", {float(best['flops_ratio']):.2f}× the base's FLOPs"
    out = (f"Best by top-1 (the ranking this report's best triple uses): (alpha, beta, gamma) = "
           f"{triple_text(best['alpha'], best['beta'], best['gamma'])}, top-1 {pct(best['top1'])} at "
           f"{flops_text(best['flops'])}{ratio}{tied}.")
    matched = r[r["rank_matched"] == 1] if "rank_matched" in r.columns else r.iloc[0:0]
    if len(matched):
        m = matched.iloc[0]
        same = " — the same network" if m["network"] == best["network"] else ""
        ties = int((r["top1_residual"] - m["top1_residual"]).abs().lt(1e-9).sum())
        tied = f" ({ties} networks tie; the first by top-1 is listed)" if ties > 1 else ""
        out += (f" Best at matched FLOPs: {triple_text(m['alpha'], m['beta'], m['gamma'])}, "
                f"{100 * float(m['top1_residual']):+.2f} points over the line{same}{tied}.")
    return out


def _paper_sentence(s: _Study, cands: pd.DataFrame | None, found: list | None = None) -> str:
    rank = paper_rank(s.results, s.search_records)
    if rank is not None:
        row = s.results[s.results["rank"] == rank].iloc[0]
        network = paper_network([r for r in s.search_records if r.status == "COMPLETE"])
        rec = next(r for r in s.search_records if r.status == "COMPLETE" and r.network == network)
        others = [str(t) for t in rec.triples if t != PAPER]
        same = f"; it rounds to the same network as {', '.join(others)}" if others else ""
        return f"The paper's {PAPER} ranks {rank} of {len(s.results)} (top-1 {pct(row['top1'])}{same})."
    if cands is not None and not any(PAPER in c.triples for c in found or ()):
        in_grid = s.config is not None and PAPER in s.config.grid().iter_triples()
        if not in_grid:
            return f"The paper's {PAPER} is not in this grid."
        return (f"The paper's {PAPER} is in the grid but not among the candidates: no resolution in the grid's "
                f"γ range holds its network within {100 * s.config.flops_tolerance:g}% of the FLOPs budget.")
    return f"The paper's {PAPER} has not been trained (yet)."


def _candidates(s: _Study, cands: pd.DataFrame, found: list) -> Section:
    """The grid's candidates ``found`` (``cands`` their candidates_frame), each with its trials' outcome."""
    from .. import plots as p

    c = s.config
    sec = Section("Candidates")
    held = "" if c.flops_tolerance is None else (
        f" Each is held to its realized FLOPs: within {100 * c.flops_tolerance:g}% of {c.target:g}^φ = "
        f"{c.target ** c.phi:g}× the base's; where rounding (repeats up, channels to multiples of 8) pushed a "
        f"network out, its resolution moved to the nearest size in budget (res px, with the γ^φ size in "
        f"brackets), and a triple that no size in the γ range holds was left out.")
    sec.paragraphs.append(
        f"The grid's (α, β, γ) triples with α·β²·γ² within {100 * c.tolerance:g}% of {c.target:g}, scaled at "
        f"φ = {c.phi:g} and merged by the network they round to: {_plural(len(cands), 'distinct network')}." + held
        + " × base is the realized FLOPs ratio; nominal the representative triple's own (α·β²·γ²)^φ.")
    # Trials go to candidates by triple: a trained network's key also holds the data's class count.
    trained = _trained_triples(s)
    failed = {r.triple for r in s.search_records if r.status == "FAIL" and not r.skipped and r.triple}
    in_training = {r.triple for r in s.search_records if r.status == "RUNNING" and r.trained and r.triple}
    unit, scale = flops_unit(cands["flops"])
    rows = []
    for i, (r, cand) in enumerate(zip(cands.itertuples(), found), 1):
        mine = cand.triples
        also = "; ".join(str(t) for t in mine[1:])
        hit = next((t for t in mine if t in trained), None)
        state = (pct(trained[hit]) if hit else "running" if any(t in in_training for t in mine)
                 else "failed" if any(t in failed for t in mine) else DASH)
        res = str(r.resolution) + ("" if r.resolution == r.nominal_resolution else f" ({r.nominal_resolution})")
        rows.append([str(i), num(r.alpha), num(r.beta), num(r.gamma), also or DASH, f"{r.d:.3f}", f"{r.w:.3f}",
                     res, str(r.repeats), params_m(r.params), sig3(r.flops / scale),
                     f"{r.flops_ratio:.3f}", f"{r.nominal_ratio:.3f}", state])
    sec.tables.append(Table(
        f"Candidate networks of the grid ({len(cands)}), with the search's top-1 where trained",
        ["#", "α", "β", "γ", "also rounds here", "d", "w", "res px", "repeats", "params (M)", unit, "× base",
         "nominal", "top-1"], rows))
    band = "" if c.flops_tolerance is None else f"; the band is the budget, {c.target ** c.phi:g}× ± " \
        f"{100 * c.flops_tolerance:g}%"
    sec.figures.append(Plot(p.realized_vs_nominal_flops(cands, c.flops_tolerance),
                            "Realized FLOPs ratio of each candidate against its nominal (α·β²·γ²)^φ; points off "
                            "the diagonal show what rounding and the budget's resolution do" + band + "."))
    return sec


def _trained_triples(s: _Study) -> dict:
    """Triple -> top-1 (the mean over seeds) of each trained network, by the representative
    triple of its first completed trial (the trial its results row is taken from)."""
    top1 = dict(zip(s.results["network"], s.results["top1"])) if not s.results.empty else {}
    out, seen = {}, set()
    for r in s.search_records:
        if r.status == "COMPLETE" and r.trained and r.network in top1 and r.network not in seen:
            seen.add(r.network)
            if r.triple is not None:
                out[r.triple] = top1[r.network]
    return out


def _search(s: _Study, cands: pd.DataFrame | None, found: list | None = None) -> Section:
    sec = Section("Search results")
    r = s.results
    if r.empty:
        sec.paragraphs.append(f"No trial of study {s.name} has completed yet, so there is no ranking.")
        return sec
    sec.paragraphs.append(_best_sentence(r) + " " + _paper_sentence(s, cands, found))
    unit, scale = flops_unit(r["flops"])
    rows = [[str(x.rank), num(x.alpha), num(x.beta), num(x.gamma), str(x.resolution), str(x.repeats),
             params_m(x.params), sig3(x.flops / scale),
             DASH if _missing(x.flops_ratio) else f"{float(x.flops_ratio):.2f}", pct(x.top1),
             points(x.top1_std) if x.seeds > 1 else DASH, str(x.seeds),
             DASH if _missing(x.top1_residual) else f"{100 * float(x.top1_residual):+.2f}",
             DASH if _missing(x.rank_matched) else str(int(x.rank_matched)),
             pct(x.top5), count(x.images_per_second)] for x in r.itertuples()]
    sec.tables.append(Table(f"Ranking of the {_plural(len(r), 'trained network')} by held-out top-1; at matched "
                            "FLOPs by the residual (pp) over the grid's line of top-1 against log FLOPs",
                            ["rank", "α", "β", "γ", "res px", "repeats", "params (M)", unit, "× base", "top-1",
                             "± std", "seeds", "vs line", "rank at FLOPs", "top-5", "train img/s"], rows))
    # The landscape marks the paper by (alpha, beta): give it the representative triple of the
    # network the paper's triple rounds to, and none when that network was not trained.
    rank = paper_rank(r, s.search_records)
    paper = None
    note = ""
    if rank is not None:
        row = r[r["rank"] == rank].iloc[0]
        paper = (float(row["alpha"]), float(row["beta"]), float(row["gamma"]))
        if paper != (PAPER.alpha, PAPER.beta, PAPER.gamma):
            note = f", plotted at its representative triple {triple_text(*paper)}"
    sec.figures.append(Plot(plots.search_landscape(r, paper=paper),
                            "Top-1 over the searched (α, β) plane (γ follows from the constraint); the star is "
                            "the best network" + ("" if paper is None else
                                                  f", the ring the network that the paper's {PAPER} rounds to" + note)
                            + "."))
    return sec


def _family(s: _Study) -> Section:
    df = s.series
    kinds = set(df["kind"]) if not df.empty else set()
    heading = {frozenset({"family", "official"}): "Compound family beside the official networks",
               frozenset({"official"}): "The official networks"}.get(frozenset(kinds & {"family", "official"}),
                                                                      "Compound family")
    sec = Section(heading)
    if df.empty:
        sec.paragraphs.append("No family or official network has been trained for this study: "
                              "`scaling family --train` adds them.")
        return sec
    part = df[df["kind"].isin(["family", "official"])]
    if part.empty:
        sec.paragraphs.append("No family or official network has been trained for this study: "
                              "`scaling family --train` adds them.")
    else:
        beside = (" beside the official EfficientNets' coefficients." if "official" in kinds else
                  ". No official network was trained: `scaling family --train --official` adds B0..B7's "
                  "coefficients.")
        sec.paragraphs.append(
            "Each compound-scaled family member (B0 scaled by d = α^φ, w = β^φ, r = γ^φ), trained with the "
            "study's recipe" + beside + " × base is the member's realized FLOPs over the base's. Latency is "
            f"inference at batch 1, infer img/s inference at batch {_inference_batch(part)}, train img/s the "
            "training speed, memory the training peak.")
        sec.tables.append(_series_table(part, "The compound-scaled family" + (" and the official networks"
                                                                              if "official" in kinds else ""),
                                        first=("series", "network", "φ")))
    good = {k: (sf.fit.law.a, sf.fit.law.b, sf.fit.law.c) for k, sf in s.fits.items() if sf.fit.ok}
    refused = [k for k, sf in s.fits.items() if not sf.fit.ok]
    sec.figures.append(Plot(plots.accuracy_vs_flops(df, good),
                            "Top-1 against FLOPs for every trained series"
                            + (", with the fitted laws dashed (the legend gives each law's limit 1 − c)" if good else "")
                            + (f"; no law is drawn for {', '.join(refused)} (see Scaling-law fits)" if refused else "")
                            + "."))
    if pd.to_numeric(df.get("latency_ms", pd.Series(dtype=float)), errors="coerce").notna().any():
        sec.figures.append(Plot(plots.accuracy_vs_latency(df),
                                "Top-1 against inference latency at batch 1, with the Pareto front."))
    return sec


def _inference_batch(part: pd.DataFrame) -> str:
    batch = pd.to_numeric(part.get("inference_batch", pd.Series(dtype=float)), errors="coerce").dropna()
    return f"{int(batch.iloc[0])}" if len(batch) and batch.nunique() == 1 else "256"


def _series_table(part: pd.DataFrame, caption: str, first: tuple[str, ...]) -> Table:
    """Members of series, with complexity, accuracy and speed; a speed column that no member has
    (memory on the CPU) is left out, and the caption says so."""
    part = part.sort_values(["kind", "series", "flops"], kind="stable")
    unit, scale = flops_unit(part["flops"])
    label = {"series": "series", "network": "network", "φ": "φ", "multiplier": "×"}
    columns: list[tuple[str, object]] = [
        ("series", lambda x: str(x.series)), ("network", lambda x: str(x.label)),
        ("φ", lambda x: num(x.phi)), ("multiplier", lambda x: num(x.multiplier)),
        ("d", lambda x: DASH if _missing(x.d) else f"{float(x.d):.3f}"),
        ("w", lambda x: DASH if _missing(x.w) else f"{float(x.w):.3f}"),
        ("res px", lambda x: DASH if _missing(x.resolution) else str(int(x.resolution))),
        ("params (M)", lambda x: params_m(x.params)),
        (unit, lambda x: DASH if _missing(x.flops) else sig3(float(x.flops) / scale)),
        ("× base", lambda x: DASH if _missing(getattr(x, "flops_ratio", None)) else f"{float(x.flops_ratio):.2f}"),
        ("top-1", lambda x: pct(x.top1)),
        ("± std", lambda x: points(x.top1_std) if not _missing(x.seeds) and x.seeds > 1 else DASH),
        ("train img/s", lambda x: count(getattr(x, "images_per_second", None))),
        ("latency ms", lambda x: sig3(getattr(x, "latency_ms", None))),
        ("infer img/s", lambda x: count(getattr(x, "throughput", None))),
        ("memory MB", lambda x: count(getattr(x, "peak_memory_mb", None))),
    ]
    optional = {"± std", "× base", "train img/s", "latency ms", "infer img/s", "memory MB"}
    if part.groupby("kind")["series"].nunique().max() <= 1:  # one series per kind: the labels tell them apart
        first = tuple(k for k in first if k != "series")
        named = [n for n in part["series"].astype(str).unique() if n not in ("official", "width", "depth",
                                                                           "resolution")]
        caption += f" ({', '.join(named)})" if named else ""
    chosen = [c for c in columns if c[0] in first or c[0] not in label]
    rows = [[fn(x) for _, fn in chosen] for x in part.itertuples()]
    keep = [j for j, (head, _) in enumerate(chosen) if head not in optional or any(r[j] != DASH for r in rows)]
    dropped = [chosen[j][0] for j in range(len(chosen)) if j not in keep]
    notes = []
    if "memory MB" in dropped:
        notes.append("no peak memory recorded (it is measured on GPUs)")
    if "± std" in dropped:
        notes.append("one seed per network")
    return Table(caption + (f"; {', '.join(notes)}" if notes else ""),
                 [label.get(chosen[j][0], chosen[j][0]) for j in keep], [[r[j] for j in keep] for r in rows])


def _sweeps(s: _Study) -> Section:
    sec = Section("Single-dimension sweeps")
    df = s.series
    part = df[df["kind"] == "sweep"] if not df.empty else df
    if part.empty:
        sec.paragraphs.append("No single-dimension sweep has been trained for this study: "
                              "`scaling sweep --dimension width --match family ... --train` adds one.")
    else:
        sec.paragraphs.append("The base scaled along one dimension only (width, depth or resolution), to compare "
                              "with compound scaling at similar FLOPs.")
        sec.tables.append(_series_table(part, "Single-dimension sweeps", first=("series", "network", "multiplier")))
    return sec


def _dimensions(s: _Study) -> Section | None:
    """Top-1 against width, depth and resolution, for every trained series (None without one)."""
    if s.series.empty:
        return None
    sec = Section("Top-1 by scaling dimension")
    names = ", ".join(str(n) for n in s.series["series"].astype(str).unique())
    sec.paragraphs.append(f"Each trained series ({names}) against each dimension alone.")
    for dim in ("width", "depth", "resolution"):
        sec.figures.append(Plot(plots.accuracy_vs_dimension(s.series, dim),
                                f"Top-1 against the {dim} of each network, per series."))
    return sec


def _fits(df: pd.DataFrame) -> dict[str, laws.SeriesFit]:
    """Series -> its laws.SeriesFit: the fit and the held-out check, or why there is none."""
    return laws.check_series(df, bootstrap=BOOTSTRAP)


def _ci(law: laws.PowerLaw, key: str, fmt) -> str:
    value = fmt(getattr(law, key))
    if key in law.ci:
        lo, hi = law.ci[key]
        return f"{value} [{fmt(lo)}, {fmt(hi)}]"
    return value


def _fit_section(s: _Study) -> Section:
    sec = Section("Scaling-law fits")
    if s.series.empty:
        sec.paragraphs.append("Nothing to fit: the fits need a trained family or sweep (`scaling family --train`).")
        return sec
    sec.paragraphs.append(
        "Per series, error = a · GFLOPs^(−b) + c (c ≥ 0 the irreducible error), least squares, with 95% "
        f"intervals from {BOOTSTRAP} bootstrap resamples of the points. The held-out check fits all but the "
        "largest member and predicts its top-1; a fit needs 4 distinct FLOPs values, the check 5 points. A fit "
        f"with a parameter at its bound, on a series whose top-1 falls as FLOPs grow (by more than "
        f"{100 * laws.MONOTONE_SLACK:g} points), or with an RMSE above the spread it explains is no law: it is "
        "listed as \"no law fits\" with the reason, and neither drawn nor given a limit.")
    rows = []
    for name, sf in s.fits.items():
        fit, held = sf.fit, sf.check
        law = fit.law
        if fit.ok:
            if held is not None:
                check = (f"at {flops_text(held.gflops * 1e9)}: predicted {pct(1 - held.predicted_error)}, "
                         f"measured {pct(1 - held.actual_error)}, off by {100 * held.abs_error:.2f} pp")
            else:
                check = sf.no_check
            rows.append([name, "fitted", str(law.n), _ci(law, "a", sig3), _ci(law, "b", sig3), _ci(law, "c", sig3),
                         pct(1 - law.c), f"{100 * law.rmse:.2f}", check])
        else:
            rows.append([name, fit.status, str(law.n) if law else DASH, DASH, DASH, DASH, DASH,
                         f"{100 * law.rmse:.2f}" if law else DASH, fit.reason])
    sec.tables.append(Table("Fitted laws per series: value [95% interval]",
                            ["series", "status", "points", "a", "b", "c", "top-1 limit", "RMSE pp",
                             "held-out check, or why no law fits"], rows,
                            align=["l", "l", "r", "l", "l", "l", "r", "r", "l"]))
    return sec


def _failures(s: _Study) -> Section | None:
    sec = Section("Failures")
    done = set(s.results["network"]) if not s.results.empty else set()
    done_series = set(s.series["network"]) if not s.series.empty else set()
    rows = []
    def now(r, trained) -> str:
        return "completed on a retry" if r.recovered or r.network in trained else (
            "queued again" if getattr(r, "queued", False) else "failed")

    for r in s.failures.itertuples():
        rows.append([s.name, str(r.trial), str(r.triples), _short(r.reason or "error"), now(r, done)])
    for r in s.series_failures.itertuples():
        label = getattr(r, "label", None)
        rows.append([str(r.study), str(r.trial), str(label if not _missing(label) else r.network),
                     _short(r.reason or "error"), now(r, done_series)])
    if not rows:
        return None  # the summary says so: a section (in the PDF, a page) of one sentence tells nothing more
    retried = sum(r[-1] == "completed on a retry" for r in rows)
    queued = sum(r[-1] == "queued again" for r in rows)
    sec.paragraphs.append(
        f"{_plural(len(rows), 'trial')} failed" + (f", {retried} of them trained again and completed" if retried else "")
        + (f", {queued} of them queued again for the next run" if queued else "")
        + ". A network is queued again when its worker died (its heartbeat went stale) or a signal stopped it; "
        "a network that failed in training (NaN loss, out of memory, an error) stays failed.")
    sec.tables.append(Table("Failed trials and their reasons", ["study", "trial", "network", "reason", "now"], rows,
                            align=["l", "r", "l", "l", "l"]))
    return sec


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- building

def _study_classes(s: _Study) -> int | None:
    """The classes the study counted its candidates with: its ``num_classes`` attribute; for a
    study from before it was recorded, its trials' (the data's classes, as they recorded them);
    None where neither is known (the study's spec then counts them: :func:`scaling.search.study_classes`)."""
    classes = s.study.user_attrs.get("num_classes")
    if classes is None:
        classes = next((r.num_classes for r in s.search_records if r.classes is not None), None)
    return classes


def build_report(name: str, studies_dir: Path = Path("studies"), storage: str | None = None) -> Report:
    """Read study NAME (and its family and sweep studies) and write the report's content.

    Raises:
        StudyError: no such study (one line, for the command line's exit code 2).
    """
    s = load(name, Path(studies_dir), storage)
    s.fits = _fits(s.series)
    cands, found = None, []
    if s.config is not None:
        from ..search import base_spec, study_candidates
        from ..tables import candidates_frame

        found = study_candidates(s.config, _study_classes(s))
        base = base_spec(s.config).replace(num_classes=found[0].spec.num_classes) if found else base_spec(s.config)
        cands = candidates_frame(found, base, target=s.config.target) if found else None
    sections = [_summary(s, cands, found)]
    if cands is not None:
        sections.append(_candidates(s, cands, found))
    sections += [_search(s, cands, found), _family(s), _sweeps(s), _dimensions(s), _fit_section(s), _failures(s)]
    sections = [sec for sec in sections if sec is not None]
    return Report(title=f"Compound-scaling study {name}", provenance=_provenance(s), sections=sections, name=name)
