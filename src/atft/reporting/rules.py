"""Root-cause rules of the run doctor: a table of rules, each recognizing one failure from the measurements.

A rule is one row of ``RULES``: its name, title and severity, a check that reads the ``Facts`` that
``atft.reporting.doctor`` measured and says whether the rule fired and on what evidence (in numbers), and
an advice builder that, for a fired rule, says what to do and why, ending in a concrete ``atft train``
command line (the run's own config plus dotted overrides), so that the fix is one copy-paste away.
``evaluate`` runs the table and turns each row's result into a ``Finding``.

Rules run in ``RULES`` order, which is also the tie-break between findings of the same severity: causes
(non-finite values, collapse, inverted signal, bad data, broken gradients) come before their symptoms
(plateau, RMSE). Every threshold is a key of ``DEFAULT_THRESHOLDS``, documented in docs/doctor.md.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from atft.reporting.facts import SEVERITIES, Facts, Finding, TermFacts, ranked
from atft.reporting.numbers import finite, fmt

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RULES",
    "SEVERITIES",
    "Advice",
    "Check",
    "Finding",
    "Rule",
    "evaluate",
    "healthy_recommendation",
    "ranked",
    "train_command",
]

DEFAULT_THRESHOLDS: dict[str, Any] = {
    # collapse: prediction spread std(pred)/std(label) per day below this, at any horizon
    "collapse_scale": 0.05,
    # negative_ic: RankIC below this at every horizon
    "negative_ic_max": 0.0,
    # rmse_worse_than_naive: RMSE / RMSE of always predicting 0 above this, at any horizon
    "rmse_naive_ratio": 1.0,
    # plateau: a val-loss gain under this share of the best so far is not progress ...
    "plateau_min_improvement": 1e-3,
    # ... and this many epochs without progress ...
    "plateau_epochs": 5,
    # ... over which val loss moved by at most this share (more, and it is overfitting or noise)
    "plateau_flat_change": 0.02,
    # lr_oscillation: this many changes of direction of the epoch-end learning rate
    "lr_oscillation_sign_changes": 2,
    # dominated_loss: one term's mean share of the gradient at the heads' outputs above this
    "dominated_share": 0.9,
    # ... and the share the recommended weight aims that term at
    "dominated_target_share": 0.6,
    # section 5: ranking terms (rankic, cs_ic, sharpe, listnet, ranknet) together need this share to count
    "financial_share_min": 0.05,
    # vanishing_gradients: a module's median gradient norm below this times the largest module's
    "vanishing_ratio": 1e-3,
    # exploding_gradients: a reading above this times the median of the other modules at that step
    "exploding_ratio": 1e3,
    # overfitting: train falling while val rising for this many consecutive epochs ...
    "overfit_streak": 2,
    # ... or val above train by more than this share of the best val loss, with val above its best
    "overfit_gap": 0.1,
    # regime_change: of the features whose RankIC alone is significant (|Newey-West t| at least this) on the
    # test segment (validation when the run has none) ...
    "regime_t": 2.0,
    # ... at least this many ...
    "regime_min_features": 5,
    # ... this share or more had the opposite sign on the training segment
    "regime_flip_share": 0.3,
    # graph_adds_nothing: fusion gate mean (last epoch) below this
    "gate_min_mean": 0.05,
    # grading: the horizon graded, RankIC levels (real data) and capture-ratio levels (synthetic data);
    # the run's eval.grading config replaces the RankIC levels
    "grade_horizon": 5,
    "minimum_rankic": 0.01,
    "target_rankic": 0.03,
    "stretch_rankic": 0.05,
    "minimum_capture": 0.2,
    "target_capture": 0.5,
    "stretch_capture": 0.8,
}

Thresholds = dict[str, Any]


# ------------------------------------------------------------------------------------------------------
# the shape of a rule
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What a rule's check found: whether it fired, the evidence in numbers, and (rarely) a severity of
    its own that replaces the rule's usual one (how bad it is depends on what was found)."""

    fired: bool
    evidence: str
    severity: str | None = None


class Advice(NamedTuple):
    """What to do about a fired rule and why (``text``), and the command line that does it."""

    text: str
    command: str


@dataclass(frozen=True)
class Rule:
    """One row of the rules table."""

    name: str
    title: str
    severity: str  # critical | warning | info: the usual one (a check may set another)
    check: Callable[[Facts, Thresholds], Check]
    advise: Callable[[Facts, Thresholds], Advice]  # called only when the check fired

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.name}: severity {self.severity!r} is not one of {SEVERITIES}")

    def judge(self, facts: Facts, th: Thresholds) -> Finding:
        """This rule's finding on a run: the check's verdict, and for a fired rule the advice."""
        found = self.check(facts, th)
        severity = found.severity or self.severity
        if not found.fired:
            return Finding(self.name, self.title, False, severity, found.evidence)
        text, command = self.advise(facts, th)
        recommendation = f"{text}\n\n    {command}" if command else text
        return Finding(self.name, self.title, True, severity, found.evidence, recommendation, command)


