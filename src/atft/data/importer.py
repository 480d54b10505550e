"""Import a real daily market (prices, an index, listed info) into the canonical raw store.

``import_market`` reads the inputs in the layouts described in ``docs/data.md`` (a long CSV or parquet
file, or a folder of per-ticker CSV files, whose text :mod:`atft.data.csv_reader` reads), parses every
value with an error that names the file, the line or row and the column, runs the checks and repairs of
:mod:`atft.data.validation`, and writes the store with :func:`atft.data.store.write_store`. The returned
manifest counts every check, repair and quarantined row, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from atft.data.csv_reader import CSV_SUFFIXES, check_header, csv_files, read_csv
from atft.data.store import (
    INDEX_SCHEMA,
    LISTED_INFO_SCHEMA,
    PRICE_SCHEMA,
    StoreError,
    conform,
    first_line,
    read_manifest,
    write_store,
)
from atft.data.validation import (
    OHLC,
    PARQUET_SUFFIXES,
    DataImportError,
    attach_sectors,
    clean_bars,
    extreme_moves,
    history_report,
    location,
)

__all__ = ["DataImportError", "import_market"]

NULL_TOKENS = ("", "na", "n/a", "nan", "null", "none", "-")
MAX_LISTED = 20  # codes with out-of-order dates listed in the manifest details
MAX_NO_SECTOR = 100  # codes without a sector listed in the manifest details
MAX_PROGRESS = 200  # most per-file progress calls while reading a folder, however many files it holds
MAX_EXAMPLES = 3  # quarantined lines quoted when nothing is left to import
INT32 = (-(2**31), 2**31 - 1)

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
# Columns the importer adds next to the input's: provenance and the quarantine reason (all written to
# rejected_rows), and working columns, which all start with "_" (see _reserved_renames).
RESERVED = ("source_file", "source_row", "reason", "table")
# A date as text: the date part (group 1, the only part used), then optionally a well-formed time
# (HH:MM, HH:MM:SS, fractional seconds) and, after a time, a zone (Z, +09:00, +0900, JST). Anything
# else after the date makes the value unparseable rather than silently truncated.
DATE_TEXT = (
    r"^(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{8})"
    r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?"
    r"(?: ?(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d|[A-Z]{3,4}))?)?$"
)
# An exchange suffix on a ticker (7203.T): a per-ticker file's code column may carry one.
TICKER_SUFFIX = r"\.[A-Za-z]+$"
# The code a per-ticker file name gives must look like a ticker (7203, BRK-B, ^N225, EURUSD=X): a name
# with spaces or brackets is more likely a stray copy ("7203 (1).csv") than a series of its own.
FILE_CODE = r"^[\w^=&-]+$"


# --------------------------------------------------------------------------------------------- reading


def _existing(path: str | Path, what: str) -> Path:
    """``path`` as an absolute path, or an error saying which input does not exist."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataImportError(f"{what} path {p} does not exist")
    return p


def _reserved_renames(columns: list[str]) -> dict[str, str]:
    """Input column -> free ``input_`` name, for each input column named like one the importer adds.

    Those are ``RESERVED`` and every name starting with ``_`` (working columns such as ``_order``,
    ``_swap``, ``_day``), compared after stripping spaces as ``_rename`` strips them. The new name is
    ``input_<name>``, with more ``input_`` prefixes while it is taken, so that an input with both
    ``source_file`` and ``input_source_file`` keeps both.
    """
    taken = {c.strip() for c in columns}
    renames: dict[str, str] = {}
    for col in columns:
        name = col.strip()
        if name in RESERVED or name.startswith("_"):
            new = f"input_{name}"
            while new in taken:
                new = f"input_{new}"
            taken.add(new)
            renames[col] = new
    return renames


def _file_layout(file: Path) -> str:
    """``long_csv`` or ``long_parquet`` by the file's extension, or an error for any other extension."""
    suffix = file.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "long_csv"
    if suffix in PARQUET_SUFFIXES:
        return "long_parquet"
    raise DataImportError(
        f"{file}: unsupported extension '{file.suffix}' (expected .csv or .parquet, or a folder of .csv)"
    )


