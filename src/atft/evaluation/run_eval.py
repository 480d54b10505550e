"""Evaluating a finished run folder: forecast a segment with the run's best checkpoint and score it
(``evaluate_run``, behind ``atft evaluate``), and trade its forecasts in a backtest (``backtest_run``,
behind ``atft backtest``). Both read only the run folder and the dataset it was trained on.

Layout written into the run folder::

    eval/metrics.json, eval/per_day.parquet, eval/predictions.parquet      (the test segment)
    eval/<split>/...                                                       (any other segment)
    backtest/<strategy>_<h>d/daily.parquet, backtest/<strategy>_<h>d/summary.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from atft.evaluation.backtest import BacktestResult, backtest
from atft.evaluation.evaluate import EvaluationResult, evaluate_predictions, json_ready, write_evaluation

SPLITS = ("train", "valid", "test")


def run_config(run_dir: Path) -> tuple[DictConfig, Path]:
    """The run's config and the dataset folder it was trained on, with an error that names what is missing."""
    run_dir = Path(run_dir)
    config, info = run_dir / "config.yaml", run_dir / "run.json"
    for path in (config, info):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {run_dir} is not a run folder written by `atft train`"
            )
    data_path = Path(json.loads(info.read_text())["data_path"])
    if not data_path.is_dir():
        raise FileNotFoundError(
            f"{data_path} (the dataset named in {info}) does not exist: rebuild it with `atft data build`"
        )
    return OmegaConf.load(config), data_path


def eval_dir(run_dir: Path, split: str) -> Path:
    """Where ``evaluate_run`` writes a segment's evaluation: ``eval/`` for test, ``eval/<split>/`` otherwise."""
    return Path(run_dir) / "eval" if split == "test" else Path(run_dir) / "eval" / split


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint that the run selected (best on the monitored metric), else its last one."""
    for name in ("best.ckpt", "last.ckpt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{Path(run_dir) / 'checkpoints'} holds no best.ckpt or last.ckpt: did training finish?"
    )


def read_oracle(data_path: Path) -> pl.DataFrame | None:
    """The synthetic market's oracle (date, code, oracle_<h>d), or None for a real-market dataset."""
    path = Path(data_path) / "oracle.parquet"
    return pl.read_parquet(path, glob=False) if path.is_file() else None


def evaluate_run(
    run_dir: Path, *, split: str = "test", say: Callable[[str], None] = print
) -> tuple[EvaluationResult, Path]:
    """Forecast ``split`` with the run's best checkpoint, score it, and write the evaluation files."""
    from atft.training.module import ForecastModule
    from atft.training.run import load_segments, predict_frame

    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    cfg, data_path = run_config(run_dir)
    panel, _, data = load_segments(cfg, data_path, say=say)
    if split not in data.datasets or not len(data.datasets[split]):
        raise ValueError(f"the {split} segment of {data_path} has no trading days to evaluate")
    checkpoint = best_checkpoint(run_dir)
    say(f"forecasting the {split} segment with {checkpoint.name}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = ForecastModule.load_from_checkpoint(checkpoint, map_location=device)
    trained_on = list(module.hparams["feature_names"])
    if trained_on != panel.feature_names:
        changed = [f"{a}->{b}" for a, b in zip(trained_on, panel.feature_names, strict=False) if a != b][:3]
        raise ValueError(
            f"{data_path} no longer has the features {checkpoint} was trained on ({len(trained_on)} then, "
            f"{len(panel.feature_names)} now; first differences: {changed or 'extra or missing at the end'}): "
            "was the dataset rebuilt? Evaluate on the dataset the run was trained on"
        )
    dtype = _autocast_dtype(cfg, device)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        preds = predict_frame(module, data.eval_dataloader(split), panel)
    say("scoring")
    return _score(run_dir, cfg, data_path, preds, split, checkpoint)


def score_training_forecasts(run_dir: Path, *, split: str = "test") -> tuple[EvaluationResult, Path]:
    """What ``evaluate_run`` writes, from the forecasts the best checkpoint made at the end of training
    (``predictions/<split>.parquet``): the same numbers without reloading the panel and forecasting again."""
    cfg, data_path = run_config(run_dir)
    path = Path(run_dir) / "predictions" / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: did training finish? `atft evaluate {run_dir}` forecasts anew"
        )
    preds = pl.read_parquet(path, glob=False)
    return _score(run_dir, cfg, data_path, preds, split, best_checkpoint(run_dir))


def _score(
    run_dir: Path, cfg: DictConfig, data_path: Path, preds: pl.DataFrame, split: str, checkpoint: Path
) -> tuple[EvaluationResult, Path]:
    result = evaluate_predictions(
        preds, oracle=read_oracle(data_path), cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile
    )
    result.metrics["settings"] |= {"split": split, "checkpoint": str(checkpoint)}
    return result, write_evaluation(result, preds, eval_dir(run_dir, split))


def _autocast_dtype(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """The mixed precision the run validated in on a GPU (None: full precision), as Lightning maps it."""
    if device.type != "cuda":
        return None
    precision = str(cfg.train.trainer.precision)
    if precision == "bf16-mixed":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if precision == "16-mixed" else None


def run_predictions(run_dir: Path, split: str = "test") -> pl.DataFrame:
    """A segment's forecasts: from ``atft evaluate`` if it ran, else those written at the end of training."""
    for path in (
        eval_dir(run_dir, split) / "predictions.parquet",
        Path(run_dir) / "predictions" / f"{split}.parquet",
    ):
        if path.is_file():
            return pl.read_parquet(path, glob=False)
    raise FileNotFoundError(
        f"{run_dir} has no {split} predictions (predictions/{split}.parquet): run `atft evaluate {run_dir}`"
    )


def daily_returns(data_path: Path) -> pl.DataFrame:
    """Each stock's return from the close of ``date`` to its next close (date, code, ret): ``target_1d``."""
    labels = Path(data_path) / "labels.parquet"
    frame = pl.read_parquet(labels, glob=False)
    if "target_1d" not in frame.columns:
        raise ValueError(f"{labels} has no column target_1d: the backtest needs each stock's 1-day return")
    return frame.select("date", "code", pl.col("target_1d").cast(pl.Float64).alias("ret"))


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
    cfg, data_path = run_config(run_dir)
    preds = run_predictions(run_dir, split)
    available = sorted(preds["horizon"].unique().to_list())
    if horizon not in available:
        raise ValueError(f"--horizon {horizon}: the run forecasts horizons {available}")
    if top_k is None and quantile is None:
        quantile = float(cfg.eval.quantile)
    signals = preds.filter(pl.col("horizon") == horizon).select("date", "code", "prediction")
    result = backtest(
        signals,
        daily_returns(data_path),
        strategy=strategy,  # type: ignore[arg-type]
        top_k=top_k,
        quantile=quantile,
        holding_days=horizon if holding_days is None else holding_days,
        cost_bps=float(cfg.eval.cost_bps) if cost_bps is None else cost_bps,
    )
    out = Path(run_dir) / "backtest" / f"{strategy}_{horizon}d"
    out.mkdir(parents=True, exist_ok=True)
    result.daily.write_parquet(out / "daily.parquet")
    record = {"split": split, "horizon": horizon, "params": result.params, "summary": result.summary}
    (out / "summary.json").write_text(json.dumps(json_ready(record), indent=2, default=str) + "\n")
    return result, out