def evaluate(facts: Facts, th: Thresholds) -> list[Finding]:
    """Every rule's finding, in ``RULES`` order (fired or not)."""
    return [rule.judge(facts, th) for rule in RULES]


# ------------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------------


def train_command(facts: Facts, slug: str, overrides: dict[str, Any], *, data_path: str | None = None) -> str:
    """``atft train`` on the run's config and dataset (or ``data_path``), as a new run ``<run>-<slug>``."""
    data = data_path or (str(facts.data_path) if facts.data_path else None)
    parts = ["atft", "train"]
    if facts.folder.is_run():
        parts += ["--config", shlex.quote(str(facts.folder.config_file))]
    parts += ["--data-path", shlex.quote(data) if data else "DATASET"]
    parts += ["--run-name", shlex.quote(f"{facts.run_dir.name}-{slug}")]
    parts += [f"{k}={_value(v)}" for k, v in overrides.items()]
    return " ".join(parts)


def healthy_recommendation(facts: Facts) -> tuple[str, str]:
    """What to do after a healthy run: measure the seed noise before trusting the next comparison."""
    new_seed = int(facts.config.train.seed) + 1
    command = train_command(facts, f"seed{new_seed}", {"train.seed": new_seed})
    return (
        "No rule fired. Keep this run as the baseline; before reading anything into the next change, "
        "rerun it with another seed: the RankIC difference between two seeds is the smallest effect any "
        "comparison can claim.",
        command,
    )


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(float(f"{v:.2g}"))  # two significant digits: a recommendation, not a measurement
    return str(v)


def _lr(facts: Facts) -> float:
    """The run's learning rate: its config's, or the largest logged one when the config is unknown."""
    if facts.config_loaded or not facts.lr.values:
        return float(facts.config.train.optimizer.lr)
    return max(facts.lr.values)


# ------------------------------------------------------------------------------------------------------
# the rules: a check and an advice builder each, in the table's order
# ------------------------------------------------------------------------------------------------------


def _check_no_epochs(f: Facts, th: Thresholds) -> Check:
    """Nothing to judge: no epoch in metrics.csv and no summary (crashed early, or still in epoch 0)."""
    n = f.metrics.height
    fired = n == 0 and not f.valid and not f.test
    evidence = f"{n} epoch(s) in metrics.csv" + ("" if f.valid or f.test else "; no summary.json metrics")
    last = "\n".join(f.log_lines).strip().splitlines()[-1:]
    if fired and last:
        evidence += f"; last train.log line: {last[0]}"
    return Check(fired, evidence)


def _advise_no_epochs(f: Facts, th: Thresholds) -> Advice:
    resumable = f.folder.last_checkpoint.exists()
    advice = (
        "The run has not finished a single epoch: it crashed before (the console and train.log say why; "
        "the dataset guard and the config check stop a run there) or is still in its first epoch. "
        + ("Resume it from its last checkpoint:" if resumable else "Once the cause is fixed, run it again:")
    )
    command = (
        f"atft train --resume {shlex.quote(str(f.run_dir))}" if resumable else train_command(f, "retry", {})
    )
    return Advice(advice, command)


def _check_non_finite(f: Facts, th: Thresholds) -> Check:
    """NaN or infinity stopped training (the NonFiniteGuard's event, or its STOP line in train.log)."""
    fired = bool(f.grads.nonfinite)
    evidence = (
        f"training stopped on a non-finite value: {f.grads.nonfinite[0]}"
        if fired
        else "no non-finite loss or gradient recorded"
    )
    if f.grads.overflow_skips:
        evidence += f"; {f.grads.overflow_skips} fp16 overflow step(s) skipped by the gradient scaler"
    return Check(fired, evidence)


def _advise_non_finite(f: Facts, th: Thresholds) -> Advice:
    train = f.config.train
    overrides: dict[str, Any] = {"train.optimizer.lr": _lr(f) / 3}
    if not train.optimizer.grad_clip or train.optimizer.grad_clip > 0.5:
        overrides["train.optimizer.grad_clip"] = 0.5
    if train.trainer.precision == "16-mixed":
        overrides["train.trainer.precision"] = "bf16-mixed"
    advice = (
        "The run died on a NaN/inf, so the weights after that step are garbage and only the best "
        "checkpoint before it is usable. The usual cause is a step too large for the loss surface (a "
        "learning rate or an unbounded term such as sharpe): cut the learning rate, clip harder"
        + (", and leave fp16 for bf16" if "train.trainer.precision" in overrides else "")
        + ":"
    )
    return Advice(advice, train_command(f, "finite", overrides))


