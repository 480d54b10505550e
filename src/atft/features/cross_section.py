"""Cross-sectional transforms: each value is compared with every other stock on the same date.

The statistics are taken over the whole universe of a date (``.over("date")`` on the full panel), never
per stock: the previous system grouped by stock by mistake, so every z-score came out as exactly 0.
Nulls stay null and take no part in a date's statistics. Every transform reads a frame sorted by date, so
that each date's rows are contiguous; ``date_major`` and ``interleave_dates`` reorder a per-stock panel
into that order.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_STD = 1.4826
# Columns normalized per pass in ``normalize_per_date``: a pass holds its new columns beside the old.
BATCH = 8
# Stocks sorted by date at a time when a panel is reordered from (code, date) to (date, code): a block's
# columns (a few MB each) stay in the processor's cache while its rows are shuffled.
BLOCK_STOCKS = 500
# Columns reordered per pass (``interleave_dates``): parallel across columns, bounded in memory.
REORDER_BATCH = 8


def stock_blocks(frame: pl.DataFrame, stocks: int) -> list[pl.DataFrame]:
    """``frame`` (sorted by code, date) cut into slices of ``stocks`` whole stocks each (no copy)."""
    rows = frame.select(pl.col("code").rle().struct.field("len")).to_series()  # rows per stock, in order
    ends = rows.cum_sum().gather_every(stocks, offset=stocks - 1).to_list()
    bounds = [0, *ends, frame.height]
    return [frame.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def interleave_dates(blocks: list[pl.DataFrame], batch: int = REORDER_BATCH) -> pl.DataFrame:
    """Blocks of stocks, each sorted by (date, code) and block i's codes all before block i+1's, as one
    frame sorted by (date, code), with ``date`` flagged sorted.

    A date's rows are the blocks' runs of that date one after the other, so the reorder reads a few
    sequential streams. Reordering a frame sorted by (code, date) in one pass instead reads each row from
    a different stock's history, a cache and TLB miss per value: sorting each block by date while it is
    small, then interleaving, is several times faster. The columns are reordered ``batch`` at a time,
    each old batch freed as its new one is made, so the frame is never held twice.

    ``blocks`` is emptied: the reorder reads the blocks' own buffers (no concatenated copy) and frees
    them batch by batch, which it could not while the caller's list still held them.
    """
    frame = pl.concat(blocks, rechunk=False)
    blocks.clear()
    # A stable sort by date alone keeps the block order within a date, which is the code order.
    order = frame.select(pl.arg_sort_by("date", maintain_order=True)).to_series()
    for start in range(0, frame.width, batch):
        columns = frame.columns[start : start + batch]
        frame = frame.with_columns(frame.select(columns)[order])
    # Flagged sorted, every group-by and window over "date" takes contiguous slices instead of hashing.
    return frame.with_columns(pl.col("date").set_sorted())


def date_major(frame: pl.DataFrame, stocks: int = BLOCK_STOCKS) -> pl.DataFrame:
    """``frame`` sorted by (code, date) reordered to (date, code): each block of stocks sorted by date
    on its own, then the blocks interleaved (``interleave_dates``)."""
    return interleave_dates([b.sort("date", maintain_order=True) for b in stock_blocks(frame, stocks)])


def cs_rank(x: pl.Expr, by: str = "date") -> pl.Expr:
    """Percentile rank within the date, in (0, 1]: average rank of ties divided by the date's count."""
    return x.rank("average").over(by) / x.count().over(by)


