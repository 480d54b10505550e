"""``atft train``: train ATFT-GAT-FAN on a dataset folder into a run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from omegaconf import OmegaConf
from rich.markup import escape

from atft.cli.ui import console, err_console, user_errors
from atft.config import DEFAULT_PRESET, load_config


def say(stage: str) -> None:
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(stage)}", highlight=False)


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
    preset: str = typer.Option(
        DEFAULT_PRESET,
        "--preset",
        "--config",
        "-c",
        help="Preset name in configs/ or a path to a .yaml file.",
    ),
    run_name: str | None = typer.Option(
        None, "--run-name", help="Folder name under train.runs_dir (default: a timestamp)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="A run folder to continue from its last checkpoint, with its own config."
    ),
) -> None:
    """Train a model; writes config, metrics.csv, events.jsonl, train.log, checkpoints and predictions."""
    from atft.training.run import new_run_dir, train_run

    with user_errors():
        if resume is not None:
            if overrides or run_name or preset != DEFAULT_PRESET:
                raise ValueError(
                    "--resume continues a run with its own config: give no overrides, --preset or --run-name "
                    "(--max-epochs may extend it)"
                )
            run_dir = resume
            if not (run_dir / "checkpoints" / "last.ckpt").exists():
                raise ValueError(f"{run_dir / 'checkpoints' / 'last.ckpt'} not found: nothing to resume")
            extend = [f"train.max_epochs={max_epochs}"] if max_epochs is not None else []
            cfg = load_config(run_dir / "config.yaml", extend, env={}).cfg
            if extend:  # the run's own config now says how long it trains
                (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            data_path = data_path or Path(json.loads((run_dir / "run.json").read_text())["data_path"])
        else:
            tokens = list(overrides or ())
            if max_epochs is not None:
                tokens.append(f"train.max_epochs={max_epochs}")
            cfg = load_config(preset, tokens).cfg
            data_path = data_path or (Path(cfg.data.dataset_dir) if cfg.data.dataset_dir else None)
            if data_path is None:
                raise ValueError("give the dataset with --data-path (or data.dataset_dir)")
            run_dir = new_run_dir(cfg.train.runs_dir, run_name)
        # Lightning's Rich progress bar is the live display here: stages print as plain lines
        summary = train_run(cfg, data_path, run_dir, resume=resume is not None, say=say)
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