def _not_in_return_units(f: Facts) -> str | None:
    """Why the forecasts' size cannot be held against the labels', or None when it can: a run trained on
    percentile ranks (``data.target=rank``) forecasts ranks, while every size fact is measured on returns."""
    if f.config.data.target == "rank":
        return (
            "not measured: the run learns percentile ranks (data.target=rank), so its forecasts are ranks "
            "and their size cannot be compared with the raw returns it is scored on"
        )
    return None


def _check_collapse(f: Facts, th: Thresholds) -> Check:
    """Predictions collapsed to a constant: SCALE (per-day std ratio) under ``collapse_scale``."""
    if (why := _not_in_return_units(f)) is not None:
        return Check(False, why)
    floor = th["collapse_scale"]
    split = f.headline_split
    delivered = {h: f.headline("scale", h) for h in f.horizons}
    last = {h: _last(f, f"val_scale_{h}d") for h in f.horizons}
    low = {h: s for h, s in delivered.items() if finite(s) and s < floor}
    low_last = {h: s for h, s in last.items() if finite(s) and s < floor}
    fired = bool(low or low_last)
    evidence = f"SCALE = std(prediction)/std(label) per day, on {split}: {_per_h(delivered)}"
    if any(finite(v) for v in last.values()):
        evidence += f"; validation at the last epoch: {_per_h(last)}"
    evidence += f" (collapse below {floor})"
    if f.grads.degeneracy_warnings or f.grads.resets:
        evidence += (
            f"; the degeneracy guard warned {f.grads.degeneracy_warnings} time(s) and re-initialized the "
            f"heads {f.grads.resets} time(s)"
        )
    if fired:
        ric = {h: f.headline("rankic", h) for h in f.horizons}
        evidence += f"; RankIC meanwhile: {_per_h(ric)}"
    return Check(fired, evidence)


def _advise_collapse(f: Facts, th: Thresholds) -> Advice:
    w = float(f.config.loss.weights.variance_floor)
    overrides = {"loss.weights.variance_floor": max(1.0, 2 * w), "train.optimizer.lr": _lr(f) / 3}
    advice = (
        f"The predictions are nearly constant across stocks (spread under {th['collapse_scale']:.0%} of "
        "the labels'): RankIC can still look alive on such a model, but its forecasts carry no size, and "
        "ranks built on noise-level differences turn over for nothing. Something (learning rate, a loss "
        "term that rewards shrinking) pushed the heads to zero; strengthen the variance floor and slow "
        "down:"
    )
    return Advice(advice, train_command(f, "no-collapse", overrides))


def _check_negative_ic(f: Facts, th: Thresholds) -> Check:
    """The model ranks backwards: RankIC below ``negative_ic_max`` at every horizon."""
    split = f.headline_split
    ric = {h: f.headline("rankic", h) for h in f.horizons}
    ic = {h: f.headline("ic", h) for h in f.horizons}
    known = [v for v in ric.values() if finite(v)]
    fired = bool(known) and all(v < th["negative_ic_max"] for v in known)
    evidence = f"RankIC on {split}: {_per_h(ric, 4)}; IC: {_per_h(ic, 4)}"
    if split == "test":
        evidence += f"; on validation (best epoch): {_per_h(_valid_rankic(f), 4)}"
    return Check(fired, evidence)


def _advise_negative_ic(f: Facts, th: Thresholds) -> Advice:
    valid_positive = f.headline_split == "test" and any(
        finite(v) and v > 0 for v in _valid_rankic(f).values()
    )
    if valid_positive:
        advice = (
            "The ranking is positive on validation but negative on test at every horizon: what was "
            "selected on validation does not carry over (a regime change, or an early-stopping pick made "
            "on noise). Regularize harder and check the result across walk-forward folds before trusting "
            "either sign:"
        )
        overrides = {
            "model.dropout": min(0.5, float(f.config.model.dropout) + 0.1),
            "train.optimizer.weight_decay": 0.05,
        }
    else:
        advice = (
            "The model orders stocks the wrong way round at every horizon, on the data it was selected "
            "on too: this is a sign error (a ranking term maximized instead of minimized, labels shifted "
            "against features), not bad luck. A plain regression without the ranking term isolates it: "
            "if its IC is positive, the ranking term is at fault:"
        )
        overrides = {"loss.weights.rankic": 0.0, "loss.weights.huber": 1.0}
    return Advice(advice, train_command(f, "sign-check", overrides))


