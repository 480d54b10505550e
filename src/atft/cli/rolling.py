"""``atft rolling``: refit a model every N trading days and score its forecasts as one continuous series."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atft.cli.ui import PRESET, console, err_console, say, user_errors
from atft.reporting.numbers import fmt


def rolling(
    overrides: list[str] | None = typer.Argument(
        None, metavar="KEY=VALUE", help="Config overrides for every block.", show_default=False
    ),
    data_path: Path = typer.Option(
        ..., "--data-path", help="The dataset folder written by `atft data build`."
    ),
    model: str = typer.Option(
        "atft", "--model", help="atft, apex, or a baseline (ridge, lgbm, momentum, ...)."
    ),
    every: int = typer.Option(
        21, "--every", help="Trading days per test block: the model is refit this often."
    ),
    train_days: int = typer.Option(756, "--train-days", help="Training days per block (the sliding window)."),
    window: str = typer.Option("sliding", "--window", help="sliding or expanding training window."),
    start: str | None = typer.Option(None, "--start", help="First test day (default: the first possible)."),
    end: str | None = typer.Option(None, "--end", help="Last test day (default: the calendar's last)."),
    warm_start: bool = typer.Option(
        False, "--warm-start", help="Start each block from the previous block's best weights."
    ),
    warm_epochs: int | None = typer.Option(
        None, "--warm-epochs", help="Epochs of each warm-started block (default: train.max_epochs)."
    ),
    out: Path = typer.Option(Path("runs/rolling"), "--out", help="Folder for the blocks and the series."),
    preset: str = PRESET,
) -> None:
    """Rolling retrain with a purge before every block; the summary is the one continuous series' numbers."""
    from atft.workflow.rolling import rolling as run_rolling  # torch loads only when needed

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with user_errors(), Progress(*columns, console=err_console) as progress:
        task = progress.add_task("rolling", total=None)

        def advance(description: str, done: int, total: int) -> None:
            progress.update(task, description=escape(description), completed=done, total=total)

        result = run_rolling(
            data_path, out, model=model, every=every, train_days=train_days, window=window, start=start, end=end,
            warm_start=warm_start, warm_epochs=warm_epochs, preset=preset, overrides=list(overrides or ()),
            say=say, progress=advance,
        )  # fmt: skip
    s, m = result.summary, result.summary["metrics"]
    console.print(
        f"{s['blocks']} blocks, out of sample {s['first_test_day']} .. {s['last_test_day']} as one series: "
        + "  ".join(
            f"RankIC{h}={fmt(v.get('rankic'), '.4f')}"
            for h, v in m.items()
            if h.endswith("d") and isinstance(v, dict)
        )
        + f"  book Sharpe (5d, net) {fmt(s['book'].get('sharpe'), '.2f')}",
        highlight=False,
    )
    console.print(f"Wrote [bold]{escape(str(out))}[/] (rolling.md, rolling.json, predictions, book)")
