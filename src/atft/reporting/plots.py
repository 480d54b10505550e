"""The run doctor's PNG plots: loss curves, validation metrics, learning rate, loss composition, gradients,
and the test period's tear sheet (daily RankIC, mean label by prediction decile, the book's return and
drawdown).

Each function draws one figure from the doctor's ``Facts`` and returns its path, or None when the run
logged nothing to draw. Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never
through pyplot's global state, so the doctor needs no display and leaves no figure open.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: a report is drawn on machines without a display
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from atft.reporting.facts import Facts  # noqa: E402
from atft.reporting.numbers import finite  # noqa: E402

DPI = 100
# The other horizons' rolling means beside the graded one's (green) and its daily RankIC (blue).
OTHER_COLORS = ("darkorange", "mediumpurple", "sienna", "grey", "goldenrod", "teal")


def make_plots(facts: Facts, out_dir: Path) -> dict[str, Path]:
    """Draw every plot the run has data for into ``out_dir``; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "loss_curves": loss_curves,
        "val_metrics": val_metrics,
        "lr_schedule": lr_schedule,
        "loss_composition": loss_composition,
        "gradient_flow": gradient_flow,
        "test_rankic": period_rankic,
        "test_deciles": period_deciles,
        "test_book": period_book,
    }
    paths = {}
    for name, draw in makers.items():
        path = draw(facts, out_dir / f"{name}.png")
        if path is not None:
            paths[name] = path
    return paths