def _read_file(file: Path) -> tuple[pl.DataFrame, int, dict[str, str]]:
    """Read one CSV (all columns as text) or parquet file; add ``source_file`` and ``source_row``.

    CSV rows get the line they start on (header = line 1, blank lines count); parquet rows their
    0-based row index. Blank CSV records (empty, or nothing but spaces and commas) are dropped and their
    number returned. Input columns named like a column the importer adds are renamed (see
    ``_reserved_renames``); the last item maps each new name back to the input's name, for messages.
    """
    try:
        if _file_layout(file) == "long_csv":
            table = read_csv(file)
            df, blank = table.frame, table.blank_lines
            rows = pl.Series("source_row", table.lines, pl.Int64)
        else:
            df, blank = pl.read_parquet(file, glob=False), 0
            check_header(file, df.columns)  # names that differ only in surrounding spaces
            rows = pl.int_range(df.height, dtype=pl.Int64, eager=True).alias("source_row")
    except pl.exceptions.NoDataError:
        raise DataImportError(f"{file} is empty") from None
    except pl.exceptions.PolarsError as e:
        raise DataImportError(f"{file} cannot be read: {first_line(e)}") from e
    except OSError as e:  # no permission, a folder named like a file, ...
        raise DataImportError(f"{file} cannot be read: {e.strerror or e}") from None
    if df.height == 0:
        raise DataImportError(f"{file} has no data rows (columns found: {', '.join(df.columns) or 'none'})")
    renames = _reserved_renames(df.columns)
    df = df.rename(renames)
    inputs = {new: old for old, new in renames.items()}
    return df.with_columns(rows, pl.lit(str(file)).alias("source_file")), blank, inputs


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _rename(
    df: pl.DataFrame, aliases: dict[str, tuple[str, ...]], file: Path, inputs: dict[str, str]
) -> tuple[pl.DataFrame, dict]:
    """Rename recognised columns to canonical names; return the frame and canonical -> original names.

    Unrecognised columns are kept, with surrounding spaces stripped from their names. ``inputs`` (new
    name -> input name, from ``_read_file``) is added to the returned names, so that messages and the
    manifest spell a renamed reserved column as the input does.
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
    return df.rename(renames), {**original, **inputs}


def _found(df: pl.DataFrame, inputs: dict[str, str]) -> str:
    """``columns found: 'a', 'b'`` as the input spells them, for a missing-column error.

    A single column whose name holds a ``;`` or a tab is almost always a file with another separator,
    so the message says so.
    """
    found = [inputs.get(c, c) for c in df.columns if c not in ("source_row", "source_file")]
    text = "columns found: " + ", ".join(repr(c) for c in found)
    if len(found) == 1 and (";" in found[0] or "\t" in found[0]):
        text += "; the file seems to use ';' or tabs between fields, but only commas are read"
    return text


def _require(file: Path, original: dict[str, str], found: str, required: tuple[str, ...]) -> None:
    """Error naming the first missing required column; ``found`` lists the columns (see ``_found``)."""
    for col in required:
        if col not in original:
            raise DataImportError(f"{file}: missing required column '{col}' ({found})")


# A parser turns an input column of a given dtype into (parsed value, bad-value flag), or None when the
# dtype cannot hold that kind of value at all.
Parser = Callable[[pl.Expr, pl.DataType], tuple[pl.Expr, pl.Expr] | None]


def _missing(c: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Null, or text that means "no value" (empty, NA, NaN, ...)."""
    if dtype == pl.String:
        return c.is_null() | c.str.strip_chars().str.to_lowercase().is_in(NULL_TOKENS)
    return c.is_null()


def _date_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Dates as written: a Date, a Datetime (its local calendar date), 20210528 (also as 20210528.0), or
    text of a date with an optional time and zone (``2021-05-28 00:00:00+09:00``, ``2021/05/28``);
    see ``DATE_TEXT``. The date part is used as written, never converted to another zone."""
    if dtype == pl.Date:
        parsed = c
    elif isinstance(dtype, pl.Datetime):
        parsed = c.dt.date()
    elif dtype.is_integer() or dtype.is_float() or dtype == pl.String:
        if dtype.is_float():  # pandas writes integer dates of a column with gaps as floats
            c = pl.when(c == c.floor()).then(c.cast(pl.Int64, strict=False))
        part = c.cast(pl.String).str.strip_chars().str.extract(DATE_TEXT, 1)
        parsed = pl.coalesce(
            part.str.to_date(fmt, strict=False) for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d")
        )
    else:
        return None
    return parsed, parsed.is_null()


def _optional_date_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Like ``_date_parser``, but a missing value is allowed (null) rather than bad."""
    result = _date_parser(c, dtype)
    if result is None:
        return None
    parsed, bad = result
    return parsed, bad & ~_missing(c, dtype)


