"""The Newey-West t-statistic and the paired test against statsmodels and scipy."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from atft.evaluation.stats import default_lags, newey_west_tstat, paired_daily, paired_test


def ar1(n: int, phi: float, mean: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x + mean


def statsmodels_tstat(x: np.ndarray, lags: int) -> float:
    fit = sm.OLS(x, np.ones(len(x))).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
    return float(fit.tvalues[0])


def overlapping(n: int, h: int, mean: float, seed: int) -> np.ndarray:
    """A rolling h-day sum of white noise plus a small mean: neighbours share h - 1 shocks."""
    noise = np.random.default_rng(seed).normal(size=n + h - 1)
    return np.convolve(noise, np.ones(h), mode="valid") + mean


@pytest.mark.parametrize("lags", [0, 1, 2, 4, 9, 19, 60])
@pytest.mark.parametrize(("n", "phi", "seed"), [(250, 0.5, 0), (40, 0.9, 1), (500, -0.3, 2), (7, 0.2, 3)])
def test_matches_statsmodels_hac(n, phi, seed, lags):
    x = ar1(n, phi, mean=0.3, seed=seed)
    assert newey_west_tstat(x, lags) == pytest.approx(statsmodels_tstat(x, lags), rel=1e-10)


def test_statsmodels_default_has_no_correction():
    # The definition matched is statsmodels' default for OLS HAC, not its small-sample corrected variant.
    x = ar1(100, 0.5, mean=0.2, seed=4)
    default = sm.OLS(x, np.ones(100)).fit(cov_type="HAC", cov_kwds={"maxlags": 3})
    corrected = sm.OLS(x, np.ones(100)).fit(cov_type="HAC", cov_kwds={"maxlags": 3, "use_correction": True})
    assert newey_west_tstat(x, 3) == pytest.approx(default.tvalues[0], rel=1e-10)
    assert newey_west_tstat(x, 3) * math.sqrt(99 / 100) == pytest.approx(corrected.tvalues[0], rel=1e-10)


@pytest.mark.parametrize("n", [2, 3, 30, 400])
def test_zero_lags_is_the_plain_tstat_up_to_n_over_n_minus_1(n):
    x = ar1(n, 0.0, mean=0.1, seed=n)
    plain = stats.ttest_1samp(x, 0.0).statistic
    assert newey_west_tstat(x, 0) * math.sqrt((n - 1) / n) == pytest.approx(plain, rel=1e-10)


def test_by_hand():
    # x = 1, 2, 3, 6: mean 3, u = -2, -1, 0, 3; lags 1, w_1 = 1/2.
    # S = (4 + 1 + 0 + 9) + 2 * 1/2 * (2 + 0 + 0) = 16, t = 3 * 4 / sqrt(16) = 3.
    assert newey_west_tstat([1.0, 2.0, 3.0, 6.0], 1) == pytest.approx(3.0, rel=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_overlap_shrinks_the_tstat(seed):
    x = overlapping(500, 5, mean=0.3, seed=seed)
    plain = stats.ttest_1samp(x, 0.0).statistic
    nw = newey_west_tstat(x, default_lags(5))
    assert abs(nw) < 0.75 * abs(plain)  # about 1/sqrt(3.4) for a rolling 5-day sum


def test_nan_is_dropped_and_the_rest_read_as_consecutive():
    x = ar1(80, 0.4, mean=0.2, seed=5)
    holed = x.copy()
    holed[[0, 10, 11, 79]] = np.nan
    kept = np.delete(x, [0, 10, 11, 79])
    assert newey_west_tstat(holed, 3) == newey_west_tstat(kept, 3)
    with_nulls = pl.Series([None, *x[1:10].tolist(), None], dtype=pl.Float64)
    assert newey_west_tstat(with_nulls, 2) == newey_west_tstat(x[1:10], 2)


@pytest.mark.parametrize(
    "series", [[], [np.nan, np.nan], [0.3], [0.3, np.nan], [0.1, 0.1, 0.1], [np.nan, 2.0, 2.0]]
)
@pytest.mark.parametrize("lags", [0, 2])
def test_nan_without_two_values_or_any_spread(series, lags):
    assert math.isnan(newey_west_tstat(series, lags))


@pytest.mark.parametrize("lags", [-1, 1.5, True, None])
def test_bad_lags(lags):
    with pytest.raises(ValueError, match="lags"):
        newey_west_tstat([1.0, 2.0, 3.0], lags)


def test_bad_series():
    with pytest.raises(ValueError, match="infinite"):
        newey_west_tstat([1.0, np.inf, 3.0], 1)
    with pytest.raises(ValueError, match="one-dimensional"):
        newey_west_tstat(np.ones((3, 2)), 1)


def test_default_lags():
    assert [default_lags(h) for h in (1, 5, 10, 20)] == [0, 4, 9, 19]
    assert default_lags(np.int32(5)) == 4
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="horizon"):
            default_lags(bad)


# ---- the paired test ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lags", [0, 4])
def test_paired_test_matches_scipy_and_statsmodels(lags):
    a = overlapping(300, 5, mean=0.05, seed=6)
    b = 0.5 * a + overlapping(300, 5, mean=0.0, seed=7)
    out = paired_test(a, b, lags)
    assert set(out) == {"mean_diff", "tstat", "nw_tstat", "n_days", "win_rate", "lags"}
    assert out["tstat"] == pytest.approx(stats.ttest_rel(a, b).statistic, rel=1e-10)
    assert out["nw_tstat"] == pytest.approx(statsmodels_tstat(a - b, lags), rel=1e-10)
    assert out["mean_diff"] == pytest.approx(np.mean(a - b), abs=1e-14)
    assert out["win_rate"] == np.mean(a > b)
    assert (out["n_days"], out["lags"]) == (300, lags)


def test_paired_test_drops_a_day_missing_on_either_side():
    a = np.array([0.1, np.nan, 0.3, 0.2, 0.05, 0.1])
    b = np.array([0.0, 0.1, np.nan, 0.25, 0.0, 0.1])
    out = paired_test(a, b, 1)
    kept_a, kept_b = np.array([0.1, 0.2, 0.05, 0.1]), np.array([0.0, 0.25, 0.0, 0.1])
    assert out["n_days"] == 4
    assert out["win_rate"] == 0.5  # the tie on the last day is not a win
    assert out["tstat"] == pytest.approx(stats.ttest_rel(kept_a, kept_b).statistic, rel=1e-10)
    assert out["nw_tstat"] == newey_west_tstat(kept_a - kept_b, 1)


def test_paired_test_without_enough_days():
    empty = paired_test([np.nan], [0.1], 0)
    assert empty["n_days"] == 0
    assert all(math.isnan(empty[k]) for k in ("mean_diff", "tstat", "nw_tstat", "win_rate"))
    one = paired_test([0.2, np.nan], [0.1, 0.3], 0)
    assert (one["n_days"], one["win_rate"]) == (1, 1.0)
    assert one["mean_diff"] == pytest.approx(0.1) and math.isnan(one["tstat"]) and math.isnan(one["nw_tstat"])
    same = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], 1)
    assert same["mean_diff"] == 0.0 and math.isnan(same["tstat"]) and math.isnan(same["nw_tstat"])


def test_paired_test_needs_aligned_series():
    with pytest.raises(ValueError, match="aligned"):
        paired_test([0.1, 0.2, 0.3], [0.1, 0.2], 0)


def per_day(values: list[float | None], start: int = 0, horizon: int | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "date": [date(2022, 1, 3) + timedelta(days=start + i) for i in range(len(values))],
            "rankic": values,
        },
        schema={"date": pl.Date, "rankic": pl.Float64},
    )
    return frame if horizon is None else frame.with_columns(horizon=pl.lit(horizon, dtype=pl.Int32))


def test_paired_daily_aligns_by_date():
    rng = np.random.default_rng(8)
    a_values: list[float | None] = rng.normal(0.05, 0.1, size=40).tolist()
    b_values: list[float | None] = rng.normal(0.0, 0.1, size=40).tolist()
    a_values[5], b_values[20], a_values[12] = None, float("nan"), float("nan")  # days 5, 23, 12
    frame_a = per_day(a_values).reverse()  # the order of rows does not matter, the dates do
    frame_b = per_day(b_values, start=3)  # b starts 3 days later: 37 common dates
    out = paired_daily(frame_a, frame_b, lags=2)

    a_by_day = dict(zip(frame_a["date"], frame_a["rankic"], strict=True))
    days = [d for d in frame_b["date"] if d in a_by_day]
    pairs = [
        (a_by_day[d], v) for d, v in zip(frame_b["date"], frame_b["rankic"], strict=True) if d in a_by_day
    ]
    pairs = [
        (x, y) for x, y in pairs if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)
    ]
    assert len(days) == 37 and len(pairs) == 37 - 3
    x, y = np.array(pairs).T
    assert out == paired_test(x, y, 2)
    assert out["tstat"] == pytest.approx(stats.ttest_rel(x, y).statistic, rel=1e-10)


def test_paired_daily_by_horizon():
    a = pl.concat(
        [per_day([0.1, 0.3, 0.2, 0.4, 0.1], horizon=1), per_day([0.5, 0.1, 0.2, 0.3, 0.2], horizon=5)]
    )
    b = pl.concat(
        [per_day([0.0, 0.1, 0.2, 0.1, 0.0], horizon=1), per_day([0.1, 0.2, 0.1, 0.1, 0.0], horizon=5)]
    )
    out = paired_daily(a, b, horizon=5)
    assert out == paired_test([0.5, 0.1, 0.2, 0.3, 0.2], [0.1, 0.2, 0.1, 0.1, 0.0], 4)
    assert paired_daily(a, b, horizon=5, lags=0)["lags"] == 0
    with pytest.raises(ValueError, match="several rows"):
        paired_daily(a, b, lags=0)  # every date twice: once per horizon
    with pytest.raises(ValueError, match="needs lags"):
        paired_daily(a, b)
    with pytest.raises(ValueError, match="missing column 'horizon'"):
        paired_daily(per_day([0.1, 0.2]), per_day([0.1, 0.2]), horizon=1)
    with pytest.raises(ValueError, match="frame_b is missing column 'ic'"):
        paired_daily(a.with_columns(ic=pl.col("rankic")), b, column="ic", horizon=1)
