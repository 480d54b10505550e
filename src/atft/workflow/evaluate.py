"""Evaluating a finished run folder: forecast a segment with the run's best checkpoint and score it
(``evaluate_run``, behind ``atft evaluate``), and trade its forecasts in a backtest (``backtest_run``,
behind ``atft backtest``). Both read only the run folder and the dataset it was trained on, through their
owners ``RunFolder`` and ``DatasetFolder``; what they write is listed in ``atft.training.run_folder``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from atft.config import ATFTConfig
from atft.evaluation.backtest import BacktestResult, backtest
from atft.evaluation.evaluate import EvaluationResult, evaluate_predictions
from atft.features.dataset import DatasetFolder
from atft.training.module import ForecastModule, predict_frame
from atft.training.run_folder import SPLITS, RunFolder
from atft.training.trainer import forecast_precision
from atft.workflow.run_data import load_run_data


def evaluate_run(
    run_dir: Path, *, split: str = "test", say: Callable[[str], None] = print
) -> tuple[EvaluationResult, Path]:
    """Forecast ``split`` with the run's best checkpoint, score it, and write the evaluation files."""
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = RunFolder(run_dir)
    folder.require_run()
    cfg, dataset = folder.read_config(), DatasetFolder(folder.data_path())
    checkpoint = folder.selected_checkpoint()
    folder.check_checkpoint(checkpoint)  # a damaged file is named before the panel is loaded
    run = load_run_data(cfg, dataset, fold=folder.fold(), say=say)
    if split not in run.data.datasets or not len(run.data.datasets[split]):
        raise ValueError(f"the {split} segment of {dataset.root} has no trading days to evaluate")
    say(f"forecasting the {split} segment with {checkpoint.name}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = ForecastModule.load_from_checkpoint(checkpoint, map_location=device)
    trained_on = list(module.hparams["feature_names"])
    if trained_on != run.panel.feature_names:
        changed = [f"{a}->{b}" for a, b in zip(trained_on, run.panel.feature_names, strict=False) if a != b][
            :3
        ]
        raise ValueError(
            f"{dataset.root} no longer has the features {checkpoint} was trained on ({len(trained_on)} then, "
            f"{len(run.panel.feature_names)} now; first differences: {changed or 'extra or missing at the end'}): "
            "was the dataset rebuilt? Evaluate on the dataset the run was trained on"
        )
    with forecast_precision(cfg.train.trainer, device):  # as training forecast: the same numbers
        preds = predict_frame(module, run.data.eval_dataloader(split), run.panel)
    say("scoring")
    return _score(folder, cfg, dataset, preds, split, checkpoint)


def score_training_forecasts(run_dir: Path, *, split: str = "test") -> tuple[EvaluationResult, Path]:
    """What ``evaluate_run`` writes, from the forecasts the best checkpoint made at the end of training
    (``predictions/<split>.parquet``): the same numbers without reloading the panel and forecasting again."""
    folder = RunFolder(run_dir)
    folder.require_run()
    cfg, dataset = folder.read_config(), DatasetFolder(folder.data_path())
    preds = folder.read_predictions(split)
    return _score(folder, cfg, dataset, preds, split, folder.selected_checkpoint())


def _score(
    folder: RunFolder,
    cfg: ATFTConfig,
    dataset: DatasetFolder,
    preds: pl.DataFrame,
    split: str,
    checkpoint: Path,
) -> tuple[EvaluationResult, Path]:
    result = evaluate_predictions(
        preds, oracle=dataset.oracle(), cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile
    )
    result.metrics["settings"] |= {"split": split, "checkpoint": str(checkpoint)}
    return result, folder.write_evaluation(result, preds, split)


def backtest_run(
    run_dir: Path,
    *,
    horizon: int = 5,
    strategy: str = "long_short",
    top_k: int | None = None,
    quantile: float | None = None,
    holding_days: int | None = None,
    cost_bps: float | None = None,
    split: str = "test",
) -> tuple[BacktestResult, Path]:
    """Trade one horizon's forecasts of ``split`` and write ``backtest/<strategy>_<h>d/``.

    Defaults: the run's ``eval.quantile`` when neither ``top_k`` nor ``quantile`` is given, a holding period
    of ``horizon`` days (staggered, so every day's forecast is traded once), and the run's ``eval.cost_bps``.
    """
    folder = RunFolder(run_dir)
    folder.require_run()
    cfg, dataset = folder.read_config(), DatasetFolder(folder.data_path())
    preds = folder.forecasts(split)
    available = sorted(preds["horizon"].unique().to_list())
    if horizon not in available:
        raise ValueError(f"--horizon {horizon}: the run forecasts horizons {available}")
    if top_k is None and quantile is None:
        quantile = float(cfg.eval.quantile)
    signals = preds.filter(pl.col("horizon") == horizon).select("date", "code", "prediction")
    result = backtest(
        signals,
        dataset.daily_returns(),
        strategy=strategy,  # type: ignore[arg-type]
        top_k=top_k,
        quantile=quantile,
        holding_days=horizon if holding_days is None else holding_days,
        cost_bps=float(cfg.eval.cost_bps) if cost_bps is None else cost_bps,
    )
    record = {"split": split, "horizon": horizon, "params": result.params, "summary": result.summary}
    return result, folder.write_backtest(strategy, horizon, result.daily, record)
