"""Import a real daily market (prices, an index, listed info) into the canonical raw store.

``import_market`` reads the inputs in the layouts described in ``docs/data.md`` (a long CSV or parquet
file, or a folder of per-ticker CSV files), parses every value with an error that names the file, the
line or row and the column, runs the checks and repairs of :mod:`atft.data.validation`, and writes the
store with :func:`atft.data.store.write_store`. The returned manifest counts every check, repair and
quarantined row, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from atft.data.store import StoreError, conform, read_manifest, write_store
from atft.data.validation import (
    OHLC,
    DataImportError,
    attach_sectors,
    clean_bars,
    extreme_moves,
    history_report,
    location,
)

__all__ = ["DataImportError", "import_market"]

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
NULL_TOKENS = ("", "na", "n/a", "nan", "null", "none", "-")
MAX_LISTED = 20  # codes listed in the manifest details for out-of-order dates and missing sectors

# Input column names are matched on their lower-case letters and digits only ("Adj Close" -> "adjclose").
BAR_ALIASES: dict[str, tuple[str, ...]] = {
    "date": ("date", "datetime", "timestamp", "tradedate"),
    "code": ("code", "ticker", "symbol", "localcode"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume", "vol"),
    "turnover": ("turnover", "turnovervalue"),
    "adj_close": ("adjclose", "adjustedclose"),
}
LISTED_ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("code", "ticker", "symbol", "localcode"),
    "name": ("name", "companyname"),
    "market": ("market", "marketname", "marketcodename"),
    "sector": ("sector",),
    "sector17_code": ("sector17code",),
    "sector17_name": ("sector17name", "sector17codename"),
    "sector33_code": ("sector33code",),
    "sector33_name": ("sector33name", "sector33codename"),
    "as_of": ("asof", "date"),
}
SECTOR_COLUMNS = ("sector17_name", "sector33_name", "sector")
RESERVED = ("source_file", "source_row", "reason", "table", "_order", "_adjust")


# --------------------------------------------------------------------------------------------- reading


def _existing(path: str | Path, what: str) -> Path:
    """``path`` as an absolute path, or an error saying which input does not exist."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataImportError(f"{what} path {p} does not exist")
    return p


def _read_file(file: Path) -> tuple[pl.DataFrame, int]:
    """Read one CSV (all columns as text) or parquet file; add ``source_file`` and ``source_row``.

    CSV rows get their line number (header = line 1); parquet rows their 0-based row index. Blank CSV
    lines are dropped and their number returned. Input columns named like a provenance column get an
    ``input_`` prefix.
    """
    suffix = file.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            df = pl.read_csv(file, infer_schema=False)
            first_row = 2
        elif suffix in PARQUET_SUFFIXES:
            df = pl.read_parquet(file)
            first_row = 0
        else:
            raise DataImportError(
                f"{file}: unsupported extension '{file.suffix}' (expected .csv or .parquet, or a folder of .csv)"
            )
    except pl.exceptions.NoDataError:
        raise DataImportError(f"{file} is empty") from None
    except pl.exceptions.PolarsError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataImportError(f"{file} cannot be read: {first_line}") from e
    df = df.rename({c: f"input_{c}" for c in df.columns if c.strip() in RESERVED})
    df = df.with_row_index("source_row", offset=first_row)
    total = df.height
    data = [c for c in df.columns if c != "source_row"]
    if suffix in CSV_SUFFIXES and data:
        df = df.filter(~pl.all_horizontal(pl.col(c).str.strip_chars().fill_null("") == "" for c in data))
    blank = total - df.height
    if df.height == 0:
        raise DataImportError(f"{file} has no data rows (columns found: {', '.join(data) or 'none'})")
    df = df.with_columns(pl.col("source_row").cast(pl.Int64), pl.lit(str(file)).alias("source_file"))
    return df, blank


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _rename(df: pl.DataFrame, aliases: dict[str, tuple[str, ...]], file: Path) -> tuple[pl.DataFrame, dict]:
    """Rename recognised columns to canonical names; return the frame and canonical -> original names.

    Unrecognised columns are kept, with surrounding spaces stripped from their names.
    """
    lookup = {alias: canon for canon, names in aliases.items() for alias in names}
    original: dict[str, str] = {}
    renames: dict[str, str] = {}
    for col in df.columns:
        if col in ("source_row", "source_file"):
            continue
        canon = lookup.get(_key(col))
        if canon is None:
            if col != col.strip():
                renames[col] = col.strip()
            continue
        if canon in original:
            raise DataImportError(f"{file}: columns '{original[canon]}' and '{col}' both look like '{canon}'")
        original[canon] = col
        renames[col] = canon
    return df.rename(renames), original


