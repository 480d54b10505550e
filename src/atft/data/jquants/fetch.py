"""``atft data fetch-jquants``: fetch the Japanese market from J-Quants into the cache, then write the raw
store every later stage reads (the same store ``atft data import`` writes, plus the J-Quants tables).

The fetch, in the order the data flows:

1. the trading calendar (one request a year): it decides which days the per-day endpoints are asked for;
2. each endpoint's missing periods (a month, or a year for the small weekly or yearly series), a period's
   requests run ``workers`` at a time under the client's rate limit; a finished period is cached at once;
3. the cached text turned into canonical columns (``columns``); malformed records counted and kept aside;
4. prices, TOPIX and the latest listing row of each code go through the importer, with its checks and
   repairs; the J-Quants tables are written beside them, and the manifest records what was fetched.

What each endpoint asks for (``ENDPOINTS``), in dates of the window ``--from``..``--to``:

| endpoint | request | period |
|---|---|---|
| calendar | ``/markets/calendar`` from..to | year |
| listed | ``/equities/master`` as of the first business day and each month's last one | month |
| daily_quotes | ``/equities/bars/daily`` for each business day | month |
| topix | ``/indices/bars/daily/topix`` from..to | year |
| statements | ``/fins/summary`` for each calendar day (a few disclosures fall on holidays) | month |
| trades_spec | ``/equities/investor-types`` from..to (publication dates) | year |
| margin_interest | ``/markets/margin-interest`` for each week's last business day (every business day from 2026-09-25, when the data became daily) | month |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from atft.data.importer import import_market
from atft.data.jquants.cache import FetchCache
from atft.data.jquants.client import OFFICIAL_BASE_URL, JQuantsClient, JQuantsError
from atft.data.jquants.columns import MAPS, canonical
from atft.data.store import check_target, conform, open_days

# Weekly margin balances became daily with the applications of 2026-09-25.
MARGIN_DAILY_FROM = dt.date(2026, 9, 25)
OPTIONAL = ("statements", "trades_spec", "margin_interest")  # what --skip may leave out
TOKYO = ZoneInfo("Asia/Tokyo")
# A period is reused only once fetched on a later day (Tokyo) than its end plus these days: today's bars and
# disclosures arrive in the evening, and a week's margin balances two business days after it.
SETTLE_DAYS = {"margin_interest": 7}

Progress = Callable[..., None]


@dataclass
class Period:
    """One cache file's worth of requests: ``calls`` are (V2 path, query parameters) pairs."""

    endpoint: str
    name: str
    start: dt.date
    end: dt.date
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _iso(d: dt.date) -> str:
    return d.isoformat()


def _spans(start: dt.date, end: dt.date, unit: str) -> list[tuple[str, dt.date, dt.date]]:
    """The months (``unit="month"``) or years of ``start``..``end``, each clamped to it: (name, first, last)."""
    spans, first = [], start
    while first <= end:
        if unit == "year":
            last, name = dt.date(first.year, 12, 31), f"{first.year}"
        else:
            nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
            last, name = nxt - dt.timedelta(days=1), f"{first.year}-{first.month:02d}"
        spans.append((name, first, min(last, end)))
        first = last + dt.timedelta(days=1)
    return spans


def _ranged(endpoint: str, path: str, start: dt.date, end: dt.date) -> list[Period]:
    """One ``from``..``to`` request per year."""
    return [
        Period(endpoint, name, a, b, [(path, {"from": _iso(a), "to": _iso(b)})])
        for name, a, b in _spans(start, end, "year")
    ]


def _per_day(endpoint: str, path: str, days: list[dt.date], start: dt.date, end: dt.date) -> list[Period]:
    """One request per day of ``days`` (``date=``), grouped by month."""
    periods = []
    for name, a, b in _spans(start, end, "month"):
        calls = [(path, {"date": _iso(d)}) for d in days if a <= d <= b]
        periods.append(Period(endpoint, name, a, b, calls))
    return periods


