"""The J-Quants fetch cache: one parquet file per endpoint and period, and ``cache.json``, which records
what each file holds and when it was fetched. This module is the only one that reads or writes it.

Layout::

    <cache>/cache.json                      {"format_version", "endpoints": {endpoint: {period: entry}}}
    <cache>/<endpoint>/<period>.parquet     the records as the API sent them, every value as text
    <cache>/store_input/<table>.parquet     the canonical prices, index and listing the importer read last

An entry is ``{"file", "from", "to", "requests", "rows", "complete", "fetched_at"}``: the dates the
period's requests covered, and whether every business day answered. ``covers`` says whether an entry is
for exactly the dates asked now (a later ``--to`` refetches the last, partial month) and its file is there;
the fetch also decides whether it is settled (``fetch._settled``). Files are written atomically (a temporary file
renamed into place) and the entry is recorded only after its file is in place, so an interrupted fetch
leaves complete periods and no half-written one; the next run fetches the rest.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from atft.data.store import StoreError, atomic_write, first_line

CACHE_FORMAT = 1
CACHE_MANIFEST = "cache.json"


class FetchCache:
    """The cache folder at ``path`` (created on first write)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries = self._read_manifest()

    def _read_manifest(self) -> dict[str, dict[str, dict[str, Any]]]:
        file = self.path / CACHE_MANIFEST
        if not file.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(
                    f"{self.path} is not a J-Quants cache (no {CACHE_MANIFEST}); choose another --cache folder"
                )
            return {}
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
            endpoints = manifest["endpoints"]
            if manifest.get("format_version") != CACHE_FORMAT or not isinstance(endpoints, dict):
                raise ValueError(f"unknown format {manifest.get('format_version')!r}")
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise StoreError(
                f"{file} is damaged ({first_line(e)}); delete the cache folder to refetch everything"
            ) from None
        return endpoints

    def entry(self, endpoint: str, period: str) -> dict[str, Any] | None:
        return self._entries.get(endpoint, {}).get(period)

    def covers(self, endpoint: str, period: str, start: str, end: str) -> bool:
        """Whether ``period`` of ``endpoint`` is cached for exactly the dates ``start``..``end``."""
        entry = self.entry(endpoint, period)
        return (
            entry is not None
            and (entry.get("from"), entry.get("to")) == (start, end)
            and (self.path / entry["file"]).is_file()
        )

    def write(
        self,
        endpoint: str,
        period: str,
        frame: pl.DataFrame,
        *,
        start: str,
        end: str,
        requests: int,
        complete: bool = True,
    ) -> None:
        """Store one period's records (``frame``, text columns) and record it in ``cache.json``."""
        relative = f"{endpoint}/{period}.parquet"
        file = self.path / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        if not (self.path / CACHE_MANIFEST).exists():  # first: a folder with data but no manifest is refused
            self._write_manifest()
        atomic_write(file, lambda tmp: frame.write_parquet(tmp, compression="zstd"))
        entry = {
            "file": relative,
            "from": start,
            "to": end,
            "requests": requests,
            "rows": frame.height,
            "complete": complete,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            self._entries.setdefault(endpoint, {})[period] = entry
        self._write_manifest()

    def _write_manifest(self) -> None:
        with self._lock:
            manifest = {"format_version": CACHE_FORMAT, "endpoints": self._entries}
            text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path / CACHE_MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def read(self, endpoint: str, periods: list[str]) -> list[tuple[str, pl.DataFrame]]:
        """The cached frames of ``periods`` (each must be cached), as (cache file, frame) pairs."""
        frames = []
        for period in periods:
            entry = self.entry(endpoint, period)
            if entry is None:
                raise StoreError(f"{self.path}: {endpoint} {period} is not cached")
            file = self.path / entry["file"]
            try:
                frames.append((entry["file"], pl.read_parquet(file)))
            except (OSError, pl.exceptions.PolarsError) as e:
                raise StoreError(
                    f"{file} is damaged ({first_line(e)}); delete it and re-run the fetch to refetch it"
                ) from None
        return frames

    def write_input(self, name: str, frame: pl.DataFrame) -> Path:
        """Write ``store_input/<name>.parquet``, a canonical table the importer reads into the raw store, and
        return its path (kept in the cache so that the store's manifest can name it)."""
        file = self.path / "store_input" / f"{name}.parquet"
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, frame.write_parquet)
        return file

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """What is cached, for the store's manifest."""
        with self._lock:
            return json.loads(json.dumps(self._entries))
