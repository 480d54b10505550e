"""Root-cause rules of the run doctor: each one recognizes a failure from the run's measurements.

A rule reads the ``Facts`` that ``atft.reporting.doctor`` measured and returns a ``Finding``: whether it
fired, how bad it is, the evidence in numbers, and a recommendation ending in a concrete ``atft train``
command line (the run's own config plus dotted overrides), so that the fix is one copy-paste away.

Rules run in ``RULES`` order, which is also the tie-break between findings of the same severity: causes
(non-finite values, collapse, inverted signal, bad data, broken gradients) come before their symptoms
(plateau, RMSE). Every threshold is a key of ``DEFAULT_THRESHOLDS``, documented in docs/doctor.md.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atft.reporting.numbers import finite, fmt

if TYPE_CHECKING:
    from atft.reporting.doctor import Facts

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

SEVERITIES = ("critical", "warning", "info")


@dataclass
class Finding:
    """One rule's verdict on a run."""

    name: str
    title: str
    fired: bool
    severity: str  # critical | warning | info
    evidence: str
    recommendation: str = ""  # what to do and why, ending with the command line
    command: str = ""  # the command line alone

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


Rule = Callable[["Facts", dict[str, Any]], Finding]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register a rule; registration order is priority order among findings of equal severity."""
    RULES.append(fn)
    return fn


def evaluate(facts: Facts, th: dict[str, Any]) -> list[Finding]:
    """Every rule's finding, in ``RULES`` order (fired or not)."""
    return [r(facts, th) for r in RULES]


def ranked(findings: list[Finding]) -> list[Finding]:
    """The fired findings, most severe first, ties in rule order: the first is the run's main problem."""
    order = {f.name: i for i, f in enumerate(findings)}
    return sorted((f for f in findings if f.fired), key=lambda f: (f.rank, order[f.name]))


# ------------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------------


def train_command(facts: Facts, slug: str, overrides: dict[str, Any], *, data_path: str | None = None) -> str:
    """``atft train`` on the run's config and dataset (or ``data_path``), as a new run ``<run>-<slug>``."""
    data = data_path or (str(facts.data_path) if facts.data_path else None)
    parts = ["atft", "train"]
    if (facts.run_dir / "config.yaml").exists():
        parts += ["--config", shlex.quote(str(facts.run_dir / "config.yaml"))]
    parts += ["--data-path", shlex.quote(data) if data else "DATASET"]
    parts += ["--run-name", shlex.quote(f"{facts.run_dir.name}-{slug}")]
    parts += [f"{k}={_value(v)}" for k, v in overrides.items()]
    return " ".join(parts)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(float(f"{v:.2g}"))  # two significant digits: a recommendation, not a measurement
    return str(v)


def _finding(
    name: str, title: str, fired: bool, severity: str, evidence: str, advice: str = "", command: str = ""
) -> Finding:
    recommendation = f"{advice}\n\n    {command}" if fired and command else (advice if fired else "")
    return Finding(name, title, fired, severity, evidence, recommendation, command if fired else "")


def _f(x: float, digits: int = 3) -> str:
    return fmt(x, f".{digits}f")


def _g(x: float) -> str:
    return fmt(x, ".2g")


def _per_h(values: dict[int, float], digits: int = 3) -> str:
    return ", ".join(f"{h}d {_f(v, digits)}" for h, v in values.items())


def _lr(facts: Facts) -> float:
    lr = facts.cfg("train.optimizer.lr")
    return float(lr) if finite(lr) else (max(facts.lr.values) if facts.lr.values else 3e-4)


# ------------------------------------------------------------------------------------------------------
# the rules, in priority order
# ------------------------------------------------------------------------------------------------------


@rule
def no_epochs(f: Facts, th: dict[str, Any]) -> Finding:
    """Nothing to judge: no epoch in metrics.csv and no summary (crashed early, or still in epoch 0)."""
    n = f.metrics.height
    fired = n == 0 and not f.valid and not f.test
    evidence = f"{n} epoch(s) in metrics.csv" + ("" if f.valid or f.test else "; no summary.json metrics")
    log = f.run_dir / "train.log"
    last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    if fired and last:
        evidence += f"; last train.log line: {last[0]}"
    resumable = (f.run_dir / "checkpoints" / "last.ckpt").exists()
    advice = (
        "The run has not finished a single epoch: it crashed before (the console and train.log say why; "
        "the dataset guard and the config check stop a run there) or is still in its first epoch. "
        + ("Resume it from its last checkpoint:" if resumable else "Once the cause is fixed, run it again:")
    )
    command = (
        f"atft train --resume {shlex.quote(str(f.run_dir))}" if resumable else train_command(f, "retry", {})
    )
    return _finding("no_epochs", "No epoch logged", fired, "critical", evidence, advice, command)


