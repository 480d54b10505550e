"""``atft experiment``: run a plan of config variants (or ``--search N`` Optuna trials) and report the winner."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atft.cli.ui import PRESET, console, err_console, say, user_errors
from atft.reporting.numbers import fmt


def experiment(
    ctx: typer.Context,
    plan: Path = typer.Argument(..., help="The plan: a YAML file (docs/experiments.md).", show_default=False),
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="Config overrides after the plan's base and before each variant's own, e.g. data.split.n_folds=1.",
        show_default=False,
    ),
    data_path: Path = typer.Option(
        ..., "--data-path", help="The dataset folder written by `atft data build`."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the experiment (resumable); default <train.runs_dir>/experiments/<plan name>.",
    ),
    search: int | None = typer.Option(
        None,
        "--search",
        help="Run an Optuna study of N trials over the loss weights and the learning rate from the plan's base "
        "(validation only) instead of its variants; writes search.json.",
    ),
    preset: str = PRESET,
) -> None:
    """Train a plan's variants in order, compare them, and pick the winner by validation RankIC at 5 days."""
    from atft.workflow.experiment import run_experiment  # torch and optuna load only when needed
    from atft.workflow.experiment import search as run_search

    # -p replaces the plan's base preset only when it is given on the command line
    given = getattr(ctx.get_parameter_source("preset"), "name", "DEFAULT") != "DEFAULT"
    chosen = preset if given else None
    tokens = list(overrides or ())
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with user_errors(), Progress(*columns, console=err_console) as progress:
        task = progress.add_task("experiment", total=None)

        def advance(description: str, done: int, total: int) -> None:
            progress.update(task, description=escape(description), completed=done, total=total)

        if search is not None:
            found = run_search(
                plan, data_path, search, out, preset=chosen, overrides=tokens, say=say, progress=advance
            )
        else:
            result = run_experiment(
                plan, data_path, out, preset=chosen, overrides=tokens, say=say, progress=advance
            )
    if search is not None:
        _print_search(found)
        return
    table = Table(title=f"Experiment {escape(result.plan.name)}: winner by validation RankIC 5d")
    for column in ("variant", "status", "valid RankIC 5d", "test RankIC 5d", "book Sharpe", "decision"):
        table.add_column(column, justify="left" if column in ("variant", "status", "decision") else "right")
    rows = {row["model"]: row for row in result.rows}
    for v in result.variants:
        row = rows.get(v.name, {})
        if not v.ran:
            decision = v.reason
        elif v.rule:
            decision = f"{v.rule}: {'passed' if v.passed else 'failed'}"
        else:
            decision = ""
        table.add_row(
            f"{escape(v.name)}{' (winner)' if v.name == result.winner else ''}",
            v.status,
            fmt(v.valid_rankic_5d, ".4f", missing="-"),
            fmt(row.get("rankic_5d", math.nan), ".4f", missing="-"),
            fmt(row.get("book_sharpe", math.nan), ".2f", missing="-"),
            escape(decision),
        )
    console.print(table)
    console.print("The test columns are shown, never used to choose.", highlight=False)
    console.print(
        f"Wrote [bold]{escape(str(result.out))}[/] (compare.md, compare.csv, compare.json, experiment.json, plots)"
    )


def _print_search(found: Any) -> None:
    names = list(found.trials[0]["params"]) if found.trials else []
    table = Table(
        title=f"Search: {len(found.trials)} trial(s), validation RankIC 5d ({escape(str(found.path))})"
    )
    for column in ("trial", "state", "valid RankIC 5d", "epochs", *(n.rsplit(".", 1)[-1] for n in names)):
        table.add_column(column, justify="left" if column == "state" else "right")
    for t in found.trials:
        table.add_row(
            str(t["number"]),
            t["state"],
            fmt(t["value"], ".4f", missing="-"),
            str(len(t["intermediate"])),
            *(fmt(t["params"].get(n), ".4g", missing="-") for n in names),
        )
    console.print(table)
    if found.best is None:
        console.print("No trial completed with a finite validation RankIC at 5 days.")
        return
    console.print(
        f"Best: trial {found.best['number']}, validation RankIC 5d {found.best['value']:.4f}. Train it with:"
    )
    console.print(found.best["command"], highlight=False, markup=False, soft_wrap=True)
