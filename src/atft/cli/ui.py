"""Shared terminal pieces of the CLI: a staged progress display and the one way errors are shown."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from atft.cli.dataset_view import dataset_tables
from atft.config import DEFAULT_PRESET

console = Console()
err_console = Console(stderr=True)

# The one declaration of the preset option, shared by every command that resolves a config.
PRESET: str = typer.Option(
    DEFAULT_PRESET,
    "--preset",
    "--config",
    "-p",
    help="Preset name in configs/ (e.g. cpu, production) or a path to a .yaml file (a run's config.yaml).",
)


def say(stage: str) -> None:
    """Print a stage as a timestamped line on stderr (where a live progress display already runs)."""
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(stage)}", highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (no traceback: the message names the file, key or row) and exit."""
    # escape(): messages quote data and paths, and a code like "[/x]" must print, not parse as markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _os_error_message(e: OSError) -> str:
    """An OS error as one line that names the path: "runs/x/raw: Not a directory"."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror or e}" if where else str(e)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show the errors bad input causes as one line and exit 2, never as a traceback.

    Every error the library raises for bad input is a ValueError (StoreError, DataImportError,
    ConfigError, a bad parameter) whose message names the file, key or row; OS errors (a parent that is
    a file, no permission, a full disk) are shown with their path.
    """
    try:
        yield
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(_os_error_message(e))
    except KeyboardInterrupt:
        fail("interrupted", code=130)  # the shell's convention for Ctrl-C: 128 + SIGINT


def print_manifest(manifest: dict[str, Any]) -> None:
    """Print a store's manifest as the tables of ``manifest_tables``."""
    for table in manifest_tables(manifest):
        console.print(table)


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
            stage = escape(stage)  # stages name input files, whose names may hold brackets
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


def _cell(value: Any, limit: int = 200) -> Text:
    """A table cell as plain text: manifest values come from data and must never be read as markup."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        text = " .. ".join(value)  # a date range
    else:
        text = str(value)
    return Text(text if len(text) <= limit else text[: limit - 3] + "...")


def _number(value: Any, fmt: str) -> str:
    """``value`` formatted as a number, or shown as it is when a hand-edited manifest holds something else."""
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def _files_table(manifest: dict[str, Any]) -> Table:
    files = Table(title="Tables")
    files.add_column("table")
    files.add_column("rows", justify="right")
    files.add_column("columns")
    for name, info in manifest.get("tables", {}).items():
        info = info if isinstance(info, dict) else {}
        columns = info.get("columns")
        files.add_row(
            _cell(name),
            _cell(info.get("rows", "?")),
            _cell(", ".join(map(str, columns)) if isinstance(columns, list) else columns, limit=10_000),
        )
    return files


def _jquants_table(fetch: dict[str, Any]) -> Table:
    """What ``atft data fetch-jquants`` fetched: per endpoint the periods fetched, reused and still open (to
    be asked again next run), rows, malformed records and business days that came back empty; the caption
    has the window, requests, retries and delisted codes."""
    table = Table(
        title="J-Quants fetch",
        caption=Text(
            f"{fetch.get('from')} .. {fetch.get('to')}, fetched {_cell(fetch.get('fetched_at'))}; "
            f"{_cell(fetch.get('requests_made'))} requests this run, "
            f"retries {fetch.get('retries') or 'none'}; {fetch.get('delisted_codes')} codes delisted in the "
            f"window; skipped: {', '.join(map(str, fetch.get('skipped_endpoints') or [])) or 'none'}"
        ),
    )
    for column in (
        "endpoint",
        "periods",
        "fetched",
        "reused",
        "open",
        "rows",
        "malformed",
        "days without data",
    ):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    endpoints = fetch.get("endpoints")
    for name, counts in (endpoints if isinstance(endpoints, dict) else {}).items():
        counts = counts if isinstance(counts, dict) else {}
        keys = ("periods", "fetched", "reused", "open_periods", "rows", "malformed_records")
        cells = [counts.get(k, 0) for k in keys]
        cells[3] = len(cells[3]) if isinstance(cells[3], list) else cells[3]  # open: their number
        gaps = counts.get("business_days_without_data") or []
        table.add_row(
            _cell(name), *[_cell(c) for c in cells], _cell(", ".join(map(str, gaps)) if gaps else 0)
        )
    return table


def manifest_tables(manifest: dict[str, Any]) -> list[Table | Text]:
    """Rich tables summarizing a store manifest: overview, tables, checks and (synthetic) oracle skill.

    Everything shown is plain text, and entries of an unexpected shape are shown as they are rather than
    crashing: ``atft data info`` is the tool one reaches for when a store looks wrong.
    """
    if manifest.get("kind") == "dataset":
        return [*dataset_tables(manifest, _cell), _files_table(manifest)]
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
            overview.add_row(key, _cell(manifest[key]))
    out: list[Table | Text] = [overview, _files_table(manifest)]
    oracle_ic = manifest.get("oracle_rank_ic")
    if isinstance(oracle_ic, dict) and oracle_ic:
        oracle = Table(title="Oracle: mean daily RankIC vs realized forward return")
        for h in oracle_ic:
            oracle.add_column(Text(str(h)), justify="right")
        oracle.add_row(*[Text(_number(v, ".4f")) for v in oracle_ic.values()])
        out.append(oracle)
    jquants = manifest.get("jquants")
    if isinstance(jquants, dict):
        out.append(_jquants_table(jquants))
    checks = manifest.get("checks")
    checks = list(_flatten(checks)) if isinstance(checks, dict) else [("checks", checks)] if checks else []
    if checks:
        table = Table(title="Checks and repairs")
        table.add_column("check")
        table.add_column("value", overflow="fold")
        for key, value in checks:
            table.add_row(_cell(key), _cell(value))
        out.append(table)
    details = manifest.get("details")
    details = details if isinstance(details, dict) else {}
    moves_list = details.get("extreme_moves")
    if isinstance(moves_list, list) and moves_list:
        moves = Table(title=f"Extreme moves (flagged, not altered; first {min(15, len(moves_list))})")
        for col in ("code", "date", "return", "index_return"):
            moves.add_column(col, justify="right")
        for m in moves_list[:15]:
            m = m if isinstance(m, dict) else {"code": m}
            idx = m.get("index_return")
            moves.add_row(
                _cell(m.get("code", "")),
                _cell(m.get("date", "")),
                Text(_number(m.get("return", ""), "+.1%")),
                Text("" if idx is None else _number(idx, "+.1%")),
            )
        out.append(moves)
    codes = details.get("codes_without_sector")
    if isinstance(codes, list) and codes:
        shown = ", ".join(map(str, codes[:30]))
        out.append(Text(f"Codes without sector ({len(codes)}): {shown}{' ...' if len(codes) > 30 else ''}"))
    return out