def _check_dead_features(f: Facts, th: Thresholds) -> Check:
    """The dataset guard found features (or labels) that cannot carry information."""
    d = f.dataset
    if not d.reachable:
        return Check(False, f"not checked: {d.note}", "warning")
    parts = []
    if d.dead:
        parts.append(f"{len(d.dead)} constant or all-zero across stocks: {', '.join(d.dead[:10])}")
    if d.mostly_null:
        parts.append(f"{len(d.mostly_null)} mostly null: {', '.join(d.mostly_null[:10])}")
    if d.constant_over_time:
        parts.append(
            f"{len(d.constant_over_time)} never changing over the sample: "
            + ", ".join(d.constant_over_time[:10])
        )
    if d.label_problems:
        parts.append(f"label problems: {'; '.join(d.label_problems[:3])}")
    fired = bool(parts)
    severity = "critical" if (d.dead or d.mostly_null or d.label_problems) else "warning"
    evidence = (f"dataset guard ({d.path}): " + "; ".join(parts)) if fired else f"none: {d.note}"
    return Check(fired, evidence, severity)


def _advise_dead_features(f: Facts, th: Thresholds) -> Advice:
    d = f.dataset
    raw = shlex.quote(d.raw_dir) if d.raw_dir else "RAW_STORE"
    rebuilt = f"{d.path}-rebuilt"
    advice = (
        "These inputs cannot rank stocks: a feature constant across the cross-section on most days (the "
        "previous system's per-stock z-score bug produced exactly this) only spends capacity, and a "
        "guard failure means this dataset predates the guard or was edited after it. Rebuild the dataset "
        "with the current pipeline and retrain on it:"
    )
    command = f"atft data build --raw {raw} --out {shlex.quote(rebuilt)} && " + train_command(
        f, "rebuilt", {}, data_path=rebuilt
    )
    return Advice(advice, command)


def _check_exploding_gradients(f: Facts, th: Thresholds) -> Check:
    """A module's gradient dwarfs the others' (``exploding_ratio`` times their median at that step)."""
    spikes = sorted(f.grads.spikes, key=lambda s: -s[3])
    # a single spike (typically the first step) is an oddity of initialization; repeated ones cost steps
    severity = "warning" if len(spikes) >= 2 else "info"
    if spikes:
        shown = "; ".join(
            f"{m} {v:.2g} at {f.grads.x_label} {x:g} ({r:.1e}x the others' median)"
            for m, x, v, r in spikes[:3]
        )
        evidence = (
            f"{len(spikes)} gradient reading(s) above {th['exploding_ratio']:g}x the other modules: {shown}"
        )
    else:
        evidence = f"no module's gradient above {th['exploding_ratio']:g}x the others' ({f.grads.source})"
    return Check(bool(spikes), evidence, severity)


def _advise_exploding_gradients(f: Facts, th: Thresholds) -> Advice:
    modules = sorted({s[0] for s in f.grads.spikes})
    overrides: dict[str, Any] = {"train.optimizer.lr": _lr(f) / 3}
    if any(m.startswith(("gat", "fusion")) for m in modules):
        overrides = {"model.graph.mode": "none"}
    advice = (
        f"With gradient clipping (grad_clip={f.config.train.optimizer.grad_clip}) a step whose norm is "
        f"dominated by {', '.join(modules)} is "
        "scaled down as a whole, so every other module learns almost nothing on it; without clipping, "
        "that step throws the weights far. A spike only at the first step points at initialization (a "
        "normalization of a near-constant input). Confirm where it comes from with this run:"
    )
    return Advice(advice, train_command(f, "grad-check", overrides))


# the ablation that switches a module off, for a vanishing gradient
_SWITCH_OFF: dict[str, dict[str, Any]] = {
    "fan": {"model.fan.enabled": False},
    "vsn": {"model.vsn.enabled": False},
    "gat": {"model.graph.mode": "none"},
    "fusion": {"model.graph.mode": "none"},
    "shortcut": {"model.shortcut": False},
}


def _check_vanishing_gradients(f: Facts, th: Thresholds) -> Check:
    """A module whose median gradient norm is under ``vanishing_ratio`` times the largest module's."""
    g = f.grads
    fired = bool(g.vanishing)
    if g.reference is None:
        return Check(fired, "no gradient readings")
    ref, _ = g.reference
    shown = ", ".join(f"{m} {_g(g.level[m])}" for m in sorted(g.level, key=lambda m: -g.level[m]))
    evidence = f"median gradient norm per module ({g.source}): {shown}"
    if fired:
        evidence += f"; below {th['vanishing_ratio']:g}x {ref}: {', '.join(g.vanishing)}"
    if g.unused:
        evidence += f"; switched off in the config: {', '.join(g.unused)}"
    return Check(fired, evidence)


