"""The folder ``atft compare`` writes: the one reader and writer of its files.

::

    compare.json                  settings, the table rows and the paired tests (written last)
    compare.csv, compare.md       the table, for a spreadsheet and for a person
    cumulative_net.png            each model's 5-day book, cumulative net return (seeds averaged per day)
    rankic.png                    RankIC per horizon with the seed spread as error bars
    settings.json                 what was asked (models, seeds, folds, dataset, preset, overrides)
    runs/<model>-s<seed>-f<fold>/ the run folder of each deep-model unit
    units/<model>-s<seed>-f<fold>/
        unit.json                 the unit's evaluation metrics, book summary, seconds, parameters, memory,
                                  and its validation RankIC per horizon (what a user may choose by)
        per_day.parquet           daily IC and RankIC per horizon
        book.parquet              the 5-day book's daily series
        keys.parquet              the (date, code, horizon) rows it was scored on

A unit's ``unit.json`` is written after its parquet files, so its presence means the unit is complete and
an interrupted comparison resumes after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from atft.evaluation.evaluate import json_ready
from atft.training.run_folder import atomic_text, atomic_write


class CompareFolderError(ValueError):
    """A comparison folder is damaged, or holds a comparison made with other settings."""


@dataclass
class UnitRecord:
    """One (model, seed, fold) of a comparison, scored."""

    model: str
    seed: int
    fold: int
    metrics: dict[str, Any]
    book: dict[str, Any]
    seconds: float
    parameters: int
    peak_mb: float
    per_day: pl.DataFrame | None = None
    book_daily: pl.DataFrame | None = None
    keys: pl.DataFrame | None = None
    # the validation segment's RankIC and its Newey-West t per horizon ({"5d": {"rankic": ...}}); empty in
    # units written before it was recorded (compare fills it in)
    valid: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}-s{self.seed}-f{self.fold}"


class CompareFolder:
    """The files of one comparison (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.settings_file = self.root / "settings.json"

    def start(self, **settings: Any) -> None:
        """Record the settings; refuse to resume a comparison that was made with others."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.settings_file.is_file():
            before = self._read_json(self.settings_file)
            changed = sorted(k for k in settings if k in before and before[k] != settings[k])
            if changed:
                raise CompareFolderError(
                    f"{self.root} holds a comparison made with other settings ({', '.join(changed)}): "
                    "give another --out, or delete the folder to start again"
                )
            return
        atomic_text(self.settings_file, json.dumps(settings, indent=2))

    def record_request(self, **request: Any) -> None:
        """What this call asked for (models, seeds per model): a later call may add models or seeds to the
        same comparison, whose finished units it reuses; only the dataset and settings must not change."""
        atomic_text(self.settings_file, json.dumps({**self.settings(), **request}, indent=2))

    def settings(self) -> dict[str, Any]:
        return self._read_json(self.settings_file)

    def run_dir(self, model: str, seed: int, fold: int) -> Path:
        return self.root / "runs" / f"{model}-s{seed}-f{fold}"

    def unit_dir(self, model: str, seed: int, fold: int) -> Path:
        return self.root / "units" / f"{model}-s{seed}-f{fold}"

    def write_unit(self, record: UnitRecord) -> None:
        out = self.unit_dir(record.model, record.seed, record.fold)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("per_day", record.per_day), ("book", record.book_daily), ("keys", record.keys)):
            if frame is not None:
                atomic_write(out / f"{name}.parquet", frame.write_parquet)
        body = {k: getattr(record, k) for k in ("model", "seed", "fold", "metrics", "book", "seconds",
                                                "parameters", "peak_mb", "valid")}  # fmt: skip
        atomic_text(out / "unit.json", json.dumps(json_ready(body), indent=2, default=str))

    def read_unit(self, model: str, seed: int, fold: int) -> UnitRecord | None:
        """A finished unit's record (its frames are read on demand), or None when it has not finished."""
        path = self.unit_dir(model, seed, fold) / "unit.json"
        if not path.is_file():
            return None
        body = self._read_json(path)
        return UnitRecord(**{k: body[k] for k in ("model", "seed", "fold", "metrics", "book", "seconds",
                                                  "parameters", "peak_mb")}, valid=body.get("valid") or {})  # fmt: skip

    def read_per_day(self, record: UnitRecord) -> pl.DataFrame:
        return record.per_day if record.per_day is not None else self._read_frame(record, "per_day")

    def read_keys(self, record: UnitRecord) -> pl.DataFrame:
        return record.keys if record.keys is not None else self._read_frame(record, "keys")

    def read_book(self, record: UnitRecord) -> pl.DataFrame:
        return record.book_daily if record.book_daily is not None else self._read_frame(record, "book")

    def mean_book_curve(self, model: str, records: list[UnitRecord]) -> pl.DataFrame:
        """(date, net): the model's daily net book return averaged over seeds (folds' days pooled)."""
        frames = [self.read_book(r).select("date", "net") for r in records]
        return pl.concat(frames).group_by("date").agg(pl.col("net").mean()).sort("date")

    def write_tables(self, rows: list[dict[str, Any]], paired: list[dict[str, Any]], markdown: str) -> None:
        pl.DataFrame(rows).write_csv(self.root / "compare.csv")
        atomic_text(self.root / "compare.md", markdown)
        record = {"settings": self.settings(), "rows": rows, "paired": paired}
        atomic_text(self.root / "compare.json", json.dumps(json_ready(record), indent=2, default=str))

    def read_tables(self) -> dict[str, Any]:
        return self._read_json(self.root / "compare.json")

    def plot_paths(self) -> dict[str, Path]:
        return {"cumulative_net": self.root / "cumulative_net.png", "rankic": self.root / "rankic.png"}

    def _read_frame(self, record: UnitRecord, name: str) -> pl.DataFrame:
        path = self.unit_dir(record.model, record.seed, record.fold) / f"{name}.parquet"
        try:
            return pl.read_parquet(path, glob=False)
        except (pl.exceptions.PolarsError, OSError) as e:
            raise CompareFolderError(
                f"{path} is damaged or missing ({str(e).splitlines()[0][:120]}): delete "
                f"{path.parent} and run `atft compare` again to redo that unit"
            ) from None

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CompareFolderError(
                f"{path} is damaged or missing ({str(e).splitlines()[0][:120]}): delete it and run "
                "`atft compare` again"
            ) from None
