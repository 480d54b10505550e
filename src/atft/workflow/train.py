"""One training run, from a dataset folder to a complete run folder (``atft train``).

``train_run`` does four jobs in order: open the run folder (new, reused or resumed), assemble the run's data
(``atft.workflow.run_data``), fit with Lightning and the guards of ``atft.training``, then forecast the
validation and test segments with the best checkpoint and write ``summary.json``. The files of the run
folder are listed in ``atft.training.run_folder``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from atft.config import ATFTConfig
from atft.data.splits import splits_from_config
from atft.evaluation.evaluate import oracle_daily
from atft.evaluation.metrics import as_float, horizon_metrics, present
from atft.features.dataset import DatasetFolder
from atft.models.atft_gat_fan import count_parameters
from atft.models.registry import model_label
from atft.training.allocator import keep_freed_memory
from atft.training.datamodule import DayDataset
from atft.training.module import ForecastModule, predict_frame
from atft.training.run_folder import RunFolder, RunFolderError
from atft.training.trainer import (
    RUN_DIR_ENV,
    Hardware,
    RunTrainer,
    build_trainer,
    is_launcher,
    resolve_hardware,
)
from atft.workflow.run_data import RunData, load_run_data

Say = Callable[[str], None]


# ---- job 1: the run folder ---------------------------------------------------------------------------------


def new_run_dir(runs_dir: str | Path, run_name: str | None) -> Path:
    """``runs_dir/run_name`` (default: a timestamp); refuses a folder that already holds a checkpointed run.

    A run that stopped before its first checkpoint (a wrong dataset, Ctrl-C in epoch 0) left nothing worth
    keeping: its name is free again. A DDP worker process re-runs the user's command after the launcher
    created the folder: it joins it.
    """
    if not is_launcher() and RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])  # the launcher's folder, whatever the timestamp is now
    name = run_name or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = RunFolder(Path(runs_dir) / name)
    started = [folder, *(RunFolder(p) for p in sorted(folder.root.glob("fold_*")))]
    if any(f.is_run() and (f.has_checkpoint() or f.is_finished()) for f in started):
        raise RunFolderError(
            f"{folder.root} already holds a run: pick another --run-name, or continue it with --resume {folder.root}"
        )
    return folder.root


def resume_config(run_dir: Path, max_epochs: int | None = None) -> tuple[ATFTConfig, Path]:
    """The config and dataset of a run to continue with ``--resume``, after checking it can continue.

    A run that never checkpointed, whose last checkpoint is damaged, or that already finished (unless
    ``max_epochs`` extends it) is refused with one line that says what to do instead.
    """
    folder = RunFolder(run_dir)
    folder.require_run()
    cfg = folder.read_config()
    if not folder.last_checkpoint.is_file():
        raise RunFolderError(
            f"{folder.last_checkpoint} not found: nothing to resume (the run stopped before its first "
            f"checkpoint); start it again with `atft train` and the same --run-name"
        )
    folder.check_checkpoint(folder.last_checkpoint)
    if folder.is_finished() and (max_epochs is None or max_epochs <= cfg.train.max_epochs):
        raise RunFolderError(
            f"{folder.root} already finished (train.max_epochs={cfg.train.max_epochs}; summary.json is written): "
            f"nothing to resume; give --max-epochs above {cfg.train.max_epochs} to train it further"
        )
    if max_epochs is not None:
        cfg = folder.read_config([f"train.max_epochs={max_epochs}"])
        folder.write_config(cfg)  # the run's own config now says how long it trains
    return cfg, folder.data_path()


def open_run_folder(
    cfg: ATFTConfig, data_path: Path, run_dir: Path, *, resume: bool, fold: int | None = None
) -> RunFolder:
    """The run folder, set up for a new run (config.yaml, run.json) or checked for a resume."""
    folder = RunFolder(run_dir, 0 if is_launcher() else 1)  # RunLogger.setup sets the true global rank
    if not is_launcher():
        return folder
    os.environ[RUN_DIR_ENV] = str(folder.root)
    if resume:
        folder.require_run()
        folder.check_checkpoint(folder.last_checkpoint)
    else:
        folder.clear_unstarted()
        folder.create(cfg, data_path, fold)
    return folder


# ---- job 2: the model --------------------------------------------------------------------------------------


def build_module(cfg: ATFTConfig, run: RunData) -> ForecastModule:
    """The forecaster, scaled to the training labels; refuses a training segment that serves nothing."""
    train = run.data.datasets["train"]
    target_scale = train.label_std()
    if not np.isfinite(target_scale).all() or (target_scale <= 0).any():
        raise ValueError(empty_segment_message("train", train, cfg, target_scale))
    return ForecastModule(
        OmegaConf.to_container(cfg, resolve=True),
        run.panel.feature_names,
        list(cfg.data.horizons),
        target_scale.tolist(),
    )


def compile_model(module: ForecastModule, backend: str = "inductor") -> None:
    """``torch.compile`` the model's forward in place (``train.compile``).

    The forward is compiled, not the module, so parameter names, checkpoints and bundles stay those of the
    plain model; shapes are dynamic because every day brings its own number of stocks (and edges).
    """
    module.model.forward = torch.compile(module.model.forward, backend=backend, dynamic=True)


def empty_segment_message(name: str, segment: DayDataset, cfg: ATFTConfig, label_std: np.ndarray) -> str:
    """Why a segment has nothing to learn from, with the config key that decides it."""
    s = segment.summary()
    reasons = s["dropped_reasons"]
    key = f"data.split.{name}" if cfg.data.split.mode == "explicit" else "data.split"
    if s["days"] == 0:
        why = []
        if reasons.get("before_first_full_window"):
            why.append(
                f"{reasons['before_first_full_window']} day(s) come before the first full "
                f"{cfg.data.lookback}-day window (data.lookback={cfg.data.lookback} is longer than the history)"
            )
        if reasons.get("too_few_stocks"):
            why.append(
                f"{reasons['too_few_stocks']} day(s) have fewer than data.min_stocks_per_day="
                f"{cfg.data.min_stocks_per_day} stocks with a full window of finite features and a label "
                f"(a segment inside the features' warmup, or too small a universe)"
            )
        if reasons.get("embargo"):
            why.append(f"{reasons['embargo']} day(s) are embargoed")
        detail = "; ".join(why) or "the segment has no trading days at all"
        return (
            f"the {name} segment serves no trading day: {detail}. Lower data.min_stocks_per_day or "
            f"data.lookback, or move {key} later (see `atft data splits`)"
        )
    bad = [
        f"{h}d" for h, v in zip(cfg.data.horizons, label_std, strict=True) if not (np.isfinite(v) and v > 0)
    ]
    return (
        f"the {name} segment ({s['days']} days, {s['first_date']}..{s['last_date']}) has no usable labels at "
        f"horizon(s) {', '.join(bad)}: every label ends past the segment or is constant; lengthen {key} "
        f"well beyond the longest horizon ({max(cfg.data.horizons)} days)"
    )


# ---- job 3: fitting ----------------------------------------------------------------------------------------


def fit(
    run_trainer: RunTrainer,
    module: ForecastModule,
    run: RunData,
    folder: RunFolder,
    hardware: Hardware,
    *,
    resume: bool,
) -> None:
    """Train; Ctrl-C stops with KeyboardInterrupt (exit 130 at the CLI), not Lightning's exit status 1."""
    trainer = run_trainer.trainer
    n_params = count_parameters(module.model)
    if not resume:
        folder.event("start", parameters=n_params, data=run.data.summary(), hardware=hardware.__dict__)
        folder.log(
            f"{model_label(module.cfg.model.name)}: {n_params:,} parameters, {len(run.panel.feature_names)} "
            f"features, horizons {module.horizons}"
        )
    else:
        folder.event("resume", checkpoint=str(folder.last_checkpoint))
        folder.log(f"Resumed from {folder.last_checkpoint}")
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=run.data, ckpt_path=str(folder.last_checkpoint) if resume else None)
    except SystemExit as e:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1) after its own clean-up
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first


