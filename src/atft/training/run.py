"""One training run, from a dataset folder to a complete run folder.

``train_run`` checks the dataset (the guard), loads it, takes the last walk-forward fold, trains with
Lightning and the guards of ``atft.training.callbacks``, then forecasts the validation and test segments
with the best checkpoint. The run folder ``runs/<name>/``:

- ``config.yaml``: the resolved configuration;  ``run.json``: the dataset it trains on (for ``--resume``);
- ``metrics.csv``, ``events.jsonl``, ``train.log``: see ``atft.training.callbacks``;
- ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``;
- ``predictions/valid.parquet`` and ``predictions/test.parquet``: (date, code, horizon, prediction, label,
  quantiles) from the best checkpoint;
- ``summary.json``: the best epoch, its validation metrics, the test metrics, and the oracle's test
  RankIC on the same rows when the dataset is synthetic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from atft.config.schema import parse_monitor
from atft.data.panel import DayPanel
from atft.data.splits import splits_from_config, trading_calendar
from atft.evaluation.evaluate import oracle_daily
from atft.evaluation.metrics import as_float, horizon_metrics, present
from atft.evaluation.run_eval import read_oracle
from atft.features.dataset import read_dataset_manifest
from atft.features.guard import guard_dataset
from atft.models.atft_gat_fan import count_parameters
from atft.models.graph import DayGraphBuilder
from atft.training import callbacks as cb
from atft.training.datamodule import DayDataModule
from atft.training.module import ForecastModule, prediction_arrays, predictions_frame

Say = Callable[[str], None]


@dataclass(frozen=True)
class Hardware:
    """What Lightning is given, after falling back from what this machine lacks."""

    accelerator: str
    precision: str
    devices: int
    strategy: str
    num_nodes: int
    notes: tuple[str, ...]


def resolve_hardware(trainer_cfg: Any, cuda: bool | None = None) -> Hardware:
    """Map the config's hardware wishes onto this machine, with a message for every fallback.

    bf16 and 16-bit mixed precision need CUDA here: on a CPU-only machine they fall back to 32-bit, and a
    GPU accelerator falls back to the CPU.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    notes = []
    accelerator, precision = trainer_cfg.accelerator, str(trainer_cfg.precision)
    if accelerator == "gpu" and not cuda:
        notes.append("train.trainer.accelerator=gpu but no CUDA device is available: training on the CPU")
        accelerator = "cpu"
    on_gpu = cuda and accelerator in ("gpu", "auto")
    if precision != "32" and not on_gpu:
        notes.append(
            f"train.trainer.precision={precision} needs a CUDA GPU, and none is used: training in 32-bit"
        )
        precision = "32"
    if precision == "bf16-mixed" and on_gpu and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bf16 support: training in 16-mixed")
        precision = "16-mixed"
    strategy = trainer_cfg.strategy
    if trainer_cfg.devices > 1 and strategy == "auto":
        strategy = "ddp"
    return Hardware(
        accelerator, precision, trainer_cfg.devices, strategy, trainer_cfg.num_nodes, tuple(notes)
    )


RUN_DIR_ENV = "ATFT_RUN_DIR"  # set by the launcher for the DDP processes it starts


def is_launcher() -> bool:
    """True in the process the user started; False in the processes Lightning's DDP launcher starts for it.

    The launcher re-runs the same command in each extra process with LOCAL_RANK (and NODE_RANK) set.
    """
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def new_run_dir(runs_dir: str | Path, run_name: str | None) -> Path:
    """``runs_dir/run_name`` (default: a timestamp); refuses a folder that already holds a run.

    A DDP worker process re-runs the user's command after the launcher created the folder: it joins it.
    """
    if not is_launcher() and RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])  # the launcher's folder, whatever the timestamp is now
    name = run_name or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(runs_dir) / name
    if (root / "config.yaml").exists() and is_launcher():
        raise ValueError(
            f"{root} already holds a run: pick another --run-name, or continue it with --resume {root}"
        )
    return root


