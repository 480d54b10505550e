"""The raw store: atomic writes, overwrite safety, clear errors on a folder that is not a store."""

from __future__ import annotations

import json

import polars as pl
import pytest

from atft.data.store import RawStore, StoreError, conform, read_manifest, write_store


def tables(n: int = 3):
    prices = conform(
        pl.DataFrame(
            {
                "date": pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 1, n), eager=True),
                "code": ["1301"] * n,
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
            }
        ),
        "prices",
    )
    info = conform(pl.DataFrame({"code": ["1301"], "sector": ["Foods"]}), "listed_info")
    return {"prices": prices, "listed_info": info}


def test_roundtrip_and_manifest(tmp_path):
    write_store(tmp_path / "s", tables(), {"kind": "test"})
    store = RawStore.read(tmp_path / "s")
    assert store.prices.height == 3 and store.index is None and store.oracle is None
    assert store.prices["turnover"].null_count() == 3  # optional column absent -> null, not 0
    m = read_manifest(tmp_path / "s")
    assert m["kind"] == "test" and m["tables"]["prices"]["rows"] == 3 and m["format_version"] == 1


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pl.DataFrame.write_parquet

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    with pytest.raises(OSError):
        write_store(tmp_path / "s", tables(), {"kind": "test"})
    assert list(tmp_path.iterdir()) == []  # no store, no staging folder


def test_failed_overwrite_keeps_the_old_store(tmp_path, monkeypatch):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        write_store(tmp_path / "s", tables(5), {"kind": "new"}, overwrite=True)
    assert read_manifest(tmp_path / "s")["kind"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_overwrite_replaces(tmp_path):
    write_store(tmp_path / "s", tables(3), {"kind": "old"})
    with pytest.raises(StoreError, match="already exists"):
        write_store(tmp_path / "s", tables(5), {"kind": "new"})
    write_store(tmp_path / "s", tables(5), {"kind": "new"}, overwrite=True)
    assert RawStore.read(tmp_path / "s").prices.height == 5
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a folder"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(StoreError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(StoreError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "x"}))
    with pytest.raises(StoreError, match="missing prices.parquet"):
        RawStore.read(tmp_path)
