"""The synthetic market: deterministic, in canonical form, and carrying each planted signal it promises."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft.data.store import INDEX_SCHEMA, LISTED_INFO_SCHEMA, PRICE_SCHEMA, RawStore
from atft.data.synthetic import (
    SynthParams,
    _causal_filter,
    _horizon_kernel,
    oracle_rank_ic,
    synthesize,
    write_synthetic,
)
from atft.evaluation.metrics import mean_daily_rank_ic

SMALL = dict(n_stocks=300, n_days=600)
NO_SIGNALS = dict(reversal=0.0, momentum=0.0, volume_shock=0.0, lead_lag=0.0)


@pytest.fixture(scope="module")
def market():
    return synthesize(SynthParams(**SMALL, seed=0))


def with_forward_log_returns(prices: pl.DataFrame, horizons=(1, 5, 20)) -> pl.DataFrame:
    return prices.with_columns(
        [
            (pl.col("close").shift(-h).over("code") / pl.col("close")).log().alias(f"fwd_{h}d")
            for h in horizons
        ]
    )


def test_same_seed_same_market_other_seed_other_market(market):
    again = synthesize(SynthParams(**SMALL, seed=0))
    assert_frame_equal(market.prices, again.prices)
    assert_frame_equal(market.oracle, again.oracle)
    assert_frame_equal(market.index, again.index)
    assert_frame_equal(market.listed_info, again.listed_info)
    other = synthesize(SynthParams(**SMALL, seed=1))
    assert not market.prices["close"].equals(other.prices["close"])


def test_tables_are_canonical_and_consistent(market):
    assert market.prices.schema == pl.Schema(PRICE_SCHEMA)
    assert market.index.schema == pl.Schema(INDEX_SCHEMA)
    assert market.listed_info.schema == pl.Schema(LISTED_INFO_SCHEMA)
    p = market.prices
    assert p.select(pl.struct("code", "date").is_duplicated().any()).item() is False
    assert p.equals(p.sort("code", "date"))
    assert (p["high"] >= p[["open", "close"]].max_horizontal()).all()
    assert (p["low"] <= p[["open", "close"]].min_horizontal()).all()
    assert (p["low"] > 0).all() and (p["volume"] > 0).all()
    assert p.null_count().sum_horizontal().item() == 0
    assert market.listed_info["sector"].null_count() == 0
    assert market.listed_info["sector"].n_unique() == 17
    assert market.index.height == SMALL["n_days"]
    # Oracle rows match price rows one to one.
    assert market.oracle.select("date", "code").equals(p.select("date", "code"))


def test_late_listings_have_no_rows_before_listing(market):
    starts = market.prices.group_by("code").agg(pl.col("date").min().alias("start"), pl.len())
    late = starts.filter(pl.col("start") > market.prices["date"].min())
    assert 0 < late.height < 0.15 * SMALL["n_stocks"]
    # A late stock's rows are contiguous trading days from its start: no gaps.
    dates = market.index["date"]
    for row in late.head(3).iter_rows(named=True):
        expected = dates.filter(dates >= row["start"]).len()
        assert row["len"] == expected


def test_oracle_rank_ic_in_band(market):
    ric = oracle_rank_ic(market)
    assert 0.05 <= ric["5d"] <= 0.20, ric
    assert all(v > 0.03 for v in ric.values()), ric


def test_signal_strength_scales_oracle_skill():
    ric = {
        s: oracle_rank_ic(synthesize(SynthParams(**SMALL, seed=3, signal_strength=s)))["5d"]
        for s in (0, 0.5, 1, 2)
    }
    assert abs(ric[0]) < 0.015, ric
    assert ric[0.5] < ric[1] < ric[2], ric


def test_oracle_is_the_conditional_expectation():
    """Regressing the realized h-day log return on the oracle, per-day demeaned, gives a slope near 1.

    A wrong horizon kernel (off by one day, or a missing term) or a wrong scale moves this slope away from 1.
    """
    m = synthesize(SynthParams(n_stocks=400, n_days=800, seed=5))
    df = with_forward_log_returns(m.prices, (1, 5)).join(m.oracle, on=["date", "code"]).drop_nulls()
    for h in (1, 5):
        d = df.select(
            (pl.col(f"fwd_{h}d") - pl.col(f"fwd_{h}d").mean().over("date")).alias("y"),
            (pl.col(f"oracle_{h}d") - pl.col(f"oracle_{h}d").mean().over("date")).alias("x"),
        )
        x, y = d["x"].to_numpy(), d["y"].to_numpy()
        slope = float(x @ y / (x @ x))
        assert 0.85 < slope < 1.15, (h, slope)


def test_horizon_kernel_and_filter_match_a_slow_loop():
    rng = np.random.default_rng(0)
    K = np.r_[0.0, rng.normal(size=12)]  # K[l], lag l >= 1
    x = rng.normal(size=(50, 3))
    for h in (1, 5, 10):
        # Slow definition: E[sum_{k=1..h} mu_{t+k} | shocks up to t] with mu_s = sum_{l>=1} K[l] x[s-l].
        slow = np.zeros_like(x)
        for t in range(x.shape[0]):
            for k in range(1, h + 1):
                for lag in range(1, len(K)):
                    src = t + k - lag
                    if 0 <= src <= t:  # shocks after t are unknown (mean zero); before day 0 do not exist
                        slow[t] += K[lag] * x[src]
        fast = _causal_filter(x, _horizon_kernel(K, h))
        np.testing.assert_allclose(fast, slow, atol=1e-10)


def _rank_ic_of_isolated_signal(signal: str, predictor, label_h: int) -> float:
    """RankIC of an observable predictor in a market where only ``signal`` is planted."""
    params = {**NO_SIGNALS, signal: getattr(SynthParams(), signal)}
    m = synthesize(SynthParams(n_stocks=400, n_days=700, seed=11, **params))
    df = with_forward_log_returns(m.prices, (label_h,)).with_columns(pred=predictor)
    return mean_daily_rank_ic(df, "pred", f"fwd_{label_h}d")


def test_short_term_reversal_is_planted():
    past_5d = -(pl.col("close") / pl.col("close").shift(5).over("code")).log()
    assert _rank_ic_of_isolated_signal("reversal", past_5d, 5) > 0.02


def test_medium_term_momentum_is_planted():
    mom = (pl.col("close").shift(20).over("code") / pl.col("close").shift(120).over("code")).log()
    assert _rank_ic_of_isolated_signal("momentum", mom, 20) > 0.02


def test_volume_shock_effect_is_planted():
    ratio = (pl.col("volume") / pl.col("volume").rolling_mean(20).over("code")).log()
    assert _rank_ic_of_isolated_signal("volume_shock", ratio, 5) > 0.02


def test_lead_lag_flows_along_the_hidden_graph():
    """A follower's next-day return follows its leader's return today; a random other stock's does not."""
    m = synthesize(
        SynthParams(
            n_stocks=400, n_days=700, seed=4, late_listing_frac=0.0, **{**NO_SIGNALS, "lead_lag": 0.08}
        )
    )
    ret = m.prices.pivot(on="code", index="date", values="close").drop("date").to_numpy()
    r = np.diff(np.log(ret), axis=0)  # [T-1, N]
    r = r - r.mean(axis=1, keepdims=True)  # remove the market
    followers = np.flatnonzero(m.leader_of >= 0)
    leaders = m.leader_of[followers]
    rng = np.random.default_rng(0)
    others = rng.permutation(followers)

    def lagged_corr(src: np.ndarray, dst: np.ndarray) -> float:
        a, b = r[:-1, src], r[1:, dst]
        a = (a - a.mean(0)) / a.std(0)
        b = (b - b.mean(0)) / b.std(0)
        return float((a * b).mean())

    assert lagged_corr(leaders, followers) > 0.05
    assert abs(lagged_corr(others, followers)) < 0.03
    # Followers co-move with their leader the same day, so trailing correlations reveal the graph.
    same_day = float(
        np.mean([np.corrcoef(r[:, i], r[:, j])[0, 1] for i, j in zip(followers, leaders, strict=True)])
    )
    assert same_day > 0.2


