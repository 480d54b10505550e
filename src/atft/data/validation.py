"""Checks and repairs the importer applies to parsed daily bars, each one counted for the manifest.

Every function here works on a *working frame*: the canonical price columns (date, code, open, high,
low, close, volume, turnover), optionally ``adj_close`` with the flag ``_adjust`` (the row comes from a
file with an ``Adj Close`` column), any extra input columns, and the provenance columns ``source_file``,
``source_row`` (CSV line number, or 0-based parquet row index) and ``_order`` (position in input order).
Nothing is dropped without a count: rows either stay, move to the quarantine with a reason, or are
removed as identical duplicates. In strict mode every repair or quarantine raises instead.

Temporary working columns (``_swap``, ``_day``, ...) must start with ``_``: the importer renames input
columns so named (and ``source_file``, ``source_row``, ``reason``, ``table``), so they never collide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

OHLC: tuple[str, ...] = ("open", "high", "low", "close")
PARQUET_SUFFIXES = (".parquet", ".pq")
QUARANTINE_REASONS: tuple[str, ...] = (
    "null_ohlc",
    "partial_null_ohlc",
    "non_finite_price",
    "non_positive_price",
    "negative_volume",
)
ROUNDING = 1e-9  # relative OHLC inconsistency treated as float noise, not a data error
INDEX_MOVE = 0.05  # an index move this large on the same day suggests a real market event


class DataImportError(ValueError):
    """Input that cannot be imported as given; the message names the file and the row, line or column."""


def location(file: str | Path, row: int) -> str:
    """``file line N`` for CSV (1-based line, header is line 1) or ``file row N`` for parquet (0-based)."""
    unit = "row" if str(file).lower().endswith(PARQUET_SUFFIXES) else "line"
    return f"{file} {unit} {row}"


def _row_key(row: dict[str, Any]) -> str:
    """A short ``(code X, date D)`` label for a message; the index has no code."""
    code = row.get("code")
    return f"(code {code}, date {row.get('date')})" if code else f"(date {row.get('date')})"


def _strict_fail(flagged: pl.DataFrame, what: str) -> None:
    """Raise for the first of ``flagged`` rows: strict mode refuses a repair or a quarantine."""
    if flagged.height == 0:
        return
    first = flagged.sort("_order").row(0, named=True)
    if first.get("reason"):
        what = f"{what} ({first['reason']})"
    more = f" ({flagged.height} rows in all)" if flagged.height > 1 else ""
    raise DataImportError(
        f"{location(first['source_file'], first['source_row'])}: {what} {_row_key(first)}{more}; "
        "strict mode refuses to repair or quarantine rows"
    )


def quarantine(df: pl.DataFrame, *, strict: bool) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Split ``df`` into rows to keep and rows to quarantine (with a ``reason``), counting each reason.

    Reasons, first match wins: all of OHLC null (``null_ohlc``), some but not all null, or a null
    ``Adj Close`` in an adjusted file (``partial_null_ohlc``), an infinite price (``non_finite_price``),
    any price <= 0 (``non_positive_price``), volume < 0 (``negative_volume``).
    """
    prices = [pl.col(c) for c in OHLC]
    adjusted = "adj_close" in df.columns
    if adjusted:
        prices.append(pl.when(pl.col("_adjust")).then(pl.col("adj_close")).otherwise(pl.col("close")))
    reason = (
        pl.when(pl.all_horizontal([p.is_null() for p in prices]))
        .then(pl.lit("null_ohlc"))
        .when(pl.any_horizontal([p.is_null() for p in prices]))
        .then(pl.lit("partial_null_ohlc"))
        .when(pl.any_horizontal([p.is_infinite() for p in prices]))
        .then(pl.lit("non_finite_price"))
        .when(pl.any_horizontal([p <= 0 for p in prices]))
        .then(pl.lit("non_positive_price"))
        .when(pl.col("volume").fill_null(0) < 0)
        .then(pl.lit("negative_volume"))
    )
    df = df.with_columns(reason.alias("reason"))
    rejected = df.filter(pl.col("reason").is_not_null())
    counts = {f"{r}_rows": int((rejected["reason"] == r).sum()) for r in QUARANTINE_REASONS}
    if strict:
        _strict_fail(rejected, "row would be quarantined")
    return df.filter(pl.col("reason").is_null()).drop("reason"), rejected, counts


def apply_adjustment(df: pl.DataFrame) -> pl.DataFrame:
    """Rows from ``Adj Close`` files: close := Adj Close, open/high/low scaled by Adj Close / Close."""
    if "adj_close" not in df.columns:
        return df
    factor = pl.when(pl.col("_adjust")).then(pl.col("adj_close") / pl.col("close")).otherwise(1.0)
    return df.with_columns([(pl.col(c) * factor).alias(c) for c in ("open", "high", "low")]).with_columns(
        pl.when(pl.col("_adjust")).then(pl.col("adj_close")).otherwise(pl.col("close")).alias("close")
    )


