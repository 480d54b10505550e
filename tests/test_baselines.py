"""Baselines: the estimators against slow references, and the adapters' row contract against a real tiny run."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil

import numpy as np
import polars as pl
import pytest
from test_training import tiny_cfg

from atft.evaluation.evaluate import evaluate_predictions
from atft.evaluation.metrics import horizon_metrics
from atft.features.dataset import DatasetFolder
from atft.models.baselines import LightGBMRegressor, RandomBaseline, Ridge, RuleBaseline
from atft.training.run_folder import RunFolder
from atft.workflow.baselines import (
    BASELINES,
    Oracle,
    SegmentRows,
    graph_neighbour_means,
    run_graph,
    segment_rows,
)
from atft.workflow.run_data import load_run_data
from atft.workflow.train import train_run

# --------------------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------------------


def _standardized(x: np.ndarray) -> np.ndarray:
    """The slow reference: per column, (x - mean) / std over the finite values, NaN -> 0."""
    z = np.empty_like(x)
    for j in range(x.shape[1]):
        seen = x[np.isfinite(x[:, j]), j]
        z[:, j] = (x[:, j] - seen.mean()) / seen.std()
    return np.where(np.isfinite(z), z, 0.0)


def test_ridge_equals_lstsq_on_the_augmented_system():
    rng = np.random.default_rng(0)
    n, f, alpha = 300, 6, 7.5
    x = rng.normal(size=(n, f)) * rng.uniform(0.1, 10, f) + rng.normal(size=f) * 3
    x[rng.random((n, f)) < 0.05] = np.nan  # missing inputs
    y = x[:, :3] @ rng.normal(size=(3, 3))
    y = np.nan_to_num(y) + rng.normal(size=(n, 3)) + np.array([1.0, -2.0, 0.5])
    y[rng.random((n, 3)) < np.array([0.0, 0.3, 0.6])] = np.nan  # each horizon its own missing labels

    model = Ridge(alpha).fit(x, y)
    z = _standardized(x)
    for j in range(3):
        rows = np.isfinite(y[:, j])
        a = np.block([[z[rows], np.ones((rows.sum(), 1))], [math.sqrt(alpha) * np.eye(f), np.zeros((f, 1))]])
        b = np.concatenate([y[rows, j], np.zeros(f)])
        solution = np.linalg.lstsq(a, b, rcond=None)[0]
        np.testing.assert_allclose(model.coef_[:, j], solution[:f], atol=1e-8, rtol=0)
        np.testing.assert_allclose(model.intercept_[j], solution[f], atol=1e-8, rtol=0)
        np.testing.assert_allclose(model.predict(x)[:, j], z @ solution[:f] + solution[f], atol=1e-8, rtol=0)


def test_ridge_fits_each_horizon_on_its_own_labelled_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    y = np.stack([x @ [1.0, 0, 0, 0], x @ [0, 1.0, 0, 0], np.full(200, np.nan)], axis=1)
    y[:120, 1] = np.nan  # horizon 2 has labels only on the last 80 rows
    both = Ridge(1.0).fit(x, y)
    alone = Ridge(1.0).fit(x, y[:, :1])
    # the NaN labels of the other horizons change nothing in this one
    np.testing.assert_allclose(both.coef_[:, 0], alone.coef_[:, 0], atol=1e-12)
    assert np.argmax(np.abs(both.coef_[:, 1])) == 1  # learned from its 80 rows
    prediction = both.predict(x)
    assert np.isfinite(prediction).all() and prediction.shape == (200, 3)
    assert (prediction[:, 2] == 0).all()  # no label at all: a zero forecast, not NaN


def test_lightgbm_early_stops_on_validation_and_is_deterministic():
    rng = np.random.default_rng(2)
    # pure noise: the validation l2 stops improving after a few rounds
    x, y = rng.normal(size=(3000, 5)), rng.normal(size=(3000, 2))
    xv, yv = rng.normal(size=(1000, 5)), rng.normal(size=(1000, 2))
    first = LightGBMRegressor(seed=3).fit(x, y, xv, yv)
    assert all(0 < it < 500 for it in first.best_iterations_), first.best_iterations_
    assert all(b.current_iteration() < 500 for b in first.boosters_)  # it stopped, it did not run to the end
    second = LightGBMRegressor(seed=3).fit(x, y, xv, yv)
    np.testing.assert_array_equal(first.predict(xv), second.predict(xv))


def test_rule_and_random_estimators():
    x = np.arange(12.0).reshape(4, 3)
    y = np.zeros((4, 2))
    np.testing.assert_array_equal(RuleBaseline(1, -1).fit(x, y).predict(x), -np.repeat(x[:, [1]], 2, 1))
    first = RandomBaseline(5).fit(x, y).predict(x)
    assert first.shape == (4, 2)
    np.testing.assert_array_equal(first, RandomBaseline(5).fit(x, y).predict(x))
    assert not np.array_equal(first, RandomBaseline(6).fit(x, y).predict(x))


# --------------------------------------------------------------------------------------------------
# The adapters, on a real tiny run
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A trained tiny run's test predictions and the run's data, assembled the way training assembled it."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(
        tiny_cfg("train.scheduler.warmup_epochs=0", epochs=1),
        tiny_dataset,
        run_dir,
        say=lambda s: None,
        progress_bar=False,
    )
    folder = RunFolder(run_dir)
    run = load_run_data(folder.read_config(), DatasetFolder(tiny_dataset), say=lambda s: None)
    return run, folder.read_predictions("test")


@pytest.fixture(scope="module")
def fitted(tiny_run):
    run, _ = tiny_run
    return {name: factory(0).fit(run) for name, factory in BASELINES.items()}


KEYS = ["date", "code", "horizon", "label"]


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_frame_has_atft_rows_labels_and_dtypes(tiny_run, fitted, name):
    run, atft = tiny_run
    frame = fitted[name].predict(run, "test")
    assert fitted[name].name == name
    quantiles = [c for c in atft.columns if c.startswith("q")]
    assert quantiles and frame.columns == [c for c in atft.columns if c not in quantiles]
    assert frame.schema == pl.Schema({c: atft.schema[c] for c in frame.columns})
    # the same rows, in the same order, with the same labels (null, never 0, where masked)
    assert frame.select(KEYS).equals(atft.select(KEYS))
    assert frame["label"].null_count() == atft["label"].null_count()
    assert frame["prediction"].null_count() == 0
    if name != "oracle":
        assert frame["prediction"].is_finite().all()
    f, h = len(run.panel.feature_names), len(run.panel.horizons)
    expected = {"ridge": (f + 1) * h, "ridge_graph": (2 * f + 1) * h}.get(name, 0)
    if name == "lgbm":
        assert fitted[name].n_parameters > 0
    else:
        assert fitted[name].n_parameters == expected
    # the evaluation accepts it without quantiles
    metrics = horizon_metrics(frame)
    assert math.isfinite(metrics["rankic_5d"])
    evaluate_predictions(frame, oracle=run.dataset.oracle())


def test_baselines_predict_every_segment(tiny_run, fitted):
    run, _ = tiny_run
    for split in ("train", "valid"):
        rows = segment_rows(run, split)
        frame = fitted["ridge"].predict(run, split)
        assert frame.height == len(rows) * len(run.panel.horizons)
    with pytest.raises(ValueError, match="no 'holdout' segment"):
        fitted["ridge"].predict(run, "holdout")


def test_linear_baselines_find_the_planted_signal(tiny_run, fitted):
    run, _ = tiny_run
    for name in ("ridge", "ridge_graph", "oracle"):  # lgbm needs more than 6,000 training rows
        assert horizon_metrics(fitted[name].predict(run, "valid"))["rankic_5d"] > 0.0, name


@pytest.mark.parametrize(
    ("name", "feature", "sign"), [("momentum", "ret_20d", 1.0), ("reversal", "ret_5d", -1.0)]
)
def test_rules_equal_the_signed_feature(tiny_run, fitted, name, feature, sign):
    run, _ = tiny_run
    frame = fitted[name].predict(run, "test")
    features = run.dataset.read("features", ["date", "code", feature])
    joined = frame.join(features, on=["date", "code"], how="left")
    assert joined[feature].null_count() == 0
    np.testing.assert_array_equal(
        joined["prediction"].to_numpy(), (sign * joined[feature].cast(pl.Float32)).to_numpy()
    )


def test_random_is_reproducible_per_seed(tiny_run):
    run, _ = tiny_run
    first = BASELINES["random"](1).fit(run).predict(run, "test")
    assert first.equals(BASELINES["random"](1).fit(run).predict(run, "test"))
    assert not first.equals(BASELINES["random"](2).fit(run).predict(run, "test"))


def test_oracle_equals_oracle_parquet_on_the_rows(tiny_run, fitted):
    run, _ = tiny_run
    frame = fitted["oracle"].predict(run, "test")
    oracle = run.dataset.oracle()
    for h in run.panel.horizons:
        rows = frame.filter(pl.col("horizon") == h).join(oracle, on=["date", "code"], how="left")
        expected = rows[f"oracle_{h}d"].cast(pl.Float32).fill_null(float("nan"))
        np.testing.assert_array_equal(rows["prediction"].to_numpy(), expected.to_numpy())
    assert frame["prediction"].is_finite().all()  # the synthetic oracle covers every served row


def test_oracle_refuses_a_real_dataset(tiny_run, tmp_path):
    run, _ = tiny_run
    for table in ("features", "labels", "stocks"):  # the dataset without oracle.parquet: a real market's
        shutil.copy(run.dataset.path(table), tmp_path / f"{table}.parquet")
    shutil.copy(run.dataset.root / "manifest.json", tmp_path / "manifest.json")
    real = dataclasses.replace(run, dataset=DatasetFolder(tmp_path))
    with pytest.raises(ValueError, match="needs a synthetic dataset"):
        Oracle().fit(real)
    with pytest.raises(ValueError, match="needs a synthetic dataset"):
        Oracle().predict(real, "test")


def test_missing_feature_names_the_feature_and_the_dataset(tiny_run):
    run, _ = tiny_run
    panel = copy.copy(run.panel)
    panel.feature_names = [("other" if n == "ret_20d" else n) for n in run.panel.feature_names]
    without = dataclasses.replace(run, panel=panel)
    with pytest.raises(ValueError, match=rf"'ret_20d'.*{run.dataset.root}"):
        BASELINES["momentum"](0).fit(without)


def test_graph_neighbour_mean_equals_a_per_edge_loop(tiny_run):
    run, _ = tiny_run
    rows = segment_rows(run, "test")
    graph = run_graph(run)
    a, b = int(rows.day_ptr[0]), int(rows.day_ptr[1])  # the first test day
    day = SegmentRows(rows.day[a:b], rows.stock[a:b], rows.y[a:b], rows.y_mask[a:b], np.array([0, b - a]))
    x = run.panel.x[day.stock, day.day]
    fast = graph_neighbour_means(x, day, graph)

    edge_index, edge_attr = graph(int(day.day[0]), day.stock)
    assert edge_index.shape[1] > 0
    total, norm = np.zeros(x.shape, np.float64), np.zeros(len(x), np.float64)
    for (src, dst), attr in zip(edge_index.T.tolist(), edge_attr.tolist(), strict=True):
        total[dst] += abs(attr[0]) * x[src]
        norm[dst] += abs(attr[0])
    slow = total / np.maximum(norm, 1e-6)[:, None]
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


def test_graph_is_built_when_the_run_has_none(tiny_run):
    run, _ = tiny_run
    data = copy.copy(run.data)
    data.graph = None
    graph = run_graph(dataclasses.replace(run, data=data))
    assert graph is not run.data.graph and graph.mode == "correlation"
