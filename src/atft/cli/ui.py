"""Shared terminal pieces of the CLI: a staged progress display and the one way errors are shown."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (no traceback: the message names the file, key or row) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def stages(title: str) -> Iterator[Callable[..., None]]:
    """A Rich progress bar for long work; the yielded callback reports where the work is.

    Call it as ``say(stage)`` when a new stage starts (logged with the elapsed time, the bar pulses), or
    as ``say(stage, done, total)`` inside a stage that counts its steps (files read, ...): the bar fills.
    """
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(title, total=None)
        start = time.perf_counter()

        def say(stage: str, done: int | None = None, total: int | None = None) -> None:
            if total is None:
                progress.update(task, description=f"{title}: {stage}", total=None, completed=0)
                err_console.print(f"[dim]{time.perf_counter() - start:7.1f}s[/] {stage}", highlight=False)
            else:
                progress.update(task, description=f"{title}: {stage}", total=total, completed=done)

        yield say


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def manifest_tables(manifest: dict[str, Any]) -> list[Table | str]:
    """Rich tables summarizing a store manifest: overview, tables, checks and (synthetic) oracle skill."""
    overview = Table(title="Store", show_header=False)
    keys = (
        "kind",
        "input_rows",
        "rows",
        "quarantined_rows",
        "repairs_total",
        "codes",
        "dates",
        "date_range",
        "sectors",
        "late_listed_codes",
        "created_at",
    )
    for key in keys:
        if key in manifest:
            value = manifest[key]
            overview.add_row(
                key,
                " .. ".join(value)
                if isinstance(value, list)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value),
            )
    out = [overview]
    files = Table(title="Tables")
    files.add_column("table")
    files.add_column("rows", justify="right")
    files.add_column("columns")
    for name, info in manifest.get("tables", {}).items():
        files.add_row(name, f"{info['rows']:,}", ", ".join(info["columns"]))
    out.append(files)
    if manifest.get("oracle_rank_ic"):
        oracle = Table(title="Oracle: mean daily RankIC vs realized forward return")
        for h in manifest["oracle_rank_ic"]:
            oracle.add_column(h, justify="right")
        oracle.add_row(*[f"{v:.4f}" for v in manifest["oracle_rank_ic"].values()])
        out.append(oracle)
    checks = list(_flatten(manifest.get("checks", {})))
    if checks:
        table = Table(title="Checks and repairs")
        table.add_column("check")
        table.add_column("value", overflow="fold")
        for key, value in checks:
            text = str(value)
            table.add_row(key, text if len(text) <= 200 else text[:197] + "...")
        out.append(table)
    details = manifest.get("details", {})
    if details.get("extreme_moves"):
        moves = Table(
            title=f"Extreme moves (flagged, not altered; first {min(15, len(details['extreme_moves']))})"
        )
        for col in ("code", "date", "return", "index_return"):
            moves.add_column(col, justify="right")
        for m in details["extreme_moves"][:15]:
            idx = m.get("index_return")
            moves.add_row(m["code"], m["date"], f"{m['return']:+.1%}", "" if idx is None else f"{idx:+.1%}")
        out.append(moves)
    if details.get("codes_without_sector"):
        codes = details["codes_without_sector"]
        out.append(
            f"Codes without sector ({len(codes)}): {', '.join(codes[:30])}{' ...' if len(codes) > 30 else ''}"
        )
    return out
