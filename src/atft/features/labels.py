"""Labels: what each stock's close does over the next h trading days, and variants of it.

The label of date t reads the future by design, so labels live in their own table and namespace
(``target_*``, ``label_end_*``) and can never be chosen as features (``atft.features.dataset``).
A label whose future is not in the data is null, never 0: the last h rows of every stock have none.
"""

from __future__ import annotations

import polars as pl

from atft.features.cross_section import cs_rank, date_major

LABEL_PREFIXES = ("target_", "label_end_")


def label_names(horizons: list[int]) -> dict[str, list[str]]:
    """The label columns by kind, in the order they are written."""
    return {
        "target": [f"target_{h}d" for h in horizons],
        "excess": [f"target_{h}d_excess" for h in horizons],
        "sector_resid": [f"target_{h}d_sector_resid" for h in horizons],
        "rank": [f"target_{h}d_rank" for h in horizons],
        "label_end": [f"label_end_{h}d" for h in horizons],
    }


def training_labels(horizons: list[int], target: str) -> list[str]:
    """The label columns a run learns from for ``data.target`` (``raw``, ``excess``, ``sector_resid``, ``rank``)."""
    kind = "target" if target == "raw" else target
    names = label_names(horizons)
    if kind not in names or kind == "label_end":
        raise ValueError(f"data.target={target!r}: expected one of raw, excess, sector_resid, rank")
    return names[kind]


def build_labels(panel: pl.DataFrame, index: pl.DataFrame, horizons: list[int]) -> pl.DataFrame:
    """Labels for every (code, date) of ``panel`` (sorted by code, date; with ``close`` and ``sector``),
    returned sorted by (date, code) like the features.

    - ``target_{h}d``: close[t+h] / close[t] - 1, t+h being the stock's h-th next row;
    - ``label_end_{h}d``: the date of that row;
    - ``target_{h}d_excess``: minus the index return between the same two dates (null if the index
      lacks either date);
    - ``target_{h}d_sector_resid``: minus the mean label of the stock's sector on date t;
    - ``target_{h}d_rank``: percentile rank of the label among the date's labelled stocks.

    The last two use only labels that end on the calendar's h-th next day (null for a stock whose
    missing rows push its label end later), so no variant reads past the label window it is masked by.
    """
    names = label_names(horizons)
    if not panel["code"].is_sorted():  # each stock's rows must be contiguous, in date order
        panel = panel.sort("code", maintain_order=True)
    # The panel is sorted by (code, date), so a stock's h-th next row is h rows down when that row is
    # still the same stock: a shift, not a window per stock.
    same_stock = {h: pl.col("code").shift(-h) == pl.col("code") for h in horizons}

    def ahead(x: pl.Expr, h: int) -> pl.Expr:
        return pl.when(same_stock[h]).then(x.shift(-h))

    calendar = panel["date"].unique().sort()
    # Position of the row's date in the calendar: a label is on time when its end is h positions later.
    day = pl.lit(calendar).search_sorted(pl.col("date")).cast(pl.Int32)
    close, idx_close = pl.col("close"), pl.col("idx_close")
    out = (
        panel.select("date", "code", "sector", "close")
        .join(index.select("date", idx_close=pl.col("close")), on="date", how="left", maintain_order="left")
        .with_columns(_day=day)
        .with_columns(
            *[(ahead(close, h) / close - 1).alias(t) for h, t in zip(horizons, names["target"], strict=True)],
            *[ahead(pl.col("date"), h).alias(f"label_end_{h}d") for h in horizons],
            # The index return between the same two dates: the index close of the stock's h-th next row.
            *[(ahead(idx_close, h) / idx_close - 1).alias(f"_idx_ret_{h}") for h in horizons],
            *[(ahead(pl.col("_day"), h) == pl.col("_day") + h).alias(f"_on_time_{h}") for h in horizons],
        )
        .with_columns(
            *[
                (pl.col(t) - pl.col(f"_idx_ret_{h}")).alias(f"{t}_excess")
                for h, t in zip(horizons, names["target"], strict=True)
            ]
        )
        .drop("close", "idx_close", "_day", *[f"_idx_ret_{h}" for h in horizons])
    )
    out = date_major(out)
    # The cross-sectional variants mix several stocks' labels, so each may only use labels that end
    # when the calendar's h-th next day closes: a stock with missing rows ends later, and its label
    # would carry information from past a segment's end into its peers' ranks and residuals.
    in_sector = pl.col("sector").is_not_null()
    on_time = {
        t: pl.when(pl.col(f"_on_time_{h}")).then(pl.col(t))
        for h, t in zip(horizons, names["target"], strict=True)
    }
    out = out.with_columns(
        *[
            pl.when(in_sector).then(x - x.mean().over("date", "sector")).alias(f"{t}_sector_resid")
            for t, x in on_time.items()
        ],
        *[cs_rank(x).alias(f"{t}_rank") for t, x in on_time.items()],
    )
    float_cols = names["target"] + names["excess"] + names["sector_resid"] + names["rank"]
    return out.select(
        "date",
        "code",
        *[pl.col(n).cast(pl.Float32) for n in float_cols],
        *names["label_end"],
    )
