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

import json
import os
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
HORIZONS: tuple[int, ...] = (1, 5, 10, 20)


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
    check_target(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
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


def check_target(out: str | Path, *, overwrite: bool) -> None:
    """Fail early unless ``out`` may be written: absent, or (with ``overwrite``) an empty folder or a store.

    ``--overwrite`` never replaces a folder that is not an ATFT store: a mistyped ``--out`` must not
    delete someone's files.
    """
    out = Path(out)
    if not out.exists():
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
    try:
        tables = json.loads((out / MANIFEST).read_text()).get("tables", {})
        known = {MANIFEST} | {info["file"] for info in tables.values()}
    except (ValueError, AttributeError, KeyError, TypeError):
        known = {MANIFEST}
    foreign = sorted(entries - known)
    if foreign:
        raise StoreError(
            f"refusing to replace {out}: besides the store it holds {', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}, which --overwrite would delete; move them first"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_staging(out: Path) -> None:
    """Remove staging or swap folders left by a write of ``out`` whose process died (kill -9, power loss)."""
    for leftover in out.parent.glob(f".{out.name}.*-*"):
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
    """Read ``manifest.json`` of a store, with a clear error when the folder is not a store."""
    path = Path(path)
    mf = path / MANIFEST
    if not path.is_dir():
        raise StoreError(f"{path} is not a folder")
    if not mf.is_file():
        raise StoreError(f"{path} has no {MANIFEST}: it is not an ATFT store (or its write was interrupted)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{mf} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables", {}), dict):
        raise StoreError(f"{mf} is not an ATFT manifest: expected an object with a 'tables' object")
    tables = manifest.get("tables", {})
    files = [
        info["file"] if isinstance(info, dict) and "file" in info else f"{name}.parquet"
        for name, info in tables.items()
    ]
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise StoreError(f"{path} is incomplete: its manifest lists {', '.join(missing)}, which is missing")
    return manifest


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
    def read(cls, path: str | Path) -> RawStore:
        path = Path(path)
        manifest = read_manifest(path)

        def table(name: str, required: bool) -> pl.DataFrame | None:
            f = path / f"{name}.parquet"
            if not f.is_file():
                if required:
                    raise StoreError(f"{path} is missing {f.name}")
                return None
            return pl.read_parquet(f)

        return cls(
            path=path,
            manifest=manifest,
            prices=table("prices", True),
            index=table("index", False),
            listed_info=table("listed_info", True),
            oracle=table("oracle", False),
        )