@rule
def non_finite(f: Facts, th: dict[str, Any]) -> Finding:
    """NaN or infinity stopped training (the NonFiniteGuard's event, or its STOP line in train.log)."""
    fired = bool(f.grads.nonfinite)
    evidence = (
        f"training stopped on a non-finite value: {f.grads.nonfinite[0]}"
        if fired
        else "no non-finite loss or gradient recorded"
    )
    if f.grads.overflow_skips:
        evidence += f"; {f.grads.overflow_skips} fp16 overflow step(s) skipped by the gradient scaler"
    overrides: dict[str, Any] = {"train.optimizer.lr": _lr(f) / 3}
    clip = f.cfg("train.optimizer.grad_clip")
    if not finite(clip) or not clip or clip > 0.5:
        overrides["train.optimizer.grad_clip"] = 0.5
    if f.cfg("train.trainer.precision") == "16-mixed":
        overrides["train.trainer.precision"] = "bf16-mixed"
    advice = (
        "The run died on a NaN/inf, so the weights after that step are garbage and only the best "
        "checkpoint before it is usable. The usual cause is a step too large for the loss surface (a "
        "learning rate or an unbounded term such as sharpe): cut the learning rate, clip harder"
        + (", and leave fp16 for bf16" if "train.trainer.precision" in overrides else "")
        + ":"
    )
    return _finding(
        "non_finite",
        "Non-finite loss or gradient",
        fired,
        "critical",
        evidence,
        advice,
        train_command(f, "finite", overrides),
    )


@rule
def collapse(f: Facts, th: dict[str, Any]) -> Finding:
    """Predictions collapsed to a constant: SCALE (per-day std ratio) under ``collapse_scale``."""
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
    w = f.cfg("loss.weights.variance_floor")
    w = float(w) if finite(w) else 0.0
    overrides = {"loss.weights.variance_floor": max(1.0, 2 * w), "train.optimizer.lr": _lr(f) / 3}
    advice = (
        f"The predictions are nearly constant across stocks (spread under {floor:.0%} of the labels'): "
        "RankIC can still look alive on such a model, but its forecasts carry no size, and ranks built "
        "on noise-level differences turn over for nothing. Something (learning rate, a loss term that "
        "rewards shrinking) pushed the heads to zero; strengthen the variance floor and slow down:"
    )
    return _finding(
        "collapse",
        "Collapsed predictions",
        fired,
        "critical",
        evidence,
        advice,
        train_command(f, "no-collapse", overrides),
    )


