"""``atft rolling``: purged blocks that never reach their test days, one continuous series, warm start."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_training import TINY
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.data.splits import SplitError, rolling_splits
from atft.evaluation.backtest import backtest
from atft.features.dataset import DatasetFolder
from atft.training.run_folder import RunFolder
from atft.workflow.rolling import block_overrides, rolling
from atft.workflow.run_data import load_run_data

runner = CliRunner()
ONE_EPOCH = [*TINY, "train.scheduler.warmup_epochs=0", "train.max_epochs=1"]


def late_start(tiny_dataset) -> str:
    """A first test day late enough that the first block trains after the features' 200-day warmup."""
    return str(DatasetFolder(tiny_dataset).calendar()[350])


def business_days(n: int) -> np.ndarray:
    return np.busday_offset(np.datetime64("2020-01-01"), np.arange(n), roll="forward")


def test_rolling_blocks_are_purged_and_contiguous():
    cal = business_days(400)
    blocks = rolling_splits(cal, horizons=[1, 5, 20], every=21, train_days=100, valid_days=30, purge_days=20)
    assert blocks[0].test.start == 100 + 20 + 30 + 20  # the first day with room for train, valid, 2 purges
    for a, b in zip(blocks, blocks[1:], strict=False):
        assert b.test.start == a.test.end + 1  # the test blocks tile the out-of-sample period
    for split in blocks:
        assert split.train.end + 20 < split.valid.start and split.valid.end + 20 < split.test.start
        assert split.train.end - split.train.start + 1 == 100  # sliding window
    assert blocks[-1].test.end == 399
    expanding = rolling_splits(
        cal, horizons=[20], every=50, train_days=100, valid_days=30, purge_days=20, window="expanding"
    )
    assert all(s.train.start == 0 for s in expanding)
    with pytest.raises(SplitError, match="the purge|purge_days"):
        rolling_splits(cal, horizons=[20], every=21, train_days=100, valid_days=30, purge_days=5)
    with pytest.raises(SplitError, match="needs 170"):
        rolling_splits(
            cal, horizons=[20], every=21, train_days=100, valid_days=30, purge_days=20, start="2020-02-03"
        )


def test_no_block_trains_on_a_label_that_reaches_its_test_block(tiny_dataset):
    dataset = DatasetFolder(tiny_dataset)
    base = load_config(None, ONE_EPOCH, env={}).cfg
    blocks = rolling_splits(
        dataset.calendar(), horizons=list(base.data.horizons), every=35, train_days=100,
        valid_days=base.data.split.valid_days, purge_days=base.data.split.purge_days, start=late_start(tiny_dataset),
    )  # fmt: skip
    assert len(blocks) >= 2
    for split in blocks:
        cfg = load_config(None, [*ONE_EPOCH, *block_overrides(split)], env={}).cfg
        run = load_run_data(cfg, dataset, say=lambda s: None)
        first_test_day = int(np.searchsorted(run.panel.dates, split.calendar[split.test.start]))
        for name in ("train", "valid"):
            seg = run.data.datasets[name]
            days = np.repeat(seg.day_index, np.diff(seg.day_ptr))
            rows = np.repeat(np.arange(len(seg)), np.diff(seg.day_ptr))
            mask = seg.label_mask[
                rows, seg.stock_idx
            ]  # [rows, H]: the labels the loss and early stopping see
            ends = run.panel.label_end[seg.stock_idx, days][mask]
            assert ends.size and ends.max() < first_test_day, (split.fold, name)


@pytest.fixture(scope="module")
def rolled(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rolling") / "ridge"
    result = rolling(tiny_dataset, out, model="ridge", every=35, train_days=100, start=late_start(tiny_dataset),
                     preset=None, overrides=ONE_EPOCH, say=lambda s: None)  # fmt: skip
    return out, result


def test_the_summary_is_the_one_continuous_series(rolled, tiny_dataset):
    out, result = rolled
    series = pl.read_parquet(out / "predictions.parquet")
    assert series.select("date", "code", "horizon").is_duplicated().sum() == 0
    days = series["date"].unique().sort()
    first, last = result.blocks[0]["test"][0], result.blocks[-1]["test"][1]
    assert str(days[0]) >= first and str(days[-1]) <= last
    book = backtest(
        series.filter(pl.col("horizon") == 5).select("date", "code", "prediction"),
        DatasetFolder(tiny_dataset).daily_returns(),
        quantile=0.2, holding_days=5, cost_bps=load_config(None, ONE_EPOCH, env={}).cfg.eval.cost_bps,
    )  # fmt: skip
    assert result.summary["book"]["sharpe"] == pytest.approx(book.summary["sharpe"])
    record = json.loads((out / "rolling.json").read_text())
    assert record["blocks"] == len(record["block_table"]) == len(result.blocks)
    text = (out / "rolling.md").read_text()
    assert "one continuous series" in text and "## Blocks" in text


def test_rolling_resumes_and_refuses_bad_input(rolled, tiny_dataset, tmp_path):
    out, result = rolled
    stamp = (out / "blocks" / "block_000" / "predictions.parquet").stat().st_mtime_ns
    rolling(tiny_dataset, out, model="ridge", every=35, train_days=100, start=late_start(tiny_dataset),
            preset=None, overrides=ONE_EPOCH, say=lambda s: None)  # fmt: skip
    assert (out / "blocks" / "block_000" / "predictions.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="--warm-start needs a trained network"):
        rolling(
            tiny_dataset, tmp_path / "x", model="ridge", warm_start=True, preset=None, overrides=ONE_EPOCH
        )
    bad = runner.invoke(
        app, ["rolling", "--data-path", str(tiny_dataset), "--model", "xgb", "--out", str(tmp_path / "y")]
    )
    assert bad.exit_code == 2 and "--model 'xgb'" in bad.output


@pytest.mark.slow
def test_warm_start_starts_each_block_from_the_previous_weights(tiny_dataset, tmp_path):
    result = rolling(tiny_dataset, tmp_path / "warm", model="atft", every=35, train_days=100, warm_start=True,
                     start=late_start(tiny_dataset), warm_epochs=1, preset=None, overrides=ONE_EPOCH,
                     say=lambda s: None)  # fmt: skip
    assert result.summary["blocks"] >= 2
    second = RunFolder(tmp_path / "warm" / "blocks" / "block_001")
    events, _ = second.read_events()
    assert any(e["event"] == "warm_start" and "block_000" in e["checkpoint"] for e in events)