def _last_of_each(days: list[dt.date], every: str) -> list[dt.date]:
    """The last of ``days`` in each week (``"1w"``) or month (``"1mo"``)."""
    frame = pl.Series("d", days, dtype=pl.Date).to_frame()
    return frame.group_by(period=pl.col("d").dt.truncate(every)).agg(pl.col("d").max())["d"].to_list()


def plan(endpoint: str, start: dt.date, end: dt.date, business_days: list[dt.date]) -> list[Period]:
    """The periods and requests of ``endpoint`` over ``start``..``end`` (see the module's table)."""
    if endpoint == "calendar":
        return _ranged("calendar", "/markets/calendar", start, end)
    if endpoint == "topix":
        return _ranged("topix", "/indices/bars/daily/topix", start, end)
    if endpoint == "trades_spec":
        return _ranged("trades_spec", "/equities/investor-types", start, end)
    if endpoint == "daily_quotes":
        return _per_day("daily_quotes", "/equities/bars/daily", business_days, start, end)
    if endpoint == "statements":
        every_day = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        return _per_day("statements", "/fins/summary", every_day, start, end)
    if endpoint == "margin_interest":
        daily = (d for d in business_days if d >= MARGIN_DAILY_FROM)
        days = sorted({*_last_of_each(business_days, "1w"), *daily})
        return _per_day("margin_interest", "/markets/margin-interest", days, start, end)
    if endpoint == "listed":
        days = sorted({*business_days[:1], *_last_of_each(business_days, "1mo")})
        return _per_day("listed", "/equities/master", days, start, end)
    raise ValueError(f"unknown J-Quants endpoint {endpoint!r}")


ENDPOINTS = ("calendar", "listed", "daily_quotes", "topix", "statements", "trades_spec", "margin_interest")


def _as_text(records: list[dict[str, Any]]) -> pl.DataFrame:
    """API records as a frame of text columns: the cache keeps what the API sent (numbers as their JSON
    text), and parsing happens later (``columns.canonical``), so a change of parsing needs no refetch."""
    if not records:
        return pl.DataFrame()
    names = list(dict.fromkeys(name for record in records for name in record))
    return pl.from_dicts(records, schema=dict.fromkeys(names, pl.String()), strict=False)


def _fetch_period(
    client: JQuantsClient, pool: ThreadPoolExecutor, period: Period
) -> tuple[pl.DataFrame, list[str]]:
    """The period's records, and the days whose per-day request came back empty."""
    expected = list(MAPS[period.endpoint][0])

    def call(request: tuple[str, dict[str, str]]) -> pl.DataFrame:
        path, params = request
        frame = _as_text(client.records(path, params))
        missing = [c for c in expected if c not in frame.columns]
        if frame.height and missing:
            raise JQuantsError(
                f"J-Quants answer for {path} {params} lacks the documented column(s) {', '.join(missing)}"
            )
        return frame

    frames = list(pool.map(call, period.calls))
    empty = [
        params["date"]
        for (_, params), f in zip(period.calls, frames, strict=True)
        if "date" in params and not f.height
    ]
    frames = [f for f in frames if f.height]
    return (pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()), empty


def _settled(entry: dict[str, Any], period: Period) -> bool:
    """Whether a cached period can gain no more rows: complete when fetched (every business day answered)
    and fetched (Tokyo time) on a later day than its end plus the endpoint's publication delay."""
    fetched = dt.datetime.fromisoformat(entry["fetched_at"]).astimezone(TOKYO).date()
    return bool(entry.get("complete")) and fetched > period.end + dt.timedelta(
        days=SETTLE_DAYS.get(period.endpoint, 0)
    )