def _code_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Codes as strings; integer codes (7203, 7203.0, "7203.0") become "7203"; empty is missing."""
    if dtype in (pl.Categorical, pl.Enum):  # pandas often stores tickers as a category
        c, dtype = c.cast(pl.String), pl.String
    if dtype.is_integer():
        parsed = c.cast(pl.String)
    elif dtype.is_float():
        parsed = pl.when(c == c.floor()).then(c.cast(pl.Int64, strict=False).cast(pl.String))
    elif dtype == pl.String:
        text = c.str.strip_chars().str.replace(r"^(\d+)\.0+$", "${1}")
        parsed = pl.when(text != "").then(text)
    else:
        return None
    return parsed, parsed.is_null()


def _number_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Float64; empty, NA, NaN and the like are null, any other non-numeric text is bad."""
    if dtype.is_numeric() or dtype == pl.Null:
        parsed, bad = c.cast(pl.Float64), pl.lit(False)
    elif dtype == pl.String:
        parsed = c.str.strip_chars().cast(pl.Float64, strict=False)
        bad = parsed.is_null() & ~_missing(c, dtype)
    else:
        return None
    return parsed.fill_nan(None), bad


def _text_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Text stripped of surrounding spaces, empty as null; numbers and categories are written as text.
    Lists, structs and the like cannot be (polars would raise on the cast)."""
    if dtype == pl.String or dtype.is_numeric() or dtype in (pl.Categorical, pl.Enum, pl.Boolean, pl.Null):
        parsed = c.cast(pl.String).str.strip_chars()
        return pl.when(parsed != "").then(parsed), pl.lit(False)
    return None


def _integer_parser(c: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr] | None:
    """Int32 codes (sector codes): a number that is whole (2, 2.0) and fits; 2.5 or 99999999999 is bad,
    never rounded or nulled. Missing values are null, as for numbers."""
    result = _number_parser(c, dtype)
    if result is None:
        return None
    value, bad = result
    fits = (value == value.floor()) & value.is_between(*INT32)
    return pl.when(fits).then(value.cast(pl.Int32, strict=False)), bad | (value.is_not_null() & ~fits)


PARSERS: dict[str, tuple[Parser, str]] = {
    "date": (_date_parser, "unparseable date"),
    "optional date": (_optional_date_parser, "unparseable date"),
    "code": (_code_parser, "missing or non-integer code"),
    "number": (_number_parser, "not a number"),
    "integer": (_integer_parser, "not a 32-bit integer"),
    "text value": (_text_parser, "not text"),
}


def _parse(raw: pl.DataFrame, kinds: dict[str, str], names: dict[str, dict[str, str]]) -> pl.DataFrame:
    """Parse the columns of ``kinds`` (column -> a kind of ``PARSERS``) in place, in one pass.

    ``names`` maps each source file to its canonical -> input column names, so that an error for the
    first bad value names the file, the line or row, the column as the input spells it, and the value.
    """
    parsed, flags = [], []
    for col, kind in kinds.items():
        parser, _ = PARSERS[kind]
        result = parser(pl.col(col), raw.schema[col])
        if result is None:
            file = raw["source_file"][0]
            name = names[file].get(col, col)
            raise DataImportError(f"{file}: column '{name}' has type {raw.schema[col]}, not a {kind}")
        parsed.append(result[0].alias(f"_parsed_{col}"))
        flags.append(result[1].fill_null(False).alias(f"_bad_{col}"))
    checked = raw.with_columns(*parsed, *flags)
    for col, bad in zip(kinds, checked.select(pl.col(f"_bad_{c}").any() for c in kinds).row(0), strict=True):
        if bad:
            rows = checked.filter(pl.col(f"_bad_{col}"))
            first = rows.row(0, named=True)
            name = names[first["source_file"]].get(col, col)
            more = f" ({rows.height} bad values in this column)" if rows.height > 1 else ""
            raise DataImportError(
                f"{location(first['source_file'], first['source_row'])}: column '{name}': "
                f"{PARSERS[kinds[col]][1]}: {first[col]!r}{more}"
            )
    return checked.with_columns(pl.col(f"_parsed_{c}").alias(c) for c in kinds).select(raw.columns)


def _check_file_code(df: pl.DataFrame, file: Path, name: str, code: str) -> None:
    """Every non-null code in a per-ticker file's code column must be the code its file name gives; in
    the index file (``code`` is ``""``) the column may hold any one code, but only one.

    Codes are compared after the usual normalisation (``7203.0`` -> ``7203``), with and without an
    exchange suffix (``7203.T``), so a downloader's own ticker column agrees with its file name.
    """
    result = _code_parser(pl.col("code"), df.schema["code"])
    if result is None:
        raise DataImportError(f"{file}: column '{name}' has type {df.schema['code']}, not a code")
    values = df.select(result[0].alias("value"), "source_row").drop_nulls("value")
    several = f"{file}: column '{name}' holds several codes"
    if not code:
        codes = values["value"].unique().sort()
        if codes.len() > 1:
            raise DataImportError(
                f"{several} ({', '.join(codes[:5])}) but this file must hold a single series"
            )
        return
    bare = pl.col("value").str.replace(TICKER_SUFFIX, "")
    wrong = values.filter((pl.col("value") != code) & (bare != code))
    if wrong.height == 0:
        return
    first = wrong.row(0, named=True)
    where = location(file, first["source_row"])
    more = f" ({wrong.height} rows disagree)" if wrong.height > 1 else ""
    codes = values.select(bare.unique().sort()).to_series()
    if codes.len() > 1:
        raise DataImportError(
            f"{several} ({', '.join(codes[:5])}) but this file must hold a single series: "
            f"{where} has code {first['value']} but the file name gives {code}{more}"
        )
    raise DataImportError(
        f"{where}: column '{name}' has code {first['value']} but the file name gives {code}{more}"
    )


def _prepare_bars(
    raw: pl.DataFrame, file: Path, inputs: dict[str, str], *, code: str | None, require_volume: bool
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Rename one file's columns, check the required ones, and give it a code (``code`` is the code of
    every row: the file name's code for per-ticker files, ``""`` for the index; ``None`` reads it from
    a column).

    Returns the frame (still unparsed) and its canonical -> input column names.
    """
    df, original = _rename(raw, BAR_ALIASES, file, inputs)
    required = ("date", *(("code",) if code is None else ()), *OHLC, *(("volume",) if require_volume else ()))
    _require(file, original, _found(raw, inputs), required)
    if code is not None:
        if "code" in original:  # a code column must agree with the file name, or the index with itself
            _check_file_code(df, file, original.pop("code"), code)
        df = df.with_columns(pl.lit(code, pl.String).alias("code"))
    if "adj_close" in original:
        df = df.with_columns(pl.lit(True).alias("_adjust"))
    return df, original