@rule
def negative_ic(f: Facts, th: dict[str, Any]) -> Finding:
    """The model ranks backwards: RankIC below ``negative_ic_max`` at every horizon."""
    split = f.headline_split
    ric = {h: f.headline("rankic", h) for h in f.horizons}
    ic = {h: f.headline("ic", h) for h in f.horizons}
    known = [v for v in ric.values() if finite(v)]
    fired = bool(known) and all(v < th["negative_ic_max"] for v in known)
    evidence = f"RankIC on {split}: {_per_h(ric, 4)}; IC: {_per_h(ic, 4)}"
    valid = {h: f.valid.get(f"rankic_{h}d", math.nan) for h in f.horizons}
    if split == "test":
        evidence += f"; on validation (best epoch): {_per_h(valid, 4)}"
    valid_positive = split == "test" and any(finite(v) and v > 0 for v in valid.values())
    if valid_positive:
        advice = (
            "The ranking is positive on validation but negative on test at every horizon: what was "
            "selected on validation does not carry over (a regime change, or an early-stopping pick made "
            "on noise). Regularize harder and check the result across walk-forward folds before trusting "
            "either sign:"
        )
        d = f.cfg("model.dropout")
        overrides = {
            "model.dropout": min(0.5, (float(d) if finite(d) else 0.1) + 0.1),
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
    return _finding(
        "negative_ic",
        "Negative IC at every horizon",
        fired,
        "critical",
        evidence,
        advice,
        train_command(f, "sign-check", overrides),
    )


@rule
def dead_features(f: Facts, th: dict[str, Any]) -> Finding:
    """The dataset guard found features (or labels) that cannot carry information."""
    d = f.dataset
    if not d.reachable:
        return _finding(
            "dead_features", "Dead or constant features", False, "warning", f"not checked: {d.note}"
        )
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
    return _finding("dead_features", "Dead or constant features", fired, severity, evidence, advice, command)


@rule
def exploding_gradients(f: Facts, th: dict[str, Any]) -> Finding:
    """A module's gradient dwarfs the others' (``exploding_ratio`` times their median at that step)."""
    spikes = sorted(f.grads.spikes, key=lambda s: -s[3])
    fired = bool(spikes)
    modules = sorted({s[0] for s in spikes})
    # a single spike (typically the first step) is an oddity of initialization; repeated ones cost steps
    severity = "warning" if len(spikes) >= 2 else "info"
    if fired:
        shown = "; ".join(
            f"{m} {v:.2g} at {f.grads.x_label} {x:g} ({r:.1e}x the others' median)"
            for m, x, v, r in spikes[:3]
        )
        evidence = (
            f"{len(spikes)} gradient reading(s) above {th['exploding_ratio']:g}x the other modules: {shown}"
        )
    else:
        evidence = f"no module's gradient above {th['exploding_ratio']:g}x the others' ({f.grads.source})"
    clip = f.cfg("train.optimizer.grad_clip")
    overrides: dict[str, Any] = {"train.optimizer.lr": _lr(f) / 3}
    if any(m.startswith(("gat", "fusion")) for m in modules):
        overrides = {"model.graph.mode": "none"}
    advice = (
        f"With gradient clipping (grad_clip={clip}) a step whose norm is dominated by "
        f"{', '.join(modules)} is "
        "scaled down as a whole, so every other module learns almost nothing on it; without clipping, "
        "that step throws the weights far. A spike only at the first step points at initialization (a "
        "normalization of a near-constant input). Confirm where it comes from with this run:"
    )
    return _finding(
        "exploding_gradients",
        "Exploding gradient in a module",
        fired,
        severity,
        evidence,
        advice,
        train_command(f, "grad-check", overrides),
    )


@rule
def vanishing_gradients(f: Facts, th: dict[str, Any]) -> Finding:
    """A module whose median gradient norm is under ``vanishing_ratio`` times the largest module's."""
    g = f.grads
    fired = bool(g.vanishing)
    if g.reference is None:
        evidence = "no gradient readings"
    else:
        ref, level = g.reference
        shown = ", ".join(f"{m} {_g(g.level[m])}" for m in sorted(g.level, key=lambda m: -g.level[m]))
        evidence = f"median gradient norm per module ({g.source}): {shown}"
        if fired:
            evidence += f"; below {th['vanishing_ratio']:g}x {ref}: {', '.join(g.vanishing)}"
        if g.unused:
            evidence += f"; switched off in the config: {', '.join(g.unused)}"
    switch = {
        "fan": {"model.fan.enabled": False},
        "vsn": {"model.vsn.enabled": False},
        "gat": {"model.graph.mode": "none"},
        "fusion": {"model.graph.mode": "none"},
        "shortcut": {"model.shortcut": False},
    }
    first = g.vanishing[0] if g.vanishing else ""
    overrides = switch.get(first, {"train.optimizer.lr": _lr(f) * 3})
    advice = (
        f"{', '.join(g.vanishing)} receive(s) almost no gradient, so their weights stay at "
        "initialization and the parameters are dead weight (or the path through them is broken, e.g. "
        "a saturated gate). An ablation without the module tells whether it does anything; if RankIC "
        "holds, drop it, else look for what blocks its gradient:"
    )
    return _finding(
        "vanishing_gradients",
        "Vanishing gradient in a module",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, f"no-{first}" if first in switch else "lr-up", overrides),
    )


@rule
def dominated_loss(f: Facts, th: dict[str, Any]) -> Finding:
    """One loss term takes more than ``dominated_share`` of the gradient at the heads' outputs."""
    terms = [t for t in f.terms if finite(t.share_mean)]
    top = max(terms, key=lambda t: t.share_mean, default=None)
    fired = top is not None and top.share_mean > th["dominated_share"]
    if top is None:
        return _finding(
            "dominated_loss", "One loss term dominates", False, "warning", "no gradient shares logged"
        )
    shares = ", ".join(f"{t.name} {t.share_mean:.1%}" for t in terms)
    evidence = f"gradient share at the heads' outputs (mean over epochs): {shares}"
    if fired:
        evidence += f"; {top.name} at the last epoch: {top.share_last:.1%}"
    s, target = top.share_mean, th["dominated_target_share"]
    # shares scale with the weights, so weight x k moves the share from s to k*s / (k*s + 1 - s)
    k = target * (1 - s) / ((1 - target) * s) if 0 < s < 1 else 0.1
    weight = top.weight if top.weight is not None and top.weight > 0 else None
    overrides = {f"loss.weights.{top.name}": weight * k} if weight else {}
    advice = (
        f"{top.name} decides nearly every gradient step, so the other terms (their calibration, "
        "quantiles, variance floor) are along for the ride: a run with only this term would train about "
        f"the same. Shares grow with the weights, and under Adam only the weights' ratios matter (raising "
        f"the others is the same fix); scaling {top.name}'s weight by {k:.2g} brings it to about "
        f"{target:.0%} of the gradient:"
    )
    return _finding(
        "dominated_loss",
        "One loss term dominates",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, "rebalanced", overrides),
    )


