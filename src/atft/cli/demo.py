"""``atft demo``: the main job on the built-in synthetic market (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from atft.cli.ui import console, print_manifest, stages, user_errors
from atft.data.store import check_target


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for everything the demo writes."),
    stocks: int = typer.Option(500, "--stocks", help="Number of synthetic stocks."),
    days: int = typer.Option(1500, "--days", help="Number of synthetic trading days."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Synthesize a market and print its summary. Later stages (build, train, evaluate, report) join here."""
    from atft.data.synthetic import SynthParams, synthesize, write_synthetic

    raw = out / "raw"
    with user_errors():
        check_target(raw, overwrite=True)  # replaces an earlier demo's store, never other files
        with stages("demo") as say:
            market = synthesize(SynthParams(n_stocks=stocks, n_days=days, seed=seed), progress=say)
            say("measuring the oracle and writing the store")
            manifest = write_synthetic(market, raw, overwrite=True)
    print_manifest(manifest)
    console.print(
        f"Synthetic market written to [bold]{escape(str(raw))}[/]; "
        f"inspect it again with [bold]atft data info {escape(str(raw))}[/]"
    )
