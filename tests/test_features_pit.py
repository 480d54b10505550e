"""Point-in-time guarantee: features at dates up to T are identical whether or not data after T exists.

Any look-ahead in any feature (a centered window, a whole-sample statistic, a backward fill, a label
read as input) changes some value at or before T when the future is cut off, and fails these tests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from atft.data.importer import import_market
from atft.data.store import RawStore
from atft.data.synthetic import SynthParams, synthesize, write_synthetic
from atft.features.build import compute_features, sector_of
from atft.features.labels import build_labels

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jp_large_caps"


def _inputs(store: RawStore) -> tuple[pl.DataFrame, pl.DataFrame]:
    prices = (
        store.prices.sort("code", "date")
        .join(sector_of(store.listed_info, "sector17")[0], on="code", how="left", maintain_order="left")
        .drop("turnover")
    )
    return prices, store.index


def _assert_point_in_time(prices: pl.DataFrame, index: pl.DataFrame, cut: dt.date) -> int:
    full, groups = compute_features(prices, index)
    truncated, _ = compute_features(prices.filter(pl.col("date") <= cut), index.filter(pl.col("date") <= cut))
    past = full.filter(pl.col("date") <= cut)
    assert past.select("date", "code").equals(truncated.select("date", "code"))
    changed = [c for c in past.columns if not past[c].equals(truncated[c])]
    assert not changed, f"features that read data after {cut}: {changed}"
    # The comparison is not vacuous: every feature has values before the cut.
    empty = [n for names in groups.values() for n in names if past[n].null_count() == past.height]
    assert not empty
    return past.height


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> RawStore:
    out = tmp_path_factory.mktemp("pit") / "raw"
    write_synthetic(synthesize(SynthParams(n_stocks=60, n_days=420, seed=3, late_listing_frac=0.2)), out)
    return RawStore.read(out)


@pytest.mark.parametrize("cut", [dt.date(2015, 11, 2), dt.date(2016, 3, 15)])
def test_synthetic_features_are_point_in_time(synthetic_store, cut):
    prices, index = _inputs(synthetic_store)
    assert _assert_point_in_time(prices, index, cut) > 10_000


def test_labels_change_only_where_their_window_crosses_the_cut(synthetic_store):
    """Labels read the future by design, but only h rows of it: a label whose window ends by T is unchanged."""
    prices, index = _inputs(synthetic_store)
    cut = dt.date(2016, 1, 29)
    closes = prices.select("date", "code", "sector", "close")
    full = build_labels(closes, index, [1, 5, 20])
    cut_closes = closes.filter(pl.col("date") <= cut)
    truncated = build_labels(cut_closes, index.filter(pl.col("date") <= cut), [1, 5, 20])
    for h in (1, 5, 20):
        inside = full.filter(pl.col(f"label_end_{h}d") <= cut).select("date", "code", f"target_{h}d")
        same = truncated.join(inside, on=["date", "code"], suffix="_full")
        assert same.height == inside.height > 0
        assert same[f"target_{h}d"].equals(same[f"target_{h}d_full"].alias(f"target_{h}d"))
        # Past the cut the truncated data knows no future: null, never 0.
        crossing = truncated.join(
            full.filter(pl.col(f"label_end_{h}d") > cut).select("date", "code"), on=["date", "code"]
        )
        assert crossing.height > 0 and crossing[f"target_{h}d"].null_count() == crossing.height


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> RawStore:
    if not (SAMPLE / "prices.parquet").is_file():
        pytest.skip(f"real JP sample not found at {SAMPLE}; it lives in ../shared/data beside the repo")
    out = tmp_path_factory.mktemp("pit_real") / "store"
    import_market(
        SAMPLE / "prices.parquet",
        out,
        index=SAMPLE / "index_n225.parquet",
        listed_info=SAMPLE / "listed_info.csv",
    )
    return RawStore.read(out)


@pytest.mark.real_data
def test_real_jp_features_are_point_in_time(real_store):
    prices, index = _inputs(real_store)
    assert _assert_point_in_time(prices, index, dt.date(2024, 8, 5)) > 200_000  # the day of the crash
