"""``atft data splits``: print the train / valid / test date ranges that the config gives on a calendar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.ui import PRESET, console, user_errors
from atft.config import load_config
from atft.data.splits import splits_from_config
from atft.data.store import raw_calendar
from atft.features.dataset import DatasetFolder


def splits(
    path: Path = typer.Argument(
        ...,
        help="A dataset folder (features.parquet) or raw store (prices.parquet): its dates are the calendar.",
        show_default=False,
    ),
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="KEY=VALUE",
        help="Dotted overrides applied last, e.g. data.split.n_folds=3 data.split.window=sliding.",
        show_default=False,
    ),
    preset: str = PRESET,
) -> None:
    """Print each fold's train / valid / test date ranges, counted in trading days, with the purge gaps.

    Walk-forward by default; explicit dates with data.split.mode=explicit
    data.split.train=[2015-01-05,2018-12-28] data.split.valid=[...] data.split.test=[...].
    """
    with user_errors():
        overrides = list(overrides or ())
        dataset = DatasetFolder(path) if (path / "features.parquet").is_file() else None
        if dataset is not None and (path / "manifest.json").is_file():
            # A dataset's labels fix the horizons the purge must cover, whatever the config says.
            overrides.append(f"data.horizons=[{','.join(map(str, dataset.horizons))}]")
        cfg = load_config(preset, overrides).cfg
        calendar = dataset.calendar() if dataset is not None else raw_calendar(path)
        folds = splits_from_config(calendar, cfg)

    s = cfg.data.split
    title = f"Splits of {escape(str(path))} (mode {s.mode}" + (
        f", {s.window} window, {len(folds)} fold(s))" if s.mode == "walk_forward" else ")"
    )
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("fold", "right"),
        ("segment", "left"),
        ("first date", "left"),
        ("last date", "left"),
        ("trading days", "right"),
        ("purge before", "right"),
    ):
        table.add_column(name, justify=justify)
    for split in folds:
        for r in split.ranges():
            gap = "" if r.gap_before is None else str(r.gap_before)
            table.add_row(str(split.fold), r.name, str(r.start_date), str(r.end_date), f"{r.n_days:,}", gap)
            if r.name == "train":
                for e in split.embargo:
                    first, last = e.start_date(calendar), e.end_date(calendar)
                    table.add_row("", "[dim]embargo[/]", str(first), str(last), f"{e.n_days:,}", "")
        table.add_section()
    console.print(table)
    console.print(
        f"horizons {escape(str(list(cfg.data.horizons)))} · purge {s.purge_days} trading days · embargo {s.embargo_days} "
        f"· calendar {calendar[0]} .. {calendar[-1]} ({len(calendar):,} trading days)",
        highlight=False,
    )
