"""Cross-sectional transforms: each value is compared with every other stock on the same date.

The statistics are taken over the whole universe of a date (``.over("date")`` on the full panel), never
per stock: the previous system grouped by stock by mistake, so every z-score came out as exactly 0.
Nulls stay null and take no part in a date's statistics.
"""

from __future__ import annotations

import polars as pl

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_STD = 1.4826


def cs_rank(x: pl.Expr, by: str = "date") -> pl.Expr:
    """Percentile rank within the date, in (0, 1]: average rank of ties divided by the date's count."""
    return x.rank("average").over(by) / x.count().over(by)


def normalize_per_date(frame: pl.DataFrame, columns: list[str], method: str, clip: float) -> pl.DataFrame:
    """Replace ``columns`` by their per-date z-score (``method="z"``) or robust z-score (``"robust_z"``).

    - ``z``: (x - mean) / std over the date's cross-section;
    - ``robust_z``: (x - median) / (1.4826 * MAD). Where half the stocks or more share one value the MAD
      is 0, and the date's standard deviation takes its place.

    Both are clipped to +-clip. A date where x is constant gives 0. The statistics of each date are
    aggregated once and joined back, which is far faster than a window expression per column.
    """
    if method not in ("z", "robust_z"):
        raise ValueError(f"normalization must be 'z' or 'robust_z', got {method!r}")
    center = "mean" if method == "z" else "median"
    stats = frame.group_by("date").agg(
        # float64 statistics: identical whatever order a parallel group-by visits the rows in.
        *[getattr(pl.col(c).cast(pl.Float64), center)().alias(f"{c}__center") for c in columns],
        *[pl.col(c).cast(pl.Float64).std().alias(f"{c}__std") for c in columns],
    )
    joined = frame.select("date", *columns).join(stats, on="date", how="left", maintain_order="left")
    if method == "robust_z":
        mad = (
            joined.select("date", *[(pl.col(c) - pl.col(f"{c}__center")).abs().alias(c) for c in columns])
            .group_by("date")
            .agg(*[(MAD_TO_STD * pl.col(c).median()).alias(f"{c}__mad") for c in columns])
        )
        joined = joined.join(mad, on="date", how="left", maintain_order="left")

    def scaled(c: str) -> pl.Expr:
        std = pl.col(f"{c}__std")
        scale = (
            std
            if method == "z"
            else pl.when(pl.col(f"{c}__mad") > 0).then(pl.col(f"{c}__mad")).otherwise(std)
        )
        z = pl.when(scale > 0).then((pl.col(c) - pl.col(f"{c}__center")) / scale)
        return (
            z.otherwise(pl.when(pl.col(c).is_not_null()).then(0.0))
            .clip(-clip, clip)
            .cast(pl.Float32)
            .alias(c)
        )

    return frame.with_columns(joined.select(*[scaled(c) for c in columns]))
