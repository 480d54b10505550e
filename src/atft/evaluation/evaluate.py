"""The evaluation of a run's predictions: every metric of ``horizon_metrics`` plus the ones a report needs
to judge a ranking model (RankIC t-statistic, plain and Newey-West, hit rate, precision@k, decile means,
row counts) and, on the synthetic market, the oracle's RankIC on the same rows and the share of it the
model captures.

``evaluate_predictions`` computes them from the long predictions frame the training engine writes;
``write_evaluation`` stores them beside the predictions. Each metric is defined in ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from atft.evaluation.metrics import (
    ROUNDOFF_EPS,
    as_float,
    check_quantile,
    check_unique,
    daily_ic,
    horizon_metrics,
    mean_over_std,
    present,
)
from atft.evaluation.stats import default_lags, newey_west_tstat

# Share of a day's scored stocks that precision@k looks at when no fixed ``top_k`` is given.
DEFAULT_TOP_FRACTION = 0.1
N_DECILES = 10


@dataclass(frozen=True)
class EvaluationResult:
    """The metrics of one predictions frame.

    ``metrics`` is a nested dict of plain Python values: one entry per horizon (``"1d"``, ``"5d"``, ...),
    ``"ic_decay"`` and ``"settings"``. A metric with nothing to compute on is NaN here and null in JSON.
    ``per_day`` has one row per (date, horizon) of the predictions: date, horizon, ic, rankic, n (and
    oracle_rankic with an oracle), the correlations null on a day that does not qualify.
    """

    metrics: dict[str, Any]
    per_day: pl.DataFrame

    def to_json(self) -> str:
        """The metrics as JSON, NaN written as null (strict JSON has no NaN token)."""
        return json.dumps(json_ready(self.metrics), indent=2, allow_nan=False)


def evaluate_predictions(
    preds: pl.DataFrame,
    *,
    oracle: pl.DataFrame | None = None,
    top_k: int | None = None,
    cost_bps: float = 5.0,
    quantile: float = 0.2,
    min_stocks: int = 5,
) -> EvaluationResult:
    """Score a long predictions frame, per horizon, and across horizons (docs/metrics.md).

    ``preds`` has one row per (date, code, horizon) with ``prediction`` and ``label`` (null where the label
    is unknown); other columns (quantiles) are ignored. ``oracle`` (synthetic markets) has (date, code,
    ``oracle_<h>d``) for every horizon of ``preds`` and must cover every scored row. ``top_k`` is the number
    of stocks precision@k looks at each day; None means 10% of the day's scored stocks (at least 1).
    ``cost_bps`` and ``quantile`` set the long-short portfolio behind ``sharpe``; a day needs ``min_stocks``
    scored rows to count in the daily metrics.
    """
    _check_preds(preds)
    check_quantile(quantile)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    horizons: list[int] = sorted(preds["horizon"].unique().to_list())
    frame = preds.select(
        "date",
        "code",
        "horizon",
        pl.col("prediction").cast(pl.Float64),
        pl.col("label").cast(pl.Float64),
    )
    if oracle is not None:
        oracle = _checked_oracle(oracle, preds, horizons)

    base = _by_horizon(horizon_metrics(frame, cost_bps=cost_bps, quantile=quantile, min_stocks=min_stocks))
    metrics: dict[str, Any] = {}
    per_day = []
    for h in horizons:
        key = f"{h}d"
        rows = frame.filter(pl.col("horizon") == h)
        scored = rows.filter(present("prediction") & present("label"))
        days = _daily(rows, min_stocks=min_stocks)
        rank_ic = days["rankic"].drop_nulls()
        n_labelled = rows.select(present("label").sum()).item()
        out = base[key] | {
            "n_days": int(base[key]["n_days"]),
            "rankic_tstat": mean_over_std(rank_ic) * math.sqrt(rank_ic.len()),
            # Consecutive days' h-day labels share h - 1 days: the daily RankICs are not independent.
            "rankic_nw_tstat": newey_west_tstat(rank_ic.to_numpy(), default_lags(h)),
            "hit_rate": _hit_rate(scored),
            "precision_at_k": _precision_at_k(scored, top_k=top_k, min_stocks=min_stocks),
            "decile_mean_label": _decile_mean_label(scored, min_stocks=min_stocks),
            "n_rows": rows.height,
            "n_labelled": int(n_labelled),
            "n_unlabelled": rows.height - int(n_labelled),
            "n_scored": scored.height,
        }
        if oracle is not None and f"oracle_{key}" not in oracle.columns:
            days = days.with_columns(oracle_rankic=pl.lit(None, dtype=pl.Float64))
        elif oracle is not None:
            oracle_days = oracle_daily(scored, oracle, f"oracle_{key}", min_stocks=min_stocks)
            days = days.join(oracle_days, on="date", how="left")
            oracle_rankic = as_float(oracle_days["oracle_rankic"].mean())
            out["oracle_rankic"] = oracle_rankic
            # A ratio to a non-positive skill has no meaning as a share of it.
            out["capture"] = out["rankic"] / oracle_rankic if oracle_rankic > 0 else float("nan")
        metrics[key] = out
        per_day.append(days.with_columns(horizon=pl.lit(h, dtype=preds.schema["horizon"])))

    metrics["ic_decay"] = {
        "ic": {f"{h}d": metrics[f"{h}d"]["ic"] for h in horizons},
        "rankic": {f"{h}d": metrics[f"{h}d"]["rankic"] for h in horizons},
    }
    if oracle is not None:
        metrics["ic_decay"]["oracle_rankic"] = {
            f"{h}d": metrics[f"{h}d"]["oracle_rankic"]
            for h in horizons
            if "oracle_rankic" in metrics[f"{h}d"]
        }
    metrics["settings"] = {
        "top_k": top_k,
        "cost_bps": cost_bps,
        "quantile": quantile,
        "min_stocks": min_stocks,
    }

    columns = ["date", "horizon", "ic", "rankic", "n"] + (["oracle_rankic"] if oracle is not None else [])
    if per_day:
        table = pl.concat([d.select(columns) for d in per_day]).sort("horizon", "date")
    else:
        schema = {"date": preds.schema["date"], "horizon": preds.schema["horizon"], "ic": pl.Float64}
        schema |= {"rankic": pl.Float64, "n": pl.Int64, "oracle_rankic": pl.Float64}
        table = pl.DataFrame(schema={c: schema[c] for c in columns})
    return EvaluationResult(metrics=metrics, per_day=table)


# ---- input checks ---------------------------------------------------------------------------------------


def _require(
    frame: pl.DataFrame, name: str, column: str, ok: Callable[[pl.DataType], bool], what: str
) -> None:
    if column not in frame.columns:
        raise ValueError(f"{name} is missing column {column!r} (it has: {', '.join(frame.columns)})")
    dtype = frame.schema[column]
    if not ok(dtype):
        raise ValueError(f"{name} column {column!r} must be {what}, got {dtype}")


def _is_date(dtype: pl.DataType) -> bool:
    return dtype == pl.Date or isinstance(dtype, pl.Datetime)


def _is_number(dtype: pl.DataType) -> bool:
    # An all-null column (a split with no label at all) has the Null type.
    return dtype.is_numeric() or dtype == pl.Null


def _check_preds(preds: pl.DataFrame) -> None:
    _require(preds, "preds", "date", _is_date, "a date")
    _require(preds, "preds", "code", lambda t: t == pl.String, "a string")
    _require(preds, "preds", "horizon", lambda t: t.is_integer(), "an integer")
    _require(preds, "preds", "prediction", _is_number, "numeric")
    _require(preds, "preds", "label", _is_number, "numeric")
    # A row without its key cannot be placed on a day or a horizon; it is refused rather than lost.
    for column in ("date", "code", "horizon"):
        nulls = preds[column].null_count()
        if nulls:
            raise ValueError(f"preds column {column!r} has {nulls} null values")
    check_unique(preds, ["date", "code", "horizon"], "preds")


def _checked_oracle(oracle: pl.DataFrame, preds: pl.DataFrame, horizons: list[int]) -> pl.DataFrame:
    """The oracle's key and horizon columns, checked against ``preds``, as Float64."""
    _require(
        oracle, "oracle", "date", lambda t: t == preds.schema["date"], f"{preds.schema['date']} like preds"
    )
    _require(oracle, "oracle", "code", lambda t: t == pl.String, "a string")
    # A horizon the oracle does not cover (the synthetic one knows 1, 5, 10, 20 days) gets no oracle metrics.
    columns = [f"oracle_{h}d" for h in horizons if f"oracle_{h}d" in oracle.columns]
    if not columns:
        raise ValueError(f"oracle has none of the columns {[f'oracle_{h}d' for h in horizons]}")
    for column in columns:
        _require(oracle, "oracle", column, _is_number, "numeric")
    check_unique(oracle, ["date", "code"], "oracle")
    return oracle.select("date", "code", *[pl.col(c).cast(pl.Float64) for c in columns])


