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

    Raises :class:`JQuantsError` naming both places when neither has it.
    """
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key and env_file is not None and Path(env_file).is_file():
        key = (dotenv_values(env_file).get(KEY_VARIABLE) or "").strip()
    if not key:
        where = f" or add {KEY_VARIABLE}=... to {env_file}" if env_file is not None else ""
        raise JQuantsError(f"no J-Quants API key: set {KEY_VARIABLE}{where}")
    return key


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait when the server is busy (429) or failing (5xx, dropped connection).

    The wait before retry k (0-based) is ``Retry-After`` when the server sends it, else
    ``backoff * 2**k``; either is capped at ``max_wait`` seconds.
    """

    max_retries: int = 6
    backoff: float = 1.0
    max_wait: float = 60.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        base = retry_after if retry_after is not None else self.backoff * 2**attempt
        return min(max(base, 0.0), self.max_wait)


class RateLimiter:
    """At most ``per_minute`` requests a minute over all threads: each request takes the next free slot,
    slots ``60 / per_minute`` seconds apart."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not per_minute > 0:
            raise ValueError(
                f"the rate limit must be a positive number of requests a minute, got {per_minute}"
            )
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self, sleep: Callable[[float], None]) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            sleep(slot - now)


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value.strip() else None
        return None if when is None else when.timestamp() - time.time()


def _message(response: requests.Response) -> str:
    """The server's own explanation (``{"message": ...}``), else the start of its body."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    return response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason or ""


class JQuantsClient(ClientV2):
    """``ClientV2`` whose requests follow ATFT's rate limit, retry policy and error messages.

    ``base_url`` replaces the official address (a loopback emulator in the tests). ``requests_made`` and
    ``retries`` (by status) count what the client did, for the fetch manifest.
    """

    def __init__(
        self,
        key: str,
        *,
        base_url: str = OFFICIAL_BASE_URL,
        requests_per_minute: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(api_key=key)
        self.JQUANTS_API_BASE = base_url.rstrip("/")
        self.retry = retry
        self.timeout = timeout
        self._sleep = sleep
        self._limiter = RateLimiter(requests_per_minute)
        self._local = threading.local()  # one requests.Session per thread: sessions are not thread-safe
        self._count_lock = threading.Lock()
        self.requests_made = 0
        self.retries: Counter[str] = Counter()

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

    def _get(self, url: str, params: dict[str, Any] | None = None) -> requests.Response:
        """One GET with the rate limit and retries; every ``ClientV2`` method (and its paging) calls this."""
        endpoint = urlsplit(url).path.removeprefix(urlsplit(self.JQUANTS_API_BASE).path) or url
        asked = " ".join(f"{k}={v}" for k, v in (params or {}).items() if k != "pagination_key")
        where = f"{endpoint}{' ' + asked if asked else ''}"
        problem = ""
        for attempt in range(self.retry.max_retries + 1):
            self._limiter.wait(self._sleep)
            try:
                response = self._thread_session().get(
                    url, params=params, headers=self._base_headers(), timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                self._count("connection")
                problem = f"no answer ({type(e).__name__})"
                if attempt < self.retry.max_retries:
                    self._sleep(self.retry.wait(attempt, None))
                continue
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
                if attempt < self.retry.max_retries:
                    self._sleep(self.retry.wait(attempt, _retry_after(response)))
                continue
            self._count()
            if not response.ok:
                raise JQuantsError(f"J-Quants answered {status} on {where}: {_message(response)}")
            return response
        raise JQuantsError(
            f"J-Quants kept failing on {where} ({problem}) after {self.retry.max_retries + 1} tries; "
            "re-run later: what was fetched is cached"
        )
