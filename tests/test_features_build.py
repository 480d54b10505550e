"""The dataset build end to end: manifest, namespaces, the guard, the CLI, and the real JP sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.data.store import RawStore, write_store
from atft.data.synthetic import SynthParams, synthesize, write_synthetic
from atft.features.build import build_dataset, compute_features, priced_rows
from atft.features.cross_section import interleave_dates, normalize_per_date
from atft.features.dataset import DatasetError, read_dataset_manifest, select_features
from atft.features.guard import DatasetGuardError, check_dataset, guard_dataset
from atft.features.panel import DayPanel

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("build")
    raw, out = root / "raw", root / "dataset"
    write_synthetic(synthesize(SynthParams(n_stocks=60, n_days=420, seed=5)), raw)
    manifest = build_dataset(raw, out, load_config().cfg)
    return raw, out, manifest


def test_manifest_describes_the_dataset(built):
    _, out, manifest = built
    on_disk = read_dataset_manifest(out)
    assert on_disk["schema_hash"] == manifest["schema_hash"] and len(manifest["schema_hash"]) == 64
    features = pl.read_parquet(out / "features.parquet")
    labels = pl.read_parquet(out / "labels.parquet")
    assert manifest["rows"] == features.height == labels.height
    assert manifest["n_stocks"] == 60 and manifest["n_dates"] == features["date"].n_unique() == 420
    assert manifest["date_range"] == [str(features["date"].min()), str(features["date"].max())]
    assert len(manifest["model_features"]) >= 80
    assert set(manifest["features"]) >= {"returns", "volatility", "market", "sector", "ranks"}
    assert set(manifest["null_rate_after_warmup"]) == set(manifest["model_features"])
    excluded = manifest["excluded_rows"]
    assert excluded["total"] == sum(excluded["reasons"].values())
    # The 200-day EMA has a value from a stock's 200th row (index 199) on: no stock lists late here.
    assert excluded["reasons"]["warmup"] == 60 * (manifest["warmup_days"] - 1)
    never = features.with_columns(labels.select(pl.col("^target_\\d+d$"))).filter(
        pl.any_horizontal(pl.col(manifest["model_features"]).is_null())
        | pl.all_horizontal(pl.col("^target_\\d+d$").is_null())
    )
    assert excluded["total"] == never.height
    assert excluded["reasons"]["no_label"] > 0  # the last day has no label at any horizon
    assert manifest["guard"]["passed"]
    # Rows are the store's rows, date-major, the same in both files.
    assert features.select("date", "code").equals(labels.select("date", "code"))
    assert features.select("date", "code").equals(features.select("date", "code").sort("date", "code"))


def test_features_and_labels_never_share_a_namespace(built):
    _, out, manifest = built
    features = pl.read_parquet_schema(out / "features.parquet")
    labels = pl.read_parquet_schema(out / "labels.parquet")
    assert not [c for c in features if c.startswith(("target_", "label_end_", "oracle_"))]
    assert set(features) & set(labels) == {"date", "code"}
    assert set(manifest["model_features"]).isdisjoint(labels)
    for name in ("target_5d", "target_5d_rank", "label_end_20d", "oracle_5d", "target_1d_excess"):
        with pytest.raises(DatasetError, match="can never be features"):
            select_features(manifest, ["ret_1d", name])
        with pytest.raises(DatasetError, match="can never be features"):
            DayPanel.load(out, features=[name])
    with pytest.raises(DatasetError, match="unknown feature 'ret_2d'.*ret_1d"):
        select_features(manifest, ["ret_2d"])
    assert select_features(manifest) == manifest["model_features"]


def test_oracle_is_carried_apart(built):
    raw, out, manifest = built
    assert manifest["source"]["raw_kind"] == "synthetic" and "oracle" not in manifest["model_features"]
    oracle = pl.read_parquet(out / "oracle.parquet")
    assert oracle.equals(pl.read_parquet(raw / "oracle.parquet"))


def test_labels_are_null_at_the_end_never_zero(built):
    _, out, _ = built
    labels = pl.read_parquet(out / "labels.parquet").sort("code", "date")
    last = labels.group_by("code").tail(20)
    assert last["target_20d"].null_count() == last.height
    assert labels.group_by("code").tail(1)["target_1d"].null_count() == 60


def _buggy_per_stock_zscore(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The previous system's bug: a 'cross-sectional' z-score grouped by (date, code), i.e. one stock at a time."""
    group = ["date", "code"]
    return frame.with_columns(
        ((pl.col(c) - pl.col(c).mean().over(group)) / pl.col(c).std().over(group))
        .fill_null(0.0)
        .fill_nan(0.0)
        for c in columns
    )


