"""The canonical raw store: the one on-disk form that synthetic and imported markets share.

A raw store is a folder of parquet tables plus ``manifest.json``:

- ``prices.parquet``       date, code, open, high, low, close, volume, turnover — sorted by (code, date)
- ``index.parquet``        date, open, high, low, close, volume — the market index, sorted by date
- ``listed_info.parquet``  code, name, market, sector, sector17_code, sector17_name, sector33_code, sector33_name
- ``rejected_rows.parquet`` (optional) rows the importer quarantined, with the source file, row and reason
- ``oracle.parquet``       (synthetic only) date, code, oracle_1d, oracle_5d, oracle_10d, oracle_20d
- ``manifest.json``        what was written, from where, and every check and repair with its count

Writes are atomic: tables go to a hidden sibling folder that is renamed into place only when complete,
so an interrupted write never leaves a half-written store behind. Ctrl-C or SIGTERM during a write removes
that folder (a second Ctrl-C waits until it is gone); one a killed writer left is removed by the next
write. A writer killed while swapping an old store for the new one leaves the old one hidden beside the
target; the next read or write of the target renames it back.

This module is also the one place that turns a damaged table (truncated, or not parquet) into a one-line
:class:`StoreError` naming the file and how to re-create it (:func:`check_tables`, :meth:`RawStore.read`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

PRICE_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "code": pl.String(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "turnover": pl.Float64(),
}
INDEX_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
LISTED_INFO_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.String(),
    "name": pl.String(),
    "market": pl.String(),
    "sector": pl.String(),
    "sector17_code": pl.Int32(),
    "sector17_name": pl.String(),
    "sector33_code": pl.Int32(),
    "sector33_name": pl.String(),
}
# The tables below come from J-Quants (``atft data fetch-jquants``); a store may have none of them.
# Each keeps the publication time it was released at: ``atft.features.point_in_time`` decides the first
# trading day a row may be used on.
STATEMENTS_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.String(),
    "disclosed_date": pl.Date(),
    "disclosed_time": pl.String(),  # "HH:MM:SS", exchange-local; null when the source gives none
    "disclosure_number": pl.String(),
    "document_type": pl.String(),
    "period_type": pl.String(),  # 1Q, 2Q, 3Q, FY (others kept as given)
    "period_end": pl.Date(),
    "fiscal_year_start": pl.Date(),
    "fiscal_year_end": pl.Date(),
    # Results of the fiscal year to date (cumulative over its quarters), in yen.
    "net_sales": pl.Float64(),
    "operating_profit": pl.Float64(),
    "ordinary_profit": pl.Float64(),
    "profit": pl.Float64(),
    "eps": pl.Float64(),
    "total_assets": pl.Float64(),
    "equity": pl.Float64(),
    "bps": pl.Float64(),
    # The company's forecast for the current fiscal year, and (in FY reports) for the next one.
    "forecast_net_sales": pl.Float64(),
    "forecast_operating_profit": pl.Float64(),
    "forecast_ordinary_profit": pl.Float64(),
    "forecast_profit": pl.Float64(),
    "forecast_eps": pl.Float64(),
    "next_forecast_net_sales": pl.Float64(),
    "next_forecast_operating_profit": pl.Float64(),
    "next_forecast_ordinary_profit": pl.Float64(),
    "next_forecast_profit": pl.Float64(),
    "next_forecast_eps": pl.Float64(),
}
# Trading by investor type, per market section and week, in yen (J-Quants "trades_spec").
INVESTOR_GROUPS: tuple[str, ...] = (
    "proprietary", "brokerage", "total", "individual", "foreign", "securities_companies",
    "investment_trusts", "business_companies", "other_companies", "insurance_companies", "banks",
    "trust_banks", "other_financials",
)  # fmt: skip
TRADES_SPEC_SCHEMA: dict[str, pl.DataType] = {
    "published_date": pl.Date(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
    "section": pl.String(),
    **{f"{g}_{side}": pl.Float64() for g in INVESTOR_GROUPS for side in ("sell", "buy", "total", "balance")},
}
# Margin trading balances per stock (weekly, as of ``date``; daily from 2026-09-25), in shares.
MARGIN_INTEREST_SCHEMA: dict[str, pl.DataType] = {
    "published_date": pl.Date(),  # null before 2026-09-25: the source did not record it
    "date": pl.Date(),
    "code": pl.String(),
    "issue_type": pl.String(),
    "short_volume": pl.Float64(),
    "long_volume": pl.Float64(),
    "short_negotiable_volume": pl.Float64(),
    "long_negotiable_volume": pl.Float64(),
    "short_standard_volume": pl.Float64(),
    "long_standard_volume": pl.Float64(),
}
# The exchange's calendar: holiday_division "1" business day, "2" half day, "0" and "3" closed for stocks.
TRADING_CALENDAR_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "holiday_division": pl.String()}
BUSINESS_DIVISIONS: tuple[str, ...] = ("1", "2")  # the holiday_division values on which stocks trade
# Every listing snapshot the fetch saw (one row per code and snapshot date): delisted codes and changes
# of market or sector stay visible here, while listed_info keeps each code's latest row.
LISTED_HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "code": pl.String(),
    "name": pl.String(),
    "market": pl.String(),
    "scale": pl.String(),
    "sector17_code": pl.Int32(),
    "sector33_code": pl.Int32(),
}
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "prices": PRICE_SCHEMA,
    "index": INDEX_SCHEMA,
    "listed_info": LISTED_INFO_SCHEMA,
    "statements": STATEMENTS_SCHEMA,
    "trades_spec": TRADES_SPEC_SCHEMA,
    "margin_interest": MARGIN_INTEREST_SCHEMA,
    "trading_calendar": TRADING_CALENDAR_SCHEMA,
    "listed_history": LISTED_HISTORY_SCHEMA,
}
# The optional J-Quants tables, as RawStore attributes.
JQUANTS_TABLES: tuple[str, ...] = (
    "statements", "trades_spec", "margin_interest", "trading_calendar", "listed_history",
)  # fmt: skip
# What every reader relies on; the other canonical columns (turnover, names, sector levels) may be absent.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "prices": ("date", "code", "open", "high", "low", "close", "volume"),
    "index": ("date", "close"),
    "listed_info": ("code",),
    "statements": ("code", "disclosed_date", "disclosed_time"),
    "trades_spec": ("published_date", "section"),
    "margin_interest": ("published_date", "date", "code"),
    "trading_calendar": ("date", "holiday_division"),
    "listed_history": ("date", "code"),
}
HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # table names are file stems; no paths, no dots
# What to run to re-create a damaged store, by its manifest kind.
_REMAKE: dict[str, str] = {
    "imported": "re-import it with `atft data import ... --overwrite`",
    "jquants": "re-create it with `atft data fetch-jquants ... --overwrite` (the cache makes that quick)",
    "synthetic": "re-create it with `atft data synth ... --overwrite`",
    "dataset": "rebuild it with `atft data build ... --overwrite`",
}

log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A raw store is missing, incomplete or not in canonical form."""


def conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Select and cast ``df`` to the canonical schema of ``table``; optional columns absent become null."""
    schema = TABLE_SCHEMAS[table]
    return df.select(
        [
            (pl.col(name) if name in df.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def write_store(
    out: str | Path,
    tables: dict[str, pl.DataFrame],
    manifest: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tables`` (name -> frame) and ``manifest`` to ``out`` atomically and return the path.

    The manifest gains ``format_version``, ``created_at`` and a ``tables`` entry (rows and columns per table).
    An existing ``out`` is an error unless ``overwrite`` is set; then it is replaced only after the new store
    is complete. Folders that interrupted writes of ``out`` left are removed first (``remove_leftovers``,
    which logs how many), and an old copy a killed swap left hidden is restored (``restore_old_copy``).
    """
    out = Path(out)
    check_target(out, overwrite=overwrite, kind=manifest.get("kind"))  # also restores a hidden old copy
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror} ({e.filename})") from e
    staging: Path | None = None
    with _sigterm_raises():
        try:
            with _signals_deferred():  # no interrupt between creating the folder and knowing its name
                staging = _make_staging(out)
            _write_tables(staging, tables, manifest)
            _replace_dir(staging, out)
        except BaseException:
            if staging is not None:
                # A second Ctrl-C during the deletion would otherwise leave the folder half deleted.
                with _signals_deferred():
                    shutil.rmtree(staging, ignore_errors=True)
            raise
    return out


