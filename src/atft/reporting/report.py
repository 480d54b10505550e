"""Render a ``Diagnosis`` as report.md, and as a self-contained report.html (plots inlined as base64).

The ten sections are built once as a list of simple blocks (paragraph, table, image, code, list) and
then written out by a Markdown and an HTML renderer, so that both files always say the same thing.
"""

from __future__ import annotations

import base64
import html as html_lib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atft.reporting.facts import Diagnosis, Facts, TearSheetFacts
from atft.reporting.numbers import finite, fmt
from atft.reporting.rules import healthy_recommendation

SECTION_TITLES = (
    "1. Executive summary",
    "2. Loss curves",
    "3. Learning-rate schedule",
    "4. Validation metrics",
    "5. Loss composition",
    "6. Gradient flow",
    "7. Root causes",
    "8. Grade",
    "9. Test period",
    "10. Factor ICs by period",
)
# Rows of the factor-IC table: the strongest features of training, then those of the later segment.
FACTOR_ROWS = 12
# The two Sharpe ratios the report shows are of different portfolios (docs/metrics.md, docs/backtest.md):
# the evaluation's quintile long-short book rebalanced daily on 1-day returns, and the backtest's book.
DAILY_SHARPE = "daily L/S Sharpe"


@dataclass
class Section:
    """A numbered report section: a title and its blocks, in order."""

    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, facts_plots: dict[str, Any], name: str, alt: str) -> None:
        if name in facts_plots:
            self.blocks.append(("img", facts_plots[name], alt))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def items(self, entries: list[str]) -> None:
        if entries:
            self.blocks.append(("list", entries))


def render_markdown(d: Diagnosis) -> str:
    """report.md: the sections as GitHub Markdown, plots linked from ``report/``."""
    out = [f"# Run report: {d.run_dir.name}", ""]
    for section in build_sections(d):
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            kind = block[0]
            if kind == "p":
                out += [block[1], ""]
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                path, alt = block[1], block[2]
                out += [f"![{alt}]({path.relative_to(d.run_dir).as_posix()})", ""]
            elif kind == "code":
                out += ["```", block[1], "```", ""]
            elif kind == "list":
                out += [f"- {item}" for item in block[1]] + [""]
    return "\n".join(out).rstrip() + "\n"


def render_html(d: Diagnosis) -> str:
    """report.html: one file with inline CSS and the plots as base64 data URIs (no external resource)."""
    body = [f"<h1>Run report: {_esc(d.run_dir.name)}</h1>"]
    for section in build_sections(d):
        body.append(f"<h2>{_esc(section.title)}</h2>")
        for block in section.blocks:
            kind = block[0]
            if kind == "p":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                body.append(f'<img alt="{_esc(block[2])}" src="data:image/png;base64,{data}">')
            elif kind == "code":
                body.append(f"<pre><code>{_esc(block[1])}</code></pre>")
            elif kind == "list":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}img{max-width:100%;display:block;margin:.5em 0}"
        "code{background:#f6f6f6;padding:0 .2em}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Run report: '
        f"{_esc(d.run_dir.name)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------------
# the sections
# ------------------------------------------------------------------------------------------------------


def build_sections(d: Diagnosis) -> list[Section]:
    """The ten sections of the report, each computed from the run's own files."""
    f = d.facts
    return [
        _summary(d, f),
        _loss_curves(d, f),
        _lr(d, f),
        _validation(d, f),
        _composition(d, f),
        _gradients(d, f),
        _root_causes(d),
        _grade(d, f),
        _test_period(d, f),
        _factor_ics(d, f),
    ]


