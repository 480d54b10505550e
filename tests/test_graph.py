"""The daily stock graph (atft.models.graph) against slow references: loops over pairs and over stocks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from atft.config import load_config
from atft.features.panel import DayPanel
from atft.models.graph import EDGE_ATTRS, DayGraphBuilder, graph_stats


def make_cfg(**changes) -> SimpleNamespace:
    """A ``model.graph`` section, read by attribute like the real one."""
    values = dict(
        mode="correlation",
        window=20,
        threshold=0.3,
        top_k=3,
        shrinkage=0.0,
        ewm_halflife=10.0,
        return_feature="ret_1d",
    )
    return SimpleNamespace(**{**values, **changes})


def graph_builder(panel: DayPanel, cfg, **kwargs) -> DayGraphBuilder:
    """The builder over a panel's arrays (it takes arrays, never the panel itself)."""
    return DayGraphBuilder(panel.x, panel.feature_names, panel.sector_id, cfg, **kwargs)


def make_panel(returns: np.ndarray, sector_id: np.ndarray | None = None) -> DayPanel:
    """A panel whose features are ``ret_1d`` (the given [S, D] returns) and an unrelated ``volume_z``."""
    n_stocks, n_days = returns.shape
    other = np.random.default_rng(99).standard_normal((n_stocks, n_days))
    x = np.stack([returns, other], axis=-1).astype(np.float32)  # [S, D, 2]
    return DayPanel.from_arrays(
        x,
        np.zeros((n_stocks, n_days, 1), dtype=np.float32),
        feature_names=["ret_1d", "volume_z"],
        sector_id=None if sector_id is None else np.asarray(sector_id, dtype=np.int32),
    )


