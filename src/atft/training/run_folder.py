"""The run folder ``runs/<name>/``: the one reader and writer of every file in it.

Training, evaluation, the backtest and the run doctor all go through :class:`RunFolder`, so each file name
is written down once and a missing or damaged file always becomes one :class:`RunFolderError` line that
names the file and what to do. The layout::

    config.yaml                   the resolved configuration (read back through the schema)
    run.json                      the dataset the run trains on
    metrics.csv                   one row per epoch: losses, every loss term and its gradient share, LR, metrics
    events.jsonl                  gradient norms, guard actions, head statistics
    train.log                     one readable line per epoch
    checkpoints/best.ckpt         the best epoch by the monitored metric;  checkpoints/last.ckpt  the last one
    predictions/<split>.parquet   forecasts of the best checkpoint at the end of training
    summary.json                  written last: its presence means training finished
    eval/                         ``atft evaluate`` of the test segment (eval/<split>/ for another segment)
    backtest/<strategy>_<h>d/     ``atft backtest``: daily.parquet, summary.json
    report.md, report/, report.html   ``atft diagnose``
    daily/<date>/                 ``atft predict``: ranked_<h>d.csv/.parquet, skipped.csv, summary.json
"""

from __future__ import annotations

import csv
import json
import pickle
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from omegaconf import OmegaConf

from atft.config import ATFTConfig, ConfigError, load_config
from atft.data.store import atomic_write, first_line
from atft.evaluation.evaluate import EvaluationResult, json_ready

SPLITS = ("train", "valid", "test")


class RunFolderError(ValueError):
    """A run folder is missing a file, holds a damaged one, or is in a state that forbids the request."""


