"""Factor ICs by period: how well each input feature alone ranked the forward return, segment by segment.

A model learns which features paid during its training segment. When the same features pay the other way
later (a regime change, like the JP sample's switch from reversal to momentum in 2025), no amount of
training on the old segment helps, and the first thing a user needs to see is that table. For every feature,
its daily RankIC against a label (Spearman over the day's stocks, ``daily_ic``) is averaged over each
segment's days; ``drift`` is the last segment's mean minus the first's.

``ic_agreement`` condenses the table into one number per later segment: the Pearson correlation, across
features, between their training-segment RankICs and their RankICs in that segment. Near 1, the features
that paid in training still pay, the same way round; near 0, what paid no longer does; below 0, the
features' signs flipped broadly. The run doctor's ``regime_change`` rule reads it (docs/doctor.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import numpy as np
import polars as pl

from atft.evaluation.metrics import daily_ic
from atft.evaluation.stats import newey_west_tstat

__all__ = ["factor_ic_by_segment", "ic_agreement", "sign_flips"]


def factor_ic_by_segment(
    frame: pl.DataFrame,
    features: Sequence[str],
    label: str,
    segments: Mapping[str, tuple[date, date]],
    *,
    lags: int = 0,
    date_col: str = "date",
    min_stocks: int = 5,
) -> pl.DataFrame:
    """One row per feature: its mean daily RankIC against ``label`` over each segment's days.

    ``segments`` maps a segment name to its first and last date (inclusive), in time order. Columns:
    ``feature``, then per segment ``rankic_<segment>``, ``t_<segment>`` (the Newey-West t-stat of that
    mean with ``lags`` lags: ``default_lags(h)`` for an h-day label, whose daily ICs overlap) and
    ``days_<segment>`` (a day counts when at least ``min_stocks`` stocks have both values); then ``drift``
    (last segment minus first; NaN with one segment).
    Rows are sorted by the absolute RankIC of the first segment, largest first. A feature with no qualifying
    day in a segment gets NaN there, never 0 (a market-wide feature, one value per date, has no day to rank
    in any segment; callers may drop such all-NaN rows).
    """
    if not segments:
        raise ValueError("factor_ic_by_segment needs at least one segment")
    missing = [c for c in (date_col, label, *features) if c not in frame.columns]
    if missing:
        raise ValueError(f"factor IC: column(s) {', '.join(map(repr, missing))} not in the frame")
    names = list(segments)
    segment_of = pl.lit(None, dtype=pl.String)
    for name in reversed(names):  # the first segment wins where two overlap
        first, last = segments[name]
        segment_of = (
            pl.when(pl.col(date_col).is_between(first, last)).then(pl.lit(name)).otherwise(segment_of)
        )
    rows = []
    for feature in features:
        daily = daily_ic(frame, feature, label, date_col=date_col, min_stocks=min_stocks)
        labelled = daily.with_columns(segment=segment_of)
        row: dict[str, object] = {"feature": feature}
        for name in names:
            ic = labelled.filter(pl.col("segment") == name)["ic"].to_numpy()
            row[f"rankic_{name}"] = float(ic.mean()) if ic.size else float("nan")
            row[f"t_{name}"] = newey_west_tstat(ic, lags) if ic.size else float("nan")
            row[f"days_{name}"] = int(ic.size)
        rows.append(row)
    schema = {"feature": pl.String} | {
        col: (pl.Int64 if col.startswith("days_") else pl.Float64)
        for name in names
        for col in (f"rankic_{name}", f"t_{name}", f"days_{name}")
    }
    table = pl.DataFrame(rows, schema=schema, orient="row")
    first, last = f"rankic_{names[0]}", f"rankic_{names[-1]}"
    drift = pl.col(last) - pl.col(first) if len(names) > 1 else pl.lit(float("nan"))
    return table.with_columns(drift=drift.cast(pl.Float64)).sort(
        pl.col(first).abs().fill_nan(None), descending=True, nulls_last=True
    )


def ic_agreement(table: pl.DataFrame, reference: str, other: str) -> float:
    """Pearson correlation across features of ``rankic_<reference>`` and ``rankic_<other>``.

    Features missing in either segment are left out; NaN with fewer than 3 features or no spread.
    """
    a = table[f"rankic_{reference}"].to_numpy().astype(float)
    b = table[f"rankic_{other}"].to_numpy().astype(float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def sign_flips(table: pl.DataFrame, reference: str, later: str, t_min: float) -> tuple[list[str], list[str]]:
    """The features whose RankIC is significant in ``later`` (|t| >= ``t_min``), and those among them whose
    RankIC in ``reference`` has the opposite sign: what paid later, and what of it paid the other way
    before. Both lists are ordered by |t| in ``later``, largest first.
    """
    t = pl.col(f"t_{later}")
    significant = table.filter(t.is_not_nan() & (t.abs() >= t_min)).sort(t.abs(), descending=True)
    flipped = significant.filter(
        pl.col(f"rankic_{reference}").is_not_nan()
        & (pl.col(f"rankic_{reference}").sign() != pl.col(f"rankic_{later}").sign())
    )
    return significant["feature"].to_list(), flipped["feature"].to_list()
