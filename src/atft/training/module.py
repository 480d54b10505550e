"""The Lightning module that trains a forecaster with the multi-horizon loss and validates it every epoch.

It keeps, per epoch, what the run folder and the diagnosis need: the loss and each of its terms, each
term's share of the gradient that reaches the heads, the per-day prediction scale, the heads' activation
statistics, and the validation metrics of ``atft.evaluation.metrics`` for every horizon.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.plugins.precision import Precision
from omegaconf import DictConfig, OmegaConf

from atft.evaluation.metrics import horizon_metrics
from atft.models.atft_gat_fan import quantile_name
from atft.models.registry import build_model
from atft.training.loss import MultiHorizonLoss, gradient_shares

BETA_FEATURE = "beta_60d"  # the exposure term's market beta, read from the window's last step


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or an infinity; the message names the step, the batch and its dates."""


def daily_scale(
    point: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, day: torch.Tensor, n_days: int
) -> torch.Tensor:
    """Mean over the batch's days of std(prediction) / std(label) within the day, per horizon: [H].

    This is SCALE of docs/metrics.md on one batch: a model collapsing to a constant forecast drives it to 0.
    Days with fewer than 2 labels (or constant labels) count as missing; NaN when no day has a value.
    """
    point, y, m = point.detach().float(), y.float(), y_mask.float()  # [N, H]
    idx = day[:, None].expand_as(point)
    n = torch.zeros(n_days, point.shape[1], device=point.device).scatter_add_(0, idx, m)  # [D, H]

    def day_var(v: torch.Tensor) -> torch.Tensor:
        s1 = torch.zeros_like(n).scatter_add_(0, idx, v * m)
        s2 = torch.zeros_like(n).scatter_add_(0, idx, v * v * m)
        return (s2 - s1 * s1 / n.clamp(min=1)) / (n - 1).clamp(min=1)

    var_p, var_y = day_var(point), day_var(y)
    ok = (n >= 2) & (var_y > 0)
    ratio = torch.where(ok, var_p.clamp(min=0).sqrt() / var_y.clamp(min=1e-30).sqrt(), torch.zeros_like(n))
    count = ok.sum(0)
    return torch.where(
        count > 0, ratio.sum(0) / count.clamp(min=1), torch.full_like(count, math.nan, dtype=ratio.dtype)
    )


