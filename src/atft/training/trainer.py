"""The Lightning ``Trainer`` of a run: this machine's hardware, the guards, checkpoints and early stopping.

``resolve_hardware`` maps the config's wishes onto what this machine has (bf16 on a CPU without native
bf16 falls back to 32-bit, with a message); ``panel_on_device`` decides whether the feature panel lives on
the training device; ``build_trainer`` assembles the callbacks of ``atft.training.callbacks`` around the
run folder. DDP worker processes re-run the user's command: ``is_launcher`` tells them apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

from atft.config import ATFTConfig
from atft.config.schema import TrainerConfig, parse_monitor
from atft.training import callbacks as cb
from atft.training.run_folder import RunFolder

RUN_DIR_ENV = "ATFT_RUN_DIR"  # set by the launcher for the DDP processes it starts


@dataclass(frozen=True)
class Hardware:
    """What Lightning is given, after falling back from what this machine lacks."""

    accelerator: str
    precision: str
    devices: int
    strategy: str
    num_nodes: int
    notes: tuple[str, ...]


def panel_on_device(mode: str, panel_bytes: int, accelerator: str, cuda: bool | None = None) -> bool:
    """Whether training keeps the feature panel on its device (``train.panel_on_device``).

    "auto": on a CUDA device (``accelerator`` gpu or auto) when the panel takes at most half of the card's
    free memory, the rest left to the model's activations; "on" and "off" as asked ("on" on a CPU gathers
    the same windows there: what the tests use).
    """
    if mode != "auto":
        return mode == "on"
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda or accelerator not in ("gpu", "auto"):
        return False
    free, _total = torch.cuda.mem_get_info()
    return panel_bytes <= free // 2


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): bf16-mixed is then worth it there."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_hardware(
    trainer_cfg: TrainerConfig, cuda: bool | None = None, cpu_bf16: bool | None = None
) -> Hardware:
    """Map the config's hardware wishes onto this machine, with a message for every fallback.

    bf16-mixed runs on a CUDA GPU, or on a CPU with native bf16 (AVX-512 BF16, AMX: about 1.3x faster a
    step there, with bf16 rounding in the matrix products); elsewhere it falls back to 32-bit. 16-bit
    mixed precision needs CUDA. "auto" (the ``cpu`` preset's) is bf16-mixed where the device computes bf16
    natively and 32-bit elsewhere, without a note: the same forecasts to seed noise either way
    (docs/decisions.md 39). A GPU accelerator falls back to the CPU when there is no CUDA device.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    notes = []
    accelerator, precision = trainer_cfg.accelerator, str(trainer_cfg.precision)
    if accelerator == "gpu" and not cuda:
        notes.append("train.trainer.accelerator=gpu but no CUDA device is available: training on the CPU")
        accelerator = "cpu"
    on_gpu = cuda and accelerator in ("gpu", "auto")
    cpu_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    if precision == "auto":  # a choice, not a fallback, so no note (the run's summary records the result)
        native = torch.cuda.is_bf16_supported(including_emulation=False) if on_gpu else cpu_bf16
        precision = "bf16-mixed" if native else "32"
    elif precision == "bf16-mixed" and not on_gpu and cpu_bf16:
        notes.append("train.trainer.precision=bf16-mixed on the CPU, which computes bf16 natively")
    elif precision != "32" and not on_gpu:
        notes.append(
            f"train.trainer.precision={precision} needs a CUDA GPU (or, for bf16-mixed, a CPU with native "
            "bf16), and none is used: training in 32-bit"
        )
        precision = "32"
    if precision == "bf16-mixed" and on_gpu and not torch.cuda.is_bf16_supported(including_emulation=False):
        notes.append("this GPU has no bf16 support: training in 16-mixed")
        precision = "16-mixed"
    strategy = trainer_cfg.strategy
    if trainer_cfg.devices > 1 and strategy == "auto":
        strategy = "ddp"
    return Hardware(
        accelerator, precision, trainer_cfg.devices, strategy, trainer_cfg.num_nodes, tuple(notes)
    )


def forecast_precision(trainer_cfg: TrainerConfig, device: torch.device) -> AbstractContextManager:
    """The autocast a run's forecasts are made in on ``device``, for forecasts made outside its Trainer.

    Lightning's own (its mixed-precision plugin's) for the precision ``resolve_hardware`` gives the run
    there, so that `atft evaluate` and the daily list score a day exactly as training's predictions files
    did on the same machine: a bf16-mixed run forecast in 32-bit differs by ~1e-4 in its scores.
    """
    on_gpu = device.type == "cuda"  # the device used decides, whatever accelerator the run trained on
    used = OmegaConf.merge(trainer_cfg, {"accelerator": "gpu" if on_gpu else "cpu"})
    precision = resolve_hardware(used, cuda=on_gpu).precision
    if precision not in ("bf16-mixed", "16-mixed"):
        return nullcontext()
    return MixedPrecision(precision, device.type).autocast_context_manager()


def is_launcher() -> bool:
    """True in the process the user started; False in the processes Lightning's DDP launcher starts for it.

    The launcher re-runs the same command in each extra process with LOCAL_RANK (and NODE_RANK) set.
    """
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


@dataclass
class RunTrainer:
    """The trainer of one run, with the two callbacks whose state the summary reads."""

    trainer: L.Trainer
    checkpoint: ModelCheckpoint
    guard: cb.DegeneracyGuard


def build_trainer(
    cfg: ATFTConfig,
    folder: RunFolder,
    hardware: Hardware,
    horizons: list[int],
    *,
    progress_bar: bool = True,
    extra: Sequence[Callback] = (),
) -> RunTrainer:
    """A Lightning trainer with the run's guards, logger, best/last checkpoints and early stopping."""
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
    callbacks.extend(extra)
    if progress_bar:
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
        default_root_dir=folder.root,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        deterministic=False,
    )
    return RunTrainer(trainer, checkpoint, guard)
