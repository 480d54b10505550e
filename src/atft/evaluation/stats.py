"""Significance of daily metric series whose neighbouring days are not independent.

A horizon-``h`` label spans ``h`` trading days, so the labels of two consecutive days share ``h - 1`` of
them and the daily RankIC series is autocorrelated up to lag ``h - 1``. Its plain t-statistic
(``mean / (std / sqrt(n))``) then overstates the evidence. This module gives the t-statistic with a
Newey-West (Bartlett kernel) HAC standard error (``newey_west_tstat``), the paired comparison of two
models' daily series on the same days (``paired_test``, ``paired_daily``) and the lag rule the callers use
(``default_lags``: ``h - 1`` for horizon ``h``). Each is defined in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from atft.evaluation.metrics import check_unique


def default_lags(horizon: int) -> int:
    """The Newey-West lag count for a daily series of horizon-``horizon`` labels: ``horizon - 1``, the
    number of days two consecutive labels share (0 for the 1-day horizon)."""
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer number of days, got {horizon!r}")
    return int(horizon) - 1


def newey_west_tstat(series: ArrayLike, lags: int) -> float:
    """The t-statistic of the mean of ``series`` with a Newey-West (Bartlett kernel) standard error.

    NaN values (and nulls of a polars Series) are dropped first and the rest is read as consecutive in
    order. With ``u_t = x_t - mean(x)`` over the ``n`` remaining values and ``w_l = 1 - l / (lags + 1)``:

        S = sum_t u_t**2 + 2 * sum_{l=1..lags} w_l * sum_{t=l+1..n} u_t * u_{t-l}
        t = mean(x) / sqrt(S / n**2)

    which is statsmodels' ``OLS(x, ones).fit(cov_type="HAC", cov_kwds={"maxlags": lags})`` (its default
    ``use_correction=False``). With ``lags=0`` it is the plain t-statistic times ``sqrt(n / (n - 1))``.
    NaN with fewer than 2 values or a constant series. Infinite values are refused.
    """
    values = _values(series, "series")
    return _nw_tstat(values[~np.isnan(values)], _checked_lags(lags))


def paired_test(a: ArrayLike, b: ArrayLike, lags: int) -> dict[str, Any]:
    """Compare two aligned daily series (model A's and model B's daily RankIC on the same days, in date
    order) through their difference ``d = a - b`` on the days where both are not NaN.

    Returns ``mean_diff`` (mean of d), ``tstat`` (plain paired t-statistic, ``scipy.stats.ttest_rel``),
    ``nw_tstat`` (``newey_west_tstat(d, lags)``), ``n_days`` (days compared), ``win_rate`` (share of
    those days with ``a > b``; a tie is not a win) and ``lags``. The statistics are NaN with fewer than 2
    days or a constant difference; ``mean_diff`` and ``win_rate`` are NaN with no day.
    """
    lags = _checked_lags(lags)
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be aligned day by day, got lengths {x.size} and {y.size}")
    both = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[both], y[both]
    diff = x - y
    n = int(diff.size)
    return {
        "mean_diff": float(diff.mean()) if n else math.nan,
        "tstat": _plain_tstat(diff),
        "nw_tstat": _nw_tstat(diff, lags),
        "n_days": n,
        "win_rate": float(np.mean(x > y)) if n else math.nan,
        "lags": lags,
    }


def paired_daily(
    frame_a: pl.DataFrame,
    frame_b: pl.DataFrame,
    *,
    column: str = "rankic",
    lags: int | None = None,
    horizon: int | None = None,
    date_col: str = "date",
) -> dict[str, Any]:
    """``paired_test`` of ``column`` of two per-day frames (e.g. two runs' ``eval/per_day.parquet``),
    aligned by ``date_col``: an inner join on the date, keeping the days where both values are finite
    (not null, NaN or infinite), in date order.

    With ``horizon`` given, both frames are first restricted to their rows with ``horizon == horizon``
    (the per-day frame of an evaluation holds every horizon) and ``lags`` defaults to ``horizon - 1``;
    without it ``lags`` is required. A date repeated within a frame is refused.
    """
    if lags is None:
        if horizon is None:
            raise ValueError("paired_daily needs lags, or a horizon to take horizon - 1 lags from")
        lags = default_lags(horizon)
    frames = {"frame_a": frame_a, "frame_b": frame_b}
    needed = [date_col, column] + (["horizon"] if horizon is not None else [])
    for name, frame in frames.items():
        for col in needed:
            if col not in frame.columns:
                raise ValueError(f"{name} is missing column {col!r} (it has: {', '.join(frame.columns)})")
    sides = []
    for name, frame in frames.items():
        if horizon is not None:
            frame = frame.filter(pl.col("horizon") == horizon)
        check_unique(frame, [date_col], name)
        sides.append(frame.select(date_col, pl.col(column).cast(pl.Float64)))
    joined = (
        sides[0]
        .join(sides[1], on=date_col, how="inner", suffix="_b")
        .filter(pl.col(column).is_finite() & pl.col(f"{column}_b").is_finite())
        .sort(date_col)
    )
    return paired_test(joined[column].to_numpy(), joined[f"{column}_b"].to_numpy(), lags)


# ---- helpers --------------------------------------------------------------------------------------------


def _values(series: ArrayLike, name: str) -> np.ndarray:
    """``series`` as a 1-D float array, nulls as NaN; infinite values refused."""
    values = np.asarray(series, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    if np.isinf(values).any():
        raise ValueError(f"{name} has {int(np.isinf(values).sum())} infinite values")
    return values


def _checked_lags(lags: int) -> int:
    if isinstance(lags, bool) or not isinstance(lags, numbers.Integral) or lags < 0:
        raise ValueError(f"lags must be a non-negative integer, got {lags!r}")
    return int(lags)


def _plain_tstat(x: np.ndarray) -> float:
    """``mean / (std / sqrt(n))``, std with ddof=1; NaN with fewer than 2 values or a constant series."""
    n = x.size
    if n < 2 or np.ptp(x) == 0:
        return math.nan
    return float(x.mean() / (x.std(ddof=1) / math.sqrt(n)))


def _nw_tstat(x: np.ndarray, lags: int) -> float:
    """``newey_west_tstat`` of a series already free of NaN."""
    n = x.size
    # A constant series has no spread; its residuals would be round-off, not a standard error.
    if n < 2 or np.ptp(x) == 0:
        return math.nan
    mean = x.mean()
    u = x - mean
    s = float(u @ u)
    # Lags of n or more have no pair of observations: their terms are 0.
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2 * (1 - lag / (lags + 1)) * float(u[lag:] @ u[:-lag])
    return float(mean * n / math.sqrt(s)) if s > 0 else math.nan
