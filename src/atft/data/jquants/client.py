"""The J-Quants API V2 client ATFT fetches with: the official ``jquants-api-client`` plus ATFT's HTTP policy.

``jquantsapi.ClientV2`` knows the V2 endpoints, their parameters and columns, and follows
``pagination_key`` across pages; every request it makes goes through its ``_get``. ``JQuantsClient``
overrides that one method, because the package does not give what a long unattended fetch needs:

- a rate limit shared by every thread, so bounded concurrency stays within the plan's requests per minute;
- retries with exponential backoff on 429 and 5xx (and dropped connections), honouring ``Retry-After``;
- one-line errors: 401 (missing, wrong or revoked key), 403 (the plan lacks the endpoint), anything else
  with the endpoint and its parameters. The key itself is never printed or logged.

The API key comes from ``JQUANTS_API_KEY`` or, failing that, a ``.env`` file (:func:`api_key`).
"""

from __future__ import annotations

import email.utils
import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from dotenv import dotenv_values
from jquantsapi import ClientV2

OFFICIAL_BASE_URL = ClientV2.JQUANTS_API_BASE  # https://api.jquants.com/v2
# The client sorts with pandas' deprecated ``inplace=True``: its own affair, not something a user can act on.
warnings.filterwarnings("ignore", message="The inplace keyword", module=r"jquantsapi\.")
KEY_VARIABLE = "JQUANTS_API_KEY"


class JQuantsError(ValueError):
    """The J-Quants API could not give what was asked: a bad key, a plan without the endpoint, a server
    that kept failing, or a response that is not what the API documents. The message is one line."""


def api_key(env_file: str | Path | None = ".env") -> str:
    """The API key: ``JQUANTS_API_KEY`` from the environment, else from ``env_file`` (a ``.env`` file).

    Raises :class:`JQuantsError` naming both places when neither has it, and, without echoing it, when
    it holds characters no HTTP header can carry (a stray newline or space would otherwise make the HTTP
    library print the whole header, key included).
    """
    key = os.environ.get(KEY_VARIABLE, "").strip()
    source = KEY_VARIABLE
    if not key and env_file is not None and Path(env_file).is_file():
        key, source = (dotenv_values(env_file).get(KEY_VARIABLE) or "").strip(), str(env_file)
    if not key:
        where = f" or add {KEY_VARIABLE}=... to {env_file}" if env_file is not None else ""
        raise JQuantsError(f"no J-Quants API key: set {KEY_VARIABLE}{where}")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise JQuantsError(
            f"the J-Quants API key in {source} has spaces or control characters; copy it again"
        )
    return key


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait when the server is busy (429) or failing (5xx, dropped connection).

    The wait before retry k (0-based) is the server's ``Retry-After`` when it sends one (up to
    ``max_retry_after`` seconds: a longer request fails the fetch, naming the wait), else
    ``backoff * 2**k`` capped at ``max_wait``.
    """

    max_retries: int = 6
    backoff: float = 1.0
    max_wait: float = 60.0
    max_retry_after: float = 600.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {self.max_retries}")

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(retry_after, 0.0)
        return min(self.backoff * 2**attempt, self.max_wait)


class RateLimiter:
    """At most ``per_minute`` requests a minute over all threads: each request takes the next free slot,
    slots ``60 / per_minute`` seconds apart. ``hold`` pushes every thread's next slot back (after a 429)."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not per_minute > 0:
            raise ValueError(
                f"the rate limit must be a positive number of requests a minute, got {per_minute}"
            )
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self, sleep: Callable[[float], object]) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            sleep(slot - now)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (a number of seconds or an HTTP date); None when absent or
    unreadable (then the backoff applies)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return seconds if math.isfinite(seconds) else None


