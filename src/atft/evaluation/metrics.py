"""Prediction-quality metrics. Each one is defined precisely in ``docs/metrics.md``.

Cross-sectional metrics are computed per trading day over that day's stocks, then averaged over days:
a day is one independent ranking decision, so every day counts once whatever its number of stocks.
"""

from __future__ import annotations

import polars as pl


def daily_ic(
    df: pl.DataFrame,
    pred: str,
    label: str,
    *,
    method: str = "spearman",
    date_col: str = "date",
    min_stocks: int = 5,
) -> pl.DataFrame:
    """Per-day correlation between ``pred`` and ``label`` over the stocks where both are present.

    ``method="spearman"`` gives the daily RankIC, ``"pearson"`` the daily IC. Days with fewer than
    ``min_stocks`` valid pairs are left out (their correlation is noise). Returns (date, ic, n), sorted by date.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    valid = (
        df.select(date_col, pred, label)
        .drop_nulls()
        .filter(pl.col(pred).is_not_nan() & pl.col(label).is_not_nan())
    )
    return (
        valid.group_by(date_col)
        .agg(ic=pl.corr(pred, label, method=method), n=pl.len())
        .filter(pl.col("n") >= min_stocks)
        .drop_nans("ic")
        .sort(date_col)
    )


def mean_daily_rank_ic(df: pl.DataFrame, pred: str, label: str, *, date_col: str = "date") -> float:
    """Mean over days of the daily Spearman correlation (RankIC). NaN when no day qualifies."""
    ic = daily_ic(df, pred, label, method="spearman", date_col=date_col)["ic"]
    return float(ic.mean()) if ic.len() else float("nan")
