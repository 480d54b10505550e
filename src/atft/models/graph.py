"""The daily stock graph that the GAT attends over: who is linked to whom on day ``d``, from data up to ``d``.

For each trading day the day loader hands :class:`DayGraphBuilder` the calendar day and the panel indices of
that day's stocks; it returns the edges of that cross-section in local indices (0..N-1 into the given
stocks) and three attributes per edge: the (shrunk) correlation of the two stocks' trailing returns,
whether they share a sector, and whether they share a market segment. See ``docs/graph.md`` for the
formulas and the point-in-time guarantee.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from atft.config.schema import GraphConfig, ModelConfig

EDGE_ATTRS = ("corr", "same_sector", "same_market")
MODES = ("correlation", "sector", "none")
_ROW_BLOCK = 1024  # rows of the [N, N] correlation scored at a time: bounds temporaries to ~4 MB x N/1000
_MIN_OBS_FLOOR = 5  # fewer observed days than this never give a meaningful correlation
_DISK_FORMAT = 1  # bump when the formulas change: the graphs cached on disk are then rebuilt


class GraphCache(Protocol):
    """Where day graphs are kept between runs: the dataset folder's cache (``DatasetFolder`` has these
    methods). A protocol, so the model stage reads arrays and never a data class of another stage."""

    def cache_path(self, kind: str, key: str, suffix: str = "") -> Path: ...
    def load_cached(self, path: Path) -> dict[str, np.ndarray] | None: ...
    def save_cached(self, path: Path, arrays: dict[str, np.ndarray]) -> None: ...


def _empty_graph() -> tuple[torch.Tensor, torch.Tensor]:
    """No edges: edge_index long [2, 0], edge_attr float32 [0, 3]."""
    return torch.empty((2, 0), dtype=torch.long), torch.empty((0, len(EDGE_ATTRS)), dtype=torch.float32)


def graph_stats(edge_index: torch.Tensor, n: int) -> dict[str, float]:
    """Size of one day's graph for logging: directed edges, mean out-degree, share of nodes without edges."""
    n_edges = int(edge_index.shape[1])
    if n <= 0:
        return {"edges": n_edges, "mean_degree": 0.0, "isolated_share": 0.0}
    connected = torch.zeros(n, dtype=torch.bool)
    connected[edge_index.reshape(-1)] = True  # a node is isolated when it is neither source nor target
    return {
        "edges": n_edges,
        "mean_degree": n_edges / n,
        "isolated_share": 1.0 - float(connected.sum()) / n,
    }


