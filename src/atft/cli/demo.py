"""``atft demo``: the main job on the built-in synthetic market (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.evaluate import evaluation_table
from atft.cli.ui import console, print_manifest, say, stages, user_errors

if TYPE_CHECKING:
    from atft.workflow.demo import DemoData, DemoRun


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for everything the demo writes."),
    stocks: int = typer.Option(500, "--stocks", help="Number of synthetic stocks."),
    days: int = typer.Option(1500, "--days", help="Number of synthetic trading days."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    epochs: int = typer.Option(
        3, "--epochs", help="Training epochs (0 stops after loading; the cpu preset runs up to 6)."
    ),
) -> None:
    """The whole path on a synthetic market: synthesize, build, split, train ATFT-GAT-FAN, evaluate the test
    period against the oracle, backtest the 5-day forecasts and diagnose the run (report.md)."""
    from atft.workflow.demo import prepare_demo, train_demo  # torch loads only when needed

    with user_errors(), stages("demo") as progress:
        data = prepare_demo(out, stocks=stocks, days=days, seed=seed, say=progress)
    _print_data(data)
    if epochs > 0:
        with user_errors():
            run = train_demo(data.dataset, out / "run", epochs, say=say)
        _print_run(run, data.dataset)


def _print_data(data: DemoData) -> None:
    print_manifest(data.store_manifest)
    manifest = data.manifest
    console.print(
        f"Dataset: {len(manifest['model_features'])} features in {len(manifest['features'])} groups, "
        f"{manifest['rows']:,} rows, guard {'passed' if manifest['guard']['passed'] else 'FAILED'}",
        highlight=False,
    )
    table = Table(
        title=f"Walk-forward fold {data.split.fold}: what the loader serves (lookback {data.cfg.data.lookback})"
    )
    for column in ("split", "first date", "last date", "days", "stock-windows", "days dropped"):
        table.add_column(column)
    for name, counts in data.served.items():
        table.add_row(
            name,
            str(counts["first_date"]),
            str(counts["last_date"]),
            f"{counts['days']:,}",
            f"{counts['stock_windows']:,}",
            f"{counts['days_dropped']:,}",
        )
    console.print(table)
    console.print(
        f"Wrote [bold]{escape(str(data.raw))}[/] (raw store) and [bold]{escape(str(data.dataset))}[/] (dataset); "
        f"inspect them with [bold]atft data info[/]"
    )


def _print_run(run: DemoRun, dataset: Path) -> None:
    console.print(
        evaluation_table(
            run.evaluation.metrics,
            title=f"Test period, best of {run.summary['epochs_run']} epoch(s) (eval/metrics.json)",
        )
    )
    s, cfg = run.trade.summary, run.cfg
    console.print(
        f"Backtest (atft backtest): long-short top/bottom {cfg.eval.quantile:.0%} on the 5-day forecasts, "
        f"5 staggered books, {cfg.eval.cost_bps:g} bps per side: book Sharpe (net) {s['sharpe']:.2f}, "
        f"annual return {s['annual_return']:.1%}, max drawdown {s['max_drawdown']:.1%}, "
        f"daily turnover {s['mean_turnover']:.0%}",
        highlight=False,
    )
    diagnosis = run.diagnosis
    console.print(f"Diagnosis (atft diagnose): [bold]{escape(diagnosis.status)}[/], grade {diagnosis.grade}")
    console.print(
        f"Report: [bold]{escape(str(diagnosis.report_md))}[/] (and report.html). Run folder "
        f"[bold]{escape(str(run.run_dir))}[/]. A full run: [bold]atft train --data-path {escape(str(dataset))}[/]"
    )