def _value_columns(df: pl.DataFrame) -> list[str]:
    """The columns that decide whether two rows for the same (code, date) are identical."""
    cols = ["code", "date", *OHLC, "volume", "turnover", "adj_close"]
    return [c for c in cols if c in df.columns]


def _describe(row: dict[str, Any], cols: list[str]) -> str:
    values = ", ".join(f"{c}={row[c]}" for c in cols if c not in ("code", "date"))
    return f"{location(row['source_file'], row['source_row'])} ({values})"


def drop_identical_duplicates(df: pl.DataFrame, *, strict: bool) -> tuple[pl.DataFrame, int]:
    """Keep the first of identical (code, date) rows; conflicting duplicates are always an error."""
    cols = _value_columns(df)
    df = df.sort("_order")
    if not df.select(pl.len().over("code", "date") > 1).to_series().any():
        return df, 0  # no (code, date) repeats: nothing is a duplicate
    unique = df.unique(subset=cols, keep="first", maintain_order=True)
    conflicts = unique.filter(pl.len().over("code", "date") > 1)
    if conflicts.height:
        first = conflicts.row(0, named=True)
        pair = conflicts.filter((pl.col("code") == first["code"]) & (pl.col("date") == first["date"]))
        a, b = pair.row(0, named=True), pair.row(1, named=True)
        n_keys = conflicts.select("code", "date").n_unique()
        more = f"; {n_keys - 1} more conflicting keys" if n_keys > 1 else ""
        raise DataImportError(
            f"{first['source_file']}: conflicting duplicate rows {_row_key(first)}: "
            f"{_describe(a, cols)} vs {_describe(b, cols)}{more}"
        )
    removed = df.height - unique.height
    if strict and removed:
        dups = df.filter(pl.len().over("code", "date") > 1)
        first = dups.row(0, named=True)
        pair = dups.filter((pl.col("code") == first["code"]) & (pl.col("date") == first["date"]))
        a, b = pair.row(0, named=True), pair.row(1, named=True)
        raise DataImportError(
            f"{first['source_file']}: identical duplicate rows {_row_key(first)}: "
            f"{location(a['source_file'], a['source_row'])} and {location(b['source_file'], b['source_row'])} "
            f"({removed} duplicate rows in all); strict mode refuses to drop them"
        )
    return unique, removed


def out_of_order_codes(df: pl.DataFrame, *, strict: bool) -> list[str]:
    """Codes whose dates go backwards in file order (checked on the rows as read, before quarantine)."""
    back = pl.col("date") < pl.col("date").shift(1).over("source_file", "code")
    flagged = df.sort("_order").filter(back.fill_null(False))
    if strict:
        _strict_fail(flagged, "date earlier than the row before it")
    return flagged["code"].unique().sort().to_list()


def repair_ohlc(df: pl.DataFrame, *, strict: bool) -> tuple[pl.DataFrame, dict[str, int]]:
    """Swap high/low when high < low, then widen high/low to cover open and close.

    A shortfall within ``ROUNDING`` of the close (float noise from adjusted prices, ~1e-16) is clamped
    too but counted apart as ``ohlc_rounding_clamped``; strict mode only refuses material widenings.
    """
    swap = pl.col("high") < pl.col("low")
    df = df.with_columns(swap.alias("_swap")).with_columns(
        pl.when("_swap").then(pl.col("low")).otherwise(pl.col("high")).alias("high"),
        pl.when("_swap").then(pl.col("high")).otherwise(pl.col("low")).alias("low"),
    )
    shortfall = pl.max_horizontal(
        pl.max_horizontal("open", "close") - pl.col("high"),
        pl.col("low") - pl.min_horizontal("open", "close"),
    )
    df = df.with_columns(
        (shortfall > ROUNDING * pl.col("close")).alias("_widen"),
        ((shortfall > 0) & (shortfall <= ROUNDING * pl.col("close"))).alias("_clamp"),
    )
    if strict:
        _strict_fail(df.filter("_swap"), "high below low")
        _strict_fail(df.filter("_widen"), "high/low do not cover open and close")
    counts = {
        "high_below_low_swapped": int(df["_swap"].sum()),
        "ohlc_range_widened": int(df["_widen"].sum()),
        "ohlc_rounding_clamped": int(df["_clamp"].sum()),
    }
    df = df.with_columns(
        pl.max_horizontal("high", "open", "close").alias("high"),
        pl.min_horizontal("low", "open", "close").alias("low"),
    ).drop("_swap", "_widen", "_clamp")
    return df, counts