def _message(response: requests.Response) -> str:
    """The server's own explanation (``{"message": ...}``), else the start of its body."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:200]
    except ValueError:
        pass
    text = response.text.strip()
    return text.splitlines()[0][:200] if text else response.reason or ""


# Failures worth another try: the connection or the body broke on the way. Anything else the HTTP library
# raises (an invalid header or URL) would fail again; it is reported by type only, since its message may
# quote the headers, and with them the key.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class JQuantsClient(ClientV2):
    """``ClientV2`` whose requests follow ATFT's rate limit, retry policy and error messages.

    What ATFT uses of ``ClientV2``: the key and its header (``_base_headers``) and the paging over
    ``pagination_key`` (``_get_paginated``), which calls ``_get`` for every page. ``_get`` is replaced
    here. An answer is accepted only as JSON with a ``data`` list: a 200 that carries an error message, or
    a proxy's page, is retried and then reported, never taken for an empty answer. A ``pagination_key``
    that comes back twice in one paging sequence is an error (a server bug would otherwise loop forever).

    ``base_url`` replaces the official address (a loopback emulator in the tests); plain ``http`` is
    refused except to a loopback host, since the key travels in a header. ``requests_made`` and
    ``retries`` (by status) count what the client did, for the fetch manifest. ``stop()`` makes every
    thread's waits and next request end at once (Ctrl-C); ``sleep`` replaces the waiting in tests.
    """

    def __init__(
        self,
        key: str,
        *,
        base_url: str = OFFICIAL_BASE_URL,
        requests_per_minute: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        super().__init__(api_key=key)
        address = urlsplit(base_url)
        if address.scheme not in ("https", "http") or not address.hostname:
            raise JQuantsError(f"--base-url must be an https address, got {base_url!r}")
        if address.scheme == "http" and address.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise JQuantsError(
                f"refusing to send the API key over plain http to {address.hostname}; use https"
            )
        self.JQUANTS_API_BASE = base_url.rstrip("/")
        self.retry = retry
        self.timeout = timeout
        self._stopped = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopped.wait
        self._limiter = RateLimiter(requests_per_minute)
        self._local = threading.local()  # per thread: a requests.Session, and the paging keys seen
        self._count_lock = threading.Lock()
        self.requests_made = 0
        self.retries: Counter[str] = Counter()

    def stop(self) -> None:
        """End every wait now and refuse further requests (the fetch calls it on Ctrl-C or an error)."""
        self._stopped.set()

    def restart(self) -> None:
        self._stopped.clear()

    def _thread_session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _count(self, retried: str | None = None) -> None:
        with self._count_lock:
            self.requests_made += 1
            if retried is not None:
                self.retries[retried] += 1

    def _check_paging(self, params: dict[str, Any] | None, where: str) -> None:
        """A paging sequence starts with a request without ``pagination_key`` (on this thread); a key that
        comes back within it would page forever."""
        key = (params or {}).get("pagination_key")
        if key is None:
            self._local.pages = set()
            return
        seen = getattr(self._local, "pages", set())
        if key in seen:
            raise JQuantsError(f"J-Quants sent the same pagination_key twice on {where}; stopping the fetch")
        seen.add(key)
        self._local.pages = seen

    def _get(self, url: str, params: dict[str, Any] | None = None) -> requests.Response:
        """One GET with the rate limit and retries; every ``ClientV2`` method (and its paging) calls this."""
        endpoint = urlsplit(url).path.removeprefix(urlsplit(self.JQUANTS_API_BASE).path) or url
        asked = " ".join(f"{k}={v}" for k, v in (params or {}).items() if k != "pagination_key")
        where = f"{endpoint}{' ' + asked if asked else ''}"
        self._check_paging(params, where)
        problem, wait = "", 0.0
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                self._sleep(wait)
            if self._stopped.is_set():
                raise JQuantsError(f"the fetch was stopped before {where}")
            self._limiter.wait(self._sleep)
            try:
                response = self._thread_session().get(
                    url, params=params, headers=self._base_headers(), timeout=self.timeout
                )
            except TRANSIENT as e:
                self._count("connection")
                problem, wait = f"no answer ({type(e).__name__})", self.retry.wait(attempt, None)
                continue
            except requests.RequestException as e:
                raise JQuantsError(f"cannot send the request for {where} ({type(e).__name__})") from None
            status = response.status_code
            if status == 401:
                self._count()
                raise JQuantsError(
                    f"J-Quants refused the API key (401 on {endpoint}: {_message(response)}); "
                    f"check {KEY_VARIABLE} or the .env file"
                )
            if status == 403:
                self._count()
                raise JQuantsError(
                    f"J-Quants answered 403 on {endpoint}: your plan does not include this endpoint "
                    f"({_message(response)})"
                )
            if status == 429 or status >= 500:
                self._count(str(status))
                problem = f"{status} {_message(response)}".strip()
                asked_wait = retry_after(response.headers.get("Retry-After"))
                if asked_wait is not None and asked_wait > self.retry.max_retry_after:
                    raise JQuantsError(
                        f"J-Quants asks to wait {asked_wait:.0f} s before more requests ({problem} on "
                        f"{where}); re-run later: what was fetched is cached"
                    )
                wait = self.retry.wait(attempt, asked_wait)
                if status == 429:  # the plan's limit is shared: every thread waits, not only this one
                    self._limiter.hold(wait)
                continue
            if not response.ok:
                self._count()
                raise JQuantsError(f"J-Quants answered {status} on {where}: {_message(response)}")
            try:
                body = response.json()
            except ValueError:
                body = None
            if not (isinstance(body, dict) and isinstance(body.get("data"), list)):
                self._count("no data")
                problem = f"{status} without a data list: {_message(response)}"
                wait = self.retry.wait(attempt, None)
                continue
            self._count()
            return response
        raise JQuantsError(
            f"J-Quants kept failing on {where} ({problem}) after {self.retry.max_retries + 1} tries; "
            "re-run later: what was fetched is cached"
        )

    def records(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every record of ``path`` for ``params``, across its pages, exactly as the API sent them."""
        return self._get_paginated(path, params=params)