def _file_codes(folder: Path, files: list[Path]) -> list[str]:
    """The code of each per-ticker file (its name up to the first dot); two files with one code are an
    error, since their rows would silently merge into one series."""
    seen: dict[str, Path] = {}
    for f in files:
        code = f.name.split(".")[0]
        if not re.match(FILE_CODE, code):
            raise DataImportError(
                f"{f}: the file name gives code '{code}', which does not look like a ticker (letters, "
                "digits and _ - ^ = & only); rename the file or move it out of the folder"
            )
        if code in seen:
            raise DataImportError(
                f"{folder}: {seen[code].name} and {f.name} both give code {code}; keep only one of them"
            )
        seen[code] = f
    return list(seen)


def _extra_columns(frames: list[tuple[pl.DataFrame, dict[str, str]]], imported: set[str]) -> list[str]:
    """Input columns that are not written to the store, as the input spells them, in order of first
    appearance over ``frames`` (each a renamed frame with its canonical -> input column names).

    They still travel into ``rejected_rows`` with a quarantined row; the manifest lists them so that
    dropping them from kept rows is not silent.
    """
    skip = imported | {"source_file", "source_row", "_adjust"}
    return list(
        dict.fromkeys(original.get(c, c) for df, original in frames for c in df.columns if c not in skip)
    )


