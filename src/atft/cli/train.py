"""``atft train``: train ATFT-GAT-FAN on a dataset folder into a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.ui import PRESET, console, say, user_errors
from atft.config import DEFAULT_PRESET, load_config


def train(
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="Config overrides, e.g. model.hidden_size=128 model.graph.mode=none.",
        show_default=False,
    ),
    data_path: Path | None = typer.Option(
        None,
        "--data-path",
        help="The dataset folder written by `atft data build` (default: data.dataset_dir).",
    ),
    max_epochs: int | None = typer.Option(
        None, "--max-epochs", help="Epochs at most (default: train.max_epochs)."
    ),
    preset: str = PRESET,
    run_name: str | None = typer.Option(
        None, "--run-name", help="Folder name under train.runs_dir (default: a timestamp)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="A run folder to continue from its last checkpoint, with its own config."
    ),
) -> None:
    """Train a model; writes config, metrics.csv, events.jsonl, train.log, checkpoints and predictions."""
    from atft.workflow.train import (  # torch loads only when needed
        new_run_dir,
        resume_config,
        train_every_fold,
        train_run,
    )

    with user_errors():
        if resume is not None:
            if overrides or run_name or preset != DEFAULT_PRESET:
                raise ValueError(
                    "--resume continues a run with its own config: give no overrides, --preset or --run-name "
                    "(--max-epochs may extend it)"
                )
            run_dir = resume
            cfg, recorded = resume_config(run_dir, max_epochs)
            data_path = data_path or recorded
        else:
            tokens = list(overrides or ())
            if max_epochs is not None:
                tokens.append(f"train.max_epochs={max_epochs}")
            cfg = load_config(preset, tokens).cfg
            data_path = data_path or (Path(cfg.data.dataset_dir) if cfg.data.dataset_dir else None)
            if data_path is None:
                raise ValueError("give the dataset with --data-path (or data.dataset_dir)")
            run_dir = new_run_dir(cfg.train.runs_dir, run_name)
        every_fold = resume is None and cfg.data.split.mode == "walk_forward" and cfg.data.split.n_folds > 1
        # Lightning's Rich progress bar is the live display here: stages print as plain lines
        if every_fold:
            record = train_every_fold(cfg, data_path, run_dir, say=say)
        else:
            summary = train_run(cfg, data_path, run_dir, resume=resume is not None, say=say)
    if every_fold:
        if record:
            _print_folds(record, list(cfg.data.horizons), run_dir)
        return
    if not summary:
        return
    segment = "test" if summary.get("test_metrics") else "valid"
    scores = summary.get(f"{segment}_metrics") or {}
    horizons = list(cfg.data.horizons)
    console.print(f"Best epoch {summary['best_epoch']} of {summary['epochs_run']} ({summary['seconds']} s)")
    console.print(
        f"{segment} "
        + "  ".join(f"RankIC{h}d={scores.get(f'rankic_{h}d', float('nan')):.4f}" for h in horizons)
    )
    console.print(f"Run folder [bold]{escape(str(run_dir))}[/]")


def _print_folds(record: dict, horizons: list[int], run_dir: Path) -> None:
    """One row per fold and their mean: the test RankIC per horizon (valid where a fold has no test)."""
    table = Table(title=f"{record['n_folds']} walk-forward folds (folds.json)")
    for column in ("fold", "best epoch", "test from", *(f"RankIC {h}d" for h in horizons)):
        table.add_column(column, justify="right")
    for k, summary in enumerate(record["folds"]):
        scores = summary.get("test_metrics") or {}
        table.add_row(
            str(k),
            f"{summary['best_epoch']} of {summary['epochs_run']}",
            str(summary["split"].get("test", ["-"])[0]),
            *(f"{scores.get(f'rankic_{h}d', float('nan')):.4f}" for h in horizons),
        )
    mean = record["mean_test_metrics"]
    table.add_row("mean", "", "", *(f"{mean.get(f'rankic_{h}d', float('nan')):.4f}" for h in horizons))
    console.print(table)
    console.print(f"Run folders [bold]{escape(str(run_dir))}/fold_<k>[/]")