def _make_staging(out: Path) -> Path:
    """A new hidden staging folder beside ``out``, named after it and this process."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror} ({e.filename})") from e


def _write_tables(staging: Path, tables: dict[str, pl.DataFrame], manifest: dict[str, Any]) -> None:
    """Write the tables and the completed manifest into ``staging``."""
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a store should be as readable as any folder
    table_info = {}
    for name, df in tables.items():
        # zstd level 1: at 10M rows ~1.5x less CPU to write than the default level, for files ~2% larger.
        df.write_parquet(
            staging / f"{name}.parquet", compression="zstd", compression_level=1, statistics=True
        )
        table_info[name] = {"file": f"{name}.parquet", "rows": df.height, "columns": df.columns}
    full = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest,
        "tables": table_info,
    }
    # allow_nan=False: NaN or Infinity would make manifest.json invalid JSON for other tools.
    (staging / MANIFEST).write_text(json.dumps(full, indent=2, default=str, allow_nan=False) + "\n")


def check_target(out: str | Path, *, overwrite: bool, kind: str | None = None) -> None:
    """Fail early unless ``out`` may be written: absent, or (with ``overwrite``) an empty folder or a store.

    An old copy of ``out`` that a killed write left hidden is first renamed back (``restore_old_copy``),
    so it counts as the existing store.

    ``--overwrite`` never replaces a folder that is not an ATFT store: a mistyped ``--out`` must not
    delete someone's files. Only files the store itself writes (``manifest.json`` and ``<table>.parquet``
    for the tables its manifest lists) count as the store's; anything else blocks the overwrite. With
    ``kind`` (the manifest kind about to be written), a dataset never replaces a raw store, nor a raw
    store a dataset: ``build --out`` pointing at its own ``--raw`` would destroy the input.
    """
    out = Path(out)
    if out.is_symlink():
        # Replacing a link would either swap the link for a folder or write through it into a place
        # the user did not name; both surprise. The real path is one readlink away.
        raise StoreError(
            f"refusing to write {out}: it is a symbolic link (to {os.readlink(out)}); "
            "give the real folder as --out"
        )
    restore_old_copy(out)  # a store a killed writer left hidden is the user's, not free space
    if not out.exists():
        _check_parent_writable(out)
        return
    if not overwrite:
        raise StoreError(f"{out} already exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise StoreError(f"refusing to replace {out}: it is a file, not an ATFT store")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if MANIFEST not in entries:
        raise StoreError(
            f"refusing to replace {out}: it is not an ATFT store (no {MANIFEST}); "
            "remove it yourself or choose another output folder"
        )
    existing = _peek_manifest(out / MANIFEST)
    foreign = sorted(entries - {MANIFEST} - _manifest_table_files(existing))
    if foreign:
        raise StoreError(
            f"refusing to replace {out}: besides the store it holds {', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}, which --overwrite would delete; move them first"
        )
    existing_kind = existing.get("kind")
    if kind is not None and isinstance(existing_kind, str) and _family(existing_kind) != _family(kind):
        raise StoreError(
            f"refusing to replace {out}: it is a {_family(existing_kind)}, and this would write a "
            f"{_family(kind)} over it; choose another output folder"
        )


def _family(kind: str) -> str:
    return "dataset" if kind == "dataset" else "raw store"


def _check_parent_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot be created: its nearest existing ancestor is a file or
    read-only to us (minutes of synthesis would otherwise end in an OS error)."""
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StoreError(f"cannot write {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write {out}: no permission to create files in {ancestor}")