def _summary(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[0])
    main = d.main
    s.p(f"**Status: {d.status}**" + (f" ({main.severity}: {main.title})" if main else " (no rule fired)"))
    s.p(
        f"Best epoch {_i(f.best_epoch)} of {f.epochs_run} run (by `{f.monitor}`, {f.monitor_mode}). "
        f"Grade: **{d.grade.level}** on {d.grade.metric} = {_n(d.grade.value)} ({d.grade.split})."
    )
    header = [
        "horizon",
        "val RankIC",
        "test RankIC",
        f"SCALE ({f.headline_split})",
        f"{DAILY_SHARPE} ({f.headline_split})",
    ]
    if f.oracle:
        header += ["oracle RankIC", "capture"]
    rows = []
    for h in f.horizons:
        row = [
            f"{h}d",
            _n(f.valid.get(f"rankic_{h}d")),
            _n(f.test.get(f"rankic_{h}d")),
            _n(f.headline("scale", h)),
            _n(f.headline("sharpe", h), 2),
        ]
        if f.oracle:
            row += [_n(f.oracle.get(h)), _pct(f.capture.get(h))]
        rows.append(row)
    s.table(header, rows)
    tested = (
        f"test numbers from {f.test_source}"
        if f.test
        else "no test metrics (no summary.json or eval/metrics.json)"
    )
    s.p(f"Validation numbers from {f.valid_source}; {tested}.")
    ts = f.tear_sheet
    if ts.book:
        s.p(
            f"Backtest `{ts.book}` ({ts.book_split}): {book_sharpe(ts)} "
            f"{_n(ts.book_stats.get('sharpe'), 2)}, annual return {_pct(ts.book_stats.get('annual_return'))}, "
            f"max drawdown {_pct(ts.book_stats.get('max_drawdown'))} (section 9)."
        )
    if f.synthetic and not f.oracle:
        s.p("Synthetic dataset, but no oracle RankIC is recorded yet: no capture ratio, graded on RankIC.")
    if main:
        s.p(f"**Recommendation.** {main.recommendation.split(chr(10))[0]}")
        s.code(main.command)
        others = [f"{x.name} ({x.severity})" for x in d.fired[1:]]
        if others:
            s.p("Also fired: " + ", ".join(others) + " (section 7).")
    else:
        text, command = healthy_recommendation(f)
        s.p(f"**Recommendation.** {text}")
        s.code(command)
    s.p(f"Dataset: {f.dataset.note}.")
    s.items([f"Note: {n}" for n in f.notes])
    return s


def _loss_curves(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[1])
    c, th = f.curve, d.thresholds
    s.image(d.plots, "loss_curves", "train and validation loss per epoch")
    if c.best_val_epoch is None:
        s.p("No validation loss was logged: no curve to read.")
        return s
    s.p(f"Lowest validation loss {c.best_val:.4f} at epoch {c.best_val_epoch}.")
    if c.epochs_since_improvement:
        plateau = next(x for x in d.findings if x.name == "plateau")
        verdict = "a plateau" if plateau.fired else "not (yet) a plateau"
        s.p(
            "**Plateau.** Validation loss stopped improving by more than "
            f"{th['plateau_min_improvement']:.1%} after epoch {c.plateau_epoch}; over the "
            f"{c.epochs_since_improvement} epoch(s) since it changed by "
            f"{_pct(c.plateau_change, 2, sign=True)}: {verdict} "
            f"(threshold {th['plateau_epochs']} epochs within "
            f"{th['plateau_flat_change']:.0%})."
        )
    else:
        s.p(f"**Plateau.** Validation loss was still improving at the last epoch ({c.epochs[-1]}).")
    overfit = next(x for x in d.findings if x.name == "overfitting")
    s.p(f"**Overfitting.** {'Yes' if overfit.fired else 'No'}: {overfit.evidence}.")
    rows = []
    for i, epoch in enumerate(c.epochs):
        monitor = c.monitor_values[i] if i < len(c.monitor_values) else math.nan
        lr = f.lr.values[i] if i < len(f.lr.values) else math.nan
        rows.append([str(epoch), _n(c.train[i], 4), _n(c.val[i], 4), _n(monitor, 4), _g(lr)])
    if len(rows) > 30:
        rows = rows[:10] + [["...", "", "", "", ""]] + rows[-15:]
    s.table(["epoch", "train loss", "val loss", c.monitor, "lr"], rows)
    return s


def _lr(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[2])
    lr = f.lr
    s.image(d.plots, "lr_schedule", "learning rate per epoch")
    if not lr.values:
        s.p("No learning rate was logged.")
        return s
    reductions = ", ".join(f"epoch {e} (x{r:.2f})" for e, r in lr.reductions) or "none"
    oscillation = next(x for x in d.findings if x.name == "lr_oscillation")
    s.items(
        [
            f"Scheduler: {lr.scheduler or 'unknown'} (config); "
            f"peak {lr.values[lr.peak_epoch or 0]:.2e} at epoch {lr.peak_epoch}.",
            f"Warmup: {lr.warmup_epochs} epoch(s) of rising learning rate at the start.",
            f"Decay: {'yes' if lr.decays else 'no'}, "
            f"from {max(lr.values):.2e} to {lr.values[-1]:.2e} at the last epoch.",
            f"Plateau reductions: {reductions}.",
            f"Oscillation: {lr.sign_changes} change(s) of direction "
            f"({'oscillates' if oscillation.fired else 'no oscillation'}; "
            f"threshold {d.thresholds['lr_oscillation_sign_changes']}).",
        ]
    )
    return s


