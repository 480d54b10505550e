"""What a run loads: ``data.target`` (the training segment learns from the chosen label; validation and test stay on
the raw return), ``features.drop_groups`` (the models read the manifest's features minus those groups) and
``train.recency_halflife_days`` (training days weighted by age)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_training import tiny_cfg

from atft.features.dataset import DatasetError, DatasetFolder
from atft.features.labels import training_labels
from atft.training.datamodule import recency_weights
from atft.workflow.baselines import segment_rows
from atft.workflow.run_data import load_run_data

HORIZONS = [1, 5, 10, 20]


def _labels_by_row(dataset, column: str) -> dict[tuple[str, str], float]:
    """A slow reference: the label of every (code, date) read straight from labels.parquet."""
    table = DatasetFolder(dataset).read("labels", ["code", "date", column])
    return {(c, str(d)): v for c, d, v in table.drop_nulls(column).iter_rows()}


@pytest.mark.parametrize("target", ["excess", "sector_resid", "rank"])
def test_training_segment_serves_the_chosen_label_and_the_others_the_raw_return(tiny_dataset, target):
    cfg = tiny_cfg(f"data.target={target}")
    run = load_run_data(cfg, DatasetFolder(tiny_dataset), say=lambda s: None)
    assert run.panel.label_names == training_labels(HORIZONS, "raw")
    train, valid = run.data.datasets["train"], run.data.datasets["valid"]
    assert train.panel.label_names == [f"target_{h}d_{target}" for h in HORIZONS]
    assert train.panel.x is run.panel.x  # the features are shared, not copied

    for split, column in [("train", f"target_5d_{target}"), ("valid", "target_5d")]:
        rows = segment_rows(run, split)
        reference = _labels_by_row(tiny_dataset, column)
        seen = rows.y_mask[:, 1]
        codes = run.panel.codes[rows.stock[seen]]
        dates = run.panel.dates[rows.day[seen]].astype(str)
        expected = np.array([reference[(c, d)] for c, d in zip(codes, dates, strict=True)], dtype=np.float32)
        np.testing.assert_allclose(rows.y[seen, 1], expected, rtol=1e-6, atol=1e-7)
    # a batch of the training loader carries the same labels the rows do
    day = train[0]
    stocks = train.stock_idx[train.day_ptr[0] : train.day_ptr[1]]
    y = train.panel.y[stocks, train.day_index[0]]
    np.testing.assert_array_equal(day["y"].numpy()[day["y_mask"].numpy()], y[day["y_mask"].numpy()])
    assert valid.panel is run.panel


def test_recency_halflife_weights_the_training_days_only(tiny_dataset):
    said = []
    run = load_run_data(
        tiny_cfg("train.recency_halflife_days=20"), DatasetFolder(tiny_dataset), say=said.append
    )
    train = run.data.datasets["train"]
    np.testing.assert_array_equal(train.day_weight, recency_weights(train.day_index, 20))
    assert train.day_weight[-1] > train.day_weight[0]
    assert run.data.datasets["valid"].day_weight is None
    assert any("half-life 20 trading days" in line for line in said)
    assert (
        load_run_data(tiny_cfg(), DatasetFolder(tiny_dataset), say=said.append)
        .data.datasets["train"]
        .day_weight
        is None
    )


def test_raw_target_trains_on_the_panel_itself(tiny_dataset):
    run = load_run_data(tiny_cfg(), DatasetFolder(tiny_dataset), say=lambda s: None)
    assert run.data.datasets["train"].panel is run.panel


def test_rank_labels_differ_from_the_raw_ones(tiny_dataset):
    """Guards the test above against a dataset whose label variants happen to coincide."""
    table = DatasetFolder(tiny_dataset).read("labels", ["target_5d", "target_5d_rank"]).drop_nulls()
    assert table.select((pl.col("target_5d") - pl.col("target_5d_rank")).abs().max()).item() > 0.1


def test_unknown_target_is_refused_with_its_choices():
    with pytest.raises(Exception, match="data.target"):
        tiny_cfg("data.target=residual")
    with pytest.raises(ValueError, match="raw, excess, sector_resid, rank"):
        training_labels(HORIZONS, "label_end")


def test_dropped_groups_leave_the_panel_and_the_rest_stays_in_order(tiny_dataset):
    manifest = DatasetFolder(tiny_dataset).manifest
    cfg = tiny_cfg("features.drop_groups=[volume_liquidity,sector]")
    run = load_run_data(cfg, DatasetFolder(tiny_dataset), say=lambda s: None)
    dropped = set(manifest["features"]["volume_liquidity"]) | set(manifest["features"]["sector"])
    expected = [n for n in manifest["model_features"] if n not in dropped]
    assert run.panel.feature_names == expected
    assert 0 < len(expected) < len(manifest["model_features"])
    # the kept columns hold the same values as in the full panel
    full = load_run_data(tiny_cfg(), DatasetFolder(tiny_dataset), say=lambda s: None).panel
    cols = [full.feature_names.index(n) for n in expected]
    np.testing.assert_array_equal(run.panel.x, full.x[:, :, cols])


def test_unknown_group_is_named_with_the_groups_there_are(tiny_dataset):
    with pytest.raises(DatasetError, match=r"'volumes'.*volume_liquidity"):
        load_run_data(
            tiny_cfg("features.drop_groups=[volumes]"), DatasetFolder(tiny_dataset), say=lambda s: None
        )