def _read_bars(
    path: str | Path, *, what: str, say: Callable[..., None]
) -> tuple[pl.DataFrame, dict[str, Any], dict[str, int]]:
    """Read prices (``what="prices"``) or the index into one parsed working frame in input order.

    Files are read one by one (headers are checked per file), concatenated, then parsed in one pass.
    For a folder, ``say(f"reading {name}", done, total)`` reports the files read (at most
    ``MAX_PROGRESS`` times). Returns the frame, the ``source`` entry for the manifest and read-time counts.
    """
    p = _existing(path, what)
    is_index = what == "index"
    if p.is_dir():
        files, ignored = csv_files(p)
        if not files:
            raise DataImportError(f"{what} folder {p} contains no .csv files")
        if is_index and len(files) != 1:
            raise DataImportError(f"index folder {p} must hold exactly one .csv file, found {len(files)}")
        layout = "ticker_folder"
    else:
        files, ignored, layout = [p], [], _file_layout(p)
    if is_index:  # a single series: its code column, if any, is only checked, never used
        codes: list[str | None] = [""]
    elif layout == "ticker_folder":
        codes = _file_codes(p, files)
    else:
        codes = [None]  # read from the code column
    step = -(-len(files) // MAX_PROGRESS)  # report every step-th file, and the last
    frames, names, blank = [], {}, 0
    for done, (f, code) in enumerate(zip(files, codes, strict=True), start=1):
        raw, n_blank, inputs = _read_file(f)
        frame, names[str(f)] = _prepare_bars(raw, f, inputs, code=code, require_volume=not is_index)
        frames.append(frame)
        blank += n_blank
        if layout == "ticker_folder" and (done % step == 0 or done == len(files)):
            say(f"reading {f.name}", done, len(files))
    imported = {*(INDEX_SCHEMA if is_index else PRICE_SCHEMA), "code", "adj_close"}
    extra = _extra_columns(list(zip(frames, names.values(), strict=True)), imported)
    df = pl.concat(frames, how="diagonal_relaxed")
    optional = [c for c in ("volume", "turnover") if c not in df.columns]
    df = df.with_columns(pl.lit(None, pl.Float64).alias(c) for c in optional)
    numbers = [c for c in (*OHLC, "volume", "turnover", "adj_close") if c in df.columns]
    code_kind = {"code": "code"} if codes == [None] else {}  # else every file's code is already set
    df = _parse(df, {"date": "date", **code_kind, **dict.fromkeys(numbers, "number")}, names)
    adjusted = sum("adj_close" in n for n in names.values())
    if adjusted:
        df = df.with_columns(pl.col("_adjust").fill_null(False))
    lead = ["date", "code", *numbers]
    df = df.select(*lead, pl.exclude(*lead, "source_file", "source_row"), "source_file", "source_row")
    source = {"path": str(p), "layout": layout, "files": len(files)}
    if ignored:
        source["ignored_files"] = [q.name for q in ignored]
    if adjusted:
        source["adjusted_files"] = adjusted
    if extra:
        source["extra_columns_not_imported"] = extra
    return (
        df.with_row_index("_order"),
        source,
        {"blank_lines_skipped": blank, "adj_close_adjusted_files": adjusted},
    )


def _read_listed_info(
    path: str | Path, *, strict: bool
) -> tuple[pl.DataFrame, dict[str, Any], dict[str, int]]:
    """Read listed info: code plus a sector (sector17_name, else sector33_name, else sector) per code.

    Text is stripped (the real sample has trailing spaces in sector names). Sector codes must be whole
    numbers that fit an Int32. When a code has several rows the latest ``as_of`` (parsed as a date, so
    ``2021-6-1`` is older than ``2021-12-01``; an empty ``as_of`` is oldest) or else the last row wins,
    and the extra rows are counted.
    """
    p = _existing(path, "listed_info")
    if p.is_dir():
        raise DataImportError(f"listed_info {p} is a folder; expected a .csv or .parquet file")
    raw, blank, inputs = _read_file(p)
    df, original = _rename(raw, LISTED_ALIASES, p, inputs)
    _require(p, original, _found(raw, inputs), ("code",))
    if not any(c in original for c in SECTOR_COLUMNS):
        raise DataImportError(
            f"{p}: missing a sector column (one of sector17_name, sector33_name, sector; {_found(raw, inputs)})"
        )
    codes = [c for c in ("sector17_code", "sector33_code") if c in original]
    as_of = {"as_of": "optional date"} if "as_of" in original else {}
    extra = _extra_columns([(df, original)], {*LISTED_INFO_SCHEMA, "as_of"})
    texts = [c for c in ("name", "market", "sector17_name", "sector33_name", "sector") if c in original]
    kinds = {"code": "code", **dict.fromkeys(texts, "text value"), **dict.fromkeys(codes, "integer"), **as_of}
    df = _parse(df, kinds, {str(p): original})
    df = df.select("code", *texts, *codes, *as_of, "source_row").with_columns(
        pl.coalesce(pl.col(c) for c in SECTOR_COLUMNS if c in texts).alias("sector")
    )
    if as_of:  # undated rows first, so that a dated row wins over them
        df = df.sort("as_of", nulls_last=False, maintain_order=True)
    dups = df.filter(pl.len().over("code") > 1)
    if strict and dups.height:
        first = dups.row(0, named=True)
        rows = dups.filter(pl.col("code") == first["code"])["source_row"].to_list()
        raise DataImportError(
            f"{location(p, rows[0])}: code {first['code']} appears on several rows ({rows}); "
            "strict mode refuses to pick one"
        )
    kept = df.unique(subset="code", keep="last", maintain_order=True)
    source: dict[str, Any] = {"path": str(p), "layout": _file_layout(p), "files": 1}
    if extra:
        source["extra_columns_not_imported"] = extra
    counts = {
        "input_rows": df.height,
        "duplicate_codes": df.height - kept.height,
        "blank_lines_skipped": blank,
    }
    return kept.drop("source_row"), source, counts


# -------------------------------------------------------------------------------------------- importing


def _rejected_table(parts: list[tuple[str, pl.DataFrame | None]]) -> pl.DataFrame | None:
    """Quarantined rows of prices and index, provenance first, then the parsed original columns.

    An extra column that both tables have with different types (a parquet list and CSV text cannot share
    a column) is kept apart: the later table's copy gets a free ``<table>_`` prefix.
    """
    frames: list[pl.DataFrame] = []
    for name, df in parts:
        if df is None or df.height == 0:
            continue
        seen = {c: t for f in frames for c, t in f.schema.items()}
        renames: dict[str, str] = {}
        for col, dtype in df.schema.items():
            if col in seen and seen[col] != dtype:
                new = f"{name}_{col}"
                while new in seen or new in df.columns:
                    new = f"{name}_{new}"
                renames[col] = new
        frames.append(df.rename(renames).with_columns(pl.lit(name).alias("table")))
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


def _nothing_left(path: str, what: str, rejected: pl.DataFrame) -> DataImportError:
    """The error when every row of an input was quarantined: counts by reason and the first lines."""
    reasons = rejected.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons.iter_rows())
    first = rejected.sort("_order").head(MAX_EXAMPLES).iter_rows(named=True)
    lines = ", ".join(f"{location(r['source_file'], r['source_row'])} ({r['reason']})" for r in first)
    return DataImportError(
        f"{path}: no valid {what} rows left after quarantine "
        f"(all {rejected.height} rows quarantined: {counts}; first: {lines})"
    )


