"""From a raw store to the dataset every model reads: features, labels, stock ids and a manifest.

The pipeline, in the order the data flows:

1. join each stock's sector and the same-date market features onto the price panel;
2. per-stock time-series features (``technical``, ``market.stock_vs_market``), a chunk of stocks at a time,
   then the panel reordered by (date, code);
3. same-date sector statistics and the sector series joined back (``sector``);
4. cross-sectional ranks of key features;
5. where the store has J-Quants tables, fundamentals, investor flows and margin balances, each joined as of
   the first trading day its rows were public (``point_in_time``);
6. per-date normalization of every stock feature;
7. validity flags, labels, the guard, and the manifest.

The format of the result is ``docs/dataset.md``; the definitions of the features ``docs/features.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from atft.config import ATFTConfig
from atft.data.store import RawStore, StoreError
from atft.features import flows, fundamentals, margin, technical
from atft.features.cross_section import cs_rank, interleave_dates, normalize_per_date, stock_blocks
from atft.features.dataset import DatasetFolder
from atft.features.guard import GuardReport, check_dataset, per_date_features
from atft.features.labels import build_labels, label_names
from atft.features.market import market_features, stock_market_windows, stock_vs_market
from atft.features.point_in_time import JQuantsSources, jquants_sources
from atft.features.sector import sector_cross_section, sector_series, sector_series_features

# The longest window of any feature (the 200-day EMA): before it is full a stock is in its warmup.
WARMUP_DAYS = 200
VALIDITY_WINDOWS = (5, 20, 60, WARMUP_DAYS)
RANKED = ("ret_1d", "ret_5d", "ret_20d", "ret_60d", "vol_20d", "volume_ratio_20", "rsi_14",
          "log_dollar_volume", "beta_60d", "amihud_20d")  # fmt: skip
# Groups normalized per date; market features are one value per date and ranks are already uniform.
NORMALIZED_GROUPS = (
    "returns", "volatility", "moving_averages", "oscillators", "intraday", "volume_liquidity",
    "stock_market", "sector",
)  # fmt: skip
# Market-relative returns stay raw: the market is one value per date, so their per-date z-score would be
# exactly that of ret_20d / ret_60d; raw, they keep how far the stock is ahead of the market.
RAW_EXCESS = ("rel_strength_20d", "rel_strength_60d")
SECTOR_COLUMN = {"sector17": "sector17_name", "sector33": "sector33_name"}
# The J-Quants groups whose values are per stock and normalized per date like the groups above. Their
# validity flags stay 0/1, and flows (one value per date, like the market group) stay raw.
JQUANTS_NORMALIZED = {"fundamentals": fundamentals.FEATURES, "margin": margin.FEATURES}
STOCK_CHUNK = 500

Progress = Callable[[str], None]


def _stock_feature_exprs() -> dict[str, dict[str, pl.Expr]]:
    return {
        "returns": technical.returns(),
        "volatility": technical.volatility(),
        "moving_averages": technical.moving_averages(),
        "oscillators": technical.oscillators(),
        "intraday": technical.intraday(),
        "volume_liquidity": technical.volume_liquidity(),
        "stock_market": stock_vs_market(),
    }


def _per_stock(
    stocks: pl.DataFrame, market: pl.DataFrame, groups: dict[str, dict[str, pl.Expr]]
) -> pl.DataFrame:
    """Every per-stock feature as Float32 and the validity flags, for a frame of whole stocks sorted by
    (code, date); returned sorted by (date, code).

    The market features are joined here, a chunk at a time: on the whole panel they would be a dozen
    float64 columns of 10M rows. Shifts, minima and maxima run over the whole chunk with the rows whose
    window reaches into the previous stock nulled (``technical``), the rest ``.over("code")``. Sorting the
    chunk by date here, while its columns fit in the processor's cache, leaves ``interleave_dates`` to
    merge chunks.
    """
    first = pl.col("code") != pl.col("code").shift(1, fill_value="")  # a stock's first row
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    features = [e.alias(n) for exprs in groups.values() for n, e in exprs.items()]
    return (
        stocks.join(market, on="date", how="left", maintain_order="left")
        .with_columns(row_in_stock=index - pl.when(first).then(index).forward_fill())
        .with_columns(*[e.alias(n) for n, e in technical.base_columns().items()])
        .with_columns(*[e.alias(n) for n, e in {**technical.windows(), **stock_market_windows()}.items()])
        .with_columns(*features)
        .select(
            "date",
            "code",
            "sector",
            *[_defined(pl.col(n), n) for names in groups.values() for n in names],
            *[_defined(pl.col(n), n) for n in market.columns if n != "date"],
            *[pl.col("row_in_stock").ge(w).alias(f"is_valid_{w}d") for w in VALIDITY_WINDOWS],
        )  # fmt: skip
        .sort("date", maintain_order=True)  # stable: within a date the rows stay in code order
    )


def _defined(x: pl.Expr, name: str) -> pl.Expr:
    """``x`` as Float32 column ``name``, with null wherever it is undefined (0/0 = NaN, x/0 = inf).

    A ratio of a halted stock's zero volatilities has no value; NaN would poison every statistic of its
    date, and null is how the dataset says "no value" everywhere else.
    """
    return pl.when(x.is_finite()).then(x).cast(pl.Float32).alias(name)


def sector_of(listed_info: pl.DataFrame, level: str) -> tuple[pl.DataFrame, str]:
    """code -> sector name at the configured level (``data.sector_level``), and the column it came from.

    A store imported from a table with a single sector column has only ``sector``: it is used, and the
    manifest says so.
    """
    for column in (SECTOR_COLUMN[level], "sector"):
        if column in listed_info.columns and listed_info[column].null_count() < listed_info.height:
            return listed_info.select("code", sector=pl.col(column)), column
    raise StoreError(
        f"listed_info has no {SECTOR_COLUMN[level]} (nor a sector column) for any stock; "
        "set data.sector_level to a level the store has"
    )


def priced_rows(store: RawStore, level: str) -> tuple[pl.DataFrame, str]:
    """The store's daily bars sorted by (code, date) with each stock's sector: what ``compute_features`` reads.

    Returns the frame (date, code, open, high, low, close, volume, sector) and the listed_info column the
    sector came from (``sector_of``).
    """
    sectors, sector_column = sector_of(store.listed_info, level)
    prices = (
        store.prices.select("date", "code", "open", "high", "low", "close", "volume")
        .sort("code", "date")
        .join(sectors, on="code", how="left", maintain_order="left")
    )
    return prices, sector_column


def _jquants_groups(
    panel: pl.DataFrame, sources: JQuantsSources
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """The J-Quants groups of the tables ``sources`` has, for the rows of ``panel`` (sorted by date) in its
    row order, as Float32 with null where undefined, and their names by group."""
    parts: list[pl.DataFrame] = []
    groups: dict[str, list[str]] = {}
    calendar = sources.calendar
    if sources.statements is not None:
        parts.append(fundamentals.fundamental_features(panel, sources.statements, calendar))
        groups[fundamentals.GROUP] = [*fundamentals.FEATURES, fundamentals.FLAG]
    if sources.trades_spec is not None:
        # One value per date: computed on the dates, then spread to their rows.
        per_date = flows.flow_features(panel["date"].unique().sort(), sources.trades_spec, calendar)
        parts.append(
            panel.select("date").join(per_date, on="date", how="left", maintain_order="left").drop("date")
        )
        groups[flows.GROUP] = [*flows.FEATURES, flows.FLAG]
    if sources.margin_interest is not None:
        parts.append(margin.margin_features(panel, sources.margin_interest, calendar))
        groups[margin.GROUP] = [*margin.FEATURES, margin.FLAG]
    frame = pl.concat(parts, how="horizontal") if parts else pl.DataFrame()
    return frame.select(_defined(pl.col(n), n) for names in groups.values() for n in names), groups


def compute_features(
    prices: pl.DataFrame,
    index: pl.DataFrame,
    *,
    normalization: str | None = "robust_z",
    clip: float = 5.0,
    progress: Progress | None = None,
    sources: JQuantsSources | None = None,
    consume: bool = False,
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Every feature of every (code, date) of ``prices`` (with a ``sector`` column).

    ``consume=True`` empties ``prices`` (drops its columns in place) once its rows are read: the caller's
    reference would otherwise hold the bars (0.8 GB at 10M rows) through the whole cross-sectional part.

    ``normalization`` is ``"robust_z"``, ``"z"`` (per date, see ``cross_section``) or None for raw values.
    ``sources`` (``point_in_time.jquants_sources``) adds a group per J-Quants table it has: fundamentals,
    flows, margin. With normalization, their nulls become 0.0 (the per-date centre) after it, and the
    group's ``*_valid`` flag says the value was missing; None keeps them null.

    Returns the frame (date, code, sector, the features as Float32, the validity flags), sorted by
    (date, code), and the feature names by group.
    """
    say = progress or (lambda _stage: None)
    market = market_features(index)
    exprs = _stock_feature_exprs()
    groups = {g: list(names) for g, names in exprs.items()}
    groups["market"] = [c for c in market.columns if c != "date"]

    say("per-stock features")
    # Each stock's rows must be contiguous, in date order.
    bars = prices if prices["code"].is_sorted() else prices.sort("code", maintain_order=True)
    # A few hundred stocks at a time: bounds the float64 intermediates of ~60 features on a 10M-row panel.
    chunks = [_per_stock(stocks, market, exprs) for stocks in stock_blocks(bars, STOCK_CHUNK)]
    del bars
    if consume:
        for name in prices.columns:
            prices.drop_in_place(name)
    say("ordering by date")
    # From here on every step is per date, and date-major order makes each date's rows contiguous
    # (cross-sectional statistics run several times faster).
    panel = interleave_dates(chunks)
    del chunks

    say("sector features")
    series = sector_series_features(sector_series(panel))
    panel, same_date = sector_cross_section(panel)
    panel = panel.join(series, on=["sector", "date"], how="left", maintain_order="left")
    groups["sector"] = [*same_date, *[c for c in series.columns if c not in ("sector", "date")]]

    say("cross-sectional ranks and normalization")
    groups["ranks"] = [f"rank_{n}" for n in RANKED]
    panel = panel.with_columns(*[cs_rank(pl.col(n)).cast(pl.Float32).alias(f"rank_{n}") for n in RANKED])
    normalized = [n for g in NORMALIZED_GROUPS for n in groups[g] if n not in RAW_EXCESS]
    jquants: list[str] = []
    if sources is not None:
        say("J-Quants features, as of the day they were public")
        extra, extra_groups = _jquants_groups(panel.select("date", "code"), sources)
        panel = panel.with_columns(extra)
        groups.update(extra_groups)
        jquants = [n for names in extra_groups.values() for n in names]
        normalized += [n for g, names in JQUANTS_NORMALIZED.items() if g in extra_groups for n in names]
    if normalization is not None:  # None: raw values, for inspection and for the reference tests
        panel = normalize_per_date(panel, normalized, normalization, clip)
        # Many stocks lack a statement or margin row on some dates; a null would drop the whole row from
        # training (``exclusion_reasons``). 0.0 is the date's centre; the *_valid flag says it was missing.
        panel = panel.with_columns(pl.col(jquants).fill_null(0.0))
    flags = [f"is_valid_{w}d" for w in VALIDITY_WINDOWS]
    order = [n for names in groups.values() for n in names]
    return panel.select(
        "date", "code", "sector", *[pl.col(n).cast(pl.Float32) for n in order], *flags
    ), groups


