"""The report's sections, each built from the loaded study (:class:`.load.StudyData`) and, for the
family and the fits, the series' laws (:func:`scaling.laws.check_series`): the summary, the grid's
candidates, the search's ranking, the family beside the official networks, the single-dimension
sweeps, top-1 by dimension, the scaling-law fits and the failures. :func:`build_sections` gives them
in the report's order, leaving out those with nothing to say.

Every number is formatted here (through :mod:`.formats`), once, so both renderings read the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .. import plots
from ..compound import PAPER
from ..laws import MONOTONE_SLACK, Holdout, PowerLaw, SeriesFit, with_base
from ..results import paper_network, paper_rank
from ..units import flops_unit
from .formats import count, flops_text, missing, num, params_m, pct, plural, points, short, sig3, triple_text
from .load import StudyData
from .model import DASH, Plot, Section, Table

BOOTSTRAP = 200  # resamples for the fits' 95% intervals (1000 take seconds per series)


class _Draft:
    """A section while its builder writes it: paragraphs, tables and figures added in order."""

    def __init__(self, heading: str):
        self.heading = heading
        self.paragraphs: list[str] = []
        self.tables: list[Table] = []
        self.figures: list[Plot] = []

    def done(self) -> Section:
        return Section(self.heading, tuple(self.paragraphs), tuple(self.tables), tuple(self.figures))


def build_sections(s: StudyData, fitted: Mapping[str, SeriesFit]) -> list[Section]:
    """The report's sections in order; ``fitted``: each series' fit (laws.check_series of ``s.series``)."""
    out = [summary(s), candidates(s), search(s), family(s.series, fitted, _base_name(s), _series_alone(s)),
           sweeps(s), latency(latency_frame(s)), dimensions(s), fits(s.series, fitted), failures(s)]
    return [sec for sec in out if sec is not None]


def summary(s: StudyData) -> Section:
    sec = _Draft("Summary")
    cands, r = s.candidates_frame, s.results
    if r.empty:
        sec.paragraphs.append(f"No trial of study {s.name} has completed yet."
                              + (f" {plural(s.running, 'trial is', 'trials are')} running." if s.running else ""))
    else:
        trials = int(pd.to_numeric(r["seeds"], errors="coerce").fillna(1).sum()) if "seeds" in r.columns else len(r)
        of = (f" in {plural(trials, 'trial')} ({trials - len(r)} of them a further seed)" if trials > len(r) else "")
        grid = f" (the grid has {plural(len(cands), 'distinct network')})" if cands is not None else ""
        sec.paragraphs.append(f"The search trained {plural(len(r), 'network')}{grid}{of}, ranked by held-out "
                              "top-1 accuracy (the mean over seeds), and also at matched FLOPs (by the residual "
                              "over the grid's own line of top-1 against log FLOPs).")
        sec.paragraphs.append(_best_sentence(r))
        sec.paragraphs.append(_paper_sentence(s))
    if s.running and not r.empty:
        sec.paragraphs.append(f"The study is still running: {plural(s.running, 'trial is', 'trials are')} "
                              f"in training. This report is a snapshot; run `scaling report {s.name}` again later "
                              "to bring it up to date.")
    fails = _failure_rows(s)
    if fails:
        sec.paragraphs.append(f"{_failure_counts(fails)}; the section Failures lists them with their reasons.")
    elif not r.empty or not s.series.empty:
        sec.paragraphs.append("No trial failed.")
    if s.series.empty:
        sec.paragraphs.append("No family or sweep has been trained for this study yet: `scaling family --train` "
                              "adds them (and `scaling sweep ... --train` the single-dimension sweeps).")
    return sec.done()


def _best_sentence(r: pd.DataFrame) -> str:
    """The best triple by top-1 (the ranking the report's "best" uses), and the best at matched FLOPs."""
    best = r.iloc[0]
    tie = (r["top1"] == best["top1"]).sum()
    tied = f" ({tie} networks tie at this accuracy; the first trained is listed)" if tie > 1 else ""
    ratio = "" if missing(best.get("flops_ratio")) else f", {float(best['flops_ratio']):.2f}× the base's FLOPs"
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


def _paper_sentence(s: StudyData) -> str:
    rank = paper_rank(s.results, s.search_records)
    if rank is not None:
        row = s.results[s.results["rank"] == rank].iloc[0]
        network = paper_network([r for r in s.search_records if r.status == "COMPLETE"])
        rec = next(r for r in s.search_records if r.status == "COMPLETE" and r.network == network)
        others = [str(t) for t in rec.triples if t != PAPER]
        same = f"; it rounds to the same network as {', '.join(others)}" if others else ""
        return f"The paper's {PAPER} ranks {rank} of {len(s.results)} (top-1 {pct(row['top1'])}{same})."
    if s.candidates_frame is not None and not any(PAPER in c.triples for c in s.candidates):
        in_grid = s.config is not None and PAPER in s.config.grid().iter_triples()
        if not in_grid:
            return f"The paper's {PAPER} is not in this grid."
        return (f"The paper's {PAPER} is in the grid but not among the candidates: no resolution in the grid's "
                f"γ range holds its network within {100 * s.config.flops_tolerance:g}% of the FLOPs budget.")
    return f"The paper's {PAPER} has not been trained (yet)."


def candidates(s: StudyData) -> Section | None:
    """The grid's candidates, each with its trials' outcome (None without a grid)."""
    if s.candidates_frame is None:
        return None
    c, cands, found = s.config, s.candidates_frame, s.candidates
    sec = _Draft("Candidates")
    held = "" if c.flops_tolerance is None else (
        f" Each is held to its realized FLOPs: within {100 * c.flops_tolerance:g}% of {c.target:g}^φ = "
        f"{c.target ** c.phi:g}× the base's; where rounding (repeats up, channels to multiples of 8) pushed a "
        f"network out, its resolution moved to the nearest size in budget (res px, with the γ^φ size in "
        f"brackets), and a triple that no size in the γ range holds was left out.")
    sec.paragraphs.append(
        f"The grid's (α, β, γ) triples with α·β²·γ² within {100 * c.tolerance:g}% of {c.target:g}, scaled at "
        f"φ = {c.phi:g} and merged by the network they round to: {plural(len(cands), 'distinct network')}." + held
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
    sec.figures.append(Plot(plots.realized_vs_nominal_flops(cands, c.flops_tolerance),
                            "Realized FLOPs ratio of each candidate against its nominal (α·β²·γ²)^φ; points off "
                            "the diagonal show what rounding and the budget's resolution do" + band + "."))
    return sec.done()


def _trained_triples(s: StudyData) -> dict:
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


def search(s: StudyData) -> Section:
    sec = _Draft("Search results")
    r = s.results
    if r.empty:
        sec.paragraphs.append(f"No trial of study {s.name} has completed yet, so there is no ranking.")
        return sec.done()
    sec.paragraphs.append(_best_sentence(r) + " " + _paper_sentence(s))
    unit, scale = flops_unit(r["flops"])
    rows = [[str(x.rank), num(x.alpha), num(x.beta), num(x.gamma), str(x.resolution), str(x.repeats),
             params_m(x.params), sig3(x.flops / scale),
             DASH if missing(x.flops_ratio) else f"{float(x.flops_ratio):.2f}", pct(x.top1),
             points(x.top1_std) if x.seeds > 1 else DASH, str(x.seeds),
             DASH if missing(x.top1_residual) else f"{100 * float(x.top1_residual):+.2f}",
             DASH if missing(x.rank_matched) else str(int(x.rank_matched)),
             pct(x.top5), count(x.images_per_second)] for x in r.itertuples()]
    sec.tables.append(Table(f"Ranking of the {plural(len(r), 'trained network')} by held-out top-1; at matched "
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
    return sec.done()


def _series_alone(s: StudyData) -> pd.Series:
    """Whether each series member's latency came from the speed pass (records.TrialRecord.speed_alone)."""
    series = s.records[len(s.search_records):]  # the search's records first, then its series studies'
    return pd.Series([r.speed_alone for r in series if r.status == "COMPLETE" and r.trained
                      and r.latency_ms is not None], dtype=object)


def _base_name(s: StudyData) -> str:
    """The study's base network as the report names it: "B0" for EfficientNet-B0, else its name."""
    base = s.config.base if s.config is not None else "efficientnet-b0"
    return "B0" if base == "efficientnet-b0" else base


def family(df: pd.DataFrame, fitted: Mapping[str, SeriesFit], base: str = "B0",
           speed_alone: pd.Series | None = None) -> Section:
    """The family and official networks (``df``: the series frame), and every series' top-1
    against FLOPs with the laws among ``fitted`` drawn."""
    kinds = set(df["kind"]) if not df.empty else set()
    heading = {frozenset({"family", "official"}): "Compound family beside the official networks",
               frozenset({"official"}): "The official networks"}.get(frozenset(kinds & {"family", "official"}),
                                                                      "Compound family")
    sec = _Draft(heading)
    if df.empty:
        sec.paragraphs.append("No family or official network has been trained for this study: "
                              "`scaling family --train` adds them.")
        return sec.done()
    part = df[df["kind"].isin(["family", "official"])]
    if part.empty:
        sec.paragraphs.append("No family or official network has been trained for this study: "
                              "`scaling family --train` adds them.")
    else:
        beside = (" beside the official EfficientNets' coefficients." if "official" in kinds else
                  ". No official network was trained: `scaling family --train --official` adds B0..B7's "
                  "coefficients.")
        sec.paragraphs.append(
            f"Each compound-scaled family member ({base} scaled by d = α^φ, w = β^φ, r = γ^φ), trained with the "
            "study's recipe" + beside + " × base is the member's realized FLOPs over the base's. Latency is "
            f"inference at batch 1, infer img/s inference at batch {_inference_batch(part)}, train img/s the "
            "training speed, memory the training peak.")
        sec.tables.append(_series_table(part, "The compound-scaled family" + (" and the official networks"
                                                                              if "official" in kinds else ""),
                                        first=("series", "network", "φ")))
    good = {k: (sf.fit.law.a, sf.fit.law.b, sf.fit.law.c) for k, sf in fitted.items() if sf.fit.ok}
    refused = [k for k, sf in fitted.items() if not sf.fit.ok]
    sec.figures.append(Plot(plots.accuracy_vs_flops(with_base(df), good),
                            "Top-1 against FLOPs for every trained series, each from the base network"
                            + (", with the fitted laws dashed (the legend gives each law's limit 1 − c)" if good else "")
                            + (f"; no law is drawn for {', '.join(refused)} (see Scaling-law fits)" if refused else "")
                            + "."))
    if pd.to_numeric(df.get("latency_ms", pd.Series(dtype=float)), errors="coerce").notna().any():
        alone = speed_alone if speed_alone is not None else pd.Series([None] * len(df))
        caveat = ("" if alone.eq(True).all() else
                  ": with several workers per GPU those measured during the search are not a benchmark of the networks")
        sec.figures.append(Plot(plots.accuracy_vs_latency(df),
                                "Top-1 against inference latency at batch 1, with the Pareto front. Each member's "
                                f"latency is measured on the device it trained on, {how_measured(alone)}{caveat}."))
    return sec.done()


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
        ("d", lambda x: DASH if missing(x.d) else f"{float(x.d):.3f}"),
        ("w", lambda x: DASH if missing(x.w) else f"{float(x.w):.3f}"),
        ("res px", lambda x: DASH if missing(x.resolution) else str(int(x.resolution))),
        ("params (M)", lambda x: params_m(x.params)),
        (unit, lambda x: DASH if missing(x.flops) else sig3(float(x.flops) / scale)),
        ("× base", lambda x: DASH if missing(getattr(x, "flops_ratio", None)) else f"{float(x.flops_ratio):.2f}"),
        ("top-1", lambda x: pct(x.top1)),
        ("± std", lambda x: points(x.top1_std) if not missing(x.seeds) and x.seeds > 1 else DASH),
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


def sweeps(s: StudyData) -> Section:
    sec = _Draft("Single-dimension sweeps")
    df = s.series
    part = df[df["kind"] == "sweep"] if not df.empty else df
    if part.empty:
        sec.paragraphs.append("No single-dimension sweep has been trained for this study: "
                              "`scaling sweep --dimension width --match family ... --train` adds one.")
    else:
        sec.paragraphs.append("The base scaled along one dimension only (width, depth or resolution), to compare "
                              "with compound scaling at similar FLOPs.")
        sec.tables.append(_series_table(part, "Single-dimension sweeps", first=("series", "network", "multiplier")))
    return sec.done()


def latency_frame(s: StudyData) -> pd.DataFrame:
    """Every completed trial of the study and its series that measured its latency (a series
    member's always, a grid network's on a GPU): network, FLOPs, activations, latency, device."""
    rows = [{"network": r.network, "flops": r.flops, "activations": r.activations, "latency_ms": r.latency_ms,
             "device": r.device, "alone": r.speed_alone} for r in s.records
            if r.status == "COMPLETE" and r.trained and r.latency_ms is not None]
    return pd.DataFrame(rows, columns=["network", "flops", "activations", "latency_ms", "device", "alone"])


def how_measured(alone: pd.Series) -> str:
    """How the latencies of ``alone`` (:func:`latency_frame`'s column) were measured, as a phrase
    that follows "measured": by the study's speed pass, in the trials, or some of each."""
    passed = int(alone.eq(True).sum())  # a column of True, False and None
    if passed == len(alone):
        return "after the workers ended, one network at a time alone on the device"
    pass_text = "after the workers ended, alone on the device"
    trial = ("right after each one's training, while the study's other workers on that device may still have "
             "been training")
    if passed == 0:
        return trial
    return f"for {passed} of {len(alone)} {pass_text}, for the others {trial}"


def latency(series: pd.DataFrame) -> Section | None:
    """How FLOPs, activations and measured latency relate across the trained networks
    (``series``: :func:`latency_frame`'s columns; :func:`scaling.latency.fit_frame`): the two fits
    of log latency and which predicts it better; None where none has a latency. Networks measured
    on several devices: those of the device most of them ran on."""
    from ..latency import MIN_POINTS, MIN_R2, fit_frame

    if series.empty or "latency_ms" not in series:
        return None
    df = series[pd.to_numeric(series["latency_ms"], errors="coerce") > 0]
    if df.empty:
        return None
    sec = _Draft("Latency against FLOPs and activations")
    devices = df["device"].fillna("").astype(str) if "device" in df else pd.Series([""] * len(df), index=df.index)
    on = devices.value_counts().index[0]
    note = ""
    if devices.nunique() > 1:
        note = (f" The members ran on {devices.nunique()} devices; only the {int((devices == on).sum())} measured "
                f"on {on or 'an unnamed device'} are compared.")
        df = df[devices == on]
    fits = fit_frame(df)
    where = f" on {on}" if on else ""
    sec.paragraphs.append(
        "FLOPs are not time: depthwise convolutions do few multiply-adds per byte they move, so a network of "
        "them can be bound by memory traffic. Across the trained networks (the series' members, and on a GPU "
        "the grid's too), log latency (batch 1, measured"
        f"{where} {how_measured(df['alone'] if 'alone' in df else pd.Series([None] * len(df)))}) is fitted by "
        "least squares against log FLOPs and "
        "against log activations (the elements the layers write); each fit's error is its RMSE in log space "
        "and as a typical relative error of the predicted latency, 100·(exp(RMSE) − 1); a fit predicts latency "
        f"only where latency grows with it and it explains at least {MIN_R2:g} of log latency's variance (R²). "
        "Networks of the same "
        f"FLOPs and activations (seeds, one network in two series) are one point; a fit needs {MIN_POINTS} distinct points." + note)
    sentence = fits.sentence()
    sec.paragraphs.append(sentence[0].upper() + sentence[1:] + ".")
    if fits.ok:
        def verdict(f) -> str:
            if not f.predicts:
                return "predicts nothing"
            return "better" if fits.better == f.predictor else ("tie" if fits.better == "tie" else DASH)

        rows = [[label, str(f.n), f"{f.slope:.3f}", f"{f.r2:.2f}", f"{f.rmse:.3f}", f"{f.pct:.1f}%", verdict(f)]
                for f, label in ((fits.flops, "log FLOPs"), (fits.activations, "log activations"))]
        sec.tables.append(Table("log latency fitted against log FLOPs and against log activations",
                                ["predictor", "points", "slope", "R²", "RMSE (log)", "error", "verdict"], rows,
                                align=["l", "r", "r", "r", "r", "r", "l"]))
    return sec.done()


def dimensions(s: StudyData) -> Section | None:
    """Top-1 against width, depth and resolution, for every trained series (None without one)."""
    if s.series.empty:
        return None
    sec = _Draft("Top-1 by scaling dimension")
    names = ", ".join(str(n) for n in s.series["series"].astype(str).unique())
    sec.paragraphs.append(f"Each trained series ({names}) against each dimension alone.")
    for dim in ("width", "depth", "resolution"):
        sec.figures.append(Plot(plots.accuracy_vs_dimension(s.series, dim),
                                f"Top-1 against the {dim} of each network, per series."))
    return sec.done()


def _ci(law: PowerLaw, key: str, fmt) -> str:
    value = fmt(getattr(law, key))
    if key in law.ci:
        lo, hi = law.ci[key]
        return f"{value} [{fmt(lo)}, {fmt(hi)}]"
    return value


def holdout_text(held: Holdout) -> str:
    """"at 439 MFLOPs: predicted 85.36% [84.00%, 86.01%], measured 85.13% ± 0.36 (inside the interval), off by 0.23 pp"."""
    said = f"at {flops_text(held.gflops * 1e9)}: predicted {pct(1 - held.predicted_error)}"
    if held.interval is not None:
        lo, hi = held.interval
        said += f" [{pct(1 - hi)}, {pct(1 - lo)}]"
    said += f", measured {pct(1 - held.actual_error)}"
    if held.actual_se is not None:
        said += f" ± {100 * held.actual_se:.2f}"
    if held.inside is not None:
        said += " (inside the interval)" if held.inside else " (outside the interval)"
    return said + f", off by {100 * held.abs_error:.2f} pp"


def fits(series: pd.DataFrame, fitted: Mapping[str, SeriesFit]) -> Section:
    """Each series' fit in ``fitted`` (laws.check_series of the series frame ``series``): the law
    with its intervals and held-out check, or why no law fits."""
    sec = _Draft("Scaling-law fits")
    if series.empty:
        sec.paragraphs.append("Nothing to fit: the fits need a trained family or sweep (`scaling family --train`).")
        return sec.done()
    sec.paragraphs.append(
        "Per series, error = a · GFLOPs^(−b) + c (c ≥ 0 the irreducible error), least squares, with 95% "
        f"intervals from {BOOTSTRAP} bootstrap resamples of the points; every series starts from the base network "
        "(phi = 0, trained once and shared by the series). The held-out check fits all but the largest member and "
        "predicts its top-1, with a 95% interval from the seeds' noise (each fitted point redrawn from its mean's "
        "standard error, with the series' seed std pooled, and the law refitted); a fit needs 4 distinct FLOPs "
        "values, the check 5 points. A fit "
        f"with a parameter at its bound, on a series whose top-1 falls as FLOPs grow (by more than "
        f"{100 * MONOTONE_SLACK:g} points), or with an RMSE above the spread it explains is no law: it is "
        "listed as \"no law fits\" with the reason, and neither drawn nor given a limit.")
    rows, checks = [], []  # the law's numbers, and apart (a column of its own would wrap to a word a line) its check
    for name, sf in fitted.items():
        fit, held = sf.fit, sf.check
        law = fit.law
        if fit.ok:
            rows.append([name, "fitted", str(law.n), _ci(law, "a", sig3), _ci(law, "b", sig3), _ci(law, "c", sig3),
                         pct(1 - law.c), f"{100 * law.rmse:.2f}"])
            checks.append([name, holdout_text(held) if held is not None else sf.no_check])
        else:
            rows.append([name, fit.status, str(law.n) if law else DASH, DASH, DASH, DASH, DASH,
                         f"{100 * law.rmse:.2f}" if law else DASH])
            checks.append([name, fit.reason])
    sec.tables.append(Table("Fitted laws per series: value [95% interval]",
                            ["series", "status", "points", "a", "b", "c", "top-1 limit", "RMSE pp"], rows,
                            align=["l", "l", "r", "l", "l", "l", "r", "r"]))
    sec.tables.append(Table("Each law's held-out check, or why no law fits",
                            ["series", "held-out check, or why no law fits"], checks, align=["l", "l"]))
    return sec.done()


RETRIED, QUEUED, FAILED = "completed on a retry", "queued again", "failed"


def _failure_rows(s: StudyData) -> list[list[str]]:
    """[study, trial, network, reason, now] of every failed trial, ``now`` one of RETRIED, QUEUED, FAILED."""
    done = set(s.results["network"]) if not s.results.empty else set()
    done_series = set(s.series["network"]) if not s.series.empty else set()

    def now(r, trained) -> str:
        return RETRIED if r.recovered or r.network in trained else (QUEUED if getattr(r, "queued", False) else FAILED)

    rows = [[s.name, str(r.trial), str(r.triples), short(r.reason or "error"), now(r, done)]
            for r in s.failures.itertuples()]
    for r in s.series_failures.itertuples():
        label = getattr(r, "label", None)
        rows.append([str(r.study), str(r.trial), str(label if not missing(label) else r.network),
                     short(r.reason or "error"), now(r, done_series)])
    return rows


def _failure_counts(rows: list[list[str]]) -> str:
    """"17 trials failed, all 17 trained again and completed" and the like."""
    retried = sum(r[-1] == RETRIED for r in rows)
    queued = sum(r[-1] == QUEUED for r in rows)
    if retried == len(rows):
        return f"{plural(len(rows), 'trial')} failed or were stopped, and every one was trained again and completed"
    return (f"{plural(len(rows), 'trial')} failed" + (f", {retried} of them trained again and completed" if retried else "")
            + (f", {queued} of them queued again for the next run" if queued else ""))


def failures(s: StudyData) -> Section | None:
    sec = _Draft("Failures")
    rows = _failure_rows(s)
    if not rows:
        return None  # the summary says so: a section (in the PDF, a page) of one sentence tells nothing more
    sec.paragraphs.append(
        _failure_counts(rows) + ". A network is queued again when its worker died (its heartbeat went stale) or a signal stopped it; "
        "a network that failed in training (NaN loss, out of memory, an error) stays failed.")
    sec.tables.append(Table("Failed trials and their reasons", ["study", "trial", "network", "reason", "now"], rows,
                            align=["l", "r", "l", "l", "l"]))
    return sec.done()

