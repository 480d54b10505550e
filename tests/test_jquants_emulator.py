"""Fast checks of the local J-Quants V2 emulator and its fixtures (no network beyond 127.0.0.1)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import jquantsapi
import pytest
import requests
from jquants_emulator import (
    CUTOFF_CASES,
    DELISTED,
    FIXTURES,
    MALFORMED_QUOTE,
    NEW_LISTING,
    SPLIT,
    JQuantsEmulator,
    load_fixture,
)
from jquantsapi import constants
from requests.exceptions import HTTPError

KEY = {"x-api-key": "test-key"}


def _client(emu: JQuantsEmulator) -> jquantsapi.ClientV2:
    client = jquantsapi.ClientV2(api_key="test-key")
    client.JQUANTS_API_BASE = emu.base_url
    return client


def _get(emu: JQuantsEmulator, path: str, headers: dict | None = KEY, **params: str) -> requests.Response:
    return requests.get(emu.base_url + path, params=params, headers=headers, timeout=5)


def test_pagination_through_the_client():
    with JQuantsEmulator(page_size=50) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:") and emu.base_url.endswith("/v2")
        df = _client(emu).get_eq_bars_daily(code="7203", from_yyyymmdd="20230901", to_yyyymmdd="2024-12-30")
        assert len(df) == 327 and df["Code"].eq("72030").all()
        assert df["Date"].is_monotonic_increasing and df["Date"].is_unique
        pages = math.ceil(327 / 50)
        assert emu.count("/equities/bars/daily", code="7203") == pages
        assert sum("pagination_key" in h.params for h in emu.requests) == pages - 1
        assert all(h.status == 200 for h in emu.requests)

        body = _get(emu, "/equities/bars/daily", code="72030").json()
        assert len(body["data"]) == 50 and body["pagination_key"]
        again = _get(emu, "/equities/bars/daily", code="72030", pagination_key=body["pagination_key"]).json()
        assert again["data"][0]["Date"] > body["data"][-1]["Date"]
        bad = _get(emu, "/equities/bars/daily", code="72030", pagination_key="nope")
        assert bad.status_code == 400 and bad.json()["message"]
        other = _get(emu, "/equities/bars/daily", code="67580", pagination_key=body["pagination_key"])
        assert other.status_code == 400

        topix = _get(emu, "/indices/bars/daily/topix", **{"from": "2024-01-01", "to": "20240131"}).json()
        assert "pagination_key" not in topix and len(topix["data"]) == 19


def test_master_is_as_of_the_date():
    with JQuantsEmulator() as emu:
        client = _client(emu)
        before = client.get_eq_master(date="2024-02-29")
        assert list(before.columns) == constants.EQ_MASTER_COLUMNS_V2
        assert NEW_LISTING[0] not in set(before["Code"]) and DELISTED[0] in set(before["Code"])
        assert len(before) == 7 and before["S17"].nunique() >= 3
        assert NEW_LISTING[0] in set(client.get_eq_master(date=NEW_LISTING[1].replace("-", ""))["Code"])
        assert DELISTED[0] in set(client.get_eq_master(date=DELISTED[1])["Code"])
        after = client.get_eq_master(date="2024-07-01")
        assert DELISTED[0] not in set(after["Code"]) and len(after) == 7
        one = _get(emu, "/equities/master", date="2024-07-01", code="7203").json()["data"]
        assert [r["Code"] for r in one] == ["72030"] and one[0]["MktNm"] == "プライム"
        assert one[0]["Date"] == "2024-07-01"


def test_scripted_failures_and_retry_after():
    with JQuantsEmulator() as emu:
        emu.fail("/equities/bars/daily", 429, times=2, retry_after="1")
        emu.fail("/markets/calendar", 500, when={"from": "2024-01-01"})
        for _ in range(2):
            r = _get(emu, "/equities/bars/daily", date="2024-01-04")
            assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["message"]
        ok = _get(emu, "/equities/bars/daily", date="2024-01-04")
        assert ok.status_code == 200 and len(ok.json()["data"]) == 7  # 55970 lists on 2024-03-01
        assert _get(emu, "/markets/calendar", **{"from": "2023-12-01"}).status_code == 200
        assert _get(emu, "/markets/calendar", **{"from": "2024-01-01"}).status_code == 500
        assert _get(emu, "/markets/calendar", **{"from": "2024-01-01"}).status_code == 200
        assert [h.status for h in emu.requests] == [429, 429, 200, 200, 500, 200]
        assert emu.count("/markets/calendar", from_="2024-01-01") == 2
        assert emu.requests[0].params == {"date": "2024-01-04"}

        emu.hang_after(1)
        assert _get(emu, "/indices/bars/daily/topix").status_code == 200
        hung = _get(emu, "/indices/bars/daily/topix")
        assert hung.status_code == 503 and hung.headers["Retry-After"] == "0"
        emu.hang_after(None)
        assert _get(emu, "/indices/bars/daily/topix").status_code == 200


def test_auth_denial_and_bad_requests():
    with JQuantsEmulator(api_key="k1") as emu:
        assert _get(emu, "/markets/calendar", headers=None).status_code == 401
        assert _get(emu, "/markets/calendar", headers={"x-api-key": "wrong"}).status_code == 401
        ok = {"x-api-key": "k1"}
        assert _get(emu, "/markets/calendar", headers=ok).status_code == 200
        assert _get(emu, "/no/such/endpoint", headers=ok).status_code == 404
        assert _get(emu, "/equities/bars/daily", headers=ok).status_code == 400
        assert _get(emu, "/fins/summary", headers=ok).status_code == 400
        assert _get(emu, "/markets/margin-interest", headers=ok).status_code == 400
        assert _get(emu, "/equities/bars/daily", headers=ok, date="2024-13-01").status_code == 400
        emu.deny("/fins/summary")
        denied = _get(emu, "/fins/summary", headers=ok, code="7203")
        assert denied.status_code == 403 and "plan" in denied.json()["message"]
        emu.revoke_key()
        revoked = _get(emu, "/markets/calendar", headers=ok)
        assert (
            revoked.status_code == 401
            and revoked.json()["message"] == "The incoming token is invalid or expired."
        )
        client = jquantsapi.ClientV2(api_key="k1")
        client.JQUANTS_API_BASE = emu.base_url
        with pytest.raises(HTTPError, match="401"):
            client.get_mkt_calendar(from_yyyymmdd="20240101", to_yyyymmdd="20240110")


def test_endpoints_serve_documented_fields():
    with JQuantsEmulator() as emu:
        client = _client(emu)
        fins, _cursor = client.get_fin_summary_cursor(code="7203")
        assert list(fins.columns) == constants.FIN_SUMMARY_COLUMNS_V2 and len(fins) >= 5
        it = client.get_eq_investor_types(
            section="TSEPrime", from_yyyymmdd="20240101", to_yyyymmdd="20240331"
        )
        assert (
            list(it.columns) == constants.EQ_INVESTOR_TYPES_COLUMNS_V2 and it["Section"].eq("TSEPrime").all()
        )
        margin = client.get_mkt_margin_interest(date_yyyymmdd="20240628")
        assert list(margin.columns) == constants.MKT_MARGIN_INTEREST_COLUMNS_V2
        assert len(margin) == 8 and margin["PubDate"].isna().all()  # 19850 on its last listed day
        bars = _get(emu, "/equities/bars/daily", date="2024-05-15").json()["data"]
        assert len(bars[0]) == 16 and list(bars[0]) == constants.EQ_BARS_DAILY_COLUMNS_V2[:16]
        cal = _get(emu, "/markets/calendar", hol_div="1", **{"from": "2024-01-01", "to": "2024-01-31"}).json()
        assert [r["Date"] for r in cal["data"]][:2] == ["2024-01-04", "2024-01-05"]


def test_fixture_facts():
    quotes = load_fixture("daily_quotes")
    bad = [r for r in quotes if not isinstance(r["AdjC"], float)]
    assert [(r["Date"], r["Code"]) for r in bad] == [MALFORMED_QUOTE]
    for r in quotes:
        assert r["H"] >= max(r["O"], r["C"]) and r["L"] <= min(r["O"], r["C"]) and r["Vo"] > 0
    assert max(r["Date"] for r in quotes if r["Code"] == DELISTED[0]) == DELISTED[1]
    assert min(r["Date"] for r in quotes if r["Code"] == NEW_LISTING[0]) == NEW_LISTING[1]
    split = [r for r in quotes if r["Code"] == SPLIT[0]]
    i = next(k for k, r in enumerate(split) if r["Date"] == SPLIT[1])
    assert split[i]["AdjFactor"] == SPLIT[2] and sum(r["AdjFactor"] != 1.0 for r in quotes) == 1
    assert abs(split[i]["AdjO"] / split[i - 1]["AdjC"] - 1) < 0.1 < abs(split[i]["O"] / split[i - 1]["C"] - 1)

    calendar = {r["Date"]: r["HolDiv"] for r in load_fixture("calendar")}
    business = sorted(d for d, v in calendar.items() if v in ("1", "2"))
    assert business[0] == "2023-09-01" and business[-1] == "2024-12-30" and len(business) == 327
    fins = {(r["Code"], r["DiscDate"]): r for r in load_fixture("fins_summary")}
    for case in CUTOFF_CASES:
        assert fins[case["code"], case["DiscDate"]]["DiscTime"] == case["DiscTime"]
        d = date.fromisoformat(case["DiscDate"])
        close = "15:00:00" if d < date(2024, 11, 5) else "15:30:00"
        eff = d if calendar[d.isoformat()] == "1" and case["DiscTime"] < close else d + timedelta(days=1)
        while calendar[eff.isoformat()] != "1":
            eff += timedelta(days=1)
        assert eff.isoformat() == case["effective"]
    assert sum("EarnForecastRevision" in r["DocType"] for r in fins.values()) >= 2
    size = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert size < 600_000