def _advise_vanishing_gradients(f: Facts, th: Thresholds) -> Advice:
    vanishing = f.grads.vanishing
    first = vanishing[0] if vanishing else ""
    overrides = _SWITCH_OFF.get(first, {"train.optimizer.lr": _lr(f) * 3})
    advice = (
        f"{', '.join(vanishing)} receive(s) almost no gradient, so their weights stay at "
        "initialization and the parameters are dead weight (or the path through them is broken, e.g. "
        "a saturated gate). An ablation without the module tells whether it does anything; if RankIC "
        "holds, drop it, else look for what blocks its gradient:"
    )
    return Advice(advice, train_command(f, f"no-{first}" if first in _SWITCH_OFF else "lr-up", overrides))


def _check_dominated_loss(f: Facts, th: Thresholds) -> Check:
    """One loss term takes more than ``dominated_share`` of the gradient at the heads' outputs."""
    terms, top = _shares(f)
    if top is None:
        return Check(False, "no gradient shares logged")
    fired = top.share_mean > th["dominated_share"]
    shares = ", ".join(f"{t.name} {t.share_mean:.1%}" for t in terms)
    evidence = f"gradient share at the heads' outputs (mean over epochs): {shares}"
    if fired:
        evidence += f"; {top.name} at the last epoch: {top.share_last:.1%}"
    # A scale-free ranking term outweighs point terms in return units by design, and it is what teaches the
    # ranking: on the demo market, cutting rankic from 0.5 to 0.1 (share ~96% -> lower) took the validation
    # 5-day RankIC from 0.065 to 0.016 (docs/quality.md). So it is information, not a warning, there.
    return Check(fired, evidence, severity="info" if fired and top.financial else None)


def _advise_dominated_loss(f: Facts, th: Thresholds) -> Advice:
    _, top = _shares(f)
    if top is None:  # the check fired on the top term, so there is one
        raise ValueError("dominated_loss advised without a gradient share")
    s, target = top.share_mean, th["dominated_target_share"]
    # shares scale with the weights, so weight x k moves the share from s to k*s / (k*s + 1 - s)
    k = target * (1 - s) / ((1 - target) * s) if 0 < s < 1 else 0.1
    weight = top.weight if top.weight is not None and top.weight > 0 else None
    overrides = {f"loss.weights.{top.name}": weight * k} if weight else {}
    if top.financial:
        advice = (
            f"{top.name} is a scale-free ranking term, and the point terms (huber, pinball) are in return "
            "units, so it takes most of the gradient at any sensible weight; it is also what teaches the "
            "model to rank. On the synthetic demo market, scaling rankic from 0.5 to 0.1 took the validation "
            "5-day RankIC from 0.065 to 0.016 in 3 epochs (docs/quality.md). Keep it unless the forecasts' "
            f"size matters more than their order; to measure what it buys here, scaling {top.name}'s weight "
            f"by {k:.2g} brings it to about {target:.0%} of the gradient (compare both on validation):"
        )
        return Advice(advice, train_command(f, "rebalanced", overrides))
    advice = (
        f"{top.name} decides nearly every gradient step, so the other terms (their calibration, "
        "quantiles, variance floor) are along for the ride: a run with only this term would train about "
        f"the same. Shares grow with the weights, and under Adam only the weights' ratios matter (raising "
        f"the others is the same fix); scaling {top.name}'s weight by {k:.2g} brings it to about "
        f"{target:.0%} of the gradient:"
    )
    return Advice(advice, train_command(f, "rebalanced", overrides))


def _check_lr_oscillation(f: Facts, th: Thresholds) -> Check:
    """The epoch-end learning rate changes direction ``lr_oscillation_sign_changes`` times or more."""
    lr = f.lr
    fired = lr.sign_changes >= th["lr_oscillation_sign_changes"]
    shown = " ".join(f"{v:.1e}" for v in lr.values[:12]) + (" ..." if len(lr.values) > 12 else "")
    evidence = f"lr per epoch: {shown or 'not logged'}; direction changes: {lr.sign_changes}"
    if f.grads.resumed:
        evidence += f"; the run was resumed {f.grads.resumed} time(s)"
    return Check(fired, evidence)


def _advise_lr_oscillation(f: Facts, th: Thresholds) -> Advice:
    advice = (
        "A schedule should warm up once and then only go down; a learning rate that rises again undoes "
        "the fine-tuning of the decay (a restarted schedule on resume, or a scheduler stepping on the "
        "wrong counter). Use a single warmup-cosine at a lower peak:"
    )
    overrides = {
        "train.scheduler.name": "warmup_cosine",
        "train.optimizer.lr": max(f.lr.values or [_lr(f)]) / 2,
    }
    return Advice(advice, train_command(f, "one-schedule", overrides))


