"""``atft compare``: train and score several models on the same splits and test rows, with seeds."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atft.cli.ui import PRESET, console, err_console, say, user_errors
from atft.reporting.numbers import fmt


def compare(
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="Config overrides for every model, e.g. data.split.mode=explicit data.split.train=[...].",
        show_default=False,
    ),
    data_path: Path = typer.Option(
        ..., "--data-path", help="The dataset folder written by `atft data build`."
    ),
    models: str = typer.Option(
        "atft,apex,lgbm,ridge,ridge_graph,momentum,reversal",
        "--models",
        help="Comma-separated: atft, apex, lgbm, ridge, ridge_graph, momentum, reversal, random, oracle, and "
        "atft_ens / apex_ens (the seed ensemble of atft / apex); name:k gives a model k seeds. "
        "The first is tested against each other one.",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per seeded model (atft, apex, lgbm, random)."),
    folds: int | None = typer.Option(
        None, "--folds", help="Walk-forward folds (data.split.n_folds); explicit segments via overrides."
    ),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="Folder for the comparison (resumable)."),
    preset: str = PRESET,
) -> None:
    """Compare models on the same purged splits and the exact same test rows: compare.md/csv/json and plots."""
    from atft.workflow.compare import compare as run_compare  # torch loads only when needed

    tokens = list(overrides or ())
    if folds is not None:
        tokens.append(f"data.split.n_folds={folds}")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with user_errors(), Progress(*columns, console=err_console) as progress:
        task = progress.add_task("compare", total=None)

        def advance(description: str, done: int, total: int) -> None:
            progress.update(task, description=escape(description), completed=done, total=total)

        result = run_compare(
            data_path,
            out,
            models.split(","),
            seeds=seeds,
            preset=preset,
            overrides=tokens,
            say=say,
            progress=advance,
        )
    horizons = result.horizons
    table = Table(title=f"Test segment, mean ± std over seeds ({escape(str(out))}/compare.md)")
    for column in ("model", *(f"RankIC {h}d" for h in horizons), "NW t 5d", "book Sharpe", "train s"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            row["model"],
            *(_pm(row, f"rankic_{h}d", ".4f") for h in horizons),
            _pm(row, "rankic_nw_tstat_5d", ".1f"),
            _pm(row, "book_sharpe", ".2f"),
            _pm(row, "seconds", ".0f"),
        )
    console.print(table)
    for p in result.paired:
        if p["horizon"] == 5:
            console.print(
                f"{p['model']} vs {p['against']} at 5d: mean daily RankIC difference {fmt(p['mean_diff'], '+.4f')}, "
                f"NW t {fmt(p['nw_tstat'], '.1f')} over {p['n_days']} days",
                highlight=False,
            )
    console.print(f"Wrote [bold]{escape(str(out))}[/] (compare.md, compare.csv, compare.json, plots)")


def _pm(row: dict, key: str, spec: str) -> str:
    value, std = row.get(key), row.get(f"{key}_std")
    text = fmt(value, spec, missing="-")
    return f"{text} ± {fmt(std, spec)}" if text != "-" and fmt(std, spec, missing="") else text
