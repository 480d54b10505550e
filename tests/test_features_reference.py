"""Every feature, flag, normalization and label against a slow, obvious reference (docs/features.md).

The references are written from the definitions in ``docs/features.md``, independently of
``atft.features``: plain numpy loops over each stock's own rows and over each date's rows, no polars
rolling or EWM. Missing values are NaN in the references; the implementation must be null exactly there
(that is how the warmup and no-imputation rules are checked) and equal elsewhere up to float32 precision.

The panel is small and random, with the awkward cases planted on purpose: a stock listed late, a stock
with a missing day (alone in its sector), a stock without a sector, a zero-volume day, a stock that
starts flat and then only rises (RSI's 0/0 and D = 0 rules), a stock halted flat for 20 days (zero
standard deviation and range) and one paused for 3 days (tied returns), dates where every bar or half the
bars are flat (constant and zero-MAD dates for the normalization), and an index that lacks a stock date.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from atft.features.build import compute_features
from atft.features.labels import build_labels
from atft.features.market import market_features

# --------------------------------------------------------------------------------------------------
# The panel
# --------------------------------------------------------------------------------------------------

N_DAYS = 262
SEED = 10  # with this draw a plain polars rolling_mean sums the halted window of min(l,0)^2 to -2e-20
CODES = [str(1001 + i) for i in range(12)]
SECTORS = ["A", "A", "A", "A", "B", "B", "B", "B", "C", "C", "D", None]  # D: one stock; 1012: none
LATE = ("1002", 40)  # listed on day 40
GAP = ("1011", 130)  # missing day 130; alone in sector D, so D's own date series lacks it too
ZERO_VOLUME = ("1003", 120)
FLAT_START = "1009"  # days 0-5 flat, days 6-20 only up
HALTED = ("1005", range(90, 110))  # flat (O = H = L = C, same close) for 20 days: zero std and range
PAUSED = ("1006", range(100, 103))  # flat for 3 days: ret_1d ties with the halted stock
INDEX_GAP = 150  # the index has no row for this day
ALL_FLAT_BARS = 240  # every bar of the day has O = H = L = C: constant hl_range, intraday_ret, ...
HALF_FLAT_BARS = (245, CODES[:7])  # 7 of 12 flat: zero MAD, the robust z falls back to the std
HORIZONS = [1, 5, 20]


def trading_days(n: int) -> list[date]:
    days, d = [], date(2023, 1, 2)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def make_panel() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(SEED)
    days = trading_days(N_DAYS)
    mkt = rng.normal(3e-4, 0.01, N_DAYS)
    index_close = 2000 * np.exp(np.cumsum(mkt))
    sector_factor = {s: rng.normal(0, 0.006, N_DAYS) for s in dict.fromkeys(SECTORS)}  # not set(): hash order
    rows = []
    for code, sector in zip(CODES, SECTORS, strict=True):
        logret = rng.uniform(0.5, 1.5) * mkt + sector_factor[sector] + rng.normal(0, 0.015, N_DAYS)
        flat = np.zeros(N_DAYS, bool)
        if code == FLAT_START:
            logret[:6], logret[6:21], flat[:6] = 0.0, 0.01, True
        for stock, days_flat in (HALTED, PAUSED):
            if code == stock:
                logret[list(days_flat)], flat[list(days_flat)] = 0.0, True
        flat[ALL_FLAT_BARS] = True
        flat[HALF_FLAT_BARS[0]] = code in HALF_FLAT_BARS[1]
        close = rng.uniform(50, 500) * np.exp(np.cumsum(logret))
        prev = np.concatenate([[close[0]], close[:-1]])
        open_ = np.where(flat, close, prev * np.exp(rng.normal(0, 0.004, N_DAYS)))
        high = np.maximum(open_, close) * np.exp(np.where(flat, 0, np.abs(rng.normal(0, 0.006, N_DAYS))))
        low = np.minimum(open_, close) * np.exp(-np.where(flat, 0, np.abs(rng.normal(0, 0.006, N_DAYS))))
        volume = np.round(np.exp(rng.normal(11, 0.5, N_DAYS)))
        if code == ZERO_VOLUME[0]:
            volume[ZERO_VOLUME[1]] = 0.0
        for t in range(N_DAYS):
            if (code == LATE[0] and t < LATE[1]) or (code == GAP[0] and t == GAP[1]):
                continue
            rows.append((days[t], code, open_[t], high[t], low[t], close[t], volume[t], sector))
    prices = pl.DataFrame(
        rows,
        schema={"date": pl.Date, "code": pl.String, "open": pl.Float64, "high": pl.Float64,
                "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64, "sector": pl.String},
        orient="row",
    ).sort("code", "date")  # fmt: skip
    keep = [t for t in range(N_DAYS) if t != INDEX_GAP]
    index = pl.DataFrame(
        {
            "date": [days[t] for t in keep],
            "open": index_close[keep] * 0.999,
            "high": index_close[keep] * 1.004,
            "low": index_close[keep] * 0.995,
            "close": index_close[keep],
            "volume": np.full(len(keep), 1e9),
        }
    )
    return prices, index


# --------------------------------------------------------------------------------------------------
# Reference primitives (NaN = missing; a window with a missing value or too few rows is missing)
# --------------------------------------------------------------------------------------------------


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """x_{t-k} within the stock's own rows."""
    out = np.full(len(x), np.nan)
    out[k:] = x[: len(x) - k]
    return out