def _check_overfitting(f: Facts, th: Thresholds) -> Check:
    """Train loss falls while val loss rises for ``overfit_streak`` epochs, or val sits far above train."""
    c = f.curve
    by_streak = c.overfit_streak >= th["overfit_streak"]
    by_gap = (
        finite(c.gap_rel)
        and c.gap_rel > th["overfit_gap"]
        and finite(c.val_above_best)
        and c.val_above_best > th["plateau_min_improvement"]
    )
    evidence = (
        f"longest stretch of train loss falling while val loss rises: {c.overfit_streak} epoch(s)"
        + (f" (ending at epoch {c.overfit_streak_end})" if c.overfit_streak_end is not None else "")
        + f"; val loss at the last epoch {_pct(c.val_above_best)} vs its best (epoch {c.best_val_epoch}); "
        f"val - train gap {_pct(c.gap_rel)} of the best val loss"
    )
    return Check(by_streak or by_gap, evidence)


def _advise_overfitting(f: Facts, th: Thresholds) -> Advice:
    best = f.best_epoch
    if best is not None and best + 1 < f.epochs_run:
        # docs/quality.md: on the demo market 6 epochs peaked at the 3rd and ended below a 3-epoch run (the
        # cosine schedule anneals by the end of the epochs it is given), while dropout 0.3 and weight decay
        # 0.1 moved validation RankIC by less than the seed spread
        advice = (
            f"The model keeps fitting the training days after it stopped generalizing. The best checkpoint "
            f"(epoch {best + 1} of {f.epochs_run}) predates it, so the delivered model is not harmed, but the "
            "epochs after are wasted. On the demo market a shorter schedule did better than more "
            "regularization: the learning-rate schedule then anneals by the best epoch, while a higher "
            "dropout or weight decay moved validation RankIC by less than the seed spread (docs/quality.md). "
            "Train as many epochs as the best one took:"
        )
        return Advice(advice, train_command(f, f"epochs{best + 1}", {"train.max_epochs": best + 1}))
    dropout, weight_decay = f.config.model.dropout, f.config.train.optimizer.weight_decay
    overrides = {
        "model.dropout": min(0.5, float(dropout) + 0.1),
        "train.optimizer.weight_decay": max(0.05, 5 * float(weight_decay)),
    }
    advice = (
        "The model keeps fitting the training days while its ranking still improves (the best checkpoint "
        "is the last one), so the capacity is partly spent on noise. Regularize harder:"
    )
    return Advice(advice, train_command(f, "regularized", overrides))


def _check_plateau(f: Facts, th: Thresholds) -> Check:
    """Val loss flat (within ``plateau_flat_change``) for ``plateau_epochs`` epochs after its last gain."""
    c = f.curve
    fired = (
        c.plateau_epoch is not None
        and c.epochs_since_improvement >= th["plateau_epochs"]
        and finite(c.plateau_change)
        and abs(c.plateau_change) <= th["plateau_flat_change"]
    )
    if c.plateau_epoch is None:
        return Check(fired, "no validation loss logged")
    evidence = (
        f"val loss last improved by more than {th['plateau_min_improvement']:.1%} at epoch "
        f"{c.plateau_epoch}; in the {c.epochs_since_improvement} epoch(s) since it changed by "
        f"{_pct(c.plateau_change, 2)}"
    )
    return Check(fired, evidence)


def _advise_plateau(f: Facts, th: Thresholds) -> Advice:
    train = f.config.train
    overrides: dict[str, Any] = {}
    if f.lr.scheduler != "plateau":
        overrides.update({"train.scheduler.name": "plateau", "train.scheduler.plateau_patience": 2})
    else:  # the scheduler already cuts on a plateau: cut sooner, from a lower start
        overrides.update(
            {
                "train.scheduler.plateau_patience": max(1, int(train.scheduler.plateau_patience) - 1),
                "train.optimizer.lr": _lr(f) / 2,
            }
        )
    if train.early_stopping.patience > 3:
        overrides["train.early_stopping.patience"] = 3
    advice = (
        f"{f.curve.epochs_since_improvement} epochs of compute bought nothing: the optimizer sits on a "
        "flat stretch at this learning rate. Cut the learning rate when validation stalls and stop sooner "
        "(if the plateau is also at a poor level, the model or the loss is the limit, not the epochs):"
    )
    return Advice(advice, train_command(f, "plateau-lr", overrides))


def _check_rmse_worse_than_naive(f: Facts, th: Thresholds) -> Check:
    """The point forecast's RMSE is above that of always predicting 0, at any horizon."""
    if (why := _not_in_return_units(f)) is not None:
        return Check(False, why)
    parts, worse, _ = _rmse_ratios(f, th)
    evidence = f"RMSE / naive RMSE (always 0) on {f.headline_split}: " + ("; ".join(parts) or "n/a")
    return Check(bool(worse), evidence)


