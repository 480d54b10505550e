"""A local emulator of the J-Quants API V2, for tests.

What it emulates
----------------
An HTTP server on 127.0.0.1 (a free port; it never binds another interface and never reaches the
internet) that answers the V2 endpoints a data fetcher uses, under ``/v2``, in the documented response
format (``{"data": [...]}`` plus a top-level ``pagination_key`` while more pages remain), from the
fixture files in ``tests/fixtures/jquants`` (written by ``make_fixtures.py`` there):

* ``GET /equities/master``          ``date`` (optional: the last fixture business day), optional ``code``:
  every code listed on that date (``ListingDate <= date <= DelistingDate``, both inclusive)
* ``GET /markets/calendar``         optional ``from``, ``to``, ``hol_div``
* ``GET /equities/bars/daily``      ``date`` or ``code`` (+ optional ``from``/``to``); neither -> 400
* ``GET /indices/bars/daily/topix`` optional ``from``, ``to``
* ``GET /fins/summary``             ``date`` (disclosure date) or ``code``; neither -> 400
* ``GET /equities/investor-types``  optional ``from``, ``to`` (on PubDate), ``section``
* ``GET /markets/margin-interest``  ``date`` (application date) or ``code`` (+ ``from``/``to``) or
  ``published_date``; none -> 400; ``published_date`` with date/from/to -> 400

Dates in query parameters may be ``YYYY-MM-DD`` or ``YYYYMMDD``; codes may be 4 or 5 digits.
Authentication: header ``x-api-key`` must equal ``api_key`` (else 401). Errors answer a JSON
``{"message": ...}``: unknown path 404, bad/missing parameters or an unknown ``pagination_key`` 400.
Scripting for tests: :meth:`JQuantsEmulator.fail` (429/500/... with optional ``Retry-After``),
:meth:`~JQuantsEmulator.revoke_key` (401), :meth:`~JQuantsEmulator.deny` (403),
:meth:`~JQuantsEmulator.hang_after` (503 forever after n successes); every request is logged in
:attr:`JQuantsEmulator.requests`.

What it does not emulate
------------------------
Rate limiting by itself (scripted only), the other V2 endpoints (minute bars, AM bars, fins/details,
dividends, bulk downloads, ...), the ``cursor`` of ``/fins/summary`` (accepted and ignored), the
morning/afternoon session fields (M*/A*) of daily bars, subscription-plan date windows, TLS, and the
exact wording of the real error messages. Pagination keys are opaque but stateful (kept per server).
Requests are served one at a time (a lock), so scripted failures are deterministic.

Fixture files hold each endpoint's records exactly as the API returns them, compact JSON; the large ones
are gzipped (``daily_quotes``, ``investor_types``, ``margin_interest``: ``<name>.json.gz``); read any of them
with :func:`load_fixture`. ``listings.json`` is the code list the master snapshots are derived from.

Fixture facts tests may rely on are the module constants below (``MALFORMED_QUOTE``, ``CUTOFF_CASES``,
``DELISTED``, ``NEW_LISTING``, ``SPLIT``, ``CODES``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES: Path = Path(__file__).resolve().parent / "fixtures" / "jquants"

#: Fixture window (business days) and the codes in it.
WINDOW = ("2023-09-01", "2024-12-30")
CODES = ("13010", "19850", "45020", "55970", "67580", "72030", "83060", "99840")
#: (code, last day listed and quoted, inclusive): quotes and master rows stop after this day.
DELISTED = ("19850", "2024-06-28")
#: (code, first day listed and quoted): absent from master and quotes before this day.
NEW_LISTING = ("55970", "2024-03-01")
#: (code, ex-date, AdjFactor on the ex-date): a 1:2 split; raw prices halve on the ex-date,
#: Adj* before it are raw * 0.5 (AdjVo raw * 2) so AdjC is continuous.
SPLIT = ("67580", "2024-09-26", 0.5)
#: The one malformed daily quote: (Date, Code) whose AdjC is the string "abc".
MALFORMED_QUOTE = ("2024-05-15", "72030")

#: Deliberate disclosure-time cases around the TSE close change of 2024-11-05 (15:00 -> 15:30).
#: ``effective``: the first trading day the disclosure can be used (disclosed strictly before the
#: close of a business day -> that day, else the next business day).
CUTOFF_CASES: list[dict] = [
    {"code": "72030", "DiscDate": "2023-11-01", "DiscTime": "14:59:00", "effective": "2023-11-01"},
    {"code": "67580", "DiscDate": "2023-11-09", "DiscTime": "15:00:00", "effective": "2023-11-10"},
    {"code": "83060", "DiscDate": "2023-11-02", "DiscTime": "15:10:00", "effective": "2023-11-06"},
    {"code": "13010", "DiscDate": "2024-02-10", "DiscTime": "12:00:00", "effective": "2024-02-13"},
    {"code": "99840", "DiscDate": "2024-11-01", "DiscTime": "15:10:00", "effective": "2024-11-05"},
    {"code": "45020", "DiscDate": "2024-11-04", "DiscTime": "11:00:00", "effective": "2024-11-05"},
    {"code": "72030", "DiscDate": "2024-11-05", "DiscTime": "15:29:00", "effective": "2024-11-05"},
    {"code": "67580", "DiscDate": "2024-11-06", "DiscTime": "15:00:00", "effective": "2024-11-06"},
    {"code": "83060", "DiscDate": "2024-11-08", "DiscTime": "15:30:00", "effective": "2024-11-11"},
    {"code": "13010", "DiscDate": "2024-11-12", "DiscTime": "15:10:00", "effective": "2024-11-12"},
    {"code": "55970", "DiscDate": "2024-11-13", "DiscTime": "16:00:00", "effective": "2024-11-14"},
]

MASTER_FIELDS = (
    "Date",
    "Code",
    "CoName",
    "CoNameEn",
    "S17",
    "S17Nm",
    "S33",
    "S33Nm",
    "ScaleCat",
    "Mkt",
    "MktNm",
    "Mrgn",
    "MrgnNm",
    "ProdCat",
)

INVALID_KEY = "The incoming token is invalid or expired."
NOT_COVERED = "Your subscription plan does not cover this endpoint."


@dataclass
class Hit:
    path: str  # e.g. "/equities/bars/daily" (without the /v2 prefix)
    params: dict[str, str]  # query parameters (pagination_key included), first value of each
    status: int


@dataclass
class _Failure:
    path: str
    status: int
    times: int
    retry_after: str | None
    when: dict[str, str]


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def load_fixture(name: str, fixtures: Path = FIXTURES) -> Any:
    """The parsed fixture ``name`` (``name.json`` or ``name.json.gz``), cached; do not mutate it."""
    return _load(str(Path(fixtures).resolve()), name)


@lru_cache(maxsize=64)
def _load(folder: str, name: str) -> Any:
    plain = Path(folder) / f"{name}.json"
    if plain.exists():
        return json.loads(plain.read_text(encoding="utf-8"))
    return json.loads(gzip.decompress((Path(folder) / f"{name}.json.gz").read_bytes()).decode("utf-8"))


def _iso(value: str, name: str) -> str:
    text = value.strip()
    try:
        if len(text) == 8 and text.isdigit():
            return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
        return date.fromisoformat(text).isoformat() if len(text) == 10 else _bad(name, value)
    except ValueError:
        return _bad(name, value)


def _bad(name: str, value: str) -> str:
    raise ApiError(400, f"Invalid value for parameter '{name}': {value!r}.")


def _code(value: str) -> str:
    text = value.strip()
    if len(text) == 4:
        return text + "0"
    if len(text) != 5:
        _bad("code", value)
    return text


def _in_range(rows: list[dict], key: str, lo: str | None, hi: str | None) -> list[dict]:
    return [r for r in rows if (lo is None or r[key] >= lo) and (hi is None or r[key] <= hi)]


class _Data:
    """Fixture tables and indexes, built once per fixture folder."""

    def __init__(self, fixtures: Path):
        self.listings: list[dict] = load_fixture("listings", fixtures)
        self.calendar: list[dict] = load_fixture("calendar", fixtures)
        self.quotes: list[dict] = load_fixture("daily_quotes", fixtures)
        self.topix: list[dict] = load_fixture("topix", fixtures)
        self.fins: list[dict] = load_fixture("fins_summary", fixtures)
        self.investor_types: list[dict] = load_fixture("investor_types", fixtures)
        self.margin: list[dict] = load_fixture("margin_interest", fixtures)
        self.quotes_by_date: dict[str, list[dict]] = {}
        self.quotes_by_code: dict[str, list[dict]] = {}
        for row in self.quotes:
            self.quotes_by_date.setdefault(row["Date"], []).append(row)
            self.quotes_by_code.setdefault(row["Code"], []).append(row)
        self.last_business_day = max(r["Date"] for r in self.calendar if r["HolDiv"] in ("1", "2"))


@lru_cache(maxsize=8)
def _data(folder: str) -> _Data:
    return _Data(Path(folder))


class JQuantsEmulator:
    """Context manager: a J-Quants API V2 look-alike on 127.0.0.1 serving the fixtures."""

    def __init__(self, fixtures: Path = FIXTURES, *, api_key: str = "test-key", page_size: int = 200):
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.fixtures = Path(fixtures)
        self.api_key = api_key
        self.page_size = page_size
        self.requests: list[Hit] = []
        self.base_url = ""
        self._data = _data(str(self.fixtures.resolve()))
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._canned: list[list] = []  # [path, when, times left, body] of answer()
        self._denied: set[str] = set()
        self._revoked = False
        self._hang_left: int | None = None
        self._pages: dict[str, tuple[str, tuple, int]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = {
            "/equities/master": self._master,
            "/markets/calendar": self._calendar,
            "/equities/bars/daily": self._bars_daily,
            "/indices/bars/daily/topix": self._topix,
            "/fins/summary": self._fins_summary,
            "/equities/investor-types": self._investor_types,
            "/markets/margin-interest": self._margin_interest,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> JQuantsEmulator:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v2"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="jquants-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> JQuantsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting
    def count(self, path: str, **params: Any) -> int:
        """Hits on ``path`` whose params include the given ones (``from_=`` is accepted for ``from``)."""
        want = {k.rstrip("_"): str(v) for k, v in params.items()}
        with self._lock:
            hits = list(self.requests)
        return sum(1 for h in hits if h.path == path and all(h.params.get(k) == v for k, v in want.items()))

    def fail(
        self,
        path: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        when: dict | None = None,
    ) -> None:
        """The next ``times`` requests to ``path`` (whose params include ``when``) answer ``status``."""
        with self._lock:
            self._failures.append(
                _Failure(path, status, times, retry_after, {k: str(v) for k, v in (when or {}).items()})
            )

    def answer(self, path: str, body: dict, *, times: int = 1, when: dict | None = None) -> None:
        """The next ``times`` requests to ``path`` (whose params include ``when``) answer 200 with ``body``
        as it is: an empty ``data``, a body without ``data``, a ``pagination_key`` that repeats ..."""
        with self._lock:
            self._canned.append([path, {k: str(v) for k, v in (when or {}).items()}, times, body])

    def revoke_key(self) -> None:
        with self._lock:
            self._revoked = True

    def deny(self, path: str) -> None:
        with self._lock:
            self._denied.add(path)

    def hang_after(self, n: int | None) -> None:
        """After ``n`` more successful requests every request answers 503 (Retry-After "0"); None undoes."""
        with self._lock:
            self._hang_left = n

    # ------------------------------------------------------------------ dispatch
    def _serve(self, raw_path: str, query: str, headers: Any) -> tuple[int, dict, dict[str, str]]:
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        path = raw_path[3:] if raw_path.startswith("/v2/") else raw_path
        path = path.rstrip("/") or "/"
        with self._lock:
            try:
                body = self._answer(path, params, headers)
                status, extra = 200, {}
                if self._hang_left is not None:
                    self._hang_left -= 1
            except ApiError as err:
                status, body, extra = err.status, {"message": err.message}, err.headers
            self.requests.append(Hit(path, dict(params), status))
        return status, body, extra

    def _answer(self, path: str, params: dict[str, str], headers: Any) -> dict:
        key = headers.get("x-api-key")
        if self._revoked:
            raise ApiError(401, INVALID_KEY)
        if not key:
            raise ApiError(401, "Missing API key: send it in the 'x-api-key' header.")
        if key != self.api_key:
            raise ApiError(401, INVALID_KEY)
        route = self._routes.get(path) if path != "/" else None
        if route is None:
            raise ApiError(404, f"Not found: {path}")
        if path in self._denied:
            raise ApiError(403, NOT_COVERED)
        for failure in self._failures:
            if failure.path == path and all(params.get(k) == v for k, v in failure.when.items()):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
                raise ApiError(failure.status, _reason(failure.status), extra)
        for canned in self._canned:
            canned_path, when, _, body = canned
            if canned_path == path and all(params.get(k) == v for k, v in when.items()):
                canned[2] -= 1
                if canned[2] <= 0:
                    self._canned.remove(canned)
                return body
        if self._hang_left is not None and self._hang_left <= 0:
            raise ApiError(503, "Service Unavailable", {"Retry-After": "0"})
        rows = route(params)
        return self._paginate(path, params, rows)

    def _paginate(self, path: str, params: dict[str, str], rows: list[dict]) -> dict:
        base = tuple(sorted((k, v) for k, v in params.items() if k != "pagination_key"))
        offset = 0
        if "pagination_key" in params:
            entry = self._pages.get(params["pagination_key"])
            if entry is None or entry[0] != path or entry[1] != base:
                raise ApiError(400, "Invalid pagination_key.")
            offset = entry[2]
        end = offset + self.page_size
        body: dict[str, Any] = {"data": rows[offset:end]}
        if end < len(rows):
            token = hashlib.sha256(repr((path, base, end)).encode()).hexdigest()[:24]
            self._pages[token] = (path, base, end)
            body["pagination_key"] = token
        return body

    # ------------------------------------------------------------------ endpoints
    def _dates(self, params: dict[str, str], *names: str) -> list[str | None]:
        return [_iso(params[n], n) if params.get(n) else None for n in names]

    def _master(self, params: dict[str, str]) -> list[dict]:
        (day,) = self._dates(params, "date")
        day = day or self._data.last_business_day
        code = _code(params["code"]) if params.get("code") else None
        rows = []
        for listing in self._data.listings:
            if listing["ListingDate"] > day or (listing["DelistingDate"] or "9999") < day:
                continue
            if code is not None and listing["Code"] != code:
                continue
            rows.append({f: day if f == "Date" else listing[f] for f in MASTER_FIELDS})
        return sorted(rows, key=lambda r: r["Code"])

    def _calendar(self, params: dict[str, str]) -> list[dict]:
        lo, hi = self._dates(params, "from", "to")
        rows = _in_range(self._data.calendar, "Date", lo, hi)
        if params.get("hol_div"):
            rows = [r for r in rows if r["HolDiv"] == params["hol_div"]]
        return rows

    def _bars_daily(self, params: dict[str, str]) -> list[dict]:
        day, lo, hi = self._dates(params, "date", "from", "to")
        code = _code(params["code"]) if params.get("code") else None
        if day is None and code is None:
            raise ApiError(400, "This API requires at least 1 parameter as follows; 'date','code'.")
        if day is not None:
            rows = self._data.quotes_by_date.get(day, [])
            return [r for r in rows if code is None or r["Code"] == code]
        return _in_range(self._data.quotes_by_code.get(code or "", []), "Date", lo, hi)

    def _topix(self, params: dict[str, str]) -> list[dict]:
        lo, hi = self._dates(params, "from", "to")
        return _in_range(self._data.topix, "Date", lo, hi)

    def _fins_summary(self, params: dict[str, str]) -> list[dict]:
        (day,) = self._dates(params, "date")
        code = _code(params["code"]) if params.get("code") else None
        if day is None and code is None:
            raise ApiError(400, "This API requires at least 1 parameter as follows; 'date','code'.")
        return [
            r
            for r in self._data.fins
            if (day is None or r["DiscDate"] == day) and (code is None or r["Code"] == code)
        ]

    def _investor_types(self, params: dict[str, str]) -> list[dict]:
        lo, hi = self._dates(params, "from", "to")
        rows = _in_range(self._data.investor_types, "PubDate", lo, hi)
        if params.get("section"):
            rows = [r for r in rows if r["Section"] == params["section"]]
        return rows

    def _margin_interest(self, params: dict[str, str]) -> list[dict]:
        day, lo, hi, pub = self._dates(params, "date", "from", "to", "published_date")
        code = _code(params["code"]) if params.get("code") else None
        if day is None and code is None and pub is None:
            raise ApiError(
                400, "This API requires at least 1 parameter as follows; 'date','code','published_date'."
            )
        if pub is not None and (day or lo or hi):
            raise ApiError(400, "'published_date' cannot be combined with 'date', 'from' or 'to'.")
        rows = self._data.margin
        if code is not None:
            rows = [r for r in rows if r["Code"] == code]
        if pub is not None:
            return [r for r in rows if r["PubDate"] == pub]
        if day is not None:
            return [r for r in rows if r["Date"] == day]
        return _in_range(rows, "Date", lo, hi)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    timeout = 10  # an idle keep-alive connection closes after this many seconds

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        emulator: JQuantsEmulator = self.server.emulator  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        status, body, extra = emulator._serve(parts.path, parts.query, self.headers)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass
