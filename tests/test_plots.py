"""The report's figures: what each draws, empty and NaN input, saving."""

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from scaling.plots import (
    SERIES_COLORS,
    accuracy_vs_dimension,
    accuracy_vs_flops,
    accuracy_vs_latency,
    pareto_front,
    realized_vs_nominal_flops,
    save,
    search_landscape,
)

PNG = b"\x89PNG"


def saved_png(fig: Figure, tmp_path, name: str) -> bytes:
    path = save(fig, tmp_path / name)
    assert path == tmp_path / name and path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG)
    return data


def series_lines(ax):
    """The solid lines (one per series), leaving out dashed fits and the grid."""
    return [line for line in ax.get_lines() if line.get_linestyle() == "-"]


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def same_color(a, b) -> bool:
    return mcolors.to_hex(a) == mcolors.to_hex(b)


@pytest.fixture
def flops_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "series": ["compound", "compound", "compound", "width", "width", "official"],
        "flops": [1.6e9, 0.39e9, 0.8e9, 0.39e9, 0.9e9, 0.70e9],
        "top1": [0.80, 0.77, 0.79, 0.77, np.nan, 0.791],
        "top1_std": [0.002, np.nan, 0.003, np.nan, np.nan, np.nan],
        "label": ["phi=2", "phi=0", "phi=1", None, None, "b1"],
    })


def test_accuracy_vs_flops(flops_frame, tmp_path):
    fig = accuracy_vs_flops(flops_frame)
    saved_png(fig, tmp_path, "flops.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "GFLOPs" in ax.get_xlabel() or "G multiply-adds" in ax.get_xlabel()
    assert "%" in ax.get_ylabel() and ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"compound", "width", "official"} and len(ax.get_lines()) == 3
    # sorted by FLOPs, in GFLOPs and percent; the NaN row of "width" is dropped
    np.testing.assert_allclose(lines["compound"].get_xdata(), [0.39, 0.8, 1.6])
    np.testing.assert_allclose(lines["compound"].get_ydata(), [77.0, 79.0, 80.0])
    assert len(lines["width"].get_xdata()) == 1
    for name, line in lines.items():
        assert same_color(line.get_color(), SERIES_COLORS[name])
    assert len(ax.collections) == 1  # error bars for the two compound points with a std
    assert {"phi=0", "phi=1", "phi=2", "b1"} <= set(texts(fig))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["compound", "width", "official"]


def test_accuracy_vs_flops_fits(flops_frame, tmp_path):
    a, b, c = 0.03, 0.6, 0.18
    fig = accuracy_vs_flops(flops_frame, fits={"compound": (a, b, c), "absent": (1, 1, 1)})
    saved_png(fig, tmp_path, "fits.png")
    ax = fig.axes[0]
    assert len(series_lines(ax)) == 3
    fits = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(fits) == 1
    fit = fits[0]
    assert same_color(fit.get_color(), SERIES_COLORS["compound"]) and "compound" in fit.get_label()
    x, y = fit.get_xdata(), fit.get_ydata()
    assert x[0] == pytest.approx(0.39) and x[-1] == pytest.approx(3.2)  # twice the largest FLOPs
    np.testing.assert_allclose(y, (1 - (a * x ** (-b) + c)) * 100)
    assert ax.get_xlim()[1] >= 3.2


def test_series_colour_by_kind_prefix():
    df = pd.DataFrame({"series": ["compound (1.2, 1.1, 1.15)"] * 2 + ["compound (1.4, 1, 1.2)"] * 2,
                       "flops": [1e9, 2e9, 1e9, 2e9], "top1": [0.7, 0.8, 0.71, 0.79]})
    lines = accuracy_vs_flops(df).axes[0].get_lines()
    colors = {mcolors.to_hex(line.get_color()) for line in lines}
    assert len(colors) == 2 and SERIES_COLORS["compound"].lower() in colors


@pytest.mark.parametrize("dimension,column,unit", [("depth", "d", "×"), ("width", "w", "×"),
                                                   ("resolution", "resolution", "px")])
def test_accuracy_vs_dimension(dimension, column, unit, tmp_path):
    df = pd.DataFrame({
        "series": ["depth", "depth", "width", "width", "compound", "compound"],
        "d": [1.0, 2.0, 1.0, 1.0, 1.0, 1.2],
        "w": [1.0, 1.0, 1.0, 1.6, 1.0, 1.1],
        "resolution": [224, 224, 224, 224, 224, 256],
        "top1": [0.77, 0.78, 0.77, 0.785, 0.77, np.nan],
    })
    fig = accuracy_vs_dimension(df, dimension)
    saved_png(fig, tmp_path, f"{dimension}.png")
    ax = fig.axes[0]
    assert unit in ax.get_xlabel() and "%" in ax.get_ylabel() and dimension in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    # "compound" is one point after its NaN row goes; the series held fixed in this dimension is noted instead
    held = {"depth": {"width"}, "width": {"depth"}, "resolution": {"depth", "width"}}[dimension]
    assert set(lines) == {"depth", "width", "compound"} - held
    assert len(lines["compound"].get_xdata()) == 1
    assert any(all(h in t for h in held) and "not shown" in t for t in texts(fig))