METRIC_COLUMNS = (
    ("MAE", "mae", 4),
    ("RMSE", "rmse", 4),
    ("R²", "r2", 3),
    ("IC", "ic", 4),
    ("RankIC", "rankic", 4),
    ("naive RMSE", "naive_rmse", 4),
    ("SCALE", "scale", 3),
    (DAILY_SHARPE, "sharpe", 2),
)


def _validation(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[3])
    for split, values, source in (("Validation", f.valid, f.valid_source), ("Test", f.test, f.test_source)):
        if not values:
            s.p(f"{split}: no metrics ({source}).")
            continue
        rows = [
            [f"{h}d"] + [_n(values.get(f"{key}_{h}d"), digits) for _, key, digits in METRIC_COLUMNS]
            for h in f.horizons
        ]
        s.p(
            f"**{split}** ({source}; {DAILY_SHARPE}: the quintile long-short book rebalanced daily on 1-day "
            f"returns, net of {_g(f.config.eval.cost_bps)} bps per unit traded):"
        )
        s.table(["horizon"] + [label for label, _, _ in METRIC_COLUMNS], rows)
    s.image(d.plots, "val_metrics", "validation RankIC and SCALE per horizon per epoch")
    return s


def _composition(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[4])
    if not f.terms:
        s.p("No loss terms were logged.")
        return s
    rows = [
        [
            t.name,
            _g(t.weight) if t.weight is not None else "n/a",
            _g(t.value_last),
            _pct(t.share_mean),
            _pct(t.share_last),
            "ranking" if t.financial else "",
        ]
        for t in f.terms
    ]
    s.table(
        [
            "term",
            "weight",
            "weighted value (last epoch)",
            "gradient share (mean)",
            "gradient share (last)",
            "kind",
        ],
        rows,
    )
    minimum = d.thresholds["financial_share_min"]
    financial = [t for t in f.terms if t.financial]
    if financial:
        share = f.financial_share
        verdict = "have real influence" if share >= minimum else "have no real influence"
        s.p(
            f"The ranking terms ({', '.join(t.name for t in financial)}) take {share:.1%} of the gradient "
            "together: "
            f"they {verdict} (threshold {minimum:.0%})."
        )
    else:
        s.p(
            "No ranking term (rankic, cs_ic, sharpe, listnet, ranknet) is active: "
            "the model is a pure regressor."
        )
    dominated = next(x for x in d.findings if x.name == "dominated_loss")
    s.p(
        f"Dominance: {'yes' if dominated.fired else 'no'} "
        f"(a term above {d.thresholds['dominated_share']:.0%})."
    )
    s.image(d.plots, "loss_composition", "gradient share and weighted value of each loss term")
    return s


def _gradients(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[5])
    g = f.grads
    s.image(d.plots, "gradient_flow", "gradient norm per module")
    if g.level:
        spiky = {m for m, *_ in g.spikes}
        rows = []
        for m in sorted(g.level, key=lambda m: -g.level[m]):
            state = "unused (switched off)" if m in g.unused else "vanishing" if m in g.vanishing else "ok"
            if m in spiky:
                state += f", {sum(1 for x in g.spikes if x[0] == m)} spike(s)"
            x, peak = g.peak[m]
            rows.append([m, _g(g.level[m]), f"{_g(peak)} at {g.x_label} {x:g}", state])
        s.table(["module", "median norm", "largest", "state"], rows)
        ref = f"{g.reference[0]} ({_g(g.reference[1])})" if g.reference else "n/a"
        s.p(
            f"From {g.source}. Vanishing means a median under {d.thresholds['vanishing_ratio']:g}x the "
            f"reference module {ref}; a spike is a reading above {d.thresholds['exploding_ratio']:g}x the "
            "other modules' median at the same step."
        )
    else:
        s.p("No gradient norms were logged.")
    s.items(
        [
            f"Degeneracy guard: {g.degeneracy_warnings} warning(s), {g.resets} head reset(s)"
            + (f" at steps {', '.join(str(x) for x in g.reset_steps[:10])}" if g.reset_steps else "")
            + ".",
            f"Non-finite stops: {len(g.nonfinite)}; fp16 overflow steps skipped: {g.overflow_skips}.",
        ]
    )
    return s