def _require(file: Path, original: dict[str, str], found: list[str], required: tuple[str, ...]) -> None:
    """Error naming the first missing required column and listing the columns that were found."""
    for col in required:
        if col not in original:
            cols = ", ".join(repr(c) for c in found if c not in ("source_row", "source_file"))
            raise DataImportError(f"{file}: missing required column '{col}' (columns found: {cols})")


def _first_bad(df: pl.DataFrame, bad: pl.Series, col: str, name: str, what: str, file: Path) -> None:
    """Raise for the first row flagged in ``bad``, naming its line/row, the input column and the value."""
    bad = bad.fill_null(False)
    n = int(bad.sum())
    if n == 0:
        return
    i = int(bad.arg_true()[0])
    more = f" ({n} bad values in this column)" if n > 1 else ""
    raise DataImportError(
        f"{location(file, df['source_row'][i])}: column '{name}': {what}: {df[col][i]!r}{more}"
    )


def _is_null_token(s: pl.Series) -> pl.Series:
    return s.str.strip_chars().str.to_lowercase().is_in(NULL_TOKENS)


def _parse_date(df: pl.DataFrame, col: str, name: str, file: Path) -> pl.Series:
    """Dates as written: a Date, a Datetime (its local calendar date), 20210528, or text whose date part
    comes before any time (``2021-05-28 00:00:00+09:00``, ``2021-05-28T00:00:00Z``, ``2021/05/28``)."""
    s = df[col]
    if s.dtype == pl.Date:
        parsed = s
    elif isinstance(s.dtype, pl.Datetime):
        parsed = s.dt.date()
    elif s.dtype.is_integer() or s.dtype == pl.String:
        text = s.cast(pl.String).str.strip_chars()
        part = text.str.extract(r"^(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{8})(?:[T ]|$)", 1)
        parsed = pl.select(
            pl.coalesce(
                part.str.to_date("%Y-%m-%d", strict=False),
                part.str.to_date("%Y/%m/%d", strict=False),
                part.str.to_date("%Y%m%d", strict=False),
            )
        ).to_series()
    else:
        raise DataImportError(f"{file}: column '{name}' has type {s.dtype}, which is not a date")
    _first_bad(df, parsed.is_null(), col, name, "unparseable date", file)
    return parsed.alias("date")


def _parse_code(df: pl.DataFrame, col: str, name: str, file: Path) -> pl.Series:
    """Codes as strings; integer codes (7203, 7203.0, "7203.0") become "7203"."""
    s = df[col]
    if s.dtype.is_integer():
        code = s.cast(pl.String)
    elif s.dtype.is_float():
        _first_bad(df, s != s.floor(), col, name, "code is not an integer", file)
        code = s.cast(pl.Int64).cast(pl.String)
    elif s.dtype == pl.String:
        code = s.str.strip_chars().str.replace(r"^(\d+)\.0+$", "${1}")
        code = pl.select(pl.when(code == "").then(None).otherwise(code)).to_series()
    else:
        raise DataImportError(f"{file}: column '{name}' has type {s.dtype}, which is not a code")
    _first_bad(df, code.is_null(), col, name, "missing code", file)
    return code.alias("code")


def _parse_number(df: pl.DataFrame, col: str, name: str, file: Path) -> pl.Series:
    """A Float64 column; empty/NA/NaN become null, any other non-numeric text is an error."""
    s = df[col]
    if s.dtype.is_numeric():
        num = s.cast(pl.Float64)
    elif s.dtype == pl.String:
        num = s.str.strip_chars().cast(pl.Float64, strict=False)
        bad = num.is_null() & s.is_not_null() & ~_is_null_token(s)
        _first_bad(df, bad, col, name, "not a number", file)
    elif s.dtype == pl.Null:
        num = s.cast(pl.Float64)
    else:
        raise DataImportError(f"{file}: column '{name}' has type {s.dtype}, which is not numeric")
    return num.fill_nan(None).alias(col)