def test_accuracy_vs_dimension_keeps_all_when_none_varies():
    df = pd.DataFrame({"series": ["depth", "depth", "width", "width"], "w": [1.0] * 4,
                       "top1": [0.7, 0.8, 0.7, 0.75]})
    assert len(accuracy_vs_dimension(df, "width").axes[0].get_lines()) == 2


def test_accuracy_vs_dimension_rejects_other_dimension():
    with pytest.raises(ValueError, match="depth, width, resolution"):
        accuracy_vs_dimension(pd.DataFrame(), "channels")


def landscape(n: int) -> pd.DataFrame:
    grid = [(1.2, 1.1, 1.15, 0.80), (1.0, 1.0, 1.41, 0.76), (1.4, 1.0, 1.2, 0.77),
            (1.0, 1.2, 1.18, 0.775), (1.4, 1.2, 1.0, 0.765), (1.2, 1.0, 1.29, 0.79)]
    return pd.DataFrame(grid[:n], columns=["alpha", "beta", "gamma", "top1"])


def test_search_landscape_contours(tmp_path):
    df = landscape(6)
    df.loc[6] = [1.3, 1.05, 1.2, np.nan]  # dropped
    fig = search_landscape(df)
    saved_png(fig, tmp_path, "landscape.png")
    ax, bar = fig.axes
    assert "α" in ax.get_xlabel() and "β" in ax.get_ylabel() and ax.get_title()
    assert "%" in bar.get_ylabel()
    assert len(ax.collections) > 1  # the filled contours under the points
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [6, 1, 1]  # the points, the paper's ring, the best's star
    labels = texts(fig)
    assert "best (1.2, 1.1, 1.15) = paper" in labels


def test_search_landscape_marks_best_and_paper_apart(tmp_path):
    df = landscape(6)
    df.loc[0, "top1"] = 0.70
    labels = texts(search_landscape(df))
    assert "paper" in labels and "best (1.2, 1, 1.29)" in labels
    assert "paper" not in texts(search_landscape(df, paper=(1.3, 1.1, 1.1)))


@pytest.mark.parametrize("n", [2, 4])
def test_search_landscape_scatter_only(n, tmp_path):
    fig = search_landscape(landscape(n))
    saved_png(fig, tmp_path, f"landscape{n}.png")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the colour bar
    assert all(isinstance(c, PathCollection) for c in ax.collections)  # scatters only, no contours
    assert len(ax.collections[0].get_offsets()) == n


def test_search_landscape_collinear_points_fall_back_to_scatter():
    df = pd.DataFrame({"alpha": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], "beta": [1.1] * 6, "gamma": [1.2] * 6,
                       "top1": [0.7, 0.72, 0.74, 0.73, 0.71, 0.7]})
    fig = search_landscape(df)
    assert len(fig.axes) == 2 and len(fig.axes[0].collections[0].get_offsets()) == 6


def test_realized_vs_nominal_flops(tmp_path):
    cands = pd.DataFrame({"nominal_ratio": [4.0, 1.96**2, 2.05**2, np.nan], "budget_ratio": [4.0] * 4,
                          "phi": [2.0] * 4, "flops_ratio": [4.1, 3.7, 4.3, 4.0]})
    fig = realized_vs_nominal_flops(cands, tolerance=0.1)
    saved_png(fig, tmp_path, "realized.png")
    ax = fig.axes[0]
    assert "nominal" in ax.get_xlabel() and ax.get_ylabel() == "realized FLOPs ratio (× base)"
    assert "= 2 (budget 4× base)" in ax.get_title()
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points[0].get_offsets(), [[4.0, 4.1], [1.96**2, 3.7], [2.05**2, 4.3]])
    (diagonal,) = ax.get_lines()
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    lo, hi = diagonal.get_xdata()
    assert lo < 3.6 and hi > 4.4  # the band 3.6..4.4 is inside
    (band,) = [p for p in ax.patches if p.get_label().startswith("budget")]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    assert (ys.min(), ys.max()) == pytest.approx((3.6, 4.4))