def clean_bars(
    df: pl.DataFrame, *, strict: bool
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], list[str]]:
    """Run every row-level check on a working frame: order, quarantine, adjust, de-duplicate, sort, repair.

    Returns the kept rows (sorted by code, date), the quarantined rows, the counts for the manifest and
    the codes whose dates go backwards in file order.
    """
    out_of_order = out_of_order_codes(df, strict=strict)
    kept, rejected, counts = quarantine(df, strict=strict)
    kept = apply_adjustment(kept)
    kept, removed = drop_identical_duplicates(kept, strict=strict)
    kept, ohlc_counts = repair_ohlc(kept.sort("code", "date"), strict=strict)
    counts = {
        "input_rows": df.height,
        "duplicate_rows_identical": removed,
        **counts,
        "null_volume_rows": int(kept["volume"].null_count()),
        **ohlc_counts,
        "codes_out_of_order": len(out_of_order),
    }
    return kept, rejected, counts, out_of_order


def _summary(s: pl.Series) -> dict[str, Any]:
    """min / median / max of a sortable series (the median is the lower middle element)."""
    s = s.sort()
    return {"min": s[0], "median": s[(len(s) - 1) // 2], "max": s[-1]}


def history_report(
    prices: pl.DataFrame, calendar: pl.Series, top: int = 10
) -> tuple[dict[str, int], dict[str, Any]]:
    """Ragged histories against the calendar (``calendar``: the sorted unique price dates): reported,
    never filled. A code's internal gaps are the calendar days between its first and last date it lacks.
    """
    days = calendar.to_frame("date").with_row_index("_day")
    per_code = (
        prices.group_by("code")
        .agg(first=pl.col("date").min(), last=pl.col("date").max(), rows=pl.len())
        .join(days.rename({"date": "first", "_day": "_first"}), on="first")
        .join(days.rename({"date": "last", "_day": "_last"}), on="last")
        .select(
            "code",
            "first",
            "last",
            "rows",
            gaps=(pl.col("_last") - pl.col("_first") + 1 - pl.col("rows")).cast(pl.Int64),
        )
        .sort("code")
    )
    first_day, last_day = calendar[0], calendar[-1]
    counts = {
        "ragged_start_codes": int((per_code["first"] > first_day).sum()),
        "ragged_end_codes": int((per_code["last"] < last_day).sum()),
        "internal_gap_rows": int(per_code["gaps"].sum()),
        "codes_with_internal_gaps": int((per_code["gaps"] > 0).sum()),
    }
    worst = per_code.filter(pl.col("gaps") > 0).sort(["gaps", "code"], descending=[True, False]).head(top)
    details = {
        "internal_gap_top_codes": worst.select("code", "gaps").to_dicts(),
        "history": {
            "first_date": _summary(per_code["first"]),
            "last_date": _summary(per_code["last"]),
            "rows_per_code": _summary(per_code["rows"]),
        },
    }
    return counts, details


def extreme_moves(
    prices: pl.DataFrame, index: pl.DataFrame | None, threshold: float, limit: int = 50
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Flag |close_t / close_{t-1} - 1| > ``threshold`` per code; never altered, only listed.

    Each move carries the index return of the same day, so a market-wide crash (index moved more than
    5%) can be told from a data error.
    """
    moves = prices.select(
        "code", "date", (pl.col("close") / pl.col("close").shift(1).over("code") - 1).alias("return")
    ).filter(pl.col("return").abs() > threshold)
    if index is not None:
        index_ret = index.select(
            "date", (pl.col("close") / pl.col("close").shift(1) - 1).alias("index_return")
        )
        moves = moves.join(index_ret, on="date", how="left")
    else:
        moves = moves.with_columns(pl.lit(None, pl.Float64).alias("index_return"))
    moves = moves.with_columns((pl.col("index_return").abs() > INDEX_MOVE).alias("index_moved"))
    counts = {
        "extreme_moves": moves.height,
        "extreme_moves_with_index_move": int(moves["index_moved"].sum()),
    }
    listed = moves.sort(pl.col("return").abs(), descending=True).head(limit).sort("date", "code")
    return counts, listed.to_dicts()


def attach_sectors(
    codes: pl.Series, listed: pl.DataFrame | None
) -> tuple[pl.DataFrame, dict[str, int], list[str]]:
    """Give every price code a listed_info row; codes with no row or a null sector get a null sector.

    Listed codes without prices are kept (and counted).
    """
    codes_df = pl.DataFrame({"code": codes.unique().sort()})
    if listed is None:
        listed = pl.DataFrame(schema={"code": pl.String, "sector": pl.String})
    missing = codes_df.join(listed.filter(pl.col("sector").is_not_null()), on="code", how="anti")
    extra = listed.join(codes_df, on="code", how="anti")
    merged = pl.concat([listed, missing.join(listed, on="code", how="anti")], how="diagonal_relaxed")
    counts = {"codes_without_sector": missing.height, "listed_codes_without_prices": extra.height}
    return merged.sort("code"), counts, missing["code"].to_list()