def _parse_bars(raw: pl.DataFrame, file: Path, *, code: str | None, require_volume: bool) -> pl.DataFrame:
    """Parse one file of daily bars into a working frame (see :mod:`atft.data.validation`).

    ``code`` is the code every row gets (per-ticker files, the index); ``None`` reads it from a column.
    """
    found = raw.columns
    df, original = _rename(raw, BAR_ALIASES, file)
    required = ("date", *(("code",) if code is None else ()), *OHLC, *(("volume",) if require_volume else ()))
    _require(file, original, found, required)
    if code is not None and "code" in original:
        codes = df["code"].cast(pl.String).drop_nulls().unique()
        if codes.len() > 1:
            raise DataImportError(
                f"{file}: column '{original['code']}' holds several codes ({', '.join(codes.sort()[:5])}, ...) "
                "but this file must hold a single series"
            )
        df = df.drop("code")
    cols = [
        _parse_date(df, "date", original["date"], file),
        pl.Series("code", [code] * df.height, pl.String)
        if code is not None
        else _parse_code(df, "code", original["code"], file),
    ]
    for c in (*OHLC, "volume", "turnover", "adj_close"):
        if c in original:
            cols.append(_parse_number(df, c, original[c], file))
        elif c != "adj_close":
            cols.append(pl.Series(c, [None] * df.height, pl.Float64))
    if "adj_close" in original:
        cols.append(pl.Series("_adjust", [True] * df.height))
    canonical = {s.name for s in cols}
    extras = [c for c in df.columns if c not in canonical and c not in ("source_file", "source_row")]
    return pl.DataFrame(cols).hstack(df.select(*extras, "source_file", "source_row"))


