"""The one table that maps J-Quants V2's abbreviated columns to the raw store's names, and the parser that
applies it.

V2 answers with short names (``O``, ``AdjC``, ``DiscDate``, ``FrgnBal``...). Each fetched endpoint is
cached as the API sent it (every value as text), and turned into canonical columns here, at build time, so
that a change of mapping never needs a refetch. ``docs/jquants.md`` prints the same table for users.

A value that is present but does not parse (``"abc"`` for a price, ``"6.9"`` for a sector code) is set
to null, and a record whose key (its date, its code ...) is missing or unparseable is left out; both are
listed, with the field and the value, in the store's ``rejected_records`` table and counted in the
manifest. Values are parsed by the importer's parsers (``importer.PARSERS``), so empty text, NA, "-"
and the like are missing values, as in an imported file, not errors.
"""

from __future__ import annotations

import polars as pl

from atft.data.importer import PARSERS
from atft.data.store import INVESTOR_GROUPS, TABLE_SCHEMAS

# Daily quotes: the split-adjusted bars are the store's prices (labels and returns must not jump at a
# split); the unadjusted O/H/L/C/Vo are not kept. Va (turnover in yen) is the same either way.
DAILY_QUOTES = {
    "Date": "date", "Code": "code", "AdjO": "open", "AdjH": "high", "AdjL": "low", "AdjC": "close",
    "AdjVo": "volume", "Va": "turnover",
}  # fmt: skip
TOPIX = {"Date": "date", "O": "open", "H": "high", "L": "low", "C": "close"}
LISTED = {
    "Date": "date", "Code": "code", "CoName": "name", "MktNm": "market", "ScaleCat": "scale",
    "S17": "sector17_code", "S17Nm": "sector17_name", "S33": "sector33_code", "S33Nm": "sector33_name",
}  # fmt: skip
CALENDAR = {"Date": "date", "HolDiv": "holiday_division"}
STATEMENTS = {
    "Code": "code", "DiscDate": "disclosed_date", "DiscTime": "disclosed_time", "DiscNo": "disclosure_number",
    "DocType": "document_type", "CurPerType": "period_type", "CurPerEn": "period_end",
    "CurFYSt": "fiscal_year_start", "CurFYEn": "fiscal_year_end",
    "Sales": "net_sales", "OP": "operating_profit", "OdP": "ordinary_profit", "NP": "profit", "EPS": "eps",
    "TA": "total_assets", "Eq": "equity", "BPS": "bps",
    "FSales": "forecast_net_sales", "FOP": "forecast_operating_profit", "FOdP": "forecast_ordinary_profit",
    "FNP": "forecast_profit", "FEPS": "forecast_eps",
    "NxFSales": "next_forecast_net_sales", "NxFOP": "next_forecast_operating_profit",
    "NxFOdP": "next_forecast_ordinary_profit", "NxFNp": "next_forecast_profit", "NxFEPS": "next_forecast_eps",
}  # fmt: skip
_INVESTOR_PREFIX = dict(
    zip(
        ("Prop", "Brk", "Tot", "Ind", "Frgn", "SecCo", "InvTr", "BusCo", "OthCo", "InsCo", "Bank", "TrstBnk",
         "OthFin"),
        INVESTOR_GROUPS,
        strict=True,
    )
)  # fmt: skip
TRADES_SPEC = {
    "PubDate": "published_date", "StDate": "start_date", "EnDate": "end_date", "Section": "section",
    **{
        f"{prefix}{v2}": f"{group}_{side}"
        for prefix, group in _INVESTOR_PREFIX.items()
        for v2, side in (("Sell", "sell"), ("Buy", "buy"), ("Tot", "total"), ("Bal", "balance"))
    },
}  # fmt: skip
MARGIN_INTEREST = {
    "PubDate": "published_date", "Date": "date", "Code": "code", "IssType": "issue_type",
    "ShrtVol": "short_volume", "LongVol": "long_volume", "ShrtNegVol": "short_negotiable_volume",
    "LongNegVol": "long_negotiable_volume", "ShrtStdVol": "short_standard_volume",
    "LongStdVol": "long_standard_volume",
}  # fmt: skip