# ---- per-horizon metrics --------------------------------------------------------------------------------


def _by_horizon(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"rankic_5d": x}`` -> ``{"5d": {"rankic": x}}``, keeping horizon_metrics' order of metrics."""
    out: dict[str, dict[str, float]] = {}
    for name, value in flat.items():
        metric, horizon = name.rsplit("_", 1)
        out.setdefault(horizon, {})[metric] = value
    return out


def _daily(rows: pl.DataFrame, *, min_stocks: int) -> pl.DataFrame:
    """Every day of one horizon: (date, ic, rankic, n), the correlations null where the day does not
    qualify, so that a skipped day stays visible with its number of scored rows."""
    days = rows.group_by("date").agg(n=(present("prediction") & present("label")).sum().cast(pl.Int64))
    for method, column in (("pearson", "ic"), ("spearman", "rankic")):
        values = daily_ic(rows, "prediction", "label", method=method, min_stocks=min_stocks)
        days = days.join(values.select("date", pl.col("ic").alias(column)), on="date", how="left")
    return days.sort("date")


def oracle_daily(scored: pl.DataFrame, oracle: pl.DataFrame, column: str, *, min_stocks: int) -> pl.DataFrame:
    """Daily RankIC of the oracle against the labels on exactly the rows the model is scored on."""
    joined = scored.join(oracle.select("date", "code", column), on=["date", "code"], how="left")
    # Scoring the oracle on fewer rows than the model would make the capture ratio compare two samples.
    missing = joined.filter(~present(column))
    if missing.height:
        first = missing.sort("date", "code").row(0, named=True)
        raise ValueError(
            f"oracle column {column!r} has no value for {missing.height} of the {scored.height} scored rows "
            f"(first: date {first['date']}, code {first['code']})"
        )
    values = daily_ic(joined, column, "label", method="spearman", min_stocks=min_stocks)
    return values.select("date", oracle_rankic="ic")


