"""The J-Quants feature groups (fundamentals, flows, margin): effective dates, definitions, point in time.

- The effective-date rules of ``docs/point_in_time.md`` at their edges: the close at 15:00 before
  2024-11-05 and 15:30 from then on, weekends, a holiday, null and unparseable times, the next-business-day
  rule of trades_spec and margin (and the assumed publication of margin rows without a date).
- Every feature against a slow per-row reference written from ``docs/features.md`` with plain Python
  dates and loops, independently of ``atft.features``.
- Point in time: features up to T are identical when prices, index and the J-Quants tables are cut at T
  (each table by publication), as ``tests/test_features_pit.py`` does for the price features.
- A store without the tables gives exactly the features it gave before.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.store import (
    MARGIN_INTEREST_SCHEMA,
    STATEMENTS_SCHEMA,
    TRADES_SPEC_SCHEMA,
    RawStore,
    conform,
    write_store,
)
from atft.data.synthetic import SynthParams, synthesize, write_synthetic
from atft.features import flows, fundamentals, margin
from atft.features.build import build_dataset, compute_features, sector_of
from atft.features.point_in_time import (
    JQuantsSources,
    business_day_after,
    business_days,
    jquants_sources,
    margin_effective_date,
    published_effective_date,
    statement_effective_date,
)

D = dt.date
# 2024-11-04 (Mon) was a holiday (substitute for Culture Day); 2024-10-14 too (Sports Day).
HOLIDAYS = {D(2024, 10, 14), D(2024, 11, 4), D(2023, 1, 9), D(2022, 3, 21), D(2023, 3, 21)}


def weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    return [
        start + dt.timedelta(i)
        for i in range((end - start).days + 1)
        if (start + dt.timedelta(i)).weekday() < 5
    ]


def trading_calendar(start: dt.date, end: dt.date, holidays=HOLIDAYS) -> pl.DataFrame:
    """Every calendar day: "1" on weekdays, "0" on weekends and holidays, "2" (half day) on 30 Dec."""
    days = [start + dt.timedelta(i) for i in range((end - start).days + 1)]

    def division(d: dt.date) -> str:
        if d.weekday() >= 5 or d in holidays:
            return "0"
        return "2" if (d.month, d.day) == (12, 30) else "1"

    return pl.DataFrame({"date": days, "holiday_division": [division(d) for d in days]})


CAL_START, CAL_END = D(2021, 1, 1), D(2025, 12, 31)
TC = trading_calendar(CAL_START, CAL_END)
CALENDAR = business_days(TC, pl.Series([], dtype=pl.Date))
BDAYS = [d for d in weekdays(CAL_START, CAL_END) if d not in HOLIDAYS]


# --------------------------------------------------------------------------------------------------
# Reference rules (plain Python)
# --------------------------------------------------------------------------------------------------


def ref_next_bday(d: dt.date | None, bdays: list[dt.date], n: int = 1) -> dt.date | None:
    """The n-th business day strictly after d."""
    if d is None:
        return None
    later = [b for b in bdays if b > d]
    return later[n - 1] if len(later) >= n else None


def ref_time(text: str | None) -> dt.time | None:
    if text is None:
        return None
    for f in ("%H:%M:%S", "%H:%M"):
        try:
            return dt.datetime.strptime(text.strip(), f).time()
        except ValueError:
            pass
    return None


def ref_statement_effective(d: dt.date, text: str | None, bdays: list[dt.date]) -> dt.date | None:
    close = dt.time(15, 0) if d < D(2024, 11, 5) else dt.time(15, 30)
    t = ref_time(text)
    if t is not None and t < close and d in set(bdays):
        return d
    return ref_next_bday(d, bdays)


def ref_margin_effective(published: dt.date | None, date: dt.date, bdays: list[dt.date]) -> dt.date | None:
    return ref_next_bday(published, bdays) if published is not None else ref_next_bday(date, bdays, 3)


def div(a, b):
    if a is None or b is None or b == 0:
        return None
    q = a / b
    return q if math.isfinite(q) else None


def rel(x, prev):
    return None if prev is None else div(None if x is None else x - prev, abs(prev))


def minus_year(d: dt.date) -> dt.date:
    return d.replace(year=d.year - 1)


# --------------------------------------------------------------------------------------------------
# Effective dates at the edges
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disclosed", "time", "effective"),
    [
        # Before 2024-11-05 the close is 15:00.
        (D(2024, 10, 30), "14:59:00", D(2024, 10, 30)),
        (D(2024, 10, 30), "14:59:59", D(2024, 10, 30)),
        (D(2024, 10, 30), "15:00:00", D(2024, 10, 31)),
        (D(2024, 10, 30), "15:10:00", D(2024, 10, 31)),
        # From 2024-11-05 it is 15:30. Friday 11-01 after the close: Monday 11-04 is a holiday.
        (D(2024, 11, 1), "15:00:00", D(2024, 11, 5)),
        (D(2024, 11, 5), "15:00:00", D(2024, 11, 5)),
        (D(2024, 11, 5), "15:29:00", D(2024, 11, 5)),
        (D(2024, 11, 5), "15:29:59", D(2024, 11, 5)),
        (D(2024, 11, 5), "15:30:00", D(2024, 11, 6)),
        (D(2024, 11, 5), "16:00:00", D(2024, 11, 6)),
        (D(2024, 11, 8), "15:30", D(2024, 11, 11)),  # HH:MM; Friday after the close: Monday
        (D(2024, 11, 6), "09:00", D(2024, 11, 6)),
        # Not a business day: the next one, whatever the time.
        (D(2024, 11, 2), "10:00:00", D(2024, 11, 5)),  # Saturday, then a holiday Monday
        (D(2024, 11, 9), "10:00:00", D(2024, 11, 11)),  # Saturday
        (D(2024, 11, 4), "08:00:00", D(2024, 11, 5)),  # the holiday itself
        # No usable time counts as after the close.
        (D(2024, 11, 6), None, D(2024, 11, 7)),
        (D(2024, 11, 6), "", D(2024, 11, 7)),
        (D(2024, 11, 6), "9am", D(2024, 11, 7)),
        (D(2024, 10, 11), None, D(2024, 10, 15)),  # Friday, then the Sports Day holiday
        # Past the calendar's end: never used.
        (CAL_END, "09:00:00", CAL_END),  # the calendar's last day, before the close
        (CAL_END, "16:00:00", None),  # after it: the calendar has no next business day
    ],
)
def test_statement_effective_date(disclosed, time, effective):
    frame = pl.DataFrame(
        {"disclosed_date": [disclosed], "disclosed_time": [time]},
        schema={"disclosed_date": pl.Date, "disclosed_time": pl.String},
    )
    assert statement_effective_date(frame, CALENDAR).to_list() == [effective]
    assert ref_statement_effective(disclosed, time, BDAYS) == effective


def test_trades_spec_and_margin_take_effect_the_business_day_after_publication():
    published = pl.Series("published_date", [D(2024, 10, 31), D(2024, 11, 1), D(2024, 11, 2), None, CAL_END])
    assert published_effective_date(published, CALENDAR).to_list() == [
        D(2024, 11, 1), D(2024, 11, 5), D(2024, 11, 5), None, None,
    ]  # fmt: skip
    rows = pl.DataFrame(
        {
            "published_date": [D(2024, 11, 1), None, None, None, None],
            # As of Friday 10-25: published Tue 10-29 after the close, in effect Wed 10-30. As of Friday
            # 11-01: the Monday holiday pushes the publication to Wed 11-06, in effect Thu 11-07.
            "date": [D(2024, 10, 30), D(2024, 10, 25), D(2024, 11, 1), D(2024, 10, 11), D(2025, 12, 29)],
        },
        schema={"published_date": pl.Date, "date": pl.Date},
    )
    expected = [D(2024, 11, 5), D(2024, 10, 30), D(2024, 11, 7), D(2024, 10, 17), None]
    assert margin_effective_date(rows, CALENDAR).to_list() == expected
    assert [ref_margin_effective(p, d, BDAYS) for p, d in rows.iter_rows()] == expected


def test_business_days_from_the_calendar_or_the_prices():
    prices = pl.Series([D(2020, 12, 30), D(2024, 11, 4), D(2024, 11, 5), D(2026, 1, 5)])
    days = business_days(TC, prices)
    # The holiday with prices is still a holiday; price dates outside the calendar's range are added.
    assert D(2024, 11, 4) not in days.to_list() and D(2024, 12, 30) in days.to_list()
    assert days[0] == D(2020, 12, 30) and days[-1] == D(2026, 1, 5) and days.is_sorted()
    assert business_days(None, prices.reverse()).to_list() == prices.to_list()
    assert business_day_after(pl.Series([D(2020, 12, 30)]), days, 1).to_list() == [D(2021, 1, 1)]  # Friday


# --------------------------------------------------------------------------------------------------
# Synthetic J-Quants tables
# --------------------------------------------------------------------------------------------------

TIMES = ["09:00:00", "11:30:00", "14:59:00", "15:00:00", "15:15:00", "15:30:00", "16:00:00", None, "n/a"]


def make_statements(codes: list[str], start: dt.date, end: dt.date, seed: int) -> pl.DataFrame:
    """Quarterly statements (fiscal years ending in March) of each code, disclosed 20-50 days after each
    quarter, on any day of the week and at any time, with awkward values mixed in: zero and missing
    denominators, negative profits and equity, forecast revisions, same-day duplicates and restatements."""
    rng = np.random.default_rng(seed)
    rows = []
    number = 1000

    def maybe(x: float) -> float | None:
        u = rng.uniform()
        return None if u < 0.06 else 0.0 if u < 0.1 else float(x)

    for code in codes:
        base = rng.uniform(1e9, 1e11)
        for fy in range(start.year - 1, end.year + 2):
            fy_start, fy_end = D(fy, 4, 1), D(fy + 1, 3, 31)
            forecast_op = base * rng.uniform(0.02, 0.15)
            for q, (period, period_end) in enumerate(
                [("1Q", D(fy, 6, 30)), ("2Q", D(fy, 9, 30)), ("3Q", D(fy, 12, 31)), ("FY", fy_end)], 1
            ):
                for version in range(1 + int(rng.uniform() < 0.15)):  # sometimes a second report
                    disclosed = period_end + dt.timedelta(int(rng.integers(20, 50)))
                    if version:
                        disclosed += dt.timedelta(
                            int(rng.choice([0, 0, 3, 120]))
                        )  # same day, or a restatement
                    if not (start - dt.timedelta(400) <= disclosed <= end + dt.timedelta(30)):
                        continue
                    forecast_op *= rng.choice([1.0, 1.0, 0.8, 1.15])
                    sales = base * q / 4 * rng.uniform(0.8, 1.25)
                    number += int(rng.integers(1, 3))
                    rows.append(
                        {
                            "code": code,
                            "disclosed_date": disclosed,
                            "disclosed_time": TIMES[int(rng.integers(len(TIMES)))],
                            "disclosure_number": str(number) if rng.uniform() > 0.05 else None,
                            "period_type": period if rng.uniform() > 0.03 else "Other",
                            "period_end": period_end,
                            "fiscal_year_start": fy_start,
                            "fiscal_year_end": fy_end if rng.uniform() > 0.02 else None,
                            "net_sales": maybe(sales),
                            "operating_profit": maybe(sales * rng.uniform(-0.05, 0.15)),
                            "profit": maybe(sales * rng.uniform(-0.05, 0.1)),
                            "equity": maybe(base * rng.uniform(-0.1, 2.0)),
                            "forecast_net_sales": maybe(base * rng.uniform(0.9, 1.1)),
                            "forecast_operating_profit": maybe(forecast_op),
                        }
                    )
            base *= rng.uniform(0.85, 1.3)
    return conform(pl.DataFrame(rows), "statements")


def make_trades_spec(start: dt.date, end: dt.date, seed: int) -> pl.DataFrame:
    """Weekly releases (Monday-Friday weeks, published the next Thursday) for several sections, with the
    main board renamed at 2022-04-04, a zero total, and a late correction of an old week."""
    rng = np.random.default_rng(seed)
    monday = start - dt.timedelta(start.weekday())
    rows = []
    while monday <= end:
        friday, published = monday + dt.timedelta(4), monday + dt.timedelta(10)
        sections = (
            ["TSE1st", "TSE2nd", "TSEPrime"] if monday < D(2022, 4, 11) else ["TSEPrime", "TSEStandard"]
        )
        for section in sections:
            row = {"published_date": published, "start_date": monday, "end_date": friday, "section": section}
            for g in ("foreign", "individual"):
                total = float(rng.uniform(1e12, 5e12)) if rng.uniform() > 0.03 else 0.0
                row[f"{g}_total"] = total
                row[f"{g}_balance"] = float(total * rng.normal(0, 0.05)) if rng.uniform() > 0.03 else None
            rows.append(row)
        if rng.uniform() < 0.05 and rows:  # a correction of the week 3 weeks back, published with this one
            old = dict(rows[-8])
            old["published_date"] = published
            old["foreign_balance"] = float(rng.normal(0, 1e11))
            rows.append(old)
        monday += dt.timedelta(7)
    return conform(pl.DataFrame(rows), "trades_spec")


def make_margin(
    codes: list[str], start: dt.date, end: dt.date, seed: int, bdays: list[dt.date]
) -> pl.DataFrame:
    """Weekly balances as of each week's last business day, published (when recorded) the 2nd business day
    after; publication dates recorded from ``start + 250 days`` only; zero volumes and a restatement."""
    rng = np.random.default_rng(seed)
    recorded_from = start + dt.timedelta(250)
    week_ends = [
        d for i, d in enumerate(bdays[:-1]) if bdays[i + 1] - d > dt.timedelta(1) and start <= d <= end
    ]
    rows = []
    for code in codes:
        long, short = rng.uniform(1e5, 1e7), rng.uniform(1e4, 1e6)
        for d in week_ends:
            if rng.uniform() < 0.05:
                continue  # a missing week
            long *= rng.uniform(0.8, 1.25)
            short *= rng.uniform(0.7, 1.4)
            published = ref_next_bday(d, bdays, 2) if d >= recorded_from else None
            for version in range(1 + int(rng.uniform() < 0.04)):
                rows.append(
                    {
                        "published_date": published + dt.timedelta(7 * version) if published else None,
                        "date": d,
                        "code": code,
                        "issue_type": "2",
                        "long_volume": float(long * (1 + 0.1 * version)) if rng.uniform() > 0.03 else 0.0,
                        "short_volume": float(short) if rng.uniform() > 0.05 else 0.0,
                    }
                )
    return conform(pl.DataFrame(rows), "margin_interest")


# --------------------------------------------------------------------------------------------------
# References of the features
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """A row of a J-Quants table as a dict of plain values, with its input position and effective date."""

    idx: int
    v: dict
    eff: dt.date | None


def records(frame: pl.DataFrame, effective) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for i, v in enumerate(frame.iter_rows(named=True)):
        out.setdefault(v.get("code"), []).append(Row(i, v, effective(v)))
    return out


def stmt_key(r: Row):
    """The order statements became known in; null time and null numbers last."""
    t = ref_time(r.v["disclosed_time"])
    n = r.v["disclosure_number"]
    num = int(n) if n is not None and n.strip().isdigit() else None
    return (
        r.eff,
        r.v["disclosed_date"],
        (0, t) if t is not None else (1, dt.time.min),
        (0, num) if num is not None else (1, 0),
        (0, n) if n is not None else (1, ""),
        r.idx,
    )


def ref_fundamentals(t: dt.date, rows: list[Row], bdays: list[dt.date]) -> dict:
    known = [r for r in rows if r.eff is not None and r.eff <= t]
    if not known:
        return {n: None for n in fundamentals.FEATURES} | {"stmt_valid": 0.0}
    cur = max(known, key=stmt_key)
    v = cur.v
    prev_year = None
    if v["period_type"] is not None and v["fiscal_year_end"] is not None:
        cands = [
            r for r in rows
            if r.eff is not None and r.eff <= cur.eff and r.v["period_type"] == v["period_type"]
            and r.v["fiscal_year_end"] == minus_year(v["fiscal_year_end"])
        ]  # fmt: skip
        prev_year = max(cands, key=stmt_key).v if cands else None
    prev_fy = None  # the statement kept on the latest earlier effective day with the same fiscal year
    if v["fiscal_year_end"] is not None:
        for day in sorted({r.eff for r in rows if r.eff is not None and r.eff < cur.eff}, reverse=True):
            kept = max((r for r in rows if r.eff == day), key=stmt_key)
            if kept.v["fiscal_year_end"] == v["fiscal_year_end"]:
                prev_fy = kept.v
                break
    factor = {"1Q": 4.0, "2Q": 2.0, "3Q": 4.0 / 3.0, "FY": 1.0}.get(v["period_type"])
    profit, equity = v["profit"], v["equity"]
    out = {
        "stmt_sales_yoy": rel(v["net_sales"], prev_year and prev_year["net_sales"]),
        "stmt_op_yoy": rel(v["operating_profit"], prev_year and prev_year["operating_profit"]),
        "stmt_op_margin": div(v["operating_profit"], v["net_sales"]),
        "stmt_np_margin": div(profit, v["net_sales"]),
        "stmt_progress_op": div(v["operating_profit"], v["forecast_operating_profit"]),
        "stmt_progress_sales": div(v["net_sales"], v["forecast_net_sales"]),
        "stmt_forecast_rev_op": rel(
            v["forecast_operating_profit"], prev_fy and prev_fy["forecast_operating_profit"]
        ),
        "stmt_roe": div(profit * factor, equity)
        if profit is not None and factor is not None and equity is not None and equity > 0
        else None,
    }
    out["stmt_valid"] = 1.0 if any(x is not None for x in out.values()) else 0.0
    out["stmt_days_since"] = math.log1p(sum(1 for b in bdays if cur.eff < b <= t))
    return out


def ref_margin(t: dt.date, rows: list[Row]) -> dict:
    known = [r for r in rows if r.eff is not None and r.eff <= t]
    if not known:
        return {n: None for n in margin.FEATURES} | {"margin_valid": 0.0}
    eff = max(r.eff for r in known)
    cur = max(
        (r for r in known if r.eff == eff),
        key=lambda r: (r.v["date"], r.v["published_date"] or dt.date.min, r.idx),
    ).v
    before = [r for r in rows if r.eff is not None and r.v["date"] <= cur["date"] - dt.timedelta(6)]
    prev = None
    if before:
        last = max(r.v["date"] for r in before)
        prev = min((r for r in before if r.v["date"] == last), key=lambda r: (r.eff, r.idx)).v

    def chg(x, p):
        q = div(x, p)
        return None if q is None else q - 1

    ratio = div(cur["long_volume"], cur["short_volume"])
    out = {
        "margin_long_short_ratio": ratio,
        "margin_long_chg_1w": chg(cur["long_volume"], prev and prev["long_volume"]),
        "margin_short_chg_1w": chg(cur["short_volume"], prev and prev["short_volume"]),
        "margin_ratio_chg_1w": chg(ratio, prev and div(prev["long_volume"], prev["short_volume"])),
    }
    out["margin_valid"] = 1.0 if any(x is not None for x in out.values()) else 0.0
    return out


def ref_flow_releases(trades: pl.DataFrame, bdays: list[dt.date]) -> list[tuple[dt.date, dict]]:
    """The main board's releases, one per effective date (the last published, then latest week), in order,
    with their ratios and z-scores."""
    by_eff: dict[dt.date, tuple] = {}
    for i, v in enumerate(trades.iter_rows(named=True)):
        week = v["start_date"] or v["end_date"] or v["published_date"]
        if v["section"] != ("TSE1st" if week < D(2022, 4, 4) else "TSEPrime"):
            continue
        eff = ref_next_bday(v["published_date"], bdays)
        if eff is None:
            continue
        key = (v["published_date"], v["end_date"], i)
        if eff not in by_eff or key > by_eff[eff][0]:
            by_eff[eff] = (key, v)
    releases = [(eff, by_eff[eff][1]) for eff in sorted(by_eff)]
    ratios = [
        {n: div(v[f"{g}_balance"], v[f"{g}_total"]) for n, g in flows.RATIOS.items()} for _, v in releases
    ]
    out = []
    for i, (eff, _) in enumerate(releases):
        feats = dict(ratios[i])
        for n in flows.RATIOS:
            window = [r[n] for r in ratios[max(0, i - 51) : i + 1] if r[n] is not None]
            x = ratios[i][n]
            z = None
            if x is not None and len(window) >= 13:
                sd = float(np.std(window, ddof=1))
                z = div(x - float(np.mean(window)), sd)
            feats[n.replace("_ratio", "_z52")] = z
        out.append((eff, feats))
    return out


def assert_same(actual: list, expected: list, what: str) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if e is None:
            assert a is None, f"{what}[{i}]: expected null, got {a}"
        else:
            assert a is not None and math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12), (
                f"{what}[{i}]: {a} != {e}"
            )


def panel_of(codes: list[str], days: list[dt.date]) -> pl.DataFrame:
    return pl.DataFrame(
        {"date": [d for d in days for _ in codes], "code": [c for _ in days for c in codes]},
        schema={"date": pl.Date, "code": pl.String},
    )


CODES = ["1301", "7203", "9984"]
PANEL_DAYS = [d for d in BDAYS if D(2024, 4, 1) <= d <= D(2025, 3, 31)]


def test_fundamentals_match_the_reference():
    statements = make_statements(CODES, D(2024, 4, 1), D(2025, 3, 31), seed=1)
    # Planted on a code of its own: two reports effective the same Monday (Saturday's and Monday morning's;
    # the later is kept), growth against the previous year's 2Q, and a restatement of that 2Q published
    # after this year's, which must not be read back into this year's growth.
    fy24, fy25 = D(2024, 3, 31), D(2025, 3, 31)
    planted = conform(
        pl.DataFrame(
            [
                {"code": "9999", "disclosed_date": D(2023, 11, 10), "disclosed_time": "12:00:00",
                 "disclosure_number": "8999", "period_type": "2Q", "fiscal_year_end": fy24,
                 "net_sales": 5e9, "operating_profit": 1e9, "profit": 5e8, "equity": 4e10},
                {"code": "9999", "disclosed_date": D(2024, 8, 3), "disclosed_time": "10:00:00",
                 "disclosure_number": "9000", "period_type": "1Q", "fiscal_year_end": fy25,
                 "net_sales": 1e10, "operating_profit": 2e9, "profit": 1e9, "equity": 5e10,
                 "forecast_operating_profit": 8e9, "forecast_net_sales": 4e10},
                {"code": "9999", "disclosed_date": D(2024, 8, 5), "disclosed_time": "09:00:00",
                 "disclosure_number": "9001", "period_type": "1Q", "fiscal_year_end": fy25,
                 "net_sales": 1.1e10, "operating_profit": 2.2e9, "profit": 1e9, "equity": 5e10,
                 "forecast_operating_profit": 9e9, "forecast_net_sales": 4e10},
                {"code": "9999", "disclosed_date": D(2024, 11, 8), "disclosed_time": "14:00:00",
                 "disclosure_number": "9002", "period_type": "2Q", "fiscal_year_end": fy25,
                 "net_sales": 6e9, "operating_profit": 1.5e9, "profit": 1e9, "equity": 5e10,
                 "forecast_operating_profit": 7.2e9},
                {"code": "9999", "disclosed_date": D(2024, 12, 2), "disclosed_time": "12:00:00",
                 "disclosure_number": "9003", "period_type": "2Q", "fiscal_year_end": fy24,
                 "net_sales": 1.0, "operating_profit": 1.0, "profit": 1.0, "equity": 1.0},
            ]
        ),
        "statements",
    )  # fmt: skip
    statements = pl.concat([statements, planted])
    panel = panel_of([*CODES, "9999", "1111"], PANEL_DAYS)  # 1111: no statement at all
    got = fundamentals.fundamental_features(panel, statements, CALENDAR)
    assert got.columns == [*fundamentals.FEATURES, fundamentals.FLAG]
    rows = records(
        statements, lambda v: ref_statement_effective(v["disclosed_date"], v["disclosed_time"], BDAYS)
    )
    expected = [ref_fundamentals(t, rows.get(c, []), BDAYS) for t, c in panel.iter_rows()]
    for name in got.columns:
        assert_same(got[name].to_list(), [e[name] for e in expected], name)
    # The awkward cases occur: nulls, values and both flag states.
    for name in fundamentals.VALUES:
        assert 0 < got[name].null_count() < got.height, name
    assert set(got[fundamentals.FLAG].unique()) == {0.0, 1.0}
    planted_rows = pl.concat([panel, got], how="horizontal").filter(pl.col("code") == "9999")

    def on(day: dt.date) -> dict:
        return planted_rows.filter(pl.col("date") == day).row(0, named=True)

    assert on(D(2024, 8, 2))["stmt_op_margin"] == pytest.approx(0.2)  # the 2023 report is still in effect
    assert on(D(2024, 8, 2))["stmt_sales_yoy"] is None and on(D(2024, 8, 2))["stmt_valid"] == 1.0
    assert on(D(2024, 8, 5))["stmt_progress_op"] == pytest.approx(2.2e9 / 9e9)  # Monday's report kept
    assert on(D(2024, 8, 5))["stmt_days_since"] == 0.0
    assert on(D(2024, 8, 7))["stmt_days_since"] == pytest.approx(math.log(3))
    assert on(D(2024, 11, 8))["stmt_sales_yoy"] == pytest.approx(0.2)  # disclosed 14:00, before the close
    assert on(D(2024, 11, 8))["stmt_forecast_rev_op"] == pytest.approx(-0.2)  # 9e9 -> 7.2e9
    assert on(D(2024, 11, 29))["stmt_op_yoy"] == pytest.approx(0.5)
    assert on(D(2024, 12, 2))["stmt_sales_yoy"] is None  # the restatement itself is now the latest


def test_margin_matches_the_reference():
    table = make_margin(CODES, D(2024, 1, 1), D(2025, 3, 31), seed=2, bdays=BDAYS)
    panel = panel_of(CODES, PANEL_DAYS)
    got = margin.margin_features(panel, table, CALENDAR)
    assert got.columns == [*margin.FEATURES, margin.FLAG]
    rows = records(table, lambda v: ref_margin_effective(v["published_date"], v["date"], BDAYS))
    expected = [ref_margin(t, rows.get(c, [])) for t, c in panel.iter_rows()]
    for name in got.columns:
        assert_same(got[name].to_list(), [e[name] for e in expected], name)
    for name in margin.FEATURES:
        assert 0 < got[name].null_count() < got.height, name
    assert table["published_date"].null_count() > 0 and table["published_date"].null_count() < table.height


def test_flows_match_the_reference():
    trades = make_trades_spec(D(2021, 3, 1), D(2023, 6, 30), seed=3)
    days = [d for d in BDAYS if D(2021, 3, 1) <= d <= D(2023, 9, 30)]
    got = flows.flow_features(pl.Series(days), trades, CALENDAR)
    assert got.columns == ["date", *flows.FEATURES, flows.FLAG]
    releases = ref_flow_releases(trades, BDAYS)
    expected = []
    for t in days:
        current = [f for eff, f in releases if eff <= t]
        feats = current[-1] if current else {n: None for n in flows.FEATURES}
        valid = any(feats[n] is not None for n in flows.RATIOS)
        expected.append(feats | {"flow_valid": 1.0 if valid else 0.0})
    for name in [*flows.FEATURES, flows.FLAG]:
        assert_same(got[name].to_list(), [e[name] for e in expected], name)
    # Both sections were read (the ratios of TSE1st before the change, TSEPrime after) and z-scores exist.
    assert got.filter(pl.col("date") < D(2022, 4, 4))["flow_foreign_net_ratio"].null_count() < 300
    assert got.filter(pl.col("date") > D(2022, 5, 1))["flow_foreign_net_z52"].drop_nulls().len() > 100


# --------------------------------------------------------------------------------------------------
# Through compute_features, and point in time
# --------------------------------------------------------------------------------------------------

PIT_START = D(2024, 5, 6)


@pytest.fixture(scope="module")
def market():
    """A synthetic market across 2024-11-05 (no trading on two holidays), its trading calendar (known a
    year ahead, as J-Quants publishes it) and J-Quants tables."""
    m = synthesize(SynthParams(n_stocks=40, n_days=240, seed=4, start=PIT_START, late_listing_frac=0.2))
    holidays = [D(2024, 7, 15), D(2024, 11, 4)]
    prices = (
        m.prices.filter(~pl.col("date").is_in(holidays))
        .sort("code", "date")
        .join(sector_of(m.listed_info, "sector17")[0], on="code", how="left", maintain_order="left")
        .drop("turnover")
    )
    index = m.index.filter(~pl.col("date").is_in(holidays))
    end = prices["date"].max()
    calendar = trading_calendar(PIT_START - dt.timedelta(500), end + dt.timedelta(365), set(holidays))
    bdays = business_days(calendar, prices["date"]).to_list()
    codes = prices["code"].unique().sort().to_list()
    tables = {
        # A few codes without statements and a few without margin rows: their flags are 0.
        "statements": make_statements(codes[3:], PIT_START, end, seed=5),
        "trades_spec": make_trades_spec(PIT_START - dt.timedelta(450), end, seed=6),
        "margin_interest": make_margin(codes[:-3], PIT_START - dt.timedelta(30), end, seed=7, bdays=bdays),
        "trading_calendar": calendar,
    }
    return prices, index, tables, bdays, m


def _truncated(
    tables: dict[str, pl.DataFrame], cut: dt.date, bdays: list[dt.date]
) -> dict[str, pl.DataFrame]:
    """The tables as they stood at the close of ``cut``: statements disclosed before it (a null time counts
    as after it), trades_spec and margin rows published before ``cut`` (they are released after the close; a
    margin row without a publication date: the 2nd business day after its date). A feature that used a row
    on its publication day would differ here."""
    s = tables["statements"]
    close = dt.time(15, 0) if cut < D(2024, 11, 5) else dt.time(15, 30)
    before_close = pl.Series([(t := ref_time(x)) is not None and t < close for x in s["disclosed_time"]])
    m = tables["margin_interest"]
    assumed = pl.Series([ref_next_bday(d, bdays, 2) for d in m["date"]], dtype=pl.Date)
    return {
        "statements": s.filter(
            (pl.col("disclosed_date") < cut) | ((pl.col("disclosed_date") == cut) & before_close)
        ),
        "trades_spec": tables["trades_spec"].filter(pl.col("published_date") < cut),
        "margin_interest": m.filter(pl.coalesce(pl.col("published_date"), assumed) < cut),
        "trading_calendar": tables["trading_calendar"],
    }


def _sources(prices: pl.DataFrame, tables: dict, calendar: bool) -> JQuantsSources:
    return JQuantsSources.from_tables(
        prices["date"],
        trading_calendar=tables["trading_calendar"] if calendar else None,
        statements=tables["statements"],
        trades_spec=tables["trades_spec"],
        margin_interest=tables["margin_interest"],
    )


@pytest.mark.parametrize(
    ("cut", "calendar"),
    # Days on which rows are published: Wed 2024-11-06 (margin as of Fri 11-01, after the Monday holiday),
    # Thu 2024-11-14 (trades_spec), Tue 2025-02-18 (margin with a publication date), Tue 2024-10-29.
    [(D(2024, 11, 6), True), (D(2024, 11, 14), True), (D(2025, 2, 18), True), (D(2024, 10, 29), False)],
)
def test_jquants_features_are_point_in_time(market, cut, calendar):
    prices, index, tables, bdays, _ = market
    full, groups = compute_features(prices, index, sources=_sources(prices, tables, calendar))
    short_prices = prices.filter(pl.col("date") <= cut)
    short = _truncated(tables, cut, bdays)
    truncated, _ = compute_features(
        short_prices, index.filter(pl.col("date") <= cut), sources=_sources(short_prices, short, calendar)
    )
    past = full.filter(pl.col("date") <= cut)
    assert past.select("date", "code").equals(truncated.select("date", "code"))
    changed = [c for c in past.columns if not past[c].equals(truncated[c])]
    assert not changed, f"features that read data published after {cut}: {changed}"
    # Not vacuous: the tables were cut, rows published on the cut day itself were left out (a feature that
    # used them that day would differ), and every new feature has values (and some missing) before the cut.
    assert all(short[t].height < tables[t].height for t in ("statements", "trades_spec", "margin_interest"))
    on_cut = _truncated(tables, cut + dt.timedelta(1), bdays)
    assert any(on_cut[t].height > short[t].height for t in ("trades_spec", "margin_interest")), (
        "no release on the cut"
    )
    for flag in (fundamentals.FLAG, flows.FLAG, margin.FLAG):
        assert past[flag].sum() > 0.3 * past.height, flag
    assert past[fundamentals.FLAG].min() == 0.0 and past[margin.FLAG].min() == 0.0
    for group in ("fundamentals", "flows", "margin"):
        for name in groups[group]:
            assert name.endswith("_valid") or past[name].n_unique() > 2, name


def test_compute_features_adds_the_groups_normalized_with_zero_for_missing(market):
    prices, index, tables, _, _ = market
    sources = _sources(prices, tables, True)
    raw, groups = compute_features(prices, index, normalization=None, sources=sources)
    norm, same = compute_features(prices, index, sources=sources)
    plain, plain_groups = compute_features(prices, index)
    assert same == groups
    assert list(groups)[: len(plain_groups)] == list(plain_groups)
    assert list(groups)[len(plain_groups) :] == ["fundamentals", "flows", "margin"]
    assert groups["fundamentals"] == [*fundamentals.FEATURES, "stmt_valid"]
    assert groups["flows"] == [*flows.FEATURES, "flow_valid"]
    assert groups["margin"] == [*margin.FEATURES, "margin_valid"]
    new = [n for g in ("fundamentals", "flows", "margin") for n in groups[g]]
    # The price features are untouched by the new groups.
    assert norm.drop(new).equals(plain)
    # Raw: the modules' values (Float32), with nulls where nothing is in effect.
    panel = raw.select("date", "code")
    direct = fundamentals.fundamental_features(panel, tables["statements"], sources.calendar)
    assert raw["stmt_op_margin"].equals(direct["stmt_op_margin"].cast(pl.Float32))
    assert raw["stmt_days_since"].null_count() > 0
    # Normalized: no nulls left; flags and flows raw; per-stock values centred per date.
    assert norm.select(pl.col(new).null_count().sum()).sum_horizontal().item() == 0
    for name in ("stmt_valid", "flow_valid", "margin_valid", *flows.FEATURES):
        assert norm[name].equals(raw[name].fill_null(0.0)), name
    missing = raw["stmt_roe"].is_null()
    assert (norm.filter(missing)["stmt_roe"] == 0.0).all()
    medians = norm.filter(~missing).group_by("date").agg(pl.col("stmt_roe").median())["stmt_roe"]
    assert medians.abs().max() < 0.5
    assert norm["margin_long_short_ratio"].abs().max() <= 5.0  # clipped like the other stock features


def test_a_store_without_the_tables_gives_no_new_features(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic(synthesize(SynthParams(n_stocks=10, n_days=150, seed=8)), raw)
    store = RawStore.read(raw)
    assert jquants_sources(store) is None
    assert JQuantsSources.from_tables(store.prices["date"], trading_calendar=TC) is None  # a calendar alone


def _store_with_jquants(market, out: Path) -> Path:
    prices, index, tables, _, m = market
    base = {
        "prices": m.prices.filter(pl.col("date").is_in(prices["date"].unique().implode())),
        "index": index,
        "listed_info": m.listed_info,
    }
    return write_store(out, {**base, **tables}, {"kind": "imported"})


def test_build_dataset_reads_the_tables_and_lists_the_groups(market, tmp_path):
    raw = _store_with_jquants(market, tmp_path / "raw")
    store = RawStore.read(raw)
    assert store.statements is not None and store.trading_calendar is not None
    cfg = load_config(overrides=["data.horizons=[1,5]"]).cfg
    manifest = build_dataset(raw, tmp_path / "dataset", cfg)
    assert manifest["guard"]["passed"]
    for group in ("fundamentals", "flows", "margin"):
        assert group in manifest["features"]
        assert set(manifest["features"][group]) <= set(manifest["model_features"])
    assert manifest["normalization"]["groups"][-2:] == ["fundamentals", "margin"]
    features = pl.read_parquet(tmp_path / "dataset" / "features.parquet")
    assert (
        features.select(pl.col(manifest["features"]["fundamentals"]).null_count().sum())
        .sum_horizontal()
        .item()
        == 0
    )
    # No row is excluded for a missing statement or margin row: the flags carry that.
    assert not any(
        k.startswith(("stmt_", "margin_", "flow_"))
        for k in manifest["excluded_rows"]["null_feature_by_feature"]
    )


def test_schemas_of_the_generated_tables_are_canonical(market):
    _, _, tables, _, _ = market
    assert tables["statements"].schema == pl.Schema(STATEMENTS_SCHEMA)
    assert tables["trades_spec"].schema == pl.Schema(TRADES_SPEC_SCHEMA)
    assert tables["margin_interest"].schema == pl.Schema(MARGIN_INTEREST_SCHEMA)
