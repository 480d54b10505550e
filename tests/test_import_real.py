"""The importer on the real Japanese large-cap sample that lives beside the repo in ../shared/data."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from atft.data.importer import import_market
from atft.data.store import INDEX_SCHEMA, PRICE_SCHEMA, RawStore

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jp_large_caps"

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[dict, RawStore, float]:
    """Import the sample once for every test of this module (the data is never copied into the repo)."""
    if not (SAMPLE / "prices.parquet").is_file():
        pytest.skip(f"real JP sample not found at {SAMPLE}; it lives in ../shared/data beside the repo")
    out = tmp_path_factory.mktemp("real") / "store"
    start = time.perf_counter()
    manifest = import_market(
        SAMPLE / "prices.parquet",
        out,
        index=SAMPLE / "index_n225.parquet",
        listed_info=SAMPLE / "listed_info.csv",
    )
    return manifest, RawStore.read(out), time.perf_counter() - start


def test_real_sample_counts(imported):
    m, _, _ = imported
    c = m["checks"]
    assert c["null_ohlc_rows"] == 182
    assert m["quarantined_rows"] == 182
    assert c["codes_without_sector"] == 9
    assert len(m["details"]["codes_without_sector"]) == 9
    assert c["ragged_start_codes"] > 0 and c["ragged_end_codes"] > 0
    assert 5 <= c["extreme_moves"] <= 30
    assert c["duplicate_rows_identical"] == 0
    # the 2024-08-05 crash is a real market move: the index fell more than 5% that day
    crash = [x for x in m["details"]["extreme_moves"] if x["date"] == "2024-08-05"]
    assert crash and all(x["index_moved"] for x in crash)


def test_real_sample_rows_conserved(imported):
    m, store, _ = imported
    c = m["checks"]
    assert m["input_rows"] == pl.read_parquet(SAMPLE / "prices.parquet").height
    assert m["input_rows"] == m["rows"] + m["quarantined_rows"] + c["duplicate_rows_identical"]
    assert store.prices.height == m["rows"]
    rejected = pl.read_parquet(store.path / "rejected_rows.parquet")
    assert rejected["reason"].unique().to_list() == ["null_ohlc"]
    assert rejected["volume"].null_count() == 0  # volume was present on those rows


def test_real_sample_tables(imported):
    m, store, seconds = imported
    assert dict(store.prices.schema) == PRICE_SCHEMA
    assert store.prices["code"].n_unique() == m["codes"] == 318
    assert store.prices.equals(store.prices.sort("code", "date"))
    assert store.index is not None and dict(store.index.schema) == INDEX_SCHEMA
    assert store.index.height == m["checks"]["index"]["rows"] > 1000
    assert set(store.prices["code"].unique()) <= set(store.listed_info["code"])
    assert store.listed_info["code"].str.len_chars().eq(4).all()
    assert store.listed_info["sector"].null_count() == 9
    assert seconds < 30, f"importing the sample took {seconds:.1f}s"


def test_real_sample_as_a_ticker_folder(imported, tmp_path):
    """The same prices as 318 per-ticker CSV files (as a quote downloader writes them) import to the same
    store. (Speed is measured in benchmarks/bench_import.py, not asserted here: CI machines are shared.)"""
    m, store, _ = imported
    folder = tmp_path / "quotes"
    folder.mkdir()
    prices = pl.read_parquet(SAMPLE / "prices.parquet")
    for (code,), part in prices.partition_by("code", as_dict=True).items():
        part.select(
            pl.col("date").alias("Date"),
            *(pl.col(c).alias(c.title()) for c in ("open", "high", "low", "close", "volume")),
        ).write_csv(folder / f"{code}.T.csv")
    calls: list[tuple] = []
    folder_m = import_market(folder, tmp_path / "store", progress=lambda *a: calls.append(a))
    assert folder_m["source"]["prices"]["files"] == 318
    assert folder_m["rows"] == m["rows"] and folder_m["quarantined_rows"] == m["quarantined_rows"]
    assert RawStore.read(tmp_path / "store").prices.equals(store.prices)
    assert calls[-1] == ("writing store",) and ("reading 9984.T.csv", 318, 318) in calls


def test_real_listed_info_sector_codes_and_extras(imported):
    m, store, _ = imported
    assert m["source"]["listed_info"]["extra_columns_not_imported"] == ["scale_code", "scale_name"]
    assert store.listed_info["sector17_code"].drop_nulls().is_between(1, 17).all()