class _DateRows:
    """The rows of a frame sorted by date laid out as a matrix with one row per date (padded with NaN), so
    that numpy sorts every date's values at once, and each row's date, to broadcast per-date statistics
    back.

    Large arrays come from polars or from an anonymous ``mmap``, never from numpy: numpy asks the kernel
    for transparent huge pages on every array of 4 MB or more, and where huge pages are granted on request
    only (the common ``defrag=madvise``) each fault can stall on memory compaction; touching 1 GB of such
    memory was measured at 2-10 s, against 0.5 s in 4 KiB pages. Each thread keeps its matrix from
    column to column.
    """

    def __init__(self, frame: pl.DataFrame, rows_per_date: np.ndarray) -> None:
        self.shape = (len(rows_per_date), int(rows_per_date.max(initial=1)))
        starts = pl.Series(np.cumsum(rows_per_date) - rows_per_date)
        # Each row's date, and its cell in the matrix: row r of date d goes to (d, r - start_d), increasing,
        # so the copy is sequential.
        layout = frame.select(day=pl.col("date").rle_id().cast(pl.Int64)).with_columns(
            cell=pl.int_range(pl.len(), dtype=pl.Int64)
            + pl.col("day") * self.shape[1]
            - pl.lit(starts).gather(pl.col("day"))
        )
        self.day = layout["day"].to_numpy()
        self.cell = layout["cell"].to_numpy()
        self._local = threading.local()

    def sorted(self, x: np.ndarray) -> np.ndarray:
        """Each date's values of ``x`` (NaN where null) sorted ascending, NaN last, in x's float type."""
        m = getattr(self._local, f"matrix_{x.dtype}", None)
        if m is None:
            size = self.shape[0] * self.shape[1]
            m = np.frombuffer(mmap.mmap(-1, size * x.dtype.itemsize), x.dtype).reshape(self.shape)
            setattr(self._local, f"matrix_{x.dtype}", m)
        m.fill(np.nan)
        m.ravel()[self.cell] = x
        m.sort(axis=1)
        return m

    def buffer(self, name: str) -> np.ndarray:
        """This thread's float32 array ``name`` of one value per row, made on first use."""
        array = getattr(self._local, name, None)
        if array is None:
            array = np.frombuffer(mmap.mmap(-1, 4 * len(self.day)), np.float32)
            setattr(self._local, name, array)
        return array

    def per_row(self, values: np.ndarray) -> np.ndarray:
        """[dates] -> [rows] as float32, in this thread's buffer (until its next call)."""
        return np.take(values.astype(np.float32), self.day, out=self.buffer("per_row"), mode="clip")


def _kth_deviation(s: np.ndarray, n: np.ndarray, center: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per date d, the k[d]-th smallest (0-based) of |s[d, :n[d]] - center[d]|, in float32.

    ``s`` holds each date's n[d] values sorted ascending. The k + 1 values nearest the center are a
    window s[i : i + k + 1], and the k-th smallest distance is the smallest, over the windows, of the
    larger distance at a window's two ends. The left end's distance falls and the right end's rises as i
    grows, so a binary search (every date at once) finds where they cross: ~log2(n) vectorized steps.
    """
    dates, last_col = np.arange(s.shape[0]), s.shape[1] - 1

    def at(i: np.ndarray) -> np.ndarray:
        return s[dates, np.clip(i, 0, last_col)]

    lo, hi = np.zeros_like(n), np.maximum(n - k, 0)  # first crossing i in [0, n - k]; n - k: none
    while (searching := lo < hi).any():
        mid = (lo + hi) // 2
        crossed = at(mid + k) - center >= center - at(mid)
        hi = np.where(searching & crossed, mid, hi)
        lo = np.where(searching & ~crossed, mid + 1, lo)
    right = np.where(lo <= n - 1 - k, at(lo + k) - center, np.inf)  # the window starting at the crossing
    left = np.where(lo > 0, center - at(lo - 1), np.inf)  # or the one just before it
    return np.minimum(right, left).astype(np.float32)


def _median_and_mad(s: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per date: the median of its n values (float64) and the median absolute deviation from it (float32:
    the deviations of the float32 values from the float32 median, as the z-score takes them), from ``s``,
    each date's values sorted (float32, or float64 for a column not yet rounded to float32)."""
    dates = np.arange(s.shape[0])
    lower, upper = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)  # the middle one or two
    median = (s[dates, lower].astype(np.float64) + s[dates, upper]) / 2
    center = median.astype(np.float32)
    s = s.astype(np.float32, copy=False)  # rounding keeps the order
    mad = (_kth_deviation(s, n, center, lower).astype(np.float64) + _kth_deviation(s, n, center, upper)) / 2
    return np.where(n > 0, median, np.nan), mad.astype(np.float32)