def rolling(x: np.ndarray, w: int, f) -> np.ndarray:
    """f over the last w values including t; missing until w values, and wherever one is missing."""
    out = np.full(len(x), np.nan)
    for t in range(w - 1, len(x)):
        window = x[t - w + 1 : t + 1]
        if not np.isnan(window).any():
            out[t] = f(window)
    return out


def sample_std(x: np.ndarray) -> float:
    # Exactly 0 for a constant window (np.std can leave a 1-ulp residue there, which the 0-std rules read).
    return 0.0 if np.all(x == x[0]) else float(np.std(x, ddof=1))


def ema(x: np.ndarray, span: int) -> np.ndarray:
    """adjust=True: sum (1-a)^(t-i) x_i / sum (1-a)^(t-i) over all values since the first; missing until span."""
    a, out = 2 / (span + 1), np.full(len(x), np.nan)
    start = int(np.flatnonzero(~np.isnan(x))[0])
    assert not np.isnan(x[start:]).any()
    for t in range(start + span - 1, len(x)):
        weights = (1 - a) ** np.arange(t - start, -1, -1)
        out[t] = weights @ x[start : t + 1] / weights.sum()
    return out


def wilder(x: np.ndarray, n: int) -> np.ndarray:
    """a_t = a_{t-1} + (x_t - a_{t-1}) / n, started at the first value; missing until n values."""
    out = np.full(len(x), np.nan)
    start = int(np.flatnonzero(~np.isnan(x))[0])
    avg = x[start]
    for t in range(start, len(x)):
        if t > start:
            avg = avg + (x[t] - avg) / n
        if t - start + 1 >= n:
            out[t] = avg
    return out


def where_defined(x: np.ndarray, value: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.nan, value)


# --------------------------------------------------------------------------------------------------
# Per-stock references (one function per definition of docs/features.md)
# --------------------------------------------------------------------------------------------------


@dataclass
class Stock:
    code: str
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    mkt: dict[str, np.ndarray]  # the market features of the same dates (NaN where the index lacks one)


def simple_return(s: Stock) -> np.ndarray:
    return s.c / lag(s.c, 1) - 1


def log_return(s: Stock) -> np.ndarray:
    return np.log(s.c / lag(s.c, 1))


def ret(s: Stock, w: int) -> np.ndarray:
    return s.c / lag(s.c, w) - 1


def log_ret(s: Stock, w: int) -> np.ndarray:
    return np.log(s.c / lag(s.c, w))


def mom_60_5(s: Stock) -> np.ndarray:
    return lag(s.c, 5) / lag(s.c, 60) - 1


def dist_high_60(s: Stock) -> np.ndarray:
    return s.c / rolling(s.h, 60, np.max) - 1


def dist_low_60(s: Stock) -> np.ndarray:
    return s.c / rolling(s.l, 60, np.min) - 1


def vol(s: Stock, w: int) -> np.ndarray:
    return rolling(log_return(s), w, sample_std)


def vol_ratio_5_20(s: Stock) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # 0/0 after 20 flat days: no value (NaN here, null there)
        return vol(s, 5) / vol(s, 20)


def downside_vol_20(s: Stock) -> np.ndarray:
    return rolling(log_return(s), 20, lambda x: math.sqrt(np.mean(np.minimum(x, 0) ** 2)))


def parkinson(s: Stock, w: int) -> np.ndarray:
    return rolling(np.log(s.h / s.l) ** 2, w, lambda x: math.sqrt(np.mean(x) / (4 * math.log(2))))


def garman_klass_20(s: Stock) -> np.ndarray:
    term = 0.5 * np.log(s.h / s.l) ** 2 - (2 * math.log(2) - 1) * np.log(s.c / s.o) ** 2
    return rolling(term, 20, lambda x: math.sqrt(max(0.0, np.mean(x))))


def sma(x: np.ndarray, w: int) -> np.ndarray:
    return rolling(x, w, np.mean)


def sma_gap(s: Stock, w: int) -> np.ndarray:
    return s.c / sma(s.c, w) - 1


def ema_gap(s: Stock, w: int) -> np.ndarray:
    return s.c / ema(s.c, w) - 1