def _root_causes(d: Diagnosis) -> Section:
    s = Section(SECTION_TITLES[6])
    fired = d.fired
    rows = [[x.name, "FIRED" if x.fired else "ok", x.severity, x.evidence] for x in fired]
    rows += [[x.name, "ok", x.severity, x.evidence] for x in d.findings if not x.fired]
    s.table(["rule", "result", "severity", "evidence"], rows)
    for i, x in enumerate(fired, 1):
        s.p(
            f"**{i}. {x.title}** (`{x.name}`, {x.severity}{', main problem' if i == 1 else ''}). "
            f"Evidence: {x.evidence}."
        )
        s.p(x.recommendation.split("\n")[0])
        s.code(x.command)
    if not fired:
        s.p("No rule fired.")
    return s


def _grade(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[7])
    g = d.grade
    s.p(f"**{g.level}**: {g.metric} = {_n(g.value)} on {g.split}.")
    kind = g.metric.split("_")[0]
    s.table(
        ["level", "threshold", "reached"],
        [
            [name, _n(value), "yes" if math.isfinite(g.value) and g.value >= value else "no"]
            for name, value in g.levels.items()
        ],
    )
    if kind == "capture":
        s.p("Capture ratio = the model's test RankIC / the synthetic oracle's on the same rows (section 1).")
    rows = []
    for h in f.horizons:
        value = f.capture.get(h) if kind == "capture" else f.headline("rankic", h)
        reached = [
            n for n, v in g.levels.items() if value is not None and math.isfinite(value) and value >= v
        ]
        rows.append([f"{h}d", _n(value), reached[-1] if reached else "below minimum"])
    s.table(["horizon", kind, "level"], rows)
    s.p(
        "Levels are configurable: `diagnose_run(..., thresholds={...})`, "
        "the run's `eval.grading` for RankIC; "
        "defaults in `atft.reporting.rules.DEFAULT_THRESHOLDS` (docs/doctor.md). Thresholds in effect: "
        + ", ".join(f"{k}={v}" for k, v in d.thresholds.items())
        + "."
    )
    return s


def _test_period(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[8])
    ts = f.tear_sheet
    s.items([f"Note: {n}" for n in ts.notes])
    if not ts.evaluated and ts.book is None:
        return s
    if ts.dates:
        s.p(
            f"The test segment, {ts.dates[0]} to {ts.dates[-1]} ({len(ts.dates)} days), from "
            "eval/per_day.parquet and eval/metrics.json"
            + (f", and backtest/{ts.book}/" if ts.book else "")
            + "."
        )
    s.image(d.plots, "test_rankic", f"daily RankIC and its {ts.window}-day rolling mean")
    s.image(d.plots, "test_deciles", "mean forward return by prediction decile")
    shown = sorted(set(ts.rankic) | set(ts.deciles))
    if shown:
        rows = []
        for h in shown:
            daily = _finite(ts.rankic.get(h, []))
            rolling = _finite(ts.rolling.get(h, []))
            deciles = ts.deciles.get(h, [])
            spread = deciles[-1] - deciles[0] if len(deciles) >= 2 else math.nan
            rows.append(
                [
                    f"**{h}d**" if h == ts.horizon else f"{h}d",
                    _n(float(np.mean(daily)) if daily else math.nan),
                    _pct(float(np.mean([v > 0 for v in daily])) if daily else math.nan),
                    _n(rolling[-1] if rolling else math.nan),
                    _n(min(rolling) if rolling else math.nan),
                    _n(max(rolling) if rolling else math.nan),
                    _pct(deciles[0] if deciles else math.nan, 3),
                    _pct(deciles[-1] if deciles else math.nan, 3),
                    _pct(spread, 3),
                    _n(f.test.get(f"sharpe_{h}d"), 2),
                ]
            )
        w = ts.window
        s.table(
            [
                "horizon",
                "mean daily RankIC",
                "days RankIC > 0",
                f"{w}-day mean: last",
                f"{w}-day mean: min",
                f"{w}-day mean: max",
                "decile 1 mean label",
                "decile 10 mean label",
                "decile 10 − 1",
                DAILY_SHARPE,
            ],
            rows,
        )
        s.p(
            f"RankIC is the day's rank correlation of prediction and label; its {w}-day rolling mean is the "
            f"mean over the last {w} trading days (from day {w} on). Deciles rank each day's stocks by "
            "prediction (10 = highest) and average their labels over the days (decile_mean_label of "
            f"eval/metrics.json); a working model's bars rise from left to right. The {DAILY_SHARPE} is "
            "the evaluation's: a quintile long-short book rebalanced every day and held one day on 1-day "
            "returns (docs/metrics.md)."
        )
    s.image(d.plots, "test_book", "cumulative net return of the backtest and its drawdown")
    if ts.book:
        st = ts.book_stats
        s.table(
            [
                "backtest",
                book_sharpe(ts),
                "annual return",
                "annual volatility",
                "max drawdown",
                "cumulative net return",
                "hit rate",
                "mean daily turnover",
                "days",
            ],
            [
                [
                    f"`{ts.book}` ({ts.book_split})",
                    _n(st.get("sharpe"), 2),
                    _pct(st.get("annual_return")),
                    _pct(st.get("annual_volatility")),
                    _pct(st.get("max_drawdown"), 2),
                    _pct(ts.cumulative[-1] if ts.cumulative else math.nan),
                    _pct(st.get("hit_rate")),
                    _pct(st.get("mean_turnover")),
                    _i(len(ts.net) or None),
                ]
            ],
        )
        s.p(
            f"The {book_sharpe(ts)} is the backtest's (`atft backtest`, docs/backtest.md): the "
            f"{ts.book_horizon}-day forecast traded by {ts.holding_days} staggered sub-books, each held "
            f"{ts.holding_days} day(s), net of costs. It is a different portfolio from the {DAILY_SHARPE} "
            "above, so the two numbers differ. Cumulative return = cumprod(1 + net) − 1; drawdown = wealth "
            "/ its running peak − 1, the wealth starting at 1 before the first day."
        )
    return s