def test_volatility_regimes_exist(market):
    idx = np.diff(np.log(market.index["close"].to_numpy()))
    vol = np.array([idx[t - 20 : t].std() for t in range(20, len(idx))])
    assert np.quantile(vol, 0.9) / np.quantile(vol, 0.1) > 1.5


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="n_stocks"):
        SynthParams(n_stocks=3)
    with pytest.raises(ValueError, match="signal_strength"):
        SynthParams(signal_strength=-1)
    with pytest.raises(ValueError, match="signal_strength"):
        SynthParams(signal_strength=float("nan"))
    # So many days that dates would run past the year 9999: refused before any work, naming n_days.
    with pytest.raises(ValueError, match="n_days"):
        SynthParams(n_stocks=10, n_days=2_000_000)


def test_write_and_read_back(tmp_path, market):
    manifest = write_synthetic(market, tmp_path / "raw")
    store = RawStore.read(tmp_path / "raw")
    assert_frame_equal(store.prices, market.prices)
    assert_frame_equal(store.oracle, market.oracle)
    assert manifest["kind"] == "synthetic"
    assert manifest["rows"] == market.prices.height
    assert manifest["source"]["params"]["seed"] == 0
    assert set(manifest["oracle_rank_ic"]) == {"1d", "5d", "10d", "20d"}
    assert manifest["tables"]["oracle"]["rows"] == market.oracle.height
    with pytest.raises(ValueError, match="already exists"):
        write_synthetic(market, tmp_path / "raw")


def test_oracle_parts_add_up_to_the_oracle():
    p = SynthParams(n_stocks=40, n_days=300, seed=3)
    m = synthesize(p, keep_shocks=True)
    codes = sorted(m.oracle["code"].unique().to_list())
    dates = sorted(m.oracle["date"].unique().to_list())
    rows = m.oracle.with_columns(
        t=pl.col("date").replace_strict(dates, list(range(len(dates)))),
        i=pl.col("code").replace_strict(codes, list(range(len(codes)))),
    )
    t, i = rows["t"].to_numpy(), rows["i"].to_numpy()
    drift = {}
    for h in (1, 5, 20):
        parts = m.oracle_parts(h)
        assert set(parts) == {"reversal", "momentum", "volume", "lead_lag"}
        rest = rows[f"oracle_{h}d"].to_numpy() - sum(parts.values())[t, i]
        per_stock = (
            pl.DataFrame({"i": i, "rest": rest})
            .group_by("i")
            .agg(pl.col("rest").min(), pl.col("rest").max().alias("hi"))
        )
        assert np.allclose(
            per_stock["rest"], per_stock["hi"], atol=1e-12
        )  # what is left is a constant drift ...
        drift[h] = dict(zip(per_stock["i"].to_list(), per_stock["rest"].to_list(), strict=True))
    for h in (5, 20):  # ... of h times the one-day drift
        assert all(np.isclose(drift[h][k], h * drift[1][k], atol=1e-12) for k in drift[1])
    assert (
        np.abs(m.oracle_parts(5)["lead_lag"][:, m.leader_of < 0]).max() == 0
    )  # only followers have a leader
    with pytest.raises(ValueError, match="keep_shocks=True"):
        synthesize(p).oracle_parts(5)