def train_run(
    cfg: DictConfig,
    data_path: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    say: Say = print,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Train one model on ``data_path`` into ``run_dir``; returns the summary written to summary.json."""
    started = time.time()
    root = Path(run_dir)
    data_path = Path(data_path)
    folder = cb.RunFolder(root, 0 if is_launcher() else 1)  # RunLogger.setup sets the true global rank
    if is_launcher():
        os.environ[RUN_DIR_ENV] = str(root)
        for sub in (root, folder.checkpoints, folder.predictions):
            sub.mkdir(parents=True, exist_ok=True)
        if not resume:
            (root / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            (root / "run.json").write_text(json.dumps({"data_path": str(data_path.resolve())}, indent=2))

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    panel, split, data = load_segments(cfg, data_path, say=say)
    horizons = list(cfg.data.horizons)
    hardware = resolve_hardware(cfg.train.trainer)
    for note in hardware.notes:
        say(note)
        folder.event("hardware_fallback", message=note)

    target_scale = data.datasets["train"].label_std()
    if not np.isfinite(target_scale).all() or (target_scale <= 0).any():
        raise ValueError(
            f"the training segment has no usable labels for some horizon: label std {target_scale.tolist()}"
        )
    module = ForecastModule(
        OmegaConf.to_container(cfg, resolve=True), panel.feature_names, horizons, target_scale.tolist()
    )
    early = cfg.train.early_stopping
    checkpoint = ModelCheckpoint(
        dirpath=folder.checkpoints,
        filename="best",
        monitor=early.monitor,
        mode=early.mode,
        save_last=True,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    guard = cb.DegeneracyGuard(folder, cfg.train.diagnostics.degeneracy_floor, seed=cfg.train.seed)
    callbacks: list[Any] = [
        cb.EpochSeed(cfg.train.seed),
        cb.NonFiniteGuard(folder),
        cb.GradientMonitor(folder, cfg.train.diagnostics.grad_monitor_every),
        guard,
        cb.RunLogger(folder, parse_monitor(early.monitor)[1] or horizons[0]),
        checkpoint,
        EarlyStopping(monitor=early.monitor, mode=early.mode, patience=early.patience, check_finite=False),
    ]
    if cfg.train.ema_decay > 0:
        callbacks.append(EMAWeightAveraging(decay=cfg.train.ema_decay))
    if cfg.train.diagnostics.head_diagnostics:
        callbacks.insert(4, cb.HeadDiagnostics(folder))
    if os.environ.get(cb.CRASH_ENV):
        callbacks.append(cb.CrashAfterEpoch(int(os.environ[cb.CRASH_ENV])))
    if progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    trainer = L.Trainer(
        max_epochs=cfg.train.max_epochs,
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        strategy=hardware.strategy,
        num_nodes=hardware.num_nodes,
        precision=hardware.precision,
        gradient_clip_val=cfg.train.optimizer.grad_clip or None,
        callbacks=callbacks,
        logger=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        deterministic=False,
    )
    n_params = count_parameters(module.model)
    if not resume:
        folder.event("start", parameters=n_params, data=data.summary(), hardware=hardware.__dict__)
        folder.log(
            f"ATFT-GAT-FAN: {n_params:,} parameters, {len(panel.feature_names)} features, horizons {horizons}"
        )
    else:
        folder.event("resume", checkpoint=str(folder.checkpoints / "last.ckpt"))
        folder.log(f"Resumed from {folder.checkpoints / 'last.ckpt'}")
    say(f"training ({n_params:,} parameters)")
    trainer.fit(module, datamodule=data, ckpt_path=str(folder.checkpoints / "last.ckpt") if resume else None)
    if trainer.global_rank != 0:
        return {}

    say("forecasting the validation and test segments with the best checkpoint")
    best_path = checkpoint.best_model_path or str(folder.checkpoints / "last.ckpt")
    device = trainer.strategy.root_device
    best = ForecastModule.load_from_checkpoint(best_path, map_location=device)
    frames = {}
    for split_name, loader in (("valid", data.val_dataloader()), ("test", _maybe_test_loader(data))):
        if loader is None:
            continue
        with trainer.precision_plugin.forward_context():  # the precision that validation ran in
            frames[split_name] = predict_frame(best, loader, panel)
        frames[split_name].write_parquet(folder.predictions / f"{split_name}.parquet")
    summary = {
        "run_dir": str(root),
        "data_path": str(data_path),
        "parameters": n_params,
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best_path,
        "best_epoch": int(torch.load(best_path, map_location="cpu", weights_only=False)["epoch"]),
        "monitor": early.monitor,
        "head_resets": guard.resets,
        "degeneracy_warnings": guard.warnings,
        "hardware": hardware.__dict__,
        "split": {r.name: [str(r.start_date), str(r.end_date)] for r in split.ranges()},
        "seconds": round(time.time() - started, 1),
    }
    for split_name, frame in frames.items():
        summary[f"{split_name}_metrics"] = horizon_metrics(
            frame, cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile
        )
    if (data_path / "oracle.parquet").exists() and "test" in frames:
        summary["oracle_test_rankic"] = oracle_rank_ic(frames["test"], data_path)
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    folder.event("end", seconds=summary["seconds"], best_epoch=summary["best_epoch"])
    return summary


def load_segments(
    cfg: DictConfig, data_path: Path, *, say: Say = print
) -> tuple[DayPanel, Any, DayDataModule]:
    """Guard the dataset, load its panel and serve the last walk-forward fold's segments (with the day graph).

    The one place where a run's data is assembled, so that evaluating a run later serves exactly the days
    and graphs that training saw.
    """
    say("checking the dataset (guard)")
    report = guard_dataset(data_path, cfg)
    report.raise_if_failed()
    manifest = read_dataset_manifest(data_path)
    horizons = list(cfg.data.horizons)
    missing = [h for h in horizons if h not in manifest["horizons"]]
    if missing:
        raise ValueError(
            f"{data_path} has no labels for horizon(s) {missing}: its horizons are {manifest['horizons']}"
        )

    say("loading the panel")
    panel = DayPanel.load(data_path, labels=[f"target_{h}d" for h in horizons])
    split = splits_from_config(trading_calendar(data_path), cfg)[-1]
    graph = None
    if cfg.model.gat.enabled and cfg.model.graph.mode != "none":
        graph = DayGraphBuilder(panel, cfg.model.graph, market_id=market_ids(data_path))
    data = DayDataModule.from_split(
        panel,
        split,
        lookback=cfg.data.lookback,
        days_per_batch=cfg.train.batch.days_per_batch,
        min_stocks=cfg.data.min_stocks_per_day,
        seed=cfg.train.seed,
        num_workers=cfg.train.num_workers,
        graph=graph,
    )
    data.setup()
    return panel, split, data


def market_ids(data_path: Path) -> np.ndarray | None:
    """Each stock's market segment id (0 = unknown) in stock-id order, or None for datasets built before it."""
    stocks = pl.read_parquet(data_path / "stocks.parquet", glob=False)
    return stocks.sort("stock_id")["market_id"].to_numpy() if "market_id" in stocks.columns else None


def _maybe_test_loader(data: DayDataModule) -> Any:
    return data.test_dataloader() if "test" in data.datasets and len(data.datasets["test"]) else None


@torch.no_grad()
def predict_frame(module: ForecastModule, loader: Any, panel: DayPanel) -> pl.DataFrame:
    """The model's forecasts over a loader, as the long predictions frame of ``predictions_frame``."""
    module.eval()
    device = next(module.parameters()).device
    parts = []
    for batch in loader:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        parts.append(prediction_arrays(module(moved), moved))
    return predictions_frame(parts, panel, module.horizons, module.quantiles)


def oracle_rank_ic(frame: pl.DataFrame, data_path: Path) -> dict[str, float]:
    """Mean daily RankIC of the synthetic oracle against the same labels, on the same (date, code) rows."""
    oracle = read_oracle(data_path)
    out = {}
    for h in frame["horizon"].unique().sort().to_list():
        column = f"oracle_{h}d"
        if oracle is None or column not in oracle.columns:
            continue
        rows = frame.filter((pl.col("horizon") == h) & present("prediction") & present("label"))
        out[f"rankic_{h}d"] = as_float(
            oracle_daily(rows, oracle, column, min_stocks=5)["oracle_rankic"].mean()
        )
    return out
