"""Labels: what each stock's close does over the next h trading days, and variants of it.

The label of date t reads the future by design, so labels live in their own table and namespace
(``target_*``, ``label_end_*``) and can never be chosen as features (``atft.features.dataset``).
A label whose future is not in the data is null, never 0: the last h rows of every stock have none.
"""

from __future__ import annotations

import polars as pl

from atft.features.cross_section import cs_rank

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
    idx_close = index.select("date", idx_close=pl.col("close"))
    out = panel.select(
        "date",
        "code",
        "sector",
        pl.col("close"),
        *[
            (pl.col("close").shift(-h) / pl.col("close") - 1).over("code").alias(f"target_{h}d")
            for h in horizons
        ],
        *[pl.col("date").shift(-h).over("code").alias(f"label_end_{h}d") for h in horizons],
    ).join(idx_close, on="date", how="left", maintain_order="left")
    for h in horizons:
        end = f"label_end_{h}d"
        out = (
            out.join(
                idx_close.rename({"date": end, "idx_close": "idx_close_end"}),
                on=end,
                how="left",
                maintain_order="left",
            )
            .with_columns(
                (pl.col(f"target_{h}d") - (pl.col("idx_close_end") / pl.col("idx_close") - 1)).alias(
                    f"target_{h}d_excess"
                )
            )
            .drop("idx_close_end")
        )
    # The cross-sectional variants mix several stocks' labels, so each may only use labels that end
    # when the calendar's h-th next day closes: a stock with missing rows ends later, and its label
    # would carry information from past a segment's end into its peers' ranks and residuals.
    calendar = out.select(pl.col("date").unique().sort())
    calendar = calendar.with_columns(
        *[pl.col("date").shift(-h).alias(f"_calendar_end_{h}") for h in horizons]
    )
    out = out.sort("date", "code").join(calendar, on="date", how="left", maintain_order="left")
    in_sector = pl.col("sector").is_not_null()
    on_time = {
        t: pl.when(pl.col(f"label_end_{h}d") == pl.col(f"_calendar_end_{h}")).then(pl.col(t))
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
