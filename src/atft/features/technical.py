"""Per-stock time-series features: each value at date t reads only the stock's own rows up to t.

Every function returns ``{feature_name: polars expression}``. The caller (``build._per_stock``) evaluates
them in three steps on a frame of whole stocks sorted by (code, date), with ``row_in_stock`` (the row's
index within its stock, 0 on its first row):

1. ``base_columns``: the previous close, the 1-day returns and the value traded;
2. ``windows``: every rolling window that several features read, once each as a ``_``-prefixed column
   (polars computes a window repeated in several expressions once per expression);
3. the feature groups (``returns`` ... ``volume_liquidity``), over the columns of 1 and 2.

The frame holds many stocks one after the other. A shift, minimum or maximum over it is the stock's own
exactly when it does not reach back past the stock's first row, so ``lag`` and ``rolling`` null the rows
where it would, without grouping by stock. Sums (means, standard deviations) and exponential averages
carry state from row to row, so they run ``.over("code")`` (see ``rolling``).
Windows are counted in the stock's own trading days (rows). A window that is not yet full gives null
(``rolling_*`` and ``ewm_mean`` with ``min_samples`` equal to the window), never an imputed value.

Definitions are in ``docs/features.md``; ``tests/test_features_reference.py`` checks each against a slow loop.
"""

from __future__ import annotations

import math

import polars as pl

c, o, h, lo, v = (pl.col(n) for n in ("close", "open", "high", "low", "volume"))
row = pl.col("row_in_stock")
prev_close = pl.col("prev_close")
log_ret = pl.col("log_ret_1d")
ret = pl.col("ret_1d")
SMA_WINDOWS = (5, 10, 20, 60)
EMA_SPANS = (5, 10, 20, 60, 200, 12, 26)
RSI_PERIODS = (14, 2)


def lag(x: pl.Expr, k: int) -> pl.Expr:
    """``x`` k rows earlier within the stock; null on the stock's first k rows (not the previous stock's)."""
    return pl.when(row >= k).then(x.shift(k))


def rolling(x: pl.Expr, w: int, stat: str) -> pl.Expr:
    """``x.rolling_<stat>(w)`` within the stock; a null inside the window makes it null (``min_samples`` = w).

    A minimum or maximum is exact: taken over the whole frame, it is null on the stock's first w - 1 rows,
    whose window would reach into the previous stock. A mean or standard deviation is a sliding sum that
    adds the entering value and subtracts the leaving one, so its last bits carry the rows before the
    window: over the whole frame a stock's value would depend on the previous stock's history, and change
    when that stock's later data arrives (``tests/test_features_pit.py``). Those run ``.over("code")``.
    """
    if stat in ("min", "max"):
        return pl.when(row >= w - 1).then(getattr(x, f"rolling_{stat}")(w))
    return getattr(x, f"rolling_{stat}")(w).over("code")


def base_columns() -> dict[str, pl.Expr]:
    """Columns that later features read: the previous close, the 1-day simple and log return, and the
    day's value traded."""
    return {
        "prev_close": lag(c, 1),
        "ret_1d": c / lag(c, 1) - 1,
        "log_ret_1d": (c / lag(c, 1)).log(),
        # Zero volume means no trade, not infinite illiquidity: null, never log(0) or a division by 0.
        "dollar_volume": pl.when(v > 0).then(c * v),
    }


def windows() -> dict[str, pl.Expr]:
    """Rolling windows and exponential averages that features read (after ``base_columns``)."""
    change = c - prev_close
    return {
        **{f"_ema_{w}": _ema(c, w) for w in EMA_SPANS},
        **{f"_gain_{n}": _wilder(change.clip(lower_bound=0), n) for n in RSI_PERIODS},
        **{f"_loss_{n}": _wilder((-change).clip(lower_bound=0), n) for n in RSI_PERIODS},
        "_atr_14": _wilder(_true_range(), 14),
        **{f"_sma_{w}": rolling(c, w, "mean") for w in SMA_WINDOWS},
        "_std_20": rolling(c, 20, "std"),
        "_vol_5": rolling(log_ret, 5, "std"),
        "_vol_20": rolling(log_ret, 20, "std"),
        "_vmean_5": rolling(v, 5, "mean"),
        "_vmean_20": rolling(v, 20, "mean"),
        "_low_14": rolling(lo, 14, "min"),
        "_high_14": rolling(h, 14, "max"),
    }