def loss_curves(facts: Facts, path: Path) -> Path | None:
    """Train and validation loss per epoch, with the best and the plateau epochs marked."""
    c = facts.curve
    if not c.epochs or not any(finite(v) for v in c.train + c.val):
        return None
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    ax.plot(c.epochs, c.train, marker="o", label="train loss")
    ax.plot(c.epochs, c.val, marker="o", label="validation loss")
    if c.best_val_epoch is not None:
        ax.axvline(
            c.best_val_epoch,
            color="green",
            linestyle="--",
            linewidth=1,
            label=f"best val (epoch {c.best_val_epoch})",
        )
    if facts.best_epoch is not None and facts.best_epoch != c.best_val_epoch:
        ax.axvline(
            facts.best_epoch,
            color="purple",
            linestyle=":",
            linewidth=1,
            label=f"best {facts.monitor} (epoch {facts.best_epoch})",
        )
    if c.plateau_epoch is not None and c.epochs_since_improvement > 0:
        ax.axvspan(c.plateau_epoch, c.epochs[-1], color="grey", alpha=0.15, label="no meaningful gain")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.set_title("Loss curves")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def val_metrics(facts: Facts, path: Path) -> Path | None:
    """Validation RankIC and SCALE per horizon per epoch."""
    m = facts.metrics
    epochs = [int(e) for e in m["epoch"].to_list()] if "epoch" in m.columns else []
    series = {
        key: {h: m[f"val_{key}_{h}d"].to_list() for h in facts.horizons if f"val_{key}_{h}d" in m.columns}
        for key in ("rankic", "scale")
    }
    if not epochs or not any(series.values()):
        return None
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, (key, by_h) in zip(axes, series.items(), strict=True):
        for h, values in by_h.items():
            ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=f"{h}d")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"validation {key.upper() if key == 'scale' else 'RankIC'}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def lr_schedule(facts: Facts, path: Path) -> Path | None:
    """The learning rate at each epoch's end, reductions marked."""
    lr = facts.lr.values
    if not lr:
        return None
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    ax.plot(range(len(lr)), lr, marker="o")
    for epoch, _ in facts.lr.reductions:
        ax.axvline(epoch, color="red", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate")
    ax.set_title(f"Learning rate ({facts.lr.scheduler or 'scheduler unknown'})")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def loss_composition(facts: Facts, path: Path) -> Path | None:
    """Each loss term's share of the gradient (stacked) and its weighted value, per epoch."""
    m = facts.metrics
    names = [t.name for t in facts.terms]
    shares = {n: m[f"gradshare_{n}"].to_list() for n in names if f"gradshare_{n}" in m.columns}
    values = {n: m[f"loss_{n}"].to_list() for n in names if f"loss_{n}" in m.columns}
    if "epoch" not in m.columns or not (shares or values):
        return None
    epochs = [int(e) for e in m["epoch"].to_list()]
    fig = Figure(figsize=(10, 3.8))
    ax_share, ax_value = fig.subplots(1, 2)
    if shares:
        ax_share.stackplot(
            epochs,
            *[[0.0 if v is None or not finite(v) else v for v in s] for s in shares.values()],
            labels=list(shares),
        )
        ax_share.set_ylim(0, 1)
        ax_share.legend(fontsize=7, loc="lower left")
    ax_share.set_title("gradient share at the heads' outputs")
    ax_share.set_xlabel("epoch")
    ax_share.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, series in values.items():
        ax_value.plot(epochs, [math.nan if v is None else v for v in series], marker="o", label=name)
    ax_value.set_yscale("symlog", linthresh=1e-4)
    ax_value.set_title("weighted loss value")
    ax_value.set_xlabel("epoch")
    ax_value.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_value.legend(fontsize=7)
    ax_value.grid(alpha=0.3)
    return _save(fig, path)


def gradient_flow(facts: Facts, path: Path) -> Path | None:
    """Gradient L2 norm per top-level module (log scale), with the degeneracy guard's resets marked."""
    series = {m: pts for m, pts in facts.grads.series.items() if pts and m not in facts.grads.unused}
    if not series:
        return None
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    for module, points in series.items():
        xs = [x for x, v in points if v > 0]
        ys = [v for _, v in points if v > 0]
        if ys:
            ax.plot(xs, ys, marker=".", label=module)
    if facts.grads.x_label == "step":
        for step in facts.grads.reset_steps:
            if isinstance(step, int | float):
                ax.axvline(step, color="red", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel(facts.grads.x_label)
    ax.set_ylabel("gradient L2 norm")
    ax.set_title("Gradient flow per module")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def period_rankic(facts: Facts, path: Path) -> Path | None:
    """The test period's daily RankIC at the graded horizon with its rolling mean (bold), the other horizons'
    rolling means (thin), and the zero line."""
    ts = facts.tear_sheet
    h = ts.horizon
    if h not in ts.rankic or not any(finite(v) for v in ts.rankic[h]):
        return None
    x, dated = _days(ts.dates)
    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    ax.plot(x, ts.rankic[h], color="steelblue", alpha=0.45, linewidth=0.8, label=f"daily RankIC {h}d")
    others = [(o, r) for o, r in ts.rolling.items() if o != h and any(finite(v) for v in r)]
    for i, (other, rolling) in enumerate(others):
        color = OTHER_COLORS[i % len(OTHER_COLORS)]
        ax.plot(x, rolling, color=color, linewidth=0.9, label=f"{ts.window}-day mean {other}d")
    if any(finite(v) for v in ts.rolling.get(h, [])):
        ax.plot(x, ts.rolling[h], color="darkgreen", linewidth=2.4, label=f"{ts.window}-day mean {h}d")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"Test period: daily RankIC ({h}d) and its {ts.window}-day rolling mean")
    ax.set_ylabel("RankIC")
    _day_axis(ax, dated)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _save(fig, path)


def period_deciles(facts: Facts, path: Path) -> Path | None:
    """Mean forward return (label) by prediction decile, one panel per horizon, the graded one titled bold."""
    ts = facts.tear_sheet
    deciles = {h: v for h, v in ts.deciles.items() if any(finite(x) for x in v)}
    if not deciles:
        return None
    fig = Figure(figsize=(min(3.0 * len(deciles) + 1.0, 13), 3.4))
    axes = fig.subplots(1, len(deciles), squeeze=False)[0]
    for ax, (h, values) in zip(axes, deciles.items(), strict=True):
        heights = [v if finite(v) else 0.0 for v in values]
        colors = ["seagreen" if v > 0 else "indianred" for v in heights]
        ax.bar(range(1, len(values) + 1), heights, color=colors)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{h}d", fontweight="bold" if h == ts.horizon else "normal")
        ax.set_xlabel("prediction decile (10 = highest)")
        ax.set_xticks(range(1, len(values) + 1))
        ax.tick_params(axis="x", labelsize=7)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("mean label (forward return)")
    fig.suptitle("Test period: mean forward return by prediction decile", fontsize=11)
    return _save(fig, path)


def period_book(facts: Facts, path: Path) -> Path | None:
    """The backtest's cumulative net return (gross thin) and, underneath, its drawdown."""
    ts = facts.tear_sheet
    if not ts.cumulative:
        return None
    x, dated = _days(ts.book_dates)
    fig = Figure(figsize=(9, 4.6))
    ax, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    if ts.gross:
        gross = [v - 1.0 for v in _wealth(ts.gross)]
        ax.plot(x, gross, color="grey", linewidth=0.9, label="gross of costs")
    ax.plot(x, ts.cumulative, color="navy", linewidth=1.8, label="net of costs")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("cumulative return")
    hold = f", {ts.holding_days} staggered sub-books" if ts.holding_days else ""
    split = "" if ts.book_split == "test" else f", {ts.book_split} split"
    ax.set_title(f"Long-short book on the {ts.book_horizon}d forecast ({ts.book}{hold}{split})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax_dd.fill_between(x, ts.drawdown, 0.0, color="indianred", alpha=0.5, linewidth=0)
    ax_dd.plot(x, ts.drawdown, color="darkred", linewidth=0.8)
    ax_dd.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_dd.set_ylabel("drawdown")
    ax_dd.grid(alpha=0.3)
    _day_axis(ax_dd, dated)
    return _save(fig, path)


def _wealth(returns: list[float]) -> list[float]:
    out, w = [], 1.0
    for r in returns:
        w *= 1.0 + r
        out.append(w)
    return out


def _days(dates: list[Any]) -> tuple[list[Any], bool]:
    """Dates to plot against, and whether they are dates (else the day's position in the period)."""
    if dates and all(isinstance(d, dt.date) for d in dates):
        return dates, True
    return list(range(len(dates))), False


def _day_axis(ax: Any, dated: bool) -> None:
    if dated:
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        ax.set_xlabel("day of the period")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
