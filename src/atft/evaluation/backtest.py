"""Portfolio backtest of one horizon's forecasts: the daily returns, turnover and costs of a long-short or
long-only book built from the predictions, with staggered sub-portfolios for multi-day holding, and the
summary statistics of its daily series. Every definition is in ``docs/backtest.md``.

The simulation follows the book's positions in currency, so that positions drift with prices between
rebalances and each trade is measured from the drifted book. That makes each day depend on the previous
one; the loop runs over days, with every stock and every sub-portfolio of a day handled at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from atft.evaluation.metrics import ROUNDOFF_EPS, TRADING_DAYS, check_unique

Strategy = Literal["long_short", "long_only"]

# The statistics of performance_summary, besides n_days.
_STATS = ("annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown", "calmar", "hit_rate")


@dataclass(frozen=True)
class BacktestResult:
    """The outcome of ``backtest``: the daily series, the summary of the net (and gross) series, and the
    parameters that produced them, so that a stored result says how it was made."""

    daily: pl.DataFrame
    summary: dict[str, float | int]
    params: dict[str, object] = field(default_factory=dict)


def backtest(
    signals: pl.DataFrame,
    returns: pl.DataFrame,
    *,
    strategy: Strategy = "long_short",
    top_k: int | None = None,
    quantile: float | None = None,
    holding_days: int = 1,
    cost_bps: float = 0.0,
) -> BacktestResult:
    """Simulate the portfolio that trades ``signals`` and earns ``returns``, day by day (docs/backtest.md).

    ``signals`` holds (date, code, prediction): one horizon's forecasts, made at the close of ``date``.
    ``returns`` holds (date, code, ret): each stock's return from the close of ``date`` to the next trading
    close (null where unknown). On each day a portfolio is formed from the stocks with a present prediction:
    ``long_short`` holds the best ``k`` at +1/k and the worst ``k`` at -1/k, ``long_only`` the best ``k`` at
    1/k against an equal-weight benchmark of all of them; ``k`` is ``top_k``, or ``floor(quantile * n)`` of
    the day's ``n`` stocks (give exactly one). ``holding_days = h`` splits the capital into ``h`` staggered
    sub-portfolios that each rebalance every ``h`` days and drift in between; ``h = 1`` rebalances daily.
    ``cost_bps`` is charged per side on every unit of weight traded.

    Returns a ``BacktestResult``: ``daily`` is one row per day of the calendar (date, gross, net, turnover,
    cost, n_long, n_short, and for ``long_only`` benchmark and excess); ``summary`` holds
    ``performance_summary`` of the net series (gross_*, and benchmark_*, excess_* for long_only), the mean
    daily turnover and the counts of every repair made to the data.
    """
    _check_params(strategy, top_k, quantile, holding_days, cost_bps)
    signals = _checked_frame(signals, "signals", "prediction")
    returns = _checked_frame(returns, "returns", "ret")
    if signals.schema["date"] != returns.schema["date"]:
        raise ValueError(
            f"signals.date is {signals.schema['date']} but returns.date is {returns.schema['date']}: "
            "they must have the same type to be matched"
        )
    _check_returns(returns)

    if signals.height == 0:
        raise ValueError("signals is empty: there is nothing to backtest")
    first, last = signals["date"].min(), signals["date"].max()
    # The calendar is every day of the signal window on which either frame has a row: a day with returns
    # but no signals still earns the returns of the positions held over it (it forms nothing).
    calendar = (
        pl.concat(
            [signals.select("date"), returns.select("date").filter(pl.col("date").is_between(first, last))]
        )
        .unique()
        .sort("date")
        .with_row_index("t")
    )
    # Only stocks that ever have a signal can be held; other stocks' returns are never needed.
    stocks = signals.select("code").unique().sort("code").with_row_index("i")
    n_days, n_stocks = calendar.height, stocks.height

    present = signals.filter(pl.col("prediction").is_not_null() & pl.col("prediction").is_not_nan())
    targets, formed = _targets(present, calendar, stocks, strategy, top_k, quantile)

    rets = returns.join(calendar, on="date").join(stocks, on="code")
    rets = rets.filter(pl.col("ret").is_not_null() & pl.col("ret").is_not_nan())
    t_idx, i_idx = rets["t"].to_numpy(), rets["i"].to_numpy()
    # A stock-day without a present return earns 0: its price is taken as unchanged, and the position-days
    # where this happens are counted (missing_return_positions).
    ret = np.zeros((n_days, n_stocks))
    ret[t_idx, i_idx] = rets["ret"].to_numpy()
    known = np.zeros((n_days, n_stocks), dtype=bool)
    known[t_idx, i_idx] = True

    dates = calendar["date"].to_list()
    book = _simulate(ret, known, targets, formed, holding_days, cost_bps * 1e-4, dates)
    daily = calendar.select("date").with_columns(
        gross=pl.Series(book.gross),
        net=pl.Series(book.gross - book.cost),
        turnover=pl.Series(book.turnover),
        cost=pl.Series(book.cost),
        n_long=pl.Series(book.n_long, dtype=pl.Int64),
        n_short=pl.Series(book.n_short, dtype=pl.Int64),
    )
    net = daily["net"].to_numpy()
    summary: dict[str, float | int] = dict(performance_summary(net))
    summary |= _prefixed("gross_", performance_summary(book.gross))

    if strategy == "long_only":
        universe = _universe_targets(present, calendar, stocks, formed)
        bench = _simulate(ret, known, universe, formed, holding_days, 0.0, dates)
        daily = daily.with_columns(benchmark=pl.Series(bench.gross), excess=pl.Series(net - bench.gross))
        summary |= _prefixed("benchmark_", performance_summary(bench.gross))
        summary |= _prefixed("excess_", performance_summary(net - bench.gross))
        summary["benchmark_missing_return_positions"] = bench.missing

    summary |= {
        "mean_turnover": float(book.turnover.mean()),
        "skipped_rebalances": int((~formed).sum()),
        "missing_return_positions": book.missing,
        "null_predictions": signals.height - present.height,
        "days_without_signals": n_days - signals["date"].n_unique(),
    }
    params = {
        "strategy": strategy,
        "top_k": top_k,
        "quantile": quantile,
        "holding_days": holding_days,
        "cost_bps": cost_bps,
    }
    return BacktestResult(daily=daily, summary=summary, params=params)


def performance_summary(returns: np.ndarray) -> dict[str, float]:
    """Summary statistics of one continuous series of daily simple returns (docs/backtest.md).

    annual_return (geometric, 252-day years), annual_volatility, sharpe, sortino, max_drawdown (of the
    compounded NAV, <= 0), calmar, hit_rate (share of days > 0) and n_days. The definitions follow
    empyrical, except that a ratio with a zero denominator is NaN rather than infinite. Statistics that
    need more days than there are (2 for a standard deviation, 1 for the rest) are NaN.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"performance_summary needs a 1-D series of daily returns, got shape {r.shape}")
    if not np.isfinite(r).all():
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"performance_summary: return {bad} is {r[bad]}; every daily return must be finite")
    n = r.size
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(_STATS, nan) | {"n_days": 0}

    final = float(np.prod(1.0 + r))
    # A NAV that ends below zero has no real geometric rate (as in empyrical, NaN); one that ends at zero
    # lost everything: -100%.
    annual_return = final ** (TRADING_DAYS / n) - 1 if final >= 0 else nan

    std = float(r.std(ddof=1)) if n >= 2 else nan
    # Identical values can leave a std of ~1e-18 from the rounding of their mean; that is a zero std.
    if n >= 2 and r.max() == r.min():
        std = 0.0
    mean = float(r.mean())
    sharpe = mean / std * math.sqrt(TRADING_DAYS) if std > 0 else nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(TRADING_DAYS)
    sortino = mean * TRADING_DAYS / downside if n >= 2 and downside > 0 else nan

    # The NAV starts at 1 before the first day, so that a loss on the first day is a drawdown (and the
    # running peak is never below 1).
    nav = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    max_drawdown = float((nav / np.maximum.accumulate(nav) - 1.0).min())
    calmar = annual_return / -max_drawdown if max_drawdown < 0 and not math.isnan(annual_return) else nan

    return {
        "annual_return": annual_return,
        "annual_volatility": std * math.sqrt(TRADING_DAYS),
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_drawdown,
        "calmar": calmar,
        "hit_rate": float((r > 0).mean()),
        "n_days": n,
    }