def _advise_rmse_worse_than_naive(f: Facts, th: Thresholds) -> Advice:
    _, worse, ics = _rmse_ratios(f, th)
    loss = f.config.loss
    floor = loss.scale_floor
    best_ic = max(ics, default=0.0)
    target = max(th["collapse_scale"], float(f"{best_ic:.1g}") if best_ic > 0 else 0.0)
    advice = (
        f"At {', '.join(f'{h}d' for h in worse)} the forecasts are worse than predicting no move. The "
        "ranking is not the problem: with IC rho the RMSE-optimal spread is about rho, and a spread "
        "beyond 2 rho loses to zero. If the forecasts are only ranked this costs nothing; if their size "
        "is used (sizing, expected-return inputs), "
    )
    if floor > target:
        advice += (
            f"lower the variance floor, which holds the spread near loss.scale_floor={floor}, towards the "
            "IC while staying above the collapse line:"
        )
        overrides: dict[str, Any] = {"loss.scale_floor": target}
    else:
        w = float(loss.weights.huber)
        advice += (
            "give the regression term, the one that pulls the spread towards the IC, more say against "
            "the scale-free ranking terms:"
        )
        overrides = {"loss.weights.huber": 3 * w if w > 0 else 1.0}
    return Advice(advice, train_command(f, "calibrated", overrides))


def _check_regime_change(f: Facts, th: Thresholds) -> Check:
    """What ranked stocks later is not what ranked them in training: many features significant on the
    later segment had the opposite sign on the training segment (factor ICs by period, report section 10)."""
    r = f.regime
    if r.table is None or r.later is None:
        return Check(False, "; ".join(r.notes) or "no factor ICs by period")
    n, k = len(r.significant), len(r.flipped)
    share = k / n if n else math.nan
    by_feature = {row["feature"]: row for row in r.table.iter_rows(named=True)}
    examples = [
        f"{name} {_f(by_feature[name]['rankic_train'])} → {_f(by_feature[name][f'rankic_{r.later}'])}"
        for name in r.flipped[:3]
    ]
    evidence = (
        f"{k} of the {n} features with |NW t| ≥ {th['regime_t']:g} alone on {r.later} had the opposite sign "
        f"on train ({share:.0%})"
        + (f": {'; '.join(examples)} (RankIC train → {r.later}, {r.label})" if examples else "")
        + f"; factor-IC agreement train vs {r.later} {_f(r.agreement, 2)}"
    )
    fired = n >= int(th["regime_min_features"]) and share >= float(th["regime_flip_share"])
    return Check(fired, evidence)


def _advise_regime_change(f: Facts, th: Thresholds) -> Advice:
    r = f.regime
    first, last = r.segments[r.later]
    advice = (
        f"The market changed under the model: on {r.later} ({first} to {last}) the signs of many single-"
        "feature RankICs are the reverse of training's, so a model fit on the training segment learned "
        "the old relation and no tuning on that segment brings the new one back. Do not choose a model by "
        f"its {r.later} numbers. What helps against a regime change is recency: a training window that "
        "ends close to the forecast day, refit often, each refit starting from the last weights. The "
        "rolling retrain does that with a purge before every block and reports one continuous series "
        "(docs/rolling.md). Within one training segment, weighting recent days more "
        "(train.recency_halflife_days) is the same idea; measure either on a validation period, never on "
        "the segment that showed the change (docs/quality.md):"
    )
    data = shlex.quote(str(f.data_path)) if f.data_path else "DATASET"
    command = (
        f"atft rolling --data-path {data} --model atft --every 21 --train-days 756 --warm-start "
        f"--start {first} --end {last}"
    )
    return Advice(advice, command)


def _check_graph_adds_nothing(f: Facts, th: Thresholds) -> Check:
    """The fusion gate learned to shut the graph out: gate mean under ``gate_min_mean``."""
    if not f.graph_enabled:
        return Check(False, "the graph is switched off in this run (model.graph.mode / model.gat.enabled)")
    g = f.gate_mean
    first = next((v for v in f.gate_series if finite(v)), math.nan)
    evidence = (
        f"fusion gate mean at the last epoch {_f(g)} (std {_f(f.gate_std)}; first epoch {_f(first)})"
        if finite(g)
        else "no gate statistics logged"
    )
    return Check(finite(g) and g < th["gate_min_mean"], evidence)


def _advise_graph_adds_nothing(f: Facts, th: Thresholds) -> Advice:
    advice = (
        "The fusion gate has closed: the model adds almost none of the GAT's output to each stock's "
        "embedding, so the graph costs compute (graph building, attention) and brings no information at "
        "this setting. Confirm with an ablation; if RankIC holds, train without it:"
    )
    return Advice(advice, train_command(f, "no-graph", {"model.graph.mode": "none"}))