def _factor_ics(d: Diagnosis, f: Facts) -> Section:
    s = Section(SECTION_TITLES[9])
    r = f.regime
    s.items([f"Note: {n}" for n in r.notes])
    if r.table is None or r.later is None:
        return s
    names = list(r.segments)
    span = ", ".join(f"{n} {a} to {b}" for n, (a, b) in r.segments.items())
    s.p(
        f"Each input feature alone, as a forecast: its mean daily RankIC against the raw label "
        f"`{r.label}` over each segment the run served ({span}), with its Newey-West t-stat ({r.lags} lags: "
        "the labels of consecutive days overlap). A model can only learn what paid in training; when the "
        "signs turn later, the regime changed (rule `regime_change`). From the dataset's features and labels "
        "(atft/evaluation/factor_ic.py)."
    )
    table = r.table
    top_train = table["feature"].to_list()[:FACTOR_ROWS]  # the table is sorted by |RankIC| in training
    top_later = r.significant[:FACTOR_ROWS]
    shown = list(dict.fromkeys(top_train + top_later))
    by_feature = {row["feature"]: row for row in table.iter_rows(named=True)}
    rows = []
    for name in shown:
        row = by_feature[name]
        cells = [f"`{name}`"]
        for seg in names:
            cells.append(f"{_n(row[f'rankic_{seg}'])} ({fmt(row[f't_{seg}'], '.1f')})")
        flipped = name in r.flipped
        cells += [_n(row["drift"]), "yes" if flipped else ""]
        rows.append(cells)
    s.table(
        [
            "feature",
            *[f"RankIC {seg} (t)" for seg in names],
            f"drift ({names[-1]} − {names[0]})",
            f"flipped on {r.later}",
        ],
        rows,
    )
    n, k = len(r.significant), len(r.flipped)
    s.p(
        f"The first rows are the {min(FACTOR_ROWS, table.height)} features with the largest training RankIC, "
        f"then those significant on {r.later}. Of the {n} features with |t| ≥ {d.thresholds['regime_t']:g} on {r.later}, {k} had the "
        f"opposite sign on train; across all {table.height} features, the correlation of the training and "
        f"{r.later} RankICs (factor-IC agreement) is {fmt(r.agreement, '.2f')}: near 1 the same features pay the "
        "same way, near 0 what paid no longer does, below 0 it pays the other way."
    )
    return s


def book_sharpe(ts: TearSheetFacts) -> str:
    """The label of the backtest's Sharpe, e.g. "book Sharpe (5d staggered)"."""
    return f"book Sharpe ({_i(ts.holding_days)}d staggered)"


# ------------------------------------------------------------------------------------------------------
# formatting
# ------------------------------------------------------------------------------------------------------


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if finite(v)]


def _n(x: Any, digits: int = 4) -> str:
    return fmt(x, f".{digits}f")


def _g(x: Any) -> str:
    return fmt(x, ".3g")


def _i(x: Any) -> str:
    return "n/a" if x is None else str(x)


def _pct(x: Any, digits: int = 1, sign: bool = False) -> str:
    return fmt(x, f"{'+' if sign else ''}.{digits}%")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _esc(text: str) -> str:
    return html_lib.escape(str(text))


def _inline(text: str) -> str:
    """Markdown's inline `code` and **bold** as HTML, everything else escaped."""
    escaped = _esc(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)