def _inside(fig, artist) -> bool:
    """Whether the artist's drawn box lies inside the figure."""
    fig.canvas.draw()
    box, frame = artist.get_window_extent(), fig.bbox
    return box.x0 >= frame.x0 - 0.5 and box.x1 <= frame.x1 + 0.5 and box.y0 >= frame.y0 - 0.5 and box.y1 <= frame.y1 + 0.5


def _covers(fig, legend, ax) -> list:
    """The data points (in display coordinates) that the legend's box covers."""
    fig.canvas.draw()
    box = legend.get_window_extent()
    xy = [line.get_xydata() for line in ax.get_lines()] + [c.get_offsets() for c in ax.collections]
    return [(x, y) for part in xy for x, y in ax.transData.transform(np.asarray(part, dtype=float))
            if box.contains(x, y)]


def test_legend_and_labels_cover_nothing_and_are_not_clipped():
    # Issue 9: the legend covered the phi=3 point and the phi=1 label was cut at the frame.
    df = pd.DataFrame({"series": ["compound (1.2, 1.1, 1.15)"] * 4 + ["official"] * 4,
                       "flops": [2.1e6, 4.2e6, 8.3e6, 16.7e6, 2.2e6, 4.0e6, 8.0e6, 16.0e6],
                       "top1": [0.248, 0.414, 0.204, 0.186, 0.24, 0.30, 0.35, 0.33],
                       "label": ["phi=0", "phi=1", "phi=2", "phi=3", "B0", "B1", "B2", "B3"],
                       "latency_ms": [1.0, 1.5, 2.5, 4.0, 1.1, 1.6, 2.4, 4.2]})
    for fig in (accuracy_vs_flops(df, {"compound (1.2, 1.1, 1.15)": (0.1, 0.5, 0.5)}), accuracy_vs_latency(df)):
        ax = fig.axes[0]
        legend = fig.legends[0] if fig.legends else ax.get_legend()
        assert _covers(fig, legend, ax) == [] and _inside(fig, legend)
        labels = [t for t in ax.texts if t.get_text().startswith(("phi", "B"))]
        assert labels and all(_inside(fig, t) for t in labels)


def test_flops_axis_follows_the_tables_unit():
    small = pd.DataFrame({"series": ["s"] * 3, "flops": [0.5e6, 1e6, 2e6], "top1": [0.2, 0.3, 0.4]})
    ax = accuracy_vs_flops(small).axes[0]
    assert ax.get_xlabel().startswith("FLOPs (M multiply-adds")
    np.testing.assert_allclose(series_lines(ax)[0].get_xdata(), [0.5, 1, 2])
    big = small.assign(flops=small["flops"] * 1e3)
    assert accuracy_vs_flops(big).axes[0].get_xlabel().startswith("FLOPs (G multiply-adds")


def test_members_sharing_a_resolution_draw_no_zig_zag():
    df = pd.DataFrame({"series": ["compound"] * 4, "resolution": [32, 40, 40, 48], "top1": [0.3, 0.5, 0.4, 0.45]})
    ax = accuracy_vs_dimension(df, "resolution").axes[0]
    line = series_lines(ax)[0]
    np.testing.assert_allclose(line.get_xdata(), [32, 40, 48])  # one point per resolution: no vertical segment
    np.testing.assert_allclose(line.get_ydata(), [30, 45, 45])
    (marks,) = ax.collections
    np.testing.assert_allclose(marks.get_offsets(), [[40, 50], [40, 40]])  # the two behind the mean, marked


def test_pareto_front():
    df = pd.DataFrame({
        "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "latency_ms": [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, np.nan, 4.0],
        "top1": [0.70, 0.75, 0.74, 0.75, 0.80, 0.79, 0.99, 0.80],
    })
    # c: same latency as b, less accurate; d: slower than b, no better; f: slower, less accurate than e;
    # g: no latency; h: the same point as e, so neither beats the other
    front = pareto_front(df)
    assert list(front["name"]) == ["a", "b", "e", "h"]
    assert list(front.index) == [0, 1, 4, 7]
    # the other way round (least accurate, slowest): c beats b (same latency, lower top1), f beats e and h
    assert list(pareto_front(df, x="top1", y="latency_ms")["name"]) == ["a", "c", "d", "f"]
    assert pareto_front(df.iloc[0:0]).empty and pareto_front(pd.DataFrame()).empty