def factor_returns(n_stocks: int, n_days: int, seed: int = 0, missing: float = 0.05) -> np.ndarray:
    """[S, D] returns with two common factors (so some pairs correlate strongly) and some NaN."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((2, n_days))
    loadings = rng.standard_normal((n_stocks, 2)) * rng.choice([0.0, 1.5], size=(n_stocks, 1))
    returns = loadings @ factors + rng.standard_normal((n_stocks, n_days))
    returns[rng.random(returns.shape) < missing] = np.nan
    return returns


def edge_set(edge_index: torch.Tensor, stocks: np.ndarray | None = None) -> set[tuple[int, int]]:
    """The edges as (source, target) pairs, mapped to panel indices when ``stocks`` is given."""
    pairs = edge_index.T.tolist()
    if stocks is None:
        return {(i, j) for i, j in pairs}
    return {(int(stocks[i]), int(stocks[j])) for i, j in pairs}


def edge_attrs(edge_index: torch.Tensor, edge_attr: torch.Tensor, stocks: np.ndarray) -> dict:
    """{(source, target) in panel indices: [corr, same_sector, same_market]}."""
    pairs = [(int(stocks[i]), int(stocks[j])) for i, j in edge_index.T.tolist()]
    return dict(zip(pairs, edge_attr.tolist(), strict=True))


def reference_corr(returns: np.ndarray, halflife: float, shrinkage: float, min_obs: int) -> np.ndarray:
    """Shrunk EW correlation [N, N] of the rows of ``returns`` [N, w], one pair at a time (NaN: no corr)."""
    n, w = returns.shape
    weights = [0.5 ** ((w - 1 - t) / halflife) for t in range(w)]  # the last day weighs 1
    demeaned = []
    for i in range(n):
        seen = [t for t in range(w) if np.isfinite(returns[i, t])]
        mean = sum(weights[t] * returns[i, t] for t in seen) / sum(weights[t] for t in seen) if seen else 0.0
        demeaned.append({t: returns[i, t] - mean for t in seen})
    corr = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            zi, zj = demeaned[i], demeaned[j]
            var_i = sum(weights[t] * v * v for t, v in zi.items())
            var_j = sum(weights[t] * v * v for t, v in zj.items())
            if len(zi) < min_obs or len(zj) < min_obs or var_i <= 1e-20 or var_j <= 1e-20:
                continue
            cov = sum(weights[t] * zi[t] * zj[t] for t in zi if t in zj)  # missing days count as 0
            corr[i, j] = cov / np.sqrt(var_i * var_j) * (1.0 if i == j else 1.0 - shrinkage)
    return corr


# --------------------------------------------------------------------------------------------------
# point in time
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["correlation", "sector"])
def test_graph_uses_only_data_up_to_its_day(mode):
    """Graphs of days <= T are identical whether the panel ends at T or holds junk after T."""
    n_stocks, n_days, last = 24, 70, 45
    returns = factor_returns(n_stocks, n_days, seed=1)
    sectors = np.arange(n_stocks) % 4  # sector 0 (unknown) included
    junk = returns.copy()
    rng = np.random.default_rng(2)
    junk[:, last + 1 :] = rng.standard_normal((n_stocks, n_days - last - 1)) * 50
    junk[:, last + 1 :][rng.random((n_stocks, n_days - last - 1)) < 0.3] = np.nan
    cfg = make_cfg(mode=mode, window=20, threshold=0.2, top_k=4, shrinkage=0.1, ewm_halflife=5.0)
    full = graph_builder(make_panel(returns, sectors), cfg)
    truncated = graph_builder(make_panel(returns[:, : last + 1], sectors), cfg)
    junked = graph_builder(make_panel(junk, sectors), cfg)
    subset = np.array([17, 3, 8, 0, 22, 11, 5, 14, 9, 20])
    n_edges = 0
    for day in range(last + 1):
        for stocks in (np.arange(n_stocks), subset):
            edge_index, edge_attr = full(day, stocks)
            for other in (truncated, junked):
                other_index, other_attr = other(day, stocks)
                assert torch.equal(edge_index, other_index), day
                assert torch.equal(edge_attr, other_attr), day
            n_edges += edge_index.shape[1]
    assert n_edges > 0  # the comparison was not between empty graphs
    # ... and the junk does change later graphs, so the test would see a leak.
    assert not torch.equal(full(last + 5, np.arange(n_stocks))[1], junked(last + 5, np.arange(n_stocks))[1])


# --------------------------------------------------------------------------------------------------
# correlation
# --------------------------------------------------------------------------------------------------


def test_correlation_matches_slow_reference():
    """EW demeaning, missing days as 0, own-variance normalization, shrinkage; too-short and flat stocks."""
    rng = np.random.default_rng(3)
    returns = rng.standard_normal((7, 30))
    returns[1] = 0.8 * returns[0] + 0.6 * returns[1]
    returns[2, [3, 9, 10, 25, 28]] = np.nan  # a few missing days
    returns[3, :24] = np.nan  # 6 observed days in the window < max(5, 15 // 2) = 7: no correlation
    returns[4] = 0.25  # constant: zero variance
    cfg = make_cfg(window=15, ewm_halflife=4.0, shrinkage=0.2, threshold=0.0, top_k=6)
    builder = graph_builder(make_panel(returns), cfg)
    stocks = np.arange(7)
    for day in (27, 29, 8):  # day 8: window clamped to days 0..8
        window = returns[:, max(0, day - 14) : day + 1]
        expected = reference_corr(window, halflife=4.0, shrinkage=0.2, min_obs=7)
        corr, ok = builder.correlation(day, stocks)
        np.testing.assert_allclose(corr, expected, atol=2e-6)
        np.testing.assert_array_equal(ok, np.isfinite(np.diag(expected)))
        edge_index, edge_attr = builder(day, stocks)
        src, dst = edge_index.numpy()
        np.testing.assert_allclose(edge_attr[:, 0].numpy(), expected[src, dst], atol=2e-6)
    assert not ok[3] and not ok[4]  # day 8: stock 3 has no returns, stock 4 is flat
    edge_index, _ = builder(29, stocks)
    assert not ({3, 4} & set(edge_index.flatten().tolist()))


def test_planted_pair_is_linked_and_independent_stock_is_not():
    rng = np.random.default_rng(4)
    returns = rng.standard_normal((20, 80))
    returns[7] = returns[3] + 0.1 * rng.standard_normal(80)
    builder = graph_builder(make_panel(returns), make_cfg(window=60, threshold=0.5, top_k=3))
    edge_index, edge_attr = builder(79, np.arange(20))
    edges = edge_set(edge_index)
    assert (3, 7) in edges and (7, 3) in edges
    corr = dict(zip(map(tuple, edge_index.T.tolist()), edge_attr[:, 0].tolist(), strict=True))
    assert corr[(3, 7)] > 0.95
    assert not any(12 in pair for pair in edges)  # independent noise is not linked


def test_edges_are_symmetric_without_self_loops_and_sorted():
    builder = graph_builder(make_panel(factor_returns(40, 50, seed=5)), make_cfg(threshold=0.2, top_k=4))
    for day in (19, 35, 49):
        edge_index, edge_attr = builder(day, np.arange(40))
        assert edge_index.dtype == torch.long and edge_attr.dtype == torch.float32
        assert edge_index.shape[0] == 2 and edge_attr.shape == (edge_index.shape[1], len(EDGE_ATTRS))
        src, dst = edge_index.tolist()
        assert all(i != j for i, j in zip(src, dst, strict=True))
        attr = {(i, j): row for i, j, row in zip(src, dst, edge_attr.tolist(), strict=True)}
        assert all((j, i) in attr and attr[(j, i)] == row for (i, j), row in attr.items())  # bit for bit
        keys = [i * 40 + j for i, j in zip(src, dst, strict=True)]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize(("threshold", "top_k"), [(0.3, 2), (0.0, 3), (0.5, 10)])
def test_threshold_and_top_k(threshold, top_k):
    """Each stock chooses at most top_k others with |corr| >= threshold; the graph is the union of choices."""
    n = 30
    builder = graph_builder(
        make_panel(factor_returns(n, 40, seed=6)),
        make_cfg(window=30, threshold=threshold, top_k=top_k, shrinkage=0.1),
    )
    stocks = np.arange(n)
    corr, ok = builder.correlation(39, stocks)
    expected = set()
    for i in range(n):  # the slow reference: each stock's own choice
        candidates = [j for j in range(n) if j != i and ok[i] and ok[j] and abs(corr[i, j]) >= threshold]
        chosen = sorted(candidates, key=lambda j: -abs(corr[i, j]))[:top_k]
        assert len(chosen) <= top_k
        expected |= {(i, j) for j in chosen} | {(j, i) for j in chosen}
    edge_index, edge_attr = builder(39, stocks)
    assert edge_set(edge_index) == expected
    assert (edge_attr[:, 0].abs() >= threshold).all()
    assert len(expected) > 0
    if threshold == 0.0:  # top_k binds: every usable stock chose exactly top_k
        degree = torch.bincount(edge_index[0], minlength=n)
        assert (degree[torch.from_numpy(ok)] >= top_k).all()


def test_shrinkage_scales_correlation():
    returns = factor_returns(12, 40, seed=7, missing=0.0)
    stocks = np.arange(12)
    plain = graph_builder(make_panel(returns), make_cfg(shrinkage=0.0, threshold=0.0, top_k=11))
    shrunk = graph_builder(make_panel(returns), make_cfg(shrinkage=0.4, threshold=0.0, top_k=11))
    corr0, _ = plain.correlation(39, stocks)
    corr1, _ = shrunk.correlation(39, stocks)
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(corr1[off], 0.6 * corr0[off], atol=1e-6)
    np.testing.assert_array_equal(np.diag(corr1), 1.0)
    (index0, attr0), (index1, attr1) = plain(39, stocks), shrunk(39, stocks)
    assert torch.equal(index0, index1)  # complete graph either way
    torch.testing.assert_close(attr1[:, 0], 0.6 * attr0[:, 0], atol=1e-6, rtol=0)


def test_exponential_weighting_favours_recent_days():
    """Two stocks independent for 50 days, then moving together for 10: a short half-life sees it more."""
    rng = np.random.default_rng(8)
    returns = rng.standard_normal((2, 60))
    returns[1, 50:] = returns[0, 50:]
    stocks = np.arange(2)
    short = graph_builder(make_panel(returns), make_cfg(window=60, ewm_halflife=3.0)).correlation(59, stocks)
    long = graph_builder(make_panel(returns), make_cfg(window=60, ewm_halflife=1e4)).correlation(59, stocks)
    assert short[0][0, 1] > 0.8
    assert long[0][0, 1] < 0.5


# --------------------------------------------------------------------------------------------------
# modes, attributes, indices
# --------------------------------------------------------------------------------------------------


def test_sector_mode_links_only_sector_peers():
    sectors = np.array([1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 3, 1])
    returns = factor_returns(12, 40, seed=9)
    returns[11] = np.nan  # no returns: still linked to sector peers, with corr 0
    builder = graph_builder(make_panel(returns, sectors), make_cfg(mode="sector", top_k=2))
    edge_index, edge_attr = builder(39, np.arange(12))
    src, dst = edge_index.numpy()
    assert (sectors[src] == sectors[dst]).all() and (sectors[src] > 0).all()
    assert (edge_attr[:, 1] == 1.0).all()
    assert not ({8, 9, 10} & set(src.tolist()))  # unknown sector, and a sector of one
    assert {int(j) for j in dst[src == 5]} == {6, 7}  # fewer peers than top_k: all of them
    corr, ok = builder.correlation(39, np.arange(12))
    for i in range(12):  # each stock chose its top_k peers by |corr|: they are among its neighbours
        peers = [j for j in range(12) if j != i and sectors[j] == sectors[i] > 0 and ok[i] and ok[j]]
        chosen = sorted(peers, key=lambda j: -abs(corr[i, j]))[:2]
        assert set(chosen) <= set(dst[src == i].tolist())
    assert (dst[src == 11].size >= 2) and (edge_attr[torch.from_numpy(src == 11), 0] == 0).all()
    # The same peers whatever the order of the stocks.
    order = np.random.default_rng(10).permutation(12)
    assert edge_set(builder(39, order)[0], order) == edge_set(edge_index)


def test_none_mode_has_no_edges_and_needs_no_return_feature():
    x = np.random.default_rng(11).standard_normal((5, 10, 1)).astype(np.float32)
    panel = DayPanel.from_arrays(x, np.zeros((5, 10, 1)), feature_names=["volume_z"])
    edge_index, edge_attr = graph_builder(panel, make_cfg(mode="none"))(9, np.arange(5))
    assert edge_index.shape == (2, 0) and edge_index.dtype == torch.long
    assert edge_attr.shape == (0, 3) and edge_attr.dtype == torch.float32


def test_edge_attributes_same_sector_and_same_market():
    sectors = np.array([1, 1, 2, 2, 0, 0])
    market = np.array([0, 1, 1, 1, 0, 0])
    panel = make_panel(factor_returns(6, 30, seed=12, missing=0.0), sectors)
    cfg = make_cfg(threshold=0.0, top_k=5)
    edge_index, edge_attr = graph_builder(panel, cfg, market_id=market)(29, np.arange(6))
    assert edge_index.shape[1] == 30  # complete graph: every pair of 6 stocks, both ways
    src, dst = edge_index.numpy()
    same_sector = ((sectors[src] == sectors[dst]) & (sectors[src] > 0)).astype(np.float32)
    np.testing.assert_array_equal(edge_attr[:, 1].numpy(), same_sector)  # unknown (0) is never "same"
    np.testing.assert_array_equal(edge_attr[:, 2].numpy(), (market[src] == market[dst]).astype(np.float32))
    _, attr = graph_builder(panel, cfg)(29, np.arange(6))  # no market_id: one market
    assert (attr[:, 2] == 1.0).all()


def test_local_indices_for_a_subset_in_any_order():
    """A subset in any order gives the graph of a panel holding only those stocks, in local indices."""
    returns = factor_returns(30, 40, seed=13)
    sectors = np.arange(30) % 3
    market = np.arange(30) % 2
    subset = np.array([21, 4, 17, 9, 28, 0, 13, 6, 25, 11, 2, 19])
    cfg = make_cfg(threshold=0.2, top_k=3)
    whole = graph_builder(make_panel(returns, sectors), cfg, market_id=market)
    alone = graph_builder(make_panel(returns[subset], sectors[subset]), cfg, market_id=market[subset])
    ref_index, ref_attr = alone(39, np.arange(len(subset)))
    reference = edge_attrs(ref_index, ref_attr, subset)
    for order in (np.arange(len(subset)), np.random.default_rng(14).permutation(len(subset))):
        stocks = subset[order]
        edge_index, edge_attr = whole(39, stocks)
        assert int(edge_index.max()) < len(stocks)
        got = edge_attrs(edge_index, edge_attr, stocks)
        assert got.keys() == reference.keys() and len(got) > 0
        for pair, attr in got.items():
            np.testing.assert_allclose(attr, reference[pair], atol=1e-6)


def test_default_config_section_and_env_switch():
    """The real ``model.graph`` section works as cfg; DISABLE_GRAPH_BUILDER gives an empty graph."""
    panel = make_panel(factor_returns(10, 260, seed=15))  # the default window needs 125 observed days
    cfg = load_config(None, env={}).cfg
    edge_index, _ = graph_builder(panel, cfg.model.graph)(259, np.arange(10))
    assert edge_index.shape[1] > 0
    disabled = load_config(None, env={"DISABLE_GRAPH_BUILDER": "1"}).cfg
    assert graph_builder(panel, disabled.model.graph)(259, np.arange(10))[0].shape == (2, 0)


# --------------------------------------------------------------------------------------------------
# cache, errors, stats
# --------------------------------------------------------------------------------------------------


def test_cache_returns_identical_tensors_and_stays_bounded():
    panel = make_panel(factor_returns(15, 40, seed=16))
    builder = graph_builder(panel, make_cfg(), cache_days=2)
    stocks = np.arange(15)
    first = builder(30, stocks)
    again = builder(30, stocks.astype(np.int32))  # same indices, other dtype: same key
    assert again[0] is first[0] and again[1] is first[1]
    assert builder.cache_info() == {"hits": 1, "misses": 1, "size": 1, "max_size": 2}
    builder(31, stocks)
    builder(30, stocks[::-1].copy())  # other order: another key (local indices differ)
    assert builder.cache_info()["size"] == 2
    rebuilt = builder(30, stocks)  # evicted: built again, equal but new
    assert rebuilt[0] is not first[0]
    assert torch.equal(rebuilt[0], first[0]) and torch.equal(rebuilt[1], first[1])
    uncached = graph_builder(panel, make_cfg(), cache_days=0)
    uncached(30, stocks)
    assert uncached.cache_info()["size"] == 0


def test_bad_input_is_refused_with_a_clear_message():
    panel = make_panel(factor_returns(6, 10, seed=17))
    builder = graph_builder(panel, make_cfg())
    with pytest.raises(ValueError, match=r"day 10 is outside the panel's calendar \(0..9\)"):
        builder(10, np.arange(6))
    with pytest.raises(ValueError, match="day -1 is outside"):
        builder(-1, np.arange(6))
    with pytest.raises(ValueError, match="day must be an integer"):
        builder(2.0, np.arange(6))
    with pytest.raises(ValueError, match=r"stock index 6 is out of range: the panel has 6 stocks \(0..5\)"):
        builder(5, np.array([0, 6]))
    with pytest.raises(ValueError, match="stock index -1 is out of range"):
        builder(5, np.array([-1, 2]))
    with pytest.raises(ValueError, match="integer panel indices"):
        builder(5, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D array"):
        builder(5, np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="more than once"):
        builder(5, np.array([1, 2, 1]))
    with pytest.raises(ValueError, match=r"'ret_1day'.*did you mean 'ret_1d'"):
        graph_builder(panel, make_cfg(return_feature="ret_1day"))
    with pytest.raises(ValueError, match="mode='fully_connected'"):
        graph_builder(panel, make_cfg(mode="fully_connected"))
    with pytest.raises(ValueError, match=r"market_id must be an integer array \[6\]"):
        graph_builder(panel, make_cfg(), market_id=np.zeros(5, dtype=int))
    assert builder(5, np.array([], dtype=np.int64))[0].shape == (2, 0)  # an empty day is not an error


def test_graph_stats():
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert graph_stats(edge_index, 5) == {"edges": 4, "mean_degree": 0.8, "isolated_share": 0.4}
    assert graph_stats(torch.empty((2, 0), dtype=torch.long), 0)["isolated_share"] == 0.0