def schema_hash(features: pl.DataFrame, labels: pl.DataFrame) -> str:
    """sha256 of the feature and label column names and types, in order: changes whenever the schema does."""
    text = json.dumps([[n, str(t)] for frame in (features, labels) for n, t in frame.schema.items()])
    return hashlib.sha256(text.encode()).hexdigest()


def exclusion_reasons(
    panel: pl.DataFrame,
    labels: pl.DataFrame,
    groups: dict[str, list[str]],
    targets: list[str],
    index_dates: pl.Series,
) -> dict[str, Any]:
    """Rows that can never be a sample (a null model feature, or no label), each under its first reason.

    ``panel`` holds the features, the validity flags and ``sector``; ``labels`` the same rows' labels.
    For the rows left under ``null_feature``, ``null_feature_by_feature`` counts which features are null.
    """
    model = [n for names in groups.values() for n in names]
    any_null = pl.any_horizontal(pl.col(model).is_null())
    reasons = {
        "warmup": ~pl.col(f"is_valid_{WARMUP_DAYS}d"),
        "no_index_date": ~pl.col("date").is_in(index_dates.implode()),
        "market_warmup": pl.any_horizontal(pl.col(groups["market"]).is_null()),
        "no_sector": pl.col("sector").is_null(),
        "alone_in_sector": pl.any_horizontal(pl.col(groups["sector"]).is_null()),
        "null_feature": any_null,
    }
    frame = panel.select("date", "sector", *model, f"is_valid_{WARMUP_DAYS}d").with_columns(
        labels.select(targets)
    )
    first = pl.when(pl.all_horizontal(pl.col(targets).is_null()) & ~any_null).then(pl.lit("no_label"))
    for name, cond in reversed(reasons.items()):
        first = pl.when(any_null & cond).then(pl.lit(name)).otherwise(first)
    frame = frame.with_columns(first.alias("reason"))
    counts = dict(frame["reason"].value_counts().drop_nulls().iter_rows())
    by_reason = {name: int(counts.get(name, 0)) for name in [*reasons, "no_label"]}
    other = (
        frame.filter(pl.col("reason") == "null_feature").select(pl.col(model).null_count()).row(0, named=True)
    )
    return {
        "total": sum(by_reason.values()),
        "reasons": by_reason,
        "null_feature_by_feature": {n: int(k) for n, k in sorted(other.items(), key=lambda kv: -kv[1]) if k},
    }


