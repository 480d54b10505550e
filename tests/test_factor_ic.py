"""Factor ICs by period (atft.evaluation.factor_ic) against an independent slow loop: scipy's Spearman per
day and statsmodels' HAC t-stat per segment."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy.stats import spearmanr

from atft.evaluation.factor_ic import factor_ic_by_segment, ic_agreement, sign_flips

DAYS = 60
STOCKS = 30


def panel(seed: int = 0) -> tuple[pl.DataFrame, dict[str, tuple[dt.date, dt.date]]]:
    """Two features whose link to the label flips sign half-way, a noise feature with nulls, and a
    market-wide feature (one value per date)."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2021, 1, 4) + dt.timedelta(days=i) for i in range(DAYS)]
    rows = []
    for i, d in enumerate(dates):
        sign = 1.0 if i < DAYS // 2 else -1.0
        a, b, noise = rng.standard_normal((3, STOCKS))
        label = sign * (0.5 * a - 0.3 * b) + rng.standard_normal(STOCKS)
        noise[rng.random(STOCKS) < 0.2] = np.nan
        label[rng.random(STOCKS) < 0.1] = np.nan
        for s in range(STOCKS):
            rows.append((d, f"{s:04d}", a[s], b[s], noise[s], float(i), label[s]))
    frame = pl.DataFrame(
        rows, schema=["date", "code", "f_a", "f_b", "f_noise", "mkt_x", "target_5d"], orient="row"
    ).with_columns(pl.col("f_noise", "target_5d").fill_nan(None))
    segments = {
        "train": (dates[0], dates[DAYS // 2 - 1]),
        "valid": (dates[DAYS // 2], dates[DAYS // 2 + 9]),
        "test": (dates[DAYS // 2 + 10], dates[-1]),
    }
    return frame, segments


def slow_reference(frame, feature, segment, lags):
    """Mean daily Spearman and its HAC t-stat, one day at a time."""
    first, last = segment
    ics = []
    for d in sorted(frame["date"].unique().to_list()):
        if not first <= d <= last:
            continue
        day = frame.filter(pl.col("date") == d).select(feature, "target_5d").drop_nulls()
        if day.height < 5:
            continue
        x, y = day[feature].to_numpy(), day["target_5d"].to_numpy()
        if np.std(x) == 0:
            continue
        ics.append(spearmanr(x, y).statistic)
    ics = np.asarray(ics)
    fit = sm.OLS(ics, np.ones_like(ics)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    return ics.mean(), float(fit.tvalues[0]), ics.size


@pytest.mark.parametrize("lags", [0, 4])
def test_matches_a_slow_loop_with_scipy_and_statsmodels(lags):
    frame, segments = panel()
    table = factor_ic_by_segment(frame, ["f_a", "f_b", "f_noise"], "target_5d", segments, lags=lags)
    for feature in ("f_a", "f_b", "f_noise"):
        row = table.row(table["feature"].to_list().index(feature), named=True)
        for name, segment in segments.items():
            mean, t, days = slow_reference(frame, feature, segment, lags)
            assert row[f"days_{name}"] == days
            assert row[f"rankic_{name}"] == pytest.approx(mean, abs=1e-12)
            assert row[f"t_{name}"] == pytest.approx(t, rel=1e-9)
        assert row["drift"] == pytest.approx(row["rankic_test"] - row["rankic_train"])


def test_the_planted_flip_is_found_and_the_market_feature_is_nan_not_zero():
    frame, segments = panel()
    table = factor_ic_by_segment(frame, ["f_noise", "mkt_x", "f_b", "f_a"], "target_5d", segments, lags=4)
    assert table["feature"].to_list()[:2] == ["f_a", "f_b"]  # sorted by |training RankIC|
    market = table.row(table["feature"].to_list().index("mkt_x"), named=True)
    assert all(market[f"days_{n}"] == 0 for n in segments)
    assert all(np.isnan(market[f"rankic_{n}"]) and np.isnan(market[f"t_{n}"]) for n in segments)
    significant, flipped = sign_flips(table, "train", "test", t_min=2.0)
    assert set(significant) == {"f_a", "f_b"} and set(flipped) == {"f_a", "f_b"}  # NaN t is never significant
    assert sign_flips(table, "train", "train", t_min=2.0)[1] == []
    a, b = table["rankic_train"].to_numpy(), table["rankic_test"].to_numpy()
    ok = np.isfinite(a) & np.isfinite(b)
    assert ic_agreement(table, "train", "test") == pytest.approx(np.corrcoef(a[ok], b[ok])[0, 1])
    assert ic_agreement(table, "train", "test") < -0.9


def test_bad_input_is_named():
    frame, segments = panel()
    with pytest.raises(ValueError, match="'f_missing'"):
        factor_ic_by_segment(frame, ["f_a", "f_missing"], "target_5d", segments)
    with pytest.raises(ValueError, match="at least one segment"):
        factor_ic_by_segment(frame, ["f_a"], "target_5d", {})
    one = factor_ic_by_segment(frame, ["f_a"], "target_5d", {"train": segments["train"]})
    assert np.isnan(one["drift"][0])
