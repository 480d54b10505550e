"""Metrics against independent references (scipy on a slow per-day loop)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft.evaluation.metrics import daily_ic, mean_daily_rank_ic


@pytest.fixture
def panel():
    rng = np.random.default_rng(0)
    rows = []
    for d in range(30):
        n = int(rng.integers(3, 40))  # some days have too few stocks
        y = rng.normal(size=n)
        p = 0.3 * y + rng.normal(size=n)
        p[rng.random(n) < 0.1] = np.nan  # missing predictions
        y_missing = rng.random(n) < 0.1
        p = np.round(p, 1)  # ties, so average ranks matter
        for i in range(n):
            rows.append(
                (date(2020, 1, 1) + timedelta(days=d), f"{i:04d}", p[i], None if y_missing[i] else y[i])
            )
    return pl.DataFrame(rows, schema=["date", "code", "pred", "label"], orient="row")


def slow_daily(df: pl.DataFrame, method: str, min_stocks: int = 5) -> dict:
    out = {}
    for (d,), g in df.group_by("date"):
        g = g.drop_nulls().filter(pl.col("pred").is_not_nan())
        if g.height < min_stocks:
            continue
        x, y = g["pred"].to_numpy(), g["label"].to_numpy()
        r = stats.spearmanr(x, y).statistic if method == "spearman" else stats.pearsonr(x, y).statistic
        if not math.isnan(r):
            out[d] = r
    return out


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_daily_ic_matches_scipy(panel, method):
    fast = daily_ic(panel, "pred", "label", method=method)
    slow = slow_daily(panel, method)
    assert dict(zip(fast["date"], fast["ic"], strict=True)).keys() == slow.keys()
    for d, v in zip(fast["date"], fast["ic"], strict=True):
        assert v == pytest.approx(slow[d], abs=1e-12)


def test_mean_daily_rank_ic_is_mean_of_days(panel):
    slow = slow_daily(panel, "spearman")
    assert mean_daily_rank_ic(panel, "pred", "label") == pytest.approx(
        np.mean(list(slow.values())), abs=1e-12
    )


def test_constant_day_is_left_out_not_zero():
    df = pl.DataFrame(
        {
            "date": [date(2020, 1, 1)] * 6 + [date(2020, 1, 2)] * 6,
            "pred": [1.0] * 6 + [1, 2, 3, 4, 5, 6],
            "label": [1.0, 2, 3, 4, 5, 6] * 2,
        }
    )
    assert mean_daily_rank_ic(df, "pred", "label") == pytest.approx(1.0)


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        daily_ic(pl.DataFrame({"date": [], "p": [], "y": []}), "p", "y", method="kendall")
