"""``atft demo``: the main job on the built-in synthetic market (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.ui import console, print_manifest, stages, user_errors
from atft.data.store import check_target


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
    from atft.config import load_config
    from atft.data.splits import splits_from_config, trading_calendar
    from atft.data.synthetic import SynthParams, synthesize, write_synthetic
    from atft.features.build import build_dataset
    from atft.training.datamodule import DayDataModule

    raw, dataset = out / "raw", out / "dataset"
    with user_errors():
        cfg = load_config().cfg
        check_target(raw, overwrite=True, kind="synthetic")  # an earlier demo's store, never other files
        check_target(dataset, overwrite=True, kind="dataset")
        with stages("demo") as say:
            market = synthesize(SynthParams(n_stocks=stocks, n_days=days, seed=seed), progress=say)
            say("measuring the oracle and writing the store")
            store_manifest = write_synthetic(market, raw, overwrite=True)
            manifest = build_dataset(raw, dataset, cfg, overwrite=True, progress=say)
            say("splitting and loading")
            split = splits_from_config(trading_calendar(dataset), cfg)[-1]
            data = DayDataModule.from_split(
                dataset, split, lookback=cfg.data.lookback, min_stocks=cfg.data.min_stocks_per_day
            )
            data.setup()
    print_manifest(store_manifest)
    console.print(
        f"Dataset: {len(manifest['model_features'])} features in {len(manifest['features'])} groups, "
        f"{manifest['rows']:,} rows, guard {'passed' if manifest['guard']['passed'] else 'FAILED'}",
        highlight=False,
    )
    table = Table(
        title=f"Walk-forward fold {split.fold}: what the loader serves (lookback {cfg.data.lookback})"
    )
    for column in ("split", "first date", "last date", "days", "stock-windows", "days dropped"):
        table.add_column(column)
    for name, counts in data.summary().items():
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
        f"Wrote [bold]{escape(str(raw))}[/] (raw store) and [bold]{escape(str(dataset))}[/] (dataset); "
        f"inspect them with [bold]atft data info[/]"
    )
    if epochs > 0:
        _train(dataset, out / "run", epochs)


def _train(dataset: Path, run_dir: Path, epochs: int) -> None:
    """Train the default model for a few epochs, then evaluate, backtest and diagnose the run."""
    import shutil

    from atft.cli.evaluate import evaluation_table
    from atft.cli.train import say
    from atft.config import load_config
    from atft.evaluation.run_eval import backtest_run, score_training_forecasts
    from atft.reporting.doctor import diagnose_run
    from atft.training.run import train_run

    with user_errors():
        if (run_dir / "config.yaml").exists():  # an earlier demo's run folder, never other files
            shutil.rmtree(run_dir)
        overrides = [f"train.max_epochs={epochs}"]
        if epochs <= 1:
            overrides.append("train.scheduler.warmup_epochs=0")
        cfg = load_config(overrides=overrides).cfg
        summary = train_run(cfg, dataset, run_dir, say=say)
        say("scoring the test forecasts")
        evaluation, _ = score_training_forecasts(run_dir)
        say("backtesting the 5-day forecasts")
        trade, _ = backtest_run(run_dir, horizon=5)
        say("diagnosing the run")
        diagnosis = diagnose_run(run_dir, html=True)
    console.print(
        evaluation_table(
            evaluation.metrics,
            title=f"Test period, best of {summary['epochs_run']} epoch(s) (eval/metrics.json)",
        )
    )
    s = trade.summary
    console.print(
        f"Backtest (atft backtest): long-short top/bottom {cfg.eval.quantile:.0%} on the 5-day forecasts, "
        f"5 staggered books, {cfg.eval.cost_bps:g} bps per side: net Sharpe {s['sharpe']:.2f}, "
        f"annual return {s['annual_return']:.1%}, max drawdown {s['max_drawdown']:.1%}, "
        f"daily turnover {s['mean_turnover']:.0%}",
        highlight=False,
    )
    console.print(f"Diagnosis (atft diagnose): [bold]{escape(diagnosis.status)}[/], grade {diagnosis.grade}")
    console.print(
        f"Report: [bold]{escape(str(diagnosis.report_md))}[/] (and report.html). Run folder "
        f"[bold]{escape(str(run_dir))}[/]. A full run: [bold]atft train --data-path {escape(str(dataset))}[/]"
    )