@rule
def lr_oscillation(f: Facts, th: dict[str, Any]) -> Finding:
    """The epoch-end learning rate changes direction ``lr_oscillation_sign_changes`` times or more."""
    lr = f.lr
    fired = lr.sign_changes >= th["lr_oscillation_sign_changes"]
    shown = " ".join(f"{v:.1e}" for v in lr.values[:12]) + (" ..." if len(lr.values) > 12 else "")
    evidence = f"lr per epoch: {shown or 'not logged'}; direction changes: {lr.sign_changes}"
    if f.grads.resumed:
        evidence += f"; the run was resumed {f.grads.resumed} time(s)"
    advice = (
        "A schedule should warm up once and then only go down; a learning rate that rises again undoes "
        "the fine-tuning of the decay (a restarted schedule on resume, or a scheduler stepping on the "
        "wrong counter). Use a single warmup-cosine at a lower peak:"
    )
    overrides = {
        "train.scheduler.name": "warmup_cosine",
        "train.optimizer.lr": max(lr.values or [_lr(f)]) / 2,
    }
    return _finding(
        "lr_oscillation",
        "Learning rate oscillates",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, "one-schedule", overrides),
    )


@rule
def overfitting(f: Facts, th: dict[str, Any]) -> Finding:
    """Train loss falls while val loss rises for ``overfit_streak`` epochs, or val sits far above train."""
    c = f.curve
    by_streak = c.overfit_streak >= th["overfit_streak"]
    by_gap = (
        finite(c.gap_rel)
        and c.gap_rel > th["overfit_gap"]
        and finite(c.val_above_best)
        and c.val_above_best > th["plateau_min_improvement"]
    )
    fired = by_streak or by_gap
    evidence = (
        f"longest stretch of train loss falling while val loss rises: {c.overfit_streak} epoch(s)"
        + (f" (ending at epoch {c.overfit_streak_end})" if c.overfit_streak_end is not None else "")
        + f"; val loss at the last epoch {_pct(c.val_above_best)} vs its best (epoch {c.best_val_epoch}); "
        f"val - train gap {_pct(c.gap_rel)} of the best val loss"
    )
    d, wd = f.cfg("model.dropout"), f.cfg("train.optimizer.weight_decay")
    overrides = {
        "model.dropout": min(0.5, (float(d) if finite(d) else 0.1) + 0.1),
        "train.optimizer.weight_decay": max(0.05, 5 * float(wd)) if finite(wd) else 0.05,
    }
    advice = (
        "The model keeps fitting the training days after it stopped generalizing. The best checkpoint "
        "predates it, so the delivered model is not harmed, but the epochs after are wasted and the "
        "capacity is spent on noise. Regularize harder:"
    )
    return _finding(
        "overfitting",
        "Overfitting",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, "regularized", overrides),
    )


@rule
def plateau(f: Facts, th: dict[str, Any]) -> Finding:
    """Val loss flat (within ``plateau_flat_change``) for ``plateau_epochs`` epochs after its last gain."""
    c = f.curve
    fired = (
        c.plateau_epoch is not None
        and c.epochs_since_improvement >= th["plateau_epochs"]
        and finite(c.plateau_change)
        and abs(c.plateau_change) <= th["plateau_flat_change"]
    )
    if c.plateau_epoch is None:
        evidence = "no validation loss logged"
    else:
        evidence = (
            f"val loss last improved by more than {th['plateau_min_improvement']:.1%} at epoch "
            f"{c.plateau_epoch}; in the {c.epochs_since_improvement} epoch(s) since it changed by "
            f"{_pct(c.plateau_change, 2)}"
        )
    patience = f.cfg("train.early_stopping.patience")
    overrides: dict[str, Any] = {}
    if f.lr.scheduler != "plateau":
        overrides.update({"train.scheduler.name": "plateau", "train.scheduler.plateau_patience": 2})
    else:  # the scheduler already cuts on a plateau: cut sooner, from a lower start
        cut = f.cfg("train.scheduler.plateau_patience")
        overrides.update(
            {
                "train.scheduler.plateau_patience": max(1, int(cut) - 1) if finite(cut) else 1,
                "train.optimizer.lr": _lr(f) / 2,
            }
        )
    if not finite(patience) or patience > 3:
        overrides["train.early_stopping.patience"] = 3
    advice = (
        f"{c.epochs_since_improvement} epochs of compute bought nothing: the optimizer sits on a flat "
        "stretch at this learning rate. Cut the learning rate when validation stalls and stop sooner "
        "(if the plateau is also at a poor level, the model or the loss is the limit, not the epochs):"
    )
    return _finding(
        "plateau",
        "Validation plateau",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, "plateau-lr", overrides),
    )