def _hit_rate(scored: pl.DataFrame) -> float:
    """Share of scored rows with a non-zero label whose prediction has the label's sign."""
    return as_float(
        scored.filter(pl.col("label") != 0)
        .select((pl.col("prediction").sign() == pl.col("label").sign()).mean())
        .item()
    )


def _positions(scored: pl.DataFrame) -> pl.DataFrame:
    """Each scored row's 0-based place in its day's best-first order, by prediction (``pred_pos``) and by
    label (``label_pos``), ties going to the smaller code so that nothing depends on row order; ``n`` is
    the day's number of scored rows."""
    return (
        scored.sort(["date", "prediction", "code"], descending=[False, True, False])
        .with_columns(pred_pos=pl.int_range(pl.len()).over("date"))
        .sort(["date", "label", "code"], descending=[False, True, False])
        .with_columns(label_pos=pl.int_range(pl.len()).over("date"), n=pl.len().over("date").cast(pl.Int64))
    )


def _precision_at_k(scored: pl.DataFrame, *, top_k: int | None, min_stocks: int) -> float:
    """Mean over days of the share of the k best-predicted stocks that are among the k best labels."""
    if top_k is None:
        k = (pl.col("n") * DEFAULT_TOP_FRACTION + ROUNDOFF_EPS).floor().cast(pl.Int64).clip(lower_bound=1)
    else:
        k = pl.lit(top_k, dtype=pl.Int64)
    return as_float(
        _positions(scored)
        .with_columns(k=k)
        # With k >= n every stock is in both sets and the day would score 1 whatever the prediction.
        .filter((pl.col("n") >= min_stocks) & (pl.col("k") < pl.col("n")))
        .group_by("date")
        .agg(
            precision=((pl.col("pred_pos") < pl.col("k")) & (pl.col("label_pos") < pl.col("k"))).sum()
            / pl.col("k").first()
        )
        .select(pl.col("precision").mean())
        .item()
    )


def _decile_mean_label(scored: pl.DataFrame, *, min_stocks: int) -> list[float]:
    """Mean label of each prediction decile (1 = lowest predictions, 10 = highest), averaged over days."""
    means = (
        _positions(scored)
        # Below 10 stocks some decile would be empty on that day and the days would not compare.
        .filter(pl.col("n") >= max(N_DECILES, min_stocks))
        .with_columns(decile=N_DECILES - N_DECILES * pl.col("pred_pos") // pl.col("n"))
        .group_by("date", "decile")
        .agg(pl.col("label").mean())
        .group_by("decile")
        .agg(pl.col("label").mean())
    )
    found = dict(zip(means["decile"].to_list(), means["label"].to_list(), strict=True))
    return [as_float(found.get(d)) for d in range(1, N_DECILES + 1)]


# ---- writing --------------------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) as None, which JSON writes as null."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
