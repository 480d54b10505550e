"""Baselines fitted on a run's data and scored on exactly the rows ATFT-GAT-FAN forecasts.

Every baseline reads the (date, code) stock-days that the run's day loader serves for a segment
(``DayDataset.day_index`` / ``day_ptr`` / ``stock_idx``), the features of the window's last day
(``panel.x[stock, day]``) and the labels its ``label_mask`` allows, and returns the long predictions frame of
``atft.training.module.predictions_frame``: the columns, dtypes, row order, rows and labels of
``predictions/<split>.parquet``, without the quantile columns (a baseline makes no quantile forecast). So a
baseline's frame and the model's can be scored side by side by ``atft.evaluation``. See ``docs/baselines.md``.

``BASELINES`` maps each name (``ridge``, ``ridge_graph``, ``lgbm``, ``momentum``, ``reversal``, ``random``,
``oracle``) to a factory taking a seed; each baseline has ``name``, ``fit(run)`` and ``predict(run, split)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl
import torch

from atft.config.schema import GraphConfig
from atft.models.atft_gat_fan import neighbour_mean
from atft.models.baselines import LightGBMRegressor, RandomBaseline, Ridge, RuleBaseline
from atft.models.graph import DayGraphBuilder
from atft.training.module import predictions_frame
from atft.workflow.run_data import RunData

RIDGE_ALPHA = (
    100.0  # on standardized features and ~10^5 rows: a light touch, as in benchmarks/bench_linear_probe.py
)


class Baseline(Protocol):
    """What ``atft compare`` needs of a baseline."""

    name: str

    @property
    def n_parameters(self) -> int: ...

    def fit(self, run: RunData) -> Baseline: ...

    def predict(self, run: RunData, split: str) -> pl.DataFrame: ...


# ---- the rows of a segment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRows:
    """The stock-days a segment's day loader serves, in its order (day, then stock): one entry per row.

    ``day`` int64 [n] calendar index, ``stock`` int64 [n] panel row, ``y`` float32 [n, H] (NaN where the
    segment's label mask hides the label), ``y_mask`` bool [n, H], ``day_ptr`` int64 [days + 1]: the rows
    of the segment's i-th day are ``day_ptr[i]:day_ptr[i + 1]``.
    """

    day: np.ndarray
    stock: np.ndarray
    y: np.ndarray
    y_mask: np.ndarray
    day_ptr: np.ndarray

    def __len__(self) -> int:
        return len(self.day)


def segment_rows(run: RunData, split: str) -> SegmentRows:
    """The rows of ``split`` exactly as ``DayDataset`` serves them to ATFT-GAT-FAN (vectorized gathers); its labels
    are the segment's own (the training segment's follow ``data.target``)."""
    if split not in run.data.datasets:
        raise ValueError(
            f"the run has no {split!r} segment (it has: {', '.join(run.data.datasets) or 'none'}); "
            f"call DayDataModule.setup() with a {split} date range"
        )
    ds = run.data.datasets[split]
    counts = np.diff(ds.day_ptr)
    day = np.repeat(ds.day_index, counts).astype(np.int64)  # [n]
    local_day = np.repeat(np.arange(len(ds)), counts)  # [n] the segment's own day number
    stock = ds.stock_idx.astype(np.int64)
    y_mask = ds.label_mask[local_day, stock]  # [n, H]
    y = np.where(y_mask, ds.panel.y[stock, day], np.float32(np.nan)).astype(np.float32)
    return SegmentRows(day, stock, y, y_mask, np.asarray(ds.day_ptr, dtype=np.int64))


def last_day_features(run: RunData, rows: SegmentRows) -> np.ndarray:
    """float32 [n, F]: every feature of the last day of each row's window (``panel.x[stock, day]``)."""
    return run.panel.x[rows.stock, rows.day]


def day_demeaned(y: np.ndarray, day_ptr: np.ndarray) -> np.ndarray:
    """``y`` [n, H] minus each day's mean of its finite labels (NaN stays NaN), in float64.

    Only the ranking within a day is scored; the day's common move is noise to a per-stock model.
    """
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return y
    seen = np.isfinite(y)
    counts = np.diff(day_ptr)
    starts = day_ptr[:-1][counts > 0]
    sums = np.add.reduceat(np.where(seen, y, 0.0), starts, axis=0)  # [days, H]
    n = np.add.reduceat(seen.astype(np.float64), starts, axis=0)
    means = sums / np.maximum(n, 1.0)
    return y - np.repeat(means, counts[counts > 0], axis=0)