class ForecastModule(L.LightningModule):
    """ATFT-GAT-FAN with its loss, optimizer, schedule and per-epoch bookkeeping.

    ``config`` is the resolved configuration as plain dicts (it is saved in every checkpoint);
    ``target_scale`` the std of each horizon's training labels, the unit the heads predict in.
    """

    def __init__(
        self,
        config: dict[str, Any],
        feature_names: list[str],
        horizons: list[int],
        target_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg: DictConfig = OmegaConf.create(config)
        self.horizons = list(horizons)
        self.quantiles = [float(q) for q in self.cfg.model.quantiles]
        self.model = build_model(
            len(feature_names), self.horizons, self.quantiles, self.cfg.model, target_scale
        )
        self.loss = MultiHorizonLoss(self.horizons, self.quantiles, self.cfg.loss)
        self.beta_column = feature_names.index(BETA_FEATURE) if BETA_FEATURE in feature_names else None
        self.last_scale = torch.full((len(horizons),), math.nan)  # [H]: the degeneracy guard reads it
        self.epoch_stats: dict[str, float] = {}  # what the run logger writes for the epoch just finished
        self.val_frame: pl.DataFrame | None = None
        self._reset_train_sums()
        self._val_parts: list[dict[str, np.ndarray]] = []
        self._val_loss: list[float] = []

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model(batch["x"], batch.get("edge_index"), batch.get("edge_attr"))

    def _with_beta(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.beta_column is not None and self.cfg.loss.weights.exposure > 0:
            batch["beta"] = batch["x"][:, -1, self.beta_column]
        return batch

    # ------------------------------------------------------------------ training
    def _reset_train_sums(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def _add(self, key: str, value: float) -> None:
        self._sums[key] += 0.0  # the key exists (NaN in the summary) even when no value was finite
        if math.isfinite(value):
            self._sums[key] += value
            self._counts[key] += 1

    def on_train_epoch_start(self) -> None:
        self._reset_train_sums()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch = self._with_beta(batch)
        out = self(batch)
        total, terms = self.loss(out, batch)
        self.current_batch = {"batch_idx": batch_idx, "dates": batch["dates"]}  # for the NaN guard's message
        every = self.cfg.train.diagnostics.grad_monitor_every
        if torch.isfinite(total) and len(terms) > 1 and (batch_idx == 0 or self.global_step % every == 0):
            for name, share in gradient_shares(terms, [out["point"], out["quantiles"]]).items():
                self._add(f"gradshare_{name}", share)

        n_days = len(batch["dates"])
        self.last_scale = daily_scale(out["point"], batch["y"], batch["y_mask"], batch["day"], n_days).cpu()
        self._add("loss", float(total.detach()))
        for name, raw in self.loss.last_raw.items():  # terms[name] == weight * raw, already read back
            self._add(f"loss_{name}", self.loss.weights[name] * raw)
        point = out["point"].detach().float()  # [N, H]
        # one transfer for the per-horizon statistics, not one sync per value
        means, stds = (
            point.mean(0).tolist(),
            (point.std(0) if len(point) > 1 else torch.full_like(point[0], math.nan)).tolist(),
        )
        for j, h in enumerate(self.horizons):
            self._add(f"scale_{h}d", float(self.last_scale[j]))
            self._add(f"head_mean_{h}d", means[j])
            self._add(f"head_std_{h}d", stds[j])
        if self.model.gate_stats is not None:
            gate_mean, gate_std = self.model.gate_stats
            self._add("gate_mean", float(gate_mean))
            self._add("gate_std", float(gate_std))
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=n_days)
        return total

    def train_epoch_summary(self) -> dict[str, float]:
        """Means over the epoch's steps of everything recorded by ``training_step``."""
        return {k: self._sums[k] / self._counts[k] if self._counts[k] else math.nan for k in self._sums}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_parts, self._val_loss = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        batch = self._with_beta(batch)
        out = self(batch)
        total, _ = self.loss(out, batch)
        self._val_loss.append(float(total))
        self._val_parts.append(prediction_arrays(out, batch))

    def on_validation_epoch_end(self) -> None:
        parts, losses = self._val_parts, self._val_loss
        if self.trainer.world_size > 1:  # every process validated other days: gather them all
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, (parts, losses))
            parts = [p for ps, _ in gathered for p in ps]
            losses = [v for _, vs in gathered for v in vs]
        if not parts:
            return
        panel = self.trainer.datamodule.panel
        self.val_frame = predictions_frame(parts, panel, self.horizons, self.quantiles)
        metrics = horizon_metrics(
            self.val_frame, cost_bps=self.cfg.eval.cost_bps, quantile=self.cfg.eval.quantile
        )
        metrics["loss"] = float(np.mean(losses))
        self.val_metrics = metrics
        for name, value in metrics.items():
            # identical on every process (computed from the gathered frame), so no sync is needed
            self.log(f"val/{name}", float(value), prog_bar=name in ("loss", "rankic_5d"), sync_dist=False)

    # ------------------------------------------------------------------ optimizer
    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except that a fused optimizer is clipped under bf16-mixed too.

        Lightning's mixed-precision plugin refuses to clip for any fused optimizer, because under float16 the
        fused step unscales the gradients itself and clipping would see them scaled. Without a loss scaler
        (bf16-mixed, 32-bit) the gradients are the true ones: they get the base plugin's clipping, 32-bit's.
        """
        plugin = self.trainer.precision_plugin
        if getattr(plugin, "scaler", None) is None:
            Precision.clip_gradients(
                plugin, optimizer, gradient_clip_val or 0.0, gradient_clip_algorithm or "norm"
            )
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        opt_cfg, sched = self.cfg.train.optimizer, self.cfg.train.scheduler
        # Not PyTorch's default on a CPU, a Python loop over the ~60 parameters: fused (one kernel for all of
        # them, 3.4x faster than foreach on a CPU, the same update to float32 rounding; docs/performance.md),
        # or foreach (a multi-tensor kernel per update op) under float16, whose loss scaler a fused step would
        # undo inside itself, after the clipping (Lightning refuses that pair; configure_gradient_clipping).
        # The precision is the trainer's resolved one, or outside a Trainer (benchmarks) the configured one,
        # which the caller resolves first: "auto" itself reads as full precision here.
        precision = getattr(self._trainer, "precision", None) or self.cfg.train.trainer.precision
        kernel = {"foreach": True} if str(precision).startswith("16") else {"fused": True}
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay, **kernel
        )
        if sched.name == "constant":
            return optimizer
        if sched.name == "plateau":
            early = self.cfg.train.early_stopping
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=early.mode, factor=sched.plateau_factor, patience=sched.plateau_patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": plateau,
                    "monitor": early.monitor,
                    "interval": "epoch",
                    "strict": False,
                },
            }
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = total * sched.warmup_epochs // max(1, self.trainer.max_epochs)

        def warmup_cosine(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def prediction_arrays(out: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """One batch's forecasts as numpy: point [N, H], quantiles [N, H, Q], labels, masks, stock and day ids."""
    return {
        "point": out["point"].detach().float().cpu().numpy(),
        "quantiles": out["quantiles"].detach().float().cpu().numpy(),
        "y": batch["y"].cpu().numpy(),
        "y_mask": batch["y_mask"].cpu().numpy(),
        "stock": batch["stock_id"].cpu().numpy(),
        "day": batch["day_index"][batch["day"]].cpu().numpy(),
    }


def predictions_frame(
    parts: list[dict[str, np.ndarray]], panel: Any, horizons: list[int], quantiles: list[float]
) -> pl.DataFrame:
    """Long frame, one row per (date, code, horizon): prediction, label (null where missing), quantiles.

    Rows are unique and sorted by (horizon, date, code); a distributed sampler's padding repeats rows,
    which are dropped here.
    """
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n, n_h = cat["point"].shape
    frames = []
    for j, h in enumerate(horizons):
        label = np.where(cat["y_mask"][:, j], cat["y"][:, j], np.nan)
        columns = {
            "date": panel.dates[cat["day"]],
            "code": panel.codes[cat["stock"]],  # stock ids are the panel's rows (0..S-1 in code order)
            "horizon": np.full(n, h, dtype=np.int32),
            "prediction": cat["point"][:, j],
            "label": label,
        }
        for k, q in enumerate(quantiles):
            columns[quantile_name(q)] = cat["quantiles"][:, j, k]
        frames.append(pl.DataFrame(columns))
    return (
        pl.concat(frames)
        .with_columns(pl.col("label").fill_nan(None))
        .unique(["horizon", "date", "code"], keep="first", maintain_order=True)
        .sort("horizon", "date", "code")
    )


@torch.no_grad()
def predict_frame(module: ForecastModule, loader: Any, panel: Any) -> pl.DataFrame:
    """The model's forecasts over a loader, as the long predictions frame of ``predictions_frame``."""
    module.eval()
    device = next(module.parameters()).device
    parts = []
    for batch in loader:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        parts.append(prediction_arrays(module(moved), moved))
    return predictions_frame(parts, panel, module.horizons, module.quantiles)
