"""Guards and diagnostics that run beside training, writing what they see into the run folder.

The previous system's runs plateaued for 50 epochs with predictions collapsed to zero scale and nobody
noticed. Each callback here watches one failure: gradients (``GradientMonitor``), collapse
(``DegeneracyGuard``), the heads' activations (``HeadDiagnostics``), NaN and infinity (``NonFiniteGuard``);
``RunLogger`` writes what they saw, with every epoch's metrics, where a person and the run doctor read it.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from atft.training.module import ForecastModule, NonFiniteLossError
from atft.training.run_folder import RunFolder


def _finite_or_none(value: float) -> float | None:
    return value if isinstance(value, float | int) and math.isfinite(value) else None


class RunLogger(Callback):
    """Writes one metrics.csv row and one train.log line per epoch, and which days each process trained on.

    A row holds: epoch, train and validation loss, every loss term (weighted) and its share of the
    gradient reaching the heads, the learning rate, every validation metric per horizon, the heads'
    statistics and the fusion gate's, and the epoch's wall time.
    """

    def __init__(self, folder: RunFolder, horizon: int) -> None:
        self.folder, self.horizon = folder, horizon  # the horizon train.log quotes RankIC and SCALE at
        self._started = time.time()
        self._days: list[int] = []

    def setup(self, trainer: L.Trainer, pl_module: ForecastModule, stage: str) -> None:
        self.folder.rank = trainer.global_rank  # known once the strategy has started the processes

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ForecastModule) -> None:
        self._started, self._days = time.time(), []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ForecastModule, batch: Any, batch_idx: int
    ) -> None:
        self._days.extend(batch["day_index"].tolist())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: ForecastModule) -> None:
        days = self._days
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, days)
            by_rank = dict(enumerate(gathered))
        else:
            by_rank = {0: days}
        dates = trainer.datamodule.panel.dates
        self.folder.event(
            "days_seen",
            epoch=trainer.current_epoch,
            by_rank={rank: [str(dates[d]) for d in sorted(ds)] for rank, ds in by_rank.items()},
        )
        train = pl_module.train_epoch_summary()
        val = getattr(pl_module, "val_metrics", {})
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "train_loss": train.get("loss"),
            "val_loss": val.get("loss"),
        }
        row.update({k: v for k, v in sorted(train.items()) if k != "loss"})
        row["lr"] = lr
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss"})
        guard = next((c for c in trainer.callbacks if isinstance(c, DegeneracyGuard)), None)
        row["head_resets"] = guard.resets if guard is not None else 0
        row["epoch_seconds"] = round(time.time() - self._started, 2)
        self.folder.write_metrics_row(row)
        self.folder.log(self.line(trainer.current_epoch, train, val, lr))

    def line(self, epoch: int, train: dict[str, float], val: dict[str, float], lr: float) -> str:
        """``Epoch 10: train=0.7829 / val=0.7950 | RankIC5d=0.041 SCALE5d=0.62 | lr=2.0e-04``."""
        h = self.horizon
        parts = [
            f"Epoch {epoch}: train={train.get('loss', math.nan):.4f} / val={val.get('loss', math.nan):.4f}"
        ]
        parts.append(
            f"RankIC{h}d={val.get(f'rankic_{h}d', math.nan):.3f} SCALE{h}d={val.get(f'scale_{h}d', math.nan):.2f}"
        )
        parts.append(f"lr={lr:.1e}")
        return " | ".join(parts)


class GradientMonitor(Callback):
    """Every ``every`` steps, and at each epoch's first step: the gradient L2 norm of each top-level module."""

    def __init__(self, folder: RunFolder, every: int) -> None:
        self.folder, self.every = folder, every
        self._first_batch = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ForecastModule, batch: Any, batch_idx: int
    ) -> None:
        self._first_batch = batch_idx == 0  # every epoch gets a reading, however few its steps

    def on_after_backward(self, trainer: L.Trainer, pl_module: ForecastModule) -> None:
        step = trainer.global_step
        if step % self.every and not self._first_batch:
            return
        norms = {}
        for name, part in pl_module.model.named_children():
            grads = [p.grad.detach().float().norm() for p in part.parameters() if p.grad is not None]
            norms[name] = float(torch.stack(grads).norm()) if grads else 0.0
        self.folder.event("grad_norm", step=step, epoch=trainer.current_epoch, norms=norms)
        for name, value in norms.items():
            pl_module._add(f"grad_norm_{name}", value)


