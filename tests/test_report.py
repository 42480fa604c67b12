"""`scaling report`: a real tiny study (search and family trained on the CPU) as HTML and PDF."""

import html.parser
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure
from optuna.trial import TrialState
from typer.testing import CliRunner

from scaling.cli import app
from scaling.report import Plot, Report, Section, Table, write_html, write_pdf
from scaling.laws import check_series
from scaling.report import sections
from scaling.report.formats import flops_text, pct, sig3
from scaling.report.pdf import _width, wrap
from scaling.search import create_study
from scaling.storage import storage_url
from scaling.study import check_or_save, resolve

from test_search import TOML as SEARCH_TOML

TOML = SEARCH_TOML.replace('sampler = "grid"', 'sampler = "grid"\ntrials = 4')  # 4 of the grid's 8 networks

FAMILY_HEADING = "Compound family"  # the tiny study trains no official network
PDFTOTEXT = shutil.which("pdftotext")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def pdf_text(path: Path) -> str:
    """The PDF's text as pdftotext extracts it, whitespace collapsed (lines wrap anywhere)."""
    out = subprocess.run([PDFTOTEXT, "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


def page_count(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


class Parsed(html.parser.HTMLParser):
    """Tags, their attributes and the visible text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Study "tiny" (4 networks of the search) and its family phi 0..4, trained in a few seconds each."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SCALING_CACHE", str(root / "cache"))
        (root / "tiny.toml").write_text(TOML)
        # Both would end by writing the report too; the report command is tested below, once.
        r = invoke("search", "--study", "tiny.toml", "-q", "--no-report")
        assert r.exit_code == 0, r.output
        r = invoke("family", "--train", "--study", "tiny.toml", "--phi", "0-4", "-q", "--no-report")
        assert r.exit_code == 0, r.output
        mp.undo()
        yield root


@pytest.fixture(scope="module")
def report_run(study, tmp_path_factory):
    """The report command run once on the tiny study, and what it built on the way: its own calls of
    build_report and check_series are watched (they run as they are; their results are kept), so that the
    tests of the content read the very Report the command rendered instead of building another."""
    import scaling.report

    out = tmp_path_factory.mktemp("out")
    built, fitted = [], []
    build, fits = scaling.report.build_report, scaling.report.check_series

    def watched_build(*args, **kwargs):
        built.append((args, kwargs, build(*args, **kwargs)))
        return built[-1][2]

    def watched_fits(df, **kwargs):
        fitted.append((df, fits(df, **kwargs)))
        return fitted[-1][1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scaling.report, "build_report", watched_build)
        mp.setattr(scaling.report, "check_series", watched_fits)
        r = invoke("report", "tiny", "--studies-dir", str(study / "studies"), "--output-dir", str(out))
    assert r.exit_code == 0, r.output
    assert len(built) == len(fitted) == 1  # one report, its series fitted once
    return SimpleNamespace(output=r.output, html=out / "tiny" / "index.html", pdf=out / "tiny" / "report.pdf",
                           build_args=built[0][:2], built=built[0][2], series=fitted[0][0], fits=fitted[0][1])


@pytest.fixture(scope="module")
def report(report_run):
    """The report command run once on the tiny study: (its output, the HTML file, the PDF file)."""
    return report_run.output, report_run.html, report_run.pdf


def test_report_command_writes_both_files(report):
    output, html_path, pdf_path = report
    assert output.split() == [str(html_path), str(pdf_path)]
    assert pdf_path.read_bytes().startswith(b"%PDF-") and page_count(pdf_path) >= 4
    assert html_path.stat().st_size > 20_000
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["index.html", "report.pdf"]  # no temporary left


def test_html_is_one_self_contained_page(report, study):
    _, html_path, _ = report
    text = html_path.read_text()
    assert "http://" not in text and "https://" not in text
    page = Parsed(text)
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert not re.match(r"(?i)\s*(https?:|//|file:)", value), (tag, key, value)
    imgs = page.all("img")
    assert len(imgs) == 7 and all(a["src"].startswith("data:image/svg+xml;base64,") for a in imgs)  # every plot, vector
    assert all(a["href"].startswith("#") for a in page.all("a"))
    assert not page.all("link") and not page.all("script")
    assert len(page.all("table")) >= 4 and len(page.all("th")) > 20
    words = page.words
    assert "Compound-scaling study tiny" in words and FAMILY_HEADING in words
    ranking = pd.read_csv(study / "studies" / "tiny" / "results.csv")
    assert f"Ranking of the {len(ranking)} trained networks" in words
    for label in ("phi=0", "phi=4"):
        assert label in words


def test_pdf_holds_the_best_triple_the_family_and_the_fits(report, study, monkeypatch):
    if PDFTOTEXT is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    _, _, pdf_path = report
    monkeypatch.chdir(study)
    r = invoke("results", "tiny")
    assert r.exit_code == 0, r.output
    best = re.search(r"best by top-1: \(alpha, beta, gamma\) = (\([^)]*\)), top-1 ([\d.]+)%", r.output)
    assert best, r.output
    text = pdf_text(pdf_path)
    assert f"(alpha, beta, gamma) = {best.group(1)}, top-1 {best.group(2)}%" in text
    assert "Best by top-1 (the ranking this report's best triple uses)" in text and "Best at matched FLOPs" in text
    assert "Compound-scaling study tiny" in text and FAMILY_HEADING in text and "official coefficients" not in text
    assert "phi=0" in text and "phi=4" in text
    # The family has five members: a law with its held-out check, or "no law fits" and why, in both places.
    assert "Fitted laws per series" in text and "compound (1.2, 1.1, 1.15)" in text
    law = re.search(r"law of compound \(1.2, 1.1, 1.15\): (top-1 limit [\d.]+%|no law fits: .*)", r.output)
    assert law, r.output
    if law.group(1).startswith("top-1 limit"):
        assert re.search(r"at [\d.]+ MFLOPs: predicted [\d.]+%, measured [\d.]+%", text)
    else:
        assert "no law fits" in text and " ".join(law.group(1).split(": ", 1)[1].split())[:40] in text
    # Figures are vector graphics: their axis labels are text; FLOPs in the tables' unit.
    assert "FLOPs (M multiply-adds, log scale)" in text and "α (depth coefficient)" in text
    assert "torch 2." in text and "seed" in text  # provenance


def test_report_content_matches_the_study(study, report_run):
    # The Report the command built (build_report of the study) and rendered as the HTML and PDF above.
    assert report_run.build_args == (("tiny", study / "studies", None), {})
    rep = report_run.built
    sections = {sec.heading: sec for sec in rep.sections}
    results = pd.read_csv(study / "studies" / "tiny" / "results.csv")
    ranking = sections["Search results"].tables[0]
    assert [row[0] for row in ranking.rows] == [str(r) for r in results["rank"]]
    assert [row[ranking.columns.index("top-1")] for row in ranking.rows] == [pct(v) for v in results["top1"]]
    # Each trained candidate shows its top-1; the others (4 of the 8 were queued) a dash.
    cands = sections["Candidates"].tables[0]
    shown = [row[-1] for row in cands.rows]
    assert len(shown) == 8 and sum(v.endswith("%") for v in shown) == len(results) == 4
    assert sorted(v for v in shown if v.endswith("%")) == sorted(pct(v) for v in results["top1"])
    # Counted as trained (a 10-class head): the same parameters and FLOPs in both tables.
    by_triple = {tuple(row[1:4]): row for row in cands.rows}
    for row in ranking.rows:
        cand = by_triple[tuple(row[1:4])]
        for col in ("params (M)", "MFLOPs"):
            assert cand[cands.columns.index(col)] == row[ranking.columns.index(col)], col
    # The realized FLOPs ratio in every table, and a ranking at matched FLOPs.
    assert [row[ranking.columns.index("× base")] for row in ranking.rows] == \
        [f"{v:.2f}" for v in results["flops_ratio"]]
    assert sorted(int(row[ranking.columns.index("rank at FLOPs")]) for row in ranking.rows) == [1, 2, 3, 4]
    assert all(1.0 <= float(row[cands.columns.index("× base")]) <= 3.0 for row in cands.rows)  # 2x ± 50%
    # "nominal" is each triple's own (alpha * beta^2 * gamma^2)^phi, as the text and Figure 1 say.
    assert [row[cands.columns.index("nominal")] for row in cands.rows] == \
        [f"{float(a) * float(b) ** 2 * float(g) ** 2:.3f}" for a, b, g in (row[1:4] for row in cands.rows)]
    family = sections[FAMILY_HEADING].tables[0]
    assert [row[0] for row in family.rows] == [f"phi={k}" for k in range(5)] and "× base" in family.columns
    fits = sections["Scaling-law fits"].tables[0]
    assert [row[0] for row in fits.rows] == ["compound (1.2, 1.1, 1.15)"] and fits.rows[0][2] == "5"
    assert fits.rows[0][1] in ("fitted", "no law fits")
    if fits.rows[0][1] == "no law fits":
        assert fits.rows[0][fits.columns.index("top-1 limit")] == "—" and fits.rows[0][-1]
    # The dimension plots sit in their own section, not under "Single-dimension sweeps: none trained".
    assert not sections["Single-dimension sweeps"].figures
    assert len(sections["Top-1 by scaling dimension"].figures) == 3
    # Nothing failed: the summary says so, and no section (a PDF page) holds only that.
    assert "No trial failed." in sections["Summary"].paragraphs and "Failures" not in sections
    assert dict(rep.provenance)["study"] == "tiny" and "cpu" in dict(rep.provenance)["devices"]


def test_each_study_is_read_once_into_the_same_tables(study, monkeypatch):
    from collections import Counter

    from scaling.report.load import read_study
    from scaling.results import (failures_frame, plan_studies, results_frame, running, series_failures,
                                 series_frame)

    reads, get_trials = Counter(), optuna.Study.get_trials

    def counted(self, *args, **kwargs):
        reads[self.study_name] += 1
        return get_trials(self, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(optuna.Study, "get_trials", counted)
        s = read_study("tiny", study / "studies")
    assert reads["tiny"] == 1 and len(reads) == 2 and set(reads.values()) == {1}  # the search and its family
    url = f"sqlite:///{study / 'studies' / 'tiny' / 'optuna.db'}"
    search, plans = optuna.load_study(study_name="tiny", storage=url), plan_studies(url, "tiny")
    pd.testing.assert_frame_equal(s.results, results_frame(search))
    pd.testing.assert_frame_equal(s.failures, failures_frame(search))
    pd.testing.assert_frame_equal(s.series, series_frame(plans))
    pd.testing.assert_frame_equal(s.series_failures, series_failures(plans))
    assert s.running == running(search) == 0 and len(s.candidates) == len(s.candidates_frame) == 8


def _screenshot(html_path: Path, png: Path, profile: Path) -> np.ndarray:
    from PIL import Image

    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,1600",
                    html_path.resolve().as_uri()], check=False, capture_output=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot {png}"
    return np.asarray(Image.open(png).convert("L"), dtype=np.int16)


def test_chromium_renders_the_title(report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    _, html_path, _ = report
    shown = _screenshot(html_path, tmp_path / "shown.png", tmp_path / "profile1")
    hidden_page = html_path.with_name("hidden.html")
    hidden_page.write_text(html_path.read_text().replace("</head>", "<style>#title{visibility:hidden}</style></head>"))
    try:
        hidden = _screenshot(hidden_page, tmp_path / "hidden.png", tmp_path / "profile2")
    finally:
        hidden_page.unlink()
    assert shown.shape == hidden.shape == (1600, 1200)
    assert (shown < 200).mean() > 0.02  # not blank: text, tables and a figure
    region = (slice(0, 110), slice(0, 1200))  # the title: the first line of the page
    dark = (shown[region] < 80).sum()
    assert dark > 500, f"only {dark} dark pixels where the title should be"
    assert (hidden[region] < 80).sum() < dark / 20
    assert (np.abs(shown[region] - hidden[region]) > 60).sum() > 500
    below = (slice(200, 1600), slice(0, 1200))  # the rest of the page is the same
    assert (np.abs(shown[below] - hidden[below]) > 60).mean() < 0.001


def test_running_trials_and_failures_are_reported(study, tmp_path):
    copy = tmp_path / "studies"
    shutil.copytree(study / "studies" / "tiny", copy / "tiny")
    url = f"sqlite:///{copy / 'tiny' / 'optuna.db'}"
    s = optuna.load_study(study_name="tiny", storage=url)
    s.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "network": "net-x", "triples": "(1.1, 1.1, 1.1)", "reason": "OutOfMemoryError: the micro-batch reached 8"}))
    s.ask().set_user_attr("network", "net-y")
    out = tmp_path / "reports"
    r = invoke("report", "tiny", "--studies-dir", str(copy), "--output-dir", str(out))
    assert r.exit_code == 0, r.output
    words = Parsed((out / "tiny" / "index.html").read_text()).words
    assert "The study is still running: 1 trial is in training" in words
    assert "1 trial failed" in words and "OutOfMemoryError: the micro-batch reached 8" in words
    assert "(1.1, 1.1, 1.1)" in words
    if PDFTOTEXT:
        assert "OutOfMemoryError: the micro-batch reached 8" in pdf_text(out / "tiny" / "report.pdf")


def test_a_study_without_completed_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.toml").write_text(TOML.replace('name = "tiny"', 'name = "empty"'))
    config = resolve(tmp_path / "empty.toml")
    folder = tmp_path / "studies" / "empty"
    check_or_save(config, folder)
    study = create_study(config, storage_url(config, folder, None))  # queued, nothing trained
    study.ask()  # one in training
    r = invoke("report", "empty")
    assert r.exit_code == 0, r.output
    html_path, pdf_path = Path("reports/empty/index.html"), Path("reports/empty/report.pdf")
    assert html_path.is_file() and pdf_path.read_bytes().startswith(b"%PDF-")
    words = Parsed(html_path.read_text()).words
    assert "No trial of study empty has completed yet. 1 trial is running." in words
    assert "so there is no ranking" in words
    assert "scaling family --train adds them" in words  # no family nor sweep either
    assert "Candidate networks of the grid" in words  # the grid is known without any training
    if PDFTOTEXT:
        assert "No trial of study empty has completed yet." in pdf_text(pdf_path)


@pytest.mark.parametrize("name, says", [("nosuch", "no study 'nosuch'"), ("a/b", "plain folder name")])
def test_a_missing_study_exits_2_with_one_line(tmp_path, monkeypatch, name, says):
    monkeypatch.chdir(tmp_path)
    r = invoke("report", name)
    assert r.exit_code == 2
    assert says in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "reports").exists()


def test_number_formats():
    assert [sig3(v) for v in (1234.5, 386.2, 12.34, 9.996, 0.01234, 1.74e-13)] == \
        ["1234", "386", "12.3", "10.0", "0.0123", "1.74e-13"]
    assert pct(0.84127) == "84.13%" and pct(float("nan")) == "—"
    assert flops_text(386e6) == "386 MFLOPs" and flops_text(1.8e9) == "1.80 GFLOPs" and flops_text(1.45e6) == "1.45 MFLOPs"


def test_the_view_model_is_frozen():
    import dataclasses

    t = Table("c", ["a", "b"], [["1", "x"], ["—", "y"]])
    assert t.columns == ("a", "b") and t.rows == (("1", "x"), ("—", "y")) and t.align == ("r", "l")
    sec = Section("h", ["p"], [t])
    assert sec.paragraphs == ("p",) and sec.tables == (t,) and sec.figures == ()
    rep = Report("title", [("study", "s")], [sec])
    assert rep.provenance == (("study", "s"),) and rep.sections == (sec,)
    for obj, name in ((t, "caption"), (sec, "paragraphs"), (rep, "sections")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, ())
    with pytest.raises(ValueError, match="a row of 1 cells for 2 columns"):
        Table("bad", ["a", "b"], [["1"]])


def test_wrap_fits_the_width():
    text = "a fairly long sentence that has to wrap " * 8 + "and-one-unbreakable-word-longer-than-a-line" * 3
    lines = wrap(text, 9.5, 2.0)
    assert len(lines) > 10 and all(_width(line, 9.5) <= 2.0 + 1e-6 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_long_tables_split_across_pages_with_their_header(tmp_path):
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    rows = [[f"row-{i:03d}", f"{i * 1.5:.1f}", "a text long enough to wrap in a narrow column " * (2 * (i % 3))]
            for i in range(150)]
    rep = Report("A long table", [("study", "none")], [
        Section("Numbers", ["One paragraph before the table."], [Table("Many rows", ["key", "value", "note"], rows)],
                [Plot(fig, "A figure after the table.")])])
    pdf = write_pdf(rep, tmp_path / "long.pdf")
    assert page_count(pdf) >= 5
    html_text = write_html(rep, tmp_path / "long.html").read_text()
    assert html_text.count("<tr>") == 151 and "row-149" in html_text
    if PDFTOTEXT:
        text = pdf_text(pdf)
        assert all(f"row-{i:03d}" in text for i in range(150))
        headers = text.count("key value note")  # the header on every page the table is on
        assert headers >= 4 and text.count("Many rows (continued)") == headers - 1
        assert "Figure 1. A figure after the table." in text


def test_fits_are_reported_with_intervals_and_the_held_out_check():
    gflops = np.array([0.4, 0.8, 1.6, 3.2, 6.4, 12.8])
    family = pd.DataFrame({"series": "compound (1.2, 1.1, 1.15)", "kind": "family", "flops": gflops * 1e9,
                           "top1": 1 - (0.2 * gflops ** -0.5 + 0.1)})
    width = pd.DataFrame({"series": "width", "kind": "sweep", "flops": [1e9, 2e9, 3e9], "top1": [0.7, 0.75, 0.78]})
    df = pd.concat([family, width], ignore_index=True)
    fits = check_series(df, bootstrap=sections.BOOTSTRAP)
    fit, held = fits["compound (1.2, 1.1, 1.15)"].fit, fits["compound (1.2, 1.1, 1.15)"].check
    assert fit.ok and (fit.law.a, fit.law.b, fit.law.c) == pytest.approx((0.2, 0.5, 0.1), abs=1e-3)
    assert held.abs_error < 1e-3 and held.gflops == 12.8
    assert fits["width"].fit.text() == "not fitted: 3 distinct FLOPs value(s); a three-parameter law needs at least 4"
    table, checks = sections.fits(df, fits).tables
    assert list(table.rows[0]) == ["compound (1.2, 1.1, 1.15)", "fitted", "6", "0.200 [0.200, 0.200]",
                                   "0.500 [0.500, 0.500]", "0.100 [0.100, 0.100]", "90.00%", "0.00"]
    assert list(checks.rows[0]) == ["compound (1.2, 1.1, 1.15)",
                                    "at 12.8 GFLOPs: predicted 84.41%, measured 84.41%, off by 0.00 pp"]
    assert list(table.rows[1][:2]) == ["width", "not fitted"] and checks.rows[1][0] == "width"
    assert checks.rows[1][1].startswith("3 distinct")


def test_a_failed_fit_is_shown_as_no_law():
    # Issue 9: top-1 24.8, 41.4, 20.4, 18.6% as FLOPs grew was reported as "top-1 limit 26.63%".
    df = pd.DataFrame({"series": "compound (1.2, 1.1, 1.15)", "kind": "family", "label": [f"phi={k}" for k in range(4)],
                       "phi": [0.0, 1, 2, 3], "multiplier": np.nan, "d": [1, 1.2, 1.44, 1.728],
                       "w": [1, 1.1, 1.21, 1.331], "resolution": [32, 40, 40, 48], "params": 1e6,
                       "flops": [2.1e6, 4.2e6, 8.3e6, 16.7e6], "top1": [0.248, 0.414, 0.204, 0.186],
                       "top1_std": np.nan, "seeds": 1})
    fits = check_series(df, bootstrap=sections.BOOTSTRAP)
    fit, held = fits["compound (1.2, 1.1, 1.15)"].fit, fits["compound (1.2, 1.1, 1.15)"].check
    assert fit.status == "no law fits" and held is None and fits["compound (1.2, 1.1, 1.15)"].no_check == "no law to check"
    table, checks = sections.fits(df, fits).tables
    row, why = table.rows[0], checks.rows[0]
    assert row[1] == "no law fits" and row[6] == "—" and "top-1 falls as FLOPs grow" in why[1]
    assert "26.6" not in " ".join(row + why)
    sec = sections.family(df, fits)
    assert sec.heading == "Compound family"
    (flops_figure,) = sec.figures
    assert "no law is drawn for compound (1.2, 1.1, 1.15)" in flops_figure.caption
    assert not [ln for ln in flops_figure.figure.axes[0].get_lines() if ln.get_linestyle() == "--"]


def test_results_says_whether_a_law_fits(study, report_run, monkeypatch):
    from scaling.results import plan_studies, series_frame

    monkeypatch.chdir(study)
    r = invoke("results", "tiny")
    assert r.exit_code == 0, r.output
    series = series_frame(plan_studies(f"sqlite:///{study / 'studies' / 'tiny' / 'optuna.db'}", "tiny"))
    # The fits of this series are those the report command made (check_series of the same frame), not made again.
    pd.testing.assert_frame_equal(report_run.series, series)
    fit = report_run.fits["compound (1.2, 1.1, 1.15)"].fit
    line = next(line for line in r.output.splitlines() if line.startswith("law of compound (1.2, 1.1, 1.15): "))
    if fit.ok:
        assert f"top-1 limit {100 * (1 - fit.law.c):.2f}%" in line
    else:
        assert line == f"law of compound (1.2, 1.1, 1.15): {fit.status}: {fit.reason}" and "limit" not in line
