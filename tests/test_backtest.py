"""The portfolio backtest against a slow day-by-day reference, and its summary statistics against empyrical."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from atft.evaluation.backtest import backtest, performance_summary

START = date(2021, 1, 4)


def slow_backtest(
    signals: pl.DataFrame,
    returns: pl.DataFrame,
    *,
    strategy: str,
    top_k: int | None = None,
    quantile: float | None = None,
    holding_days: int = 1,
    cost_bps: float = 0.0,
) -> tuple[list[dict], dict]:
    """An obvious reading of docs/backtest.md: dicts of currency positions per sub-portfolio, day by day.

    Returns one dict per day (gross, net, turnover, cost, n_long, n_short, benchmark) and the counts.
    """
    preds: dict[date, list[tuple[str, float]]] = {}
    for d, c, p in signals.select("date", "code", "prediction").iter_rows():
        if p is not None and not math.isnan(p):
            preds.setdefault(d, []).append((c, p))
    rets = {}
    for d, c, r in returns.select("date", "code", "ret").iter_rows():
        if r is not None and not math.isnan(r):
            rets[(d, c)] = r
    signal_days = set(signals["date"])
    first, last = min(signal_days), max(signal_days)
    days = sorted(signal_days | {d for d in returns["date"] if first <= d <= last})

    h, rate = holding_days, cost_bps / 1e4
    books = {"port": [{} for _ in range(h)], "bench": [{} for _ in range(h)]}
    navs = {"port": [1.0 / h] * h, "bench": [1.0 / h] * h}
    missing = {"port": 0, "bench": 0}
    skipped = 0
    out = []
    for t, d in enumerate(days):
        j = t % h
        start = {name: sum(navs[name]) for name in navs}
        ranked = sorted(preds.get(d, []), key=lambda cp: (-cp[1], cp[0]))
        n = len(ranked)
        k = top_k if top_k is not None else math.floor(quantile * n + 1e-9)
        enough = k >= 1 and n >= (2 * k if strategy == "long_short" else k)
        row = {"gross": 0.0, "turnover": 0.0, "cost": 0.0, "benchmark": 0.0}
        if enough:
            wanted = {"port": {c: 1 / k for c, _ in ranked[:k]}, "bench": {c: 1 / n for c, _ in ranked}}
            if strategy == "long_short":
                wanted["port"] |= {c: -1 / k for c, _ in ranked[n - k :]}
            for name in books:
                old = books[name][j]
                new = {c: w * navs[name][j] for c, w in wanted[name].items()}
                traded = sum(abs(new.get(c, 0.0) - old.get(c, 0.0)) for c in set(old) | set(new))
                books[name][j] = new
                if name == "port":
                    navs[name][j] -= rate * traded
                    row["turnover"] = traded / start[name]
                    row["cost"] = rate * traded / start[name]
        else:
            skipped += 1
        net_book: dict[str, float] = {}
        for c, x in ((c, x) for book in books["port"] for c, x in book.items()):
            net_book[c] = net_book.get(c, 0.0) + x
        row["n_long"] = sum(x > 0 for x in net_book.values())
        row["n_short"] = sum(x < 0 for x in net_book.values())
        for name in books:
            unknown = set()
            pnl_total = 0.0
            for sub in range(h):
                pnl = 0.0
                for c, x in books[name][sub].items():
                    if (d, c) in rets:
                        pnl += x * rets[(d, c)]
                        books[name][sub][c] = x * (1 + rets[(d, c)])
                    elif x != 0:
                        unknown.add(c)
                navs[name][sub] += pnl
                pnl_total += pnl
            missing[name] += len(unknown)
            row["gross" if name == "port" else "benchmark"] = pnl_total / start[name]
        row["net"] = row["gross"] - row["cost"]
        row["date"] = d
        out.append(row)
    counts = {
        "skipped_rebalances": skipped,
        "missing_return_positions": missing["port"],
        "benchmark_missing_return_positions": missing["bench"],
    }
    return out, counts


def _days(n: int) -> list[date]:
    return [START + timedelta(days=i) for i in range(n)]


@pytest.fixture(scope="module")
def panel() -> tuple[pl.DataFrame, pl.DataFrame]:
    """30 stocks x 60 days: a stock listing late, one delisting, null returns and predictions, a day with
    too few predictions, a day with returns but no signals, and no returns known on the last day."""
    rng = np.random.default_rng(7)
    days, codes = _days(60), [f"{i:04d}" for i in range(30)]
    sig, ret = [], []
    for t, d in enumerate(days):
        for i, c in enumerate(codes):
            if c == "0029" and t < 25:  # lists on day 25
                continue
            if c == "0028" and t > 40:  # delisted after day 40: held positions lose their returns
                continue
            r = float(rng.normal(0.0005, 0.02))
            p = 0.3 * r / 0.02 + float(rng.normal())
            if t == 10 and i >= 3:  # day 10 has 3 predictions: too few to form a portfolio
                p = None
            elif rng.random() < 0.05:
                p = None
            if t != 30:  # day 30 is in the return calendar only
                sig.append((d, c, p))
            ret.append((d, c, None if rng.random() < 0.05 or t == len(days) - 1 else r))
    signals = pl.DataFrame(
        sig, schema={"date": pl.Date, "code": pl.String, "prediction": pl.Float64}, orient="row"
    )
    returns = pl.DataFrame(ret, schema={"date": pl.Date, "code": pl.String, "ret": pl.Float64}, orient="row")
    return signals, returns


CASES = [
    ("long_short", {"top_k": 5}, 1),
    ("long_short", {"quantile": 0.2}, 5),
    ("long_short", {"top_k": 4}, 3),
    ("long_only", {"top_k": 5}, 1),
    ("long_only", {"quantile": 0.3}, 5),
]


@pytest.mark.parametrize(("strategy", "size", "holding"), CASES)
def test_matches_slow_reference(panel, strategy, size, holding):
    signals, returns = panel
    result = backtest(signals, returns, strategy=strategy, holding_days=holding, cost_bps=10.0, **size)
    slow, counts = slow_backtest(
        signals, returns, strategy=strategy, holding_days=holding, cost_bps=10.0, **size
    )
    daily = result.daily
    assert daily["date"].to_list() == [row["date"] for row in slow]
    for col in ("gross", "net", "turnover", "cost"):
        np.testing.assert_allclose(daily[col].to_numpy(), [row[col] for row in slow], rtol=0, atol=1e-10)
    for col in ("n_long", "n_short"):
        assert daily[col].to_list() == [row[col] for row in slow]
    if strategy == "long_only":
        bench = [row["benchmark"] for row in slow]
        np.testing.assert_allclose(daily["benchmark"].to_numpy(), bench, rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            daily["excess"].to_numpy(), daily["net"].to_numpy() - bench, rtol=0, atol=1e-10
        )
        assert (
            result.summary["benchmark_missing_return_positions"]
            == counts["benchmark_missing_return_positions"]
        )
    else:
        assert "benchmark" not in daily.columns
    assert result.summary["skipped_rebalances"] == counts["skipped_rebalances"]
    assert result.summary["missing_return_positions"] == counts["missing_return_positions"]
    # The panel exercises every repair: they must show up in the counts, not vanish.
    assert result.summary["skipped_rebalances"] >= 2  # day 10 (3 predictions) and day 30 (none)
    assert result.summary["missing_return_positions"] > 0
    assert result.summary["days_without_signals"] == 1
    assert result.summary["null_predictions"] == signals["prediction"].null_count()
    assert result.summary["n_days"] == 60
    assert result.summary["sharpe"] == pytest.approx(performance_summary(daily["net"].to_numpy())["sharpe"])
    assert result.summary["mean_turnover"] == pytest.approx(daily["turnover"].mean())


def test_first_formation_trades_from_cash(panel):
    signals, returns = panel
    daily = backtest(signals, returns, strategy="long_short", top_k=5, holding_days=5, cost_bps=10.0).daily
    # Sub-portfolio 0 buys 1/5 of the capital long and sells 1/5 short: 2/5 of the NAV traded.
    assert daily["turnover"][0] == pytest.approx(0.4, abs=1e-12)
    assert daily["cost"][0] == pytest.approx(0.4 * 10e-4, abs=1e-15)


@pytest.mark.parametrize("holding", [1, 3])
def test_common_return_is_counted_once(holding):
    """When every stock earns the same return, a fully invested long-only book earns exactly that return
    and a long-short book earns 0: no sub-portfolio counts a day twice."""
    days, codes = _days(12), [f"{i:02d}" for i in range(10)]
    rng = np.random.default_rng(1)
    common = rng.normal(0, 0.01, len(days))
    signals = pl.DataFrame(
        {
            "date": [d for d in days for _ in codes],
            "code": codes * len(days),
            "prediction": rng.normal(size=120),
        }
    )
    returns = signals.select("date", "code", ret=pl.Series(np.repeat(common, len(codes))))
    long_only = backtest(signals, returns, strategy="long_only", top_k=3, holding_days=holding).daily
    # From day h-1 on every sub-portfolio is invested.
    np.testing.assert_allclose(
        long_only["gross"].to_numpy()[holding - 1 :], common[holding - 1 :], atol=1e-14
    )
    np.testing.assert_allclose(long_only["excess"].to_numpy()[holding - 1 :], 0.0, atol=1e-14)
    long_short = backtest(signals, returns, strategy="long_short", top_k=3, holding_days=holding).daily
    np.testing.assert_allclose(long_short["gross"].to_numpy(), 0.0, atol=1e-14)


def test_ties_broken_by_code():
    d = START
    signals = pl.DataFrame({"date": [d] * 4, "code": ["A", "B", "C", "D"], "prediction": [0.0] * 4})
    returns = pl.DataFrame({"date": [d] * 4, "code": ["A", "B", "C", "D"], "ret": [0.01, 0.05, -0.03, -0.02]})
    daily = backtest(signals, returns, top_k=1).daily
    # All tied: the smallest code goes long, the largest short.
    assert daily["gross"][0] == pytest.approx(0.01 - (-0.02))
    assert (daily["n_long"][0], daily["n_short"][0]) == (1, 1)


def _sharpe_panel(kind: str, holding: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(3)
    n_days, n_stocks = 500, 100
    ret = rng.normal(0.0, 0.02, (n_days, n_stocks))
    # The realized h-day forward return from each day (over the days that remain).
    growth = np.cumprod(np.vstack([np.ones(n_stocks), 1 + ret]), axis=0)
    ahead = growth[np.minimum(np.arange(n_days) + holding, n_days)] / growth[:n_days] - 1
    signal = {"perfect": ahead, "negated": -ahead, "random": rng.normal(size=(n_days, n_stocks))}[kind]
    days = _days(n_days)
    base = pl.DataFrame(
        {
            "date": [d for d in days for _ in range(n_stocks)],
            "code": [f"{i:03d}" for i in range(n_stocks)] * n_days,
        }
    )
    return base.with_columns(prediction=signal.ravel()), base.with_columns(ret=ret.ravel())


@pytest.mark.parametrize("holding", [1, 5])
def test_sharpe_sign_follows_skill(holding):
    sharpe = {}
    for kind in ("perfect", "negated", "random"):
        signals, returns = _sharpe_panel(kind, holding)
        result = backtest(signals, returns, strategy="long_short", top_k=10, holding_days=holding)
        sharpe[kind] = result.summary["sharpe"]
    assert sharpe["perfect"] > 10
    assert sharpe["negated"] < -10
    # 500 days: the Sharpe estimate of a skill-less book has a standard error of about sqrt(252/500) = 0.7.
    assert abs(sharpe["random"]) < 2.5


@pytest.mark.parametrize("drift", [0.0006, -0.0004])
def test_performance_summary_matches_empyrical(drift):
    empyrical = pytest.importorskip("empyrical")
    r = np.random.default_rng(11).normal(drift, 0.012, 400)
    ours = performance_summary(r)
    reference = {
        "annual_return": empyrical.annual_return(r),
        "annual_volatility": empyrical.annual_volatility(r),
        "sharpe": empyrical.sharpe_ratio(r),
        "sortino": empyrical.sortino_ratio(r),
        "max_drawdown": empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r),
    }
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-10, abs=1e-14), key
    assert ours["hit_rate"] == pytest.approx(np.mean(r > 0))
    assert ours["n_days"] == 400
    assert ours["max_drawdown"] < 0


def test_performance_summary_degenerate_series():
    assert math.isnan(performance_summary(np.array([0.01]))["sharpe"])
    flat = performance_summary(np.full(10, 0.001))
    assert math.isnan(flat["sharpe"]) and math.isnan(flat["sortino"]) and math.isnan(flat["calmar"])
    assert flat["max_drawdown"] == 0.0
    assert performance_summary(np.array([]))["n_days"] == 0
    with pytest.raises(ValueError, match="finite"):
        performance_summary(np.array([0.01, np.nan]))


def _small() -> tuple[pl.DataFrame, pl.DataFrame]:
    days = _days(3)
    signals = pl.DataFrame(
        {
            "date": [d for d in days for _ in range(4)],
            "code": ["A", "B", "C", "D"] * 3,
            "prediction": np.arange(12.0),
        }
    )
    return signals, signals.select("date", "code", ret=pl.lit(0.01))


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (lambda s, r: (s.drop("prediction"), r), {"top_k": 1}, r"signals lacks column\(s\) \['prediction'\]"),
        (lambda s, r: (s, r.rename({"ret": "label"})), {"top_k": 1}, r"returns lacks column\(s\) \['ret'\]"),
        (
            lambda s, r: (pl.concat([s, s.head(1)]), r),
            {"top_k": 1},
            r"signals has 2 rows sharing a \(date, code\)",
        ),
        (
            lambda s, r: (s, pl.concat([r, r.tail(1)])),
            {"top_k": 1},
            r"returns has 2 rows sharing a \(date, code\)",
        ),
        (lambda s, r: (s, r), {"top_k": 1, "quantile": 0.2}, "exactly one of top_k and quantile"),
        (lambda s, r: (s, r), {}, "exactly one of top_k and quantile"),
        (lambda s, r: (s, r), {"top_k": 1, "holding_days": 0}, "holding_days must be an integer >= 1"),
        (lambda s, r: (s, r), {"top_k": 0}, "top_k must be a positive integer"),
        (lambda s, r: (s, r), {"quantile": 0.6}, r"quantile must be in \(0, 0.5\]"),
        (lambda s, r: (s, r), {"top_k": 1, "strategy": "short_only"}, "strategy must be"),
        (lambda s, r: (s, r), {"top_k": 1, "cost_bps": -1.0}, "cost_bps"),
        (
            lambda s, r: (s, r.with_columns(ret=pl.when(pl.col("code") == "C").then(-1.5).otherwise("ret"))),
            {"top_k": 1},
            r"returns row 2 \(date=2021-01-04, code='C'\) has ret=-1.5",
        ),
        (
            lambda s, r: (
                s.with_columns(code=pl.when(pl.col("code") == "B").then(None).otherwise("code")),
                r,
            ),
            {"top_k": 1},
            "signals row 1 has a null code",
        ),
        (
            lambda s, r: (s, r.with_columns(pl.col("date").cast(pl.Datetime))),
            {"top_k": 1},
            "signals.date is Date but returns.date is Datetime",
        ),
    ],
)
def test_bad_input_is_rejected(change, kwargs, message):
    signals, returns = change(*_small())
    with pytest.raises(ValueError, match=message):
        backtest(signals, returns, **kwargs)