def _guard(features: pl.DataFrame, labels: pl.DataFrame, manifest: dict, **kw):
    market = manifest["features"]["market"]
    return check_dataset(
        features,
        labels,
        stock_features=[n for n in manifest["model_features"] if n not in market],
        market_features=market,
        target_columns={h: f"target_{h}d" for h in manifest["horizons"]},
        warm=features["is_valid_200d"],
        **kw,
    )


def test_guard_passes_the_built_dataset(built):
    _, out, manifest = built
    report = guard_dataset(out)
    assert report.passed, report.problems
    assert report.as_dict() == manifest["guard"]


def test_guard_before_training_reads_the_files_as_written(built, tmp_path):
    """Training re-runs the guard on the folder: a dataset edited (or broken) after its build is caught."""
    _, out, _ = built
    copy = tmp_path / "dataset"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    features = pl.read_parquet(copy / "features.parquet")
    _buggy_per_stock_zscore(features, ["ret_20d"]).write_parquet(copy / "features.parquet")
    with pytest.raises(DatasetGuardError, match="ret_20d is all zero"):
        guard_dataset(copy).raise_if_failed()


def test_guard_catches_the_per_stock_zscore_bug(built):
    _, out, manifest = built
    features = pl.read_parquet(out / "features.parquet")
    labels = pl.read_parquet(out / "labels.parquet")
    broken = ["ret_5d", "vol_20d", "rsi_14"]
    report = _guard(_buggy_per_stock_zscore(features, broken), labels, manifest)
    assert not report.passed
    flagged = {p.split(" ")[0] for p in report.problems}
    assert flagged == set(broken)
    assert all("all zero" in p for p in report.problems)
    with pytest.raises(DatasetGuardError, match="ret_5d is all zero on 100% of"):
        report.raise_if_failed()


def test_guard_catches_null_and_constant_features_and_degenerate_labels(built):
    _, out, manifest = built
    features = pl.read_parquet(out / "features.parquet").with_columns(
        vol_5d=pl.when(pl.col("code") != "1000").then(None).otherwise(pl.col("vol_5d")),
        rsi_2=pl.lit(0.7, pl.Float32),
    )
    labels = pl.read_parquet(out / "labels.parquet").with_columns(
        target_1d=pl.col("target_1d").fill_null(0.0),  # the old end-of-series fill
        target_10d=pl.lit(None, pl.Float32),
        target_20d=pl.col("target_20d").mean().over("date"),
    )
    problems = "\n".join(_guard(features, labels, manifest).problems)
    assert "vol_5d is null on 98% of rows after the warmup" in problems
    assert "rsi_2 is constant across stocks on 100%" in problems
    assert "label target_1d has a value on 60 rows within 1 days of a stock's last row" in problems
    assert "label target_10d is null everywhere" in problems
    assert "label target_20d is constant across stocks" in problems