class DegeneracyGuard(Callback):
    """Catches predictions collapsing to a constant, and pulls the model out of it.

    Tracks an EMA of the per-day prediction scale std(ŷ)/std(y) (mean over horizons, and over processes
    under DDP). After the first ``grace_epochs`` (the heads start small on purpose), when the EMA stays
    below ``floor`` for ``patience`` steps it warns; still below after ``patience`` more, it re-initializes
    the heads' output layers with noise (``noise_std``, from a generator seeded by (seed, step) so every
    process draws the same), drops their optimizer state, and counts the reset.
    """

    def __init__(
        self,
        folder: RunFolder,
        floor: float,
        *,
        patience: int = 20,
        alpha: float = 0.1,
        noise_std: float = 0.05,
        grace_epochs: int = 1,
        seed: int = 0,
    ) -> None:
        self.folder, self.floor, self.patience, self.alpha = folder, floor, patience, alpha
        self.noise_std, self.grace_epochs, self.seed = noise_std, grace_epochs, seed
        self.ema: float | None = None
        self.below = 0
        self.resets = 0
        self.warnings = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: ForecastModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch < self.grace_epochs:
            return
        scale = torch.nanmean(pl_module.last_scale) if len(pl_module.last_scale) else torch.tensor(math.nan)
        # every process takes the same decision, or their copies of the model drift apart under DDP
        scale = float(trainer.strategy.reduce(scale.to(pl_module.device), reduce_op="mean"))
        if not math.isfinite(scale):
            return
        self.ema = scale if self.ema is None else (1 - self.alpha) * self.ema + self.alpha * scale
        self.below = self.below + 1 if self.ema < self.floor else 0
        step = trainer.global_step
        if self.below == self.patience:
            self.warnings += 1
            self.folder.event("degeneracy_warning", step=step, scale_ema=self.ema, floor=self.floor)
            self.folder.log(
                f"WARNING step {step}: prediction scale EMA {self.ema:.4f} below floor {self.floor}"
            )
        elif self.below >= 2 * self.patience:
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed * 1_000_003 + step)
            state = trainer.optimizers[0].state if trainer.optimizers else {}
            for head in pl_module.model.heads:
                head.reset_parameters(noise_std=self.noise_std, generator=generator)
                for p in head.out.parameters():
                    state.pop(p, None)  # stale Adam moments would undo the reset
            self.resets += 1
            self.folder.event(
                "head_reset", step=step, scale_ema=self.ema, floor=self.floor, resets=self.resets
            )
            self.folder.log(
                f"RESET step {step}: heads re-initialized with noise std {self.noise_std} (reset #{self.resets})"
            )
            self.ema, self.below = None, 0

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "below": self.below, "resets": self.resets, "warnings": self.warnings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.below = state["ema"], state["below"]
        self.resets, self.warnings = state["resets"], state["warnings"]


class HeadDiagnostics(Callback):
    """Per epoch: the mean and std of each horizon's point prediction over the training steps."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: ForecastModule) -> None:
        summary = pl_module.train_epoch_summary()
        stats = {
            f"{h}d": {
                "mean": _finite_or_none(summary.get(f"head_mean_{h}d", math.nan)),
                "std": _finite_or_none(summary.get(f"head_std_{h}d", math.nan)),
                "scale": _finite_or_none(summary.get(f"scale_{h}d", math.nan)),
            }
            for h in pl_module.horizons
        }
        gate = {k: summary[k] for k in ("gate_mean", "gate_std") if k in summary}
        self.folder.event("head_stats", epoch=trainer.current_epoch, horizons=stats, gate=gate)


class NonFiniteGuard(Callback):
    """Stops training at the first NaN or infinity in the loss or a gradient, naming the step and batch.

    Gradients are checked once unscaled (``on_before_optimizer_step``). Under ``16-mixed`` the gradient
    scaler itself skips steps whose gradients overflow, so there an infinite gradient is an event, not an
    error. Under DDP the processes agree first, so that none is left waiting for the others.
    """

    def __init__(self, folder: RunFolder | None = None) -> None:
        self.folder = folder

    def _where(self, trainer: L.Trainer, pl_module: ForecastModule) -> str:
        info = getattr(pl_module, "current_batch", {})
        dates = info.get("dates", [])
        return (
            f"at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {info.get('batch_idx')}, "
            f"dates {dates[0] if dates else '?'}..{dates[-1] if dates else '?'})"
        )

    def _stop(self, trainer: L.Trainer, message: str) -> None:
        if self.folder is not None:
            self.folder.event("non_finite", step=trainer.global_step, message=message)
            self.folder.log(f"STOP {message}")
        raise NonFiniteLossError(message)

    def on_before_backward(self, trainer: L.Trainer, pl_module: ForecastModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()))
        if getattr(trainer, "world_size", 1) > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            terms = {k: round(v, 6) for k, v in pl_module.loss.last_raw.items()}
            self._stop(
                trainer, f"non-finite loss {float(loss)} {self._where(trainer, pl_module)}; terms: {terms}"
            )

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: ForecastModule, optimizer: Any) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return
        name = next(
            n
            for n, p in pl_module.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        )
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            if self.folder is not None:
                self.folder.event("overflow_step_skipped", step=trainer.global_step, parameter=name)
            return
        self._stop(trainer, f"non-finite gradient in {name} {self._where(trainer, pl_module)}")


class EpochSeed(Callback):
    """Seeds every random generator from (seed, epoch) as each epoch's first batch starts.

    Dropout and sampled loss pairs then draw the same numbers in epoch k whether the run went straight
    through or resumed from the checkpoint of epoch k-1.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # at the first batch, not at the epoch start: Lightning draws from the global generator in between
        # (the loader's base seed), at a different moment in a resumed run
        if batch_idx:
            return
        s = self.seed * 1_000 + trainer.current_epoch + 1_000_000 * trainer.global_rank
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)


CRASH_ENV = "ATFT_CRASH_AFTER_EPOCH"


class CrashAfterEpoch(Callback):
    """Test hook: with ``ATFT_CRASH_AFTER_EPOCH=k`` the process kills itself (SIGKILL) as epoch k+1 starts.

    Everything of epoch k (its checkpoint, its metrics row) is on disk by then: the test of ``--resume``
    kills a run this way, resumes it, and compares with an uninterrupted run.
    """

    def __init__(self, after_epoch: int) -> None:
        self.after_epoch = after_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.after_epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)
