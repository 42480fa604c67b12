"""Matplotlib figures for the compound-scaling study report, each returned as a Figure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.tri import Triangulation

from .laws import law_error
from .units import flops_unit

# One colour per kind of series (Okabe-Ito, colour-blind safe); the order is the legend order.
SERIES_COLORS: dict[str, str] = {
    "compound": "#0072B2",
    "width": "#E69F00",
    "depth": "#009E73",
    "resolution": "#CC79A7",
    "official": "#333333",
}
# Colours for series not named above, or for a second series of the same kind.
EXTRA_COLORS = ("#56B4E9", "#D55E00", "#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#888888")
SERIES_MARKERS: dict[str, str] = {"official": "s"}

ACCURACY_LABEL = "top-1 accuracy (%)"
FLOPS_LABEL = "FLOPs ({unit} multiply-adds, log scale)"
DIMENSIONS: dict[str, tuple[str, str]] = {
    "depth": ("d", "depth multiplier d (× base layers)"),
    "width": ("w", "width multiplier w (× base channels)"),
    "resolution": ("resolution", "input resolution (px)"),
}
SAVE_FORMATS = (".png", ".svg", ".pdf")
_FIGSIZE = (7.0, 4.5)


# ----------------------------------------------------------------------------- helpers

def _kind(series: str) -> str | None:
    """The key of SERIES_COLORS that ``series`` is, or starts with; None for another name."""
    name = str(series).strip().lower()
    for key in SERIES_COLORS:
        if name == key or name.startswith(key):
            return key
    return None


def _ordered(names: Iterable[str]) -> list[str]:
    """Series names in legend order: the known kinds first, in SERIES_COLORS order, then by name."""
    order = list(SERIES_COLORS)
    return sorted({str(n) for n in names}, key=lambda n: (order.index(k) if (k := _kind(n)) else len(order), n))


def _palette(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per series: the kind's colour once, extra colours for the rest."""
    out, used, extra = {}, set(), 0
    for name in _ordered(names):
        kind = _kind(name)
        if kind is not None and kind not in used:
            used.add(kind)
            color = SERIES_COLORS[kind]
        else:
            color = EXTRA_COLORS[extra % len(EXTRA_COLORS)]
            extra += 1
        out[name] = (color, SERIES_MARKERS.get(kind or "", "o"))
    return out


def _new_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _no_data(fig: Figure, ax: Axes) -> Figure:
    """Mark an axes as empty: no ticks, "no data" in its middle."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=14, color="0.4")
    return fig


def _clean(df: pd.DataFrame | None, required: Iterable[str], numeric: Iterable[str] = ()) -> pd.DataFrame:
    """A copy of ``df`` with ``numeric`` columns as floats and rows with NaN in them dropped.

    Raises:
        ValueError: ``df`` has rows but lacks a required column.
    """
    if df is None or df.empty:
        return pd.DataFrame()
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}; the frame has {', '.join(map(str, df.columns))}")
    out = df.copy()
    numeric = list(numeric)
    for col in numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out.dropna(subset=numeric)


def _number(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _log_x(ax: Axes, lo: float, hi: float) -> None:
    """Log x axis whose ticks read as plain numbers (0.5, 1, 2, 5), fewer over many decades."""
    ax.set_xscale("log")
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(1, 10)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _grid(ax: Axes) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.1)


def _legend(ax: Axes) -> None:
    """A legend only when there is more than one labelled artist; below the plot, outside the
    axes, where it can cover no point (the constrained layout makes room for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.figure.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=min(3, len(handles)),
                         frameon=False)


def _label_sides(data: pd.DataFrame) -> dict[str, bool]:
    """For each series with labels: True to write them below-right, False for above-left.

    The most accurate series gets above-left, where a rising curve leaves room, the next
    below-right, and so on alternately.
    """
    if "label" not in data.columns:
        return {}
    labelled = data[data["label"].notna()]
    ranked = labelled.groupby("series")["top1"].median().sort_values(ascending=False, kind="stable")
    return {name: i % 2 == 1 for i, name in enumerate(ranked.index)}