# ---- job 4: forecasts and the summary ---------------------------------------------------------------------


def forecast_and_summarize(
    cfg: ATFTConfig,
    run: RunData,
    folder: RunFolder,
    run_trainer: RunTrainer,
    hardware: Hardware,
    *,
    started: float,
    data_path: Path,
) -> dict[str, Any]:
    """Forecast the validation and test segments with the best checkpoint; write predictions and summary.json."""
    trainer, checkpoint = run_trainer.trainer, run_trainer.checkpoint
    best_path = checkpoint.best_model_path or str(folder.last_checkpoint)
    best = ForecastModule.load_from_checkpoint(best_path, map_location=trainer.strategy.root_device)
    frames = {}
    for split_name in ("valid", "test"):
        segment = run.data.datasets.get(split_name)
        if segment is None or not len(segment):
            continue
        with trainer.precision_plugin.forward_context():  # the precision that validation ran in
            frames[split_name] = predict_frame(best, run.data.eval_dataloader(split_name), run.panel)
        folder.write_predictions(split_name, frames[split_name])
    summary = {
        "run_dir": str(folder.root),
        "data_path": str(data_path),
        "parameters": count_parameters(best.model),
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best_path,
        "best_epoch": folder.checkpoint_epoch(Path(best_path)),
        "monitor": cfg.train.early_stopping.monitor,
        "head_resets": run_trainer.guard.resets,
        "degeneracy_warnings": run_trainer.guard.warnings,
        "hardware": hardware.__dict__,
        "split": {r.name: [str(r.start_date), str(r.end_date)] for r in run.split.ranges()},
        "seconds": round(time.time() - started, 1),
    }
    for split_name, frame in frames.items():
        summary[f"{split_name}_metrics"] = horizon_metrics(
            frame, cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile
        )
    if run.dataset.has("oracle") and "test" in frames:
        summary["oracle_test_rankic"] = oracle_rank_ic(frames["test"], run.dataset)
    return summary


