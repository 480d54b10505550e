"""``atft config``: inspect how the typed configuration resolves, and where each value came from."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from atft.cli.ui import PRESET, user_errors
from atft.config import load_config

app = typer.Typer(
    help=(
        "Inspect the typed configuration: schema defaults, then a preset from configs/, then "
        "environment aliases, then KEY=VALUE overrides."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # A callback keeps `show` a sub-command even while it is the only one, so `atft config show`
    # and CliRunner().invoke(app, ["show", ...]) parse the same way.
    pass


@app.command(
    help=(
        "Print the resolved config as YAML, then a table of every value that differs from the schema "
        "default and where it came from (preset:NAME, env:VARIABLE or cli). "
        "Example: atft config show --preset production train.optimizer.lr=3e-4 model.hidden_size=384"
    )
)
def show(
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="Dotted overrides applied last, e.g. train.batch.train_batch_size=2048 data.horizons=[1,5,10,20].",
        show_default=False,
    ),
    preset: str = PRESET,
) -> None:
    with user_errors():
        resolved = load_config(preset, overrides or ())

    typer.echo(resolved.to_yaml(), nl=False)
    console = Console()
    rows = resolved.non_default()
    if not rows:
        console.print(f"All values are schema defaults (preset: {resolved.preset}).", markup=False)
        return
    table = Table(title=f"Non-default values (preset: {resolved.preset})", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    for key, value, source in rows:
        table.add_row(key, str(value), source)
    console.print(table)
