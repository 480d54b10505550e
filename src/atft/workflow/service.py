"""``atft serve``: the daily ranked list over HTTP, for the desk's tools that ask for it each morning.

A small FastAPI app around one loaded :class:`~atft.training.bundle.ModelBundle` and one raw store:

- ``GET /healthz``: the model, its horizons and feature hash, the store (no key needed: a load balancer asks it);
- ``POST /predict`` with ``{"date": "latest" | "YYYY-MM-DD", "top_k": 50, "horizons": [5]}`` and the header
  ``X-API-Key``: the ranked lists of that day (:func:`~atft.workflow.predict.daily_ranked_list`), the stocks
  skipped with their reasons, and the list's summary.

Statuses: 401 a missing or wrong key, 422 a malformed body or a day whose features are incomplete, 404 a
day the store has no bars (or index close) for, 409 a model whose features this ATFT no longer builds.
Building a day's features is CPU- and memory-heavy, so one request builds at a time and each finished day
is cached until the store changes (its manifest is read on every request: a daily import is seen at once).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from atft.data.store import StoreError, read_manifest
from atft.training.bundle import BundleError, ModelBundle
from atft.workflow.predict import DailyList, DailyListError, NoDataForDay, daily_ranked_list

API_KEY_HEADER = "X-API-Key"
CACHED_DAYS = 8  # finished lists kept in memory: a few days of requests without rebuilding features


class PredictRequest(BaseModel):
    """The body of ``POST /predict``; unknown fields are refused, so a typo is a 422, not a silent default."""

    model_config = ConfigDict(extra="forbid")

    date: str = Field("latest", description="'latest' (the store's last day) or YYYY-MM-DD")
    top_k: int | None = Field(50, ge=1, description="rows per horizon (null: every scored stock)")
    horizons: list[int] | None = Field(None, description="which horizons (null: all the model forecasts)")


class DailyLists:
    """Builds a day's lists once per store version and keeps the last few (thread-safe)."""

    def __init__(self, bundle: ModelBundle, raw_dir: Path) -> None:
        self.bundle, self.raw_dir = bundle, raw_dir
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], DailyList] = OrderedDict()

    def get(self, day: str) -> DailyList:
        version = hashlib.sha256(json.dumps(read_manifest(self.raw_dir), sort_keys=True).encode()).hexdigest()
        key = (day, version)
        with self._lock:  # one build at a time: each holds the store and its features in memory
            if key not in self._cache:
                self._cache[key] = daily_ranked_list(self.bundle, self.raw_dir, day, say=lambda _line: None)
                while len(self._cache) > CACHED_DAYS:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key]


def create_app(bundle: ModelBundle, raw_dir: str | Path, api_key: str) -> FastAPI:
    """The service of ``bundle`` over the store ``raw_dir``; requests to ``/predict`` must carry ``api_key``."""
    if not api_key:
        raise ValueError("an empty API key would let anyone in: set one")
    raw_dir = Path(raw_dir)
    read_manifest(raw_dir)  # a wrong store fails at start, not at the first request
    lists = DailyLists(bundle, raw_dir)
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def check_key(given: str | None = Depends(header)) -> None:
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    app = FastAPI(title="ATFT daily ranked list", version=str(bundle.info.get("version")))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": bundle.info["model"],
            "horizons": bundle.horizons,
            "feature_hash": bundle.info["feature_hash"],
            "raw_dir": str(raw_dir),
            "source": str(bundle.source),
        }

    @app.post("/predict", dependencies=[Depends(check_key)])
    def predict(body: PredictRequest) -> dict[str, Any]:
        horizons = body.horizons or bundle.horizons
        unknown = sorted(set(horizons) - set(bundle.horizons))
        if unknown:
            raise HTTPException(422, f"horizons {unknown}: the model forecasts {bundle.horizons}")
        try:
            daily = lists.get(body.date)
        except NoDataForDay as e:
            raise HTTPException(404, str(e)) from None
        except DailyListError as e:
            raise HTTPException(422, str(e)) from None
        except BundleError as e:
            raise HTTPException(409, str(e)) from None
        except StoreError as e:
            raise HTTPException(503, str(e)) from None
        return {
            "date": str(daily.date),
            "lists": {
                str(h): daily.for_horizon(h, body.top_k)
                .with_columns(pl.col("date").cast(pl.String))
                .to_dicts()
                for h in horizons
            },
            "skipped": daily.skipped.to_dicts(),
            "summary": daily.info,
        }

    return app