def ma_gap(s: Stock, short: int, long: int) -> np.ndarray:
    return sma(s.c, short) / sma(s.c, long) - 1


def sma_slope_20(s: Stock) -> np.ndarray:
    m = sma(s.c, 20)
    return m / lag(m, 5) - 1


def rsi(s: Stock, n: int) -> np.ndarray:
    change = s.c - lag(s.c, 1)
    gain, loss = wilder(np.maximum(change, 0), n), wilder(np.maximum(-change, 0), n)
    out = np.full(len(change), np.nan)
    for t in range(len(change)):
        g, d = gain[t], loss[t]
        if np.isnan(g) or np.isnan(d):
            continue
        out[t] = 100 - 100 / (1 + g / d) if d > 0 else (100.0 if g > 0 else 50.0)
    return out


def macd(s: Stock) -> np.ndarray:
    return ema(s.c, 12) - ema(s.c, 26)


def macd_price(s: Stock) -> np.ndarray:
    return macd(s) / s.c


def macd_hist_price(s: Stock) -> np.ndarray:
    line = macd(s)
    return (line - ema(line, 9)) / s.c


def bb_pctb_20(s: Stock) -> np.ndarray:
    mean, std = sma(s.c, 20), rolling(s.c, 20, sample_std)
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = (s.c - (mean - 2 * std)) / (4 * std)
    return where_defined(std, np.where(std == 0, 0.5, pctb))


def bb_width_20(s: Stock) -> np.ndarray:
    return 4 * rolling(s.c, 20, sample_std) / sma(s.c, 20)


def natr_14(s: Stock) -> np.ndarray:
    prev = lag(s.c, 1)  # no previous close on the first row: no true range there
    true_range = np.maximum(s.h - s.l, np.maximum(np.abs(s.h - prev), np.abs(s.l - prev)))
    return 100 * wilder(true_range, 14) / s.c


def stoch_k_14(s: Stock) -> np.ndarray:
    low, high = rolling(s.l, 14, np.min), rolling(s.h, 14, np.max)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 100 * (s.c - low) / (high - low)
    return where_defined(low, np.where(high > low, k, 50.0))


def stoch_d_14(s: Stock) -> np.ndarray:
    return sma(stoch_k_14(s), 3)


def close_pos_range(s: Stock) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s.h > s.l, (s.c - s.l) / (s.h - s.l), 0.5)


def overnight_gap(s: Stock) -> np.ndarray:
    return s.o / lag(s.c, 1) - 1


def intraday_ret(s: Stock) -> np.ndarray:
    return s.c / s.o - 1


def hl_range(s: Stock) -> np.ndarray:
    return s.h / s.l - 1


def volume_ratio(s: Stock, w: int) -> np.ndarray:
    return s.v / sma(s.v, w)


def dollar_volume(s: Stock) -> np.ndarray:
    """C V, missing on a zero-volume day (no trade)."""
    return np.where(s.v > 0, s.c * s.v, np.nan)


def log_dollar_volume(s: Stock) -> np.ndarray:
    return np.log(dollar_volume(s))


def log_dollar_volume_20(s: Stock) -> np.ndarray:
    return np.log(sma(dollar_volume(s), 20))


def amihud_20(s: Stock) -> np.ndarray:
    return sma(np.abs(simple_return(s)) / dollar_volume(s), 20) * 1e9


def volume_trend_5_20(s: Stock) -> np.ndarray:
    return sma(s.v, 5) / sma(s.v, 20) - 1


def market_regression(s: Stock, what: str) -> np.ndarray:
    """The 60-row regression of r on the same-date market return m: beta, alpha, corr, idio, resid."""
    r, m = simple_return(s), s.mkt["mkt_ret_1d"]
    out = np.full(len(r), np.nan)
    for t in range(59, len(r)):
        rw, mw = r[t - 59 : t + 1], m[t - 59 : t + 1]
        if np.isnan(rw).any() or np.isnan(mw).any():
            continue
        cov = np.cov(rw, mw, ddof=1)
        beta = cov[0, 1] / cov[1, 1]
        corr = cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1])
        out[t] = {
            "beta": beta,
            "alpha": rw.mean() - beta * mw.mean(),
            "resid": r[t] - beta * m[t],
            "corr": corr,
            "idio": math.sqrt(max(0.0, 1 - corr**2)),
        }[what]
    return out


def rel_strength(s: Stock, w: int) -> np.ndarray:
    return ret(s, w) - s.mkt[f"mkt_ret_{w}d"]


def market_feature(s: Stock, name: str) -> np.ndarray:
    return s.mkt[name]


# --------------------------------------------------------------------------------------------------
# Market references, on the index's own rows
# --------------------------------------------------------------------------------------------------


