"""The daily ranked list: every eligible stock scored for one trading day, from the raw store, point in time.

``atft predict RUN|BUNDLE --date latest`` (and ``atft serve``) run :func:`daily_ranked_list`:

1. cut the raw store at the day (prices and index up to it, nothing later) and build the features the way
   ``atft data build`` does, so the day's inputs are exactly those a dataset built that evening would hold;
2. check that the model's features are among them and that their hash matches the one it was trained with;
3. scatter the last ``max(lookback, graph window)`` days into a small panel, keep the stocks whose whole
   window is finite (the training rule of eligibility) and say why every other stock was skipped;
4. score the eligible stocks with their day graph, and rank them per horizon, with the quantile forecasts
   and the graph neighbours whose messages the stock attended to most (the GAT's last-layer attention).

A day the store has no bars for, a day the index lacks (market features incomplete) and a day with fewer
eligible stocks than ``data.min_stocks_per_day`` are refused with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from atft.data.store import RawStore, StoreError
from atft.features.build import WARMUP_DAYS, compute_features, priced_rows
from atft.features.panel import DayPanel
from atft.features.point_in_time import jquants_sources
from atft.models.atft_gat_fan import quantile_name
from atft.models.graph import DayGraphBuilder, uses_graph
from atft.training.bundle import BundleError, ModelBundle, feature_hash
from atft.training.run_folder import RunFolder, atomic_text, atomic_write
from atft.training.trainer import forecast_precision

Say = Callable[[str], None]
TOP_NEIGHBOURS = 3  # neighbours named per pick: enough to see who moves it, short enough to read


class DailyListError(ValueError):
    """The day cannot be scored: no bars, an incomplete index, too few eligible stocks, another feature set."""


class NoDataForDay(DailyListError):
    """The store has no bars, or no index close, on the requested day."""


@dataclass
class DailyList:
    """One day's ranked lists.

    ``ranked``: one row per (horizon, eligible stock): date, horizon, rank (1 = highest score), code, sector,
    score (the point forecast of the forward return), the quantile forecasts, neighbours (who the stock
    attended to most that day, ``code:weight`` by descending attention; null without a graph).
    ``skipped``: one row per stock of the store that was not scored: code, sector, kind (``no_bar``, ``warmup``,
    ``gaps``, ``no_sector``, ``null_features``, ``not_trading``) and the reason in words.
    """

    date: dt.date
    ranked: pl.DataFrame
    skipped: pl.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    def for_horizon(self, horizon: int, top_k: int | None = None) -> pl.DataFrame:
        """The ranked list of one horizon (its first ``top_k`` rows when given)."""
        frame = self.ranked.filter(pl.col("horizon") == horizon).sort("rank")
        return frame.head(top_k) if top_k is not None else frame

    def write(self, out: str | Path, top_k: int | None = None) -> list[Path]:
        """``ranked_<h>d.csv`` and ``.parquet`` per horizon, ``skipped.csv`` and ``summary.json`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for h in self.info["horizons"]:
            frame = self.for_horizon(h, top_k)
            for suffix, save in ((".csv", frame.write_csv), (".parquet", frame.write_parquet)):
                path = out / f"ranked_{h}d{suffix}"
                atomic_write(path, save)
                written.append(path)
        path = out / "skipped.csv"
        atomic_write(path, self.skipped.write_csv)
        written.append(path)
        path = out / "summary.json"
        atomic_text(path, json.dumps({**self.info, "top_k": top_k}, indent=2, default=str))
        written.append(path)
        return written


def resolve_day(
    dates: np.ndarray, index_dates: np.ndarray, day: str, raw_dir: Path
) -> tuple[np.datetime64, str | None]:
    """The day to score and, when ``latest`` had to step back, a note saying why.

    ``latest`` is the last day with both bars (``dates``) and an index close (``index_dates``): a day without
    its index close has incomplete market features. A ``YYYY-MM-DD`` must have both, or it is refused.
    """
    prices, index = raw_dir / "prices.parquet", raw_dir / "index.parquet"
    if len(dates) == 0:
        raise NoDataForDay(f"{prices} has no bars")
    if day == "latest":
        complete = dates[np.isin(dates, index_dates)]
        if len(complete) == 0:
            raise NoDataForDay(f"{index} has no close on any day of {prices}")
        if complete[-1] == dates[-1]:
            return dates[-1], None
        return complete[-1], (
            f"the prices run to {dates[-1]} but {index} only to {index_dates.max()}: "
            f"'latest' is {complete[-1]}, the last day with both"
        )
    try:
        wanted = np.datetime64(dt.date.fromisoformat(day), "D")
    except ValueError:
        raise DailyListError(f"--date must be 'latest' or a date YYYY-MM-DD, got {day!r}") from None
    if not np.isin(wanted, dates):
        before = dates[dates < wanted]
        hint = (
            f"the last trading day before it is {before[-1]}"
            if len(before)
            else f"its first day is {dates[0]}"
        )
        raise NoDataForDay(f"{prices} has no bars on {wanted} ({hint}; its last day is {dates[-1]})")
    if not np.isin(wanted, index_dates):
        raise NoDataForDay(
            f"{index} has no close on {wanted}: the market features of that day are incomplete; "
            "import the index up to that day first"
        )
    return wanted, None


def daily_ranked_list(
    bundle: ModelBundle, raw_dir: str | Path | None = None, day: str = "latest", *, say: Say = print
) -> DailyList:
    """Score every eligible stock of ``raw_dir`` (default: the store the model's dataset was built from) on ``day``."""
    raw_dir = Path(raw_dir) if raw_dir is not None else bundle.raw_dir
    if raw_dir is None:
        raise DailyListError("the model records no raw store: pass --raw DIR")
    if not raw_dir.is_dir():
        raise DailyListError(
            f"the raw store {raw_dir} does not exist: pass --raw DIR (a store of `atft data`)"
        )
    cfg = bundle.cfg
    say(f"reading the raw store {raw_dir}")
    store = RawStore.read(raw_dir, oracle=False)
    if store.index is None or store.index.height == 0:
        raise StoreError(f"{raw_dir} has no index table; the market features need one")
    dates = np.unique(store.prices["date"].to_numpy().astype("datetime64[D]"))
    index_dates = store.index["date"].to_numpy().astype("datetime64[D]")
    target, note = resolve_day(dates, index_dates, day, raw_dir)
    if note:
        say(note)

    say(f"building the features up to {target} (point in time: nothing later is read)")
    cut = pl.lit(target.astype(dt.date))
    prices, _ = priced_rows(store, str(cfg.data.sector_level))
    prices = prices.filter(pl.col("date") <= cut)
    normalization = bundle.info["normalization"]
    frame, groups = compute_features(
        prices,
        store.index.filter(pl.col("date") <= cut),
        normalization=normalization["method"],
        clip=float(normalization["clip"]) if normalization["clip"] is not None else 5.0,
        # A J-Quants store's statements, flows and margin: each row joins as of its effective date, so
        # nothing published after the day's close reaches its features.
        sources=jquants_sources(store),
    )
    _check_features(bundle, [n for names in groups.values() for n in names])

    lookback = int(cfg.data.lookback)
    graph_on = uses_graph(cfg.model)
    width = max(lookback, int(cfg.model.graph.window) if graph_on else 1)
    calendar = np.unique(frame["date"].to_numpy().astype("datetime64[D]"))  # [D] trading days up to target
    window_dates = calendar[-width:]  # [W]
    panel, present, sectors = _window_panel(frame, bundle, window_dates)
    history = prices.group_by("code").agg(days=pl.len(), last_bar=pl.col("date").max())
    t = len(window_dates) - 1
    eligible = panel.full_windows(lookback)[:, t]  # [S]: the training rule, data up to the day only
    skipped = _skip_reasons(panel, sectors, present, eligible, lookback, history, target)
    quiet = history.filter(~pl.col("code").is_in(pl.Series(panel.codes.tolist()).implode()))
    if quiet.height:  # stocks of the store without a bar in the window: listed before, not trading now
        skipped = pl.concat(
            [
                skipped,
                quiet.select(
                    "code",
                    sector=pl.lit(None, pl.String),
                    kind=pl.lit("not_trading"),
                    reason=pl.format(
                        "no bar in the last {} trading days (last bar {})", pl.lit(width), "last_bar"
                    ),
                ),
            ]
        )
    n_eligible = int(eligible.sum())
    minimum = int(cfg.data.min_stocks_per_day)
    if n_eligible < minimum:
        counts = skipped.group_by("kind").len().sort("len", descending=True)
        detail = ", ".join(f"{r}: {k}" for r, k in counts.iter_rows())
        raise DailyListError(
            f"only {n_eligible} stocks have a complete {lookback}-day window on {target} "
            f"(data.min_stocks_per_day={minimum}); the features of that day are incomplete ({detail})"
        )

    say(f"scoring {n_eligible} stocks on {target}")
    stocks = np.nonzero(eligible)[0]  # [N] panel rows
    batch: dict[str, Any] = {"x": panel.windows_for_day(t, stocks, lookback)}  # [N, L, F]
    if graph_on:
        graph = DayGraphBuilder(
            panel.x,
            panel.feature_names,
            panel.sector_id,
            cfg.model.graph,
            market_id=_market_ids(store, panel),
            cache_days=0,
        )
        batch["edge_index"], batch["edge_attr"] = graph(t, stocks)
    out, attention = _forward(bundle, batch)
    ranked = _ranked(
        bundle, panel.codes[stocks], sectors[stocks], out, batch.get("edge_index"), attention, target
    )
    info = {
        "date": str(target),
        "horizons": bundle.horizons,
        "model": bundle.info["model"],
        "source": str(bundle.source),
        "raw_dir": str(raw_dir),
        "raw_created_at": store.manifest.get("created_at"),
        "feature_hash": bundle.info["feature_hash"],
        "lookback": lookback,
        "scored": n_eligible,
        "skipped": skipped.height,
        "skipped_by_reason": dict(skipped.group_by("kind").len().sort("kind").iter_rows()),
        "graph_edges": int(batch["edge_index"].shape[1]) if graph_on else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "latest_note": note,
    }
    return DailyList(target.astype(dt.date), ranked, skipped.sort("code"), info)


def _check_features(bundle: ModelBundle, built: list[str]) -> None:
    """The model's inputs must be among the features built today, computed and scaled as they were in training."""
    missing = [n for n in bundle.feature_names if n not in set(built)]
    if missing:
        raise BundleError(
            f"{bundle.source} was trained on features this ATFT no longer builds ({', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}): retrain the model, or score it with the ATFT that trained it"
        )
    norm = bundle.info["normalization"]
    today = feature_hash(bundle.feature_names, {**norm, "warmup_days": WARMUP_DAYS})
    if today != bundle.info["feature_hash"]:
        raise BundleError(
            f"{bundle.source}: feature hash mismatch (trained {bundle.info['feature_hash'][:12]}, built now "
            f"{today[:12]}): the features are built differently now (warmup {norm.get('warmup_days')} then, "
            f"{WARMUP_DAYS} now); retrain the model"
        )


def _window_panel(
    frame: pl.DataFrame, bundle: ModelBundle, window_dates: np.ndarray
) -> tuple[DayPanel, np.ndarray, np.ndarray]:
    """The last days' features as a panel [S, W, F] of the stocks with a bar in them, which rows exist
    (bool [S, W]) and each stock's sector name [S]."""
    rows = frame.filter(pl.col("date") >= pl.lit(window_dates[0].astype(dt.date)))
    stocks = rows.group_by("code").agg(pl.col("sector").last()).sort("code")
    codes = stocks["code"].to_list()
    stock = rows["code"].cast(pl.Enum(codes)).to_physical().cast(pl.Int64).to_numpy()
    day = np.searchsorted(window_dates, rows["date"].to_numpy().astype("datetime64[D]"))
    features = bundle.feature_names
    x = np.full((len(codes), len(window_dates), len(features)), np.nan, dtype=np.float32)
    x[stock, day] = rows.select(features).cast(pl.Float32).fill_null(float("nan")).to_numpy()
    present = np.zeros(x.shape[:2], dtype=bool)
    present[stock, day] = True
    sector_id = stocks["sector"].rank("dense").fill_null(0).cast(pl.Int32).to_numpy()  # only equality is read
    horizons = bundle.horizons
    panel = DayPanel.from_arrays(
        x,
        np.full((*x.shape[:2], len(horizons)), np.nan, dtype=np.float32),  # no labels: tomorrow is unknown
        dates=window_dates,
        codes=codes,
        feature_names=features,
        label_names=[f"target_{h}d" for h in horizons],
        sector_id=sector_id,
    )
    return panel, present, stocks["sector"].to_numpy()


def _market_ids(store: RawStore, panel: DayPanel) -> np.ndarray:
    """Each panel stock's market segment as an integer (0 = unknown): the graph's same-market attribute."""
    info = store.listed_info
    if "market" not in info.columns:
        return np.zeros(len(panel.codes), dtype=np.int64)
    ids = (
        info.select("code", "market")
        .unique("code")
        .with_columns(market_id=pl.col("market").rank("dense").fill_null(0).cast(pl.Int64))
    )
    return (
        pl.DataFrame({"code": panel.codes.tolist()})
        .join(ids, on="code", how="left", maintain_order="left")["market_id"]
        .fill_null(0)
        .to_numpy()
    )


def _skip_reasons(
    panel: DayPanel,
    sectors: np.ndarray,
    present: np.ndarray,
    eligible: np.ndarray,
    lookback: int,
    history: pl.DataFrame,
    target: np.datetime64,
) -> pl.DataFrame:
    """Why each panel stock without a complete window was not scored, first reason first (vectorized)."""
    window = slice(panel.x.shape[1] - lookback, panel.x.shape[1])
    nulls = np.isnan(panel.x[:, window]) & present[:, window, None]  # [S, L, F]: null features of real rows
    null_count = nulls.any(1).sum(1)  # [S] features null somewhere in the window
    first_null = np.asarray(panel.feature_names)[nulls.sum(1).argmax(1)]  # [S] the feature null most often
    facts = pl.DataFrame(
        {
            "code": panel.codes.tolist(),
            "sector": sectors,
            "eligible": eligible,
            "today": present[:, -1],
            "bars_in_window": present[:, window].sum(1),
            "null_features": null_count,
            "first_null": first_null,
        }
    ).join(history, on="code", how="left")
    day = str(target)
    kind = (
        pl.when(~pl.col("today"))
        .then(pl.lit("no_bar"))
        .when(pl.col("days") < WARMUP_DAYS)
        .then(pl.lit("warmup"))
        .when(pl.col("bars_in_window") < lookback)
        .then(pl.lit("gaps"))
        .when(pl.col("sector").is_null())
        .then(pl.lit("no_sector"))
        .otherwise(pl.lit("null_features"))
    )
    reason = (
        pl.when(~pl.col("today"))
        .then(pl.format("no bar on {} (last bar {})", pl.lit(day), "last_bar"))
        .when(pl.col("days") < WARMUP_DAYS)
        .then(pl.format("warmup: {} days of history, the features need {}", "days", pl.lit(WARMUP_DAYS)))
        .when(pl.col("bars_in_window") < lookback)
        .then(pl.format("gaps: {} of the {} window days have a bar", "bars_in_window", pl.lit(lookback)))
        .when(pl.col("sector").is_null())
        .then(pl.format("no sector in listed_info: the {} sector features are null", "null_features"))
        .otherwise(
            pl.format("null features in the window: {} features, first {}", "null_features", "first_null")
        )
    )
    return facts.filter(~pl.col("eligible")).select(
        "code", "sector", kind.alias("kind"), reason.alias("reason")
    )


@torch.no_grad()
def _forward(
    bundle: ModelBundle, batch: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The model's forecasts of the batch, and the last GAT layer's attention per edge [E] (None without it)."""
    module = bundle.module.eval()
    device = next(module.parameters()).device
    gat = getattr(module.model, "gat", None)
    with forecast_precision(bundle.cfg.train.trainer, device):  # as training forecast: the same scores
        if gat is None:
            return module(batch), None
        gat.keep_attention = True
        try:
            return module(batch), gat.attention
        finally:
            gat.keep_attention, gat.attention = False, None


def _ranked(
    bundle: ModelBundle,
    codes: np.ndarray,
    sectors: np.ndarray,
    out: dict[str, torch.Tensor],
    edge_index: torch.Tensor | None,
    attention: torch.Tensor | None,
    target: np.datetime64,
) -> pl.DataFrame:
    """The long ranked frame of every horizon (see :class:`DailyList`)."""
    point = out["point"].float().numpy()  # [N, n_h]
    quantiles = out["quantiles"].float().numpy()  # [N, n_h, Q]
    neighbours = _neighbours(codes, edge_index, attention)
    frames = []
    for j, h in enumerate(bundle.horizons):
        columns: dict[str, Any] = {
            "code": codes,
            "sector": sectors,
            "score": point[:, j],
        }
        for k, q in enumerate(bundle.info["quantiles"]):
            columns[quantile_name(q)] = quantiles[:, j, k]
        frames.append(
            pl.DataFrame(columns)
            .with_columns(neighbours=neighbours)
            .sort(["score", "code"], descending=[True, False])
            .with_row_index("rank", offset=1)
            .with_columns(date=pl.lit(target.astype(dt.date)), horizon=pl.lit(h, pl.Int32))
        )
    order = ["date", "horizon", "rank", "code", "sector", "score"]
    ranked = pl.concat(frames)
    return ranked.select(*order, *[c for c in ranked.columns if c not in order]).with_columns(
        pl.col("rank").cast(pl.Int32)
    )


def _neighbours(
    codes: np.ndarray, edge_index: torch.Tensor | None, attention: torch.Tensor | None
) -> pl.Series:
    """Per scored stock: its ``TOP_NEIGHBOURS`` sources by attention, ``code:weight`` joined by ``, ``."""
    n = len(codes)
    if edge_index is None or attention is None or edge_index.shape[1] == 0:
        return pl.Series("neighbours", [None] * n, dtype=pl.String)
    edges = pl.DataFrame(
        {
            "target": edge_index[1].numpy(),  # the stock that hears
            "source": codes[edge_index[0].numpy()],  # the neighbour it hears from
            "weight": attention.numpy(),
        }
    )
    top = (
        edges.sort(["target", "weight"], descending=[False, True])
        .group_by("target", maintain_order=True)
        .head(TOP_NEIGHBOURS)
        .group_by("target", maintain_order=True)
        .agg(pl.format("{}:{}", "source", pl.col("weight").round(3)).str.join(", ").alias("neighbours"))
    )
    return pl.DataFrame({"target": np.arange(n)}).join(top, on="target", how="left", maintain_order="left")[
        "neighbours"
    ]


def predict_day(
    source: str | Path,
    day: str = "latest",
    *,
    raw_dir: str | Path | None = None,
    top_k: int | None = None,
    out: str | Path | None = None,
    say: Say = print,
) -> tuple[DailyList, Path]:
    """``atft predict``: the ranked lists of ``day`` from a run folder or bundle, written to ``out``.

    ``out`` defaults to ``<run>/daily/<date>/`` for a run folder and ``<bundle>_daily/<date>/`` beside a bundle.
    """
    if top_k is not None and top_k < 1:
        raise DailyListError(f"--top-k must be at least 1, got {top_k}")
    bundle = ModelBundle.open(source)
    daily = daily_ranked_list(bundle, raw_dir, day, say=say)
    if out is None:
        source = Path(source)
        if source.is_dir():
            out = RunFolder(source).daily_dir(daily.date)
        else:
            out = source.with_name(f"{source.stem}_daily") / str(daily.date)
    daily.write(out, top_k)
    return daily, Path(out)