def _annotate(ax: Axes, xs: Iterable[float], ys: Iterable[float], texts: Iterable, color: str, below: bool) -> None:
    """Small text next to each point, above-left or below-right so two series don't collide."""
    offset, ha, va = ((4, -5), "left", "top") if below else ((-4, 5), "right", "bottom")
    for x, y, text in zip(xs, ys, texts):
        if pd.isna(text) or str(text) == "":
            continue
        ax.annotate(str(text), (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=7,
                    color=color, annotation_clip=False,
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.7})


# ----------------------------------------------------------------------------- figures

def accuracy_vs_flops(df: pd.DataFrame, fits: Mapping[str, tuple[float, float, float]] | None = None) -> Figure:
    """Top-1 accuracy against FLOPs, one line per series, optionally with fitted scaling laws.

    Args:
        df: Columns ``series``, ``flops`` (multiply-adds), ``top1`` (fraction); optional
            ``top1_std`` (error bars) and ``label`` (text by each point).
        fits: Series -> (a, b, c) of error = a * GFLOPs**(-b) + c, drawn dashed from the
            series' smallest FLOPs to twice its largest. Only laws that describe their
            series belong here (laws.Fit.ok).

    The axis is in GFLOPs or MFLOPs by the one rule of :func:`scaling.units.flops_unit`.

    Returns:
        The figure; "no data" when no row has both FLOPs and top-1.
    """
    data = _clean(df, ["series", "flops", "top1"], ["flops", "top1"])
    if not data.empty:
        data = data[data["flops"] > 0].copy()
    unit, scale = flops_unit(data["flops"] if not data.empty else [])
    fig, ax = _new_figure("Top-1 accuracy vs FLOPs", FLOPS_LABEL.format(unit=unit[0]), ACCURACY_LABEL)
    if data.empty:
        return _no_data(fig, ax)
    data["gflops"] = data["flops"] / scale  # in the axis' unit
    data["series"] = data["series"].astype(str)
    colors = _palette(data["series"])
    lo, hi = data["gflops"].min(), data["gflops"].max()
    below = _label_sides(data)
    floor = _off_scale_floor(data["top1"].to_numpy() * 100)
    for name, (color, marker) in colors.items():
        part = data[data["series"] == name].sort_values("gflops", kind="stable")
        x, y = part["gflops"].to_numpy(), part["top1"].to_numpy() * 100
        ax.plot(x, y, marker=marker, color=color, label=name, markersize=5, linewidth=1.5)
        if "top1_std" in part.columns:
            std = pd.to_numeric(part["top1_std"], errors="coerce").to_numpy() * 100
            ok = ~np.isnan(std)
            if ok.any():
                ax.errorbar(x[ok], y[ok], yerr=std[ok], fmt="none", ecolor=color, elinewidth=1.2, capsize=0)
        if name in below:
            shown = y >= floor  # the off-scale ones get their note on the axis' edge
            _annotate(ax, x[shown], y[shown], part["label"][shown], color, below=below[name])
    for name, params in (fits or {}).items():
        name = str(name)
        if name not in colors:
            continue
        a, b, c = (float(p) for p in params)
        part = data.loc[data["series"] == name, "gflops"]
        x = np.geomspace(part.min(), 2 * part.max(), 100)
        y = (1 - law_error(a, b, c, x * scale / 1e9)) * 100
        ax.plot(x, y, linestyle="--", linewidth=1.2, color=colors[name][0],
                label=f"{name} fit (→ {100 * (1 - c):.1f}%)")
        hi = max(hi, 2 * part.max())
    _log_x(ax, lo, hi)
    ax.margins(x=0.1, y=0.1)  # room for the labels by the first and last points
    _off_scale_below(ax, data, colors)
    _grid(ax)
    _legend(ax)
    return fig


OFF_SCALE_IQRS = 5.0  # a top-1 more than this many interquartile ranges below the first quartile is off the axis


def _off_scale_floor(top1: np.ndarray) -> float:
    """The top-1 (%) below which a point lies off the axis that holds the bulk of ``top1``."""
    q1, q3 = np.percentile(top1, [25, 75])
    return q1 - OFF_SCALE_IQRS * max(q3 - q1, 1.0)