# A record's key: a record without one of these (or with one that does not parse) is left out whole.
REQUIRED = {
    "daily_quotes": ("date", "code"),
    "topix": ("date", "close"),
    "listed": ("date", "code"),
    "calendar": ("date", "holiday_division"),
    "statements": ("code", "disclosed_date"),
    "trades_spec": ("published_date", "section"),
    "margin_interest": ("date", "code"),
}
# endpoint -> (its column map, the store table whose schema types the result)
MAPS: dict[str, tuple[dict[str, str], str]] = {
    "daily_quotes": (DAILY_QUOTES, "prices"),
    "topix": (TOPIX, "index"),
    "listed": (LISTED, "listed_history"),
    "calendar": (CALENDAR, "trading_calendar"),
    "statements": (STATEMENTS, "statements"),
    "trades_spec": (TRADES_SPEC, "trades_spec"),
    "margin_interest": (MARGIN_INTEREST, "margin_interest"),
}
# listed: the sector names go to listed_info (each code's latest row), not to the history.
_EXTRA_TYPES = {"sector17_name": pl.String(), "sector33_name": pl.String()}


def store_code(code: pl.Expr) -> pl.Expr:
    """V2's 5-digit code as the store's code: ``72030`` -> ``7203`` (the trailing 0 is the common-stock
    digit); any other 5-digit code (a preferred share such as ``25935``) is kept whole."""
    code = code.str.strip_chars()
    return (
        pl.when(code.str.len_chars().eq(5) & code.str.ends_with("0"))
        .then(code.str.slice(0, 4))
        .otherwise(code)
    )


# The importer's value parsers, by the store column's type: J-Quants values mean what the same text means
# in an imported file (empty, NA, "-" ... are missing; "6.9" is no sector code).
_KIND = {pl.Date(): "optional date", pl.Int32(): "integer", pl.Float64(): "number", pl.String(): "text value"}


def canonical(raw: pl.DataFrame, endpoint: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The records of ``raw`` (text columns as cached) in canonical columns, and what did not parse.

    A value that is present but does not parse is set to null and reported; a record whose key value
    (``REQUIRED``: its date, code ...) is missing or does not parse is left out whole and reported.
    Returns (parsed, rejected): ``parsed`` has the mapped columns typed as the store's schema, codes in
    store form; ``rejected`` one row per problem (``row`` in ``raw``, the ``field`` by its V2 name, its
    ``value`` and the ``reason``: ``unparseable value, set to null`` or ``record left out: ...``).
    """
    mapping, table = MAPS[endpoint]
    schema = {**TABLE_SCHEMAS[table], **_EXTRA_TYPES}
    present = {v2: name for v2, name in mapping.items() if v2 in raw.columns}
    text = {name: pl.col(v2).cast(pl.String) for v2, name in present.items()}
    results = {name: PARSERS[_KIND[schema[name]]][0](t, pl.String()) for name, t in text.items()}
    parsed = {name: value for name, (value, _) in results.items()}
    if "code" in parsed:
        parsed["code"] = store_code(parsed["code"])
    frame = raw.with_row_index("_row").select(
        "_row",
        *[t.alias(f"_text_{name}") for name, t in text.items()],
        *[bad.fill_null(False).alias(f"_bad_{name}") for name, (_, bad) in results.items()],
        *[p.alias(name) for name, p in parsed.items()],
    )
    required = REQUIRED[endpoint]
    v2_name = {name: v2 for v2, name in mapping.items()}
    problems = [
        frame.filter(pl.col(f"_bad_{name}")).select(
            row=pl.col("_row").cast(pl.Int64),
            field=pl.lit(v2),
            value=pl.col(f"_text_{name}"),
            reason=pl.lit(
                "record left out: key value unparseable"
                if name in required
                else "unparseable value, set to null"
            ),
        )
        for v2, name in present.items()
    ]
    key_missing = [
        (
            pl.col(name).is_null() & ~pl.col(f"_bad_{name}") if name in parsed else pl.lit(True),
            v2_name.get(name, name),
        )
        for name in required
    ]
    problems += [
        frame.filter(missing).select(
            row=pl.col("_row").cast(pl.Int64),
            field=pl.lit(v2),
            value=pl.lit(None, pl.String),
            reason=pl.lit("record left out: key value missing"),
        )
        for missing, v2 in key_missing
    ]
    keys_ok = pl.all_horizontal(
        [pl.col(name).is_not_null() if name in parsed else pl.lit(False) for name in required]
    )
    good = frame.filter(keys_ok).select(
        [
            (pl.col(name) if name in parsed else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in schema.items()
            if name in mapping.values()
        ]
    )
    rejected = pl.concat(problems).sort("row", "field", maintain_order=True)
    return good, rejected
