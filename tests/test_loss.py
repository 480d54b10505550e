"""MultiHorizonLoss against independent references: numpy / scipy on slow per-day, per-horizon loops."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

import atft.training.loss as loss_module
from atft.config.schema import ListNetConfig, LossConfig, LossWeights
from atft.training.loss import TERMS, MultiHorizonLoss, gradient_shares, soft_rank

QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]


def make_cfg(horizon_weights=(1.0, 1.0), topk=0, **weights) -> LossConfig:
    """A loss config with every term off except the given weights (``all=w`` turns every term on)."""
    every = weights.pop("all", 0.0)
    w = LossWeights(**{name: float(weights.get(name, every)) for name in TERMS})
    return LossConfig(
        horizon_weights=list(horizon_weights),
        weights=w,
        listnet=ListNetConfig(enabled=True, tau=0.5, topk=topk),
    )


@dataclass
class Day:
    """One trading day as numpy arrays: predictions p [n, H], quantiles q [n, H, Q], labels y and mask m."""

    p: np.ndarray
    y: np.ndarray
    m: np.ndarray
    q: np.ndarray | None = None
    sector: np.ndarray | None = None
    beta: np.ndarray | None = None
    stock: np.ndarray | None = None


def make_batch(days: list[Day], day_index=None, junk: float = 0.0, with_beta: bool = True):
    """Stack days as ``collate_days`` does; masked labels are set to ``junk`` (0 in real batches)."""
    sizes = [len(d.y) for d in days]
    n = sum(sizes)
    y = np.concatenate([np.where(d.m, d.y, junk) for d in days])
    point = torch.tensor(np.concatenate([d.p for d in days]), dtype=torch.float32, requires_grad=True)
    if days[0].q is not None:
        q = np.concatenate([d.q for d in days])
    else:
        q = np.concatenate([d.p for d in days])[..., None] + np.linspace(-0.03, 0.03, len(QUANTILES))
    quantiles = torch.tensor(q, dtype=torch.float32, requires_grad=True)
    batch = {
        "y": torch.tensor(y, dtype=torch.float32),
        "y_mask": torch.tensor(np.concatenate([d.m for d in days])),
        "day": torch.repeat_interleave(torch.arange(len(days)), torch.tensor(sizes)),
        "day_ptr": torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long),
        "day_index": torch.tensor(day_index if day_index is not None else np.arange(len(days)) * 10),
        "stock_id": torch.tensor(
            np.concatenate([d.stock if d.stock is not None else np.arange(len(d.y)) for d in days])
        ),
        "sector_id": torch.tensor(
            np.concatenate([d.sector if d.sector is not None else np.zeros(len(d.y), int) for d in days])
        ),
    }
    if with_beta and days[0].beta is not None:
        batch["beta"] = torch.tensor(np.concatenate([d.beta for d in days]), dtype=torch.float32)
    assert batch["y"].shape[0] == n
    return {"point": point, "quantiles": quantiles}, batch


def run(cfg, days, horizons=None, **kw):
    """(module, total, terms) of one forward pass on the stacked days."""
    H = days[0].y.shape[1]
    module = MultiHorizonLoss(horizons or [1, 5, 10, 20][:H], QUANTILES, cfg)
    out, batch = make_batch(days, **kw)
    total, terms = module(out, batch)
    return module, total, terms


def random_days(seed=0, sizes=(6, 9, 4), H=2, scale=0.02) -> list[Day]:
    """Small days with masked labels, label ties, unknown sectors and a missing beta."""
    rng = np.random.default_rng(seed)
    days = []
    for n in sizes:
        y = rng.normal(0, scale, (n, H))
        p = 0.5 * y + rng.normal(0, scale, (n, H))
        m = rng.random((n, H)) > 0.2
        q = p[..., None] + np.sort(rng.normal(0, scale, (n, H, len(QUANTILES))), -1)
        sector = rng.integers(0, 4, n)
        beta = rng.normal(1, 0.3, n)
        days.append(Day(p, y, m, q, sector, beta))
    days[0].m[:, 0] = True
    lowest = np.argsort(days[0].y[:, 0])[:2]
    days[0].y[lowest[1], 0] = days[0].y[lowest[0], 0]  # a tie of labels (at the bottom, away from any top-k)
    if len(days) > 2:
        days[1].beta[2] = np.nan
        days[2].m[:, 1] = np.arange(sizes[2]) < 2  # 2 labels: enough for some terms, too few for correlations
    return days


# --------------------------------------------------------------------------------------------------
# references: one day and horizon at a time, valid labels only, float64
# --------------------------------------------------------------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def ref_huber(p, y, q, delta=0.01):
    e = np.abs(p - y)
    return np.mean(np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta)))


def ref_pinball(p, y, q):
    total = 0.0
    for i in range(len(y)):
        for k, tau in enumerate(QUANTILES):
            e = y[i] - q[i, k]
            total += max(tau * e, (tau - 1) * e)
    return total / (len(y) * len(QUANTILES))


def ref_coverage(p, y, q):
    t = 0.1 * y.std()
    inside = sigmoid((y - q[:, 0]) / t) * sigmoid((q[:, -1] - y) / t)
    return (inside.mean() - (QUANTILES[-1] - QUANTILES[0])) ** 2


def slow_soft_rank(p, temperature):
    tau = temperature * p.std()
    return np.array([0.5 + sum(sigmoid((p[i] - p[j]) / tau) for j in range(len(p))) for i in range(len(p))])


def ref_rankic(p, y, q, temperature=0.1):
    return 1 - stats.pearsonr(slow_soft_rank(p, temperature), stats.rankdata(y)).statistic


def ref_cs_ic(p, y, q):
    return 1 - stats.pearsonr(p, y).statistic


def ref_listnet(p, y, q, tau=0.5, topk=0):
    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    zy, zp = (y - y.mean()) / y.std(), (p - p.mean()) / p.std()
    keep = np.argsort(-y)[:topk] if topk else np.arange(len(y))
    target = softmax(zy[keep] / tau)  # the top-k labels only
    log_pred = np.log(softmax(zp / tau))  # over the whole day
    return -np.sum(target * log_pred[keep])


def ref_variance_floor(p, y, q, floor=0.5):
    return max(0.0, floor - p.std() / y.std()) ** 2


def ref_ranknet_expected(p, y, q):
    """The mean of the pair loss over every ordered pair with different labels (what sampling estimates)."""
    z = (p - p.mean()) / p.std()
    losses = [
        softplus(-(z[i] - z[j]) * np.sign(y[i] - y[j]))
        for i in range(len(y))
        for j in range(len(y))
        if y[i] != y[j]
    ]
    return np.mean(losses)


# the least valid labels a day needs, and whether its labels must not all be equal
RULES = {
    "huber": (ref_huber, 1, False),
    "pinball": (ref_pinball, 1, False),
    "coverage": (ref_coverage, 2, True),
    "rankic": (ref_rankic, 3, True),
    "cs_ic": (ref_cs_ic, 3, True),
    "listnet": (ref_listnet, 2, True),
    "variance_floor": (ref_variance_floor, 2, True),
    "ranknet": (ref_ranknet_expected, 2, True),
}


def ref_day_average(name, days, horizon_weights, day_weights=None, **kw):
    """Mean over the days that define the term (each times its day weight), then the horizon-weighted sum."""
    fn, min_n, need_spread = RULES[name]
    day_weights = np.ones(len(days)) if day_weights is None else day_weights
    per_h = []
    for h in range(days[0].y.shape[1]):
        values = []
        for d, weight in zip(days, day_weights, strict=True):
            v = d.m[:, h]
            if v.sum() < min_n or (need_spread and np.ptp(d.y[v, h]) == 0):
                continue
            values.append(weight * fn(d.p[v, h], d.y[v, h], d.q[v, h], **kw))
        per_h.append(np.mean(values) if values else 0.0)
    hw = np.asarray(horizon_weights, float)
    return float(np.dot(hw / hw.sum(), per_h))


def ref_sharpe(days, horizon_weights):
    per_h = []
    for h in range(days[0].y.shape[1]):
        rets = []
        for d in days:
            v = d.m[:, h]
            if v.sum() < 2:
                continue
            c = d.p[v, h] - d.p[v, h].mean()
            rets.append(np.sum(c / np.abs(c).sum() * d.y[v, h]))
        per_h.append(-np.mean(rets) / np.std(rets, ddof=1) if len(rets) >= 2 else 0.0)
    hw = np.asarray(horizon_weights, float)
    return float(np.dot(hw / hw.sum(), per_h))


def ref_exposure(days, horizon_weights):
    """eta^2 of the predictions by known sector plus corr(p, beta)^2, over every row of the day."""
    per_h = []
    for h in range(days[0].y.shape[1]):
        values = []
        for d in days:
            value, ok = 0.0, False
            known = d.sector > 0
            if known.sum() >= 3:
                p = d.p[known, h]
                between = sum(
                    (d.sector[known] == s).sum() * (p[d.sector[known] == s].mean() - p.mean()) ** 2
                    for s in np.unique(d.sector[known])
                )
                value, ok = value + between / np.sum((p - p.mean()) ** 2), True
            has = np.isfinite(d.beta)
            if has.sum() >= 3:
                value, ok = value + stats.pearsonr(d.p[has, h], d.beta[has]).statistic ** 2, True
            if ok:
                values.append(value)
        per_h.append(np.mean(values) if values else 0.0)
    hw = np.asarray(horizon_weights, float)
    return float(np.dot(hw / hw.sum(), per_h))


# --------------------------------------------------------------------------------------------------
# each term against its reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["huber", "pinball", "coverage", "rankic", "cs_ic", "variance_floor"])
def test_term_matches_reference(name):
    days, hw = random_days(), (1.0, 3.0)
    module, _, terms = run(make_cfg(hw, **{name: 1.0}), days)
    assert list(terms) == [name]
    assert module.last_raw[name] == pytest.approx(ref_day_average(name, days, hw), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("name", ["huber", "coverage", "rankic"])
def test_day_weights_weigh_each_days_term(name):
    days, hw = random_days(), (1.0, 3.0)
    weights = np.array([0.4, 1.7, 0.9])
    module = MultiHorizonLoss([1, 5], QUANTILES, make_cfg(hw, **{name: 1.0}))
    out, batch = make_batch(days)
    batch["day_weight"] = torch.tensor(weights, dtype=torch.float32)
    module(out, batch)
    expected = ref_day_average(name, days, hw, day_weights=weights)
    assert module.last_raw[name] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert expected != pytest.approx(ref_day_average(name, days, hw), rel=1e-3)  # the weights matter


@pytest.mark.parametrize("topk", [0, 3])
def test_listnet_matches_reference(topk):
    days, hw = random_days(), (1.0, 3.0)
    module, _, _ = run(make_cfg(hw, topk=topk, listnet=1.0), days)
    ref = ref_day_average("listnet", days, hw, topk=topk)
    assert module.last_raw["listnet"] == pytest.approx(ref, rel=1e-4)


def test_sharpe_matches_reference():
    days, hw = random_days(sizes=(6, 9, 4, 7)), (1.0, 3.0)
    module, _, _ = run(make_cfg(hw, sharpe=1.0), days)
    assert module.last_raw["sharpe"] == pytest.approx(ref_sharpe(days, hw), rel=1e-4)


def test_sharpe_needs_two_days():
    module, total, _ = run(make_cfg(sharpe=1.0), random_days(sizes=(8,)))
    assert module.last_raw["sharpe"] == 0.0 and total.requires_grad


def test_exposure_matches_reference():
    days, hw = random_days(), (1.0, 3.0)
    module, _, _ = run(make_cfg(hw, exposure=1.0), days)
    assert module.last_raw["exposure"] == pytest.approx(ref_exposure(days, hw), rel=1e-4)


def test_exposure_without_beta_is_the_sector_share():
    days = random_days()
    for d in days:
        d.beta = np.full(len(d.y), np.nan)  # the reference's beta part then never applies
    module, _, _ = run(make_cfg(exposure=1.0), days, with_beta=False)
    assert module.last_raw["exposure"] == pytest.approx(ref_exposure(days, (1, 1)), rel=1e-4)


def test_ranknet_estimates_the_all_pairs_mean_and_is_reproducible():
    days = random_days()
    cfg = dataclasses.replace(make_cfg(ranknet=1.0), ranknet_pairs=20000)
    torch.manual_seed(0)
    module, _, _ = run(cfg, days)
    first = module.last_raw["ranknet"]
    assert first == pytest.approx(ref_day_average("ranknet", days, (1, 1)), abs=0.02)
    torch.manual_seed(0)
    assert run(cfg, days)[0].last_raw["ranknet"] == first
    torch.manual_seed(1)
    assert run(cfg, days)[0].last_raw["ranknet"] != first


def test_huber_by_hand():
    # one day, one horizon: errors 0.005 (quadratic) and 0.03 (linear), delta 0.01
    day = Day(p=np.array([[0.005], [0.03]]), y=np.zeros((2, 1)), m=np.ones((2, 1), bool))
    module, _, _ = run(make_cfg((1.0,), huber=1.0), [day])
    expected = (0.5 * 0.005**2 + 0.01 * (0.03 - 0.005)) / 2
    assert module.last_raw["huber"] == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# soft-rank Spearman
# --------------------------------------------------------------------------------------------------


def test_soft_rank_spearman_converges_to_scipy():
    rng = np.random.default_rng(3)
    y = np.round(rng.normal(size=(40, 1)), 1)  # ties among labels: average ranks
    # predictions at least 0.007 apart (>= 0.05 std): the soft rank is exact once tau is well below the
    # closest gap, and a random draw can hold a near-tie that would need a far smaller tau
    order = stats.rankdata(0.6 * y + rng.normal(size=(40, 1))).reshape(40, 1)
    p = 0.01 * order + rng.uniform(0, 0.003, (40, 1))
    assert np.diff(np.sort(p[:, 0])).min() > 0.05 * p.std()
    exact = stats.spearmanr(p[:, 0], y[:, 0]).statistic
    errors = []
    for temperature in (1e-1, 1e-2, 1e-3):
        cfg = dataclasses.replace(make_cfg((1.0,), rankic=1.0), rankic_temperature=temperature)
        module, _, _ = run(cfg, [Day(p, y, np.ones_like(y, bool))])
        errors.append(abs((1 - module.last_raw["rankic"]) - exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_soft_rank_in_chunks_matches_one_block(monkeypatch):
    torch.manual_seed(0)
    p = torch.randn(5, 30, dtype=torch.float32, requires_grad=True)
    w = (torch.rand(5, 30) > 0.3).float()
    g = torch.randn(5, 30)
    whole = soft_rank(p, w, 0.1 * p.std(-1))
    (grad_whole,) = torch.autograd.grad((whole * g).sum(), p)
    monkeypatch.setattr(loss_module, "SOFT_RANK_BUDGET", 2 * 30 * 30)  # 2 rows a chunk, recomputed
    chunked = soft_rank(p, w, 0.1 * p.std(-1))
    (grad_chunked,) = torch.autograd.grad((chunked * g).sum(), p)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad_chunked, grad_whole)


# --------------------------------------------------------------------------------------------------
# masking and per-day computation
# --------------------------------------------------------------------------------------------------


def test_masked_labels_never_enter_a_term():
    days = random_days(sizes=(6, 9, 4, 7))
    cfg = make_cfg(all=1.0, topk=3)
    values = []
    for junk in (0.0, 1e3):
        torch.manual_seed(0)
        module, _, _ = run(cfg, days, junk=junk)
        values.append(module.last_raw)
    assert values[0].keys() == set(TERMS)
    for name in TERMS:
        assert values[1][name] == pytest.approx(values[0][name], rel=1e-5, abs=1e-7), name


DAY_AVERAGED = ["huber", "pinball", "coverage", "rankic", "cs_ic", "listnet", "variance_floor", "exposure"]


@pytest.mark.parametrize("name", DAY_AVERAGED)
def test_terms_are_per_day_not_pooled(name):
    rng = np.random.default_rng(7)
    days = []
    for n, shift in ((7, 0.0), (12, 0.05)):
        y = rng.normal(0, 0.02, (n, 1)) + shift  # day 2 moves up as a whole: pooling would see that move
        p = 0.3 * y + rng.normal(0, 0.005, (n, 1)) + 0.7 * shift  # spread below the floor within a day
        q = p[..., None] + np.linspace(-0.03, 0.03, 5)
        days.append(Day(p, y, np.ones_like(y, bool), q, rng.integers(0, 3, n), rng.normal(1, 0.3, n)))
    fields = ("p", "y", "m", "q", "sector", "beta")
    pooled = Day(*(np.concatenate([getattr(d, f) for d in days]) for f in fields))  # one day of all rows
    cfg = make_cfg((1.0,), **{name: 1.0})
    both = run(cfg, days)[0].last_raw[name]
    alone = [run(cfg, [d])[0].last_raw[name] for d in days]
    assert both == pytest.approx(np.mean(alone), rel=1e-5)
    assert abs(both - run(cfg, [pooled])[0].last_raw[name]) > 0.01 * abs(both) + 1e-6


# --------------------------------------------------------------------------------------------------
# gradients, direction, edge cases
# --------------------------------------------------------------------------------------------------


def test_every_term_has_finite_gradients_on_edge_cases():
    days = random_days(sizes=(6, 9, 4, 1))
    days[1].y[:, 1] = 0.01  # a day whose labels are all equal at horizon 2
    days[3].m[:] = True  # a day of one stock
    torch.manual_seed(0)
    module = MultiHorizonLoss([1, 5], QUANTILES, make_cfg(all=1.0, topk=3))
    out, batch = make_batch(days)
    total, terms = module(out, batch)
    assert set(terms) == set(TERMS) and torch.isfinite(total)
    for name, term in terms.items():
        grads = torch.autograd.grad(
            term, [out["point"], out["quantiles"]], retain_graph=True, allow_unused=True
        )
        assert all(g is None or torch.isfinite(g).all() for g in grads), name


def test_no_valid_label_gives_zero_terms_attached_to_the_graph():
    days = random_days()
    for d in days:
        d.m[:] = False
    module, total, terms = run(make_cfg(all=1.0), days)
    for name, term in terms.items():
        if name in ("exposure", "turnover"):  # they need no label
            continue
        assert term.item() == 0.0 and term.requires_grad, name
    assert torch.isfinite(total)


def aligned_and_shuffled(seed=0, n_days=8, n=50):
    rng = np.random.default_rng(seed)
    aligned, shuffled = [], []
    for _ in range(n_days):
        y = rng.normal(0, 0.02, (n, 1))
        p = y + rng.normal(0, 0.002, (n, 1))
        m = np.ones_like(y, bool)
        aligned.append(Day(p, y, m))
        shuffled.append(Day(rng.permutation(p), y, m))
    return aligned, shuffled


@pytest.mark.parametrize("name", ["huber", "rankic", "cs_ic", "sharpe", "listnet", "ranknet"])
def test_aligned_predictions_score_better_than_shuffled(name):
    aligned, shuffled = aligned_and_shuffled()
    cfg = make_cfg((1.0,), topk=5, **{name: 1.0})
    torch.manual_seed(0)
    good = run(cfg, aligned)[0].last_raw[name]
    torch.manual_seed(0)
    bad = run(cfg, shuffled)[0].last_raw[name]
    assert good < bad


def test_variance_floor_penalises_collapsed_predictions():
    aligned, _ = aligned_and_shuffled()
    collapsed = [Day(np.zeros_like(d.p), d.y, d.m) for d in aligned]
    cfg = make_cfg((1.0,), variance_floor=1.0)
    assert run(cfg, aligned)[0].last_raw["variance_floor"] == 0.0
    # std(0) is sqrt(EPS) = 1e-6, not 0: the ratio is 5e-5, not 0
    assert run(cfg, collapsed)[0].last_raw["variance_floor"] == pytest.approx(0.5**2, abs=1e-4)


# --------------------------------------------------------------------------------------------------
# turnover and its memory
# --------------------------------------------------------------------------------------------------


def turnover_days():
    rng = np.random.default_rng(5)
    first = Day(rng.normal(size=(5, 1)), rng.normal(size=(5, 1)), np.ones((5, 1), bool), stock=np.arange(5))
    # the next day: stock 4 left, stock 9 came in, rows in another order
    stock = np.array([3, 9, 0, 2, 1])
    second = Day(rng.normal(size=(5, 1)), rng.normal(size=(5, 1)), np.ones((5, 1), bool), stock=stock)
    return first, second


def ref_turnover(first, second):
    def weights(d):
        c = d.p[:, 0] - d.p[:, 0].mean()
        return dict(zip(d.stock, c / np.abs(c).sum(), strict=True))

    w0, w1 = weights(first), weights(second)
    return sum(abs(w1[s] - w0[s]) for s in w1 if s in w0)


def test_turnover_within_a_batch():
    first, second = turnover_days()
    module, _, terms = run(make_cfg((1.0,), turnover=1.0), [first, second], day_index=[10, 11])
    # only the second day has a previous day; the first is skipped, not counted as 0
    assert module.last_raw["turnover"] == pytest.approx(ref_turnover(first, second), rel=1e-5)
    # days 10 and 12 are not consecutive: nothing to compare
    module, _, _ = run(make_cfg((1.0,), turnover=1.0), [first, second], day_index=[10, 12])
    assert module.last_raw["turnover"] == 0.0


def test_turnover_memory_across_batches():
    first, second = turnover_days()
    module = MultiHorizonLoss([1], QUANTILES, make_cfg((1.0,), turnover=1.0))
    out, batch = make_batch([first], day_index=[10])
    module(out, batch)
    assert module.last_raw["turnover"] == 0.0  # empty memory
    out, batch = make_batch([second], day_index=[11])
    _, terms = module(out, batch)
    assert module.last_raw["turnover"] == pytest.approx(ref_turnover(first, second), rel=1e-5)
    terms["turnover"].backward()
    assert torch.isfinite(out["point"].grad).all() and out["point"].grad.abs().sum() > 0

    # in eval mode the memory is read but not written: day 12 is never remembered
    module.eval()
    module(*make_batch([first], day_index=[12]))
    module.train()
    module(*make_batch([second], day_index=[13]))
    assert module.last_raw["turnover"] == 0.0


# --------------------------------------------------------------------------------------------------
# weights, totals, gradient shares, precision
# --------------------------------------------------------------------------------------------------


def test_total_is_the_sum_of_weighted_terms():
    days = random_days(sizes=(6, 9, 4, 7))
    torch.manual_seed(0)
    module, total, terms = run(make_cfg(all=1.0), days)
    torch.testing.assert_close(total, sum(terms.values()))
    raw = module.last_raw

    cfg = make_cfg(all=1.0)
    cfg.weights.huber, cfg.weights.rankic = 2.0, 0.5
    torch.manual_seed(0)
    module, _, doubled = run(cfg, days)
    assert module.last_raw == pytest.approx(raw)
    assert doubled["huber"].item() == pytest.approx(2 * terms["huber"].item(), rel=1e-6)
    assert doubled["rankic"].item() == pytest.approx(0.5 * terms["rankic"].item(), rel=1e-6)
    assert doubled["cs_ic"].item() == pytest.approx(terms["cs_ic"].item(), rel=1e-6)


def test_horizon_weights_are_normalised():
    days = random_days()
    value = {hw: run(make_cfg(hw, huber=1.0, cs_ic=1.0), days)[2] for hw in [(1, 0), (0, 1), (1, 3)]}
    for name in ("huber", "cs_ic"):
        mixed = 0.25 * value[(1, 0)][name] + 0.75 * value[(0, 1)][name]
        assert value[(1, 3)][name].item() == pytest.approx(mixed.item(), rel=1e-6)


def test_inactive_terms_and_omegaconf_config():
    cfg = OmegaConf.structured(LossConfig)
    cfg.weights.listnet = 1.0  # weight without listnet.enabled: still off
    module, total, terms = run(cfg, random_days(H=4))
    assert set(terms) == {"huber", "pinball", "coverage", "rankic", "variance_floor"}
    assert set(module.last_raw) == set(terms)
    with pytest.raises(ValueError, match="horizon_weights"):
        MultiHorizonLoss([1, 5], QUANTILES, cfg)


class TinyHead(torch.nn.Module):
    """A linear point head and ascending quantiles around it: enough to have outputs that are not leaves."""

    def __init__(self, features=4, H=2):
        super().__init__()
        self.point = torch.nn.Linear(features, H)
        self.spread = torch.nn.Linear(features, H * len(QUANTILES))

    def forward(self, x):
        point = self.point(x)  # [N, H]
        steps = torch.nn.functional.softplus(self.spread(x)).view(len(x), -1, len(QUANTILES)) * 0.01
        quantiles = point.unsqueeze(-1) + steps.cumsum(-1) - steps.sum(-1, keepdim=True) / 2  # [N, H, Q]
        return {"point": point, "quantiles": quantiles}


def test_gradient_shares():
    torch.manual_seed(0)
    days = random_days(sizes=(30, 30))
    _, batch = make_batch(days)
    head = TinyHead()
    x = torch.randn(60, 4)
    module = MultiHorizonLoss([1, 5], QUANTILES, make_cfg(huber=1e-3, pinball=1e-3, rankic=10.0))

    out = head(x)
    total, terms = module(out, batch)
    shares = gradient_shares(terms, [out["point"], out["quantiles"]])
    assert set(shares) == set(terms)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["rankic"] > 0.9
    total.backward()  # the graph is still there
    with_shares = [p.grad.clone() for p in head.parameters()]

    head.zero_grad()
    out = head(x)
    module(out, batch)[0].backward()
    for a, b in zip(with_shares, [p.grad for p in head.parameters()], strict=True):
        torch.testing.assert_close(a, b)  # gradient_shares left no trace in .grad
    assert gradient_shares({"huber": torch.zeros(())}, [out["point"]]) == {"huber": 0.0}


def test_bf16_autocast():
    torch.manual_seed(0)
    days = random_days(sizes=(30, 30))
    _, batch = make_batch(days)
    head = TinyHead()
    module = MultiHorizonLoss([1, 5], QUANTILES, make_cfg(all=1.0, topk=5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(60, 4))
        assert out["point"].dtype == torch.bfloat16
        total, terms = module(out, batch)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(np.isfinite(v) for v in module.last_raw.values())
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