def test_accuracy_vs_latency(tmp_path):
    df = pd.DataFrame({
        "series": ["official", "official", "official", "compound", "compound"],
        "latency_ms": [3.0, 5.0, 9.0, 4.0, 8.0],
        "top1": [0.77, 0.79, 0.81, 0.76, 0.815],
        "label": ["b0", "b1", "b2", "phi=0", "phi=1"],
    })
    fig = accuracy_vs_latency(df)
    saved_png(fig, tmp_path, "latency.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "latency (ms)" and "%" in ax.get_ylabel() and ax.get_title()
    assert len(ax.collections) == 2
    (front,) = ax.get_lines()
    assert front.get_label() == "Pareto front"
    assert front.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(front.get_xdata(), [3.0, 5.0, 8.0])
    np.testing.assert_allclose(front.get_ydata(), [77.0, 79.0, 81.5])
    assert {"b0", "phi=1"} <= set(texts(fig))


def test_accuracy_vs_latency_without_series():
    df = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0], "top1": [0.7, 0.8, np.nan]})
    ax = accuracy_vs_latency(df).axes[0]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 2


EMPTY_CALLS = {
    "flops": lambda df: accuracy_vs_flops(df, fits={"compound": (1, 1, 0)}),
    "dimension": lambda df: accuracy_vs_dimension(df, "width"),
    "landscape": search_landscape,
    "realized": realized_vs_nominal_flops,
    "latency": accuracy_vs_latency,
}
NAN_FRAMES = {
    "flops": pd.DataFrame({"series": ["compound"], "flops": [1e9], "top1": [np.nan]}),
    "dimension": pd.DataFrame({"series": ["width"], "w": [1.0], "top1": [np.nan]}),
    "landscape": pd.DataFrame({"alpha": [1.2], "beta": [1.1], "gamma": [1.15], "top1": [np.nan]}),
    "realized": pd.DataFrame({"nominal_ratio": [2.0], "product": [2.0], "flops_ratio": [np.nan]}),
    "latency": pd.DataFrame({"latency_ms": [1.0], "top1": [np.nan]}),
}


@pytest.mark.parametrize("kind", list(EMPTY_CALLS))
@pytest.mark.parametrize("frame", ["no columns", "no rows", "only NaN"])
def test_no_data(kind, frame, tmp_path):
    df = {"no columns": pd.DataFrame(), "no rows": NAN_FRAMES[kind].iloc[0:0],
          "only NaN": NAN_FRAMES[kind]}[frame]
    fig = EMPTY_CALLS[kind](df)
    assert isinstance(fig, Figure)
    assert "no data" in texts(fig)
    assert fig.axes[0].get_title() and fig.axes[0].get_xlabel()
    if frame == "only NaN":
        saved_png(fig, tmp_path, f"{kind}.png")


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="top1"):
        accuracy_vs_flops(pd.DataFrame({"series": ["a"], "flops": [1e9]}))


@pytest.mark.parametrize("name,magic", [("a/b/fig.svg", b"<?xml"), ("c/fig.pdf", b"%PDF"), ("d/fig", PNG)])
def test_save_formats(name, magic, tmp_path):
    fig = accuracy_vs_flops(pd.DataFrame({"series": ["x"], "flops": [1e9], "top1": [0.5]}))
    path = save(fig, tmp_path / name, dpi=50)
    assert path.is_file() and path.read_bytes().startswith(magic)
    assert path.suffix in (".svg", ".pdf", ".png")


def test_save_rejects_other_suffix(tmp_path):
    with pytest.raises(ValueError, match=".png"):
        save(Figure(), tmp_path / "fig.jpg")


def test_no_pyplot_state():
    """The functions build bare Figures, so nothing accumulates in pyplot for the caller to close."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    accuracy_vs_latency(pd.DataFrame({"latency_ms": [1.0], "top1": [0.7]}))
    assert plt.get_fignums() == before


def test_accuracy_vs_flops_keeps_a_collapsed_run_off_the_axis():
    """One network that did not train (30%) must not squash the others (78-86%) into a band:
    the axis holds the bulk, the collapsed point is a marker on the lower edge with its value."""
    from scaling.plots import accuracy_vs_flops

    df = pd.DataFrame({"series": ["depth"] * 3 + ["width"] * 3, "flops": [5e7, 9e7, 2.5e8] * 2,
                       "top1": [0.80, 0.79, 0.30, 0.81, 0.83, 0.84], "label": ["d1", "d2", "d3", "w1", "w2", "w3"]})
    ax = accuracy_vs_flops(df).axes[0]
    bottom, top = ax.get_ylim()
    assert 30 < bottom < 79 and top > 84
    notes = [t.get_text() for t in ax.texts]
    assert "d3: 30.0% (below the axis)" in notes and "d3" not in notes  # no label out in the margin
    held = accuracy_vs_flops(df[df["top1"] > 0.5]).axes[0].get_ylim()
    assert held[0] < 79  # nothing off the axis: the usual margins
