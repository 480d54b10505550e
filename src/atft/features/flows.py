"""Investor flows: who bought and sold the main board last week (J-Quants ``trades_spec``).

JPX publishes trading by investor type once a week per market section. The main board is ``TSEPrime``
from the week of 2022-04-04 on (the TSE's market restructuring) and ``TSE1st`` before. Each release gives
one value per date, the same for every stock: like the market features, these are not normalized per date
(a per-date z-score would be 0). A release takes effect on the business day after its publication
(``point_in_time``); at date t the latest release in effect is read, and the z-scores compare it with the
releases before it that were in effect by then.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from atft.features.fundamentals import ratio
from atft.features.point_in_time import as_of, in_effect, published_effective_date

GROUP = "flows"
FLAG = "flow_valid"
MAIN_SECTION = "TSEPrime"
OLD_MAIN_SECTION = "TSE1st"
SECTION_CHANGE = dt.date(2022, 4, 4)
# The z-scores look at the last 52 releases (a year of weeks) and need 13 values (a quarter) among them.
Z_WINDOW = 52
Z_MIN_RELEASES = 13
RATIOS = {"flow_foreign_net_ratio": "foreign", "flow_individual_net_ratio": "individual"}
FEATURES = (*RATIOS, *[n.replace("_ratio", "_z52") for n in RATIOS])


def main_board() -> pl.Expr:
    """True on the main board's rows: TSE1st for weeks before 2022-04-04, TSEPrime from then on (the week
    by its start date, else its end date or publication)."""
    week = pl.coalesce("start_date", "end_date", "published_date")
    return (
        pl.when(week < SECTION_CHANGE)
        .then(pl.col("section") == OLD_MAIN_SECTION)
        .otherwise(pl.col("section") == MAIN_SECTION)
    )


def flow_releases(trades_spec: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """One row per effective date: the main board's release in effect from that day and its features.

    Several releases effective on the same day: the last published, then the latest week, is kept.
    Columns: effective_date, ``FEATURES``; sorted by effective_date.
    """
    releases = trades_spec.filter(main_board().fill_null(False))
    releases = (
        releases.with_columns(effective_date=published_effective_date(releases["published_date"], calendar))
        .drop_nulls("effective_date")
        .sort("effective_date", "published_date", "end_date", nulls_last=False, maintain_order=True)
        .unique("effective_date", keep="last", maintain_order=True)
        .select(
            "effective_date",
            *[ratio(pl.col(f"{g}_balance"), pl.col(f"{g}_total")).alias(n) for n, g in RATIOS.items()],
        )
    )
    return releases.with_columns(
        ratio(
            pl.col(n) - pl.col(n).rolling_mean(Z_WINDOW, min_samples=Z_MIN_RELEASES),
            pl.col(n).rolling_std(Z_WINDOW, min_samples=Z_MIN_RELEASES),
        ).alias(n.replace("_ratio", "_z52"))
        for n in RATIOS
    )


def flow_features(dates: pl.Series, trades_spec: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    """The flows in effect at each of ``dates`` (sorted unique): date, ``FEATURES``, ``FLAG`` (1.0 when a
    release is in effect with at least one ratio, else 0.0)."""
    joined = as_of(dates.alias("date").to_frame(), flow_releases(trades_spec, calendar), by=None)
    return joined.select(
        "date",
        *FEATURES,
        **{FLAG: in_effect(RATIOS)},
    )
