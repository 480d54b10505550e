"""The report of ``atft compare``: the table as markdown, and its two plots.

``render_compare_markdown`` turns the rows (one per model: mean and std over seeds) and the paired tests
into ``compare.md``; ``plot_compare`` draws each model's cumulative net return of the 5-day book on shared
axes and the RankIC per horizon with the seed spread as error bars.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are drawn on machines without a display
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from atft.reporting.numbers import finite, fmt  # noqa: E402

DPI = 100


def _pm(row: dict[str, Any], key: str, spec: str) -> str:
    value, std = row.get(key, math.nan), row.get(f"{key}_std", math.nan)
    if not finite(value):
        return "-"
    text = format(value, spec)
    return f"{text} ± {format(std, spec)}" if finite(std) else text


# Models that need the future (the oracle) or know nothing (random) are never a choice.
NOT_CHOSEN = ("oracle", "random")
RULES = ("momentum", "reversal")


def chosen_on_validation(rows: list[dict[str, Any]]) -> list[str]:
    """Which model, and which rule, a user would pick by validation RankIC at 5 days, before any test day:
    the honest rivals of a model on a test segment where the winners changed (docs/compare.md)."""

    def best(names: list[str]) -> dict[str, Any] | None:
        scored = [r for r in rows if r["model"] in names and finite(r.get("valid_rankic_5d", math.nan))]
        return max(scored, key=lambda r: r["valid_rankic_5d"], default=None)

    model = best([r["model"] for r in rows if r["model"] not in NOT_CHOSEN])
    rule = best([r["model"] for r in rows if r["model"] in RULES])
    same = model is not None and rule is not None and model["model"] == rule["model"]

    def said(kind: str, pick: dict[str, Any]) -> str:
        return (
            f"{kind} **{pick['model']}** (validation {pick['valid_rankic_5d']:.4f}, test "
            f"{fmt(pick.get('rankic_5d'), '.4f')})"
        )

    parts = [said("model and rule" if same else "model", model)] if model is not None else []
    if rule is not None and not same:
        parts.append(said("rule", rule))
    if not parts:
        return []
    return [
        "Chosen on validation (the best validation RankIC at 5 days, before any test day): "
        + "; ".join(parts)
        + ".",
        "",
    ]


def render_compare_markdown(
    rows: list[dict[str, Any]], paired: list[dict[str, Any]], horizons: list[int], settings: dict[str, Any]
) -> str:
    """``compare.md``: settings, the per-horizon ranking table, the book table, costs, and the paired tests."""
    lines = [
        "# Model comparison",
        "",
        f"Dataset `{settings.get('data_path')}`, preset `{settings.get('preset')}`, "
        f"overrides `{' '.join(settings.get('overrides') or []) or '-'}`; seeds per model "
        f"{', '.join(f'{m} {k}' for m, k in (settings.get('seeds') or {}).items())}; {settings.get('n_folds')} "
        "fold(s). Every model is scored on the same test rows. "
        "Values are mean ± std over seeds (a seed's folds averaged first).",
        "",
        "## Ranking: test RankIC per horizon (its IR, Newey-West t-stat)",
        "",
        "| model | "
        + " | ".join(f"RankIC {h}d" for h in horizons)
        + " | "
        + " | ".join(f"RankIC IR {h}d" for h in horizons)
        + " | "
        + " | ".join(f"NW t {h}d" for h in horizons)
        + " | capture 5d | valid RankIC 5d |",
        "|---" * (1 + 3 * len(horizons) + 2) + "|",
    ]
    for row in rows:
        cells = [_pm(row, f"rankic_{h}d", ".4f") for h in horizons]
        cells += [_pm(row, f"rankicir_{h}d", ".2f") for h in horizons]
        cells += [_pm(row, f"rankic_nw_tstat_{h}d", ".1f") for h in horizons]
        cells.append(_pm(row, "capture_5d", ".0%") if finite(row.get("capture_5d", math.nan)) else "-")
        cells.append(_pm(row, "valid_rankic_5d", ".4f"))
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    lines += ["", *chosen_on_validation(rows)]
    lines += [
        "",
        "## The 5-day staggered long-short book, after costs (book Sharpe), and what each model costs",
        "",
        "| model | book Sharpe (net) | annual return | max drawdown | daily turnover | train s | parameters | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {_pm(row, 'book_sharpe', '.2f')} | {_pm(row, 'book_annual_return', '.1%')} | "
            f"{_pm(row, 'book_max_drawdown', '.1%')} | {_pm(row, 'book_mean_turnover', '.0%')} | "
            f"{_pm(row, 'seconds', '.0f')} | {_fmt_int(row.get('parameters'))} | {_pm(row, 'peak_mb', '.0f')} |"
        )
    if paired:
        first = paired[0]["model"]
        lines += [
            "",
            f"## Paired tests: {first} against each model, daily RankIC difference",
            "",
            "Mean of the daily difference (seeds averaged per day), its plain t-stat and its Newey-West t-stat "
            "with h - 1 lags (overlapping labels), and the share of days the first model wins.",
            "",
            "| against | horizon | mean difference | t | NW t | days | win rate |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in paired:
            lines.append(
                f"| {p['against']} | {p['horizon']}d | {_f(p.get('mean_diff'), '+.4f')} | {_f(p.get('tstat'), '.1f')} "
                f"| {_f(p.get('nw_tstat'), '.1f')} | {p.get('n_days', 0)} | {_f(p.get('win_rate'), '.0%')} |"
            )
    lines += ["", "Plots: `cumulative_net.png`, `rankic.png`.", ""]
    return "\n".join(lines)


def plot_compare(
    rows: list[dict[str, Any]], curves: dict[str, pl.DataFrame], horizons: list[int], paths: dict[str, Path]
) -> dict[str, Path]:
    """Draw ``cumulative_net.png`` (shared axes, one line per model) and ``rankic.png`` (bars with error bars)."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for model, curve in curves.items():
        if curve.height:
            net = curve["net"].fill_null(0.0).to_numpy()
            ax.plot(curve["date"].to_list(), np.cumprod(1.0 + net) - 1.0, label=model, linewidth=1.2)
    ax.set_title("5-day staggered long-short book: cumulative net return (test, seeds averaged)")
    ax.set_ylabel("cumulative net return")
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    _save(fig, paths["cumulative_net"])

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(horizons))
    for i, row in enumerate(rows):
        means = [row.get(f"rankic_{h}d", math.nan) for h in horizons]
        stds = [row.get(f"rankic_{h}d_std", math.nan) for h in horizons]
        stds = [s if finite(s) else 0.0 for s in stds]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=row["model"])
    ax.set_xticks(x, [f"{h}d" for h in horizons])
    ax.set_ylabel("test RankIC (mean over seeds, ± std)")
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncols=2)
    _save(fig, paths["rankic"])
    return paths


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _f(value: Any, spec: str) -> str:
    return fmt(value, spec, missing="-")


def _fmt_int(value: Any) -> str:
    return f"{int(value):,}" if finite(value) and value else "-"
