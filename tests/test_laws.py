"""Scaling-law fits: recovery of known laws, bootstrap intervals, held-out checks, refusals."""

import numpy as np
import pandas as pd
import pytest

from scaling.laws import FITTED, NO_LAW, NOT_FITTED, TooFewPoints, fit_law, fit_power_law, fit_series, holdout_check

TRUE = dict(a=0.3, b=0.45, c=0.08)
X = np.array([0.4, 0.7, 1.0, 1.8, 4.2, 9.9, 19.0, 37.0])  # GFLOPs of B0..B7


def law(x, a=TRUE["a"], b=TRUE["b"], c=TRUE["c"]):
    return a * x ** (-b) + c


def test_recovers_a_noiseless_law():
    f = fit_power_law(X, law(X), bootstrap=0)
    assert (f.a, f.b, f.c) == pytest.approx((0.3, 0.45, 0.08), rel=1e-3)
    assert f.rmse < 1e-6 and f.n == 8


def test_bootstrap_intervals_cover_the_truth():
    rng = np.random.default_rng(1)
    y = law(X) + rng.normal(0, 0.002, X.shape)
    f = fit_power_law(X, y, bootstrap=300, seed=0)
    for k, v in TRUE.items():
        lo, hi = f.ci[k]
        assert lo <= v <= hi, (k, lo, v, hi)
    assert f.ci["b"][1] - f.ci["b"][0] < 0.5  # informative, not the whole range
    again = fit_power_law(X, y, bootstrap=300, seed=0)
    assert again.ci == f.ci  # seeded


def test_holdout_predicts_the_largest():
    h = holdout_check(X, law(X))
    assert h.gflops == 37.0
    assert h.actual_error == pytest.approx(law(37.0))
    assert h.abs_error < 1e-4


def test_too_few_points_are_refused_with_a_reason():
    with pytest.raises(TooFewPoints, match="3 distinct FLOPs value"):
        fit_power_law([1, 2, 3, 3], [0.3, 0.2, 0.1, 0.1])
    with pytest.raises(TooFewPoints, match="need at least 4"):
        holdout_check(X[:4], law(X[:4]))


def test_constraints_hold_on_awkward_data():
    f = fit_power_law(X, np.full(X.shape, 0.2), bootstrap=0)  # flat: no gain from FLOPs
    assert f.a >= 0 and f.c >= 0 and f.b > 0
    assert f.error(X) == pytest.approx(np.full(X.shape, 0.2), abs=1e-6)


def test_fit_series():
    df = pd.DataFrame({
        "series": ["compound"] * 5 + ["width"] * 2,
        "flops": np.r_[X[:5], X[:2]] * 1e9,
        "top1": np.r_[1 - law(X[:5]), 0.7, 0.72],
    })
    fits = fit_series(df, bootstrap=0)
    assert fits["compound"].ok and fits["compound"].law.b == pytest.approx(0.45, rel=1e-3)
    assert fits["compound"].text() == f"top-1 limit {100 * (1 - fits['compound'].law.c):.2f}%"
    assert fits["width"].status == NOT_FITTED and fits["width"].law is None
    assert fits["width"].text().startswith("not fitted: 2 distinct")


def test_a_failed_fit_is_not_a_law():
    # The default-cpu family of issue 9: top-1 24.8, 41.4, 20.4, 18.6% as FLOPs grew.
    x = np.array([0.0021, 0.0042, 0.0083, 0.0167])
    f = fit_law(x, 1 - np.array([0.248, 0.414, 0.204, 0.186]), bootstrap=0)
    assert f.status == NO_LAW and not f.ok and f.law is not None
    assert "top-1 falls as FLOPs grow (by 21.0 points from 0.0042 to 0.0083 GFLOPs)" in f.reason
    assert "exceeds the spread the law explains" in f.reason
    assert f.text().startswith("no law fits: ") and "limit" not in f.text()


@pytest.mark.parametrize("y, reason", [
    (np.full(X.shape, 0.2), "a = 0 at its bound"),  # flat: no gain from FLOPs
    (0.5 * X ** -3.0 + 0.1, "b = 3 at its bound"),  # steeper than the exponent's range
    (0.3 * X ** -0.45, "c = 0 at its bound"),  # no irreducible error: a limit of 100%
])
def test_a_fit_at_a_bound_is_not_a_law(y, reason):
    f = fit_law(X, y, bootstrap=0)
    assert f.status == NO_LAW and reason in f.reason, f.reason