def build_dataset(
    raw_dir: str | Path,
    out: str | Path,
    cfg: ATFTConfig,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the dataset of ``raw_dir`` into ``out`` (see ``docs/dataset.md``) and return its manifest.

    ``cfg`` is the resolved configuration (``data.horizons``, ``data.sector_level``, ``features.*``).
    Raises ``DatasetGuardError`` (and writes nothing) when the guard finds features or labels that cannot
    carry information.
    """
    say = progress or (lambda _stage: None)
    say("reading the raw store")
    store = RawStore.read(raw_dir, oracle=False)  # the oracle is only copied: read it when writing
    if store.index is None or store.index.height == 0:
        raise StoreError(f"{raw_dir} has no index table; market features need one (import with --index)")
    horizons = list(cfg.data.horizons)
    prices, sector_column = priced_rows(store, cfg.data.sector_level)
    # The J-Quants tables the store has (statements, trades_spec, margin_interest) and their calendar;
    # None for a store without any, whose dataset is then what it always was.
    sources = jquants_sources(store)
    # Only these are read from here on: the store's own copy of the bars (~0.7 GB at 10M rows) is freed.
    index, listed_info = store.index, store.listed_info
    source = {
        "raw_dir": str(raw_dir),
        "raw_kind": store.manifest.get("kind"),
        "raw_created_at": store.manifest.get("created_at"),
    }
    del store
    # The labels first, while memory is low: built after the features, their intermediates came on top of
    # the whole feature panel (the build's peak).
    say("labels")
    labels = build_labels(prices.select("date", "code", "sector", "close"), index, horizons)
    panel, groups = compute_features(
        prices,
        index,
        normalization=cfg.features.normalization,
        clip=cfg.features.clip,
        progress=progress,
        sources=sources,
        consume=True,
    )
    del prices, sources
    stocks = (
        panel.select("code", "sector")
        .unique("code")
        .sort("code")
        .join(listed_info.select("code", "market").unique("code"), on="code", how="left")
        .with_columns(
            stock_id=pl.int_range(pl.len(), dtype=pl.Int32),
            sector_id=(pl.col("sector").rank("dense").fill_null(0)).cast(pl.Int32),
            market_id=(pl.col("market").rank("dense").fill_null(0)).cast(pl.Int32),
        )
    )
    names = label_names(horizons)
    model_features = [n for group in groups.values() for n in group]
    say("counting rows that can never be a sample")
    excluded = exclusion_reasons(panel, labels, groups, names["target"], index["date"])
    flags = [f"is_valid_{w}d" for w in VALIDITY_WINDOWS]
    features = panel.select("date", "code", *model_features, *flags)
    del panel

    say("guard")
    not_ranking = per_date_features(groups)
    report: GuardReport = check_dataset(
        features,
        labels,
        stock_features=[n for n in model_features if n not in not_ranking],
        market_features=not_ranking,
        target_columns=dict(zip(horizons, names["target"], strict=True)),
        warm=features[f"is_valid_{WARMUP_DAYS}d"],
        max_degenerate_date_frac=cfg.features.guard.max_degenerate_date_frac,
        max_null_rate=cfg.features.guard.max_null_rate,
    )
    report.raise_if_failed()

    say("writing the dataset")
    manifest = {
        "kind": "dataset",
        "source": source,
        "horizons": horizons,
        "warmup_days": WARMUP_DAYS,
        "sector_level": cfg.data.sector_level,
        "sector_column": sector_column,
        "normalization": {
            "method": cfg.features.normalization,
            "clip": cfg.features.clip,
            "groups": [*NORMALIZED_GROUPS, *[g for g in JQUANTS_NORMALIZED if g in groups]],
        },
        "features": groups,
        "model_features": model_features,
        "validity_flags": flags,
        "labels": names,
        "schema_hash": schema_hash(features, labels),
        "date_range": [str(features["date"].min()), str(features["date"].max())],
        "n_dates": features["date"].n_unique(),
        "n_stocks": stocks.height,
        "rows": features.height,
        "null_rate_after_warmup": {
            n: round(float(report.null_rate_after_warmup[n]), 6) for n in model_features
        },
        "excluded_rows": excluded,
        "guard": report.as_dict(),
    }
    tables = {
        "features": features,
        "labels": labels,
        "stocks": stocks.select("code", "stock_id", "sector", "sector_id", "market", "market_id"),
    }
    oracle_file = Path(raw_dir) / "oracle.parquet"
    if oracle_file.is_file():
        tables["oracle"] = pl.read_parquet(oracle_file, glob=False)
    DatasetFolder.write(out, tables, manifest, overwrite=overwrite)
    return manifest
