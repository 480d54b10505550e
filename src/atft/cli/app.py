"""The ``atft`` command line: a thin Typer layer over the library. Each sub-app lives in its own module."""

from __future__ import annotations

import typer

from atft.cli import config as config_cli
from atft.cli import data as data_cli
from atft.cli.compare import compare
from atft.cli.daily import bundle, predict, serve
from atft.cli.demo import demo
from atft.cli.evaluate import backtest, diagnose, evaluate
from atft.cli.experiment import experiment
from atft.cli.rolling import rolling
from atft.cli.train import train

app = typer.Typer(
    help="ATFT: learn to rank stocks at 1, 5, 10 and 20 days, and measure it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(config_cli.app, name="config")
app.command()(train)
app.command()(evaluate)
app.command()(backtest)
app.command()(diagnose)
app.command()(compare)
app.command()(experiment)
app.command()(rolling)
app.command()(predict)
app.command()(bundle)
app.command()(serve)
app.command(help="Run the main job on the built-in synthetic market and print where the results are.")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