def test_a_good_noisy_fit_is_a_law():
    rng = np.random.default_rng(3)
    y = law(X) + rng.normal(0, 0.002, X.shape)  # noise well inside MONOTONE_SLACK
    f = fit_law(X, y, bootstrap=0)
    assert f.status == FITTED and f.reason == "" and f.ok


def test_check_series_holds_each_law_with_its_held_out_check():
    from scaling.laws import NO_LAW_TO_CHECK, check_series

    df = pd.DataFrame({
        "series": ["compound"] * 8 + ["four"] * 4 + ["width"] * 2,
        "flops": np.r_[X, X[:4], X[:2]] * 1e9,
        "top1": np.r_[1 - law(X), 1 - law(X[:4]), 0.7, 0.72],
    })
    checked = check_series(df, bootstrap=0)
    assert list(checked) == ["compound", "four", "width"]
    compound = checked["compound"]
    assert compound.fit == fit_series(df, bootstrap=0)["compound"]  # the same fit as fit_series'
    assert compound.check.gflops == 37.0 and compound.check.abs_error < 1e-4 and compound.no_check == ""
    assert compound.check == holdout_check(X, 1.0 - (1 - law(X)))  # of the error 1 - top1, as given
    four = checked["four"]  # a law, but 4 points leave too few to fit after holding one out
    assert four.fit.ok and four.check is None and four.no_check.startswith("no held-out check: 4 points leave 3")
    width = checked["width"]
    assert width.fit.status == NOT_FITTED and width.check is None and width.no_check == NO_LAW_TO_CHECK
    assert check_series(df.iloc[0:0]) == {}


def test_line_residuals():
    from scaling.laws import line_residuals

    flops = np.array([1e6, 1e7, 1e8, 1e9])
    on_line = 0.5 + 0.05 * np.log(flops)
    assert line_residuals(flops, on_line) == pytest.approx(np.zeros(4), abs=1e-12)
    bumped = on_line + np.array([0.0, 0.02, -0.02, 0.0])
    residuals = line_residuals(flops, bumped)
    assert residuals.sum() == pytest.approx(0, abs=1e-12) and residuals[1] > 0 > residuals[2]


def test_holdout_interval_from_the_seeds_noise():
    # Exact points: the interval holds the truth and narrows with the noise; it is seeded.
    se = np.full(X.shape, 0.002)
    h = holdout_check(X, law(X), se=se)
    lo, hi = h.interval
    assert lo < law(37.0) < hi and h.inside is True and h.actual_se == 0.002
    assert h == holdout_check(X, law(X), se=se)
    narrow = holdout_check(X, law(X), se=se / 10)
    assert narrow.interval[1] - narrow.interval[0] < (hi - lo) / 5
    # A measured point far off the law lies outside.
    far = law(X).copy()
    far[-1] += 0.05
    assert holdout_check(X, far, se=se).inside is False
    assert holdout_check(X, law(X)).interval is None and holdout_check(X, law(X)).inside is None


def test_every_series_starts_from_the_base_and_pools_its_own_noise():
    from scaling.laws import check_series, with_base

    base = {"series": "compound", "d": 1.0, "w": 1.0, "r": 1.0, "flops": X[0] * 1e9, "top1": 1 - law(X[0]),
            "top1_std": 0.004, "seeds": 2}
    rows = [base] + [{"series": "compound", "d": 1.2 ** i, "w": 1.1 ** i, "r": 1.15 ** i, "flops": x * 1e9,
                      "top1": 1 - law(x), "top1_std": 0.004, "seeds": 2} for i, x in enumerate(X[1:5], 1)]
    rows += [{"series": "width", "d": 1.0, "w": 1.5 ** i, "r": 1.0, "flops": x * 1e9, "top1": 1 - law(x),
              "top1_std": 0.2, "seeds": 2} for i, x in enumerate(X[1:4], 1)]  # noisy, and without the base
    df = pd.DataFrame(rows)
    anchored = with_base(df)
    assert list(anchored["series"]) == ["compound"] * 5 + ["width"] * 4
    assert anchored.iloc[5]["flops"] == X[0] * 1e9 and anchored.iloc[5]["d"] == 1.0  # the base, copied into width
    assert len(with_base(df[df["series"] == "width"])) == 3  # no base row to copy: as it is
    fits = check_series(df, bootstrap=0)
    assert fits["width"].fit.law.n == 4  # 3 members and the base
    held = fits["compound"].check
    assert held.gflops == X[4] and held.actual_se == pytest.approx(0.004 / np.sqrt(2))  # its own noise, not width's
    assert held.inside is True
