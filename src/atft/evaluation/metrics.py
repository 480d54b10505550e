"""Prediction-quality metrics: the daily correlations, and the per-horizon validation metrics of the
training engine (``horizon_metrics``) with the long-short portfolio behind its Sharpe ratio. Each one is
defined precisely in ``docs/metrics.md``.

Cross-sectional metrics are computed per trading day over that day's stocks, then averaged over days:
a day is one independent ranking decision, so every day counts once whatever its number of stocks.
"""

from __future__ import annotations

import math

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


# Trading days per year, for annualizing a daily Sharpe ratio.
TRADING_DAYS = 252

# Guards floor(quantile * n) and the 2 / quantile eligibility bound against float round-off: 0.29 * 100 is
# 28.999999999999996 in binary floating point, which is 29 stocks, not 28.
ROUNDOFF_EPS = 1e-9


def present(col: str) -> pl.Expr:
    """A value is usable when it is neither null nor NaN (a missing label is never a 0)."""
    return pl.col(col).is_not_null() & pl.col(col).is_not_nan()


def as_float(value: object) -> float:
    """A polars scalar as a float; None (an aggregate over no rows) becomes NaN."""
    return float("nan") if value is None else float(value)


def mean_over_std(values: pl.Series) -> float:
    """mean / std (ddof=1) of a daily series; NaN with fewer than 2 values or a zero std."""
    if values.len() < 2:
        return float("nan")
    std = as_float(values.std(ddof=1))
    return as_float(values.mean()) / std if std > 0 else float("nan")


def long_short_returns(
    signal_frame: pl.DataFrame,
    returns_frame: pl.DataFrame,
    *,
    cost_bps: float = 5.0,
    quantile: float = 0.2,
    signal: str = "prediction",
    ret: str = "label",
) -> pl.DataFrame:
    """Daily returns of a long-short portfolio rebalanced every day on ``signal``, net of trading costs.

    ``signal_frame`` holds (date, code, ``signal``); ``returns_frame`` holds (date, code, ``ret``), the
    1-day forward return of the stock from that date. Each day, among the stocks with both a signal and a
    return, the top ``quantile`` fraction by signal is held long and the bottom fraction short, equally
    weighted, +1 and -1 in total. Days are the distinct dates of both frames; a day with fewer than
    ``2 / quantile`` eligible stocks holds nothing. Costs are ``cost_bps`` per unit of turnover
    sum|w_t - w_{t-1}|, the first day paying for its entry (docs/metrics.md).

    Returns (date, gross, net, turnover, n_long, n_short), one row per day, sorted by date.
    """
    check_quantile(quantile)
    for name, frame in (("signal_frame", signal_frame), ("returns_frame", returns_frame)):
        check_unique(frame, ["date", "code"], name)
    return _long_short(
        signal_frame, returns_frame, cost_bps=cost_bps, quantile=quantile, signal=signal, ret=ret
    )


def check_quantile(quantile: float) -> None:
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5] so that the legs do not overlap, got {quantile}")


def check_unique(frame: pl.DataFrame, keys: list[str], name: str) -> None:
    """Refuse ``frame`` when several rows share one key, naming the first such row."""
    # A repeated row would silently double a stock's weight or its error.
    dup = frame.select(keys).is_duplicated()
    if dup.any():
        row = int(dup.arg_true()[0])
        example = ", ".join(f"{k}={frame[k][row]!r}" for k in keys)
        raise ValueError(
            f"{name} has {int(dup.sum())} rows sharing a ({', '.join(keys)}): several rows for one key, "
            f"e.g. row {row} ({example})"
        )


def _long_short(
    signal_frame: pl.DataFrame,
    returns_frame: pl.DataFrame,
    *,
    cost_bps: float,
    quantile: float,
    signal: str,
    ret: str,
) -> pl.DataFrame:
    """``long_short_returns`` without the checks of its input, which ``horizon_metrics`` makes once."""
    days = (
        pl.concat([signal_frame.select("date"), returns_frame.select("date")])
        .unique()
        .sort("date")
        .with_row_index("t")
    )
    eligible = (
        signal_frame.select("date", "code", pl.col(signal).alias("signal"))
        .join(returns_frame.select("date", "code", pl.col(ret).alias("ret")), on=["date", "code"])
        .filter(present("signal") & present("ret"))
    )
    n = pl.len().over("date")
    per_leg = (n * quantile + ROUNDOFF_EPS).floor().cast(pl.Int64).clip(lower_bound=1)
    # One total order per day, best signal first and ties going to the smaller code, so that the
    # selection does not depend on row order and the two legs never share a stock.
    weights = (
        eligible.sort(["date", "signal", "code"], descending=[False, True, False])
        .with_columns(position=pl.int_range(pl.len()).over("date"), per_leg=per_leg, n=n)
        .filter(pl.col("n") * quantile >= 2 - ROUNDOFF_EPS)
        .with_columns(
            w=pl.when(pl.col("position") < pl.col("per_leg"))
            .then(1 / pl.col("per_leg"))
            .when(pl.col("position") >= pl.col("n") - pl.col("per_leg"))
            .then(-1 / pl.col("per_leg"))
            .otherwise(0.0)
        )
        .filter(pl.col("w") != 0)
        .join(days, on="date")
        .select("t", "date", "code", "w", "ret")
    )

    held_before = weights.select((pl.col("t") + 1).alias("t"), "code", w_prev="w")
    turnover = (
        weights.select("t", "code", "w")
        # A stock held on only one of the two days is absent, weight 0, on the other.
        .join(held_before, on=["t", "code"], how="full", coalesce=True)
        .filter(pl.col("t") < days.height)  # the exit after the last day is not a trade of the sample
        .group_by("t")
        .agg(turnover=(pl.col("w").fill_null(0.0) - pl.col("w_prev").fill_null(0.0)).abs().sum())
    )
    gross = weights.group_by("t").agg(
        gross=(pl.col("w") * pl.col("ret")).sum(),
        n_long=(pl.col("w") > 0).sum().cast(pl.Int64),
        n_short=(pl.col("w") < 0).sum().cast(pl.Int64),
    )
    return (
        days.join(gross, on="t", how="left")
        .join(turnover, on="t", how="left")
        .with_columns(pl.col("gross", "turnover").fill_null(0.0), pl.col("n_long", "n_short").fill_null(0))
        .select(
            "date",
            "gross",
            net=pl.col("gross") - cost_bps / 1e4 * pl.col("turnover"),
            turnover="turnover",
            n_long="n_long",
            n_short="n_short",
        )
        .sort("date")  # joins do not promise to keep the order of the days
    )