class RunFolder:
    """The files of ``runs/<name>/``. Only the process of global rank 0 writes the training logs."""

    def __init__(self, root: str | Path, rank: int = 0) -> None:
        self.root = Path(root)
        self.rank = rank
        self.config_file = self.root / "config.yaml"
        self.info_file = self.root / "run.json"
        self.metrics = self.root / "metrics.csv"
        self.events_file = self.root / "events.jsonl"
        self.log_file = self.root / "train.log"
        self.summary_file = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"
        self.predictions = self.root / "predictions"
        self.report_md = self.root / "report.md"
        self.report_html = self.root / "report.html"
        self.report_dir = self.root / "report"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ---- state ------------------------------------------------------------------------------------------

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    def is_run(self) -> bool:
        """True when ``atft train`` has started a run here (its config is written)."""
        return self.config_file.is_file()

    def has_checkpoint(self) -> bool:
        return self.best_checkpoint.is_file() or self.last_checkpoint.is_file()

    def is_finished(self) -> bool:
        """True when training ended and forecast its segments (``summary.json`` is written last)."""
        return self.summary_file.is_file()

    def require_run(self) -> None:
        """Refuse a folder that ``atft train`` did not write, naming what is missing."""
        for path in (self.config_file, self.info_file):
            if not path.is_file():
                raise RunFolderError(
                    f"{path} not found: {self.root} is not a run folder written by `atft train`"
                )

    # ---- the start of a run ---------------------------------------------------------------------------

    def create(self, cfg: ATFTConfig, data_path: Path, fold: int | None = None) -> None:
        """Make the folders and write ``config.yaml`` and ``run.json`` (the dataset, and the walk-forward fold
        when it is not the last) for a new run."""
        for sub in (self.root, self.checkpoints, self.predictions):
            sub.mkdir(parents=True, exist_ok=True)
        self.write_config(cfg)
        info: dict[str, Any] = {"data_path": str(Path(data_path).resolve())}
        if fold is not None:
            info["fold"] = int(fold)
        atomic_text(self.info_file, json.dumps(info, indent=2))

    def write_config(self, cfg: ATFTConfig) -> None:
        atomic_text(self.config_file, OmegaConf.to_yaml(cfg))

    def clear_unstarted(self) -> bool:
        """Remove what a run that never wrote a checkpoint left (config, logs, empty folders), so that its
        name can be used again; returns True when something was removed. A checkpointed run is never touched."""
        if self.has_checkpoint() or self.is_finished():
            return False
        removed = False
        for path in (self.config_file, self.info_file, self.metrics, self.events_file, self.log_file):
            if path.is_file():
                path.unlink()
                removed = True
        for sub in (self.checkpoints, self.predictions):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        return removed

    # ---- reading the run's settings ---------------------------------------------------------------------

    def read_config(self, overrides: Sequence[str] = ()) -> ATFTConfig:
        """``config.yaml`` through the schema (every default and every check lives in the schema alone), with
        ``overrides`` (``key=value``) on top."""
        if not self.config_file.is_file():
            raise RunFolderError(
                f"{self.config_file} not found: {self.root} is not a run folder of `atft train`"
            )
        try:
            return load_config(self.config_file, overrides, env={}).cfg
        except ConfigError as e:
            raise RunFolderError(f"{self.config_file} is not a valid run config: {e}") from None

    def data_path(self) -> Path:
        """The dataset folder the run trains on (``run.json``), checked to exist."""
        info = self._read_json(self.info_file, required=True)
        if not isinstance(info, dict) or not isinstance(info.get("data_path"), str):
            raise RunFolderError(f"{self.info_file} is damaged (no data_path): rerun `atft train`")
        path = Path(info["data_path"])
        if not path.is_dir():
            raise RunFolderError(
                f"{path} (the dataset named in {self.info_file}) does not exist: rebuild it with `atft data build`"
            )
        return path

    def fold(self) -> int | None:
        """The walk-forward fold the run trains on (``run.json``); None means the last fold."""
        info = self._read_json(self.info_file, required=True)
        fold = info.get("fold") if isinstance(info, dict) else None
        return int(fold) if fold is not None else None

    def fold_run(self, fold: int) -> RunFolder:
        """The run folder of one fold when ``atft train`` trains every walk-forward fold: ``fold_<k>/``."""
        return RunFolder(self.root / f"fold_{fold}", self.rank)

    def write_folds(self, record: dict[str, Any]) -> None:
        """``folds.json``: each fold's summary and their mean, beside the ``fold_<k>/`` run folders."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_text(self.root / "folds.json", json.dumps(json_ready(record), indent=2, default=str))

    def recorded_data_path(self) -> Path | None:
        """The dataset named in ``run.json`` without checking it still exists (None when unreadable)."""
        try:
            info = self._read_json(self.info_file, required=False)
        except RunFolderError:
            return None
        return Path(info["data_path"]) if isinstance(info, dict) and info.get("data_path") else None

    # ---- training logs ----------------------------------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> None:
        """Append one JSON line ``{"event": kind, "time": ..., **fields}`` to events.jsonl."""
        if self.rank != 0:
            return
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        with self.events_file.open("a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def log(self, line: str) -> None:
        """Append a line to train.log (and nowhere else: the console has its own progress display)."""
        if self.rank != 0:
            return
        with self.log_file.open("a") as f:
            f.write(line.rstrip("\n") + "\n")

    def write_metrics_row(self, row: dict[str, Any]) -> None:
        """Add an epoch's row to metrics.csv, keeping every column under its own header.

        The file is rewritten with the union of the columns (one row per epoch, so it stays small): a value
        missing from an epoch is left empty, never shifted under another column's name.
        """
        if self.rank != 0:
            return
        rows: list[dict[str, Any]] = []
        if self.metrics.exists():
            with self.metrics.open(newline="") as f:
                rows = list(csv.DictReader(f))
        rows.append(row)
        columns = list(dict.fromkeys(key for r in rows for key in r))
        tmp = self.metrics.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.metrics)  # a kill mid-write leaves the previous file whole

    def read_metrics(self) -> pl.DataFrame | None:
        """metrics.csv as floats, one row per epoch (the last row wins for an epoch written twice); None when
        the file is missing, an empty frame when it has no rows."""
        if not self.metrics.exists():
            return None
        try:
            # read as text then cast: an empty cell, "nan" or "inf" must not turn a column into strings
            raw = pl.read_csv(self.metrics, infer_schema_length=0)
        except pl.exceptions.NoDataError:
            return pl.DataFrame({"epoch": []}, schema={"epoch": pl.Float64})
        except pl.exceptions.PolarsError as e:
            raise RunFolderError(
                f"{self.metrics} is damaged ({_first_line(e)}): delete it to diagnose without it"
            ) from None
        frame = raw.with_columns(pl.all().cast(pl.Float64, strict=False))
        if "epoch" in frame.columns:
            frame = frame.filter(pl.col("epoch").is_not_null()).unique("epoch", keep="last").sort("epoch")
        return frame

    def read_events(self) -> tuple[list[dict[str, Any]], int] | None:
        """events.jsonl as dicts and the count of unreadable lines (a kill mid-write); None when missing."""
        if not self.events_file.exists():
            return None
        events, bad = [], 0
        for line in self.events_file.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                events.append(record)
            else:
                bad += 1
        return events, bad

    def read_log(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines() if self.log_file.exists() else []

    # ---- checkpoints ------------------------------------------------------------------------------------

    def selected_checkpoint(self) -> Path:
        """The checkpoint the run selected (best on the monitored metric), else its last one."""
        for path in (self.best_checkpoint, self.last_checkpoint):
            if path.is_file():
                return path
        raise RunFolderError(f"{self.checkpoints} holds no best.ckpt or last.ckpt: did training finish?")

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint's contents on the CPU, or one line naming the file when it is damaged."""
        return self.check_checkpoint(path, load=True)

    def check_checkpoint(self, path: Path, *, load: bool = False) -> Any:
        """Refuse a missing, truncated or garbage checkpoint with one line that names it and what to do."""
        if not path.is_file():
            raise RunFolderError(f"{path} not found: did training write a checkpoint?")
        hint = (
            "delete it and resume from the other checkpoint, or train again"
            if path.name == "last.ckpt"
            else "delete it and evaluate with last.ckpt, or train again"
        )
        try:
            if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damaged
                raise RunFolderError(f"{path} is damaged (not a PyTorch checkpoint archive): {hint}")
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise RunFolderError(f"{path} is damaged (entry {bad} fails its checksum): {hint}")
            if load:
                return torch.load(path, map_location="cpu", weights_only=False)
        except RunFolderError:
            raise
        except (zipfile.BadZipFile, pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            raise RunFolderError(f"{path} is damaged ({_first_line(e)}): {hint}") from None
        return None

    def checkpoint_epoch(self, path: Path) -> int:
        return int(self.load_checkpoint(path)["epoch"])

    # ---- forecasts and the summary ------------------------------------------------------------------------

    def predictions_file(self, split: str) -> Path:
        return self.predictions / f"{_check_split(split)}.parquet"

    def write_predictions(self, split: str, frame: pl.DataFrame) -> None:
        self.predictions.mkdir(parents=True, exist_ok=True)
        atomic_write(self.predictions_file(split), frame.write_parquet)

    def read_predictions(self, split: str) -> pl.DataFrame:
        """The forecasts training wrote for ``split`` (predictions/<split>.parquet)."""
        path = self.predictions_file(split)
        if not path.is_file():
            raise RunFolderError(
                f"{path} not found: did training finish? `atft evaluate {self.root}` forecasts anew"
            )
        return _read_parquet(path, f"run `atft evaluate {self.root}` to forecast anew")

    def forecasts(self, split: str = "test") -> pl.DataFrame:
        """A segment's forecasts: from ``atft evaluate`` if it ran, else those written at the end of training."""
        evaluated = self.eval_dir(split) / "predictions.parquet"
        if evaluated.is_file():
            return _read_parquet(evaluated, f"run `atft evaluate {self.root}` again")
        if self.predictions_file(split).is_file():
            return self.read_predictions(split)
        raise RunFolderError(
            f"{self.root} has no {split} predictions (predictions/{split}.parquet): run `atft evaluate {self.root}`"
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_text(self.summary_file, json.dumps(summary, indent=2, default=str))

    def read_summary(self) -> dict[str, Any] | None:
        return self._read_json(self.summary_file, required=False)

    # ---- evaluation, backtest, report ---------------------------------------------------------------------

    def eval_dir(self, split: str = "test") -> Path:
        """``eval/`` for the test segment, ``eval/<split>/`` for any other."""
        return self.root / "eval" if _check_split(split) == "test" else self.root / "eval" / split

    def write_evaluation(self, result: EvaluationResult, preds: pl.DataFrame, split: str = "test") -> Path:
        """Write ``metrics.json``, ``per_day.parquet`` and ``predictions.parquet`` (``preds`` as given, all its
        columns) into the segment's eval folder; returns the folder.

        Each file is written to a hidden temporary name and renamed into place, so a reader never sees a
        half-written file. ``metrics.json`` goes last: its presence means the other two are complete.
        """
        out = self.eval_dir(split)
        out.mkdir(parents=True, exist_ok=True)
        text = result.to_json() + "\n"  # serialized first: a failure here leaves nothing half-done
        atomic_write(out / "predictions.parquet", preds.write_parquet)
        atomic_write(out / "per_day.parquet", result.per_day.write_parquet)
        atomic_text(out / "metrics.json", text)
        return out

    def read_evaluation(self, split: str = "test") -> dict[str, Any] | None:
        """``eval/metrics.json`` of a segment, or None when ``atft evaluate`` has not run."""
        return self._read_json(self.eval_dir(split) / "metrics.json", required=False)

    def read_per_day(self, split: str = "test") -> pl.DataFrame | None:
        """``eval/per_day.parquet`` of a segment (one row per day and horizon), or None before ``atft evaluate``."""
        path = self.eval_dir(split) / "per_day.parquet"
        return _read_parquet(path, f"run `atft evaluate {self.root}` again") if path.is_file() else None

    def read_backtest(self, strategy: str, horizon: int) -> tuple[pl.DataFrame, dict[str, Any]] | None:
        """A backtest's daily series and summary record, or None before ``atft backtest``."""
        out = self.backtest_dir(strategy, horizon)
        if not (out / "summary.json").is_file() or not (out / "daily.parquet").is_file():
            return None
        hint = f"run `atft backtest {self.root} --strategy {strategy} --horizon {horizon}` again"
        return _read_parquet(out / "daily.parquet", hint), self._read_json(
            out / "summary.json", required=True
        )

    def daily_dir(self, date: object) -> Path:
        """Where ``atft predict`` writes the ranked lists of ``date`` (written by ``DailyList.write``)."""
        return self.root / "daily" / str(date)

    def backtest_dir(self, strategy: str, horizon: int) -> Path:
        return self.root / "backtest" / f"{strategy}_{horizon}d"

    def write_backtest(
        self, strategy: str, horizon: int, daily: pl.DataFrame, record: dict[str, Any]
    ) -> Path:
        out = self.backtest_dir(strategy, horizon)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "daily.parquet", daily.write_parquet)
        atomic_text(out / "summary.json", json.dumps(json_ready(record), indent=2, default=str) + "\n")
        return out

    def write_report(self, markdown: str, html: str | None = None) -> tuple[Path, Path | None]:
        """Write ``report.md`` (and ``report.html``); the plots go to :attr:`report_dir` before this."""
        atomic_text(self.report_md, markdown)
        if html is None:
            return self.report_md, None
        atomic_text(self.report_html, html)
        return self.report_md, self.report_html

    # ---- helpers ----------------------------------------------------------------------------------------

    def _read_json(self, path: Path, *, required: bool) -> Any:
        if not path.is_file():
            if required:
                raise RunFolderError(
                    f"{path} not found: {self.root} is not a run folder written by `atft train`"
                )
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunFolderError(
                f"{path} is damaged ({_first_line(e)}): delete it, or rerun what wrote it"
            ) from None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise RunFolderError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _read_parquet(path: Path, hint: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, glob=False)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise RunFolderError(f"{path} is damaged ({_first_line(e)}): {hint}") from None


def _first_line(error: BaseException) -> str:
    return first_line(error)[:160]


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
