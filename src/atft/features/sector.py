"""Sector features: each stock against the other stocks of its sector on the same date.

Two kinds, kept apart on purpose:

- same-date statistics over the sector's members (``sector_cross_section``): the leave-one-out mean
  return, the return relative to it, and the z-score within the sector;
- time-series features of the sector itself (``sector_series_features``): momentum and volatility of the
  sector's equal-weighted daily return, computed on one row per (sector, date) and joined back. Rolling a
  window over the stock panel instead would mix rows of different stocks and dates.

Stocks without a sector get null sector features: there is no sector to compare them with.
"""

from __future__ import annotations

import polars as pl

SECTOR_RETURN_WINDOWS = (1, 5, 20)
SECTOR_Z_WINDOWS = (5, 20)


def sector_cross_section(panel: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Add leave-one-out sector returns, returns relative to them, and z-scores within the sector.

    The sector statistics of each (date, sector) are aggregated once and joined back (one pass instead of
    one window expression per feature). A stock's leave-one-out mean is over the other members with a
    value: (sum - own) / (count - own_present); null when no other member has one.
    """
    group = ["date", "sector"]
    stats = (
        panel.lazy()
        .filter(pl.col("sector").is_not_null())
        .group_by(group)
        .agg(
            # float64 sums: the order in which a parallel group-by adds a group's values varies from run to
            # run, and in float32 that alone changes (sum - own) in the last digits.
            *[pl.col(f"ret_{w}d").cast(pl.Float64).sum().alias(f"_sum_{w}") for w in SECTOR_RETURN_WINDOWS],
            *[pl.col(f"ret_{w}d").count().alias(f"_n_{w}") for w in SECTOR_RETURN_WINDOWS],
            *[pl.col(f"ret_{w}d").cast(pl.Float64).mean().alias(f"_mean_{w}") for w in SECTOR_Z_WINDOWS],
            *[pl.col(f"ret_{w}d").cast(pl.Float64).std().alias(f"_std_{w}") for w in SECTOR_Z_WINDOWS],
        )
        .collect()
    )
    exprs: dict[str, pl.Expr] = {}
    for w in SECTOR_RETURN_WINDOWS:
        r = pl.col(f"ret_{w}d")
        others = pl.col(f"_n_{w}") - r.is_not_null().cast(pl.UInt32)
        loo = pl.when(others > 0).then((pl.col(f"_sum_{w}") - r.fill_null(0)) / others)
        exprs[f"sector_ret_{w}d"] = loo
        exprs[f"rel_sector_ret_{w}d"] = r - loo
    for w in SECTOR_Z_WINDOWS:
        std = pl.col(f"_std_{w}")
        exprs[f"sector_z_ret_{w}d"] = pl.when(std > 0).then(
            (pl.col(f"ret_{w}d") - pl.col(f"_mean_{w}")) / std
        )
    out = (
        panel.join(stats, on=group, how="left", maintain_order="left")
        .with_columns(*[e.cast(pl.Float32).alias(n) for n, e in exprs.items()])
        .drop(stats.columns[2:])
    )
    return out, list(exprs)


def sector_series(panel: pl.DataFrame) -> pl.DataFrame:
    """One row per (sector, date): the sector's equal-weighted mean daily return and its member count."""
    return (
        panel.lazy()
        .filter(pl.col("sector").is_not_null())
        .group_by("sector", "date")
        .agg(sector_mean_ret_1d=pl.col("ret_1d").cast(pl.Float64).mean())
        .sort("sector", "date")
        .collect()
    )


def sector_series_features(series: pl.DataFrame) -> pl.DataFrame:
    """Momentum (compounded return) and volatility of each sector's own daily series over 20 and 60 days."""
    r = pl.col("sector_mean_ret_1d")
    log_r = (1 + r).log()
    return series.select(
        "sector",
        "date",
        *[
            expr.over("sector").alias(name)
            for name, expr in {
                "sector_mom_20d": log_r.rolling_sum(20).exp() - 1,
                "sector_mom_60d": log_r.rolling_sum(60).exp() - 1,
                "sector_vol_20d": r.rolling_std(20),
                "sector_vol_60d": r.rolling_std(60),
            }.items()
        ],
    )
