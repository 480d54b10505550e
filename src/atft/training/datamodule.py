"""Day-batched loading: each sample is one trading day's full cross-section of eligible stocks.

Ranking is learned and judged within a day, so a sample is a whole day, not a stock: the windows of every
eligible stock ``[N_day, L, F]``, their labels ``[N_day, H]`` and label masks. A batch concatenates a few
days PyG-style (``day`` / ``day_ptr`` say which rows belong to which day).

Masks: ``y_mask`` is True where a label exists and may be used. Masked entries of ``y`` are set to 0 only so
that the tensor is finite; they are not labels and must never enter a loss or a metric.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from atft.config import DataConfig
from atft.data.splits import Split
from atft.features.panel import DayPanel, empty_float32

DateLike = str | dt.date | np.datetime64
DateRange = tuple[DateLike | None, DateLike | None]
DayGraph = Callable[[int, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def _day(value: DateLike) -> np.datetime64:
    return np.datetime64(value, "D")


def recency_weights(day_index: np.ndarray, halflife_days: float) -> np.ndarray:
    """float32 [n]: the loss weight of each training day, halving every ``halflife_days`` trading days of age.

    Age counts calendar (trading-day) indices back from the last training day, so the last day weighs most;
    the weights are scaled to a mean of 1 over the days given, so the loss keeps its scale and only the
    balance between old and recent days changes. ``halflife_days`` 0 gives every day weight 1.
    """
    day_index = np.asarray(day_index, dtype=np.int64)
    if halflife_days < 0:
        raise ValueError(f"train.recency_halflife_days must be >= 0, got {halflife_days}")
    if halflife_days == 0 or len(day_index) == 0:
        return np.ones(len(day_index), dtype=np.float32)
    age = day_index.max() - day_index  # [n] >= 0
    weight = np.exp2(-age / halflife_days)
    return (weight / weight.mean()).astype(np.float32)


class DayDataset(Dataset):
    """The days of a panel within ``[start, end]`` (inclusive; None = open) that have enough eligible stocks.

    A stock is eligible on day ``d`` when its window of ``lookback`` days ending on ``d`` has every feature
    finite: eligibility reads only data up to ``d``, so a stock that delists tomorrow is still in today's
    cross-section (and in its neighbours' graph). A missing or masked label only removes the row from the
    loss and the metrics. Windows may reach back before ``start``: features are the past, only labels can
    leak. With ``require_labels`` (training), a day on which no eligible stock has a usable label teaches
    nothing and is dropped (reason ``no_labels``); evaluation serves every day, so the last days of a
    segment are forecast too.

    ``exclude`` lists dates to leave out (the embargo blocks of a walk-forward fold).
    ``recency_halflife`` > 0 (training) gives each kept day the loss weight :func:`recency_weights`
    (``day_weight`` [n_kept]) and adds it to the day's sample as ``day_weight``; 0 (the default, and every
    evaluation split) adds nothing.
    ``graph(day, stocks)`` (e.g. ``atft.models.graph.DayGraphBuilder``), when given, adds the day's stock graph
    to each sample: ``edge_index`` [2, E] in the day's own row numbers and ``edge_attr`` [E, A].
    ``label_cutoff`` (a calendar index or a date) masks out every label whose window ends after it, even
    when the stock has missing rows, so no training label can look past the end of the training segment.
    Masked labels among the stocks with a full window are counted in ``masked_labels``; days dropped are
    counted in ``dropped_days`` and, by reason, in ``dropped_reasons``.
    """

    def __init__(
        self,
        panel: DayPanel,
        start: DateLike | None = None,
        end: DateLike | None = None,
        *,
        lookback: int = DataConfig.lookback,
        min_stocks: int = 20,
        label_cutoff: int | DateLike | None = None,
        exclude: np.ndarray | None = None,
        graph: DayGraph | None = None,
        require_labels: bool = False,
        recency_halflife: float = 0.0,
    ) -> None:
        self.panel, self.lookback, self.min_stocks = panel, lookback, min_stocks
        self.graph = graph
        first = 0 if start is None else int(np.searchsorted(panel.dates, _day(start), side="left"))
        stop = len(panel.dates) if end is None else int(np.searchsorted(panel.dates, _day(end), side="right"))
        days = np.arange(first, stop)
        if label_cutoff is not None and not isinstance(label_cutoff, int | np.integer):
            # the last calendar day on or before the cutoff date
            label_cutoff = int(np.searchsorted(panel.dates, _day(label_cutoff), side="right")) - 1
        self.label_cutoff = label_cutoff

        finite = np.isfinite(panel.y[:, first:stop])  # [S, n, H]
        mask = finite if label_cutoff is None else finite & (panel.label_end[:, first:stop] <= label_cutoff)
        window_ok = panel.full_windows(lookback)[:, first:stop]  # [S, n]
        eligible = window_ok  # [S, n]: the past alone decides who is in the day's universe
        self.masked_labels = int((finite & ~mask & window_ok[..., None]).sum())

        counts = eligible.sum(0)  # [n]
        embargoed = np.zeros(len(days), bool) if exclude is None else np.isin(panel.dates[days], exclude)
        early = ~embargoed & (days < lookback - 1)
        few = ~embargoed & ~early & (counts < min_stocks)
        unlabelled = ~embargoed & ~early & ~few & ~(window_ok[..., None] & mask).any((0, 2))
        unlabelled &= require_labels
        keep = ~embargoed & ~early & ~few & ~unlabelled
        self.dropped_reasons = {
            "embargo": int(embargoed.sum()),
            "before_first_full_window": int(early.sum()),
            "too_few_stocks": int(few.sum()),
            "no_labels": int(unlabelled.sum()),
        }
        self.dropped_days = int((~keep).sum())

        self.day_index = days[keep]  # [n_kept] calendar indices
        _, stocks = np.nonzero(eligible[:, keep].T)  # sorted by day, then stock
        self.stock_idx = stocks.astype(np.int64)  # [sum N]: the eligible stocks of kept day i lie in
        self.day_ptr = np.concatenate(
            [[0], np.cumsum(counts[keep])]
        )  # [n_kept + 1]  stock_idx[ptr[i]:ptr[i+1]]
        self.label_mask = np.ascontiguousarray(mask[:, keep].transpose(1, 0, 2))  # [n_kept, S, H]
        self.day_weight = recency_weights(self.day_index, recency_halflife) if recency_halflife else None

    def __len__(self) -> int:
        return len(self.day_index)

    @property
    def stock_windows(self) -> int:
        """Total number of (stock, day) samples over the kept days."""
        return int(self.day_ptr[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One day: ``x`` [N, L, F], ``y`` [N, H] (0 where masked), ``y_mask`` [N, H], ids [N], date."""
        return self._day(i, out=None)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Several days, their windows gathered into one buffer, so that :func:`collate_days` need not copy them.

        The DataLoader calls this (when present) instead of ``__getitem__`` once per index.
        """
        sizes = [int(self.day_ptr[i + 1] - self.day_ptr[i]) for i in indices]
        buffer = empty_float32((sum(sizes), self.lookback, self.panel.x.shape[2]))  # [sum N, L, F]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return [
            self._day(i, out=buffer[a:b]) for i, a, b in zip(indices, starts[:-1], starts[1:], strict=True)
        ]

    def _day(self, i: int, out: torch.Tensor | None, windows: bool = True) -> dict[str, Any]:
        # small per-day gathers in numpy: torch's advanced indexing costs milliseconds per call here
        day = int(self.day_index[i])
        stocks = self.stock_idx[self.day_ptr[i] : self.day_ptr[i + 1]]  # [N]
        y_mask = self.label_mask[i][stocks]  # [N, H]
        y = np.where(y_mask, self.panel.y[stocks, day], np.float32(0))  # [N, H], 0 where masked
        if windows:
            window = {"x": self.panel.windows_for_day(day, torch.from_numpy(stocks), self.lookback, out=out)}
        else:  # gathered on the device from the resident panel (DayDataModule.on_after_batch_transfer)
            window = {"window_stock": torch.from_numpy(stocks)}
        item = {
            **window,
            "y": torch.from_numpy(y),
            "y_mask": torch.from_numpy(y_mask),
            "stock_id": torch.from_numpy(self.panel.stock_id[stocks].astype(np.int64)),
            "sector_id": torch.from_numpy(self.panel.sector_id[stocks].astype(np.int64)),
            "date": str(self.panel.dates[day]),
            "day_index": day,
        }
        if self.graph is not None:
            item["edge_index"], item["edge_attr"] = self.graph(day, stocks)
        if self.day_weight is not None:
            item["day_weight"] = float(self.day_weight[i])
        return item

    def label_std(self) -> np.ndarray:
        """Std of each label over this dataset's samples (masked labels left out): [H], NaN without labels."""
        days = np.repeat(self.day_index, np.diff(self.day_ptr))  # [sum N]
        y = self.panel.y[self.stock_idx, days]  # [sum N, H]
        mask = self.label_mask[np.repeat(np.arange(len(self)), np.diff(self.day_ptr)), self.stock_idx]
        return np.array([np.std(y[mask[:, j], j]) if mask[:, j].any() else np.nan for j in range(y.shape[1])])

    def summary(self) -> dict[str, Any]:
        """Counts for the CLI and the run manifest."""
        dates = self.panel.dates[self.day_index]
        return {
            "days": len(self),
            "first_date": str(dates[0]) if len(dates) else None,
            "last_date": str(dates[-1]) if len(dates) else None,
            "days_dropped": self.dropped_days,
            "dropped_reasons": dict(self.dropped_reasons),
            "stock_windows": self.stock_windows,
            "labels_masked_by_cutoff": self.masked_labels,
        }