def feature_column(run: RunData, feature: str, baseline: str) -> int:
    """Position of ``feature`` in the run's panel, or a ValueError naming the feature and the dataset."""
    if feature not in run.panel.feature_names:
        raise ValueError(
            f"the {baseline} baseline needs the feature {feature!r}, which the panel of the dataset "
            f"{run.dataset.root} does not have (its model features are listed in its manifest.json)"
        )
    return run.panel.feature_names.index(feature)


def baseline_frame(run: RunData, rows: SegmentRows, prediction: np.ndarray) -> pl.DataFrame:
    """The predictions frame of ``prediction`` [n, H] on ``rows``: ATFT's own frame builder, no quantiles."""
    prediction = np.asarray(prediction, dtype=np.float32)
    if prediction.shape != rows.y.shape:
        raise ValueError(f"prediction has shape {prediction.shape}, the rows need {rows.y.shape}")
    part = {
        "point": prediction,
        "quantiles": np.empty((len(rows), prediction.shape[1], 0), dtype=np.float32),
        "y": np.where(rows.y_mask, rows.y, np.float32(0)),  # as the loader serves it: 0 where masked
        "y_mask": rows.y_mask,
        "stock": rows.stock,
        "day": rows.day,
    }
    return predictions_frame([part], run.panel, run.panel.horizons, [])


# ---- the graph inputs --------------------------------------------------------------------------------------


def run_graph(run: RunData) -> DayGraphBuilder:
    """The run's day graph; the default correlation graph (``GraphConfig()``) when the run has none."""
    graph = getattr(run.data, "graph", None)
    if graph is not None:
        return graph
    return DayGraphBuilder(
        run.panel.x,
        run.panel.feature_names,
        run.panel.sector_id,
        GraphConfig(),
        market_id=run.dataset.market_ids(),
        cache_days=0,
    )


def graph_neighbour_means(
    x: np.ndarray, rows: SegmentRows, graph: Callable[[int, np.ndarray], tuple[torch.Tensor, torch.Tensor]]
) -> np.ndarray:
    """float32 [n, F]: per row, the |corr|-weighted mean of ``x`` over its neighbours in the day's graph.

    The graph of each day is built over that day's rows (the stocks the loader serves that day, as in
    training) and averaged with the model's own ``neighbour_mean``; a row without neighbours gets 0.
    One graph per day: the loop runs over days, each vectorized over its stocks and edges.
    """
    out = np.zeros(x.shape, dtype=np.float32)
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    threads = torch.get_num_threads()
    # Each day's tensors are small: on busy cores, torch's thread pool only waits on itself (40x slower).
    torch.set_num_threads(1)
    try:
        for i in range(len(rows.day_ptr) - 1):
            a, b = int(rows.day_ptr[i]), int(rows.day_ptr[i + 1])
            if b - a < 2:
                continue
            edge_index, edge_attr = graph(int(rows.day[a]), rows.stock[a:b])
            if edge_index.shape[1] == 0:
                continue
            day_x = torch.from_numpy(x[a:b])
            out[a:b] = neighbour_mean(day_x, edge_index, edge_attr[:, 0].abs()).numpy()
    finally:
        torch.set_num_threads(threads)
    return out


# ---- the baselines -----------------------------------------------------------------------------------------


class RidgeLastDay:
    """Ridge regression (``atft.models.baselines.Ridge``) on the last day's features.

    Fitted on the training segment's rows and their day-demeaned labels (each horizon on its own labelled
    rows); one linear forecast per horizon.
    """

    name = "ridge"

    def __init__(self, alpha: float = RIDGE_ALPHA) -> None:
        self.model = Ridge(alpha)

    @property
    def n_parameters(self) -> int:
        return self.model.n_parameters

    def inputs(self, run: RunData, rows: SegmentRows) -> np.ndarray:
        return last_day_features(run, rows)

    def fit(self, run: RunData) -> RidgeLastDay:
        rows = segment_rows(run, "train")
        self.model.fit(self.inputs(run, rows), day_demeaned(rows.y, rows.day_ptr))
        return self

    def predict(self, run: RunData, split: str) -> pl.DataFrame:
        rows = segment_rows(run, split)
        return baseline_frame(run, rows, self.model.predict(self.inputs(run, rows)))


class RidgeGraph(RidgeLastDay):
    """Ridge on the last day's features and their |corr|-weighted mean over the stock's graph neighbours.

    The neighbours come from the run's day graph (the one the GAT attends over), or from the default
    correlation graph when the run's config switches the graph off: the baseline defines its own inputs.
    This is the linear model of ATFT-GAT-FAN's feature shortcut: what a cross-stock linear model finds.
    """

    name = "ridge_graph"

    def inputs(self, run: RunData, rows: SegmentRows) -> np.ndarray:
        x = last_day_features(run, rows)
        return np.concatenate([x, graph_neighbour_means(x, rows, run_graph(run))], axis=1)


