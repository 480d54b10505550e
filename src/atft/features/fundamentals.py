"""Fundamental features from the companies' financial statements (J-Quants ``statements``).

Each statement's features are computed once, on the statements themselves, and joined onto the price panel
as of the statement's effective date (``point_in_time``): at date t a stock reads the latest statement that
took effect on or before t. Values are results of the fiscal year to date, so growth compares a period
with the same period type (1Q, 2Q, 3Q, FY) of the previous fiscal year.

What "previous" means is fixed by what was public when the statement took effect:

- the previous fiscal year's statement is the latest one of the same code and period type whose fiscal
  year ends one year before this one's, among those effective on or before this statement (a restatement
  published later is not read back into the past);
- the previous statement of the same fiscal year is the one kept on the code's previous effective day.

Several statements effective on the same day for a code: the one disclosed last (date, then time, a null
time counting as the latest, then disclosure_number) is kept. A division by zero or a missing input gives
null, never NaN or infinity. Definitions: ``docs/features.md``.
"""

from __future__ import annotations

import polars as pl

from atft.features.point_in_time import (
    as_of,
    business_day_index,
    in_effect,
    parse_time,
    statement_effective_date,
)

GROUP = "fundamentals"
FLAG = "stmt_valid"
# Value features (one statement's numbers); stmt_days_since is added at the join.
VALUES = (
    "stmt_sales_yoy", "stmt_op_yoy", "stmt_op_margin", "stmt_np_margin", "stmt_progress_op",
    "stmt_progress_sales", "stmt_forecast_rev_op", "stmt_roe",
)  # fmt: skip
FEATURES = (*VALUES, "stmt_days_since")
# Year-to-date profit times this is a full year's: 1Q covers 3 months, 2Q 6, 3Q 9.
ANNUALIZE = {"1Q": 4.0, "2Q": 2.0, "3Q": 4.0 / 3.0, "FY": 1.0}
ORDER = ["code", "effective_date", "disclosed_date", "_time", "_number", "disclosure_number"]


def ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den, null where either is missing, den is 0 (x/0 is infinite, 0/0 NaN) or the result is not finite."""
    q = num / den
    return pl.when(q.is_finite()).then(q)


def rel_change(x: pl.Expr, prev: pl.Expr) -> pl.Expr:
    """(x - prev) / abs(prev): growth that keeps its sign when the base is negative; null when prev is 0."""
    return ratio(x - prev, prev.abs())


def ordered_statements(statements: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """The statements that ever take effect, with ``effective_date``, sorted by code and the order they
    became known in (``ORDER``)."""
    return (
        statements.with_columns(
            effective_date=statement_effective_date(statements, calendar),
            _time=parse_time(pl.col("disclosed_time")),
            _number=pl.col("disclosure_number").cast(pl.Int64, strict=False),
        )
        .filter(pl.col("effective_date").is_not_null() & pl.col("code").is_not_null())
        .sort(ORDER, nulls_last=True, maintain_order=True)  # a null time counts as the latest of the day
    )


def _previous_year(s: pl.DataFrame) -> pl.DataFrame:
    """Per statement of ``s`` (in its order): net sales and operating profit of the same period type of the
    previous fiscal year, from the latest such statement effective on or before this one."""
    keys = ["code", "period_type", "_fy"]
    prior = (
        s.select(
            *keys[:2],
            pl.col("fiscal_year_end").alias("_fy"),
            "effective_date",
            pl.col("net_sales").alias("_prev_sales"),
            pl.col("operating_profit").alias("_prev_op"),
        )
        .drop_nulls(keys)
        .unique([*keys, "effective_date"], keep="last", maintain_order=True)  # the latest version that day
    )
    left = s.select(*keys[:2], pl.col("fiscal_year_end").dt.offset_by("-1y").alias("_fy"), "effective_date")
    # ``s`` is in ``ORDER`` (code, effective_date, ...), so within every ``by`` group both sides are in
    # effective-date order, which is all join_asof needs; it keeps the left side's row order.
    joined = left.join_asof(prior, on="effective_date", by=keys, strategy="backward", check_sortedness=False)
    nothing = pl.any_horizontal(pl.col(keys).is_null())  # no period type or fiscal year: no match
    return joined.select(
        pl.when(~nothing).then("_prev_sales").alias("_prev_sales"),
        pl.when(~nothing).then("_prev_op").alias("_prev_op"),
    )


def statement_features(statements: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """One row per (code, effective_date): the statement kept that day and its value features (``VALUES``).

    Columns: code, effective_date, then ``VALUES``; sorted by code, effective_date.
    """
    s = ordered_statements(statements, calendar)
    s = s.with_columns(_previous_year(s))
    kept = s.unique(["code", "effective_date"], keep="last", maintain_order=True)
    annualized = pl.col("profit") * pl.col("period_type").replace_strict(
        ANNUALIZE, default=None, return_dtype=pl.Float64
    )
    equity = pl.col("equity")
    forecast = pl.col("forecast_operating_profit")
    return kept.select(
        "code",
        "effective_date",
        stmt_sales_yoy=rel_change(pl.col("net_sales"), pl.col("_prev_sales")),
        stmt_op_yoy=rel_change(pl.col("operating_profit"), pl.col("_prev_op")),
        stmt_op_margin=ratio(pl.col("operating_profit"), pl.col("net_sales")),
        stmt_np_margin=ratio(pl.col("profit"), pl.col("net_sales")),
        stmt_progress_op=ratio(pl.col("operating_profit"), forecast),
        stmt_progress_sales=ratio(pl.col("net_sales"), pl.col("forecast_net_sales")),
        # The previous statement of the same fiscal year: the code's previous kept row with that year end.
        stmt_forecast_rev_op=pl.when(pl.col("fiscal_year_end").is_not_null()).then(
            rel_change(forecast, forecast.shift(1).over("code", "fiscal_year_end"))
        ),
        stmt_roe=pl.when(equity > 0).then(ratio(annualized, equity)),  # no ROE on zero or negative equity
    )


def fundamental_features(panel: pl.DataFrame, statements: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """The fundamentals of every (date, code) row of ``panel`` (sorted by date), in its row order.

    Columns: ``FEATURES`` (Float64, null without a statement in effect) and ``FLAG`` (1.0 when a statement
    is in effect and has at least one value, else 0.0). ``stmt_days_since`` is ln(1 + the trading days
    since the statement took effect): 0 on its first day, and the log keeps a year-old statement from
    dominating the date's scale.
    """
    kept = statement_features(statements, calendar)
    # Calendar positions: the statements' once (a few per code), the panel's dates once.
    kept = kept.with_columns(business_day_index(kept["effective_date"], calendar).alias("_since"))
    joined = as_of(panel.select("date", "code"), kept)
    days = business_day_index(joined["date"], calendar) - joined["_since"]
    return joined.with_columns(days.alias("_days")).select(
        *VALUES,
        stmt_days_since=pl.col("_days").cast(pl.Float64).log1p(),
        **{FLAG: in_effect(VALUES)},
    )
