"""Market features from the index series, and each stock measured against the market.

``market_features`` runs on the index table alone (sorted by date) and is joined to the stock panel on
date, so every stock reads the same market value on a date. ``stock_vs_market`` then runs per stock
on the joined panel, like the features of ``technical`` (after ``stock_market_windows``): ``mkt_ret_1d``
there is the market return of the same date, so ``beta_60d`` is the regression of the stock's daily return
on the same-day market return.
"""

from __future__ import annotations

import polars as pl

from atft.features.technical import lag, ret, rolling

m = pl.col("close")
mkt = pl.col("mkt_ret_1d")

# Regime thresholds: a 10% fall from the running peak is a correction; volatility is "high" when the
# last month's is above the last quarter's.
DRAWDOWN_REGIME = -0.10
REGRESSION_WINDOW = 60


def market_features(index: pl.DataFrame) -> pl.DataFrame:
    """Index returns, volatility, drawdown from the running peak and regime flags, one row per index date."""
    log_ret = (m / m.shift(1)).log()
    drawdown = m / m.cum_max() - 1
    return index.sort("date").select(
        "date",
        mkt_ret_1d=m / m.shift(1) - 1,
        mkt_ret_5d=m / m.shift(5) - 1,
        mkt_ret_20d=m / m.shift(20) - 1,
        mkt_ret_60d=m / m.shift(60) - 1,
        mkt_vol_20d=log_ret.rolling_std(20),
        mkt_vol_60d=log_ret.rolling_std(60),
        mkt_drawdown=drawdown,
        mkt_sma_gap_200d=m / m.rolling_mean(200) - 1,
        mkt_regime_bull=(m > m.rolling_mean(200)).cast(pl.Float64),
        mkt_regime_high_vol=(log_ret.rolling_std(20) > log_ret.rolling_std(60)).cast(pl.Float64),
        mkt_regime_correction=(drawdown < DRAWDOWN_REGIME).cast(pl.Float64),
    )


def _stock_return(w: int) -> pl.Expr:
    return pl.col("close") / lag(pl.col("close"), w) - 1


def stock_market_windows() -> dict[str, pl.Expr]:
    """The 60-day means the regression on the market reads, once each (see ``technical.windows``)."""
    w = REGRESSION_WINDOW
    return {
        "_mean_r": rolling(ret, w, "mean"),
        "_mean_m": rolling(mkt, w, "mean"),
        "_mean_rm": rolling(ret * mkt, w, "mean"),
        "_mean_mm": rolling(mkt * mkt, w, "mean"),
        "_mean_rr": rolling(ret * ret, w, "mean"),
    }


def stock_vs_market() -> dict[str, pl.Expr]:
    """Beta, alpha, correlation and idiosyncratic share of risk over 60 days; strength relative to the market."""
    mean_r, mean_m = pl.col("_mean_r"), pl.col("_mean_m")
    cov = pl.col("_mean_rm") - mean_r * mean_m
    var_m = pl.col("_mean_mm") - mean_m * mean_m
    var_r = pl.col("_mean_rr") - mean_r * mean_r
    beta = cov / var_m
    corr = cov / (var_m * var_r).sqrt()
    return {
        "beta_60d": beta,
        # Daily intercept of the same 60-day regression, and today's return net of beta times the market.
        "alpha_60d": mean_r - beta * mean_m,
        "resid_ret_1d": ret - beta * mkt,
        "corr_mkt_60d": corr,
        # Share of the stock's 60-day volatility that the market does not explain: sqrt(1 - corr^2).
        "idio_vol_ratio_60d": (1 - corr.pow(2)).clip(lower_bound=0).sqrt(),
        "rel_strength_20d": _stock_return(20) - pl.col("mkt_ret_20d"),
        "rel_strength_60d": _stock_return(60) - pl.col("mkt_ret_60d"),
    }