def _csv_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The visible CSV files of a folder (sorted) and every other entry, which is ignored."""
    entries = sorted(folder.iterdir())
    files = [
        p for p in entries if p.is_file() and p.suffix.lower() in CSV_SUFFIXES and not p.name.startswith(".")
    ]
    return files, [p for p in entries if p not in files]


def _read_bars(path: str | Path, *, what: str) -> tuple[pl.DataFrame, dict[str, Any], dict[str, int]]:
    """Read prices (``what="prices"``) or the index into one working frame in input order.

    Returns the frame, the ``source`` entry for the manifest and read-time counts.
    """
    p = _existing(path, what)
    is_index = what == "index"
    if p.is_dir():
        files, ignored = _csv_files(p)
        if not files:
            raise DataImportError(f"{what} folder {p} contains no .csv files")
        if is_index and len(files) != 1:
            raise DataImportError(f"index folder {p} must hold exactly one .csv file, found {len(files)}")
        layout = "ticker_folder"
    elif p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES:
        files, ignored = [p], []
        layout = "long_csv" if p.suffix.lower() in CSV_SUFFIXES else "long_parquet"
    else:
        raise DataImportError(
            f"{p}: unsupported extension '{p.suffix}' (expected .csv or .parquet, or a folder of .csv)"
        )
    frames, blank, adjusted = [], 0, 0
    for f in files:
        raw, n_blank = _read_file(f)
        code = "" if is_index else (f.name.split(".")[0] if layout == "ticker_folder" else None)
        frame = _parse_bars(raw, f, code=code, require_volume=not is_index)
        frames.append(frame)
        blank += n_blank
        adjusted += "adj_close" in frame.columns
    df = pl.concat(frames, how="diagonal_relaxed").with_row_index("_order")
    if "_adjust" in df.columns:
        df = df.with_columns(pl.col("_adjust").fill_null(False))
    source = {"path": str(p), "layout": layout, "files": len(files)}
    if ignored:
        source["ignored_files"] = [q.name for q in ignored]
    if adjusted:
        source["adjusted_files"] = adjusted
    return df, source, {"blank_lines_skipped": blank, "adj_close_adjusted_files": adjusted}


def _read_listed_info(
    path: str | Path, *, strict: bool
) -> tuple[pl.DataFrame, dict[str, Any], dict[str, int]]:
    """Read listed info: code plus a sector (sector17_name, else sector33_name, else sector) per code.

    Text is stripped (the real sample has trailing spaces in sector names). When a code has several rows
    the latest ``as_of`` (or the last row) wins, and the extra rows are counted.
    """
    p = _existing(path, "listed_info")
    if p.is_dir():
        raise DataImportError(f"listed_info {p} is a folder; expected a .csv or .parquet file")
    raw, blank = _read_file(p)
    found = raw.columns
    df, original = _rename(raw, LISTED_ALIASES, p)
    _require(p, original, found, ("code",))
    if not any(c in original for c in SECTOR_COLUMNS):
        cols = ", ".join(repr(c) for c in found if c not in ("source_row", "source_file"))
        raise DataImportError(
            f"{p}: missing a sector column (one of sector17_name, sector33_name, sector; columns found: {cols})"
        )
    cols = [_parse_code(df, "code", original["code"], p)]
    for c in ("name", "market", "sector17_name", "sector33_name", "sector"):
        if c in original:
            text = df[c].cast(pl.String).str.strip_chars()
            cols.append(pl.select(pl.when(text == "").then(None).otherwise(text)).to_series().alias(c))
    for c in ("sector17_code", "sector33_code"):
        if c in original:
            cols.append(_parse_number(df, c, original[c], p).cast(pl.Int32, strict=False))
    if "as_of" in original:
        cols.append(df["as_of"].cast(pl.String).str.strip_chars())
    out = pl.DataFrame(cols).hstack(df.select("source_file", "source_row"))
    out = out.with_columns(
        pl.coalesce([pl.col(c) for c in SECTOR_COLUMNS if c in out.columns]).alias("sector")
    )
    if "as_of" in out.columns:
        out = out.sort("as_of", nulls_last=False, maintain_order=True)
    dups = out.filter(pl.len().over("code") > 1)
    if strict and dups.height:
        first = dups.row(0, named=True)
        rows = dups.filter(pl.col("code") == first["code"])["source_row"].to_list()
        raise DataImportError(
            f"{location(p, rows[0])}: code {first['code']} appears on several rows ({rows}); "
            "strict mode refuses to pick one"
        )
    kept = out.unique(subset="code", keep="last", maintain_order=True)
    source = {
        "path": str(p),
        "layout": "long_csv" if p.suffix.lower() in CSV_SUFFIXES else "long_parquet",
        "files": 1,
    }
    counts = {
        "input_rows": out.height,
        "duplicate_codes": out.height - kept.height,
        "blank_lines_skipped": blank,
    }
    return kept.drop("source_file", "source_row"), source, counts


# -------------------------------------------------------------------------------------------- importing


def _rejected_table(parts: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame | None:
    """Quarantined rows of prices and index, provenance first, then the parsed original columns."""
    frames = [df.with_columns(pl.lit(name).alias("table")) for name, df in parts if df.height]
    if not frames:
        return None
    df = pl.concat(frames, how="diagonal_relaxed")
    df = df.with_columns(
        pl.when(pl.col("table") == "index").then(None).otherwise(pl.col("code")).alias("code")
    )
    lead = ["table", "source_file", "source_row", "reason", "date", "code", *OHLC]
    lead += [c for c in ("adj_close", "volume", "turnover") if c in df.columns]
    rest = [c for c in df.columns if c not in lead and c not in ("_order", "_adjust")]
    return df.sort("table", "_order").select(*lead, *rest)


def _index_coverage(prices: pl.DataFrame, index: pl.DataFrame) -> dict[str, int]:
    """How the index calendar lines up with the price calendar (reported only)."""
    cal = prices.select(pl.col("date").unique())
    idx = index.select(pl.col("date").unique())
    return {
        "price_dates_missing_in_index": cal.join(idx, on="date", how="anti").height,
        "index_dates_without_prices": idx.join(cal, on="date", how="anti").height,
    }


def _jsonable(value: Any) -> Any:
    """Dates as ISO strings and floats rounded, so the manifest reads cleanly."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def import_market(
    prices: str | Path,
    out: str | Path,
    *,
    index: str | Path | None = None,
    listed_info: str | Path | None = None,
    strict: bool = False,
    extreme_move: float = 0.25,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Import daily prices (plus an optional index and listed info) into a raw store at ``out``.

    Every check and repair is counted in the returned manifest (also written as ``manifest.json``);
    quarantined rows go to the ``rejected_rows`` table. ``strict`` turns every repair and quarantine
    into a :class:`DataImportError`; ragged histories and extreme moves (|daily return| above
    ``extreme_move``) stay reports. Raises :class:`StoreError` if ``out`` exists and not ``overwrite``.
    """
    say = progress or (lambda _stage: None)
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; pass --overwrite to replace it")

    say("reading prices")
    raw, prices_source, read_counts = _read_bars(prices, what="prices")
    say("validating prices")
    bars, rejected, counts = clean_bars(raw, strict=strict)
    if bars.height == 0:
        raise DataImportError(f"{prices_source['path']}: no valid price rows left after quarantine")
    out_of_order = counts.pop("_codes_out_of_order")
    input_rows = counts.pop("input_rows")

    index_bars, index_rejected, index_checks, index_source = None, rejected.clear(), {}, None
    if index is not None:
        say("reading index")
        raw_index, index_source, index_read = _read_bars(index, what="index")
        say("validating index")
        index_bars, index_rejected, index_checks = clean_bars(raw_index, strict=strict)
        index_checks["dates_out_of_order"] = int(bool(index_checks.pop("_codes_out_of_order")))
        del index_checks["codes_out_of_order"]
        index_checks = {
            **index_checks,
            "rows": index_bars.height,
            "blank_lines_skipped": index_read["blank_lines_skipped"],
            **(_index_coverage(bars, index_bars) if index_bars.height else {}),
        }

    listed, listed_source, listed_checks = None, None, {}
    if listed_info is not None:
        say("reading listed info")
        listed, listed_source, listed_checks = _read_listed_info(listed_info, strict=strict)

    say("checking histories")
    history_counts, history_details = history_report(bars)
    move_counts, move_list = extreme_moves(bars, index_bars, extreme_move)
    listed, sector_counts, no_sector = attach_sectors(bars["code"], listed)

    checks: dict[str, Any] = {**read_counts, **counts, **history_counts, **move_counts, **sector_counts}
    if index is not None:
        checks["index"] = index_checks
    if listed_info is not None:
        checks["listed_info"] = listed_checks
    repair_keys = (
        "duplicate_rows_identical",
        "high_below_low_swapped",
        "ohlc_range_widened",
        "ohlc_rounding_clamped",
    )
    repairs = sum(counts[k] for k in repair_keys) + counts["codes_out_of_order"]
    repairs += sum(index_checks.get(k, 0) for k in (*repair_keys, "dates_out_of_order"))
    repairs += listed_checks.get("duplicate_codes", 0)
    rejected_rows = _rejected_table([("prices", rejected), ("index", index_rejected)])

    dates = bars["date"].unique().sort()
    manifest: dict[str, Any] = {
        "kind": "imported",
        "source": {"prices": prices_source, "index": index_source, "listed_info": listed_source},
        "options": {"strict": strict, "extreme_move": extreme_move},
        "input_rows": input_rows,
        "rows": bars.height,
        "codes": bars["code"].n_unique(),
        "dates": dates.len(),
        "date_range": [dates[0], dates[-1]],
        "checks": checks,
        "repairs_total": repairs,
        "quarantined_rows": 0 if rejected_rows is None else rejected_rows.height,
        "details": {
            "codes_out_of_order": out_of_order[:MAX_LISTED],
            **history_details,
            "extreme_moves": move_list,
            "codes_without_sector": no_sector[:MAX_LISTED],
        },
    }

    say("writing store")
    tables = {"prices": conform(bars, "prices")}
    if index_bars is not None:
        tables["index"] = conform(index_bars, "index")
    tables["listed_info"] = conform(listed, "listed_info")
    if rejected_rows is not None:
        tables["rejected_rows"] = rejected_rows
    path = write_store(out, tables, _jsonable(manifest), overwrite=overwrite)
    return read_manifest(path)
