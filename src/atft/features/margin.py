"""Margin trading balances per stock (J-Quants ``margin_interest``): how much is bought and sold on credit.

JPX publishes each stock's outstanding margin buying (long) and selling (short) as of each week's last
trading day. A row takes effect on the business day after its publication (``point_in_time``; before
2026-09-25 the source records no publication date and the JPX schedule is assumed), and at date t a stock
reads its latest row in effect. The week-on-week changes compare a row with the code's previous week: the
row of the latest date at least ``PREVIOUS_WEEK_DAYS`` days earlier, in its first published version, which
was public before the row it is compared with. Definitions: ``docs/features.md``.
"""

from __future__ import annotations

import polars as pl

from atft.features.fundamentals import ratio
from atft.features.point_in_time import as_of, in_effect, margin_effective_date

GROUP = "margin"
FLAG = "margin_valid"
FEATURES = ("margin_long_short_ratio", "margin_long_chg_1w", "margin_short_chg_1w", "margin_ratio_chg_1w")
# Weekly rows are 6 to 8 days apart (a Friday holiday moves a week's row to Thursday); from 2026-09-25 the
# rows are daily, and this still finds the row of about a week before.
PREVIOUS_WEEK_DAYS = 6


def margin_rows(margin: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """One row per (code, effective_date): the row in effect from that day and its features.

    Several rows effective on the same day for a code: the one of the latest ``date`` (then the last
    published) is kept. Columns: code, effective_date, ``FEATURES``; sorted by code, effective_date.
    """
    m = (
        margin.with_columns(effective_date=margin_effective_date(margin, calendar))
        .filter(pl.all_horizontal(pl.col("effective_date", "code", "date").is_not_null()))
        .with_columns(margin_long_short_ratio=ratio(pl.col("long_volume"), pl.col("short_volume")))
        .sort("code", "date", "effective_date", maintain_order=True)
    )
    # The previous week of each row: its first published version (known before any later row).
    first = m.unique(["code", "date"], keep="first", maintain_order=True).select(
        "code",
        "date",
        pl.col("long_volume").alias("_prev_long"),
        pl.col("short_volume").alias("_prev_short"),
        pl.col("margin_long_short_ratio").alias("_prev_ratio"),
    )
    # Both sides are sorted by date within each code (_week_before follows date), all join_asof needs.
    m = m.with_columns(_week_before=pl.col("date") - pl.duration(days=PREVIOUS_WEEK_DAYS)).join_asof(
        first, left_on="_week_before", right_on="date", by="code", suffix="_prev", check_sortedness=False
    )
    return (
        m.sort("code", "effective_date", "date", "published_date", nulls_last=False, maintain_order=True)
        .unique(["code", "effective_date"], keep="last", maintain_order=True)
        .select(
            "code",
            "effective_date",
            "margin_long_short_ratio",
            margin_long_chg_1w=ratio(pl.col("long_volume"), pl.col("_prev_long")) - 1,
            margin_short_chg_1w=ratio(pl.col("short_volume"), pl.col("_prev_short")) - 1,
            margin_ratio_chg_1w=ratio(pl.col("margin_long_short_ratio"), pl.col("_prev_ratio")) - 1,
        )
    )


def margin_features(panel: pl.DataFrame, margin: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """The margin features of every (date, code) row of ``panel`` (sorted by date), in its row order:
    ``FEATURES`` (null without a row in effect) and ``FLAG`` (1.0 when a row is in effect with at least
    one value, else 0.0)."""
    joined = as_of(panel.select("date", "code"), margin_rows(margin, calendar))
    return joined.select(*FEATURES, **{FLAG: in_effect(FEATURES)})