def horizon_metrics(
    preds: pl.DataFrame, *, cost_bps: float = 5.0, quantile: float = 0.2, min_stocks: int = 5
) -> dict[str, float]:
    """The validation metrics of every horizon, keyed ``"<metric>_<h>d"`` (docs/metrics.md).

    ``preds`` is long: one row per (date, code, horizon) with ``prediction`` and ``label`` (null where the
    label is missing). Per horizon: mae, rmse, r2, naive_rmse (pooled over labelled rows); ic, rankic,
    icir, rankicir, n_days (from the daily correlations); scale (daily prediction spread over label
    spread); sharpe (long-short portfolio on the prediction, traded on the 1-day labels, NaN without
    horizon 1 rows); coverage (share of rows with a label). icir and rankicir are ratios of daily values,
    not annualized; sharpe is annualized (x sqrt(252)). A metric with nothing to average is NaN.
    """
    check_quantile(quantile)
    check_unique(preds, ["date", "code", "horizon"], "preds")
    out: dict[str, float] = {}
    one_day_returns = preds.filter(pl.col("horizon") == 1).select("date", "code", "label")
    for h in sorted(preds["horizon"].unique().drop_nulls().to_list()):
        rows = preds.filter(pl.col("horizon") == h)
        valid = rows.filter(present("prediction") & present("label"))
        error = pl.col("prediction") - pl.col("label")
        y = pl.col("label")
        pooled = valid.select(
            mae=error.abs().mean(),
            rmse=(error**2).mean().sqrt(),
            sse=(error**2).sum(),
            sst=((y - y.mean()) ** 2).sum(),
            naive_rmse=(y**2).mean().sqrt(),
        ).row(0, named=True)
        sse, sst = as_float(pooled["sse"]), as_float(pooled["sst"])

        ic = daily_ic(rows, "prediction", "label", method="pearson", min_stocks=min_stocks)["ic"]
        rank_ic = daily_ic(rows, "prediction", "label", method="spearman", min_stocks=min_stocks)["ic"]

        # A day with a constant label has no spread to compare with: it is skipped, not infinite.
        scale = (
            valid.group_by("date")
            .agg(pred_std=pl.col("prediction").std(ddof=1), label_std=y.std(ddof=1), n=pl.len())
            .filter((pl.col("n") >= min_stocks) & (pl.col("label_std") > 0))
            .select((pl.col("pred_std") / pl.col("label_std")).mean())
            .item()
        )

        sharpe = float("nan")
        if one_day_returns.height:
            net = _long_short(
                rows, one_day_returns, cost_bps=cost_bps, quantile=quantile, signal="prediction", ret="label"
            )["net"]
            sharpe = mean_over_std(net) * math.sqrt(TRADING_DAYS)

        out |= {
            f"mae_{h}d": as_float(pooled["mae"]),
            f"rmse_{h}d": as_float(pooled["rmse"]),
            # Against a constant label R² has no meaning: NaN rather than sklearn's 0 or 1.
            f"r2_{h}d": 1 - sse / sst if sst > 0 else float("nan"),
            f"naive_rmse_{h}d": as_float(pooled["naive_rmse"]),
            f"ic_{h}d": as_float(ic.mean()),
            f"rankic_{h}d": as_float(rank_ic.mean()),
            f"icir_{h}d": mean_over_std(ic),
            f"rankicir_{h}d": mean_over_std(rank_ic),
            f"scale_{h}d": as_float(scale),
            f"sharpe_{h}d": sharpe,
            f"n_days_{h}d": float(ic.len()),
            f"coverage_{h}d": as_float(rows.select(present("label").mean()).item()),
        }
    return out
