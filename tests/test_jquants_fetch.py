"""``atft data fetch-jquants`` against the loopback emulator of the J-Quants V2 API: the client's policy
(rate limit, retries, Retry-After, 401/403), the fetch, the cache (re-run, interruption and resume), the raw
store and the dataset built from it, and the as-of rules at the 15:00 and 15:30 cutoffs.

No test here touches the internet: ``JQuantsEmulator`` binds 127.0.0.1 only.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import shutil
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from jquants_emulator import CUTOFF_CASES, MALFORMED_QUOTE, JQuantsEmulator, load_fixture
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.data.jquants.cache import FetchCache
from atft.data.jquants.client import (
    JQuantsClient,
    JQuantsError,
    RateLimiter,
    RetryPolicy,
    api_key,
    retry_after,
)
from atft.data.jquants.fetch import fetch_jquants, plan
from atft.data.store import RawStore, StoreError
from atft.features.guard import guard_dataset
from atft.features.point_in_time import business_days, statement_effective_date

KEY = "test-key-5f2b"
START, END = dt.date(2023, 9, 1), dt.date(2024, 12, 30)
runner = CliRunner()


def _client(emulator: JQuantsEmulator, sleeps: list[float] | None = None, **kw) -> JQuantsClient:
    """A client of the emulator whose waits are recorded, not slept (the tests would otherwise wait)."""
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff=0.01))
    return JQuantsClient(KEY, base_url=emulator.base_url, requests_per_minute=100_000, sleep=record, **kw)


def _fetch(emulator, tmp: Path, name: str = "raw", cache: str = "cache", **kw) -> dict:
    kw.setdefault("client", _client(emulator))
    return fetch_jquants(START, END, tmp / name, cache_dir=tmp / cache, **kw)


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    """The store's tables, without the importer's ``source_file`` (the path of the cache it read)."""
    frames = {f.stem: pl.read_parquet(f) for f in sorted(path.glob("*.parquet"))}
    return {name: frame.drop("source_file", strict=False) for name, frame in frames.items()}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """One clean fetch of the whole fixture window (small pages, so that paging is exercised)."""
    tmp = tmp_path_factory.mktemp("jq")
    with JQuantsEmulator(api_key=KEY, page_size=3) as emulator:
        manifest = _fetch(emulator, tmp)
        hits = list(emulator.requests)
    return tmp, manifest, hits


# --------------------------------------------------------------------------------------------------
# The key and the client's policy
# --------------------------------------------------------------------------------------------------


def test_api_key_from_the_environment_then_the_env_file(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("OTHER=1\nJQUANTS_API_KEY='from-file'\n")
    monkeypatch.delenv("JQUANTS_API_KEY", raising=False)
    assert api_key(env) == "from-file"
    monkeypatch.setenv("JQUANTS_API_KEY", "from-env")
    assert api_key(env) == "from-env"
    monkeypatch.delenv("JQUANTS_API_KEY")
    with pytest.raises(
        JQuantsError, match=r"no J-Quants API key: set JQUANTS_API_KEY or add .* to .*missing"
    ):
        api_key(tmp_path / "missing")


def test_rate_limiter_spaces_requests_over_all_threads():
    now = [0.0]
    waits: list[float] = []
    limiter = RateLimiter(120, clock=lambda: now[0])  # a slot every 0.5 s
    for _ in range(4):
        limiter.wait(waits.append)
    assert waits == [0.5, 1.0, 1.5]  # the first request goes at once
    now[0] = 10.0  # idle time is not saved up into a burst beyond the next slot
    limiter.wait(waits.append)
    assert waits == [0.5, 1.0, 1.5]


def test_429_waits_retry_after_and_500_recovers(tmp_path):
    sleeps: list[float] = []
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.fail("/markets/calendar", 429, retry_after="7")
        emulator.fail("/indices/bars/daily/topix", 500, times=2)
        client = _client(emulator, sleeps)
        calendar = client.get_mkt_calendar(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")
        topix = client.get_idx_bars_daily_topix(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")
    assert len(calendar) == 31 and len(topix) > 15
    assert 7.0 in sleeps  # Retry-After, not the backoff
    assert 0.01 in sleeps and 0.02 in sleeps  # the 500s: backoff 0.01 doubling
    assert client.retries == {"429": 1, "500": 2}


def test_a_server_that_keeps_failing_is_one_line_error(tmp_path):
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.fail("/markets/calendar", 503, times=10, retry_after="0")
        with pytest.raises(JQuantsError, match=r"kept failing on /markets/calendar .*503.* after 4 tries"):
            _client(emulator).get_mkt_calendar(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")


def test_revoked_key_is_401_naming_where_the_key_comes_from_never_the_key(tmp_path):
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.revoke_key()
        with pytest.raises(JQuantsError) as caught:
            _fetch(emulator, tmp_path)
    message = str(caught.value)
    assert "401" in message and "JQUANTS_API_KEY" in message and KEY not in message
    assert "\n" not in message


def test_plan_without_an_endpoint_is_403_and_skip_leaves_it_out(tmp_path):
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.deny("/markets/margin-interest")
        with pytest.raises(
            JQuantsError, match=r"403 on /markets/margin-interest: your plan does not include"
        ):
            _fetch(emulator, tmp_path)
        manifest = _fetch(emulator, tmp_path, skip=("margin_interest",))
    assert "margin_interest" not in manifest["tables"] and "statements" in manifest["tables"]
    assert manifest["jquants"]["skipped_endpoints"] == ["margin_interest"]


# --------------------------------------------------------------------------------------------------
# The fetch and the raw store
# --------------------------------------------------------------------------------------------------


def test_fetch_writes_the_canonical_store_with_the_jquants_tables(fetched):
    tmp, manifest, hits = fetched
    store = RawStore.read(tmp / "raw")
    assert manifest["kind"] == "jquants"
    for table in ("prices", "index", "listed_info", "statements", "trades_spec", "margin_interest",
                  "trading_calendar", "listed_history", "rejected_records"):  # fmt: skip
        assert table in manifest["tables"], table
    # Paging was followed: with 3 records a page, most answers had several pages.
    assert sum("pagination_key" in h.params for h in hits) > 100
    assert manifest["jquants"]["requests_made"] == len(hits)
    # Prices are the adjusted bars, checked against the fixture file read independently.
    records = load_fixture("daily_quotes")
    records = records["data"] if isinstance(records, dict) else records
    expected = {
        (r["Date"], r["Code"][:4]): float(r["AdjC"])
        for r in records
        if (r["Date"], r["Code"]) != MALFORMED_QUOTE and r.get("AdjC") not in (None, "")
    }
    got = {(str(d), c): v for d, c, v in store.prices.select("date", "code", "close").iter_rows()}
    assert got == pytest.approx(expected)
    # The malformed record is kept out, and listed with its field and value.
    rejected = pl.read_parquet(tmp / "raw" / "rejected_records.parquet")
    row = rejected.filter(pl.col("endpoint") == "daily_quotes")
    assert row.height == 1 and row["field"][0] == "AdjC" and row["value"][0] == "abc"
    assert row["reason"][0] == "unparseable value, set to null"
    # ... and the bar, now without a close, is quarantined by the importer like any partial bar.
    quarantined = pl.read_parquet(tmp / "raw" / "rejected_rows.parquet")
    day, code = dt.date.fromisoformat(MALFORMED_QUOTE[0]), MALFORMED_QUOTE[1][:4]
    bar = quarantined.filter((pl.col("date") == day) & (pl.col("code") == code))
    assert bar["reason"].to_list() == ["partial_null_ohlc"]
    assert manifest["jquants"]["malformed_records"] >= 1
    assert manifest["jquants"]["endpoints"]["daily_quotes"]["malformed_records"] == 1


def test_delisted_and_late_listed_codes_are_in_the_listing(fetched):
    tmp, manifest, _ = fetched
    store = RawStore.read(tmp / "raw")
    listings = load_fixture("listings")
    listings = listings["data"] if isinstance(listings, dict) else listings
    codes = {str(x["Code"])[:4] for x in listings}
    assert set(store.listed_info["code"]) == codes
    assert manifest["jquants"]["delisted_codes"] == 1
    last_seen = store.listed_history.group_by("code").agg(pl.col("date").max())
    assert last_seen["date"].min() < dt.date(2024, 7, 1)  # the delisted code's last snapshot


def test_the_trading_calendar_drives_the_per_day_requests(fetched):
    tmp, _, hits = fetched
    store = RawStore.read(tmp / "raw")
    days = business_days(store.trading_calendar, store.prices["date"]).to_list()
    quote_days = {
        h.params["date"]
        for h in hits
        if h.path == "/equities/bars/daily" and "pagination_key" not in h.params
    }
    assert sorted(quote_days) == [d.isoformat() for d in days]
    assert dt.date(2024, 1, 1) not in days and dt.date(2024, 1, 4) in days


def test_rerun_fetches_nothing_and_writes_the_same_store(fetched, tmp_path):
    tmp, _, _ = fetched
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    with JQuantsEmulator(api_key=KEY) as emulator:
        manifest = _fetch(emulator, tmp_path, cache="cache")
        assert emulator.requests == []
    assert all(c["fetched"] == 0 for c in manifest["jquants"]["endpoints"].values())
    again, first = _tables(tmp_path / "raw"), _tables(tmp / "raw")
    assert again.keys() == first.keys()
    for name in first:
        assert again[name].equals(first[name]), name


def test_a_later_end_date_refetches_only_the_last_month(fetched, tmp_path):
    tmp, _, _ = fetched
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    with JQuantsEmulator(api_key=KEY) as emulator:
        fetch_jquants(START, dt.date(2024, 12, 27), tmp_path / "short", cache_dir=tmp_path / "cache",
                      client=_client(emulator))  # fmt: skip
        quote_days = {h.params.get("date") for h in emulator.requests if h.path == "/equities/bars/daily"}
    assert quote_days and all(d.startswith("2024-12") for d in quote_days)


PATHS = {
    "/markets/calendar": "calendar", "/equities/master": "listed", "/equities/bars/daily": "daily_quotes",
    "/indices/bars/daily/topix": "topix", "/fins/summary": "statements",
    "/equities/investor-types": "trades_spec", "/markets/margin-interest": "margin_interest",
}  # fmt: skip


def _period(hit) -> tuple[str, str]:
    """The cache period a request belongs to: its month (per-day requests) or year (from..to requests)."""
    day = hit.params.get("date") or hit.params["from"]
    return PATHS[hit.path], day[:7] if "date" in hit.params else day[:4]


def test_interrupted_fetch_resumes_where_it_stopped(fetched, tmp_path):
    tmp, _, clean_hits = fetched
    with JQuantsEmulator(api_key=KEY, page_size=3) as emulator:
        emulator.hang_after(len(clean_hits) // 2)
        with pytest.raises(JQuantsError, match="kept failing"):
            _fetch(emulator, tmp_path)
        cached = FetchCache(tmp_path / "cache").summary()
        assert cached and not (tmp_path / "raw").exists()
        emulator.hang_after(None)
        emulator.requests.clear()
        manifest = _fetch(emulator, tmp_path)
        resumed = [_period(h) for h in emulator.requests]
    # Exactly the requests of the periods not cached when it stopped, none of a cached one.
    not_cached = [_period(h) for h in clean_hits if _period(h)[1] not in cached.get(_period(h)[0], {})]
    assert 0 < len(resumed) < len(clean_hits)
    assert sorted(resumed) == sorted(not_cached)
    assert sum(c["reused"] for c in manifest["jquants"]["endpoints"].values()) > 0
    for name, frame in _tables(tmp / "raw").items():
        assert _tables(tmp_path / "raw")[name].equals(frame), name


def test_a_period_fetched_before_it_settled_is_fetched_again(fetched, tmp_path):
    """A month fetched on its own last day (before the evening's bars) is not reused as if complete."""
    tmp, _, _ = fetched
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    manifest_file = tmp_path / "cache" / "cache.json"
    cache = json.loads(manifest_file.read_text())
    cache["endpoints"]["daily_quotes"]["2024-11"]["fetched_at"] = "2024-11-29T03:00:00+00:00"  # 12:00 JST
    manifest_file.write_text(json.dumps(cache))
    with JQuantsEmulator(api_key=KEY) as emulator:
        manifest = _fetch(emulator, tmp_path)
        asked = {_period(h) for h in emulator.requests}
    assert asked == {("daily_quotes", "2024-11")}
    assert manifest["jquants"]["endpoints"]["daily_quotes"]["fetched"] == 1


def test_an_empty_business_day_leaves_its_month_open_and_is_reported(tmp_path):
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.answer("/equities/bars/daily", {"data": []}, when={"date": "2024-11-15"})
        manifest = _fetch(emulator, tmp_path)
        quotes = manifest["jquants"]["endpoints"]["daily_quotes"]
        assert quotes["business_days_without_data"] == ["2024-11-15"]
        assert quotes["open_periods"] == ["2024-11"] and manifest["jquants"]["open_periods"] == 1
        emulator.requests.clear()
        manifest = _fetch(emulator, tmp_path, overwrite=True)  # the next run asks for that month again
        assert {_period(h) for h in emulator.requests} == {("daily_quotes", "2024-11")}
    assert "open_periods" not in manifest["jquants"]["endpoints"]["daily_quotes"]
    prices = RawStore.read(tmp_path / "raw").prices
    assert prices.filter(pl.col("date") == dt.date(2024, 11, 15)).height == 8 - 1  # all but the delisted one


def test_a_200_without_data_is_retried_never_cached_as_empty(tmp_path):
    sleeps: list[float] = []
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.answer("/markets/calendar", {"message": "maintenance"})
        client = _client(emulator, sleeps)
        assert len(client.get_mkt_calendar(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")) == 31
        assert client.retries == {"no data": 1}
        emulator.answer("/markets/calendar", {"message": "maintenance"}, times=10)
        with pytest.raises(
            JQuantsError, match=r"kept failing on /markets/calendar .*without a data list: maintenance"
        ):
            _fetch(emulator, tmp_path, client=client)
    assert not (tmp_path / "cache" / "calendar").exists() or not any(
        (tmp_path / "cache" / "calendar").iterdir()
    )


def test_a_repeating_pagination_key_stops_the_fetch(tmp_path):
    with JQuantsEmulator(api_key=KEY) as emulator:
        page = {"data": [{"Date": "2024-01-04", "HolDiv": "1"}], "pagination_key": "again"}
        emulator.answer("/markets/calendar", page, times=50)
        with pytest.raises(JQuantsError, match="same pagination_key twice on /markets/calendar"):
            _client(emulator).get_mkt_calendar(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")
        assert emulator.count("/markets/calendar") == 2


def test_stop_ends_a_retry_wait_at_once():
    """Ctrl-C during a fetch calls ``stop``: a thread waiting out a long Retry-After returns at once."""
    with JQuantsEmulator(api_key=KEY) as emulator:
        emulator.fail("/markets/calendar", 503, times=5, retry_after="30")
        client = JQuantsClient(KEY, base_url=emulator.base_url, requests_per_minute=100_000)
        errors: list[Exception] = []

        def fetch() -> None:
            try:
                client.get_mkt_calendar(from_yyyymmdd="2024-01-01", to_yyyymmdd="2024-01-31")
            except JQuantsError as e:
                errors.append(e)

        worker = threading.Thread(target=fetch)
        started = time.monotonic()
        worker.start()
        time.sleep(0.3)
        client.stop()
        worker.join(timeout=5)
    assert not worker.is_alive() and time.monotonic() - started < 3
    assert errors and "stopped" in str(errors[0])


def test_retry_after_forms():
    assert retry_after("3") == 3.0 and retry_after(" 0 ") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("nan") is None
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120), usegmt=True)
    assert 100 < retry_after(later) <= 120
    with pytest.raises(ValueError, match="--max-retries must be 0 or more"):
        RetryPolicy(max_retries=-1)


def test_a_key_with_control_characters_is_refused_without_echoing_it(tmp_path, monkeypatch):
    monkeypatch.setenv("JQUANTS_API_KEY", "secret-part-1\nsecret-part-2")
    with pytest.raises(JQuantsError) as caught:
        api_key(None)
    assert "secret" not in str(caught.value) and "spaces or control characters" in str(caught.value)
    with pytest.raises(JQuantsError, match="refusing to send the API key over plain http to example.com"):
        JQuantsClient(KEY, base_url="http://example.com/v2")


def test_a_damaged_cache_manifest_is_one_line_error(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"cache\.json is damaged .*delete the cache folder"):
        FetchCache(tmp_path / "cache")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="is not a J-Quants cache"):
        FetchCache(tmp_path / "other")


def test_plan_asks_margin_weekly_then_daily_and_statements_every_day():
    days = [dt.date(2026, 9, 14) + dt.timedelta(days=i) for i in range(21)]
    days = [d for d in days if d.weekday() < 5]
    margin = [c for p in plan("margin_interest", days[0], days[-1], days) for c in p.calls]
    asked = [dt.date.fromisoformat(params["date"]) for _, params in margin]
    assert asked == [dt.date(2026, 9, 18), *[d for d in days if d >= dt.date(2026, 9, 25)]]
    statements = [c for p in plan("statements", days[0], days[-1], days) for c in p.calls]
    assert len(statements) == (days[-1] - days[0]).days + 1  # weekends too


# --------------------------------------------------------------------------------------------------
# Point in time, and the path on to the dataset
# --------------------------------------------------------------------------------------------------


def test_statements_take_effect_by_the_close_of_their_day(fetched):
    """The deliberate cases of the fixture: 15:00 close before 2024-11-05, 15:30 from it, holidays."""
    tmp, _, _ = fetched
    store = RawStore.read(tmp / "raw")
    calendar = business_days(store.trading_calendar, store.prices["date"])
    effective = store.statements.with_columns(
        effective_date=statement_effective_date(store.statements, calendar)
    )
    got = {
        (c, str(d), t): str(e)
        for c, d, t, e in effective.select(
            "code", "disclosed_date", "disclosed_time", "effective_date"
        ).iter_rows()
    }
    assert len(CUTOFF_CASES) >= 7
    for case in CUTOFF_CASES:
        key = (str(case["code"])[:4], case["DiscDate"], case["DiscTime"])
        assert got[key] == case["effective"], case


@pytest.mark.slow
def test_cli_fetch_then_build_train_and_predict(fetched, tmp_path, monkeypatch):
    tmp, _, _ = fetched
    shutil.copytree(tmp / "cache", tmp_path / "raw_cache")  # the default cache: <out>_cache
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    with JQuantsEmulator(api_key=KEY) as emulator:
        fetched_cli = runner.invoke(
            app,
            ["data", "fetch-jquants", "--from", str(START), "--to", str(END), "--out", str(tmp_path / "raw"),
             "--base-url", emulator.base_url],
        )  # fmt: skip
        assert emulator.requests == []
    assert fetched_cli.exit_code == 0, fetched_cli.output
    # Eight stocks in several sectors: most are alone in theirs, and year-on-year growth needs a year of
    # statements, so the guard's defaults (made for a real universe) are relaxed for this fixture.
    relaxed = ["features.guard.max_null_rate=1.0", "features.guard.max_degenerate_date_frac=0.9"]
    built = runner.invoke(
        app, ["data", "build", *relaxed, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "ds")]
    )
    assert built.exit_code == 0, built.output
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {"fundamentals", "flows", "margin"} <= set(manifest["features"])
    features = pl.read_parquet(tmp_path / "ds" / "features.parquet")
    assert features["stmt_valid"].sum() > 0
    # The guard training runs again on the folder treats the per-date flows as the build did.
    report = guard_dataset(tmp_path / "ds", load_config("cpu", relaxed).cfg)
    assert report.passed, report.problems

    # On to the daily list: a tiny model trained on the J-Quants features, then tomorrow's list, whose
    # features (statements, flows, margin included) are rebuilt from the store up to that day. Every
    # stock is alone in its sector here, so the sector group (null for them) is left out.
    tiny = [*relaxed, "features.drop_groups=[sector]", "data.split.train_days=30", "data.split.valid_days=10", "data.split.test_days=10",
            "data.min_stocks_per_day=4", "model.hidden_size=16", "model.gat.heads=2",
            "model.temporal.attention_heads=2", f"train.runs_dir={tmp_path / 'runs'}"]  # fmt: skip
    trained = runner.invoke(
        app, ["train", "--data-path", str(tmp_path / "ds"), "--max-epochs", "1", "--run-name", "jq", *tiny]
    )
    assert trained.exit_code == 0, trained.output
    listed = runner.invoke(app, ["predict", str(tmp_path / "runs" / "jq"), "--date", "latest",
                                 "--out", str(tmp_path / "daily")])  # fmt: skip
    assert listed.exit_code == 0, listed.output
    ranked = pl.read_csv(tmp_path / "daily" / "ranked_5d.csv")
    assert ranked.height >= 4 and ranked["score"].is_finite().all()


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("JQUANTS_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "fetch-jquants", "--from", "2024-01-01", "--to", "2024-01-31",
                                 "--out", str(tmp_path / "raw")])  # fmt: skip
    assert result.exit_code == 2 and "no J-Quants API key" in result.output
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    result = runner.invoke(app, ["data", "fetch-jquants", "--from", "2024-13-01", "--to", "2024-01-31",
                                 "--out", str(tmp_path / "raw")])  # fmt: skip
    assert result.exit_code == 2 and "--from must be a date YYYY-MM-DD" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "2024-02-01", "--to", "2024-01-31"], "--from 2024-02-01 is after --to 2024-01-31"),
        (
            ["--skip", "daily_quotes"],
            "--skip takes statements, trades_spec, margin_interest; not daily_quotes",
        ),
        (["--workers", "0"], "--workers must be 1..32, got 0"),
        (["--max-retries", "-1"], "--max-retries must be 0 or more, got -1"),
        (["--rate-limit", "0"], "the rate limit must be a positive number of requests a minute"),
        (["--base-url", "http://example.com/v2"], "refusing to send the API key over plain http"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_request(extra, message, tmp_path, monkeypatch):
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    args = [
        "data",
        "fetch-jquants",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--out",
        str(tmp_path / "raw"),
    ]
    with JQuantsEmulator(api_key=KEY) as emulator:
        if not any(a == "--base-url" for a in extra):
            args += ["--base-url", emulator.base_url]
        result = runner.invoke(app, [*args, *extra])
        assert emulator.requests == []
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "raw").exists()


def test_a_damaged_period_file_names_itself(fetched, tmp_path):
    tmp, _, _ = fetched
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    (tmp_path / "cache" / "topix" / "2024.parquet").write_bytes(b"not parquet")
    with JQuantsEmulator(api_key=KEY) as emulator:
        with pytest.raises(StoreError, match=r"topix/2024\.parquet is damaged .*delete it and re-run"):
            _fetch(emulator, tmp_path)


def test_an_existing_store_needs_overwrite(fetched, tmp_path, monkeypatch):
    tmp, _, _ = fetched
    monkeypatch.setenv("JQUANTS_API_KEY", KEY)
    with JQuantsEmulator(api_key=KEY) as emulator:
        result = runner.invoke(app, ["data", "fetch-jquants", "--from", str(START), "--to", str(END),
                                     "--out", str(tmp / "raw"), "--base-url", emulator.base_url])  # fmt: skip
        assert emulator.requests == []
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output, result.output