def _fetch_endpoint(
    client: JQuantsClient,
    pool: ThreadPoolExecutor,
    cache: FetchCache,
    periods: list[Period],
    say: Progress,
) -> dict[str, Any]:
    """Fetch the periods the cache does not hold settled; returns what was fetched, reused and left open."""
    missing = []
    for p in periods:
        entry = cache.entry(p.endpoint, p.name)
        if not (cache.covers(p.endpoint, p.name, _iso(p.start), _iso(p.end)) and _settled(entry, p)):
            missing.append(p)
    empty_days: list[str] = []
    for done, period in enumerate(missing):
        say(f"fetching {period.endpoint}", done, len(missing))
        frame, empty = _fetch_period(client, pool, period)
        # Every business day has quotes and a listing: an empty answer means not yet published (or
        # a server problem), so the period stays open and the next run asks again.
        gaps = empty if period.endpoint in ("daily_quotes", "listed") else []
        empty_days += gaps
        cache.write(
            period.endpoint, period.name, frame, start=_iso(period.start), end=_iso(period.end),
            requests=len(period.calls), complete=not gaps,
        )  # fmt: skip
    still_open = [p.name for p in periods if not _settled(cache.entry(p.endpoint, p.name), p)]
    counts: dict[str, Any] = {
        "periods": len(periods),
        "fetched": len(missing),
        "reused": len(periods) - len(missing),
    }
    if still_open:
        counts["open_periods"] = still_open
    if empty_days:
        counts["business_days_without_data"] = sorted(empty_days)
    return counts