class DayIndices(Dataset):
    """The days of a :class:`DayDataset` without their windows: each row's stock (``window_stock``) and day
    instead, for a panel resident on the device (:meth:`DayDataModule.on_after_batch_transfer` gathers the
    windows there). Labels, ids and graphs are served as by the dataset itself."""

    def __init__(self, days: DayDataset) -> None:
        self.days = days

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.days._day(i, out=None, windows=False)


def gather_windows(x: torch.Tensor, stock: torch.Tensor, day: torch.Tensor, lookback: int) -> torch.Tensor:
    """The windows ending on ``day`` of ``stock`` (both [R]) from a panel ``x`` [S, T, F]: [R, L, F], on
    ``x``'s device; the same values as :meth:`DayPanel.windows_for_day`."""
    steps = torch.arange(1 - lookback, 1, device=x.device)  # [L]
    return x[stock[:, None], day[:, None] + steps[None, :]]  # [R, L, F]


def collate_days(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate days into one batch: rows of all days stacked, ``day`` [sum N] and ``day_ptr`` [n+1] say whose."""
    sizes = torch.tensor([len(item["stock_id"]) for item in items], dtype=torch.long)
    batch = {
        key: torch.cat([item[key] for item in items]) for key in ("y", "y_mask", "stock_id", "sector_id")
    }
    if "x" in items[0]:
        batch["x"] = _concat_rows([item["x"] for item in items])
    else:
        batch["window_stock"] = torch.cat([item["window_stock"] for item in items])
    batch["day"] = torch.repeat_interleave(torch.arange(len(items)), sizes)
    batch["day_ptr"] = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    batch["dates"] = [item["date"] for item in items]
    batch["day_index"] = torch.tensor([item["day_index"] for item in items], dtype=torch.long)
    if "day_weight" in items[0]:
        batch["day_weight"] = torch.tensor([item["day_weight"] for item in items], dtype=torch.float32)
    if "edge_index" in items[0]:
        # each day's graph numbers its own rows from 0: shift them to the day's rows in the batch
        offsets = batch["day_ptr"][:-1]
        batch["edge_index"] = torch.cat(
            [item["edge_index"] + o for item, o in zip(items, offsets, strict=True)], 1
        )
        batch["edge_attr"] = torch.cat([item["edge_attr"] for item in items])
    return batch


def _concat_rows(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts)``, without copying when the parts already lie end to end in one buffer."""
    first = parts[0]
    storage, offset = first.untyped_storage(), first.storage_offset()
    for part in parts:
        same_buffer = part.untyped_storage().data_ptr() == storage.data_ptr()
        if not (same_buffer and part.is_contiguous() and part.storage_offset() == offset):
            return torch.cat(parts)
        offset += part.numel()
    rows = sum(len(part) for part in parts)
    return first.new_empty(0).set_(storage, first.storage_offset(), (rows, *first.shape[1:]))


class EpochShuffle(Sampler[int]):
    """Shuffles the days anew each epoch from ``seed`` and the epoch number alone.

    Lightning calls ``set_epoch`` before each training epoch, so the order of epoch k is the same whether
    a run went straight through or was interrupted and resumed from a checkpoint.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def _check_disjoint(ranges: dict[str, DateRange | None]) -> None:
    """Refuse segments that share a day: a day used to train must never also judge the model."""
    lo, hi = np.datetime64("0001-01-01", "D"), np.datetime64("9999-12-31", "D")
    spans = {
        name: (lo if span[0] is None else _day(span[0]), hi if span[1] is None else _day(span[1]))
        for name, span in ranges.items()
        if span is not None
    }
    names = list(spans)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (a0, a1), (b0, b1) = spans[a], spans[b]
            if a0 <= b1 and b0 <= a1:
                raise ValueError(
                    f"the {a} range {ranges[a]} and the {b} range {ranges[b]} overlap: a day may belong to one "
                    "segment only (atft.data.splits gives purged, disjoint segments)"
                )


class DayDataModule(L.LightningDataModule):
    """Train / valid / test day loaders over one panel, loaded once.

    Training days are shuffled from (seed, epoch) (``EpochShuffle``); evaluation days come in date order. Each split masks
    labels whose window ends after its own last day (``label_cutoff``), so no label reaches past its segment.
    ``train_panel`` (the same panel with other labels, :meth:`DayPanel.with_labels`) gives the training split
    the labels a run learns from (``data.target``); validation and test always serve the panel's own.
    ``recency_halflife`` (trading days, ``train.recency_halflife_days``; 0 = off) weights each training day's
    loss by :func:`recency_weights`; evaluation days are never weighted.
    """

    def __init__(
        self,
        dataset_dir: str | Path | DayPanel,
        *,
        lookback: int = DataConfig.lookback,
        days_per_batch: int = 4,
        min_stocks: int = 20,
        train: DateRange | None = None,
        valid: DateRange | None = None,
        test: DateRange | None = None,
        num_workers: int = 0,
        seed: int = 0,
        features: list[str] | None = None,
        labels: list[str] | None = None,
        train_exclude: np.ndarray | None = None,
        graph: DayGraph | None = None,
        train_panel: DayPanel | None = None,
        recency_halflife: float = 0.0,
        panel_on_device: bool = False,
    ) -> None:
        super().__init__()
        self.panel_on_device = panel_on_device
        self._resident: torch.Tensor | None = None  # the panel's features on the training device
        self.recency_halflife = float(recency_halflife)
        self.graph = graph
        self.train_panel = train_panel
        self.train_exclude = train_exclude
        self.panel = dataset_dir if isinstance(dataset_dir, DayPanel) else None
        self.dataset_dir = None if self.panel is not None else Path(dataset_dir)
        self.lookback, self.days_per_batch, self.min_stocks = lookback, days_per_batch, min_stocks
        self.ranges = {"train": train, "valid": valid, "test": test}
        _check_disjoint(self.ranges)
        self.num_workers, self.seed = num_workers, seed
        self.features, self.labels = features, labels
        self.datasets: dict[str, DayDataset] = {}

    @classmethod
    def from_split(cls, dataset_dir: str | Path | DayPanel, split: Split, **kwargs: Any) -> DayDataModule:
        """The loaders of one split of ``atft.data.splits`` (its segments, and its embargo left out of training)."""
        ranges = {r.name: (r.start_date, r.end_date) for r in split.ranges()}
        embargo = [split.calendar[e.start : e.end + 1] for e in split.embargo]
        exclude = np.concatenate(embargo).astype("datetime64[D]") if embargo else None
        return cls(dataset_dir, **ranges, train_exclude=exclude, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Load the panel (once) and build the dataset of every split that has a date range."""
        if self.panel is None:
            self.panel = DayPanel.load(self.dataset_dir, features=self.features, labels=self.labels)
        for split, span in self.ranges.items():
            if span is not None and split not in self.datasets:
                start, end = span
                cutoff = len(self.panel.dates) - 1 if end is None else end
                panel = self.train_panel if split == "train" and self.train_panel is not None else self.panel
                self.datasets[split] = DayDataset(
                    panel,
                    start,
                    end,
                    lookback=self.lookback,
                    min_stocks=self.min_stocks,
                    label_cutoff=cutoff,
                    exclude=self.train_exclude if split == "train" else None,
                    graph=self.graph,
                    require_labels=split == "train",
                    recency_halflife=self.recency_halflife if split == "train" else 0.0,
                )

    def _loader(self, split: str, shuffle: bool, windows_on_device: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} split: give a {split}=(start, end) date range and call setup()")
        if len(self.datasets[split]) == 0:
            raise ValueError(f"the {split} split has no days: {self.datasets[split].summary()}")
        dataset = self.datasets[split]
        return DataLoader(
            DayIndices(dataset) if windows_on_device else dataset,
            batch_size=self.days_per_batch,
            sampler=EpochShuffle(len(dataset), self.seed) if shuffle else None,
            collate_fn=collate_days,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # page-locked batches on a GPU machine, so Lightning's copy to the card (non_blocking) overlaps
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        # Only the training loop gathers on the device: the other loaders also feed forecasts made outside
        # Lightning (``predict_frame``), which expect the windows in the batch.
        return self._loader("train", shuffle=True, windows_on_device=self.panel_on_device)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Gather a training batch's windows from the panel resident on the batch's device (moved there once)."""
        if "window_stock" not in batch:
            return batch
        stock = batch.pop("window_stock")  # [R]
        device = stock.device
        if self._resident is None or self._resident.device != device:
            self._resident = self.panel.x_tensor.to(device)  # once per run; a no-op on a CPU
        day = batch["day_index"][batch["day"]]  # [R]: each row's calendar day
        batch["x"] = gather_windows(self._resident, stock, day, self.lookback)  # [R, L, F]
        return batch

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Any split in calendar order, unshuffled: for forecasting it after training."""
        return self._loader(split, shuffle=False)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per split: days kept and dropped (with reasons), stock-windows, labels masked by the cutoff."""
        return {split: dataset.summary() for split, dataset in self.datasets.items()}