class DayGraphBuilder:
    """Builds (and caches) the graph of one day's cross-section of stocks from the panel's arrays.

    ``x`` (float [S, D, F]) holds every stock's features by calendar day, named by ``feature_names``; the
    builder reads only the daily-return feature ``cfg.return_feature`` from it, as a view. ``sector_id``
    (int [S]) is each stock's sector (0 = unknown). ``cfg`` is the ``model.graph`` config section (``GraphConfig``), read by attribute: ``mode``,
    ``window``, ``threshold``, ``top_k``, ``shrinkage``, ``ewm_halflife``, ``return_feature``.
    ``market_id`` (int [S]) is each stock's market segment; ``None`` puts every stock in one market.
    At most ``cache_days`` (day, stocks) graphs are kept, least recently used dropped first (0 = no cache).
    With ``disk`` (the dataset folder ``x`` was loaded from), each graph is also kept in the dataset's cache
    (``cache/graph-<stamp>-<key>/<day>-<stocks hash>.npz``, key = the settings and the panel's shape), so it
    is computed once per day and dataset, not once per epoch and run; a damaged file is rebuilt.

    Calling the builder returns ``(edge_index, edge_attr)``: edge_index long [2, E] in local indices into
    ``stocks``, sorted by (source, target), symmetric, without self loops; edge_attr float32 [E, 3] in the
    order of :attr:`EDGE_ATTRS`. Cached tensors are shared between calls: treat them as read-only.
    """

    EDGE_ATTRS = EDGE_ATTRS

    def __init__(
        self,
        x: np.ndarray,
        feature_names: list[str],
        sector_id: np.ndarray,
        cfg: GraphConfig,
        *,
        market_id: np.ndarray | None = None,
        cache_days: int = 4096,
        disk: GraphCache | None = None,
    ) -> None:
        self.x = x  # [S, D, F]
        self.mode = str(cfg.mode)
        self.window = int(cfg.window)
        self.threshold = float(cfg.threshold)
        self.top_k = int(cfg.top_k)
        self.shrinkage = float(cfg.shrinkage)
        self.ewm_halflife = float(cfg.ewm_halflife)
        self.return_feature = str(getattr(cfg, "return_feature", "ret_1d"))
        self._check_config()
        if cache_days < 0:
            raise ValueError(f"cache_days must be >= 0, got {cache_days}")
        self.cache_days = int(cache_days)

        n_stocks = x.shape[0]
        self._feature = self._feature_index(feature_names) if self.mode != "none" else -1
        # A stock needs this many observed returns in its window to get a correlation at all.
        self.min_obs = max(_MIN_OBS_FLOOR, self.window // 2)
        self._sector = torch.from_numpy(np.asarray(sector_id, dtype=np.int64))  # [S]
        if market_id is None:
            self._market = None
        else:
            market = np.asarray(market_id)
            if market.shape != (n_stocks,) or not np.issubdtype(market.dtype, np.integer):
                raise ValueError(
                    f"market_id must be an integer array [{n_stocks}] (one per panel stock), "
                    f"got {market.dtype} {market.shape}"
                )
            self._market = torch.from_numpy(market.astype(np.int64))  # [S]
        # Weight of the return `lag` days before the graph's day: 1 for the day itself, halving every
        # `ewm_halflife` days, so recent co-movement counts more than co-movement a window ago.
        lags = np.arange(self.window - 1, -1, -1, dtype=np.float64)  # [W], oldest day first
        self._weights = 0.5 ** (lags / self.ewm_halflife)  # [W]
        self._cache: OrderedDict[tuple[int, bytes], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.disk = disk
        self.disk_hits = 0
        if disk is not None:
            settings = (
                _DISK_FORMAT, self.mode, self.window, self.threshold, self.top_k, self.shrinkage,
                self.ewm_halflife, self.return_feature, x.shape[:2], market_id is None,
            )  # fmt: skip
            key = hashlib.blake2b(repr(settings).encode(), digest_size=8).hexdigest()
            self._disk_dir = disk.cache_path("graph", key)

    # ------------------------------------------------------------------------------------------------
    # configuration and input checks
    # ------------------------------------------------------------------------------------------------

    def _check_config(self) -> None:
        """Refuse settings the formulas cannot use, naming the ``model.graph`` key."""
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode={self.mode!r} (expected one of {', '.join(map(repr, MODES))})")
        if self.window < 1:
            problems.append(f"window={self.window} (must be >= 1)")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold={self.threshold} (must be in [0, 1])")
        if self.top_k < 1:
            problems.append(f"top_k={self.top_k} (must be >= 1)")
        if not 0.0 <= self.shrinkage <= 1.0:
            problems.append(f"shrinkage={self.shrinkage} (must be in [0, 1])")
        if not (self.ewm_halflife > 0.0 and math.isfinite(self.ewm_halflife)):
            problems.append(f"ewm_halflife={self.ewm_halflife} (must be a positive number)")
        if problems:
            raise ValueError("bad model.graph settings: " + "; ".join(problems))

    def _feature_index(self, feature_names: list[str]) -> int:
        """Position of the return feature in the panel, or a ValueError that names the nearest names."""
        names = list(feature_names)
        if self.return_feature in names:
            return names.index(self.return_feature)
        close = difflib.get_close_matches(self.return_feature, names, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else "no feature has a similar name"
        raise ValueError(
            f"model.graph.return_feature={self.return_feature!r} is not a feature of the panel ({hint}); "
            f"set model.graph.return_feature to a daily-return feature, or model.graph.mode='none'"
        )

    def _check_input(self, day: Any, stocks: Any) -> tuple[int, np.ndarray]:
        """The day as an int and the stocks as int64 [N], or a ValueError saying what is wrong."""
        n_stocks, n_days, _ = self.x.shape
        if isinstance(day, bool) or not isinstance(day, int | np.integer):
            raise ValueError(f"day must be an integer calendar index, got {type(day).__name__} {day!r}")
        if not 0 <= day < n_days:
            raise ValueError(f"day {day} is outside the panel's calendar (0..{n_days - 1})")
        idx = stocks.detach().cpu().numpy() if isinstance(stocks, torch.Tensor) else np.asarray(stocks)
        if idx.ndim != 1:
            raise ValueError(f"stocks must be a 1-D array of panel stock indices, got shape {idx.shape}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"stocks must hold integer panel indices, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size:
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= n_stocks:
                bad = low if low < 0 else high
                raise ValueError(
                    f"stock index {bad} is out of range: the panel has {n_stocks} stocks (0..{n_stocks - 1})"
                )
            if np.bincount(idx, minlength=n_stocks).max() > 1:  # local indices would be ambiguous
                raise ValueError("stocks holds the same panel index more than once")
        return int(day), idx

    # ------------------------------------------------------------------------------------------------
    # the graph
    # ------------------------------------------------------------------------------------------------

    def __call__(self, day: int, stocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph of ``stocks`` (panel indices [N]) on calendar day ``day``, from the cache if it is there.

        edge_index long [2, E] in LOCAL indices 0..N-1 into ``stocks``; edge_attr float32 [E, 3] =
        (corr, same_sector, same_market).
        """
        day, idx = self._check_input(day, stocks)
        key = (day, hashlib.blake2b(idx.tobytes(), digest_size=16).digest())
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        self.misses += 1
        graph = self._from_disk(day, key[1]) if self.disk is not None else None
        if graph is None:
            graph = self._build(day, idx)
            if self.disk is not None:
                edges, attrs = graph
                self.disk.save_cached(
                    self._disk_file(day, key[1]), {"edge_index": edges.numpy(), "edge_attr": attrs.numpy()}
                )
        if self.cache_days > 0:
            self._cache[key] = graph
            while len(self._cache) > self.cache_days:
                self._cache.popitem(last=False)  # least recently used
        return graph

    def cache_info(self) -> dict[str, int]:
        """Cache hits, misses and current size, for logging (``disk_hits`` counts the misses read from disk)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": len(self._cache),
            "max_size": self.cache_days,
        }

    def _disk_file(self, day: int, stocks_hash: bytes) -> Path:
        return self._disk_dir / f"{day}-{stocks_hash.hex()}.npz"

    def _from_disk(self, day: int, stocks_hash: bytes) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The graph cached on disk for (day, stocks), or None (absent or damaged)."""
        arrays = self.disk.load_cached(self._disk_file(day, stocks_hash))
        if arrays is None:
            return None
        edge_index, edge_attr = arrays.get("edge_index"), arrays.get("edge_attr")
        if (
            edge_index is None or edge_attr is None or edge_index.dtype != np.int64
            or edge_attr.dtype != np.float32 or edge_index.ndim != 2 or edge_index.shape[0] != 2
            or edge_attr.shape != (edge_index.shape[1], len(EDGE_ATTRS))
        ):  # fmt: skip
            return None  # not a graph this builder wrote: computed again (and rewritten)
        self.disk_hits += 1
        return torch.from_numpy(edge_index), torch.from_numpy(edge_attr)

    def correlation(self, day: int, stocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shrunk correlation float32 [N, N] the edges come from, and which stocks have one (bool [N]).

        For diagnostics and tests: rows and columns of stocks without enough data are NaN, the diagonal 1.
        """
        day, idx = self._check_input(day, stocks)
        unit, ok = self._unit_returns(day, idx)
        corr = (unit @ unit.T).mul_(1.0 - self.shrinkage)  # [N, N]
        corr.diagonal().fill_(1.0)  # (1 - s) * 1 + s * 1
        corr[~ok] = float("nan")
        corr[:, ~ok] = float("nan")
        return corr.numpy(), ok.numpy()

    def _unit_returns(self, day: int, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Demeaned, weighted, unit-length trailing returns float32 [N, w]; which stocks are usable bool [N].

        The dot product of two rows is their EW correlation; rows of unusable stocks are zero.
        """
        start = max(0, day - self.window + 1)  # only days start..day: nothing after `day` is read
        returns = self.x[idx, start : day + 1, self._feature].astype(np.float64)  # [N, w]
        weights = self._weights[self.window - returns.shape[1] :]  # [w], the most recent day weighs 1
        seen = np.isfinite(returns)  # [N, w]
        returns = np.where(seen, returns, 0.0)
        seen_weight = seen * weights  # [N, w]
        total = seen_weight.sum(axis=1)  # [N]
        mean = (seen_weight * returns).sum(axis=1) / np.maximum(total, 1e-300)  # [N] weighted mean per stock
        # Missing days count as 0 after demeaning: one matmul instead of a covariance per pair of stocks.
        scaled = (returns - mean[:, None]) * seen * np.sqrt(weights)  # [N, w]
        norm = np.sqrt((scaled * scaled).sum(axis=1))  # [N] sqrt of the weighted variance (unnormalized)
        # Zero variance (relative to the scale of the returns): a constant series has no correlation.
        scale = np.sqrt((seen_weight * returns * returns).sum(axis=1))  # [N]
        ok = (seen.sum(axis=1) >= self.min_obs) & (norm > 1e-7 * scale) & (norm > 0)
        unit = np.where(ok[:, None], scaled / np.where(ok, norm, 1.0)[:, None], 0.0)  # [N, w]
        return torch.from_numpy(unit.astype(np.float32)), torch.from_numpy(ok)

    def _build(self, day: int, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph of stocks ``idx`` on ``day`` (no cache)."""
        n = idx.size
        if self.mode == "none" or n < 2:
            return _empty_graph()
        unit, ok = self._unit_returns(day, idx)
        sector = self._sector[torch.from_numpy(idx)]  # [N]
        if self.mode == "sector":
            src, dst = self._sector_candidates(unit, ok, sector, idx)
        else:
            src, dst = self._correlation_candidates(unit, ok)
        # Symmetrize: the union of both directions is the set of unordered pairs that either side chose.
        pair = torch.unique(torch.minimum(src, dst) * n + torch.maximum(src, dst))  # [P], low * n + high
        low, high = pair // n, pair % n
        # One corr per pair, used both for the threshold and as the attribute of both directions, so the
        # two agree bit for bit (matmul entries [i, j] and [j, i] need not).
        corr = self._pair_corr(unit, ok, low, high)  # [P]
        if self.mode == "correlation":
            keep = corr.abs() >= torch.tensor(self.threshold, dtype=corr.dtype)
            low, high, corr = low[keep], high[keep], corr[keep]
        if low.numel() == 0:
            return _empty_graph()
        src, dst, corr = torch.cat([low, high]), torch.cat([high, low]), torch.cat([corr, corr])  # [E]
        order = torch.argsort(src * n + dst)  # canonical (source, target) order: same input, same tensors
        src, dst, corr = src[order], dst[order], corr[order]
        same_sector = (sector[src] == sector[dst]) & (sector[src] > 0)  # [E]
        if self._market is None:
            same_market = torch.ones_like(same_sector)
        else:
            market = self._market[torch.from_numpy(idx)]  # [N]
            same_market = market[src] == market[dst]
        edge_attr = torch.stack([corr, same_sector.float(), same_market.float()], dim=1)  # [E, 3]
        return torch.stack([src, dst]), edge_attr

    def _pair_corr(
        self, unit: torch.Tensor, ok: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        """Shrunk correlation float32 [M] of the pairs (src, dst): 0 where either stock has none."""
        dot = (unit.index_select(0, src) * unit.index_select(0, dst)).sum(dim=1)  # [M]
        return torch.where(ok[src] & ok[dst], dot.mul_(1.0 - self.shrinkage), 0.0)

    def _correlation_candidates(
        self, unit: torch.Tensor, ok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each usable stock's top_k other stocks by |corr|: source, target long [M] (before the threshold).

        Shrinking scales every off-diagonal entry by the same (1 - shrinkage), so the ranking is taken on the
        raw correlation. Rows are scored a block at a time to bound the [b, N] temporaries.
        """
        n = unit.shape[0]
        k = min(self.top_k, n - 1)
        bad = torch.nonzero(~ok).flatten()  # usually few: mask their columns instead of a [b, N] mask
        sources, targets = [], []
        for start in range(0, n, _ROW_BLOCK):  # blocks of rows, not a loop over stocks
            stop = min(start + _ROW_BLOCK, n)
            rows = torch.arange(start, stop)  # [b]
            score = (unit[start:stop] @ unit.T).abs_()  # [b, N]
            score.diagonal(start).fill_(-1.0)  # entries (r, start + r): no self loops
            if bad.numel():
                score[:, bad] = -1.0  # unusable stocks: below any |corr|, even with threshold 0
            top, nbr = torch.topk(score, k, dim=1)  # [b, k]
            keep = (top >= 0) & ok[start:stop, None]
            sources.append(rows[:, None].expand_as(nbr)[keep])
            targets.append(nbr[keep])
        return torch.cat(sources), torch.cat(targets)

    def _sector_candidates(
        self, unit: torch.Tensor, ok: torch.Tensor, sector: torch.Tensor, idx: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stock's top_k peers of its known sector by |corr|: source, target long [M].

        Peers without a correlation rank after every peer with one, nearest panel index first (ties to the
        later stock), so the choice is deterministic and does not depend on the order of ``stocks``.
        """
        position = torch.from_numpy(idx)  # [N] panel index: the fallback order among peers
        scale = 4.0 * (int(position.max()) + 1)  # keeps the fallback score in (-2, -1]
        order = torch.argsort(sector, stable=True)
        groups, counts = torch.unique_consecutive(sector[order], return_counts=True)
        sources, targets = [], []
        # One small matmul per sector (tens of sectors), not a loop over stocks and no [N, N] matrix.
        for members, group in zip(torch.split(order, counts.tolist()), groups.tolist(), strict=True):
            m = members.numel()
            if group <= 0 or m < 2:  # sector 0 is "unknown": no peers
                continue
            score = (unit[members] @ unit[members].T).abs_()  # [m, m]
            offset = position[members][None, :] - position[members][:, None]  # [m, m]
            fallback = -1.0 - (2 * offset.abs() + (offset < 0).long()).float() / scale
            score = torch.where(ok[members][:, None] & ok[members][None, :], score, fallback)
            score.fill_diagonal_(-math.inf)  # no self loops
            _, nbr = torch.topk(score, min(self.top_k, m - 1), dim=1)  # [m, k], local to the sector
            sources.append(members[:, None].expand_as(nbr).reshape(-1))
            targets.append(members[nbr].reshape(-1))
        if not sources:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        return torch.cat(sources), torch.cat(targets)


def uses_graph(model_cfg: ModelConfig) -> bool:
    """Whether a model config attends over a day graph: the model is ATFT-GAT-FAN (APEX-Ranker reads no
    graph), its GAT is on and the graph mode is not ``none``.

    The one place that decides it, for the data loader, the model and the run doctor alike.
    """
    return (
        str(model_cfg.name) == "atft_gat_fan"
        and bool(model_cfg.gat.enabled)
        and str(model_cfg.graph.mode) != "none"
    )