def _index_coverage(dates: pl.Series, index: pl.DataFrame) -> dict[str, int]:
    """How the index calendar lines up with the price calendar ``dates`` (reported only)."""
    cal = dates.to_frame("date")
    idx = index.select(pl.col("date").unique())
    return {
        "price_dates_missing_in_index": cal.join(idx, on="date", how="anti").height,
        "index_dates_without_prices": idx.join(cal, on="date", how="anti").height,
    }


def _import_bars(
    path: str | Path, what: str, *, strict: bool, say: Callable[..., None]
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], list[str], dict[str, Any], dict[str, int]]:
    """Read and validate prices or the index (``what``, as for ``_read_bars``).

    Returns the kept bars, the quarantined rows, the check counts, the codes whose dates go backwards,
    the manifest's ``source`` entry and the read-time counts; errors when no row is left to import.
    """
    say(f"reading {what}")
    with _naming(path):
        raw, source, read_counts = _read_bars(path, what=what, say=say)
        say(f"validating {what}")
        bars, rejected, counts, out_of_order = clean_bars(raw, strict=strict)
    if bars.height == 0:
        raise _nothing_left(source["path"], "price" if what == "prices" else what, rejected)
    return bars, rejected, counts, out_of_order, source, read_counts


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (writing ``folder`` would destroy ``path``)."""
    return path.is_relative_to(folder)


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


@contextmanager
def _naming(path: str | Path) -> Iterator[None]:
    """Turn a polars error that no check anticipated into a DataImportError naming the input.

    The checks name the line and column of every problem they know of; this is the last resort for
    malformed input they miss, so that the user still learns which input failed (the polars error
    stays chained for a bug report).
    """
    try:
        yield
    except pl.exceptions.PolarsError as e:
        name = Path(path).expanduser().resolve()
        raise DataImportError(f"{name} cannot be imported: {type(e).__name__}: {first_line(e)}") from e


def import_market(
    prices: str | Path,
    out: str | Path,
    *,
    index: str | Path | None = None,
    listed_info: str | Path | None = None,
    strict: bool = False,
    extreme_move: float = 0.25,
    overwrite: bool = False,
    progress: Callable[..., None] | None = None,
    kind: str = "imported",
    extra_tables: dict[str, pl.DataFrame] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import daily prices (plus an optional index and listed info) into a raw store at ``out``.

    ``kind``, ``extra_tables`` (written as they are, beside the imported ones) and ``extra_manifest``
    (merged into the manifest) let another source (``atft data fetch-jquants``) write the same store.

    Every check and repair is counted in the returned manifest (also written as ``manifest.json``);
    quarantined rows go to the ``rejected_rows`` table. ``strict`` turns every repair and quarantine
    into a :class:`DataImportError`; ragged histories and extreme moves (|daily return| above
    ``extreme_move``) stay reports. Raises :class:`StoreError` if ``out`` exists and not ``overwrite``.

    ``progress``, if given, is called as ``progress(stage)`` when a stage starts ("reading prices",
    "validating prices", ..., "writing store"), and as ``progress(f"reading {file_name}", done, total)``
    while the files of a folder are read (``done`` files of ``total`` read; at most about 200 calls
    however many files there are).
    """
    say = progress or (lambda *_: None)
    if not extreme_move > 0:
        raise ValueError(f"extreme_move must be a positive return threshold, got {extreme_move}")
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; pass --overwrite to replace it")
    for given in (prices, index, listed_info):
        if given is not None and _within(Path(given).expanduser().resolve(), out.resolve()):
            raise DataImportError(
                f"output {out} would replace the input {given}; choose another output folder"
            )

    bars, rejected, counts, out_of_order, prices_source, read_counts = _import_bars(
        prices, "prices", strict=strict, say=say
    )
    input_rows = counts.pop("input_rows")
    dates = bars["date"].unique().sort()  # the calendar

    index_bars, index_rejected, index_checks, index_source = None, None, {}, None
    if index is not None:
        index_bars, index_rejected, index_checks, index_late, index_source, index_read = _import_bars(
            index, "index", strict=strict, say=say
        )
        del index_checks["codes_out_of_order"]  # a single series: reported as dates_out_of_order
        index_checks = {
            **index_checks,
            "dates_out_of_order": int(bool(index_late)),
            "rows": index_bars.height,
            "blank_lines_skipped": index_read["blank_lines_skipped"],
            **_index_coverage(dates, index_bars),
        }

    listed, listed_source, listed_checks = None, None, {}
    if listed_info is not None:
        say("reading listed info")
        with _naming(listed_info):
            listed, listed_source, listed_checks = _read_listed_info(listed_info, strict=strict)

    say("checking histories")
    history_counts, history_details = history_report(bars, dates)
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

    manifest: dict[str, Any] = {
        "kind": kind,
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
            "codes_without_sector": no_sector[:MAX_NO_SECTOR],
        },
        **(extra_manifest or {}),
    }

    say("writing store")
    tables = {"prices": conform(bars, "prices")}
    if index_bars is not None:
        tables["index"] = conform(index_bars, "index")
    tables["listed_info"] = conform(listed, "listed_info")
    if rejected_rows is not None:
        tables["rejected_rows"] = rejected_rows
    tables |= extra_tables or {}
    path = write_store(out, tables, _jsonable(manifest), overwrite=overwrite)
    return read_manifest(path)