def oracle_rank_ic(frame: pl.DataFrame, dataset: DatasetFolder) -> dict[str, float]:
    """Mean daily RankIC of the synthetic oracle against the same labels, on the same (date, code) rows."""
    oracle = dataset.oracle()
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


# ---- the whole run -----------------------------------------------------------------------------------------


def train_run(
    cfg: ATFTConfig,
    data_path: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    fold: int | None = None,
    with_test: bool = True,
    callbacks: Sequence[Callback] = (),
    init_from: Path | None = None,
    say: Say = print,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Train one model on fold ``fold`` of ``data_path`` (None: the last fold) into ``run_dir``; returns the
    summary written to summary.json. Without ``with_test`` the test segment is neither served nor forecast;
    ``callbacks`` are added to the trainer's (a search's pruning, for instance); ``init_from`` starts from
    another run's checkpoint weights (a warm start: the same model and features)."""
    started = time.time()
    data_path = Path(data_path)
    folder = open_run_folder(cfg, data_path, Path(run_dir), resume=resume, fold=fold)
    if resume:
        fold = folder.fold()

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    run = load_run_data(cfg, DatasetFolder(data_path), fold=fold, with_test=with_test, say=say)
    hardware = resolve_hardware(cfg.train.trainer)
    for note in hardware.notes:
        say(note)
        folder.event("hardware_fallback", message=note)
    module = build_module(cfg, run)
    if init_from is not None and not resume:
        state = RunFolder(Path(init_from).parent.parent).load_checkpoint(Path(init_from))["state_dict"]
        module.load_state_dict(state)
        folder.event("warm_start", checkpoint=str(init_from))
    if cfg.train.compile:
        say(f"compiling the model (train.compile, backend {cfg.train.compile_backend})")
        compile_model(module, cfg.train.compile_backend)
    run_trainer = build_trainer(
        cfg, folder, hardware, list(cfg.data.horizons), progress_bar=progress_bar, extra=callbacks
    )
    n_params = count_parameters(module.model)
    say(f"training ({n_params:,} parameters, precision {hardware.precision})")
    # After the data is loaded: its one-off arrays are returned to the kernel as before; from here on the
    # steps' activations are kept for reuse (``atft.training.allocator``).
    keep_freed_memory()
    fit(run_trainer, module, run, folder, hardware, resume=resume)
    if run_trainer.trainer.global_rank != 0:
        return {}

    say("forecasting the validation and test segments with the best checkpoint")
    summary = forecast_and_summarize(
        cfg, run, folder, run_trainer, hardware, started=started, data_path=data_path
    )
    folder.write_summary(summary)
    folder.event("end", seconds=summary["seconds"], best_epoch=summary["best_epoch"])
    return summary


def train_every_fold(
    cfg: ATFTConfig,
    data_path: str | Path,
    run_dir: str | Path,
    *,
    say: Say = print,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Train one model per walk-forward fold into ``run_dir/fold_<k>/`` and write ``folds.json`` with each
    fold's summary and the mean of their validation and test metrics: every fold counts, not just the last."""
    n_folds = len(splits_from_config(DatasetFolder(data_path).calendar(), cfg))
    parent = RunFolder(run_dir)
    summaries = []
    for k in range(n_folds):
        say(f"fold {k} of folds 0..{n_folds - 1}")
        summaries.append(
            train_run(cfg, data_path, parent.fold_run(k).root, fold=k, say=say, progress_bar=progress_bar)
        )
    if not all(summaries):  # a DDP worker process: rank 0 writes
        return {}
    record = {"n_folds": n_folds, "folds": summaries}
    for segment in ("valid", "test"):
        per_fold = [s.get(f"{segment}_metrics") or {} for s in summaries]
        keys = sorted(set().union(*per_fold))
        record[f"mean_{segment}_metrics"] = {
            key: float(np.nanmean([m.get(key, np.nan) for m in per_fold])) for key in keys
        }
    parent.write_folds(record)
    return record