def test_build_refuses_a_store_without_index(built, tmp_path):
    raw, _, _ = built
    tables = {t: pl.read_parquet(raw / f"{t}.parquet") for t in ("prices", "listed_info")}
    write_store(tmp_path / "raw", tables, {"kind": "imported"})
    result = runner.invoke(
        app, ["data", "build", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 2 and "has no index table" in result.output
    assert not (tmp_path / "d").exists()


def test_cli_build_info_and_splits(built, tmp_path):
    raw, _, manifest = built
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "build", "--raw", str(raw), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["schema_hash"] == manifest["schema_hash"]
    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 0, info.output
    for text in ("Dataset", "Features (94)", "Null rate after the warmup", "Excluded rows", "Guard: passed"):
        assert text in info.output
    again = runner.invoke(app, ["data", "build", "--raw", str(raw), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    splits = runner.invoke(
        app,
        [
            "data",
            "splits",
            str(out),
            "data.split.train_days=100",
            "data.split.valid_days=40",
            "data.split.test_days=40",
        ],
    )
    assert splits.exit_code == 0, splits.output
    assert "train" in splits.output and "test" in splits.output and "2016" in splits.output


@pytest.mark.real_data
def test_real_jp_end_to_end(real_dataset):
    from atft.data.splits import splits_from_config
    from atft.features.dataset import DatasetFolder
    from atft.training.datamodule import DayDataModule

    manifest = read_dataset_manifest(real_dataset)
    assert manifest["n_stocks"] == 318 and manifest["guard"]["passed"]
    reasons = manifest["excluded_rows"]["reasons"]
    # The index covers 2021-05-28 .. 2026-05-29, the prices 2019-06 .. 2026-08: rows outside have no market
    # features, and the index's own 200-day warmup runs to 2022-03.
    assert reasons["no_index_date"] > 0 and reasons["market_warmup"] > 0 and reasons["warmup"] > 0
    assert reasons["no_sector"] > 0  # 9 codes listed after the sector table's date
    cfg = load_config(overrides=["data.lookback=60"]).cfg
    calendar = DatasetFolder(real_dataset).calendar()
    (split,) = splits_from_config(calendar, cfg)
    dm = DayDataModule.from_split(real_dataset, split, lookback=60, days_per_batch=2, min_stocks=20)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    n = batch["x"].shape[0]
    assert batch["x"].shape == (n, 60, len(manifest["model_features"])) and n > 100
    assert batch["y"].shape == batch["y_mask"].shape == (n, 4)
    assert batch["stock_id"].shape == batch["sector_id"].shape == (n,)
    assert len(batch["dates"]) == 2 and bool(batch["x"].isfinite().all())
    summary = dm.summary()
    assert summary["train"]["days"] > 100 and summary["test"]["days"] > 100


def test_build_and_load_under_a_path_with_brackets(built, tmp_path):
    """polars reads '[a]' in a path as a glob pattern unless told not to."""
    raw, _, manifest = built
    out = tmp_path / "st[a]re" / "dataset"
    result = runner.invoke(app, ["data", "build", "--raw", str(raw), "--out", str(out)])
    assert result.exit_code == 0, result.output
    panel = DayPanel.load(out)
    assert panel.x.shape == (60, 420, len(manifest["model_features"]))


def test_walk_forward_fold_loaders_skip_the_embargo_and_cut_labels_at_segment_ends(built):
    from atft.data.splits import walk_forward_splits
    from atft.training.datamodule import DayDataModule

    _, out, _ = built
    panel = DayPanel.load(out)
    folds = walk_forward_splits(
        panel.dates, horizons=[1, 5, 10, 20], train_days=100, valid_days=20, test_days=60,
        purge_days=20, embargo_days=5, n_folds=3, window="expanding",
    )  # fmt: skip
    late = folds[-1]
    assert late.embargo, "the later fold's training must skip the days after the earlier test block"
    dm = DayDataModule.from_split(panel, late, lookback=20, days_per_batch=3, min_stocks=10)
    dm.setup()
    train = dm.datasets["train"]
    embargo_dates = set(late.dates("train").tolist()) ^ set(
        panel.dates[late.train.start : late.train.end + 1].tolist()
    )
    assert train.dropped_reasons["embargo"] == len(embargo_dates) == 5
    assert not embargo_dates & set(panel.dates[train.day_index].tolist())
    for name, dataset in dm.datasets.items():
        segment = getattr(late, name)
        used = dataset.label_mask.any(axis=(0, 2))  # stocks with any label used
        ends = panel.label_end[:, dataset.day_index][used]  # label windows of the segment's kept days
        assert ends[dataset.label_mask[:, used].transpose(1, 0, 2)].max() <= segment.end
    batch = next(iter(dm.val_dataloader()))
    assert batch["dates"] == sorted(batch["dates"])


def test_build_never_writes_over_its_own_raw_store(built, tmp_path):
    raw, out, _ = built
    copy = tmp_path / "raw"
    copy.mkdir()
    for f in raw.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    result = runner.invoke(app, ["data", "build", "--raw", str(copy), "--out", str(copy), "--overwrite"])
    assert result.exit_code == 2 and "it is a raw store, and this would write a dataset" in result.output
    assert (copy / "prices.parquet").is_file()
    synth = runner.invoke(app, ["data", "synth", "--out", str(out), "--overwrite", "--days", "200"])
    assert synth.exit_code == 2 and "it is a dataset" in synth.output


@pytest.mark.parametrize(
    "table, drop, named",
    [
        ("prices", "volume", "prices.parquet lacks column(s) volume"),
        ("index", "close", "index.parquet lacks column(s) close"),
        (
            "listed_info",
            ["sector17_name", "sector"],
            "listed_info has no sector17_name (nor a sector column)",
        ),
    ],
)
def test_build_names_the_file_and_column_a_store_lacks(built, tmp_path, table, drop, named):
    raw, _, _ = built
    tables = {t: pl.read_parquet(raw / f"{t}.parquet") for t in ("prices", "index", "listed_info")}
    tables[table] = tables[table].drop(drop)
    write_store(tmp_path / "raw", tables, {"kind": "imported"})
    result = runner.invoke(
        app, ["data", "build", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 2 and named in result.output and "Traceback" not in result.output


def test_build_uses_a_generic_sector_column_and_says_so(built, tmp_path):
    raw, _, manifest = built
    tables = {t: pl.read_parquet(raw / f"{t}.parquet") for t in ("prices", "index", "listed_info")}
    tables["listed_info"] = tables["listed_info"].with_columns(sector17_name=pl.lit(None, pl.String))
    write_store(tmp_path / "raw", tables, {"kind": "imported"})
    rebuilt = build_dataset(tmp_path / "raw", tmp_path / "d", load_config().cfg)
    assert rebuilt["sector_column"] == "sector" and manifest["sector_column"] == "sector17_name"
    assert rebuilt["excluded_rows"] == manifest["excluded_rows"]  # the same sectors by another name


def test_guard_dataset_takes_its_thresholds_from_the_config(built, tmp_path):
    _, out, _ = built
    copy = tmp_path / "dataset"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    features = pl.read_parquet(copy / "features.parquet")
    # sector_ret_1d missing for a third of the stocks: within the default limit (50%), not within 20%.
    thinned = features.with_columns(
        sector_ret_1d=pl.when(pl.col("code").cast(pl.Int32) % 3 == 0)
        .then(None)
        .otherwise(pl.col("sector_ret_1d"))
    )
    thinned.write_parquet(copy / "features.parquet")
    assert guard_dataset(copy).passed
    strict = load_config(overrides=["features.guard.max_null_rate=0.2"]).cfg
    (problem,) = guard_dataset(copy, strict).problems
    assert problem.startswith("sector_ret_1d is null on 3") and "no sector peers" in problem


def test_loader_refuses_overlapping_segments(built):
    from atft.training.datamodule import DayDataModule

    _, out, _ = built
    with pytest.raises(ValueError, match="the train range .* and the valid range .* overlap"):
        DayDataModule(out, train=(None, "2016-03-31"), valid=("2016-03-01", None))


def test_splits_of_a_dataset_use_its_horizons(built, tmp_path):
    raw, _, _ = built
    out = tmp_path / "ds"
    assert (
        runner.invoke(
            app, ["data", "build", "--raw", str(raw), "--out", str(out), "data.horizons=[1,5,60]"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["data", "splits", str(out), "data.split.train_days=50"])
    assert result.exit_code == 2 and "longest label horizon (60 trading days" in result.output


def test_a_zero_volume_day_is_counted_with_the_features_it_voids(built, tmp_path):
    raw, _, manifest = built
    tables = {t: pl.read_parquet(raw / f"{t}.parquet") for t in ("prices", "index", "listed_info")}
    halted = (pl.col("code") == "1000") & (pl.col("date") == pl.date(2016, 3, 15))
    tables["prices"] = tables["prices"].with_columns(
        volume=pl.when(halted).then(0.0).otherwise(pl.col("volume"))
    )
    write_store(tmp_path / "raw", tables, {"kind": "imported"})
    rebuilt = build_dataset(tmp_path / "raw", tmp_path / "d", load_config().cfg)
    by_feature = rebuilt["excluded_rows"]["null_feature_by_feature"]
    # value traded is null that day (not log 0), and so are the 20-day averages that include it
    assert by_feature["amihud_20d"] == by_feature["log_dollar_volume_20d"] == 20
    assert rebuilt["excluded_rows"]["reasons"]["null_feature"] == 20
    assert rebuilt["rows"] == manifest["rows"]  # nothing dropped
    info = runner.invoke(app, ["data", "info", str(tmp_path / "d")])
    assert "null_feature rows by feature: " in info.output and "amihud_20d 20" in info.output


def test_normalization_replaces_the_columns_in_the_frame_it_is_given():
    # In place, so that the caller's reference does not keep every raw column alive beside its
    # normalized copy (the build's peak at 10M rows: docs/feature_speed.md).
    rng = np.random.default_rng(0)
    dates = np.repeat(np.arange(5), 40)
    frame = pl.DataFrame({"date": dates, "x": rng.normal(size=dates.size), "y": rng.normal(size=dates.size)})
    raw = frame.clone()
    out = normalize_per_date(frame, ["x"], "z", clip=5.0)
    assert out is frame
    assert frame["y"].equals(raw["y"])
    x = raw["x"].to_numpy().reshape(5, 40)
    expected = (x - x.mean(1, keepdims=True)) / x.std(1, ddof=1, keepdims=True)
    np.testing.assert_allclose(frame["x"].to_numpy().reshape(5, 40), expected, rtol=1e-5)


def test_interleave_dates_consumes_the_blocks():
    blocks = [
        pl.DataFrame({"date": [1, 1, 2, 3], "code": ["a", "b", "a", "b"], "v": [1.0, 2.0, 3.0, 4.0]}),
        pl.DataFrame({"date": [1, 2, 2], "code": ["c", "c", "d"], "v": [5.0, 6.0, 7.0]}),
    ]
    expected = pl.concat(blocks).sort("date", "code")
    out = interleave_dates(blocks)
    assert blocks == []  # its buffers are the reorder's to free
    assert out.equals(expected) and out["date"].flags["SORTED_ASC"]


def test_compute_features_can_consume_the_bars_it_is_given(built):
    # The build lets go of the bars once their rows are read (0.8 GB at 10M rows); the features are the same.
    raw, _, _ = built
    store = RawStore.read(raw, oracle=False)
    prices, _ = priced_rows(store, "sector17")
    kept, groups = compute_features(prices, store.index)
    bars = prices.clone()
    consumed, consumed_groups = compute_features(bars, store.index, consume=True)
    assert bars.width == 0 and prices.width > 0
    assert consumed.equals(kept, null_equal=True) and consumed_groups == groups