def normalize_per_date(frame: pl.DataFrame, columns: list[str], method: str, clip: float) -> pl.DataFrame:
    """Replace ``columns`` by their per-date z-score (``method="z"``) or robust z-score (``"robust_z"``).

    - ``z``: (x - mean) / std over the date's cross-section;
    - ``robust_z``: (x - median) / (1.4826 * MAD). Where half the stocks or more share one value the MAD
      is 0, and the date's standard deviation takes its place.

    Both are clipped to +-clip. A date where x is constant gives 0; nulls stay null. ``frame`` must be
    sorted by date. Counts, means and standard deviations come from one group-by (in float64, so that
    they do not depend on the order rows are visited in). The median and the MAD come from one numpy sort
    of each column's dates (``_DateRows``; the MAD by ``_kth_deviation``): a group-by median per column,
    twice, costs about three times as much. The statistics are broadcast back to the rows by date index.

    The columns are replaced in ``frame`` itself (which is returned): a new frame would leave the caller's
    reference to the old one holding every original column beside its normalized copy (3 GB at 10M rows).
    """
    if method not in ("z", "robust_z"):
        raise ValueError(f"normalization must be 'z' or 'robust_z', got {method!r}")
    if not frame["date"].is_sorted():
        raise ValueError("normalize_per_date needs a frame sorted by date")
    frame.replace_column(frame.get_column_index("date"), frame["date"].set_sorted())
    stats = frame.group_by("date", maintain_order=True).agg(
        pl.len().alias("__rows"),
        *[pl.col(c).count().alias(f"{c}__n") for c in columns],
        *[pl.col(c).cast(pl.Float64).std().alias(f"{c}__std") for c in columns],
        *[pl.col(c).cast(pl.Float64).mean().alias(f"{c}__mean") for c in columns if method == "z"],
    )
    layout = _DateRows(frame, stats["__rows"].to_numpy().astype(np.int64))

    def standardized(c: str) -> pl.Series:
        column = frame[c]
        x = column.cast(pl.Float32).fill_null(np.nan).to_numpy()  # float32, as the features are stored
        scale = stats[f"{c}__std"].to_numpy()
        if method == "robust_z":
            n = stats[f"{c}__n"].to_numpy().astype(np.int64)
            # The median of the column as it is (the sector series are still float64 here).
            center, mad = _median_and_mad(layout.sorted(column.fill_null(np.nan).to_numpy()), n)
            robust = MAD_TO_STD * mad
            scale = np.where(robust > 0, robust, scale)
        else:
            center = stats[f"{c}__mean"].to_numpy()
        # A constant date (also one with a single value: std NaN) divides by infinity: 0, then +0.0 below.
        scale = scale.astype(np.float32)
        scale = np.where(scale > 0, scale, np.inf)
        z = np.subtract(x, layout.per_row(center), out=layout.buffer("z"))
        z /= layout.per_row(scale)
        z += 0.0  # -0.0 -> 0.0
        # polars shares an array it is given, and z is reused for the next column: the clip, in polars, is
        # also the copy into memory of its own (which reuses that of the columns replaced before).
        return pl.Series(c, z, nan_to_null=True).clip(-clip, clip)  # NaN only where x was null

    # numpy and polars release the GIL on whole-array operations: one thread per core works on its own
    # columns.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for start in range(0, len(columns), BATCH):
            # Replaced batch by batch, so each old column is freed as soon as its normalized one exists.
            for normalized in list(pool.map(standardized, columns[start : start + BATCH])):
                frame.replace_column(frame.get_column_index(normalized.name), normalized)
    return frame