def _prefixed(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    # n_days is the same for every series of one backtest: reported once, unprefixed.
    return {prefix + key: value for key, value in stats.items() if key != "n_days"}


def _check_params(
    strategy: str, top_k: int | None, quantile: float | None, holding_days: int, cost_bps: float
) -> None:
    if strategy not in ("long_short", "long_only"):
        raise ValueError(f"strategy must be 'long_short' or 'long_only', got {strategy!r}")
    if (top_k is None) == (quantile is None):
        raise ValueError("give exactly one of top_k and quantile")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if quantile is not None:
        upper = 0.5 if strategy == "long_short" else 1.0
        # Past 0.5 the long and short legs of a long-short book would share stocks.
        if not 0 < quantile <= upper:
            raise ValueError(f"quantile must be in (0, {upper}] for {strategy}, got {quantile}")
    if isinstance(holding_days, bool) or not isinstance(holding_days, int) or holding_days < 1:
        raise ValueError(f"holding_days must be an integer >= 1, got {holding_days!r}")
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"cost_bps must be finite and >= 0, got {cost_bps}")


def _checked_frame(frame: pl.DataFrame, name: str, value: str) -> pl.DataFrame:
    """``frame`` reduced to (date, code, value) with code as text, after checking what the backtest needs."""
    missing = [c for c in ("date", "code", value) if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it needs date, code, {value}")
    if not frame.schema["date"].is_temporal():
        raise ValueError(f"{name}.date must be a Date, got {frame.schema['date']}")
    if not frame.schema[value].is_numeric():
        raise ValueError(f"{name}.{value} must be numeric, got {frame.schema[value]}")
    out = frame.select("date", pl.col("code").cast(pl.String), pl.col(value).cast(pl.Float64))
    for col in ("date", "code"):
        nulls = out[col].is_null()
        if nulls.any():
            raise ValueError(f"{name} row {int(nulls.arg_true()[0])} has a null {col}")
    check_unique(out, ["date", "code"], name)
    return out


def _check_returns(returns: pl.DataFrame) -> None:
    # Null and NaN mean unknown; an infinite return or a loss of more than 100% is corrupt data.
    bad = returns["ret"].is_infinite() | (returns["ret"] < -1)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise ValueError(
            f"returns row {row} (date={returns['date'][row]}, code={returns['code'][row]!r}) has "
            f"ret={returns['ret'][row]}; a return must be finite and >= -1"
        )


@dataclass
class _Targets:
    """Target weights of each formation, as rows (t, i, w) sorted by day t, with ``start[t]:start[t + 1]``
    the rows of day t: a day's book is a few hundred stocks, so rows beat a dense days x stocks matrix."""

    stock: np.ndarray
    weight: np.ndarray
    start: np.ndarray


def _as_targets(rows: pl.DataFrame, n_days: int) -> _Targets:
    t = rows["t"].to_numpy()
    return _Targets(
        stock=rows["i"].to_numpy(),
        weight=rows["w"].to_numpy(),
        start=np.searchsorted(t, np.arange(n_days + 1)),
    )


def _targets(
    present: pl.DataFrame,
    calendar: pl.DataFrame,
    stocks: pl.DataFrame,
    strategy: str,
    top_k: int | None,
    quantile: float | None,
) -> tuple[_Targets, np.ndarray]:
    """The strategy's target weights on each day and whether the day has enough stocks to form one."""
    n = pl.len().over("t")
    k = pl.lit(top_k) if top_k is not None else (n * quantile + ROUNDOFF_EPS).floor().cast(pl.Int64)
    needed = 2 * pl.col("k") if strategy == "long_short" else pl.col("k")
    # One total order per day, best prediction first and ties to the smaller code, so that the selection
    # does not depend on row order and the two legs never share a stock.
    ranked = (
        present.join(calendar, on="date")
        .join(stocks, on="code")
        # i numbers the codes in sorted order, so ordering by i is ordering by code (and faster).
        .sort(["t", "prediction", "i"], descending=[False, True, False])
        .with_columns(pos=pl.int_range(pl.len()).over("t"), n=n, k=k)
        .with_columns(ok=(pl.col("k") >= 1) & (pl.col("n") >= needed))
    )
    formed = np.zeros(calendar.height, dtype=bool)
    formed[ranked.filter("ok")["t"].unique().to_numpy()] = True
    long = pl.col("pos") < pl.col("k")
    short = (pl.col("pos") >= pl.col("n") - pl.col("k")) if strategy == "long_short" else pl.lit(False)
    rows = (
        ranked.filter("ok")
        .with_columns(w=pl.when(long).then(1 / pl.col("k")).when(short).then(-1 / pl.col("k")).otherwise(0.0))
        .filter(pl.col("w") != 0)
        .select("t", "i", "w")
    )
    return _as_targets(rows, calendar.height), formed


def _universe_targets(
    present: pl.DataFrame, calendar: pl.DataFrame, stocks: pl.DataFrame, formed: np.ndarray
) -> _Targets:
    """The long-only benchmark: every stock with a present prediction at 1/n, on the days the portfolio
    forms (on its other days the benchmark keeps holding too, so both are measured on one schedule)."""
    rows = (
        present.join(calendar, on="date")
        .join(stocks, on="code")
        .filter(pl.col("t").is_in(np.flatnonzero(formed).tolist()))
        .sort("t", "i")
        .select("t", "i", w=1 / pl.len().over("t"))
    )
    return _as_targets(rows, calendar.height)


@dataclass
class _Book:
    """The daily series of one simulated book, and its count of held positions without a known return."""

    gross: np.ndarray
    cost: np.ndarray
    turnover: np.ndarray
    n_long: np.ndarray
    n_short: np.ndarray
    missing: int


def _simulate(
    ret: np.ndarray,
    known: np.ndarray,
    targets: _Targets,
    formed: np.ndarray,
    holding_days: int,
    cost_rate: float,
    dates: list,
) -> _Book:
    """Run the staggered book through the calendar.

    ``ret`` is days x stocks (0 where unknown, ``known`` False there); sub-portfolio ``j`` starts with 1/h
    of the capital in cash and trades to its targets, scaled to its NAV, on the days ``t`` with
    ``t % h == j`` where ``formed[t]``; on its other days it holds, its positions drifting with their stocks.
    Costs leave the sub-portfolio's cash on the day of the trade.
    """
    n_days, n_stocks = ret.shape
    h = holding_days
    position = np.zeros((h, n_stocks))  # currency value of each sub-portfolio's holding of each stock
    nav = np.full(h, 1.0 / h)  # cash plus positions, per sub-portfolio
    gross, cost, turnover = np.zeros(n_days), np.zeros(n_days), np.zeros(n_days)
    n_long = np.zeros(n_days, dtype=np.int64)
    n_short = np.zeros(n_days, dtype=np.int64)
    missing = 0
    growth = 1.0 + ret

    for t in range(n_days):
        total = nav.sum()  # the book's NAV at the start of the day, before its trades
        if not total > 0:
            raise ValueError(
                f"the portfolio's NAV fell to {total} before {dates[t]}: its returns are undefined"
            )
        j = t % h
        if formed[t]:
            if not nav[j] > 0:
                raise ValueError(
                    f"sub-portfolio {j} has NAV {nav[j]} on {dates[t]}: it cannot form a portfolio"
                )
            rows = slice(targets.start[t], targets.start[t + 1])
            target = np.zeros(n_stocks)
            target[targets.stock[rows]] = targets.weight[rows] * nav[j]
            traded = float(np.abs(target - position[j]).sum())
            position[j] = target
            nav[j] -= cost_rate * traded
            turnover[t] = traded / total
            cost[t] = cost_rate * traded / total

        book = position.sum(axis=0)
        n_long[t] = int((book > 0).sum())
        n_short[t] = int((book < 0).sum())
        unknown = np.flatnonzero(~known[t])
        missing += int((position[:, unknown] != 0).any(axis=0).sum())

        pnl = position @ ret[t]
        gross[t] = pnl.sum() / total
        nav += pnl
        position *= growth[t]

    return _Book(gross=gross, cost=cost, turnover=turnover, n_long=n_long, n_short=n_short, missing=missing)
