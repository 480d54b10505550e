"""The synthetic market: a daily panel with known, planted signals and the oracle that knows them.

Every model in ATFT is first judged here, because only here is the best possible prediction known.
The return model (written out in ``docs/synthetic.md``) is, for stock i on day t, in log returns:

    r[i,t] = mu[i,t] + beta[i] * m[t] + gamma[i] * s[sector(i), t] + sigma[i,t] * e[i,t]

- ``m`` and ``s`` are market and sector factors whose volatility switches between a calm and a turbulent
  regime; ``e`` is the idiosyncratic shock (Student-t, unit variance). Followers share part of their
  leader's shock on the same day, so the hidden graph shows up in return correlations.
- ``mu[i,t]``, the expected return known at the close of t-1, is a linear filter of *past* standardized
  shocks: short-term reversal of the stock's own shocks, medium-term momentum of them, a volume-shock
  premium, and a lead-lag term fed by the stock's leader on the hidden graph.

Because ``mu`` is linear in past shocks whose future values have mean zero, the expected h-day log return
given everything known at t has a closed form: a causal filter of the shocks up to t. That is the oracle,
``oracle_{h}d``. Everything is vectorized over the (days, stocks) array: no loop over stocks or rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import polars as pl
from scipy.signal import lfilter, oaconvolve

from atft.data.store import HORIZONS, conform, read_manifest, write_store
from atft.evaluation.metrics import mean_daily_rank_ic

SECTOR17_NAMES: tuple[str, ...] = (
    "Foods",
    "Energy Resources",
    "Construction & Materials",
    "Raw Materials & Chemicals",
    "Pharmaceutical",
    "Automobiles & Transportation Equipment",
    "Steel & Nonferrous Metals",
    "Machinery",
    "Electric Appliances & Precision Instruments",
    "IT & Services, Others",
    "Electric Power & Gas",
    "Transportation & Logistics",
    "Commercial & Wholesale Trade",
    "Retail Trade",
    "Banks",
    "Financials (ex Banks)",
    "Real Estate",
)
MARKETS: tuple[str, ...] = ("Prime", "Standard", "Growth")
MAX_CELLS = 40_000_000  # stocks x days; peak memory is about 0.33 GB per million cells
MAX_DAYS = 20_000  # about 77 years of weekdays: dates stay well inside the calendar from any start


@dataclass(frozen=True)
class SynthParams:
    """Knobs of the synthetic market. Defaults give an oracle 5-day RankIC of about 0.1 (see docs)."""

    n_stocks: int = 500
    n_days: int = 1500
    seed: int = 0
    signal_strength: float = 1.0
    start: date = date(2015, 1, 5)
    n_sectors: int = 17
    late_listing_frac: float = 0.05
    # Planted signal coefficients, in units of the stock's idiosyncratic daily volatility per day.
    reversal: float = 0.012  # per unit shock in each of the last 5 days, negative sign applied
    reversal_days: int = 5
    momentum: float = 0.0025  # per unit shock in days 21..120 back
    momentum_skip: int = 20
    momentum_days: int = 120
    volume_shock: float = 0.025  # per unit abnormal log volume, decaying
    volume_decay: float = 0.8
    lead_lag: float = 0.08  # per unit leader shock, decaying
    lead_lag_decay: float = 0.6
    leader_frac: float = 0.1
    follower_frac: float = 0.6
    comovement: float = 0.5  # share of a follower's shock that is its leader's, same day
    market_drift: float = 0.0003

    def __post_init__(self) -> None:
        checks = {
            "seed": self.seed >= 0,
            "n_stocks": self.n_stocks >= 10,
            "n_days": 150 <= self.n_days <= MAX_DAYS,
            "signal_strength": math.isfinite(self.signal_strength) and 0 <= self.signal_strength <= 10,
            "n_sectors": 1 <= self.n_sectors <= len(SECTOR17_NAMES),
            "late_listing_frac": 0 <= self.late_listing_frac < 1,
            "comovement": 0 <= self.comovement < 1,
        }
        bounds = {
            "seed": ">= 0",
            "n_stocks": ">= 10",
            "n_days": f"in 150..{MAX_DAYS:,} (the momentum window is 120 days)",
            "signal_strength": "in [0, 10] (10 already gives an oracle RankIC near 0.6)",
            "n_sectors": f"in 1..{len(SECTOR17_NAMES)}",
            "late_listing_frac": "in [0, 1)",
            "comovement": "in [0, 1)",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"synthetic market: {name}={getattr(self, name)!r} must be {bounds[name]}")
        if self.n_stocks * self.n_days > MAX_CELLS:
            raise ValueError(
                f"synthetic market: {self.n_stocks:,} stocks x {self.n_days:,} days = "
                f"{self.n_stocks * self.n_days:,} cells is over the {MAX_CELLS:,} that fit in memory "
                "(about 0.33 GB per million cells at peak)"
            )


@dataclass
class SyntheticMarket:
    """A generated market in canonical tables, plus its oracle and the hidden structure that made it."""

    prices: pl.DataFrame
    index: pl.DataFrame
    listed_info: pl.DataFrame
    oracle: pl.DataFrame
    leader_of: np.ndarray  # [N] index of each stock's leader, -1 where it has none
    params: SynthParams
    # [T, N] shocks behind the signals ("own", "volume", "leader"): only with synthesize(keep_shocks=True)
    shocks: dict[str, np.ndarray] | None = None
    sigma: np.ndarray | None = None  # [N] idiosyncratic daily volatility (calm regime), with the shocks

    def oracle_parts(self, h: int) -> dict[str, np.ndarray]:
        """The h-day oracle split by planted signal: [T, N] arrays (rows = calendar days, columns = stocks
        in code order) for ``reversal``, ``momentum``, ``volume`` and ``lead_lag``. Their sum plus the
        drift ``h * beta * market_drift`` is ``oracle_<h>d``. It measures which signal a model misses
        (benchmarks/bench_oracle_gap.py); it needs a market made with ``keep_shocks=True``."""
        if self.shocks is None or self.sigma is None:
            raise ValueError("oracle_parts needs the shocks: synthesize(params, keep_shocks=True)")
        k = _kernels(self.params)
        reversal, momentum = k["own"].copy(), k["own"].copy()
        reversal[self.params.reversal_days + 1 :] = 0.0
        momentum[: self.params.reversal_days + 1] = 0.0
        kernels = {"reversal": ("own", reversal), "momentum": ("own", momentum),
                   "volume": ("volume", k["volume"]), "lead_lag": ("leader", k["leader"])}  # fmt: skip
        return {
            name: _causal_filter(self.shocks[source], _horizon_kernel(kernel, h)) * self.sigma
            for name, (source, kernel) in kernels.items()
        }


# ---------------------------------------------------------------------------------------------------------
# Kernels: K[l] is the weight on a shock l days before the return it predicts (l >= 1).
# The oracle for horizon h weights the shock j days before t (j >= 0) by C_h[j] = sum_{k=1..h} K[j + k].


def _kernels(p: SynthParams) -> dict[str, np.ndarray]:
    """Lag kernels of the planted signals, already scaled by ``signal_strength``; index = lag in days."""
    s = p.signal_strength
    own = np.zeros(p.momentum_days + 1)
    own[1 : p.reversal_days + 1] -= p.reversal
    own[p.momentum_skip + 1 : p.momentum_days + 1] += p.momentum
    lags = np.arange(60)
    volume = np.where(lags >= 1, p.volume_shock * p.volume_decay ** (lags - 1.0), 0.0)
    leader = np.where(lags >= 1, p.lead_lag * p.lead_lag_decay ** (lags - 1.0), 0.0)
    return {"own": s * own, "volume": s * volume, "leader": s * leader}


def _horizon_kernel(kernel: np.ndarray, h: int) -> np.ndarray:
    """C_h[j] = sum_{k=1..h} K[j+k]: the weight of a shock j days old in the expected next-h-day return."""
    padded = np.concatenate([kernel, np.zeros(h)])
    return np.array([padded[j + 1 : j + h + 1].sum() for j in range(len(kernel))])


def _causal_filter(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """y[t] = sum_j c[j] * x[t-j] along axis 0 of a [T, N] array (shocks before day 0 are zero)."""
    return oaconvolve(x, c[:, None].astype(x.dtype), axes=0)[: x.shape[0]]


# ---------------------------------------------------------------------------------------------------------


def _regimes(rng: np.random.Generator, n_days: int) -> np.ndarray:
    """Volatility multiplier per day: a persistent calm/turbulent Markov chain times slow log-vol noise."""
    stay = np.array([0.99, 0.97])  # P(stay) in calm, turbulent
    level = np.array([0.8, 1.8])
    u = rng.random(n_days)
    state = np.empty(n_days, dtype=np.int64)
    state[0] = 0
    for t in range(1, n_days):  # a scalar chain over days, not over rows
        state[t] = state[t - 1] if u[t] < stay[state[t - 1]] else 1 - state[t - 1]
    z = rng.normal(0.0, 0.05, n_days)
    z[0] = 0.0  # the log-vol noise starts at its mean
    return level[state] * np.exp(_ar1_filter(z, phi=0.97))


def _hidden_graph(rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    """Each follower gets one leader, chosen across the whole market (not only its sector)."""
    n = p.n_stocks
    order = rng.permutation(n)
    n_lead = max(1, int(round(p.leader_frac * n)))
    leaders, others = order[:n_lead], order[n_lead:]
    followers = others[: int(round(p.follower_frac * len(others)))]
    leader_of = np.full(n, -1, dtype=np.int64)
    leader_of[followers] = rng.choice(leaders, size=len(followers))
    return leader_of


def synthesize(
    params: SynthParams | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    keep_shocks: bool = False,
) -> SyntheticMarket:
    """Generate a synthetic market. Deterministic for a given ``params`` (the seed included).

    ``keep_shocks`` keeps the [T, N] shock arrays behind the signals, for ``SyntheticMarket.oracle_parts``
    (three float64 arrays: 18 MB for the demo market, 250 MB for the production-sized one).
    """
    p = params or SynthParams()
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(p.seed)
    T, N = p.n_days, p.n_stocks

    say("drawing factors and shocks")
    regime = _regimes(rng, T)  # [T]
    sector = rng.integers(0, p.n_sectors, N)  # [N]
    beta = np.clip(rng.normal(1.0, 0.3, N), 0.2, 2.0)  # [N]
    gamma = rng.uniform(0.6, 1.2, N)  # [N]
    sigma = np.exp(rng.normal(np.log(0.018), 0.3, N))  # [N] idiosyncratic daily vol in a calm regime
    market = p.market_drift + 0.010 * regime * rng.standard_normal(T)  # [T]
    sector_ret = (0.006 * regime**0.7)[:, None] * rng.standard_normal((T, p.n_sectors))  # [T, S]

    # Standardized shocks, Student-t(5) scaled to unit variance for fat tails.
    e = (rng.standard_t(5, (T, N)) * np.sqrt(3.0 / 5.0)).astype(np.float64)  # [T, N]
    vshock = rng.standard_normal((T, N))  # [T, N] abnormal log volume

    listing = np.zeros(N, dtype=np.int64)  # first day each stock trades
    late = rng.random(N) < p.late_listing_frac
    listing[late] = rng.integers(int(0.1 * T), int(0.7 * T), late.sum())
    unlisted = np.arange(T)[:, None] < listing[None, :]  # [T, N]
    e[unlisted] = 0.0  # a stock has no history before it lists, so nothing there can predict it
    vshock[unlisted] = 0.0

    leader_of = _hidden_graph(rng, p)
    has_leader = leader_of >= 0
    leader_e = np.zeros_like(e)
    leader_e[:, has_leader] = e[:, leader_of[has_leader]]  # [T, N] the leader's shock, 0 for non-followers

    say("planting signals and computing the oracle")
    k = _kernels(p)
    sources = {"own": e, "volume": vshock, "leader": leader_e}

    def expected(h: int) -> np.ndarray:
        """E[sum of next h log returns | shocks up to t], in units of sigma, without drift: [T, N]."""
        return sum(_causal_filter(sources[name], _horizon_kernel(k[name], h)) for name in sources)

    mu = np.zeros((T, N))
    mu[1:] = expected(1)[:-1] * sigma  # known at the close of t-1, earned on day t
    drift = beta * p.market_drift  # [N] expected market part of a daily log return
    oracle = {h: expected(h) * sigma + h * drift for h in HORIZONS}

    say("building prices")
    vol_t = sigma[None, :] * np.sqrt(regime)[:, None]  # [T, N]
    shock = np.sqrt(1 - p.comovement**2) * e + p.comovement * leader_e
    shock = np.where(has_leader[None, :], shock, e)
    r = mu + beta * market[:, None] + gamma * sector_ret[:, sector] + vol_t * shock  # [T, N] log returns
    r[unlisted] = 0.0
    log_close = rng.normal(np.log(2000), 0.8, N)[None, :] + np.cumsum(r, axis=0)
    close = np.exp(log_close)
    gap = 0.25 * r + 0.003 * rng.standard_normal((T, N))  # overnight part of the day's return
    open_ = close * np.exp(gap - r)
    hi_ext = np.abs(rng.standard_normal((T, N))) * 0.4 * vol_t
    lo_ext = np.abs(rng.standard_normal((T, N))) * 0.4 * vol_t
    high = np.maximum(open_, close) * np.exp(hi_ext)
    low = np.minimum(open_, close) * np.exp(-lo_ext)
    persistent = _ar1_filter(rng.normal(0.0, 0.1, (T, N)), phi=0.95)  # [T, N]
    log_volume = (
        rng.normal(np.log(1e6), 1.0, N)[None, :]
        + 0.5 * np.log(regime)[:, None]
        + 0.35 * vshock
        + 0.3 * (np.abs(e) - 0.8)
        + persistent
    )
    volume = np.round(np.exp(log_volume) / 100.0) * 100.0 + 100.0  # board lots of 100 shares

    say("assembling tables")
    dates = _business_days(p.start, T)
    codes = _codes(N)
    listed = ~unlisted
    prices = _long(dates, codes, listed, open=open_, high=high, low=low, close=close, volume=volume)
    prices = conform(prices.with_columns(turnover=pl.col("close") * pl.col("volume")), "prices")
    oracle_df = _long(dates, codes, listed, **{f"oracle_{h}d": oracle[h] for h in HORIZONS})
    index = _index_table(dates, market, regime, rng)
    listed_info = conform(
        pl.DataFrame(
            {
                "code": codes,
                "name": [f"Synthetic {c}" for c in codes],
                "market": np.array(MARKETS)[rng.choice(3, N, p=[0.6, 0.3, 0.1])],
                "sector": np.array(SECTOR17_NAMES)[sector],
                "sector17_code": sector + 1,
                "sector17_name": np.array(SECTOR17_NAMES)[sector],
            }
        ),
        "listed_info",
    )
    kept = sources if keep_shocks else None
    return SyntheticMarket(
        prices, index, listed_info, oracle_df, leader_of, p, kept, sigma if keep_shocks else None
    )


def _ar1_filter(z: np.ndarray, phi: float) -> np.ndarray:
    """y[t] = phi * y[t-1] + z[t] along axis 0 (days), as a recursive filter rather than a Python loop."""
    return lfilter([1.0], [1.0, -phi], z, axis=0)


def _codes(n: int) -> np.ndarray:
    """TSE-style 4-digit codes spread over 1000..9999 (5 digits only past 9,000 stocks)."""
    if n > 9000:
        return np.char.zfill(np.arange(10000, 10000 + n).astype(str), 5)
    step = max(1, min(10, 8999 // n))
    return (1000 + step * np.arange(n)).astype(str)


def _business_days(start: date, n: int) -> np.ndarray:
    """``n`` weekdays from ``start`` (the synthetic exchange has no holidays)."""
    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    return np.busday_offset(first, np.arange(n))


def _long(dates: np.ndarray, codes: np.ndarray, keep: np.ndarray, **fields: np.ndarray) -> pl.DataFrame:
    """Turn [T, N] arrays into a long (code, date)-sorted frame, keeping only cells where ``keep``."""
    T, N = keep.shape
    mask = keep.T.ravel()  # code-major order: all days of stock 0, then stock 1, ...
    stock = np.repeat(np.arange(N, dtype=np.int32), T)[mask]
    day = np.tile(dates.astype("datetime64[D]").astype(np.int32), N)[mask]
    cols = {
        "date": pl.Series(day).cast(pl.Date),
        # Gather from the N codes instead of building a 10M-element numpy string array (slow and large).
        "code": pl.Series(codes.astype(str)).gather(stock),
    }
    for name, arr in fields.items():
        cols[name] = arr.T.ravel()[mask]
    return pl.DataFrame(cols)


def _index_table(
    dates: np.ndarray, market: np.ndarray, regime: np.ndarray, rng: np.random.Generator
) -> pl.DataFrame:
    """The market index: the market factor compounded from 20,000, with OHLC and volume."""
    close = 20000.0 * np.exp(np.cumsum(market))
    vol = 0.010 * regime
    gap = 0.3 * market + 0.002 * rng.standard_normal(len(market))
    open_ = close * np.exp(gap - market)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(len(market))) * 0.3 * vol)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(len(market))) * 0.3 * vol)
    volume = np.round(1e9 * np.sqrt(regime) * np.exp(0.2 * rng.standard_normal(len(market))))
    df = pl.DataFrame(
        {"date": dates, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )
    return conform(df.with_columns(pl.col("date").cast(pl.Date)), "index")


def params_dict(p: SynthParams) -> dict:
    """The parameters as JSON-ready values, for the manifest."""
    d = asdict(p)
    d["start"] = p.start.isoformat()
    return d


def oracle_rank_ic(market: SyntheticMarket) -> dict[str, float]:
    """Mean daily RankIC of the oracle against the realized forward return, per horizon.

    The realized h-day return is close[t+h] / close[t] - 1 in the stock's own trading days; days where it
    is unknown (the end of the panel) are left out, never filled.
    """

    fwd = market.prices.select(
        "date",
        "code",
        *[
            (pl.col("close").shift(-h).over("code") / pl.col("close") - 1).alias(f"fwd_{h}d")
            for h in HORIZONS
        ],
    )
    df = fwd.join(market.oracle, on=["date", "code"], how="inner")
    return {f"{h}d": round(mean_daily_rank_ic(df, f"oracle_{h}d", f"fwd_{h}d"), 4) for h in HORIZONS}


def write_synthetic(market: SyntheticMarket, out, *, overwrite: bool = False) -> dict:
    """Write ``market`` as a canonical raw store (with ``oracle.parquet``) and return its manifest."""

    p = market.params
    prices = market.prices
    manifest = {
        "kind": "synthetic",
        "source": {"generator": "atft.data.synthetic", "params": params_dict(p)},
        "rows": prices.height,
        "codes": prices["code"].n_unique(),
        "dates": prices["date"].n_unique(),
        "date_range": [str(prices["date"].min()), str(prices["date"].max())],
        "sectors": market.listed_info["sector"].n_unique(),
        "late_listed_codes": int(
            (prices.group_by("code").agg(pl.col("date").min())["date"] > prices["date"].min()).sum()
        ),
        "hidden_graph": {
            "leaders": int(np.isin(np.arange(p.n_stocks), market.leader_of).sum()),
            "followers": int((market.leader_of >= 0).sum()),
        },
        "oracle_rank_ic": oracle_rank_ic(market),
        "checks": {},
    }
    tables = {
        "prices": prices,
        "index": market.index,
        "listed_info": market.listed_info,
        "oracle": market.oracle,
    }
    write_store(out, tables, manifest, overwrite=overwrite)
    return read_manifest(out)