class LightGBMLastDay:
    """LightGBM (``atft.models.baselines.LightGBMRegressor``) on the last day's features.

    One model per horizon, fitted on the training rows' day-demeaned labels and early-stopped on the
    validation segment's rows (l2 on their day-demeaned labels); deterministic for a seed.
    """

    name = "lgbm"

    def __init__(self, seed: int = 0, **params: float) -> None:
        self.model = LightGBMRegressor(seed=seed, **params)

    @property
    def n_parameters(self) -> int:
        return self.model.n_parameters

    def fit(self, run: RunData) -> LightGBMLastDay:
        train, valid = segment_rows(run, "train"), segment_rows(run, "valid")
        if not len(valid):
            raise ValueError(f"the valid segment of {run.dataset.root} has no rows to early-stop LightGBM on")
        self.model.fit(
            last_day_features(run, train),
            day_demeaned(train.y, train.day_ptr),
            last_day_features(run, valid),
            day_demeaned(valid.y, valid.day_ptr),
        )
        return self

    def predict(self, run: RunData, split: str) -> pl.DataFrame:
        rows = segment_rows(run, split)
        return baseline_frame(run, rows, self.model.predict(last_day_features(run, rows)))


class _Rule:
    """A signed feature of the last day, the same forecast for every horizon; nothing is fitted."""

    name: str
    feature: str
    sign: float
    n_parameters = 0

    def fit(self, run: RunData) -> _Rule:
        feature_column(run, self.feature, self.name)  # fails early on a dataset without the feature
        return self

    def predict(self, run: RunData, split: str) -> pl.DataFrame:
        rule = RuleBaseline(feature_column(run, self.feature, self.name), self.sign, len(run.panel.horizons))
        rows = segment_rows(run, split)
        return baseline_frame(run, rows, rule.predict(last_day_features(run, rows)))


class Momentum(_Rule):
    """Medium-term momentum: the stock's 20-day return (``ret_20d``) of the last day, for every horizon."""

    name, feature, sign = "momentum", "ret_20d", 1.0


class Reversal(_Rule):
    """Short-term reversal: minus the stock's 5-day return (``ret_5d``) of the last day, for every horizon."""

    name, feature, sign = "reversal", "ret_5d", -1.0


class RandomRanker:
    """Standard-normal forecasts, reproducible for a seed: the floor (RankIC 0 up to noise)."""

    name = "random"
    n_parameters = 0

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def fit(self, run: RunData) -> RandomRanker:
        return self

    def predict(self, run: RunData, split: str) -> pl.DataFrame:
        rows = segment_rows(run, split)
        model = RandomBaseline(self.seed, len(run.panel.horizons))
        return baseline_frame(run, rows, model.predict(np.empty((len(rows), 0))))


class Oracle:
    """The synthetic market's true expected returns (``oracle_<h>d`` of ``oracle.parquet``) on the same rows.

    The ceiling: no model can do better on average. Only synthetic datasets have an oracle; a real dataset
    is refused with a ValueError. A row the oracle does not cover gets NaN.
    """

    name = "oracle"
    n_parameters = 0

    def _oracle(self, run: RunData) -> pl.DataFrame:
        oracle = run.dataset.oracle()
        if oracle is None:
            raise ValueError(
                f"the oracle baseline needs a synthetic dataset: {run.dataset.root} has no oracle.parquet "
                f"(a real market's expected returns are unknown)"
            )
        missing = [f"oracle_{h}d" for h in run.panel.horizons if f"oracle_{h}d" not in oracle.columns]
        if missing:
            raise ValueError(f"{run.dataset.path('oracle')} has no column {', '.join(missing)}")
        return oracle

    def fit(self, run: RunData) -> Oracle:
        self._oracle(run)
        return self

    def predict(self, run: RunData, split: str) -> pl.DataFrame:
        oracle = self._oracle(run)
        rows = segment_rows(run, split)
        columns = [f"oracle_{h}d" for h in run.panel.horizons]
        keys = pl.DataFrame({"date": run.panel.dates[rows.day], "code": run.panel.codes[rows.stock]})
        joined = keys.join(
            oracle.select("date", "code", *columns), on=["date", "code"], how="left", maintain_order="left"
        )
        values = joined.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns).to_numpy()
        return baseline_frame(run, rows, values)


BASELINES: dict[str, Callable[[int], Baseline]] = {
    "ridge": lambda seed: RidgeLastDay(),
    "ridge_graph": lambda seed: RidgeGraph(),
    "lgbm": lambda seed: LightGBMLastDay(seed=seed),
    "momentum": lambda seed: Momentum(),
    "reversal": lambda seed: Reversal(),
    "random": lambda seed: RandomRanker(seed),
    "oracle": lambda seed: Oracle(),
}