def market_reference(index: pl.DataFrame) -> dict[str, dict[date, float]]:
    """{feature: {date: value}} over the index rows (sorted by date)."""
    idx = index.sort("date")
    m = idx["close"].to_numpy()
    log_m = np.log(m / lag(m, 1))
    peak = np.array([m[: t + 1].max() for t in range(len(m))])
    drawdown = m / peak - 1
    sma200 = sma(m, 200)
    vol20, vol60 = rolling(log_m, 20, sample_std), rolling(log_m, 60, sample_std)
    values = {
        **{f"mkt_ret_{w}d": m / lag(m, w) - 1 for w in (1, 5, 20, 60)},
        "mkt_vol_20d": vol20,
        "mkt_vol_60d": vol60,
        "mkt_drawdown": drawdown,
        "mkt_sma_gap_200d": m / sma200 - 1,
        "mkt_regime_bull": where_defined(sma200, (m > sma200).astype(float)),
        "mkt_regime_high_vol": where_defined(vol20 + vol60, (vol20 > vol60).astype(float)),
        "mkt_regime_correction": (drawdown < -0.10).astype(float),
    }
    dates = idx["date"].to_list()
    return {name: dict(zip(dates, x.tolist(), strict=True)) for name, x in values.items()}


# --------------------------------------------------------------------------------------------------
# The whole panel in the implementation's row order (date, code), with per-date references
# --------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    prices: pl.DataFrame
    index: pl.DataFrame
    keys: list[tuple[date, str]] = field(init=False)
    cache: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = sorted(zip(self.prices["date"].to_list(), self.prices["code"].to_list(), strict=True))
        position = {k: i for i, k in enumerate(self.keys)}
        self.sector = np.array([None] * len(self.keys), dtype=object)
        self.by_date: dict[date, list[int]] = defaultdict(list)
        for i, (d, _) in enumerate(self.keys):
            self.by_date[d].append(i)
        market = market_reference(self.index)
        self.stocks: list[tuple[Stock, np.ndarray]] = []
        for (code,), part in self.prices.group_by(["code"], maintain_order=True):
            part = part.sort("date")
            dates = part["date"].to_list()
            rows = np.array([position[(d, code)] for d in dates])
            self.sector[rows] = part["sector"].to_list()
            mkt = {n: np.array([by_day.get(d, np.nan) for d in dates]) for n, by_day in market.items()}
            arrays = {k: part[col].to_numpy() for k, col in zip("ohlcv", ("open", "high", "low", "close", "volume"), strict=True)}  # fmt: skip
            self.stocks.append((Stock(code, mkt=mkt, **arrays), rows))

    def per_stock(self, fn) -> np.ndarray:
        out = np.full(len(self.keys), np.nan)
        for stock, rows in self.stocks:
            out[rows] = fn(stock)
        return out

    def feature(self, name: str) -> np.ndarray:
        if name not in self.cache:
            self.cache[name] = REFERENCES[name](self)
        return self.cache[name]

    def sector_members(self):
        """(rows of one sector on one date) for every date and non-null sector."""
        for rows in self.by_date.values():
            by_sector = defaultdict(list)
            for i in rows:
                if self.sector[i] is not None:
                    by_sector[self.sector[i]].append(i)
            yield from by_sector.values()


def sector_loo_mean(p: Reference, x: np.ndarray) -> np.ndarray:
    """Mean of x over the other stocks of the sector on the same date that have one."""
    out = np.full(len(x), np.nan)
    for members in p.sector_members():
        for i in members:
            others = [x[j] for j in members if j != i and not np.isnan(x[j])]
            if others:
                out[i] = np.mean(others)
    return out


