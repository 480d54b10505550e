"""Metrics against independent references (scipy on a slow per-day loop)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft.evaluation.metrics import daily_ic, horizon_metrics, long_short_returns, mean_daily_rank_ic


@pytest.fixture
def panel():
    rng = np.random.default_rng(0)
    rows = []
    for d in range(30):
        n = int(rng.integers(3, 40))  # some days have too few stocks
        y = rng.normal(size=n)
        p = 0.3 * y + rng.normal(size=n)
        p[rng.random(n) < 0.1] = np.nan  # missing predictions
        y_missing = rng.random(n) < 0.1
        p = np.round(p, 1)  # ties, so average ranks matter
        for i in range(n):
            rows.append(
                (date(2020, 1, 1) + timedelta(days=d), f"{i:04d}", p[i], None if y_missing[i] else y[i])
            )
    return pl.DataFrame(rows, schema=["date", "code", "pred", "label"], orient="row")


def slow_daily(df: pl.DataFrame, method: str, min_stocks: int = 5) -> dict:
    out = {}
    for (d,), g in df.group_by("date"):
        g = g.drop_nulls().filter(pl.col("pred").is_not_nan())
        if g.height < min_stocks:
            continue
        x, y = g["pred"].to_numpy(), g["label"].to_numpy()
        r = stats.spearmanr(x, y).statistic if method == "spearman" else stats.pearsonr(x, y).statistic
        if not math.isnan(r):
            out[d] = r
    return out


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_daily_ic_matches_scipy(panel, method):
    fast = daily_ic(panel, "pred", "label", method=method)
    slow = slow_daily(panel, method)
    assert dict(zip(fast["date"], fast["ic"], strict=True)).keys() == slow.keys()
    for d, v in zip(fast["date"], fast["ic"], strict=True):
        assert v == pytest.approx(slow[d], abs=1e-12)


def test_mean_daily_rank_ic_is_mean_of_days(panel):
    slow = slow_daily(panel, "spearman")
    assert mean_daily_rank_ic(panel, "pred", "label") == pytest.approx(
        np.mean(list(slow.values())), abs=1e-12
    )


def test_constant_day_is_left_out_not_zero():
    df = pl.DataFrame(
        {
            "date": [date(2020, 1, 1)] * 6 + [date(2020, 1, 2)] * 6,
            "pred": [1.0] * 6 + [1, 2, 3, 4, 5, 6],
            "label": [1.0, 2, 3, 4, 5, 6] * 2,
        }
    )
    assert mean_daily_rank_ic(df, "pred", "label") == pytest.approx(1.0)


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        daily_ic(pl.DataFrame({"date": [], "p": [], "y": []}), "p", "y", method="kendall")


# ---- horizon_metrics and the long-short portfolio -------------------------------------------------------

METRICS = (
    "mae", "rmse", "r2", "naive_rmse", "ic", "rankic", "icir", "rankicir", "scale", "sharpe", "n_days", "coverage",
)  # fmt: skip


def make_preds(seed: int = 1, n_days: int = 40, horizons=(1, 5)) -> pl.DataFrame:
    """A validation frame with stocks entering and leaving, small days, missing labels and tied predictions."""
    rng = np.random.default_rng(seed)
    universe = [f"{i:04d}" for i in range(40)]
    rows = []
    for d in range(n_days):
        day = date(2021, 1, 4) + timedelta(days=d)
        n = int(rng.integers(3, 36))  # some days under min_stocks (5), some under 2 / quantile (10)
        codes = rng.choice(universe, size=n, replace=False)
        for h in horizons:
            y = rng.normal(scale=0.01 * math.sqrt(h), size=n)
            p = np.round(0.5 * y + rng.normal(scale=0.01, size=n), 2)  # coarse: many ties
            missing = rng.random(n) < 0.15
            for i, code in enumerate(codes):
                rows.append((day, str(code), h, float(p[i]), None if missing[i] else float(y[i])))
    return pl.DataFrame(
        rows,
        schema={
            "date": pl.Date,
            "code": pl.String,
            "horizon": pl.Int64,
            "prediction": pl.Float64,
            "label": pl.Float64,
        },
        orient="row",
    )


@pytest.fixture
def preds():
    return make_preds()


def by_day(df: pl.DataFrame, h: int) -> dict:
    """{date: (predictions, labels)} of horizon h over the labelled rows, in a plain Python loop."""
    out: dict = {}
    for d, _code, hh, p, y in df.iter_rows():
        if hh == h and y is not None:
            out.setdefault(d, ([], []))
            out[d][0].append(p)
            out[d][1].append(y)
    return {d: (np.array(p), np.array(y)) for d, (p, y) in out.items()}


def slow_correlations(df: pl.DataFrame, h: int, method: str, min_stocks: int = 5) -> list[float]:
    out = []
    for p, y in by_day(df, h).values():
        if len(y) < min_stocks or np.ptp(p) == 0 or np.ptp(y) == 0:
            continue
        out.append(
            stats.spearmanr(p, y).statistic if method == "spearman" else stats.pearsonr(p, y).statistic
        )
    return out


def slow_long_short(df_signal: dict, df_returns: dict, *, quantile: float, cost_bps: float) -> list[dict]:
    """The portfolio built day by day in dicts: weights, turnover against yesterday, gross and net return."""
    days = sorted({d for d, _ in df_signal} | {d for d, _ in df_returns})
    yesterday: dict[str, float] = {}
    out = []
    for d in days:
        eligible = [
            (code, p)
            for (dd, code), p in df_signal.items()
            if dd == d and p is not None and df_returns.get((d, code)) is not None
        ]
        # Best first, ties to the smaller code; the short leg is the tail of the same order.
        eligible.sort(key=lambda cp: (-cp[1], cp[0]))
        weights: dict[str, float] = {}
        if len(eligible) >= 2 / quantile:
            k = max(1, math.floor(quantile * len(eligible) + 1e-9))
            weights = {code: 1 / k for code, _ in eligible[:k]} | {code: -1 / k for code, _ in eligible[-k:]}
        turnover = sum(
            abs(weights.get(c, 0.0) - yesterday.get(c, 0.0)) for c in set(weights) | set(yesterday)
        )
        gross = sum(w * df_returns[(d, c)] for c, w in weights.items())
        out.append(
            {
                "date": d,
                "gross": gross,
                "turnover": turnover,
                "net": gross - cost_bps / 1e4 * turnover,
                "n_long": sum(w > 0 for w in weights.values()),
                "n_short": sum(w < 0 for w in weights.values()),
            }
        )
        yesterday = weights
    return out


def as_dict(df: pl.DataFrame, h: int) -> dict:
    return {(d, c): y for d, c, hh, _, y in df.iter_rows() if hh == h}


def signal_dict(df: pl.DataFrame, h: int) -> dict:
    return {(d, c): p for d, c, hh, p, _ in df.iter_rows() if hh == h}


def test_long_short_hand_example():
    day = [date(2022, 3, d) for d in (1, 2, 3, 4)]
    codes = list("ABCDEFGH")
    signal = {
        day[0]: dict(zip(codes, [8, 7, 6, 5, 4, 3, 2, 1], strict=True)),
        day[1]: dict(zip(codes, [8, 6, 7, 5, 4, 3, 2, 1], strict=True)) | {"Z": 99.0},  # Z has no return
        day[2]: dict(zip(codes[:7], [8, 7, 6, 5, 4, 3, 2], strict=True)),  # 7 < 2 / 0.25 stocks: no position
        day[3]: dict(zip(codes, [8, 7, 6, 5, 4, 3, 2, 1], strict=True)),
    }
    returns = {
        day[0]: {"A": 0.01, "B": 0.02, "C": 0.5, "D": 0.5, "E": 0.5, "F": 0.5, "G": -0.01, "H": 0.03},
        day[1]: dict.fromkeys(codes, 0.01) | {"Z": None},
        day[2]: dict.fromkeys(codes, 0.01),  # H has a return but no signal
        day[3]: dict.fromkeys(codes, 0.0),
    }
    signal_frame = pl.DataFrame(
        [(d, c, float(p)) for d, row in signal.items() for c, p in row.items()],
        schema=["date", "code", "prediction"],
        orient="row",
    )
    returns_frame = pl.DataFrame(
        [(d, c, r) for d, row in returns.items() for c, r in row.items()],
        schema={"date": pl.Date, "code": pl.String, "label": pl.Float64},
        orient="row",
    )
    got = long_short_returns(signal_frame, returns_frame, cost_bps=10.0, quantile=0.25)
    assert got.columns == ["date", "gross", "net", "turnover", "n_long", "n_short"]
    assert got["date"].to_list() == day
    # Day 1: long A, B and short G, H at 1/2 each; entering costs |w| summed = 2.
    # Day 2: B leaves the long leg and C enters it: turnover 1/2 + 1/2. Day 3: everything is sold (2).
    # Day 4: the same book as day 1 is bought back (2).
    assert got["turnover"].to_list() == pytest.approx([2.0, 1.0, 2.0, 2.0])
    assert got["gross"].to_list() == pytest.approx(
        [0.5 * 0.01 + 0.5 * 0.02 + 0.5 * 0.01 - 0.5 * 0.03, 0, 0, 0]
    )
    assert got["net"].to_list() == pytest.approx([0.005 - 0.002, -0.001, -0.002, -0.002])
    assert got["n_long"].to_list() == [2, 2, 0, 2]
    assert got["n_short"].to_list() == [2, 2, 0, 2]


@pytest.mark.parametrize(("quantile", "cost_bps"), [(0.2, 5.0), (0.25, 0.0), (0.1, 30.0)])
def test_long_short_matches_slow_loop(preds, quantile, cost_bps):
    fast = long_short_returns(
        preds.filter(pl.col("horizon") == 5),
        preds.filter(pl.col("horizon") == 1),
        cost_bps=cost_bps,
        quantile=quantile,
    )
    slow = slow_long_short(signal_dict(preds, 5), as_dict(preds, 1), quantile=quantile, cost_bps=cost_bps)
    assert fast["date"].to_list() == [row["date"] for row in slow]
    for col in ("gross", "turnover", "net"):
        assert fast[col].to_list() == pytest.approx([row[col] for row in slow], abs=1e-12), col
    for col in ("n_long", "n_short"):
        assert fast[col].to_list() == [row[col] for row in slow], col
    # The panel exercises what the test is for: idle days, and stocks entering and leaving the book.
    assert (fast["n_long"] == 0).any() and (fast["n_long"] > 0).any()


def test_long_short_leg_size_survives_float_round_off():
    # 0.29 * 100 is 28.999999999999996 in floating point; the leg is still 29 stocks.
    frame = pl.DataFrame(
        {
            "date": [date(2022, 1, 3)] * 100,
            "code": [f"{i:03d}" for i in range(100)],
            "prediction": np.arange(100.0),
        }
    )
    got = long_short_returns(frame, frame.rename({"prediction": "label"}), quantile=0.29)
    assert got["n_long"].item() == 29 and got["n_short"].item() == 29


def test_long_short_rejects_bad_input():
    frame = pl.DataFrame({"date": [date(2022, 1, 3)] * 2, "code": ["a", "a"], "prediction": [1.0, 2.0]})
    with pytest.raises(ValueError, match="quantile"):
        long_short_returns(frame, frame, quantile=0.6)
    with pytest.raises(ValueError, match="several rows"):
        long_short_returns(frame, frame.rename({"prediction": "label"}))


def test_horizon_metrics_keys(preds):
    got = horizon_metrics(preds)
    assert set(got) == {f"{m}_{h}d" for m in METRICS for h in (1, 5)}
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("h", [1, 5])
def test_pooled_errors_match_numpy(preds, h):
    got = horizon_metrics(preds)
    rows = preds.filter(pl.col("horizon") == h)
    labelled = rows.filter(pl.col("label").is_not_null())
    p, y = labelled["prediction"].to_numpy(), labelled["label"].to_numpy()
    assert got[f"mae_{h}d"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-12)
    assert got[f"rmse_{h}d"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), rel=1e-12)
    assert got[f"r2_{h}d"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-12)
    assert got[f"naive_rmse_{h}d"] == pytest.approx(np.linalg.norm(y) / math.sqrt(len(y)), rel=1e-12)
    assert got[f"coverage_{h}d"] == pytest.approx(len(y) / rows.height)


@pytest.mark.parametrize("h", [1, 5])
def test_daily_correlations_match_scipy(preds, h):
    got = horizon_metrics(preds)
    ic, rank_ic = slow_correlations(preds, h, "pearson"), slow_correlations(preds, h, "spearman")
    assert got[f"n_days_{h}d"] == len(ic) > 2
    assert got[f"ic_{h}d"] == pytest.approx(np.mean(ic), abs=1e-12)
    assert got[f"rankic_{h}d"] == pytest.approx(np.mean(rank_ic), abs=1e-12)
    assert got[f"icir_{h}d"] == pytest.approx(np.mean(ic) / np.std(ic, ddof=1), rel=1e-10)
    assert got[f"rankicir_{h}d"] == pytest.approx(np.mean(rank_ic) / np.std(rank_ic, ddof=1), rel=1e-10)


@pytest.mark.parametrize("min_stocks", [5, 12])
def test_scale_matches_loop(preds, min_stocks):
    got = horizon_metrics(preds, min_stocks=min_stocks)
    ratios = [
        np.std(p, ddof=1) / np.std(y, ddof=1)
        for p, y in by_day(preds, 5).values()
        if len(y) >= min_stocks and np.std(y) > 0
    ]
    assert got["scale_5d"] == pytest.approx(np.mean(ratios), rel=1e-12)


@pytest.mark.parametrize("h", [1, 5])
def test_sharpe_matches_slow_loop(preds, h):
    got = horizon_metrics(preds, cost_bps=7.0, quantile=0.2)
    net = [
        row["net"]
        for row in slow_long_short(signal_dict(preds, h), as_dict(preds, 1), quantile=0.2, cost_bps=7.0)
    ]
    assert got[f"sharpe_{h}d"] == pytest.approx(
        np.mean(net) / np.std(net, ddof=1) * math.sqrt(252), rel=1e-10
    )
    # Costs are charged: a free portfolio has a higher Sharpe.
    assert horizon_metrics(preds, cost_bps=0.0)[f"sharpe_{h}d"] > got[f"sharpe_{h}d"]


def test_missing_labels_are_excluded_not_zero(preds):
    got = horizon_metrics(preds)
    zero_filled = horizon_metrics(preds.with_columns(pl.col("label").fill_null(0.0)))
    assert got["coverage_5d"] < 1 and zero_filled["coverage_5d"] == 1
    # Treating a missing label as a 0 return would move every metric.
    for metric in ("mae", "rmse", "r2", "naive_rmse", "ic", "rankic", "scale", "sharpe"):
        assert got[f"{metric}_5d"] != pytest.approx(zero_filled[f"{metric}_5d"], rel=1e-6), metric
    # NaN labels count as missing too.
    nan_labels = horizon_metrics(preds.with_columns(pl.col("label").fill_null(float("nan"))))
    assert nan_labels == pytest.approx(got, nan_ok=True)


def test_without_horizon_1_sharpe_is_nan(preds):
    got = horizon_metrics(preds.filter(pl.col("horizon") == 5))
    assert set(got) == {f"{m}_5d" for m in METRICS}
    assert math.isnan(got["sharpe_5d"])
    assert got["rankic_5d"] == pytest.approx(horizon_metrics(preds)["rankic_5d"])


def test_perfect_predictor(preds):
    got = horizon_metrics(preds.with_columns(prediction=pl.col("label")))
    for h in (1, 5):
        assert got[f"rankic_{h}d"] == pytest.approx(1.0)
        assert got[f"ic_{h}d"] == pytest.approx(1.0)
        assert got[f"scale_{h}d"] == pytest.approx(1.0)
        assert got[f"r2_{h}d"] == pytest.approx(1.0)
        assert got[f"mae_{h}d"] == 0 and got[f"rmse_{h}d"] == 0
        assert math.isnan(got[f"rankicir_{h}d"])  # every day is 1: zero spread, no ratio
    # Sorting on tomorrow's return itself earns every day.
    assert got["sharpe_1d"] > 10


def test_constant_predictor(preds):
    got = horizon_metrics(preds.with_columns(prediction=pl.lit(0.0)))
    assert got["scale_5d"] == 0
    assert got["n_days_5d"] == 0
    for metric in ("ic", "rankic", "icir", "rankicir"):
        assert math.isnan(got[f"{metric}_5d"]), metric
    assert got["rmse_5d"] == pytest.approx(got["naive_rmse_5d"])


def test_icir_needs_two_days():
    one_day = pl.DataFrame(
        {
            "date": [date(2022, 1, 3)] * 6,
            "code": list("abcdef"),
            "horizon": [1] * 6,
            "prediction": [1.0, 2, 3, 4, 6, 5],
            "label": [1.0, 2, 3, 4, 5, 6],
        }
    )
    got = horizon_metrics(one_day)
    assert got["n_days_1d"] == 1 and got["rankic_1d"] == pytest.approx(1 - 6 * 2 / (6 * 35))
    assert math.isnan(got["icir_1d"]) and math.isnan(got["rankicir_1d"]) and math.isnan(got["sharpe_1d"])
