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
) -> None:
    """Synthesize a market, build its dataset, split it and load it. Training and evaluation join here."""
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
