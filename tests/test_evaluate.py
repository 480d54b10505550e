"""The evaluation metrics against independent references: scipy and slow loops over days in plain Python."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft.evaluation.evaluate import evaluate_predictions
from atft.evaluation.metrics import horizon_metrics
from atft.evaluation.stats import newey_west_tstat
from atft.training.run_folder import RunFolder

HORIZONS = (1, 5)
SMALL_DAY = 3  # 4 stocks: under min_stocks (5), so no daily value
NINE_DAY = 5  # 9 stocks: enough for correlations, too few for deciles
TIED_DAY = 7  # coarse predictions and labels: ties in every ordering


def make_preds(seed: int = 0, n_days: int = 30) -> pl.DataFrame:
    """40 stocks x 30 days x 2 horizons, with missing labels, a few missing predictions, zero labels and
    predictions, ties, and days too small for some metrics. Quantile columns ride along."""
    rng = np.random.default_rng(seed)
    universe = [f"{i:04d}" for i in range(40)]
    rows = []
    for d in range(n_days):
        day = date(2021, 1, 4) + timedelta(days=d)
        n = {SMALL_DAY: 4, NINE_DAY: 9}.get(d, int(rng.integers(20, 41)))
        codes = rng.choice(universe, size=n, replace=False)
        for h in HORIZONS:
            y = rng.normal(scale=0.01 * math.sqrt(h), size=n)
            p = 0.4 * y + rng.normal(scale=0.01, size=n)
            if d == TIED_DAY:
                y, p = np.round(y, 2), np.round(p, 2)
            y[rng.random(n) < 0.1] = 0.0  # a zero label has no sign: left out of the hit rate
            p[rng.random(n) < 0.05] = 0.0
            p[rng.random(n) < 0.03] = np.nan  # the engine never writes one, but the metrics must cope
            missing = rng.random(n) < 0.15
            for i, code in enumerate(codes):
                label = None if missing[i] else float(y[i])
                rows.append((day, str(code), h, float(p[i]), label, p[i] - 0.02, p[i], p[i] + 0.02))
    schema = {"date": pl.Date, "code": pl.String, "horizon": pl.Int32, "prediction": pl.Float64}
    schema |= {"label": pl.Float64, "q05": pl.Float64, "q50": pl.Float64, "q95": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def make_oracle(preds: pl.DataFrame, seed: int = 1) -> pl.DataFrame:
    """A noisy oracle on every (date, code) of preds, better than the predictions but not perfect."""
    rng = np.random.default_rng(seed)
    wide = preds.pivot(on="horizon", index=["date", "code"], values="label").sort("date", "code")
    columns = {}
    for h in HORIZONS:
        y = wide[str(h)].fill_null(0.0).to_numpy()
        columns[f"oracle_{h}d"] = y + rng.normal(scale=0.005, size=len(y))
    return wide.select("date", "code").with_columns(**{k: pl.Series(v) for k, v in columns.items()})


@pytest.fixture(scope="module")
def preds() -> pl.DataFrame:
    return make_preds()


@pytest.fixture(scope="module")
def result(preds):
    return evaluate_predictions(preds)


def scored_days(preds: pl.DataFrame, h: int, extra: dict | None = None) -> dict:
    """{date: [(code, prediction, label, extra value)]} over the rows of horizon h with both present."""
    out: dict = {}
    for row in preds.iter_rows(named=True):
        p, y = row["prediction"], row["label"]
        if row["horizon"] != h or y is None or p is None or math.isnan(p):
            continue
        other = extra[(row["date"], row["code"])] if extra else None
        out.setdefault(row["date"], []).append((row["code"], p, y, other))
    return out


def slow_rankics(preds: pl.DataFrame, h: int, min_stocks: int = 5, use_extra: dict | None = None) -> dict:
    out = {}
    for d, rows in scored_days(preds, h, use_extra).items():
        x = np.array([r[3] if use_extra else r[1] for r in rows])
        y = np.array([r[2] for r in rows])
        if len(rows) < min_stocks or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        out[d] = stats.spearmanr(x, y).statistic
    return out


def nan_equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# ---- every metric against its reference -----------------------------------------------------------------


def test_everything_of_horizon_metrics_is_there(preds, result):
    flat = horizon_metrics(preds)
    assert flat
    for name, value in flat.items():
        metric, key = name.rsplit("_", 1)
        assert nan_equal(result.metrics[key][metric], value), name
    assert isinstance(result.metrics["1d"]["n_days"], int)


@pytest.mark.parametrize("h", HORIZONS)
def test_rankic_tstat_matches_scipy(preds, result, h):
    daily = list(slow_rankics(preds, h).values())
    assert len(daily) == 30 - 1  # the 4-stock day has no value
    expected = stats.ttest_1samp(daily, 0.0).statistic
    assert result.metrics[f"{h}d"]["rankic_tstat"] == pytest.approx(expected, rel=1e-10)
    assert result.metrics[f"{h}d"]["rankic"] == pytest.approx(np.mean(daily), abs=1e-12)


@pytest.mark.parametrize("h", HORIZONS)
def test_rankic_nw_tstat_is_newey_west_of_the_daily_rankic(preds, result, h):
    daily = slow_rankics(preds, h)
    days = sorted(daily)
    expected = newey_west_tstat([daily[d] for d in days], lags=h - 1)
    m = result.metrics[f"{h}d"]
    assert m["rankic_nw_tstat"] == pytest.approx(expected, rel=1e-10)
    on_days = result.per_day.filter(pl.col("horizon") == h).sort("date")
    assert m["rankic_nw_tstat"] == newey_west_tstat(on_days["rankic"], h - 1)  # nulls dropped, in date order
    assert list(m).index("rankic_nw_tstat") == list(m).index("rankic_tstat") + 1
    if h == 1:  # no overlap, no lag: the plain t-statistic with variance over n instead of n - 1
        n = len(days)
        assert m["rankic_nw_tstat"] * math.sqrt((n - 1) / n) == pytest.approx(m["rankic_tstat"], rel=1e-10)


def test_rankic_nw_tstat_in_metrics_json(tmp_path, preds, result):
    loaded = json.loads(
        RunFolder(tmp_path).write_evaluation(result, preds).joinpath("metrics.json").read_text()
    )
    for h in HORIZONS:
        assert loaded[f"{h}d"]["rankic_nw_tstat"] == result.metrics[f"{h}d"]["rankic_nw_tstat"]


@pytest.mark.parametrize("h", HORIZONS)
def test_hit_rate_matches_loop(preds, result, h):
    hits = total = 0
    for rows in scored_days(preds, h).values():
        for _code, p, y, _ in rows:
            if y == 0:
                continue
            total += 1
            hits += np.sign(p) == np.sign(y)  # a zero prediction calls no direction: a miss
    assert total > 0
    assert result.metrics[f"{h}d"]["hit_rate"] == pytest.approx(hits / total, abs=1e-12)


@pytest.mark.parametrize("top_k", [None, 3, 12])
@pytest.mark.parametrize("h", HORIZONS)
def test_precision_at_k_matches_loop(preds, h, top_k):
    per_day = []
    for rows in scored_days(preds, h).values():
        n = len(rows)
        k = max(1, math.floor(0.1 * n + 1e-9)) if top_k is None else top_k
        if n < 5 or k >= n:
            continue
        best_predicted = {r[0] for r in sorted(rows, key=lambda r: (-r[1], r[0]))[:k]}
        best_labels = {r[0] for r in sorted(rows, key=lambda r: (-r[2], r[0]))[:k]}
        per_day.append(len(best_predicted & best_labels) / k)
    got = evaluate_predictions(preds, top_k=top_k).metrics[f"{h}d"]["precision_at_k"]
    assert got == pytest.approx(np.mean(per_day), abs=1e-12)


@pytest.mark.parametrize("h", HORIZONS)
def test_decile_mean_label_matches_loop(preds, result, h):
    sums = np.zeros(10)
    n_days = 0
    for rows in scored_days(preds, h).values():
        n = len(rows)
        if n < 10:
            continue
        ranked = sorted(rows, key=lambda r: (-r[1], r[0]))  # best first
        for j in range(10):  # the j-th tenth from the top is decile 10 - j
            group = ranked[math.ceil(j * n / 10) : math.ceil((j + 1) * n / 10)]
            sums[9 - j] += np.mean([r[2] for r in group])
        n_days += 1
    assert n_days == 30 - 2  # the 4- and 9-stock days are too small
    assert result.metrics[f"{h}d"]["decile_mean_label"] == pytest.approx(list(sums / n_days), abs=1e-12)


def test_deciles_by_hand():
    # 20 stocks, labels equal to predictions 1..20: decile j holds 2j-1 and 2j, whose mean is 2j - 0.5.
    frame = pl.DataFrame(
        {
            "date": [date(2022, 1, 3)] * 20,
            "code": [f"{i:02d}" for i in range(20)],
            "horizon": [1] * 20,
            "prediction": [float(v) for v in range(1, 21)],
            "label": [float(v) for v in range(1, 21)],
        }
    )
    metrics = evaluate_predictions(frame).metrics["1d"]
    assert metrics["decile_mean_label"] == [2 * j - 0.5 for j in range(1, 11)]
    assert metrics["precision_at_k"] == 1.0  # k = 2: the two best predicted are the two best labels
    assert metrics["hit_rate"] == 1.0


@pytest.mark.parametrize("h", HORIZONS)
def test_row_counts(preds, result, h):
    rows = [r for r in preds.iter_rows(named=True) if r["horizon"] == h]
    labelled = sum(r["label"] is not None for r in rows)
    scored = sum(len(v) for v in scored_days(preds, h).values())
    m = result.metrics[f"{h}d"]
    assert (m["n_rows"], m["n_labelled"], m["n_unlabelled"]) == (len(rows), labelled, len(rows) - labelled)
    assert m["n_scored"] == scored < labelled  # some labelled rows have no prediction
    assert m["n_unlabelled"] > 0


def test_per_day_matches_scipy(preds, result):
    per_day = result.per_day
    assert per_day.columns == ["date", "horizon", "ic", "rankic", "n"]
    assert per_day.height == 30 * len(HORIZONS)  # every day listed, those without a value too
    for h in HORIZONS:
        days = scored_days(preds, h)
        for row in per_day.filter(pl.col("horizon") == h).iter_rows(named=True):
            rows = days[row["date"]]
            assert row["n"] == len(rows)
            if len(rows) < 5:
                assert row["ic"] is None and row["rankic"] is None
                continue
            p, y = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
            assert row["ic"] == pytest.approx(stats.pearsonr(p, y).statistic, abs=1e-12)
            assert row["rankic"] == pytest.approx(stats.spearmanr(p, y).statistic, abs=1e-12)
        assert per_day.filter(pl.col("horizon") == h)["rankic"].mean() == pytest.approx(
            result.metrics[f"{h}d"]["rankic"], abs=1e-12
        )


def test_ic_decay(result):
    decay = result.metrics["ic_decay"]
    assert list(decay) == ["ic", "rankic"]
    for h in HORIZONS:
        assert decay["rankic"][f"{h}d"] == result.metrics[f"{h}d"]["rankic"]
        assert decay["ic"][f"{h}d"] == result.metrics[f"{h}d"]["ic"]


# ---- the oracle -----------------------------------------------------------------------------------------


def test_oracle_rankic_and_capture_match_loop(preds, result):
    oracle = make_oracle(preds)
    evaluated = evaluate_predictions(preds, oracle=oracle)
    for h in HORIZONS:
        values = dict(
            zip(zip(oracle["date"], oracle["code"], strict=True), oracle[f"oracle_{h}d"], strict=True)
        )
        daily = slow_rankics(preds, h, use_extra=values)
        m = evaluated.metrics[f"{h}d"]
        assert m["oracle_rankic"] == pytest.approx(np.mean(list(daily.values())), abs=1e-12)
        assert m["oracle_rankic"] > m["rankic"] > 0
        assert m["capture"] == pytest.approx(m["rankic"] / m["oracle_rankic"], rel=1e-12)
        assert m["rankic"] == result.metrics[f"{h}d"]["rankic"]  # the model's score is unchanged
        on_days = evaluated.per_day.filter(pl.col("horizon") == h)
        assert dict(zip(on_days["date"], on_days["oracle_rankic"], strict=True)) == pytest.approx(
            {d: daily.get(d) for d in on_days["date"]}, abs=1e-12
        )
    assert evaluated.metrics["ic_decay"]["oracle_rankic"]["5d"] == evaluated.metrics["5d"]["oracle_rankic"]


def test_oracle_equal_to_label_has_rankic_one(preds, result):
    # The oracle reads the label only on the rows the model is scored on; elsewhere it is noise.
    oracle = (
        preds.pivot(on="horizon", index=["date", "code"], values="label")
        .with_columns(pl.col(str(h)).fill_null(0.5).alias(f"oracle_{h}d") for h in HORIZONS)
        .drop([str(h) for h in HORIZONS])
    )
    metrics = evaluate_predictions(preds, oracle=oracle).metrics
    for h in HORIZONS:
        assert metrics[f"{h}d"]["oracle_rankic"] == pytest.approx(1.0, abs=1e-12)
        assert metrics[f"{h}d"]["capture"] == pytest.approx(result.metrics[f"{h}d"]["rankic"], abs=1e-12)


def test_oracle_must_cover_every_scored_row(preds):
    oracle = make_oracle(preds)
    first = preds.filter(pl.col("label").is_not_null() & (pl.col("horizon") == 5)).row(0, named=True)
    holed = oracle.with_columns(
        pl.when((pl.col("date") == first["date"]) & (pl.col("code") == first["code"]))
        .then(None)
        .otherwise(pl.col("oracle_5d"))
        .alias("oracle_5d")
    )
    with pytest.raises(ValueError, match="oracle_5d.*1 of the"):
        evaluate_predictions(preds, oracle=holed)


@pytest.mark.parametrize("column", ["date", "code"])
def test_oracle_missing_column(preds, column):
    with pytest.raises(ValueError, match=f"oracle is missing column '{column}'"):
        evaluate_predictions(preds, oracle=make_oracle(preds).drop(column))


def test_a_horizon_the_oracle_does_not_cover_gets_no_oracle_metrics(preds):
    partial = evaluate_predictions(preds, oracle=make_oracle(preds).drop("oracle_1d"))
    full = evaluate_predictions(preds, oracle=make_oracle(preds))
    assert "oracle_rankic" not in partial.metrics["1d"] and "capture" not in partial.metrics["1d"]
    assert partial.metrics["5d"]["capture"] == full.metrics["5d"]["capture"]
    assert list(partial.metrics["ic_decay"]["oracle_rankic"]) == ["5d"]
    assert (
        partial.per_day.filter(pl.col("horizon") == 1)["oracle_rankic"].null_count()
        == partial.per_day.filter(pl.col("horizon") == 1).height
    )
    with pytest.raises(ValueError, match="oracle has none of the columns"):
        evaluate_predictions(preds, oracle=make_oracle(preds).drop("oracle_1d", "oracle_5d"))


# ---- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["date", "code", "horizon", "prediction", "label"])
def test_missing_column(preds, column):
    with pytest.raises(ValueError, match=f"preds is missing column '{column}'"):
        evaluate_predictions(preds.drop(column))


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("date", pl.col("date").cast(pl.String)),
        ("code", pl.col("code").cast(pl.Categorical)),
        ("horizon", pl.col("horizon").cast(pl.Float64)),
        ("prediction", pl.col("prediction").cast(pl.String)),
    ],
)
def test_wrong_type(preds, column, bad):
    with pytest.raises(ValueError, match=f"preds column '{column}' must be"):
        evaluate_predictions(preds.with_columns(bad))


def test_null_key_and_duplicates_are_refused(preds):
    with pytest.raises(ValueError, match="'code' has 1 null"):
        evaluate_predictions(
            preds.with_columns(code=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise("code"))
        )
    with pytest.raises(ValueError, match="several rows"):
        evaluate_predictions(pl.concat([preds, preds.head(1)]))


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True])
def test_bad_top_k(preds, top_k):
    with pytest.raises(ValueError, match="top_k"):
        evaluate_predictions(preds, top_k=top_k)


def test_no_rows():
    empty = make_preds().clear()
    out = evaluate_predictions(empty)
    assert out.per_day.height == 0
    assert out.per_day.columns == ["date", "horizon", "ic", "rankic", "n"]
    assert out.metrics["ic_decay"] == {"ic": {}, "rankic": {}}


# ---- writing --------------------------------------------------------------------------------------------


def test_write_round_trip(tmp_path, preds):
    # A horizon without a single label: its metrics are NaN, which JSON must write as null.
    unlabelled = preds.filter(pl.col("horizon") == 5).with_columns(
        horizon=pl.lit(20, dtype=pl.Int32), label=pl.lit(None, dtype=pl.Float64)
    )
    frame = pl.concat([preds, unlabelled])
    oracle = make_oracle(preds).with_columns(oracle_20d=pl.lit(0.0))
    result = evaluate_predictions(frame, oracle=oracle)
    assert math.isnan(result.metrics["20d"]["rankic"])
    assert result.metrics["20d"]["n_unlabelled"] == result.metrics["20d"]["n_rows"] == unlabelled.height

    out = RunFolder(tmp_path).write_evaluation(result, frame)
    assert out == tmp_path / "eval"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_day.parquet", "predictions.parquet"]
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["20d"]["rankic"] is None and loaded["20d"]["capture"] is None
    assert loaded["20d"]["decile_mean_label"] == [None] * 10
    assert loaded["5d"]["rankic"] == result.metrics["5d"]["rankic"]
    assert loaded["settings"] == {"top_k": None, "cost_bps": 5.0, "quantile": 0.2, "min_stocks": 5}
    assert pl.read_parquet(out / "predictions.parquet").equals(frame)  # quantile columns included
    assert pl.read_parquet(out / "per_day.parquet").equals(result.per_day)

    # Writing again replaces the files in place.
    RunFolder(tmp_path).write_evaluation(result, frame.head(3))
    assert pl.read_parquet(out / "predictions.parquet").height == 3
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_day.parquet", "predictions.parquet"]
