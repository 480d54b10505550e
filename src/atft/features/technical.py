"""Per-stock time-series features: each value at date t reads only the stock's own rows up to t.

Every function returns ``{feature_name: polars expression}`` over the price columns (date, code, open,
high, low, close, volume) plus the base columns of ``base_columns``; the caller evaluates them with
``.over("code")`` on a frame sorted by (code, date), so every rolling window, shift and EWM runs within one
stock. Windows are counted in the stock's own trading days (rows). A window that is not yet full gives
null (``rolling_*`` and ``ewm_mean`` with ``min_samples`` equal to the window), never an imputed value.

Definitions are in ``docs/features.md``; ``tests/test_features_reference.py`` checks each against a slow loop.
"""

from __future__ import annotations

import math

import polars as pl

c, o, h, lo, v = (pl.col(n) for n in ("close", "open", "high", "low", "volume"))
prev_close = c.shift(1)
log_ret = pl.col("log_ret_1d")
ret = pl.col("ret_1d")


def base_columns() -> dict[str, pl.Expr]:
    """Columns that later features read: the 1-day simple and log return, and the day's value traded."""
    return {
        "ret_1d": c / prev_close - 1,
        "log_ret_1d": (c / prev_close).log(),
        # Zero volume means no trade, not infinite illiquidity: null, never log(0) or a division by 0.
        "dollar_volume": pl.when(v > 0).then(c * v),
    }


def _wilder(x: pl.Expr, n: int) -> pl.Expr:
    """Wilder's smoothing: avg_t = avg_{t-1} + (x_t - avg_{t-1}) / n, null until n values are in."""
    return x.ewm_mean(alpha=1 / n, adjust=False, min_samples=n)


def _ema(x: pl.Expr, span: int) -> pl.Expr:
    """Exponential moving average with alpha = 2 / (span + 1), null until ``span`` values are in."""
    return x.ewm_mean(span=span, adjust=True, min_samples=span)


def _sqrt(x: pl.Expr) -> pl.Expr:
    return x.clip(lower_bound=0).sqrt()


def returns() -> dict[str, pl.Expr]:
    """Past returns over 1-60 days, simple and log, plus 60-day momentum that skips the last 5 days."""
    out: dict[str, pl.Expr] = {}
    for w in (1, 5, 10, 20, 60):
        out[f"ret_{w}d"] = c / c.shift(w) - 1
    for w in (1, 5, 10, 20, 60):
        out[f"log_ret_{w}d"] = (c / c.shift(w)).log()
    out["mom_60_5d"] = c.shift(5) / c.shift(60) - 1
    out["dist_high_60d"] = c / h.rolling_max(60) - 1
    out["dist_low_60d"] = c / lo.rolling_min(60) - 1
    return out


def volatility() -> dict[str, pl.Expr]:
    """Daily volatilities: close-to-close, range-based (Parkinson, Garman-Klass) and downside."""
    hl2 = (h / lo).log() ** 2
    co2 = (c / o).log() ** 2
    gk_term = 0.5 * hl2 - (2 * math.log(2) - 1) * co2
    return {
        "vol_5d": log_ret.rolling_std(5),
        "vol_20d": log_ret.rolling_std(20),
        "vol_60d": log_ret.rolling_std(60),
        "vol_ratio_5_20": log_ret.rolling_std(5) / log_ret.rolling_std(20),
        # A rolling mean of squares can come out a hair below 0 in floating point: clip before the root.
        "downside_vol_20d": _sqrt(log_ret.clip(upper_bound=0).pow(2).rolling_mean(20)),
        "parkinson_vol_20d": _sqrt(hl2.rolling_mean(20) / (4 * math.log(2))),
        "parkinson_vol_60d": _sqrt(hl2.rolling_mean(60) / (4 * math.log(2))),
        "garman_klass_vol_20d": _sqrt(gk_term.rolling_mean(20)),
    }


def moving_averages() -> dict[str, pl.Expr]:
    """Distance of the close from simple and exponential moving averages, and between averages."""
    out: dict[str, pl.Expr] = {}
    for w in (5, 10, 20, 60):
        out[f"sma_gap_{w}d"] = c / c.rolling_mean(w) - 1
    for w in (5, 10, 20, 60):
        out[f"ema_gap_{w}d"] = c / _ema(c, w) - 1
    out["ma_gap_5_20"] = c.rolling_mean(5) / c.rolling_mean(20) - 1
    out["ma_gap_20_60"] = c.rolling_mean(20) / c.rolling_mean(60) - 1
    out["ema_gap_200d"] = c / _ema(c, 200) - 1
    out["sma_slope_20d"] = c.rolling_mean(20) / c.rolling_mean(20).shift(5) - 1
    return out


def _rsi(n: int) -> pl.Expr:
    change = c - prev_close
    gain = _wilder(change.clip(lower_bound=0), n)
    loss = _wilder((-change).clip(lower_bound=0), n)
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
    macd = _ema(c, 12) - _ema(c, 26)
    signal = macd.ewm_mean(span=9, adjust=True, min_samples=9)
    sma20, std20 = c.rolling_mean(20), c.rolling_std(20)
    low14, high14 = lo.rolling_min(14), h.rolling_max(14)
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
        "natr_14": _wilder(_true_range(), 14) / c * 100,
        "stoch_k_14": stoch_k,
        "stoch_d_14": stoch_k.rolling_mean(3),
    }


def intraday() -> dict[str, pl.Expr]:
    """How the day traded: where it closed in its range, the overnight gap, and the open-to-close move."""
    return {
        "close_pos_range": pl.when(h > lo).then((c - lo) / (h - lo)).when(h == lo).then(0.5),
        "overnight_gap": o / prev_close - 1,
        "intraday_ret": c / o - 1,
        "hl_range": h / lo - 1,
        "overnight_gap_mean_5d": (o / prev_close - 1).rolling_mean(5),
        "intraday_ret_mean_5d": (c / o - 1).rolling_mean(5),
    }


def volume_liquidity() -> dict[str, pl.Expr]:
    """Trading activity against its own history, value traded, and Amihud's price impact."""
    dv = pl.col("dollar_volume")
    return {
        "volume_ratio_5": v / v.rolling_mean(5),
        "volume_ratio_20": v / v.rolling_mean(20),
        "log_dollar_volume": dv.log(),
        "log_dollar_volume_20d": dv.rolling_mean(20).log(),
        # |return| per billion of value traded, averaged over 20 days (Amihud 2002).
        "amihud_20d": (ret.abs() / dv * 1e9).rolling_mean(20),
        "volume_trend_5_20": v.rolling_mean(5) / v.rolling_mean(20) - 1,
    }