def _wilder(x: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing: avg_t = avg_{t-1} + (x_t - avg_{t-1}) / n, null until n values are in."""
    return x.ewm_mean(alpha=1 / n, adjust=False, min_samples=n).over("code")


def _ema(x: pl.Expr, span: int) -> pl.Expr:
    """Exponential moving average with alpha = 2 / (span + 1), null until ``span`` values are in."""
    return x.ewm_mean(span=span, adjust=True, min_samples=span).over("code")


def _sqrt(x: pl.Expr) -> pl.Expr:
    return x.clip(lower_bound=0).sqrt()


def returns() -> dict[str, pl.Expr]:
    """Past returns over 1-60 days, simple and log, plus 60-day momentum that skips the last 5 days."""
    out: dict[str, pl.Expr] = {}
    for w in (1, 5, 10, 20, 60):
        out[f"ret_{w}d"] = c / lag(c, w) - 1
    for w in (1, 5, 10, 20, 60):
        out[f"log_ret_{w}d"] = (c / lag(c, w)).log()
    out["mom_60_5d"] = lag(c, 5) / lag(c, 60) - 1
    out["dist_high_60d"] = c / rolling(h, 60, "max") - 1
    out["dist_low_60d"] = c / rolling(lo, 60, "min") - 1
    return out


def volatility() -> dict[str, pl.Expr]:
    """Daily volatilities: close-to-close, range-based (Parkinson, Garman-Klass) and downside."""
    hl2 = (h / lo).log() ** 2
    co2 = (c / o).log() ** 2
    gk_term = 0.5 * hl2 - (2 * math.log(2) - 1) * co2
    return {
        "vol_5d": pl.col("_vol_5"),
        "vol_20d": pl.col("_vol_20"),
        "vol_60d": rolling(log_ret, 60, "std"),
        "vol_ratio_5_20": pl.col("_vol_5") / pl.col("_vol_20"),
        # A rolling mean of squares can come out a hair below 0 in floating point: clip before the root.
        "downside_vol_20d": _sqrt(rolling(log_ret.clip(upper_bound=0).pow(2), 20, "mean")),
        "parkinson_vol_20d": _sqrt(rolling(hl2, 20, "mean") / (4 * math.log(2))),
        "parkinson_vol_60d": _sqrt(rolling(hl2, 60, "mean") / (4 * math.log(2))),
        "garman_klass_vol_20d": _sqrt(rolling(gk_term, 20, "mean")),
    }


def moving_averages() -> dict[str, pl.Expr]:
    """Distance of the close from simple and exponential moving averages, and between averages."""
    sma = {w: pl.col(f"_sma_{w}") for w in SMA_WINDOWS}
    out: dict[str, pl.Expr] = {}
    for w in SMA_WINDOWS:
        out[f"sma_gap_{w}d"] = c / sma[w] - 1
    for w in SMA_WINDOWS:
        out[f"ema_gap_{w}d"] = c / pl.col(f"_ema_{w}") - 1
    out["ma_gap_5_20"] = sma[5] / sma[20] - 1
    out["ma_gap_20_60"] = sma[20] / sma[60] - 1
    out["ema_gap_200d"] = c / pl.col("_ema_200") - 1
    out["sma_slope_20d"] = sma[20] / lag(sma[20], 5) - 1
    return out


def _rsi(n: int) -> pl.Expr:
    gain, loss = pl.col(f"_gain_{n}"), pl.col(f"_loss_{n}")
    # No losses at all is RSI 100; no movement at all (0/0) is the neutral 50.
    return (
        pl.when(loss > 0)
        .then(100 - 100 / (1 + gain / loss))
        .when(gain > 0)
        .then(100.0)
        .when(gain.is_not_null())
        .then(50.0)
    )


def _true_range() -> pl.Expr:
    # max_horizontal skips nulls: without the previous close the first row's range would pass for a TR.
    return pl.when(prev_close.is_not_null()).then(
        pl.max_horizontal(h - lo, (h - prev_close).abs(), (lo - prev_close).abs())
    )


def oscillators() -> dict[str, pl.Expr]:
    """RSI, MACD, Bollinger bands, normalized ATR and stochastics: bounded or price-scaled oscillators."""
    macd = pl.col("_ema_12") - pl.col("_ema_26")
    signal = macd.ewm_mean(span=9, adjust=True, min_samples=9).over("code")
    sma20, std20 = pl.col("_sma_20"), pl.col("_std_20")
    low14, high14 = pl.col("_low_14"), pl.col("_high_14")
    # A flat range or band has no position in it: the neutral middle, but only once the window is full.
    stoch_k = (
        pl.when(high14 > low14).then((c - low14) / (high14 - low14) * 100).when(high14 == low14).then(50.0)
    )
    return {
        "rsi_14": _rsi(14),
        "rsi_2": _rsi(2),
        "macd_price": macd / c,
        "macd_hist_price": (macd - signal) / c,
        "bb_pctb_20": pl.when(std20 > 0)
        .then((c - (sma20 - 2 * std20)) / (4 * std20))
        .when(std20 == 0)
        .then(0.5),
        "bb_width_20": 4 * std20 / sma20,
        "natr_14": pl.col("_atr_14") / c * 100,
        "stoch_k_14": stoch_k,
        "stoch_d_14": rolling(stoch_k, 3, "mean"),
    }


def intraday() -> dict[str, pl.Expr]:
    """How the day traded: where it closed in its range, the overnight gap, and the open-to-close move."""
    return {
        "close_pos_range": pl.when(h > lo).then((c - lo) / (h - lo)).when(h == lo).then(0.5),
        "overnight_gap": o / prev_close - 1,
        "intraday_ret": c / o - 1,
        "hl_range": h / lo - 1,
        "overnight_gap_mean_5d": rolling(o / prev_close - 1, 5, "mean"),
        "intraday_ret_mean_5d": rolling(c / o - 1, 5, "mean"),
    }


def volume_liquidity() -> dict[str, pl.Expr]:
    """Trading activity against its own history, value traded, and Amihud's price impact."""
    dv = pl.col("dollar_volume")
    vmean5, vmean20 = pl.col("_vmean_5"), pl.col("_vmean_20")
    return {
        "volume_ratio_5": v / vmean5,
        "volume_ratio_20": v / vmean20,
        "log_dollar_volume": dv.log(),
        "log_dollar_volume_20d": rolling(dv, 20, "mean").log(),
        # |return| per billion of value traded, averaged over 20 days (Amihud 2002).
        "amihud_20d": rolling(ret.abs() / dv * 1e9, 20, "mean"),
        "volume_trend_5_20": vmean5 / vmean20 - 1,
    }
