"""The multi-horizon training loss: a weighted sum of point, quantile, ranking and portfolio terms.

A batch stacks a few trading days (``day`` / ``day_ptr``, see ``atft.training.datamodule``). Ranking is
learned within a day, so every cross-sectional statistic (mean, std, rank, correlation, softmax) is taken
over one day's stocks, never over the mixed days of a batch. To do that without a Python loop per day, the
rows are padded into a ``[D, H, M]`` layout (days x horizons x the largest day's stock count) with a mask,
and every term reduces over the last axis.

Each term gives one value per (day, horizon) and a flag saying whether that day has enough valid labels to
define it; the term of a horizon is the mean over its flagged days (each day counts once, whatever its
number of stocks), and the horizons are combined with the normalised ``loss.horizon_weights``. Masked
labels (``y_mask`` False) never enter a term. A training batch may carry ``day_weight`` [D] (recency weighting,
``train.recency_halflife_days``): each day's value is then weighted in that mean (the Sharpe term, a statistic
over the batch's days, is not). The exact definitions are in ``docs/loss.md``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from atft.config.schema import LossConfig

# The term names, in the order they are computed and reported; they are also the ``loss.weights`` keys.
TERMS = (
    "huber",
    "pinball",
    "coverage",
    "rankic",
    "cs_ic",
    "sharpe",
    "listnet",
    "ranknet",
    "variance_floor",
    "exposure",
    "turnover",
)

# Added to a variance under a square root: keeps the gradient finite when a day's predictions are constant,
# and is far below the variance of daily returns (~1e-4), so it does not bias the terms.
EPS = 1e-12
# Sigmoid temperature of the soft inside-indicator of the coverage term, in units of the day's label std.
COVERAGE_SOFTNESS = 0.1
# Pairwise elements per soft-rank chunk (4M float32 = 16 MB); larger days are ranked a few at a time.
SOFT_RANK_BUDGET = 2**22
# Logit given to padded / excluded entries of a softmax: finite, so that 0 * logit never makes a NaN.
_NEG = -1e9


# --------------------------------------------------------------------------------------------------
# masked statistics along the last axis (w is a float 0/1 mask of the same shape)
# --------------------------------------------------------------------------------------------------


def _mean(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum(-1) / w.sum(-1).clamp_min(1)


def _center(x: Tensor, w: Tensor) -> Tensor:
    """x minus its masked mean, 0 where masked."""
    return (x - _mean(x, w).unsqueeze(-1)) * w


def _std(x: Tensor, w: Tensor) -> Tensor:
    """Population std (ddof 0); ddof cancels in every ratio it is used in."""
    xc = _center(x, w)
    return torch.sqrt(xc.square().sum(-1) / w.sum(-1).clamp_min(1) + EPS)


def _zscore(x: Tensor, w: Tensor) -> Tensor:
    return _center(x, w) / _std(x, w).unsqueeze(-1)


def _pearson(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    ac, bc = _center(a, w), _center(b, w)
    n = w.sum(-1).clamp_min(1)
    cov = (ac * bc).sum(-1) / n
    var_a, var_b = ac.square().sum(-1) / n, bc.square().sum(-1) / n
    return cov / (torch.sqrt(var_a + EPS) * torch.sqrt(var_b + EPS))


def _average_ranks(y: Tensor, valid: Tensor) -> Tensor:
    """Exact 1-based ranks of y among the valid entries of each row of the last axis, ties averaged."""
    y = torch.where(valid, y, torch.inf).contiguous()  # masked entries sort last and rank no valid one
    ys = y.sort(-1).values
    below = torch.searchsorted(ys, y, right=False)  # entries strictly smaller
    upto = torch.searchsorted(ys, y, right=True)  # entries smaller or equal
    return (below + upto + 1).float() / 2  # mean of the ranks below+1 .. upto


def soft_rank(p: Tensor, w: Tensor, tau: Tensor) -> Tensor:
    """Differentiable rank of each entry of ``p`` among the entries where ``w`` is 1 (last axis).

    ``rank_i = 0.5 + sum_j w_j sigmoid((p_i - p_j) / tau)``: the term j = i adds 0.5, so as tau -> 0 this
    tends to the 1-based average rank (ties get half of each other). ``p``, ``w``: [G, M]; ``tau``: [G].
    Pairwise, O(M^2) per row: rows are processed in chunks of ``SOFT_RANK_BUDGET`` pairwise elements, and,
    when there is more than one chunk, recomputed in backward (checkpoint) so memory stays one chunk's.
    """
    G, M = p.shape

    def block(p: Tensor, w: Tensor, tau: Tensor) -> Tensor:
        p = p / tau.unsqueeze(-1)  # scale once per row, not once per pair
        s = torch.sigmoid(p.unsqueeze(-1) - p.unsqueeze(-2))  # [g, M, M]: sigmoid((p_i - p_j) / tau)
        return 0.5 + torch.bmm(s, w.unsqueeze(-1)).squeeze(-1)  # [g, M]

    step = max(1, SOFT_RANK_BUDGET // (M * M))
    if step >= G:
        return block(p, w, tau)
    recompute = torch.is_grad_enabled() and (p.requires_grad or tau.requires_grad)
    parts = []
    for a in range(0, G, step):
        args = (p[a : a + step], w[a : a + step], tau[a : a + step])
        parts.append(checkpoint(block, *args, use_reentrant=False) if recompute else block(*args))
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------
# the day layout
# --------------------------------------------------------------------------------------------------


class _Layout:
    """Where each row of a day-stacked batch lies in the padded ``[D, M]`` layout."""

    def __init__(self, day: Tensor, day_ptr: Tensor) -> None:
        sizes = day_ptr[1:] - day_ptr[:-1]  # [D]
        self.D = sizes.numel()
        self.M = max(int(sizes.max()) if self.D else 0, 1)
        pos = torch.arange(day.numel(), device=day.device) - day_ptr[day]  # [N] row within its day
        self.flat = day * self.M + pos  # [N] index into the flattened [D * M]
        self.exists = self.pad(torch.ones(day.numel(), dtype=torch.bool, device=day.device))  # [D, M]

    def pad(self, x: Tensor) -> Tensor:
        """[N, ...] -> [D, M, ...], zeros where a day has no row; differentiable."""
        out = x.new_zeros((self.D * self.M, *x.shape[1:]))
        return out.index_copy(0, self.flat, x).view(self.D, self.M, *x.shape[1:])

    def unpad(self, x: Tensor) -> Tensor:
        """[D, M, ...] -> [N, ...]."""
        return x.reshape(self.D * self.M, *x.shape[2:])[self.flat]


class _Batch:
    """The padded tensors every term reads: predictions, labels and masks as [D, H, M] (float32)."""

    def __init__(self, out: dict[str, Tensor], batch: dict[str, Any]) -> None:
        self.layout = lay = _Layout(batch["day"], batch["day_ptr"])
        self.point = out["point"].float()  # [N, H]
        self.P = lay.pad(self.point).transpose(1, 2)  # [D, H, M]
        self.V = lay.pad(batch["y_mask"].bool()).transpose(1, 2)  # [D, H, M] valid labels
        y = lay.pad(batch["y"].float()).transpose(1, 2)
        self.Y = torch.where(self.V, y, 0.0)  # [D, H, M]: masked labels never reach a term
        self.W = self.V.float()
        self.n = self.W.sum(-1)  # [D, H] valid labels of each day and horizon
        y_hi = torch.where(self.V, self.Y, -torch.inf).amax(-1)
        y_lo = torch.where(self.V, self.Y, torch.inf).amin(-1)
        # a day whose labels are all equal has no cross-section to rank or scale against
        self.y_spread = (self.n >= 2) & (y_hi > y_lo)  # [D, H]
        self.E = lay.exists.unsqueeze(1).expand_as(self.V)  # [D, H, M] rows that exist (labelled or not)
        weight = batch.get("day_weight")  # [D] or None: the recency weight of each day
        self.day_weight = None if weight is None else weight.float().unsqueeze(1)  # [D, 1]
        self._quantiles = out.get("quantiles")

    @functools.cached_property
    def Q(self) -> Tensor:
        """The quantile outputs as [D, H, M, Q] (padded once, for pinball and coverage)."""
        return self.layout.pad(self._quantiles.float()).transpose(1, 2)


# --------------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------------


class MultiHorizonLoss(nn.Module):
    """The training objective: per-day terms, averaged over days, weighted over horizons and over terms.

    ``cfg`` is the ``loss`` section of the config (``LossConfig`` or its DictConfig), read by attribute.
    A term is active when its weight is > 0 (ListNet: also ``listnet.enabled``; coverage: also at least two
    quantiles); inactive terms are not computed. ``forward`` returns ``(total, terms)`` where ``terms``
    holds each active term's weighted contribution and ``total`` their sum; ``last_raw`` keeps the
    unweighted values of the last call, for logging.

    The turnover term keeps a memory (non-persistent buffers, so not in checkpoints) of each stock's last
    portfolio weight and the calendar day it was made on; it is updated after each forward in training mode.
    """

    def __init__(self, horizons: list[int], quantiles: list[float], cfg: LossConfig) -> None:
        super().__init__()
        self.horizons = list(horizons)
        self.quantile_levels = [float(q) for q in quantiles]
        hw = [float(x) for x in cfg.horizon_weights]
        if len(hw) != len(self.horizons):
            raise ValueError(f"loss.horizon_weights has {len(hw)} entries for {len(self.horizons)} horizons")
        if sum(hw) <= 0:
            raise ValueError("loss.horizon_weights must not all be 0")
        self.register_buffer("hw", torch.tensor(hw) / sum(hw), persistent=False)  # [H], sums to 1
        self.register_buffer("q", torch.tensor(self.quantile_levels), persistent=False)  # [Q]

        self.huber_delta = float(cfg.huber_delta)
        self.scale_floor = float(cfg.scale_floor)
        self.rankic_temperature = float(cfg.rankic_temperature)
        self.ranknet_pairs = int(cfg.ranknet_pairs)
        self.listnet_tau = float(cfg.listnet.tau)
        self.listnet_topk = int(cfg.listnet.topk)
        # nominal share of labels inside [q_lowest, q_highest]: 0.90 for the default quantiles
        self.nominal_coverage = self.quantile_levels[-1] - self.quantile_levels[0]

        weights = {name: float(getattr(cfg.weights, name)) for name in TERMS}
        if not cfg.listnet.enabled:
            weights["listnet"] = 0.0
        if weights["coverage"] > 0 and len(self.quantile_levels) < 2:
            warnings.warn("loss: coverage needs at least two quantiles; the term is off", stacklevel=2)
            weights["coverage"] = 0.0
        self.weights = {name: w for name, w in weights.items() if w > 0}  # the active terms, in TERMS order
        self.last_raw: dict[str, float] = {}

        # turnover memory: last portfolio weight of each stock_id [S, H] and its calendar day [S] (-2: none)
        self.register_buffer("mem_weight", torch.zeros(0, len(self.horizons)), persistent=False)
        self.register_buffer("mem_day", torch.zeros(0, dtype=torch.long), persistent=False)

    def forward(self, out: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        # the statistics below (std, softmax, correlations of ranks) need float32: run them outside autocast
        with torch.autocast(device_type=out["point"].device.type, enabled=False):
            b = _Batch(out, batch)
            raw: dict[str, Tensor] = {}
            for name in self.weights:
                raw[name] = getattr(self, f"_{name}")(b, batch)
        terms = {name: self.weights[name] * value for name, value in raw.items()}
        total = sum(terms.values()) if terms else b.point.sum() * 0
        # one device sync for all the logged values
        values = torch.stack([v.detach() for v in raw.values()]).tolist() if raw else []
        self.last_raw = dict(zip(raw, values, strict=True))
        return total, terms

    def _reduce(self, b: _Batch, value: Tensor, ok: Tensor) -> Tensor:
        """Per-(day, horizon) values [D, H] -> scalar: mean over the ok days, then horizon-weighted.

        With day weights (``train.recency_halflife_days``) each day's value is multiplied by its weight
        before the mean; the weights average 1 over the training days, so the loss keeps its scale.
        A horizon with no ok day contributes 0; ``where`` keeps the result attached to the graph.
        """
        if b.day_weight is not None:
            value = value * b.day_weight  # [D, H] * [D, 1]
        per_h = torch.where(ok, value, 0.0).sum(0) / ok.sum(0).clamp_min(1)  # [H]
        return (self.hw * per_h).sum()

    # --- point and quantile terms -----------------------------------------------------------------

    def _huber(self, b: _Batch, batch: dict) -> Tensor:
        loss = F.huber_loss(b.P, b.Y, reduction="none", delta=self.huber_delta)  # [D, H, M]
        return self._reduce(b, _mean(loss, b.W), b.n >= 1)

    def _pinball(self, b: _Batch, batch: dict) -> Tensor:
        err = b.Y.unsqueeze(-1) - b.Q  # [D, H, M, Q]
        loss = torch.maximum(self.q * err, (self.q - 1) * err).mean(-1)  # [D, H, M]
        return self._reduce(b, _mean(loss, b.W), b.n >= 1)

    def _coverage(self, b: _Batch, batch: dict) -> Tensor:
        lo, hi = b.Q[..., 0], b.Q[..., -1]  # [D, H, M]
        t = (COVERAGE_SOFTNESS * _std(b.Y, b.W)).unsqueeze(-1)  # [D, H, 1]
        inside = torch.sigmoid((b.Y - lo) / t) * torch.sigmoid((hi - b.Y) / t)  # soft 1[lo <= y <= hi]
        penalty = (_mean(inside, b.W) - self.nominal_coverage).square()  # [D, H]
        return self._reduce(b, penalty, b.y_spread)

    # --- cross-sectional ranking terms ------------------------------------------------------------

    def _rankic(self, b: _Batch, batch: dict) -> Tensor:
        D, H, M = b.P.shape
        # tau relative to the day's prediction spread: the soft rank (and the loss) is scale-free
        tau = self.rankic_temperature * _std(b.P, b.W)  # [D, H]
        rank_p = soft_rank(b.P.reshape(D * H, M), b.W.reshape(D * H, M), tau.reshape(-1)).view(D, H, M)
        rank_y = _average_ranks(b.Y, b.V)
        rho = _pearson(rank_p, rank_y, b.W)  # Spearman: Pearson of the ranks
        return self._reduce(b, 1 - rho, (b.n >= 3) & b.y_spread)

    def _cs_ic(self, b: _Batch, batch: dict) -> Tensor:
        return self._reduce(b, 1 - _pearson(b.P, b.Y, b.W), (b.n >= 3) & b.y_spread)

    def _listnet(self, b: _Batch, batch: dict) -> Tensor:
        target_set = b.V
        if self.listnet_topk > 0:
            # top-k: the target keeps only the k best labels of the day; the prediction's softmax is still
            # over the whole day, so any other stock ranked above them takes probability away and is pushed down
            k = min(self.listnet_topk, b.Y.shape[-1])
            top = torch.where(b.V, b.Y, -torch.inf).topk(k, dim=-1).indices
            target_set = torch.zeros_like(b.V).scatter(-1, top, True) & b.V
        target = torch.softmax(torch.where(target_set, _zscore(b.Y, b.W) / self.listnet_tau, _NEG), -1)
        log_p = torch.log_softmax(torch.where(b.V, _zscore(b.P, b.W) / self.listnet_tau, _NEG), -1)
        ce = -torch.where(target_set, target * log_p, 0.0).sum(-1)  # [D, H]
        return self._reduce(b, ce, b.y_spread)

    def _ranknet(self, b: _Batch, batch: dict) -> Tensor:
        D, H, M = b.P.shape
        G, K = D * H, self.ranknet_pairs
        z = _zscore(b.P, b.W).reshape(G, M)
        y, valid = b.Y.reshape(G, M), b.V.reshape(G, M)
        n = valid.sum(-1)  # [G]
        # valid rows first, so that a uniform index below n picks a uniform valid row
        order = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # [G, M]
        u = torch.rand(2, G, K, device=z.device)  # the global generator: reproducible under manual_seed
        at = torch.minimum((u * n[:, None]).long(), (n[:, None] - 1).clamp_min(0))  # [2, G, K]
        i, j = order.gather(-1, at[0]), order.gather(-1, at[1])  # [G, K]
        sign = torch.sign(y.gather(-1, i) - y.gather(-1, j))
        keep = (sign != 0) & (n >= 2)[:, None]  # equal labels (and i == j) carry no order
        pair = F.softplus(-(z.gather(-1, i) - z.gather(-1, j)) * sign)  # log(1 + exp(-s * dz))
        value = _mean(pair, keep.float()).view(D, H)
        return self._reduce(b, value, keep.any(-1).view(D, H))

    # --- portfolio and scale terms ----------------------------------------------------------------

    @staticmethod
    def _portfolio(p: Tensor, w: Tensor) -> Tensor:
        """Demeaned predictions scaled to unit gross exposure (sum |w| = 1) over the rows where w is 1."""
        c = _center(p, w)
        return c / c.abs().sum(-1, keepdim=True).clamp_min(EPS)

    def _sharpe(self, b: _Batch, batch: dict) -> Tensor:
        ret = (self._portfolio(b.P, b.W) * b.Y).sum(-1)  # [D, H] daily long-short return
        ok = b.n >= 2
        k = ok.sum(0)  # [H] days with a return
        mean = torch.where(ok, ret, 0.0).sum(0) / k.clamp_min(1)
        var = torch.where(ok, (ret - mean).square(), 0.0).sum(0) / (k - 1).clamp_min(1)  # ddof 1
        sharpe = mean / torch.sqrt(var + EPS)  # [H]
        return (self.hw * torch.where(k >= 2, -sharpe, 0.0)).sum()

    def _variance_floor(self, b: _Batch, batch: dict) -> Tensor:
        ratio = _std(b.P, b.W) / _std(b.Y, b.W)  # [D, H]
        return self._reduce(b, F.relu(self.scale_floor - ratio).square(), b.y_spread)

    def _exposure(self, b: _Batch, batch: dict) -> Tensor:
        lay, D, H, M = b.layout, *b.P.shape
        # sector: share of the day's prediction variance explained by sector means (eta^2), known sectors only
        sector = lay.pad(batch["sector_id"].long())  # [D, M]
        known = (b.E & (sector > 0).unsqueeze(1)).float()  # [D, H, M]
        pc = _center(b.P, known)
        idx = sector.unsqueeze(1).expand(D, H, M)
        n_s = torch.zeros(D, H, int(sector.max()) + 1, device=pc.device)
        sums = n_s.scatter_add(-1, idx, pc)  # [D, H, S]: n_s * (sector mean - day mean)
        n_s = n_s.scatter_add(-1, idx, known)
        between = (sums.square() / n_s.clamp_min(1)).sum(-1)  # sum_s n_s (mean_s - mean)^2
        eta2 = between / (pc.square().sum(-1) + EPS)
        ok = known.sum(-1) >= 3
        value = torch.where(ok, eta2, 0.0)
        # beta: squared correlation of the predictions with the stocks' market beta, where beta is known
        if batch.get("beta") is not None:
            beta = lay.pad(batch["beta"].float()).unsqueeze(1).expand(D, H, M)
            has = b.E & torch.isfinite(beta)
            beta = torch.where(has, beta, 0.0)
            spread = torch.where(has, beta, -torch.inf).amax(-1) > torch.where(has, beta, torch.inf).amin(-1)
            ok_beta = (has.sum(-1) >= 3) & spread
            value = value + torch.where(ok_beta, _pearson(b.P, beta, has.float()).square(), 0.0)
            ok = ok | ok_beta
        return self._reduce(b, value, ok)

    def _turnover(self, b: _Batch, batch: dict) -> Tensor:
        lay = b.layout
        # [N, H] portfolio weights over all the day's rows (labelled or not)
        w_rows = lay.unpad(self._portfolio(b.P, b.E.float()).transpose(1, 2))
        stock = batch["stock_id"].long()
        cal = batch["day_index"].long().to(stock.device)[batch["day"]]  # [N] calendar day of each row
        self._grow_memory(int(stock.max()) + 1 if stock.numel() else 0, w_rows.device)

        # the stock's weight on the previous calendar day: from this batch (with gradient) if the batch holds
        # that day, else from the memory (detached) if it was made on exactly that day
        S = self.mem_day.numel()
        key = cal * S + stock  # [N] unique per (day, stock)
        sorted_key, order = key.sort()
        want = (cal - 1) * S + stock
        at = torch.searchsorted(sorted_key, want).clamp_max(max(key.numel() - 1, 0))
        in_batch = sorted_key[at] == want
        from_memory = ~in_batch & (self.mem_day[stock] == cal - 1)
        prev = torch.where(in_batch[:, None], w_rows[order[at]], self.mem_weight[stock])  # [N, H]
        has_prev = (in_batch | from_memory)[:, None].float()  # [N, 1]

        moved = lay.pad((w_rows - prev).abs() * has_prev).sum(1)  # [D, H]: sum |w_d - w_{d-1}| per day
        matched = lay.pad(has_prev).sum(1)  # [D, 1] stocks with a previous weight
        loss = self._reduce(b, moved, matched >= 1)

        if self.training:
            self._remember(stock, cal, w_rows.detach())
        return loss

    def _grow_memory(self, size: int, device: torch.device) -> None:
        """Make the turnover memory hold stock ids below ``size`` (and live on ``device``)."""
        old = self.mem_day.numel()
        if size <= old and self.mem_day.device == device:
            return
        size = old if size <= old else max(size, 2 * old)  # doubling: few regrowths as new ids appear
        weight = torch.zeros(size, len(self.horizons), device=device)
        day = torch.full((size,), -2, dtype=torch.long, device=device)  # -2: never a "day before" (>= -1)
        weight[:old], day[:old] = self.mem_weight.to(device), self.mem_day.to(device)
        self.mem_weight, self.mem_day = weight, day

    def _remember(self, stock: Tensor, cal: Tensor, weight: Tensor) -> None:
        """Store each stock's weight of its latest calendar day in this batch."""
        latest = torch.full_like(self.mem_day, -2).scatter_reduce(0, stock, cal, "amax")
        last = cal == latest[stock]  # one row per stock: a stock appears at most once a day
        self.mem_weight[stock[last]] = weight[last]
        self.mem_day[stock[last]] = cal[last]


def gradient_shares(terms: dict[str, Tensor], outputs: list[Tensor]) -> dict[str, float]:
    """Each term's share of the gradient reaching the model's outputs (e.g. the heads' point and quantiles).

    ``norm_i`` is the L2 norm, over all ``outputs`` together, of d term_i / d outputs; the share is
    ``norm_i / sum_j norm_j`` (all 0 when every norm is 0). Uses ``torch.autograd.grad`` with
    ``retain_graph=True``, so it fills no ``.grad`` and a later ``total.backward()`` still works.
    """
    norms = {}
    for name, term in terms.items():
        if not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, outputs, retain_graph=True, allow_unused=True)
        norms[name] = sum(float(g.double().square().sum()) for g in grads if g is not None) ** 0.5
    total = sum(norms.values())
    return {name: (norm / total if total > 0 else 0.0) for name, norm in norms.items()}