def sector_z(p: Reference, x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the sector's stocks on the same date, where std > 0."""
    out = np.full(len(x), np.nan)
    for members in p.sector_members():
        values = np.array([x[j] for j in members if not np.isnan(x[j])])
        if len(values) < 2 or np.std(values, ddof=1) == 0:
            continue
        for i in members:
            out[i] = (x[i] - values.mean()) / np.std(values, ddof=1)
    return out


def sector_series(p: Reference, kind: str, w: int) -> np.ndarray:
    """Momentum or volatility of each sector's own date series R (mean ret_1d of its members on a date)."""
    ret_1d = p.feature("ret_1d")
    daily: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (d, _) in enumerate(p.keys):
        if p.sector[i] is not None:
            daily[p.sector[i]][d].append(i)
    out = np.full(len(p.keys), np.nan)
    for by_date in daily.values():
        dates = sorted(by_date)
        series = []
        for d in dates:
            present = [ret_1d[i] for i in by_date[d] if not np.isnan(ret_1d[i])]
            series.append(np.mean(present) if present else np.nan)
        series = np.array(series)
        if kind == "mom":
            value = rolling(1 + series, w, np.prod) - 1
        else:
            value = rolling(series, w, sample_std)
        for d, v in zip(dates, value, strict=True):
            out[by_date[d]] = v
    return out


def per_date_rank(p: Reference, x: np.ndarray) -> np.ndarray:
    """Average rank among the date's non-missing values, divided by their count."""
    out = np.full(len(x), np.nan)
    for rows in p.by_date.values():
        present = [i for i in rows if not np.isnan(x[i])]
        if present:
            out[present] = rankdata(x[present], method="average") / len(present)
    return out


def stockwise(fn, **kwargs):
    return lambda p: p.per_stock(lambda s: fn(s, **kwargs))


RANKED = ["ret_1d", "ret_5d", "ret_20d", "ret_60d", "vol_20d", "volume_ratio_20", "rsi_14",
          "log_dollar_volume", "beta_60d", "amihud_20d"]  # fmt: skip
MARKET = ["mkt_ret_1d", "mkt_ret_5d", "mkt_ret_20d", "mkt_ret_60d", "mkt_vol_20d", "mkt_vol_60d",
          "mkt_drawdown", "mkt_sma_gap_200d", "mkt_regime_bull", "mkt_regime_high_vol",
          "mkt_regime_correction"]  # fmt: skip

# The groups of docs/features.md, as the implementation names them.
REFERENCE_GROUPS = {
    "returns": {
        **{f"ret_{w}d": stockwise(ret, w=w) for w in (1, 5, 10, 20, 60)},
        **{f"log_ret_{w}d": stockwise(log_ret, w=w) for w in (1, 5, 10, 20, 60)},
        "mom_60_5d": stockwise(mom_60_5),
        "dist_high_60d": stockwise(dist_high_60),
        "dist_low_60d": stockwise(dist_low_60),
    },
    "volatility": {
        **{f"vol_{w}d": stockwise(vol, w=w) for w in (5, 20, 60)},
        "vol_ratio_5_20": stockwise(vol_ratio_5_20),
        "downside_vol_20d": stockwise(downside_vol_20),
        "parkinson_vol_20d": stockwise(parkinson, w=20),
        "parkinson_vol_60d": stockwise(parkinson, w=60),
        "garman_klass_vol_20d": stockwise(garman_klass_20),
    },
    "moving_averages": {
        **{f"sma_gap_{w}d": stockwise(sma_gap, w=w) for w in (5, 10, 20, 60)},
        **{f"ema_gap_{w}d": stockwise(ema_gap, w=w) for w in (5, 10, 20, 60, 200)},
        "ma_gap_5_20": stockwise(ma_gap, short=5, long=20),
        "ma_gap_20_60": stockwise(ma_gap, short=20, long=60),
        "sma_slope_20d": stockwise(sma_slope_20),
    },
    "oscillators": {
        "rsi_14": stockwise(rsi, n=14),
        "rsi_2": stockwise(rsi, n=2),
        "macd_price": stockwise(macd_price),
        "macd_hist_price": stockwise(macd_hist_price),
        "bb_pctb_20": stockwise(bb_pctb_20),
        "bb_width_20": stockwise(bb_width_20),
        "natr_14": stockwise(natr_14),
        "stoch_k_14": stockwise(stoch_k_14),
        "stoch_d_14": stockwise(stoch_d_14),
    },
    "intraday": {
        "close_pos_range": stockwise(close_pos_range),
        "overnight_gap": stockwise(overnight_gap),
        "overnight_gap_mean_5d": lambda p: p.per_stock(lambda s: sma(overnight_gap(s), 5)),
        "intraday_ret": stockwise(intraday_ret),
        "intraday_ret_mean_5d": lambda p: p.per_stock(lambda s: sma(intraday_ret(s), 5)),
        "hl_range": stockwise(hl_range),
    },
    "volume_liquidity": {
        "volume_ratio_5": stockwise(volume_ratio, w=5),
        "volume_ratio_20": stockwise(volume_ratio, w=20),
        "log_dollar_volume": stockwise(log_dollar_volume),
        "log_dollar_volume_20d": stockwise(log_dollar_volume_20),
        "amihud_20d": stockwise(amihud_20),
        "volume_trend_5_20": stockwise(volume_trend_5_20),
    },
    "stock_market": {
        "beta_60d": stockwise(market_regression, what="beta"),
        "alpha_60d": stockwise(market_regression, what="alpha"),
        "resid_ret_1d": stockwise(market_regression, what="resid"),
        "corr_mkt_60d": stockwise(market_regression, what="corr"),
        "idio_vol_ratio_60d": stockwise(market_regression, what="idio"),
        "rel_strength_20d": stockwise(rel_strength, w=20),
        "rel_strength_60d": stockwise(rel_strength, w=60),
    },
    "market": {name: stockwise(market_feature, name=name) for name in MARKET},
    "sector": {
        **{f"sector_ret_{w}d": lambda p, w=w: sector_loo_mean(p, p.feature(f"ret_{w}d")) for w in (1, 5, 20)},
        **{
            f"rel_sector_ret_{w}d": lambda p, w=w: p.feature(f"ret_{w}d") - p.feature(f"sector_ret_{w}d")
            for w in (1, 5, 20)
        },
        **{f"sector_z_ret_{w}d": lambda p, w=w: sector_z(p, p.feature(f"ret_{w}d")) for w in (5, 20)},
        **{f"sector_mom_{w}d": lambda p, w=w: sector_series(p, "mom", w) for w in (20, 60)},
        **{f"sector_vol_{w}d": lambda p, w=w: sector_series(p, "vol", w) for w in (20, 60)},
    },
    "ranks": {f"rank_{x}": lambda p, x=x: per_date_rank(p, p.feature(x)) for x in RANKED},
}
REFERENCES = {name: fn for group in REFERENCE_GROUPS.values() for name, fn in group.items()}
NORMALIZED_GROUPS = ("returns", "volatility", "moving_averages", "oscillators", "intraday",
                     "volume_liquidity", "stock_market", "sector")  # fmt: skip
RAW = ("rel_strength_20d", "rel_strength_60d")
NORMALIZED = [n for g in NORMALIZED_GROUPS for n in REFERENCE_GROUPS[g] if n not in RAW]
KEPT_RAW = [n for n in REFERENCES if n not in NORMALIZED]

# Known departures of the implementation from docs/features.md, by (test, feature), e.g.
# ("nulls", "natr_14") or ("normalized z", "vol_ratio_5_20"): each becomes a strict xfail, so the suite
# stays green until the fix and then flags it. None at present.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


# --------------------------------------------------------------------------------------------------
# Fixtures and comparison
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_panel()


@pytest.fixture(scope="module")
def reference(panel) -> Reference:
    return Reference(*panel)


@pytest.fixture(scope="module")
def computed(panel) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    return compute_features(*panel, normalization=None)


def where(keys: list[tuple[date, str]], i: int) -> str:
    d, code = keys[i]
    return f"{code} on {d}"


def assert_same_nulls(name: str, got: pl.Series, expected: np.ndarray, keys) -> None:
    """Null exactly where the reference is missing, and never NaN."""
    nan = got.is_nan().fill_null(False).to_numpy()
    for i in np.flatnonzero(nan)[:1]:
        pytest.fail(f"{name}: NaN at {where(keys, i)} ({nan.sum()} rows), reference {expected[i]}")
    got_null, want_null = got.is_null().to_numpy(), np.isnan(expected)
    values = got.cast(pl.Float64).to_numpy()
    for i in np.flatnonzero(got_null != want_null)[:1]:
        pytest.fail(f"{name}: null pattern differs ({(got_null != want_null).sum()} rows), first at "
                    f"{where(keys, i)}: implementation {values[i]}, reference {expected[i]}")  # fmt: skip


def assert_same_values(
    name: str, got: pl.Series, expected: np.ndarray, keys, *, rtol=1e-4, atol=1e-7
) -> None:
    """Equal up to float32 precision wherever both have a value."""
    values = got.cast(pl.Float64).fill_null(np.nan).to_numpy()
    both = ~np.isnan(values) & ~np.isnan(expected)
    assert both.sum() >= 50, f"{name}: too few values to compare"
    differ = both & ~np.isclose(values, expected, rtol=rtol, atol=atol)
    for i in np.flatnonzero(differ)[:1]:
        pytest.fail(f"{name}: {differ.sum()} values differ, first at {where(keys, i)}: "
                    f"implementation {values[i]!r}, reference {expected[i]!r}")  # fmt: skip


def assert_matches(name: str, got: pl.Series, expected: np.ndarray, keys, **tolerance) -> None:
    assert_same_nulls(name, got, expected, keys)
    assert_same_values(name, got, expected, keys, **tolerance)


def tolerance(name: str) -> dict[str, float]:
    # The sector stage reads the Float32 returns of the panel: ~1e-7 absolute error near zero.
    return {"atol": 1e-6} if name in REFERENCE_GROUPS["sector"] else {}


def params(test: str, names) -> list:
    """One pytest param per feature, a strict xfail where KNOWN_BUGS lists (test, feature)."""

    def marks(name: str) -> list:
        reason = KNOWN_BUGS.get((test, name))
        return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []

    return [pytest.param(n, marks=marks(n)) for n in names]


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_the_panel_has_the_planted_cases(panel):
    prices, index = panel
    assert prices.equals(prices.sort("code", "date"))
    assert (prices["high"] >= prices[["open", "close"]].max_horizontal()).all()
    assert (prices["low"] <= prices[["open", "close"]].min_horizontal()).all()
    rows = prices.group_by("code").len()
    assert rows["len"].min() > 200  # every stock passes the warmup
    assert (prices["volume"] == 0).sum() == 1
    assert prices["date"].n_unique() == index.height + 1


def test_every_feature_has_a_reference(computed):
    features, groups = computed
    assert {g: sorted(n) for g, n in groups.items()} == {g: sorted(n) for g, n in REFERENCE_GROUPS.items()}
    assert features.columns == ["date", "code", "sector", *[n for g in groups.values() for n in g],
                                "is_valid_5d", "is_valid_20d", "is_valid_60d", "is_valid_200d"]  # fmt: skip


def test_rows_are_the_input_rows_by_date_and_code(computed, reference):
    features, _ = computed
    assert list(zip(features["date"].to_list(), features["code"].to_list(), strict=True)) == reference.keys
    assert features["sector"].to_list() == reference.sector.tolist()
    assert all(features[n].dtype == pl.Float32 for n in REFERENCES)


@pytest.mark.parametrize("name", params("nulls", REFERENCES))
def test_feature_is_null_exactly_where_the_reference_is(name, computed, reference):
    assert_same_nulls(name, computed[0][name], reference.feature(name), reference.keys)


@pytest.mark.parametrize("name", params("values", REFERENCES))
def test_feature_values_match_the_reference(name, computed, reference):
    assert_same_values(name, computed[0][name], reference.feature(name), reference.keys, **tolerance(name))


def test_market_features_on_the_index_rows(panel):
    """The market table itself, one row per index date, before it is joined onto the stocks."""
    _, index = panel
    table = market_features(index)
    expected = market_reference(index)
    keys = [(d, "index") for d in table["date"].to_list()]
    assert table.columns == ["date", *MARKET]
    for name in MARKET:
        assert_matches(name, table[name], np.array([expected[name][d] for d, _ in keys]), keys)


@pytest.mark.parametrize("w", [5, 20, 60, 200])
def test_validity_flag_is_row_index_at_least_w(w, computed, reference):
    features, _ = computed
    row_in_stock = np.zeros(len(reference.keys), int)
    for _, rows in reference.stocks:
        row_in_stock[rows] = np.arange(len(rows))
    assert features[f"is_valid_{w}d"].to_list() == (row_in_stock >= w).tolist()


def test_planted_edge_values(computed):
    """The rules with a fixed value show up where planted (so the reference comparison exercised them)."""
    features, _ = computed

    def at(code: str, name: str) -> list:
        return features.filter(pl.col("code") == code)[name].to_list()

    assert at(FLAT_START, "rsi_2")[2:6] == [50.0] * 4 and at(FLAT_START, "rsi_2")[6:21] == [100.0] * 15
    assert at(FLAT_START, "rsi_14")[14:21] == [100.0] * 7
    halted = HALTED[0]
    assert at(halted, "bb_pctb_20")[109] == 0.5 and at(halted, "stoch_k_14")[109] == 50.0
    assert at(halted, "close_pos_range")[100] == 0.5
    assert at(halted, "ret_1d")[101] == at(PAUSED[0], "ret_1d")[101] == 0.0  # a tie for the ranks
    assert at(ZERO_VOLUME[0], "log_dollar_volume")[ZERO_VOLUME[1]] is None
    assert features.filter(pl.col("sector").is_null())["sector_ret_1d"].null_count() == N_DAYS
    assert features.filter(pl.col("sector") == "D")["sector_ret_1d"].null_count() == N_DAYS - 1
    index_gap_date = trading_days(N_DAYS)[INDEX_GAP]
    assert features.filter(pl.col("date") == index_gap_date)["mkt_ret_1d"].null_count() == len(CODES)


# ---- normalization -------------------------------------------------------------------------------


def normalize_reference(x: np.ndarray, by_date: dict[date, list[int]], method: str, clip: float = 5.0):
    """Per date over the whole universe: z = (x - mean) / std, or (x - median) / (1.4826 MAD) with the
    std in place of a zero MAD; 0 where the date's values are constant; clipped; missing stays missing."""
    out = np.full(len(x), np.nan)
    for rows in by_date.values():
        rows = np.array(rows)
        present = rows[~np.isnan(x[rows])]
        values = x[present]
        if len(values) == 0:
            continue
        std = np.std(values, ddof=1) if len(values) > 1 else np.nan
        if method == "z":
            center, scale = values.mean(), std
        else:
            center = np.median(values)
            mad = 1.4826 * np.median(np.abs(values - center))
            scale = mad if mad > 0 else std
        z = (values - center) / scale if scale > 0 else np.zeros(len(values))
        out[present] = np.clip(z, -clip, clip)
    return out


@pytest.fixture(scope="module")
def normalized(panel) -> dict[str, pl.DataFrame]:
    return {method: compute_features(*panel, normalization=method)[0] for method in ("z", "robust_z")}


@pytest.mark.parametrize(
    ("method", "name"),
    [
        pytest.param(m, *p.values, marks=p.marks)
        for m in ("z", "robust_z")
        for p in params(f"normalized {m}", NORMALIZED)
    ],
)
def test_normalized_per_date(name, method, computed, normalized, reference):
    raw = computed[0][name].cast(pl.Float64).fill_null(np.nan).to_numpy()
    expected = normalize_reference(raw, reference.by_date, method)
    assert_matches(f"{name} ({method})", normalized[method][name], expected, reference.keys, atol=1e-5)


@pytest.mark.parametrize("method", ["z", "robust_z"])
def test_market_ranks_and_relative_strength_stay_raw(method, computed, normalized):
    raw, out = computed[0], normalized[method]
    for name in KEPT_RAW:
        assert out[name].equals(raw[name]), name
    assert out.select("date", "code", "sector").equals(raw.select("date", "code", "sector"))


def test_normalization_exercises_constant_and_zero_mad_dates(computed):
    days = trading_days(N_DAYS)
    hl = computed[0].filter(pl.col("date") == days[ALL_FLAT_BARS])["hl_range"]
    assert hl.n_unique() == 1  # constant date -> 0
    half = computed[0].filter(pl.col("date") == days[HALF_FLAT_BARS[0]])["hl_range"].to_numpy()
    assert np.median(np.abs(half - np.median(half))) == 0  # zero MAD -> std fallback


# ---- labels --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels(panel) -> pl.DataFrame:
    prices, index = panel
    return build_labels(prices.select("date", "code", "sector", "close"), index, HORIZONS)


def label_reference(p: Reference, h: int) -> dict[str, np.ndarray]:
    target = np.full(len(p.keys), np.nan)
    end = np.array([None] * len(p.keys), dtype=object)
    for stock, rows in p.stocks:
        for t in range(len(rows) - h):  # the stock's h-th next row; none for the last h rows
            target[rows[t]] = stock.c[t + h] / stock.c[t] - 1
            end[rows[t]] = p.keys[rows[t + h]][0]
    index_close = dict(zip(p.index["date"].to_list(), p.index["close"].to_list(), strict=True))
    excess = np.full(len(p.keys), np.nan)
    for i, (d, _) in enumerate(p.keys):
        if end[i] is not None and d in index_close and end[i] in index_close:
            excess[i] = target[i] - (index_close[end[i]] / index_close[d] - 1)
    # Cross-sectional variants use only labels that end on the calendar's h-th next day.
    calendar = sorted({d for d, _ in p.keys})
    at = {d: k for k, d in enumerate(calendar)}
    on_time = target.copy()
    for i, (d, _) in enumerate(p.keys):
        k = at[d] + h
        if end[i] is None or k >= len(calendar) or end[i] != calendar[k]:
            on_time[i] = np.nan
    resid = np.full(len(p.keys), np.nan)
    for members in p.sector_members():
        present = [on_time[j] for j in members if not np.isnan(on_time[j])]
        for i in members:
            if present:
                resid[i] = on_time[i] - np.mean(present)
    return {
        f"target_{h}d": target,
        f"target_{h}d_excess": excess,
        f"target_{h}d_sector_resid": resid,
        f"target_{h}d_rank": per_date_rank(p, on_time),
        f"label_end_{h}d": end,
    }


def test_labels_rows_and_columns(labels, reference):
    assert list(zip(labels["date"].to_list(), labels["code"].to_list(), strict=True)) == reference.keys
    kinds = ["target_{h}d", "target_{h}d_excess", "target_{h}d_sector_resid", "target_{h}d_rank"]
    assert labels.columns == ["date", "code", *[k.format(h=h) for k in kinds for h in HORIZONS],
                              *[f"label_end_{h}d" for h in HORIZONS]]  # fmt: skip


@pytest.mark.parametrize("h", HORIZONS)
@pytest.mark.parametrize(
    "kind", ["target_{h}d", "target_{h}d_excess", "target_{h}d_sector_resid", "target_{h}d_rank"]
)
def test_label_matches_reference(kind, h, labels, reference):
    name = kind.format(h=h)
    assert_matches(name, labels[name], label_reference(reference, h)[name], reference.keys)


@pytest.mark.parametrize("h", HORIZONS)
def test_label_end_date(h, labels, reference):
    assert labels[f"label_end_{h}d"].to_list() == label_reference(reference, h)[f"label_end_{h}d"].tolist()


def test_label_is_null_never_zero_at_the_end(labels, reference):
    for stock, rows in reference.stocks:
        for h in HORIZONS:
            tail = labels[f"target_{h}d"].gather(rows[-h:])
            assert tail.null_count() == h, (stock.code, h)
