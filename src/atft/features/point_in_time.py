"""When a published row may first be used: its *effective date*, on a calendar of business days.

Every J-Quants table keeps the time its rows were published. A feature at date t (computed at the close
of t) may read a row only if the row was public before that close; the first such trading day is the
row's effective date, and the feature modules join rows as of it (``join_asof`` on the effective date,
strategy backward, by code). The rules (``docs/point_in_time.md``):

- **statements** take effect on the disclosure day when disclosed strictly before the close and that day
  is a business day, else on the next business day. The close is 15:00 before 2024-11-05 and 15:30 from
  2024-11-05 on (the TSE extended its afternoon session). A null or unparseable ``disclosed_time`` counts
  as after the close: the row is used one day late rather than one day early.
- **trades_spec** and **margin_interest** take effect on the business day after ``published_date``.
  Margin rows without a ``published_date`` (the source records none before 2026-09-25) are taken as
  published on the 2nd business day after their ``date``, after the close (when JPX releases the weekly
  margin balances), so they take effect on the 3rd business day after ``date``.
- a row whose effective date would fall after the calendar's last day gets null: it is never used.
  Dates before the calendar's first day count from that first day (a later effective date, never an
  earlier one).

Everything here is vectorized: ``np.searchsorted`` over the sorted calendar, no loop over rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from atft.data.store import RawStore, open_days

# The TSE's afternoon session ends at 15:30 from this day on (15:00 before).
CLOSE_CHANGE = dt.date(2024, 11, 5)
CLOSE_BEFORE = dt.time(15, 0)
CLOSE_FROM = dt.time(15, 30)
# Margin balances as of a date are released after the close of the 2nd business day after it.
MARGIN_PUBLICATION_LAG = 2
TIME_FORMATS = ("%H:%M:%S", "%H:%M")


@dataclass(frozen=True)
class JQuantsSources:
    """The optional J-Quants tables a feature build reads, and the business-day calendar they are dated on.

    A table is None when the store does not have it; its feature group is then left out.
    """

    calendar: pl.Series  # sorted unique business days (Date)
    statements: pl.DataFrame | None = None
    trades_spec: pl.DataFrame | None = None
    margin_interest: pl.DataFrame | None = None

    @classmethod
    def from_tables(
        cls,
        price_dates: pl.Series,
        *,
        trading_calendar: pl.DataFrame | None = None,
        statements: pl.DataFrame | None = None,
        trades_spec: pl.DataFrame | None = None,
        margin_interest: pl.DataFrame | None = None,
    ) -> JQuantsSources | None:
        """The sources of these tables, or None when there is none of statements, trades_spec, margin."""
        if statements is None and trades_spec is None and margin_interest is None:
            return None
        return cls(
            calendar=business_days(trading_calendar, price_dates),
            statements=statements,
            trades_spec=trades_spec,
            margin_interest=margin_interest,
        )


def jquants_sources(store: RawStore) -> JQuantsSources | None:
    """The J-Quants tables of ``store`` with its business-day calendar, or None when it has none of them."""
    return JQuantsSources.from_tables(
        store.prices["date"],
        trading_calendar=store.trading_calendar,
        statements=store.statements,
        trades_spec=store.trades_spec,
        margin_interest=store.margin_interest,
    )


def business_days(trading_calendar: pl.DataFrame | None, price_dates: pl.Series) -> pl.Series:
    """The sorted unique business days (Date series named ``date``).

    From ``trading_calendar`` (``store.open_days``: holiday_division "1" or "2") when given; price dates outside the range the
    calendar covers are added, so a calendar that starts later than the prices does not leave the early
    years without business days. Without a calendar, the price dates themselves.
    """
    prices = price_dates.cast(pl.Date).drop_nulls().unique().sort()
    if trading_calendar is None or trading_calendar.height == 0:
        return prices.alias("date")
    covered = trading_calendar["date"].cast(pl.Date).drop_nulls()
    outside = prices.filter((prices < covered.min()) | (prices > covered.max()))
    return pl.concat([open_days(trading_calendar), outside]).unique().sort().alias("date")


def _days(dates: pl.Series) -> np.ndarray:
    """Dates as int64 days since the epoch; null as the smallest int64 (callers mask it)."""
    return dates.cast(pl.Date).cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy()


def _pick(calendar: pl.Series, positions: np.ndarray, valid: np.ndarray, name: str) -> pl.Series:
    """calendar[positions] where ``valid`` and the position is inside the calendar, else null."""
    cal = _days(calendar)
    inside = valid & (positions >= 0) & (positions < len(cal))
    values = (
        cal[np.clip(positions, 0, max(len(cal) - 1, 0))] if len(cal) else np.zeros(len(positions), np.int64)
    )
    return pl.Series(name, values, dtype=pl.Int64).scatter(np.flatnonzero(~inside), None).cast(pl.Date)


def business_day_after(dates: pl.Series, calendar: pl.Series, n: int = 1) -> pl.Series:
    """The n-th business day strictly after each date (n >= 1); null past the calendar's end or for null."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    positions = np.searchsorted(_days(calendar), _days(dates), side="right") + (n - 1)
    return _pick(calendar, positions, dates.is_not_null().to_numpy(), dates.name)