def _peek_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` as a dict, or {} when it cannot be read: the overwrite checks trust nothing."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _manifest_table_files(manifest: dict[str, Any]) -> set[str]:
    """The ``<table>.parquet`` names a manifest lists; names of any other shape are not trusted."""
    tables = manifest.get("tables")
    if not isinstance(tables, dict):
        return set()
    return {f"{name}.parquet" for name in tables if isinstance(name, str) and _TABLE_NAME.match(name)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """The folders writes of ``out`` leave beside it, each with its kind and the writer's process id.

    ``.<name>.tmp-<pid>-<random>``: a staging folder, being written or abandoned. ``.<name>.old-<pid>``:
    the previous store, hidden during the swap (always whole: it is renamed, never written).
    ``.<name>.del-<pid>-<random>``: a previous store being deleted after the swap.
    """
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old|del)-(\d+)(?:-[^/]*)?")
    found = []
    for entry in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append((entry, match[1], int(match[2])))
    return found


def restore_old_copy(out: str | Path) -> Path | None:
    """Rename back the old store a killed writer hid while replacing ``out``; return where it was.

    A write that replaces a store renames the old one to ``.<name>.old-<pid>`` and then the new one into
    place; killed between the two, it leaves ``out`` missing. Only then (``out`` absent, the writer
    dead) is the old copy renamed back, the newest if there are several; otherwise nothing happens.
    """
    out = Path(out)
    if not out.name or out.exists() or out.is_symlink() or not out.parent.is_dir():
        return None
    olds = [(p, pid) for p, kind, pid in _leftovers(out) if kind == "old" and not _alive(pid)]
    if not olds:
        return None
    old = max(olds, key=lambda item: (item[0].stat().st_mtime, item[1]))[0]
    try:
        os.replace(old, out)
    except OSError as e:
        if out.exists():  # another reader restored it first
            return None
        raise StoreError(
            f"{out} is missing, and the copy a killed write left at {old} cannot be renamed back "
            f"({e.strerror}); rename it to {out.name} yourself"
        ) from e
    log.warning("restored %s from %s, which a write killed while replacing it left hidden", out, old.name)
    return old


def remove_leftovers(out: str | Path) -> list[Path]:
    """Remove the folders that writes of ``out`` by processes no longer alive left beside it.

    Those are staging folders (Ctrl-C before the cleanup finished, kill -9, power loss), old copies
    once ``out`` exists again (see ``restore_old_copy``), and old stores whose deletion was cut short.
    A live writer's folders are left alone. Returns the folders removed; a warning logs their number.
    """
    out = Path(out)
    removed = []
    for entry, kind, pid in _leftovers(out):
        if _alive(pid) or (kind == "old" and not out.exists()):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.warning(
            "removed %d folder(s) that interrupted writes of %s left behind: %s",
            len(removed),
            out,
            ", ".join(p.name for p in removed),
        )
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_dir(staging: Path, out: Path) -> None:
    """Move a complete ``staging`` folder to ``out``; an old ``out`` is removed only after the swap.

    The renames run with SIGINT and SIGTERM deferred, so Ctrl-C cannot land between them; a kill -9
    there leaves ``out`` missing and the old store at ``.<name>.old-<pid>``, which the next read or
    write of ``out`` renames back.
    """
    trash = None
    try:
        with _signals_deferred():
            if not out.exists():
                os.replace(staging, out)
                return
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            try:
                os.replace(staging, out)
            except BaseException:
                os.replace(old, out)
                raise
            # Renamed before it is deleted, so that an .old- folder is always a whole store: a deletion
            # cut short leaves a .del- folder, which is never restored.
            trash = out.with_name(f".{out.name}.del-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(old, trash)
    finally:  # also when a signal held during the swap is delivered on leaving the block
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers they had.

    For short steps that must not be cut in two (a swap of folders, the cleanup of a staging folder).
    Python runs signal handlers only in the main thread, so elsewhere, and for a signal that is ignored
    or handled outside Python, this changes nothing. Blocking the signal mask instead would not work:
    another thread (polars has a pool) would take the signal and Python would still raise.
    """
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None and handler is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a store is written, SIGTERM raises SystemExit (status 143) instead of killing the process,
    so that the staging folder is removed as on Ctrl-C. Only in the main thread, and only while SIGTERM
    has its default action: an application's own handler is left alone."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a store, with a clear error when the folder is not a store.

    Its ``tables`` entry must be well formed (``{name: {"file": "<name>.parquet", "rows": int,
    "columns": [str, ...]}}``) and every file it lists must exist; other entries are free-form. A store
    that a killed write left hidden while ``path`` is missing is renamed back first (``restore_old_copy``).
    """
    path = Path(path)
    mf = path / MANIFEST
    restore_old_copy(path)
    if not path.is_dir():
        raise StoreError(f"{path} is not a folder")
    if not mf.is_file():
        raise StoreError(f"{path} has no {MANIFEST}: it is not an ATFT store (or its write was interrupted)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"{mf} is not UTF-8 text (byte {e.start}): it is not an ATFT manifest") from e
    except json.JSONDecodeError as e:
        raise StoreError(f"{mf} is not valid JSON: {e}") from e
    except OSError as e:
        raise StoreError(f"{mf} cannot be read: {e.strerror}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables", {}), dict):
        raise StoreError(f"{mf} is not an ATFT manifest: expected an object with a 'tables' object")
    for name, info in manifest.get("tables", {}).items():
        problem = _table_entry_problem(name, info)
        if problem:
            raise StoreError(f"{mf}: tables.{name} {problem}")
    missing = [
        f"{name}.parquet" for name in manifest.get("tables", {}) if not (path / f"{name}.parquet").is_file()
    ]
    if missing:
        raise StoreError(f"{path} is incomplete: its manifest lists {', '.join(missing)}, which is missing")
    return manifest


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (polars appends pages of context), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a hidden sibling of ``path`` (``.<name>.tmp-<pid>``), then rename it over ``path``
    (atomic on one disk): a reader sees the old file or the whole new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _table_entry_problem(name: str, info: Any) -> str | None:
    """What is wrong with one ``tables`` entry of a manifest, or None."""
    if not _TABLE_NAME.match(name):
        return "is not a table name (lowercase letters, digits and _)"
    if not isinstance(info, dict):
        return f"must be an object, not {type(info).__name__}"
    if info.get("file", f"{name}.parquet") != f"{name}.parquet":
        return f"must name the file {name}.parquet, not {info['file']!r}"
    rows = info.get("rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        return f"needs 'rows', a count >= 0 (got {rows!r})"
    columns = info.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return f"needs 'columns', a list of column names (got {columns!r})"
    return None


def check_tables(path: str | Path) -> list[Path]:
    """Check that every table of the store or dataset at ``path`` opens; return the files checked.

    Reads the manifest (``read_manifest``) and the footer of each table it lists, where parquet keeps
    the schema and the row groups: a file truncated anywhere, or not parquet at all, has no valid
    footer. Raises :class:`StoreError` naming the first damaged file and the command that re-creates
    the store. Data pages are not read (damage inside them surfaces, as the same error, when
    :meth:`RawStore.read` reads the table).
    """
    path = Path(path)
    return _open_tables(path, read_manifest(path))


def _open_tables(path: Path, manifest: dict[str, Any]) -> list[Path]:
    """``check_tables`` with the manifest already read."""
    files = [path / f"{name}.parquet" for name in manifest.get("tables", {})]
    for file in files:
        try:
            pl.scan_parquet(file, glob=False).collect_schema()
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as e:
            raise _damaged(file, manifest, "truncated or not parquet") from e
    return files


def _damaged(file: Path, manifest: dict[str, Any], what: str) -> StoreError:
    """The one-line error for a table that cannot be read: the file, what is wrong, how to re-create it."""
    kind = manifest.get("kind")
    remake = _REMAKE.get(kind if isinstance(kind, str) else "", "re-create it with the command that wrote it")
    return StoreError(f"{file} is damaged ({what}): {remake}")


@dataclass
class RawStore:
    """A loaded raw store: the canonical tables plus its manifest."""

    path: Path
    manifest: dict[str, Any]
    prices: pl.DataFrame
    index: pl.DataFrame | None
    listed_info: pl.DataFrame
    oracle: pl.DataFrame | None = None
    # From J-Quants only (``JQUANTS_TABLES``); None where the store does not have the table.
    statements: pl.DataFrame | None = None
    trades_spec: pl.DataFrame | None = None
    margin_interest: pl.DataFrame | None = None
    trading_calendar: pl.DataFrame | None = None
    listed_history: pl.DataFrame | None = None

    @classmethod
    def read(cls, path: str | Path, *, oracle: bool = True) -> RawStore:
        """Load the store at ``path``; ``oracle=False`` leaves the synthetic oracle on disk.

        Every table the manifest lists must open (``check_tables``), read or not: a damaged oracle
        fails here, not when a later step reads it. Raises :class:`StoreError` for a damaged table.
        """
        path = Path(path)
        manifest = read_manifest(path)
        _open_tables(path, manifest)

        def table(name: str, required: bool) -> pl.DataFrame | None:
            f = path / f"{name}.parquet"
            if not f.is_file():
                if required:
                    raise StoreError(f"{path} is missing {f.name}")
                return None
            try:
                df = pl.read_parquet(f, glob=False)
            except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as e:
                raise _damaged(f, manifest, f"its data cannot be read: {first_line(e)}") from e
            missing = [c for c in REQUIRED_COLUMNS.get(name, ()) if c not in df.columns]
            if missing:
                raise StoreError(f"{f} lacks column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")
            return df

        return cls(
            path=path,
            manifest=manifest,
            prices=table("prices", True),
            index=table("index", False),
            listed_info=table("listed_info", True),
            oracle=table("oracle", False) if oracle else None,
            **{name: table(name, False) for name in JQUANTS_TABLES},
        )


def open_days(trading_calendar: pl.DataFrame) -> pl.Series:
    """The sorted business days (``BUSINESS_DIVISIONS``) of a ``trading_calendar`` table, as Date."""
    days = trading_calendar.filter(pl.col("holiday_division").is_in(BUSINESS_DIVISIONS))["date"]
    return days.cast(pl.Date).drop_nulls().unique().sort()


def raw_calendar(path: str | Path) -> np.ndarray:
    """The trading days of a raw store: the sorted unique dates of ``prices.parquet`` as ``datetime64[D]``.

    Only the ``date`` column is read. (A dataset's calendar is ``DatasetFolder.calendar``.)
    """
    path = Path(path)
    file = path / "prices.parquet"
    if not file.is_file():
        raise StoreError(
            f"{path}: neither a dataset folder (features.parquet) nor a raw store (prices.parquet)"
        )
    try:
        dates = pl.scan_parquet(file, glob=False).select(pl.col("date").cast(pl.Date)).unique().collect()
    except pl.exceptions.PolarsError as e:
        raise StoreError(f"{file}: cannot read its date column ({first_line(e)})") from None
    calendar = np.unique(dates.get_column("date").drop_nulls().to_numpy().astype("datetime64[D]"))
    if len(calendar) == 0:
        raise StoreError(f"{file}: has no dates")
    return calendar
