"""The dataset folder: its one reader and writer (:class:`DatasetFolder`), and its namespaces: what a model
may read as input, and what it may never read.

Labels (``target_*``, ``label_end_*``) hold the future by construction and the synthetic oracle
(``oracle_*``) holds the answer itself. They live in other files than the features, and
``select_features`` is the one gate through which a model picks its inputs: it refuses them by name.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from atft.data.store import StoreError, atomic_write, first_line, read_manifest, write_store
from atft.features.labels import LABEL_PREFIXES

FORBIDDEN_PREFIXES = (*LABEL_PREFIXES, "oracle_")


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or asked for something it must not give."""


def read_dataset_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a dataset folder written by ``atft data build`` (checked as any store's is)."""
    try:
        manifest = read_manifest(path)
    except StoreError as e:
        raise DatasetError(f"{e} (a dataset is made by `atft data build`)") from e
    if manifest.get("kind") != "dataset":
        raise DatasetError(
            f"{path} is not a dataset (its manifest says kind {manifest.get('kind')!r}); is it a raw store?"
        )
    return manifest


def is_forbidden_input(name: str, manifest: dict[str, Any]) -> bool:
    """True for any label or oracle column: names a model must never read as a feature."""
    label_columns = {n for names in manifest.get("labels", {}).values() for n in names}
    return name.startswith(FORBIDDEN_PREFIXES) or name in label_columns


def select_features(manifest: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """The feature columns a model reads: ``names`` if given, else the manifest's ``model_features``.

    Raises DatasetError for a label or oracle name (they can never be features) and for an unknown name.
    """
    if names is None:
        names = list(manifest["model_features"])
    forbidden = [n for n in names if is_forbidden_input(n, manifest)]
    if forbidden:
        raise DatasetError(
            f"{', '.join(forbidden)}: labels and oracle columns can never be features "
            "(they hold the future); pick names from the manifest's feature list"
        )
    known = {n for group in manifest["features"].values() for n in group}
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise DatasetError(f"unknown feature {name!r} in features.parquet{hint}")
    return list(names)


def features_without(manifest: dict[str, Any], drop_groups: list[str]) -> list[str]:
    """The manifest's ``model_features`` minus every feature of the groups named in ``drop_groups``.

    Raises DatasetError for a group the manifest lacks, naming the groups it has.
    """
    groups = manifest["features"]
    unknown = [g for g in drop_groups if g not in groups]
    if unknown:
        raise DatasetError(
            f"features.drop_groups: unknown group(s) {', '.join(map(repr, unknown))}; "
            f"the dataset's groups are {', '.join(groups)}"
        )
    dropped = {n for g in drop_groups for n in groups[g]}
    kept = [n for n in manifest["model_features"] if n not in dropped]
    if not kept:
        raise DatasetError(f"features.drop_groups={list(drop_groups)} leaves no feature to read")
    return kept


DAMAGED_HINT = "rebuild it with `atft data build --raw RAW --out DIR --overwrite`"
CACHE_DIR = "cache"  # derived files (panel, day graphs, guard verdict): disposable, rebuilt on demand


class DatasetFolder:
    """The files of a dataset folder written by ``atft data build``: their one reader and writer.

    ``features.parquet``, ``labels.parquet``, ``stocks.parquet``, the synthetic market's ``oracle.parquet`` and
    ``manifest.json`` are read only through this class, so a missing or damaged file always becomes one
    :class:`DatasetError` line that names the file and what to do.

    ``cache/`` holds files derived from the tables (the memory-mapped feature panel, the day graphs, the
    guard's verdict), named ``<kind>-<stamp>-<key>``: :meth:`stamp` changes whenever the dataset does, so a
    stale file is never read (and is deleted at the next write). Every cache file is written atomically; one
    that is damaged anyway is deleted and rebuilt with a warning, since it holds nothing the tables do not.
    """

    TABLES = ("features", "labels", "stocks", "oracle")

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        self._manifest: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"DatasetFolder({str(self.root)!r})"

    @staticmethod
    def write(
        out: str | Path, tables: dict[str, pl.DataFrame], manifest: dict[str, Any], *, overwrite: bool = False
    ) -> DatasetFolder:
        """Write a dataset atomically (the raw store's writer: a complete folder or the old one)."""
        unknown = sorted(set(tables) - set(DatasetFolder.TABLES))
        if unknown:
            raise DatasetError(f"a dataset has no table {unknown}: its tables are {DatasetFolder.TABLES}")
        cache = Path(out) / CACHE_DIR
        if overwrite and (Path(out) / "manifest.json").is_file() and cache.is_dir():
            shutil.rmtree(cache)  # ours and derived from the old tables: the store would call it foreign
        write_store(out, tables, {**manifest, "kind": "dataset"}, overwrite=overwrite)
        return DatasetFolder(out)

    @property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json``, checked (read once)."""
        if self._manifest is None:
            self._manifest = read_dataset_manifest(self.root)
        return self._manifest

    @property
    def horizons(self) -> list[int]:
        """The label horizons the dataset was built with, in days."""
        return [int(h) for h in self.manifest["horizons"]]

    def check_horizons(self, horizons: list[int]) -> None:
        """Refuse horizons the dataset has no labels for, naming the config key."""
        missing = [h for h in horizons if h not in self.horizons]
        if missing:
            raise DatasetError(
                f"{self.root} has no labels for horizon(s) {missing} (data.horizons): "
                f"its horizons are {self.horizons}"
            )

    def path(self, table: str) -> Path:
        """The file of ``table`` (one of :attr:`TABLES`)."""
        if table not in self.TABLES:
            raise DatasetError(f"a dataset has no table {table!r}: its tables are {', '.join(self.TABLES)}")
        return self.root / f"{table}.parquet"

    def has(self, table: str) -> bool:
        return self.path(table).is_file()

    def columns(self, table: str) -> list[str]:
        """The column names of ``table``, from its parquet footer."""
        return self._guarded(table, lambda f: pl.scan_parquet(f, glob=False).collect_schema().names())

    def read(self, table: str, columns: list[str] | None = None) -> pl.DataFrame:
        """``table`` as a frame (only ``columns`` when given)."""
        return self._guarded(table, lambda f: pl.read_parquet(f, columns=columns, glob=False))

    def _guarded(self, table: str, read: Any) -> Any:
        path = self.path(table)
        self.manifest  # noqa: B018 -- a folder that is no dataset says so before any table is opened
        if not path.is_file():
            raise DatasetError(f"{path} not found: the dataset is incomplete; {DAMAGED_HINT}")
        try:
            return read(path)
        except (pl.exceptions.PolarsError, OSError) as e:
            reason = first_line(e)
            raise DatasetError(f"{path} is damaged ({reason[:160]}); {DAMAGED_HINT}") from None

    def calendar(self) -> np.ndarray:
        """The trading days (sorted unique dates of ``features.parquet``) as datetime64[D]."""
        dates = self.read("features", ["date"])["date"].drop_nulls().cast(pl.Date).unique().to_numpy()
        if len(dates) == 0:
            raise DatasetError(f"{self.path('features')} has no dates; {DAMAGED_HINT}")
        return np.unique(dates.astype("datetime64[D]"))

    def stock_table(self) -> pl.DataFrame:
        """One row per stock, sorted by ``stock_id`` (code, stock_id, sector_id, and market_id when built)."""
        return self.read("stocks").sort("stock_id")

    def market_ids(self) -> np.ndarray | None:
        """Each stock's market segment id (0 = unknown) in stock-id order; None for datasets built before it."""
        stocks = self.stock_table()
        return stocks["market_id"].to_numpy() if "market_id" in stocks.columns else None

    def oracle(self) -> pl.DataFrame | None:
        """The synthetic market's oracle (date, code, oracle_<h>d), or None for a real-market dataset."""
        return self.read("oracle") if self.has("oracle") else None

    def daily_returns(self) -> pl.DataFrame:
        """Each stock's return from the close of ``date`` to its next close (date, code, ret): ``target_1d``."""
        if "target_1d" not in self.columns("labels"):
            raise DatasetError(
                f"{self.path('labels')} has no column target_1d: the backtest needs each stock's 1-day return"
            )
        frame = self.read("labels", ["date", "code", "target_1d"])
        return frame.select("date", "code", pl.col("target_1d").cast(pl.Float64).alias("ret"))

    # ---- the cache: files derived from the tables, rebuilt whenever the dataset changes -----------------

    def stamp(self) -> str:
        """16 hex digits that change whenever the dataset does: the manifest's schema_hash and the size and
        modification time (ns) of every table. Every cache file name carries it."""
        parts = [str(self.manifest.get("schema_hash"))]
        for table in self.TABLES:
            if self.has(table):
                stat = self.path(table).stat()
                parts.append(f"{table}:{stat.st_size}:{stat.st_mtime_ns}")
        return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()

    def cache_path(self, kind: str, key: str, suffix: str = "") -> Path:
        """``cache/<kind>-<stamp>-<key><suffix>``: the file (or folder) of one cached thing."""
        return self.root / CACHE_DIR / f"{kind}-{self.stamp()}-{key}{suffix}"

    def cached_array(
        self, kind: str, key: str, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]
    ) -> np.ndarray:
        """A float32 array ``shape`` from ``cache/<kind>-<stamp>-<key>.npy``, memory-mapped; built by ``fill``
        (which writes every element of the array it is given) when absent, stale or damaged.

        The map is copy-on-write: the process may write to it, the file never changes. Building it holds the
        array in memory once (as loading without a cache does); a folder that cannot be written to (a
        read-only share) keeps that in-memory array.
        """
        path = self.cache_path(kind, key, ".npy")
        if path.is_file():
            try:
                array = np.load(path, mmap_mode="c")
                if array.shape == shape and array.dtype == np.float32 and array.flags.c_contiguous:
                    return array.view(np.ndarray)  # a plain array over the map (the map stays open)
                reason = f"shape {array.shape} {array.dtype}, expected {shape} float32"
            except (ValueError, OSError, EOFError) as e:
                reason = first_line(e)
            warnings.warn(f"{path} is damaged ({reason[:160]}); rebuilding it from the tables", stacklevel=2)
            path.unlink(missing_ok=True)
        array = np.empty(shape, dtype=np.float32)
        fill(array)
        # Scattered in memory, then written in one sequential pass: scattering into the mapped file itself
        # would dirty every page once per column block, and the kernel throttles such writers (10x slower).
        try:
            path.parent.mkdir(exist_ok=True)
            self._prune_cache()
            atomic_write(path, _writer(np.save, array))
        except OSError:  # a folder we may not write to: keep the array built in memory
            return array
        del array  # from here on the pages belong to the page cache, which may drop and re-read them
        return np.load(path, mmap_mode="c").view(np.ndarray)

    def load_cached(self, path: Path) -> dict[str, np.ndarray] | None:
        """The arrays of a cached ``.npz`` file, or None when it is absent or damaged (then it is deleted)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except Exception as e:  # a damaged zip raises anything from BadZipFile to ValueError
            warnings.warn(f"{path} is damaged ({type(e).__name__}); rebuilding it", stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def save_cached(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        """Write ``arrays`` to the cached ``.npz`` file atomically; a folder not writable is left alone."""
        try:
            if not path.parent.is_dir():  # the first file of its kind: the time to clear out stale ones
                path.parent.mkdir(parents=True)
                self._prune_cache()
            atomic_write(path, _writer(np.savez, **arrays))
        except OSError:
            pass

    def _prune_cache(self) -> None:
        """Delete cache entries of other stamps (they can never be read again) and temporary files that
        writers killed mid-write left behind (their process is gone)."""
        stamp = self.stamp()
        for entry in (self.root / CACHE_DIR).iterdir():
            name = entry.name
            if name.startswith("."):
                pid = name.rpartition(".tmp-")[2]
                stale = not pid.isdigit() or not _alive(int(pid))
            else:
                stale = name.split("-")[1:2] != [stamp]
            if stale and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif stale:
                entry.unlink(missing_ok=True)


def _writer(save: Callable[..., None], *args: Any, **kwargs: Any) -> Callable[[Path], None]:
    """A writer for ``atomic_write`` that calls ``save(file, ...)`` on an open file: given a file name,
    numpy would append ``.npy`` / ``.npz`` to the temporary name."""

    def write(path: Path) -> None:
        with open(path, "wb") as out:
            save(out, *args, **kwargs)

    return write


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
