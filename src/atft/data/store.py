"""The canonical raw store: the one on-disk form that synthetic and imported markets share.

A raw store is a folder of parquet tables plus ``manifest.json``:

- ``prices.parquet``       date, code, open, high, low, close, volume, turnover — sorted by (code, date)
- ``index.parquet``        date, open, high, low, close, volume — the market index, sorted by date
- ``listed_info.parquet``  code, name, market, sector, sector17_code, sector17_name, sector33_code, sector33_name
- ``rejected_rows.parquet`` (optional) rows the importer quarantined, with the source file, row and reason
- ``oracle.parquet``       (synthetic only) date, code, oracle_1d, oracle_5d, oracle_10d, oracle_20d
- ``manifest.json``        what was written, from where, and every check and repair with its count

Writes are atomic: tables go to a hidden sibling folder that is renamed into place only when complete,
so an interrupted write never leaves a half-written store behind.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "prices": PRICE_SCHEMA,
    "index": INDEX_SCHEMA,
    "listed_info": LISTED_INFO_SCHEMA,
}
# What every reader relies on; the other canonical columns (turnover, names, sector levels) may be absent.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "prices": ("date", "code", "open", "high", "low", "close", "volume"),
    "index": ("date", "close"),
    "listed_info": ("code",),
}
HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # table names are file stems; no paths, no dots


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
    is complete.
    """
    out = Path(out)
    check_target(out, overwrite=overwrite, kind=manifest.get("kind"))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror} ({e.filename})") from e
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a store should be as readable as any folder
    try:
        table_info = {}
        for name, df in tables.items():
            df.write_parquet(staging / f"{name}.parquet", compression="zstd", statistics=True)
            table_info[name] = {"file": f"{name}.parquet", "rows": df.height, "columns": df.columns}
        full = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **manifest,
            "tables": table_info,
        }
        # allow_nan=False: NaN or Infinity would make manifest.json invalid JSON for other tools.
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, default=str, allow_nan=False) + "\n")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_target(out: str | Path, *, overwrite: bool, kind: str | None = None) -> None:
    """Fail early unless ``out`` may be written: absent, or (with ``overwrite``) an empty folder or a store.

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


def _remove_stale_staging(out: Path) -> None:
    """Remove staging or swap folders left by a write of ``out`` whose process died (kill -9, power loss)."""
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, rest = leftover.name[len(out.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_dir(staging: Path, out: Path) -> None:
    """Move a complete ``staging`` folder to ``out``; an old ``out`` is removed only after the swap."""
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
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a store, with a clear error when the folder is not a store.

    Its ``tables`` entry must be well formed (``{name: {"file": "<name>.parquet", "rows": int,
    "columns": [str, ...]}}``) and every file it lists must exist; other entries are free-form.
    """
    path = Path(path)
    mf = path / MANIFEST
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


@dataclass
class RawStore:
    """A loaded raw store: the canonical tables plus its manifest."""

    path: Path
    manifest: dict[str, Any]
    prices: pl.DataFrame
    index: pl.DataFrame | None
    listed_info: pl.DataFrame
    oracle: pl.DataFrame | None = None

    @classmethod
    def read(cls, path: str | Path, *, oracle: bool = True) -> RawStore:
        """Load the store at ``path``; ``oracle=False`` leaves the synthetic oracle on disk."""
        path = Path(path)
        manifest = read_manifest(path)

        def table(name: str, required: bool) -> pl.DataFrame | None:
            f = path / f"{name}.parquet"
            if not f.is_file():
                if required:
                    raise StoreError(f"{path} is missing {f.name}")
                return None
            df = pl.read_parquet(f, glob=False)
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
        )
