"""The main job on the built-in synthetic market (``atft demo``, what ``make demo`` runs).

``prepare_demo`` synthesizes the market, builds its dataset and serves the last walk-forward fold;
``train_demo`` trains the default model for a few epochs, scores its test forecasts against the oracle,
backtests the 5-day forecasts and diagnoses the run. The CLI prints what they return.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atft.config import ATFTConfig, load_config
from atft.data.splits import Split, splits_from_config
from atft.data.store import check_target
from atft.data.synthetic import SynthParams, synthesize, write_synthetic
from atft.evaluation.backtest import BacktestResult
from atft.evaluation.evaluate import EvaluationResult
from atft.features.build import build_dataset
from atft.features.dataset import DatasetFolder
from atft.reporting.doctor import Diagnosis, diagnose_run
from atft.training.datamodule import DayDataModule
from atft.training.run_folder import RunFolder
from atft.workflow.evaluate import backtest_run, score_training_forecasts
from atft.workflow.train import train_run

Say = Callable[..., None]


@dataclass
class DemoData:
    """The demo's market and dataset, and what the loader serves of its last fold."""

    raw: Path
    dataset: Path
    cfg: ATFTConfig
    store_manifest: dict[str, Any]
    manifest: dict[str, Any]
    split: Split
    served: dict[str, dict[str, Any]]


@dataclass
class DemoRun:
    """The demo's trained run: its summary, test evaluation, 5-day backtest and diagnosis."""

    run_dir: Path
    cfg: ATFTConfig
    summary: dict[str, Any]
    evaluation: EvaluationResult
    trade: BacktestResult
    diagnosis: Diagnosis


def prepare_demo(out: Path, *, stocks: int, days: int, seed: int, say: Say) -> DemoData:
    """Synthesize the market into ``out/raw``, build ``out/dataset`` and load the last fold's segments."""
    raw, dataset = out / "raw", out / "dataset"
    cfg = load_config().cfg
    check_target(raw, overwrite=True, kind="synthetic")  # an earlier demo's store, never other files
    check_target(dataset, overwrite=True, kind="dataset")
    market = synthesize(SynthParams(n_stocks=stocks, n_days=days, seed=seed), progress=say)
    say("measuring the oracle and writing the store")
    store_manifest = write_synthetic(market, raw, overwrite=True)
    manifest = build_dataset(raw, dataset, cfg, overwrite=True, progress=say)
    say("splitting and loading")
    split = splits_from_config(DatasetFolder(dataset).calendar(), cfg)[-1]
    data = DayDataModule.from_split(
        dataset, split, lookback=cfg.data.lookback, min_stocks=cfg.data.min_stocks_per_day
    )
    data.setup()
    return DemoData(raw, dataset, cfg, store_manifest, manifest, split, data.summary())


def train_demo(dataset: Path, run_dir: Path, epochs: int, *, say: Callable[[str], None]) -> DemoRun:
    """Train the default model for ``epochs`` epochs, then evaluate, backtest and diagnose the run."""
    if RunFolder(run_dir).is_run():  # an earlier demo's run folder, never other files
        shutil.rmtree(run_dir)
    cfg = load_config(overrides=[f"train.max_epochs={epochs}"]).cfg
    summary = train_run(cfg, dataset, run_dir, say=say)
    say("scoring the test forecasts")
    evaluation, _ = score_training_forecasts(run_dir)
    say("backtesting the 5-day forecasts")
    trade, _ = backtest_run(run_dir, horizon=5)
    say("diagnosing the run")
    diagnosis = diagnose_run(run_dir, html=True)
    return DemoRun(run_dir, cfg, summary, evaluation, trade, diagnosis)