@rule
def rmse_worse_than_naive(f: Facts, th: dict[str, Any]) -> Finding:
    """The point forecast's RMSE is above that of always predicting 0, at any horizon."""
    split = f.headline_split
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
    fired = bool(worse)
    evidence = f"RMSE / naive RMSE (always 0) on {split}: " + ("; ".join(parts) or "n/a")
    floor = f.cfg("loss.scale_floor")
    best_ic = max(ics, default=0.0)
    target = max(th["collapse_scale"], float(f"{best_ic:.1g}") if best_ic > 0 else 0.0)
    advice = (
        f"At {', '.join(f'{h}d' for h in worse)} the forecasts are worse than predicting no move. The "
        "ranking is not the problem: with IC rho the RMSE-optimal spread is about rho, and a spread "
        "beyond 2 rho loses to zero. If the forecasts are only ranked this costs nothing; if their size "
        "is used (sizing, expected-return inputs), "
    )
    if finite(floor) and floor > target:
        advice += (
            f"lower the variance floor, which holds the spread near loss.scale_floor={floor}, towards the "
            "IC while staying above the collapse line:"
        )
        overrides: dict[str, Any] = {"loss.scale_floor": target}
    else:
        w = f.cfg("loss.weights.huber")
        advice += (
            "give the regression term, the one that pulls the spread towards the IC, more say against "
            "the scale-free ranking terms:"
        )
        overrides = {"loss.weights.huber": 3 * float(w) if finite(w) and w > 0 else 1.0}
    return _finding(
        "rmse_worse_than_naive",
        "RMSE worse than naive",
        fired,
        "warning",
        evidence,
        advice,
        train_command(f, "calibrated", overrides),
    )


@rule
def graph_adds_nothing(f: Facts, th: dict[str, Any]) -> Finding:
    """The fusion gate learned to shut the graph out: gate mean under ``gate_min_mean``."""
    if not f.graph_enabled:
        return _finding(
            "graph_adds_nothing",
            "Graph adds nothing",
            False,
            "info",
            "the graph is switched off in this run (model.graph.mode / model.gat.enabled)",
        )
    g = f.gate_mean
    fired = finite(g) and g < th["gate_min_mean"]
    first = next((v for v in f.gate_series if finite(v)), math.nan)
    evidence = (
        f"fusion gate mean at the last epoch {_f(g)} (std {_f(f.gate_std)}; first epoch {_f(first)})"
        if finite(g)
        else "no gate statistics logged"
    )
    advice = (
        "The fusion gate has closed: the model adds almost none of the GAT's output to each stock's "
        "embedding, so the graph costs compute (graph building, attention) and brings no information at "
        "this setting. Confirm with an ablation; if RankIC holds, train without it:"
    )
    return _finding(
        "graph_adds_nothing",
        "Graph adds nothing",
        fired,
        "info",
        evidence,
        advice,
        train_command(f, "no-graph", {"model.graph.mode": "none"}),
    )


def healthy_recommendation(facts: Facts) -> tuple[str, str]:
    """What to do after a healthy run: measure the seed noise before trusting the next comparison."""
    seed = facts.cfg("train.seed")
    new_seed = int(seed) + 1 if finite(seed) else 1
    command = train_command(facts, f"seed{new_seed}", {"train.seed": new_seed})
    return (
        "No rule fired. Keep this run as the baseline; before reading anything into the next change, "
        "rerun it with another seed: the RankIC difference between two seeds is the smallest effect any "
        "comparison can claim.",
        command,
    )


def _last(f: Facts, column: str) -> float:
    if column not in f.metrics.columns:
        return math.nan
    values = [v for v in f.metrics[column].to_list() if v is not None and math.isfinite(v)]
    return values[-1] if values else math.nan


def _pct(x: float, digits: int = 1) -> str:
    return fmt(x, f"+.{digits}%")