def _parsed(cache: FetchCache, endpoint: str, periods: list[Period]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every cached record of ``periods`` in canonical columns, and the malformed ones (with their file)."""
    good, bad = [], []
    for file, raw in cache.read(endpoint, [p.name for p in periods]):
        if raw.height == 0:
            continue
        parsed, rejected = canonical(raw, endpoint)
        good.append(parsed)
        bad.append(rejected.with_columns(endpoint=pl.lit(endpoint), cache_file=pl.lit(file)))
    if not good:
        return pl.DataFrame(), pl.DataFrame()
    return pl.concat(good, how="vertical_relaxed"), pl.concat(bad, how="vertical_relaxed")


def _listed_tables(listed: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The history of listing snapshots, each code's latest row (the importer's listed_info, ``as_of`` its
    snapshot date) and how many codes left the listing before the last snapshot (delisted in the window)."""
    history = conform(listed, "listed_history").unique(["date", "code"], keep="last").sort("code", "date")
    latest = listed.sort("date").unique("code", keep="last").sort("code")
    info = latest.select(
        "code", "name", "market", "sector17_code", "sector17_name", "sector33_code", "sector33_name",
        as_of=pl.col("date"),
    )  # fmt: skip
    last_snapshot = listed["date"].max()
    return history, info, int((latest["date"] < last_snapshot).sum())


def fetch_jquants(
    start: dt.date,
    end: dt.date,
    out: str | Path,
    *,
    cache_dir: str | Path,
    client: JQuantsClient,
    workers: int = 4,
    skip: tuple[str, ...] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fetch ``start``..``end`` into ``cache_dir`` (what is cached already is not fetched again), then
    write the raw store at ``out`` and return its manifest.

    ``skip`` leaves out optional endpoints (``OPTIONAL``), e.g. those the plan does not include.
    Raises :class:`JQuantsError` when the API fails (the periods fetched before stay cached) and
    ``StoreError`` when ``out`` exists without ``overwrite``.
    """
    say = progress or (lambda *_: None)
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    unknown = sorted(set(skip) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"--skip takes {', '.join(OPTIONAL)}; not {', '.join(unknown)}")
    if not 1 <= workers <= 32:
        raise ValueError(f"--workers must be 1..32, got {workers}")
    out = Path(out)
    check_target(out, overwrite=overwrite, kind="jquants")  # before minutes of fetching, not after
    cache = FetchCache(cache_dir)
    endpoints = [e for e in ENDPOINTS if e not in skip]
    counts: dict[str, dict[str, int]] = {}
    requests_before = client.requests_made
    client.restart()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jquants")
    try:
        calendar_periods = plan("calendar", start, end, [])
        counts["calendar"] = _fetch_endpoint(client, pool, cache, calendar_periods, say)
        calendar, calendar_bad = _parsed(cache, "calendar", calendar_periods)
        if calendar.height == 0:
            raise JQuantsError(f"J-Quants returned no trading calendar for {start}..{end}")
        business_days = [d for d in open_days(calendar).to_list() if start <= d <= end]
        if not business_days:
            raise JQuantsError(f"the trading calendar has no business day in {start}..{end}")
        plans = {e: plan(e, start, end, business_days) for e in endpoints if e != "calendar"}
        for endpoint, periods in plans.items():
            counts[endpoint] = _fetch_endpoint(client, pool, cache, periods, say)
    except BaseException:
        # Ctrl-C or an error: waits for a retry end now and queued requests are dropped, not sent. The
        # finished periods are cached, and the next run asks for the rest.
        client.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    say("reading the cache")
    parsed = {"calendar": (calendar, calendar_bad)}
    parsed |= {endpoint: _parsed(cache, endpoint, periods) for endpoint, periods in plans.items()}
    for endpoint, (frame, _) in parsed.items():
        counts[endpoint]["rows"] = frame.height
        counts[endpoint]["malformed_records"] = parsed[endpoint][1].height
    rejected = [bad for _, bad in parsed.values() if bad.height]
    quotes, topix, listed = parsed["daily_quotes"][0], parsed["topix"][0], parsed["listed"][0]
    if quotes.height == 0:
        raise JQuantsError(f"J-Quants returned no daily quotes for {start}..{end}")
    if topix.height == 0:
        raise JQuantsError(f"J-Quants returned no TOPIX bars for {start}..{end}")
    if listed.height == 0:
        raise JQuantsError(f"J-Quants returned no listed companies for {start}..{end}")
    history, listed_info, delisted = _listed_tables(listed)

    # The importer reads files: the canonical inputs are kept in the cache, where the manifest names them.
    files = {
        name: cache.write_input(name, frame)
        for name, frame in (("prices", quotes), ("index", topix), ("listed_info", listed_info))
    }
    extra = {
        "trading_calendar": conform(calendar, "trading_calendar").sort("date"),
        "listed_history": history,
    }
    for name in OPTIONAL:
        if name in parsed and parsed[name][0].height:
            extra[name] = conform(parsed[name][0], name)
    if rejected:
        extra["rejected_records"] = pl.concat(rejected, how="vertical_relaxed").select(
            "endpoint", "cache_file", "row", "field", "value", "reason"
        )
    used = [
        cache.entry(period.endpoint, period.name)
        for periods in [calendar_periods, *plans.values()]
        for period in periods
    ]
    fetched_at = sorted(entry["fetched_at"] for entry in used if entry is not None)
    fetched = {
        "from": _iso(start),
        "to": _iso(end),
        "base_url": client.JQUANTS_API_BASE if client.JQUANTS_API_BASE != OFFICIAL_BASE_URL else "official",
        "cache": str(Path(cache_dir).resolve()),
        "skipped_endpoints": list(skip),
        "endpoints": counts,
        "fetched_at": [fetched_at[0], fetched_at[-1]],  # the oldest and newest cached period used
        "requests_made": client.requests_made - requests_before,
        "retries": dict(client.retries),
        "malformed_records": sum(c["malformed_records"] for c in counts.values()),
        "open_periods": sum(len(c.get("open_periods", [])) for c in counts.values()),
        "delisted_codes": delisted,
        "listed_codes": listed_info.height,
    }
    say("importing into the raw store")
    return import_market(
        files["prices"],
        out,
        index=files["index"],
        listed_info=files["listed_info"],
        overwrite=overwrite,
        progress=say,
        kind="jquants",
        extra_tables=extra,
        extra_manifest={"jquants": fetched},
    )
