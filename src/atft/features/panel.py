"""The dataset as dense arrays: one float32 panel ``[stocks, days, features]`` that every window is a view of.

A dataset folder (see ``docs/dataset.md``) holds one row per (code, date) that the stock traded. The model reads
fixed-length windows of consecutive calendar days, so :class:`DayPanel` scatters the rows into a dense grid
indexed by (stock, calendar day), with NaN wherever a stock has no row or a value is unknown. A window ending
on day ``d`` is then the slice ``x[:, d-L+1:d+1]``: a view, never a copy, and building it costs nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from atft.features.dataset import DatasetFolder, select_features

_HORIZON = re.compile(r"^target_(\d+)d")
_BLOCK_VALUES = 1 << 26  # values (x 4 bytes = 256 MiB) read from parquet per column block


def label_horizon(name: str) -> int:
    """The horizon in days of a label column (``target_5d_excess`` -> 5)."""
    match = _HORIZON.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a label: label names start with 'target_<h>d'")
    return int(match.group(1))


def _check_names(requested: Sequence[str], available: Sequence[str], file: Path, what: str) -> None:
    """Raise a ValueError naming ``file`` and the nearest matches for every requested name it lacks."""
    missing = [name for name in requested if name not in set(available)]
    if missing:
        hints = {name: difflib.get_close_matches(name, available, n=3) for name in missing}
        detail = "; ".join(
            f"{n!r} (did you mean {', '.join(map(repr, h)) or 'nothing close'}?)" for n, h in hints.items()
        )
        raise ValueError(f"unknown {what} in {file}: {detail}")


def _row_index(folder: DatasetFolder, table: str, codes: list[str], dates: np.ndarray) -> np.ndarray:
    """Flat panel index ``stock * n_days + day`` of every row of ``table`` (int64 [rows])."""
    path = folder.path(table)
    keys = folder.read(table, ["code", "date"])
    stock = keys["code"].cast(pl.Enum(codes)).to_physical().cast(pl.Int64).to_numpy()
    row_dates = keys["date"].to_numpy()
    day = np.searchsorted(dates, row_dates)
    if not np.array_equal(dates[np.minimum(day, len(dates) - 1)], row_dates):
        raise ValueError(f"{path} has dates outside the calendar of features.parquet")
    return stock * len(dates) + day


class DayPanel:
    """A dataset as dense arrays over (stock, calendar day), the input of every day-batched loader.

    Attributes (S stocks, D calendar days, F features, H labels):

    - ``x``          float32 [S, D, F], C-contiguous; NaN where the stock has no row or the feature is null
    - ``y``          float32 [S, D, H]; NaN where the label is null
    - ``label_end``  int32 [S, D, H]: calendar index of the close that ends each label window
      (-1 where null)
    - ``dates``      datetime64[D] [D], sorted;  ``codes`` str [S]
    - ``stock_id``, ``sector_id``  int32 [S] (sector 0 = unknown)
    - ``x_tensor``   ``torch.from_numpy(x)``: the same memory, for zero-copy slicing
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        label_end: np.ndarray,
        dates: np.ndarray,
        codes: np.ndarray,
        feature_names: Sequence[str],
        label_names: Sequence[str],
        stock_id: np.ndarray,
        sector_id: np.ndarray,
    ) -> None:
        n_stocks, n_days, _ = x.shape
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError("x must be a C-contiguous float32 array [stocks, days, features]")
        if y.shape[:2] != (n_stocks, n_days) or label_end.shape != y.shape:
            raise ValueError(f"y {y.shape} and label_end {label_end.shape} must be [{n_stocks}, {n_days}, H]")
        if len(feature_names) != x.shape[2] or len(label_names) != y.shape[2]:
            raise ValueError("one name per feature and per label")
        self.x = x
        self.y = np.asarray(y, dtype=np.float32)
        self.label_end = np.asarray(label_end, dtype=np.int32)
        self.dates = np.asarray(dates, dtype="datetime64[D]")
        self.codes = np.asarray(codes, dtype=str)
        self.feature_names = list(feature_names)
        self.label_names = list(label_names)
        self.stock_id = np.asarray(stock_id, dtype=np.int32)
        self.sector_id = np.asarray(sector_id, dtype=np.int32)
        self.x_tensor = torch.from_numpy(self.x)  # shares memory with x
        self._row_ok: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(stocks, days, features)."""
        return self.x.shape

    @property
    def horizons(self) -> list[int]:
        """The horizon in days of each label."""
        return [label_horizon(name) for name in self.label_names]

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        label_end: np.ndarray | None = None,
        dates: np.ndarray | None = None,
        codes: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        sector_id: np.ndarray | None = None,
    ) -> DayPanel:
        """A panel from in-memory arrays (tests, benchmarks); anything left out gets a plain default.

        Defaults: business days from 2020-01-01, codes ``"0000"..``, features ``f0..``, labels ``target_1d..``,
        every label ending ``h`` calendar days later (-1 where the label is NaN), sector 0.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        n_stocks, n_days, n_features = x.shape
        n_labels = y.shape[2]
        label_names = list(label_names or [f"target_{h + 1}d" for h in range(n_labels)])
        if label_end is None:
            horizons = np.array([label_horizon(n) for n in label_names], dtype=np.int32)
            label_end = np.arange(n_days, dtype=np.int32)[None, :, None] + horizons[None, None, :]
            label_end = np.where(np.isfinite(y), label_end, -1).astype(np.int32)
        if dates is None:
            dates = np.busday_offset(np.datetime64("2020-01-01"), np.arange(n_days), roll="forward")
        return cls(
            x,
            y,
            label_end,
            dates,
            np.asarray(codes if codes is not None else [f"{i:04d}" for i in range(n_stocks)]),
            feature_names or [f"f{i}" for i in range(n_features)],
            label_names,
            np.arange(n_stocks, dtype=np.int32),
            sector_id if sector_id is not None else np.zeros(n_stocks, dtype=np.int32),
        )

    @classmethod
    def load(
        cls,
        dataset_dir: str | Path | DatasetFolder,
        *,
        features: list[str] | None = None,
        labels: list[str] | None = None,
        cache: bool = False,
    ) -> DayPanel:
        """Read a dataset folder into a panel, reading only the requested columns.

        ``features`` default to the manifest's ``model_features``, ``labels`` to its raw ``target_{h}d``
        labels. Features pass through :func:`~atft.features.dataset.select_features`, which refuses any
        label or oracle name. Peak memory is the panel plus one column block (at most 256 MiB of values,
        held twice: by polars and by numpy); nothing is ever copied to float64.

        With ``cache``, ``x`` is memory-mapped from the dataset's panel cache (``cache/panel-*.npy``, see
        :meth:`DatasetFolder.cached_array`), scattered into that file on first use: the same array, bit for
        bit, held by the page cache instead of the process, and later loads skip the features table.
        """
        folder = dataset_dir if isinstance(dataset_dir, DatasetFolder) else DatasetFolder(dataset_dir)
        manifest = folder.manifest
        features = select_features(manifest, features)  # the one gate: refuses labels and oracle columns
        labels = list(labels if labels is not None else manifest["labels"]["target"])
        _check_names(features, folder.columns("features"), folder.path("features"), "features")
        _check_labels(folder, labels)  # before the features are read: a wrong name fails at once

        stocks = folder.stock_table().select("code", "stock_id", "sector_id")
        codes = stocks["code"].to_list()
        dates = np.unique(folder.read("features", ["date"])["date"].to_numpy())
        n_stocks, n_days = len(codes), len(dates)

        shape = (n_stocks, n_days, len(features))

        def fill(x: np.ndarray) -> None:  # x: [S, D, F], uninitialised
            x.fill(np.nan)
            _scatter(x, _row_index(folder, "features", codes, dates), folder, "features", features)

        if cache:  # the key: which columns, in which order, over which stocks (the stamp covers the rest)
            key = hashlib.blake2b("\n".join([*features, "", *codes]).encode(), digest_size=8).hexdigest()
            x = folder.cached_array("panel", key, shape, fill)
        else:
            x = np.empty(shape, dtype=np.float32)
            fill(x)
        y, label_end = _read_labels(folder, labels, codes, dates)
        return cls(
            x,
            y,
            label_end,
            dates,
            np.asarray(codes),
            features,
            labels,
            stocks["stock_id"].to_numpy(),
            stocks["sector_id"].fill_null(0).to_numpy(),
        )

    def with_labels(self, dataset_dir: str | Path | DatasetFolder, labels: list[str]) -> DayPanel:
        """The same panel with other labels read from its dataset (``target_5d_rank`` ...): the features are
        shared, not copied. A run trains on such a panel when ``data.target`` is not the raw return."""
        folder = dataset_dir if isinstance(dataset_dir, DatasetFolder) else DatasetFolder(dataset_dir)
        _check_labels(folder, list(labels))
        y, label_end = _read_labels(folder, list(labels), list(self.codes), self.dates)
        panel = DayPanel(
            self.x,
            y,
            label_end,
            self.dates,
            self.codes,
            self.feature_names,
            labels,
            self.stock_id,
            self.sector_id,
        )
        panel._row_ok = self._row_ok
        return panel

    @property
    def row_ok(self) -> np.ndarray:
        """bool [S, D]: every feature of (stock, day) is finite (computed once, in blocks of stocks)."""
        if self._row_ok is None:
            n_stocks, n_days, n_features = self.x.shape
            block = max(1, _BLOCK_VALUES // max(1, n_days * n_features))
            self._row_ok = np.empty((n_stocks, n_days), dtype=bool)
            for start in range(0, n_stocks, block):  # bounded temporaries; not a per-stock loop
                self._row_ok[start : start + block] = np.isfinite(self.x[start : start + block]).all(-1)
        return self._row_ok

    def full_windows(self, lookback: int) -> np.ndarray:
        """bool [S, D]: the window of days d-L+1..d exists (d >= L-1) and all its features are finite."""
        counts = np.zeros((self.x.shape[0], self.x.shape[1] + 1), dtype=np.int32)
        np.cumsum(self.row_ok, axis=1, out=counts[:, 1:])
        full = np.zeros(self.row_ok.shape, dtype=bool)
        full[:, lookback - 1 :] = (counts[:, lookback:] - counts[:, :-lookback]) == lookback
        return full

    def eligible(self, lookback: int, label_mask: np.ndarray | None = None) -> np.ndarray:
        """bool [S, D]: a full valid window ending on day d and at least one usable label on day d.

        ``label_mask`` (bool [S, D, H]) says which labels are usable; by default every finite one.
        """
        if label_mask is None:
            label_mask = np.isfinite(self.y)
        return self.full_windows(lookback) & label_mask.any(-1)

    def window_view(self, day: int, lookback: int) -> torch.Tensor:
        """The windows of every stock ending on ``day``: [S, L, F], a view of the panel (no copy)."""
        if not lookback - 1 <= day < self.x.shape[1]:
            raise IndexError(f"day {day} has no full {lookback}-day window in a {self.x.shape[1]}-day panel")
        return self.x_tensor[:, day - lookback + 1 : day + 1]

    def windows_for_day(
        self,
        day: int,
        stock_idx: np.ndarray | torch.Tensor,
        lookback: int,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The windows of the given stocks ending on ``day``: [N, L, F] float32, gathered into ``out`` or a new tensor."""
        index = torch.as_tensor(stock_idx, dtype=torch.long)
        if out is None:
            out = empty_float32((len(index), lookback, self.x.shape[2]))
        return torch.index_select(self.window_view(day, lookback), 0, index, out=out)


def _check_labels(folder: DatasetFolder, labels: list[str]) -> None:
    """Every label and its ``label_end_<h>d`` column exist in labels.parquet, or a ValueError naming the file."""
    label_ends = [f"label_end_{label_horizon(name)}d" for name in labels]
    _check_names(labels + label_ends, folder.columns("labels"), folder.path("labels"), "labels")


def _read_labels(
    folder: DatasetFolder, labels: list[str], codes: list[str], dates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The labels ``[S, D, H]`` (NaN where null) and the calendar index of each one's last close (-1 where null);
    the names were checked by :func:`_check_labels`."""
    label_ends = [f"label_end_{label_horizon(name)}d" for name in labels]
    n_stocks, n_days = len(codes), len(dates)
    y = np.full((n_stocks, n_days, len(labels)), np.nan, dtype=np.float32)
    flat = _row_index(folder, "labels", codes, dates)
    _scatter(y, flat, folder, "labels", labels)

    label_end = np.full((n_stocks, n_days, len(labels)), -1, dtype=np.int32)
    ends = folder.read("labels", sorted(set(label_ends)))
    for j, name in enumerate(label_ends):  # one pass per label column, not per row
        end_dates = ends[name].to_numpy()
        known = ~np.isnat(end_dates)
        label_end.reshape(-1, len(labels))[flat[known], j] = np.searchsorted(dates, end_dates[known])
    return y, label_end


def empty_float32(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor in numpy-allocated memory.

    numpy asks the kernel for huge pages on large arrays; a batch of windows is hundreds of MB, and filling
    it on 4 KiB pages spends more time in page faults than in copying (about 2-3x slower on CPU).
    """
    return torch.from_numpy(np.empty(shape, dtype=np.float32))


def _scatter(
    out: np.ndarray, flat: np.ndarray, folder: DatasetFolder, table: str, columns: list[str]
) -> None:
    """Fill ``out`` [S, D, C] at flat (stock, day) positions with ``columns`` of ``table``, a block at a time."""
    grid = out.reshape(-1, out.shape[2])  # a view: out is C-contiguous
    block = max(1, _BLOCK_VALUES // max(1, len(flat)))
    for start in range(0, len(columns), block):  # column blocks, each one vectorized scatter
        names = columns[start : start + block]
        values = folder.read(table, names).cast(pl.Float32).fill_null(float("nan")).to_numpy()
        grid[flat, start : start + len(names)] = values  # values: [rows, len(names)] float32