def is_business_day(dates: pl.Series, calendar: pl.Series) -> pl.Series:
    """Whether each date is a business day of ``calendar`` (false for null)."""
    return dates.cast(pl.Date).is_in(calendar.cast(pl.Date).implode()).fill_null(False)


def business_day_index(dates: pl.Series, calendar: pl.Series) -> pl.Series:
    """Position of each date on the calendar: the number of business days on or before it, minus 1.

    The difference of two positions counts the trading days between the dates.
    """
    after = calendar.cast(pl.Date).search_sorted(dates.cast(pl.Date), side="right").cast(pl.Int64)
    return (after - 1).scatter(np.flatnonzero(dates.is_null().to_numpy()), None).alias(dates.name)


def market_close(date: pl.Expr) -> pl.Expr:
    """The TSE's closing time on ``date``: 15:00 before 2024-11-05, 15:30 from then on."""
    return pl.when(date < CLOSE_CHANGE).then(pl.lit(CLOSE_BEFORE)).otherwise(pl.lit(CLOSE_FROM))


def parse_time(text: pl.Expr) -> pl.Expr:
    """ "HH:MM:SS" (or "HH:MM") as a time; null when null or unparseable."""
    return pl.coalesce([text.str.strip_chars().str.to_time(f, strict=False) for f in TIME_FORMATS])


def statement_effective_date(statements: pl.DataFrame, calendar: pl.Series) -> pl.Series:
    """The effective date of each statement (same row order), named ``effective_date``.

    The disclosure day itself when the statement was disclosed strictly before that day's close and the
    day is a business day; otherwise the next business day. A null or unparseable time counts as after
    the close.
    """
    disclosed = statements["disclosed_date"].cast(pl.Date)
    before_close = statements.select(
        (parse_time(pl.col("disclosed_time")) < market_close(pl.col("disclosed_date").cast(pl.Date)))
        .fill_null(False)
        .alias("before_close")
    ).to_series()
    same_day = before_close & is_business_day(disclosed, calendar)
    return disclosed.zip_with(same_day, business_day_after(disclosed, calendar, 1)).alias("effective_date")


def published_effective_date(published: pl.Series, calendar: pl.Series) -> pl.Series:
    """Rows published on a date (during or after its session) take effect on the next business day."""
    return business_day_after(published, calendar, 1).alias("effective_date")


def margin_effective_date(margin: pl.DataFrame, calendar: pl.Series) -> pl.Series:
    """The effective date of each margin row: the business day after ``published_date``, or, where that is
    null, the 3rd business day after ``date`` (published after the close of the 2nd)."""
    published = published_effective_date(margin["published_date"], calendar)
    assumed = business_day_after(margin["date"], calendar, MARGIN_PUBLICATION_LAG + 1)
    return published.zip_with(margin["published_date"].is_not_null(), assumed).alias("effective_date")


def as_of(
    panel: pl.DataFrame, rows: pl.DataFrame, *, by: str | None = "code", on: str = "effective_date"
) -> pl.DataFrame:
    """``panel`` (sorted by date) with the columns of ``rows`` in effect at each date: the last row (per
    ``by``) whose ``on`` date is on or before the panel's date; null where none is.

    ``rows`` must hold at most one row per (``by``, ``on``) and is sorted here. The ``on`` column comes
    along (the effective date of the row used).
    """
    right = rows.drop_nulls(on).sort(on, maintain_order=True).with_columns(pl.col(on).set_sorted())
    left = panel.with_columns(pl.col("date").set_sorted())
    return left.join_asof(
        right,
        left_on="date",
        right_on=on,
        by=by,
        strategy="backward",
        check_sortedness=False,  # both sides are sorted by their date here; with ``by`` polars cannot check
    )


def in_effect(columns: list[str] | tuple[str, ...]) -> pl.Expr:
    """The validity flag of a joined group: 1.0 where a row is in effect with at least one of ``columns``,
    else 0.0."""
    return pl.any_horizontal(pl.col(list(columns)).is_not_null()).cast(pl.Float64)
