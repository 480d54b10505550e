"""Quality probe: what the gap between the models and the synthetic oracle is made of.

The oracle is the sum of four planted signals (docs/synthetic.md): short-term reversal, medium-term
momentum, a volume-shock premium and a lead-lag term along the hidden graph. On the test segment of a
comparison on the demo market this measures, at 5 days:

1. ``ceiling``: the test RankIC of the oracle, of the oracle without each signal, and of each signal alone
   (how much each signal is worth);
2. ``capture``: each model's mean daily rank correlation with each signal, beside the oracle's own (how much
   of each signal a model's forecast carries; a model that found a signal fully would match the oracle);
3. ``information``: the linear probe (ridge on the last day's features and their graph-neighbour means,
   ``bench_linear_probe.py``) with each true signal added as one more input. What a signal adds to the probe
   is the part of it that the features do not carry at all: no model on these inputs can find that part.

Usage: ``.venv/bin/python benchmarks/bench_oracle_gap.py --raw RAW --dataset DATA --compare CMP`` with the
raw store and dataset of the demo market and an ``atft compare`` folder on them (``bench_compare.py --only
synth``); writes ``results/oracle_gap.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
from bench_linear_probe import neighbour_means
from harness import save_result

from atft.config import load_config
from atft.data.splits import splits_from_config
from atft.data.synthetic import SynthParams, synthesize
from atft.evaluation.ensemble import average_forecasts
from atft.evaluation.metrics import mean_daily_rank_ic
from atft.features.dataset import DatasetFolder
from atft.features.panel import DayPanel
from atft.models.graph import DayGraphBuilder
from atft.training.run_folder import RunFolder
from atft.workflow.baselines import BASELINES
from atft.workflow.run_data import load_run_data

H = 5
PARTS = ("reversal", "momentum", "volume", "lead_lag")


def long_frame(grid: np.ndarray, dates: list, codes: list, name: str) -> pl.DataFrame:
    """A [T, N] array as (date, code, name) rows."""
    t, n = grid.shape
    return pl.DataFrame({
        "date": pl.Series(np.repeat(np.array(dates, dtype="datetime64[D]"), n)).cast(pl.Date),
        "code": np.tile(np.array(codes), t), name: grid.ravel(),
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--compare", type=Path, required=True)
    args = ap.parse_args()
    params = json.loads((args.raw / "manifest.json").read_text())["source"]["params"]
    params["start"] = np.datetime64(params["start"]).astype(object)
    market = synthesize(SynthParams(**params), keep_shocks=True)
    dates = sorted(market.oracle["date"].unique().to_list())
    codes = sorted(market.oracle["code"].unique().to_list())
    parts = market.oracle_parts(H)

    runs = sorted((args.compare / "runs").glob("atft-s*-f0"))
    test = {name: RunFolder(run).read_predictions("test").filter(pl.col("horizon") == H) for name, run in
            ((run.name.split("-")[1], run) for run in runs)}  # fmt: skip
    keys = next(iter(test.values())).select("date", "code", "label")
    frame = keys
    for name, grid in parts.items():
        frame = frame.join(long_frame(grid, dates, codes, name), on=["date", "code"], how="left")
    frame = frame.with_columns(oracle=sum(pl.col(p) for p in PARTS))

    # 1. what each signal is worth
    ceiling = {"oracle": mean_daily_rank_ic(frame, "oracle", "label")}
    for p in PARTS:
        frame = frame.with_columns((pl.col("oracle") - pl.col(p)).alias("without"))
        ceiling[f"without {p}"] = mean_daily_rank_ic(frame, "without", "label")
        ceiling[f"{p} alone"] = mean_daily_rank_ic(frame, p, "label")
    print("ceiling", json.dumps({k: round(v, 4) for k, v in ceiling.items()}), flush=True)

    # 2. how much of each signal the forecasts carry
    cfg = RunFolder(runs[0]).read_config()
    dataset = DatasetFolder(args.dataset)
    run_data = load_run_data(cfg, dataset, fold=0)
    ridge_graph = BASELINES["ridge_graph"](cfg.train.seed).fit(run_data).predict(run_data, "test")
    forecasts = {f"atft {name}": preds for name, preds in test.items()}
    forecasts["atft ensemble"] = average_forecasts(list(test.values()))
    forecasts["ridge_graph"] = ridge_graph.filter(pl.col("horizon") == H)
    capture: dict[str, dict[str, float]] = {}
    for model, preds in {"oracle": None, **forecasts}.items():
        scored = (
            frame
            if preds is None
            else frame.join(
                preds.select("date", "code", pl.col("prediction").alias("forecast")), on=["date", "code"]
            )
        )
        column = "oracle" if preds is None else "forecast"
        capture[model] = {p: mean_daily_rank_ic(scored, column, p) for p in PARTS}
        capture[model]["label"] = mean_daily_rank_ic(scored, column, "label")
        print(model, json.dumps({k: round(v, 3) for k, v in capture[model].items()}), flush=True)

    # 3. what the features do not carry: the linear probe with each true signal added
    panel = DayPanel.load(dataset, labels=[f"target_{H}d"])
    split = splits_from_config(dataset.calendar(), load_config().cfg)[-1]
    graph = DayGraphBuilder(panel.x, panel.feature_names, panel.sector_id, load_config().cfg.model.graph,
                            market_id=dataset.market_ids(), cache_days=0)  # fmt: skip
    segments = {name: split.indices(name) for name in ("train", "test")}
    own = np.nan_to_num(panel.x)
    near = neighbour_means(panel, graph, np.concatenate(list(segments.values())))
    stock = np.searchsorted(np.array(codes), panel.codes)
    day = np.searchsorted(np.array(dates, dtype="datetime64[D]"), panel.dates.astype("datetime64[D]"))
    information = {}
    for added in (None, *PARTS):
        blocks = [own, near]
        if added is not None:
            grid = parts[added][day][:, stock].T  # [S, D]
            blocks.append((grid / np.nanstd(grid))[..., None].astype(np.float32))
        x = np.concatenate(blocks, axis=-1)
        d = segments["train"]
        y = panel.y[:, d, 0] - np.nanmean(panel.y[:, d, 0], axis=0, keepdims=True)
        ok = np.isfinite(y) & np.isfinite(panel.x[:, d, 0])
        a, b = x[:, d][ok].astype(np.float64), y[ok]
        w = np.linalg.solve(a.T @ a + 100.0 * np.eye(a.shape[1]), a.T @ b)
        d = segments["test"]
        scored = pl.DataFrame({
            "date": np.repeat(d[None], panel.shape[0], 0).ravel(), "pred": (x[:, d] @ w).ravel(),
            "label": panel.y[:, d, 0].ravel(), "listed": np.isfinite(panel.x[:, d, 0]).ravel(),
        }).filter(pl.col("listed") & pl.col("label").is_not_nan())  # fmt: skip
        name = "probe" if added is None else f"probe + true {added}"
        information[name] = mean_daily_rank_ic(scored, "pred", "label")
        print(name, round(information[name], 4), flush=True)

    save_result("oracle_gap", {
        "dataset": str(args.dataset), "compare": str(args.compare), "horizon": H,
        "test_days": [str(keys["date"].min()), str(keys["date"].max())],
        "ceiling_rankic": {k: round(v, 4) for k, v in ceiling.items()},
        "capture_rank_corr": {m: {k: round(v, 3) for k, v in c.items()} for m, c in capture.items()},
        "information_rankic": {k: round(v, 4) for k, v in information.items()},
    })  # fmt: skip


if __name__ == "__main__":
    main()