def _off_scale_below(ax, data: pd.DataFrame, colors) -> None:
    """Keep the axis on the bulk of the points: a collapsed run (a network that did not train,
    30% where the rest lie at 78-86%) would squash them into a band. Points far below the
    first quartile are drawn as a ▼ on the axis' lower edge with their top-1 beside it."""
    y = data["top1"].to_numpy() * 100
    off = y < _off_scale_floor(y)
    if not off.any():
        return
    bulk = y[~off]
    span = max(bulk.max() - bulk.min(), 1.0)
    bottom = bulk.min() - 0.25 * span
    ax.set_ylim(bottom, bulk.max() + 0.15 * span)
    edge = bottom + 0.03 * span
    for (_, row), value in zip(data[off].iterrows(), y[off]):
        color = colors[str(row["series"])][0]
        ax.plot([row["gflops"]], [edge], marker="v", color=color, markersize=7, linestyle="none", clip_on=False)
        name = row.get("label")
        text = f"{name}: {value:.1f}%" if isinstance(name, str) and name else f"{value:.1f}%"
        ax.annotate(text + " (below the axis)", (row["gflops"], edge), xytext=(6, 2), textcoords="offset points",
                    fontsize=7, color=color)


def accuracy_vs_dimension(df: pd.DataFrame, dimension: str) -> Figure:
    """Top-1 accuracy against one scaling dimension, one line per series that varies in it.

    A series with several points all at one value of the dimension (the depth series on a
    width plot) would be a vertical line over the others; it is named in a note instead,
    unless no series varies. Where members of a series share a value (two family members
    at 40 px), each is marked and the line goes through their mean, never up and down.

    Args:
        df: Columns ``series``, ``top1`` (fraction) and ``d``, ``w`` or ``resolution``.
        dimension: "depth" (column ``d``), "width" (``w``) or "resolution" (``resolution``, px).

    Raises:
        ValueError: Another dimension.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; use one of {', '.join(DIMENSIONS)}")
    col, xlabel = DIMENSIONS[dimension]
    fig, ax = _new_figure(f"Top-1 accuracy vs {dimension}", xlabel, ACCURACY_LABEL)
    data = _clean(df, ["series", col, "top1"], [col, "top1"])
    if data.empty:
        return _no_data(fig, ax)
    data["series"] = data["series"].astype(str)
    groups = data.groupby("series")[col]
    varying = [n for n, g in groups if len(g) == 1 or g.nunique() > 1]
    held = [] if not varying else sorted(set(data["series"]) - set(varying))
    for name, (color, marker) in _palette(data["series"]).items():
        if name in held:
            continue
        part = data[data["series"] == name].sort_values(col, kind="stable")
        line = part.groupby(col, sort=True)["top1"].mean()
        ax.plot(line.index, line.to_numpy() * 100, marker=marker, color=color, label=name, markersize=5)
        shared = part[part.duplicated(col, keep=False)]
        if not shared.empty:  # the members behind a mean, each marked
            ax.scatter(shared[col], shared["top1"] * 100, marker=marker, facecolors="none", edgecolors=color, s=25,
                       zorder=3)
    if held:
        ax.text(0.01, 0.99, f"not varied in {dimension}, not shown: {', '.join(held)}", transform=ax.transAxes,
                ha="left", va="top", fontsize=7, color="0.4")
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.margins(x=0.06, y=0.1)
    _grid(ax)
    _legend(ax)
    return fig


def search_landscape(results: pd.DataFrame, paper: tuple[float, float, float] | None = (1.2, 1.1, 1.15)) -> Figure:
    """Top-1 accuracy over the searched (alpha, beta) plane, gamma implied by the constraint.

    Filled contours when there are at least 6 points and they triangulate, with the points
    on top; the best point and, if searched, the paper's are labelled.

    Args:
        results: Columns ``alpha``, ``beta``, ``gamma``, ``top1`` (fraction), one row per network.
        paper: The paper's (alpha, beta, gamma), or None for no mark.
    """
    fig, ax = _new_figure("Search landscape: top-1 over (α, β), γ implied",
                          "α (depth coefficient)", "β (width coefficient)")
    data = _clean(results, ["alpha", "beta", "gamma", "top1"], ["alpha", "beta", "top1"])
    if data.empty:
        return _no_data(fig, ax)
    data = data.reset_index(drop=True)  # the labels below go by row
    a, b, z = data["alpha"].to_numpy(), data["beta"].to_numpy(), data["top1"].to_numpy() * 100
    lo, hi = float(z.min()), float(z.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    levels = MaxNLocator(nbins=10).tick_values(lo, hi)
    norm, cmap = Normalize(levels[0], levels[-1]), "viridis"
    mappable = None
    if len(data) >= 6 and float(z.max() - z.min()) > 0:
        try:
            tri = Triangulation(a, b)
            mappable = ax.tricontourf(tri, z, levels=levels, cmap=cmap, norm=norm, alpha=0.85)
        except (ValueError, RuntimeError):  # e.g. all points on one line: keep the scatter
            mappable = None
    points = ax.scatter(a, b, c=z, cmap=cmap, norm=norm, s=45, edgecolors="black", linewidths=0.6, zorder=3)
    bar = fig.colorbar(mappable if mappable is not None else points, ax=ax, label=ACCURACY_LABEL)
    bar.locator = MaxNLocator(nbins=6)
    bar.formatter = FuncFormatter(_number)
    bar.update_ticks()

    best = data.loc[data["top1"].idxmax()]
    marks = {best.name: f"best ({best['alpha']:g}, {best['beta']:g}, {best['gamma']:g})"}
    if paper is not None:
        hit = data[np.isclose(data["alpha"], paper[0], atol=1e-6) & np.isclose(data["beta"], paper[1], atol=1e-6)]
        if not hit.empty:
            key = hit.index[0]
            marks[key] = f"{marks[key]} = paper" if key in marks else "paper"
            ax.scatter([hit.loc[key, "alpha"]], [hit.loc[key, "beta"]], s=160, facecolors="none",
                       edgecolors="#D55E00", linewidths=1.8, zorder=4)
    ax.scatter([best["alpha"]], [best["beta"]], c=[best["top1"] * 100], cmap=cmap, norm=norm, marker="*", s=260,
               edgecolors="black", linewidths=0.8, zorder=5)
    a_mid, b_mid = (a.min() + a.max()) / 2, (b.min() + b.max()) / 2
    for key, text in marks.items():
        x, y = data.loc[key, "alpha"], data.loc[key, "beta"]
        right, up = x <= a_mid, y <= b_mid  # put the text towards the middle, away from the frame
        ax.annotate(text, (x, y), xytext=(14 if right else -14, 14 if up else -14), textcoords="offset points",
                    ha="left" if right else "right", va="bottom" if up else "top", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.5", "alpha": 0.9},
                    arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.8}, zorder=6)
    for lim, v in ((ax.set_xlim, a), (ax.set_ylim, b)):  # room for the markers at the edges
        pad = max(v.max() - v.min(), 0.05 * abs(v.max()), 1e-3) * 0.06
        lim(v.min() - pad, v.max() + pad)
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.yaxis.set_major_formatter(FuncFormatter(_number))
    ax.grid(True, alpha=0.2)
    return fig


def realized_vs_nominal_flops(cands: pd.DataFrame, tolerance: float | None = None) -> Figure:
    """Realized FLOPs ratio of each candidate against its nominal (alpha*beta^2*gamma^2)^phi.

    Points off the y = x diagonal show what rounding depth, width and resolution does; the
    shaded band is the budget the candidates are held to.

    Args:
        cands: Columns ``nominal_ratio`` ((alpha*beta^2*gamma^2)^phi), ``flops_ratio``
            (realized), and optionally ``budget_ratio`` (target^phi) and ``phi``.
        tolerance: The band around ``budget_ratio`` (e.g. 0.1), or None for no band.
    """
    xlabel = r"nominal FLOPs ratio $(\alpha\beta^2\gamma^2)^\phi$ (× base)"
    fig, ax = _new_figure("Realized vs nominal FLOPs", xlabel, "realized FLOPs ratio (× base)")
    cols = ["nominal_ratio", "flops_ratio"]
    data = _clean(cands, cols, cols)
    if not data.empty:
        data = data[data["nominal_ratio"] > 0].copy()
    if data.empty:
        return _no_data(fig, ax)
    x, y = data["nominal_ratio"].to_numpy(), data["flops_ratio"].to_numpy()
    budgets = np.unique(pd.to_numeric(data.get("budget_ratio", pd.Series(dtype=float)), errors="coerce").dropna())
    phis = np.unique(pd.to_numeric(data.get("phi", pd.Series(dtype=float)), errors="coerce").dropna())
    if len(phis) == 1 and len(budgets) == 1:
        ax.set_title(f"Realized vs nominal FLOPs at $\\phi$ = {phis[0]:g} (budget {budgets[0]:g}× base)")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    if tolerance is not None and len(budgets) == 1:
        lo, hi = min(lo, budgets[0] * (1 - tolerance)), max(hi, budgets[0] * (1 + tolerance))
    pad = max(hi - lo, 0.02 * hi, 1e-3) * 0.08
    lo, hi = lo - pad, hi + pad
    if tolerance is not None and len(budgets) == 1:
        ax.axhspan(budgets[0] * (1 - tolerance), budgets[0] * (1 + tolerance), color="#E69F00", alpha=0.15,
                   label=f"budget {budgets[0]:g}× ± {100 * tolerance:g}%")
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.5", linewidth=1, label="y = x (no rounding)")
    ax.scatter(x, y, s=30, color=SERIES_COLORS["compound"], edgecolors="white", linewidths=0.5,
               label="candidates", zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    _grid(ax)
    _legend(ax)
    return fig


def pareto_front(df: pd.DataFrame, x: str = "latency_ms", y: str = "top1") -> pd.DataFrame:
    """The rows no other row beats: none has lower-or-equal ``x`` and higher-or-equal ``y`` with one strict.

    Rows with NaN in ``x`` or ``y`` are ignored; identical points are all kept.

    Returns:
        Those rows, with their index, sorted by ``x``.
    """
    data = _clean(df, [x, y], [x, y])
    if data.empty:
        return data if df is None else df.iloc[0:0].copy()
    data = data.sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best, last_x = [], -math.inf, None
    for key, xv, yv in zip(data.index, data[x], data[y]):
        if yv > best or (yv == best and xv == last_x):
            keep.append(key)
            best, last_x = yv, xv
    return df.loc[keep]


def accuracy_vs_latency(df: pd.DataFrame) -> Figure:
    """Top-1 accuracy against latency, one scatter per series, with the Pareto front as a step line.

    Args:
        df: Columns ``latency_ms`` and ``top1`` (fraction); optional ``series`` and ``label``.
    """
    fig, ax = _new_figure("Top-1 accuracy vs latency", "latency (ms)", ACCURACY_LABEL)
    data = _clean(df, ["latency_ms", "top1"], ["latency_ms", "top1"])
    if data.empty:
        return _no_data(fig, ax)
    data["series"] = data["series"].astype(str) if "series" in data.columns else "networks"
    below = _label_sides(data)
    for name, (color, marker) in _palette(data["series"]).items():
        part = data[data["series"] == name]
        ax.scatter(part["latency_ms"], part["top1"] * 100, color=color, marker=marker, s=35, label=name, zorder=3)
        if name in below:
            _annotate(ax, part["latency_ms"], part["top1"] * 100, part["label"], color, below=below[name])
    front = pareto_front(data)
    ax.step(front["latency_ms"], front["top1"] * 100, where="post", color="0.2", linewidth=1.2,
            alpha=0.8, label="Pareto front", zorder=2)
    ax.margins(x=0.1, y=0.1)
    _grid(ax)
    _legend(ax)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG, SVG or PDF by the suffix (PNG without one), creating parent folders.

    Raises:
        ValueError: Another suffix.
    """
    path = Path(path)
    if path.suffix == "":
        path = path.with_name(path.name + ".png")
    fmt = path.suffix.lower()
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"cannot save as {path.suffix!r}; use one of {', '.join(SAVE_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=fmt[1:], bbox_inches="tight")
    return path
