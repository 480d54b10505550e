"""Quality probe: how much of the 1- and 5-day signal a linear model finds in the features, alone and with
the graph neighbours' features beside them.

Ridge regression (alpha 100, on day-demeaned labels) fitted on the training segment of the last walk-forward
fold, scored by mean daily RankIC on validation and test. ``own``: the 94 features of the last day.
``own + neighbours``: also the correlation-weighted mean of the same features over the stock's neighbours in
the default day graph (the graph the GAT attends over). The gap between the two is what a cross-stock model
can gain; the model's own score is in ``results/quality.json``.
Usage: ``.venv/bin/python benchmarks/bench_linear_probe.py --dataset DIR`` (a built synthetic dataset).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from harness import save_result

from atft.config import load_config
from atft.data.splits import splits_from_config
from atft.evaluation.metrics import mean_daily_rank_ic
from atft.features.dataset import DatasetFolder
from atft.features.panel import DayPanel
from atft.models.atft_gat_fan import neighbour_mean
from atft.models.graph import DayGraphBuilder

HORIZONS = (1, 5)
ALPHA = 100.0


def neighbour_means(panel: DayPanel, graph: DayGraphBuilder, days: np.ndarray) -> np.ndarray:
    """[S, D, F]: on each of ``days``, the |corr|-weighted mean of each stock's neighbours' features, as the
    model's shortcut computes it (``neighbour_mean``)."""
    x = np.nan_to_num(panel.x)
    out = np.zeros_like(x)
    for d in days:  # one graph per day; each day is vectorized over its stocks and edges
        stocks = np.flatnonzero(np.isfinite(panel.x[:, d, 0]))
        if stocks.size < 2:
            continue
        edge_index, edge_attr = graph(int(d), stocks)
        day = torch.from_numpy(x[stocks, d])
        out[stocks, d] = neighbour_mean(day, edge_index, edge_attr[:, 0].abs()).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, required=True)
    args = ap.parse_args()
    cfg = load_config().cfg
    dataset = DatasetFolder(args.dataset)
    panel = DayPanel.load(dataset, labels=[f"target_{h}d" for h in HORIZONS])
    split = splits_from_config(dataset.calendar(), cfg)[-1]
    graph = DayGraphBuilder(
        panel.x,
        panel.feature_names,
        panel.sector_id,
        cfg.model.graph,
        market_id=dataset.market_ids(),
        cache_days=0,
    )
    segments = {name: split.indices(name) for name in ("train", "valid", "test")}
    started = time.time()
    neighbours = neighbour_means(panel, graph, np.concatenate(list(segments.values())))
    graph_seconds = time.time() - started
    own = np.nan_to_num(panel.x)
    results: dict[str, dict[str, float]] = {}
    for name, blocks in (("own", [own]), ("own + neighbours", [own, neighbours])):
        x = np.concatenate(blocks, axis=-1)  # [S, D, F or 2F]
        for j, h in enumerate(HORIZONS):
            days = segments["train"]
            y = panel.y[:, days, j]
            y = y - np.nanmean(y, axis=0, keepdims=True)  # only the ranking within a day matters
            ok = np.isfinite(y) & np.isfinite(panel.x[:, days, 0])
            a, b = x[:, days][ok], y[ok]
            w = np.linalg.solve(a.T @ a + ALPHA * np.eye(a.shape[1]), a.T @ b)
            for segment in ("valid", "test"):
                days = segments[segment]
                frame = pl.DataFrame(
                    {
                        "date": np.repeat(days[None], panel.shape[0], 0).ravel(),
                        "pred": (x[:, days] @ w).ravel(),
                        "label": panel.y[:, days, j].ravel(),
                        "listed": np.isfinite(panel.x[:, days, 0]).ravel(),
                    }
                ).filter(pl.col("listed") & pl.col("label").is_not_nan())
                score = mean_daily_rank_ic(frame, "pred", "label")
                results.setdefault(name, {})[f"{segment}_rankic_{h}d"] = round(score, 4)
                print(f"{name:18s} {segment:5s} {h}d RankIC {score:.4f}", flush=True)
    save_result(
        "linear_probe",
        {
            "dataset": str(args.dataset),
            "model": f"ridge alpha {ALPHA:g} on the last day's features, day-demeaned labels",
            "graph": "default model.graph (correlation, |corr|-weighted neighbour means)",
            "graph_seconds": round(graph_seconds, 1),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
