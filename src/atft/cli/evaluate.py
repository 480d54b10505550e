"""``atft evaluate``, ``atft backtest`` and ``atft diagnose``: scoring, trading and diagnosing a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.ui import console, say, user_errors
from atft.reporting.numbers import fmt

RUN_DIR = typer.Argument(..., help="A run folder written by `atft train`.", show_default=False)


def evaluate(
    run_dir: Path = RUN_DIR,
    split: str = typer.Option("test", "--split", help="Segment to forecast and score: train, valid or test."),
) -> None:
    """Forecast a segment with the run's best checkpoint; write eval/metrics.json, per_day and predictions."""
    from atft.workflow.evaluate import evaluate_run  # torch loads only when needed

    with user_errors():
        result, out = evaluate_run(run_dir, split=split, say=say)
    console.print(evaluation_table(result.metrics, title=f"{split} segment: {escape(str(run_dir))}"))
    console.print(f"Wrote [bold]{escape(str(out))}[/] (metrics.json, per_day.parquet, predictions.parquet)")


def evaluation_table(metrics: dict, *, title: str) -> Table:
    """Per horizon: RankIC with its plain and Newey-West t-statistics, IC, SCALE, the daily-rebalanced net
    long-short quintile Sharpe (not the backtest's book Sharpe), and the oracle's RankIC with the share of it
    captured (synthetic data)."""
    table = Table(title=title)
    columns = ("h", "RankIC", "t", "NW t", "IC", "SCALE", "daily L/S Sharpe", "oracle", "capture")
    for column in columns:
        table.add_column(column, justify="right")
    for key, m in metrics.items():
        if not key.endswith("d") or not isinstance(m, dict):
            continue
        table.add_row(
            key,
            *(
                _fmt(m.get(name), spec)
                for name, spec in (
                    ("rankic", ".4f"),
                    ("rankic_tstat", ".1f"),
                    ("rankic_nw_tstat", ".1f"),
                    ("ic", ".4f"),
                    ("scale", ".3f"),
                    ("sharpe", ".2f"),
                    ("oracle_rankic", ".4f"),
                    ("capture", ".0%"),
                )
            ),
        )
    return table


def backtest(
    run_dir: Path = RUN_DIR,
    horizon: int = typer.Option(5, "--horizon", help="Which horizon's forecasts to trade."),
    strategy: str = typer.Option("long_short", "--strategy", help="long_short or long_only."),
    top_k: int | None = typer.Option(
        None, "--top-k", help="Stocks per leg (default: the run's eval.quantile)."
    ),
    quantile: float | None = typer.Option(None, "--quantile", help="Share of the day's stocks per leg."),
    holding_days: int | None = typer.Option(
        None,
        "--holding-days",
        help="Days each portfolio is held, staggered (default: the horizon; 1 = daily).",
    ),
    cost_bps: float | None = typer.Option(
        None, "--cost-bps", help="Cost per side in bps of traded weight (default: the run's eval.cost_bps)."
    ),
    split: str = typer.Option("test", "--split", help="Whose forecasts: valid or test."),
) -> None:
    """Backtest a portfolio on the run's forecasts; write backtest/<strategy>_<h>d/ (daily returns, summary)."""
    from atft.workflow.evaluate import backtest_run

    with user_errors():
        result, out = backtest_run(
            run_dir,
            horizon=horizon,
            strategy=strategy,
            top_k=top_k,
            quantile=quantile,
            holding_days=holding_days,
            cost_bps=cost_bps,
            split=split,
        )
    s, p = result.summary, result.params
    leg = f"top {p['top_k']}" if p.get("top_k") else f"top {p['quantile']:.0%}"
    table = Table(
        title=f"{strategy} {leg}, {horizon}d forecasts held {p['holding_days']} day(s), "
        f"{p['cost_bps']:g} bps per side ({split} segment)"
    )
    for column in (
        "series",
        "ann. return",
        "ann. vol",
        "book Sharpe",
        "Sortino",
        "max DD",
        "Calmar",
        "hit rate",
    ):
        table.add_column(column, justify="right")
    series = [("net", ""), ("gross", "gross_")]
    if strategy == "long_only":
        series += [("benchmark", "benchmark_"), ("excess", "excess_")]
    for name, prefix in series:
        table.add_row(
            name,
            _fmt(s.get(f"{prefix}annual_return"), ".1%"),
            _fmt(s.get(f"{prefix}annual_volatility"), ".1%"),
            _fmt(s.get(f"{prefix}sharpe"), ".2f"),
            _fmt(s.get(f"{prefix}sortino"), ".2f"),
            _fmt(s.get(f"{prefix}max_drawdown"), ".1%"),
            _fmt(s.get(f"{prefix}calmar"), ".2f"),
            _fmt(s.get(f"{prefix}hit_rate"), ".1%"),
        )
    console.print(table)
    console.print(
        f"{s['n_days']} days, mean daily turnover {_fmt(s.get('mean_turnover'), '.1%')}; repairs: "
        f"{s.get('skipped_rebalances', 0)} skipped rebalances, "
        f"{s.get('missing_return_positions', 0)} held positions without a return (earned 0)",
        highlight=False,
    )
    console.print(f"Wrote [bold]{escape(str(out))}[/] (daily.parquet, summary.json)")


def diagnose(
    run_dir: Path = RUN_DIR,
    html: bool = typer.Option(False, "--html", help="Also write a self-contained report.html."),
) -> None:
    """Diagnose a run from its own files; write report.md with plots (and report.html)."""
    from atft.reporting.doctor import diagnose_run

    with user_errors():
        diagnosis = diagnose_run(run_dir, html=html)
    main = diagnosis.main
    console.print(
        f"Status: [bold]{escape(diagnosis.status)}[/]"
        + (f": {escape(main.evidence)}" if main is not None else ""),
        highlight=False,
    )
    console.print(f"Grade: [bold]{escape(str(diagnosis.grade.level))}[/]", highlight=False)
    written = diagnosis.report_html or diagnosis.report_md
    console.print(
        f"Report: [bold]{escape(str(diagnosis.report_md))}[/]"
        + (f" and {escape(str(written))}" if html else "")
    )


def _fmt(value: object, spec: str) -> str:
    return fmt(value, spec, missing="-")