# ------------------------------------------------------------------------------------------------------
# the table, in priority order
# ------------------------------------------------------------------------------------------------------

# fmt: off
RULES: tuple[Rule, ...] = (
    #    name, title, usual severity
    #    check, advice
    Rule("no_epochs",             "No epoch logged",                "critical",
         _check_no_epochs, _advise_no_epochs),
    Rule("non_finite",            "Non-finite loss or gradient",    "critical",
         _check_non_finite, _advise_non_finite),
    Rule("collapse",              "Collapsed predictions",          "critical",
         _check_collapse, _advise_collapse),
    Rule("negative_ic",           "Negative IC at every horizon",   "critical",
         _check_negative_ic, _advise_negative_ic),
    # critical for a guard problem, warning when market features only never change (the check says)
    Rule("dead_features",         "Dead or constant features",      "critical",
         _check_dead_features, _advise_dead_features),
    Rule("regime_change",         "Regime change in the features", "warning",
         _check_regime_change, _advise_regime_change),
    # warning for repeated spikes, info for a single one (the check says)
    Rule("exploding_gradients",   "Exploding gradient in a module", "warning",
         _check_exploding_gradients, _advise_exploding_gradients),
    Rule("vanishing_gradients",   "Vanishing gradient in a module", "warning",
         _check_vanishing_gradients, _advise_vanishing_gradients),
    Rule("dominated_loss",        "One loss term dominates",        "warning",
         _check_dominated_loss, _advise_dominated_loss),
    Rule("lr_oscillation",        "Learning rate oscillates",       "warning",
         _check_lr_oscillation, _advise_lr_oscillation),
    Rule("overfitting",           "Overfitting",                    "warning",
         _check_overfitting, _advise_overfitting),
    Rule("plateau",               "Validation plateau",             "warning",
         _check_plateau, _advise_plateau),
    Rule("rmse_worse_than_naive", "RMSE worse than naive",          "warning",
         _check_rmse_worse_than_naive, _advise_rmse_worse_than_naive),
    Rule("graph_adds_nothing",    "Graph adds nothing",             "info",
         _check_graph_adds_nothing, _advise_graph_adds_nothing),
)
# fmt: on


# ------------------------------------------------------------------------------------------------------
# what several rules measure the same way
# ------------------------------------------------------------------------------------------------------


def _valid_rankic(f: Facts) -> dict[int, float]:
    return {h: f.valid.get(f"rankic_{h}d", math.nan) for h in f.horizons}


def _shares(f: Facts) -> tuple[list[TermFacts], TermFacts | None]:
    """The loss terms with a logged gradient share, and the one with the largest (None when none)."""
    terms = [t for t in f.terms if finite(t.share_mean)]
    return terms, max(terms, key=lambda t: t.share_mean, default=None)


def _rmse_ratios(f: Facts, th: Thresholds) -> tuple[list[str], list[int], list[float]]:
    """Per horizon: the RMSE / naive RMSE text, the horizons above ``rmse_naive_ratio``, and the ICs."""
    parts, worse, ics = [], [], []
    for h in f.horizons:
        rmse, naive = f.headline("rmse", h), f.headline("naive_rmse", h)
        if not (finite(rmse) and finite(naive) and naive > 0):
            continue
        ratio = rmse / naive
        s, rho = f.headline("scale", h), f.headline("ic", h)
        text = f"{h}d {ratio:.3f}"
        if finite(s) and finite(rho):
            ics.append(rho)
            # for mean-zero forecasts with relative spread s and correlation rho to the labels:
            # MSE / MSE(0) = 1 - 2 s rho + s^2, so the spread alone explains the excess error
            expected = math.sqrt(max(0.0, 1 - 2 * s * rho + s * s))
            text += f" (spread {s:.2f}, IC {rho:.3f}: expected ~{expected:.3f})"
        parts.append(text)
        if ratio > th["rmse_naive_ratio"]:
            worse.append(h)
    return parts, worse, ics


def _last(f: Facts, column: str) -> float:
    if column not in f.metrics.columns:
        return math.nan
    values = [v for v in f.metrics[column].to_list() if v is not None and math.isfinite(v)]
    return values[-1] if values else math.nan


def _f(x: float, digits: int = 3) -> str:
    return fmt(x, f".{digits}f")


def _g(x: float) -> str:
    return fmt(x, ".2g")


def _per_h(values: dict[int, float], digits: int = 3) -> str:
    return ", ".join(f"{h}d {_f(v, digits)}" for h, v in values.items())


def _pct(x: float, digits: int = 1) -> str:
    return fmt(x, f"+.{digits}%")
