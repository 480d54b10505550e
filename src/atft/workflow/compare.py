"""``atft compare``: several models trained and scored on the same purged splits and the same test rows.

Each unit of work is one (model, seed, fold): a deep model (ATFT-GAT-FAN, APEX-Ranker) is trained by the
training engine into its own run folder; a baseline is fitted on the fold's served rows. Every unit's test
forecasts are scored the same way (``evaluate_predictions``: RankIC, ICIR, t-stats; the 5-day staggered
long-short book after costs; the oracle's capture on synthetic data), and its results are kept under
``units/`` so that an interrupted comparison resumes from the finished units. The table gives each model's
mean ± std over seeds (folds first averaged within a seed), and a paired test of the first model against
each other one on the daily RankIC difference (Newey-West t-stat with h - 1 lags). docs/compare.md.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from atft.config import DEFAULT_PRESET, ATFTConfig, config_changes, load_config
from atft.data.splits import splits_from_config
from atft.evaluation.backtest import backtest
from atft.evaluation.ensemble import average_forecasts
from atft.evaluation.evaluate import evaluate_predictions
from atft.evaluation.stats import paired_daily
from atft.features.dataset import DatasetFolder
from atft.reporting.compare_report import plot_compare, render_compare_markdown
from atft.training.run_folder import RunFolder
from atft.workflow.baselines import BASELINES
from atft.workflow.compare_folder import CompareFolder, CompareFolderError, UnitRecord
from atft.workflow.run_data import RunData, load_run_data
from atft.workflow.train import train_run

DEEP_MODELS = {"atft": "atft_gat_fan", "apex": "apex"}
# A model trains with its own preset when the comparison runs on the default one: APEX-Ranker's objective
# (ListNet, RankNet, a small point term) and sizes live in configs/apex.yaml.
OWN_PRESETS = {"apex": "apex"}
# ``atft_ens``: the seed ensemble of the comparison's own ``atft`` runs (no training of its own).
ENSEMBLES = {f"{name}_ens": name for name in DEEP_MODELS}
SEEDED = {"atft", "apex", "lgbm", "random"}
BOOK_HORIZON = 5  # the staggered book every model is traded as

Progress = Callable[[str, int, int], None]


def seed_counts(text: str | Sequence[str], seeds: int) -> dict[str, int]:
    """Seeds per model: ``seeds`` for the seeded models, 1 for the others, ``name:k`` for k of its own."""
    counts = {}
    for item in text.split(",") if isinstance(text, str) else text:
        name, _, own = item.strip().partition(":")
        if not name:
            continue
        if own and not (own.isdigit() and int(own) >= 1):
            raise ValueError(
                f"--models {item.strip()!r}: the seed count after ':' must be a whole number >= 1"
            )
        counts[name] = int(own) if own else (seeds if name in SEEDED else 1)
    return counts


def known_models() -> list[str]:
    return [*DEEP_MODELS, *ENSEMBLES, *BASELINES]


def parse_models(text: str | Sequence[str]) -> list[str]:
    """``atft,apex,lgbm`` as a list, refusing unknown names and duplicates with the list of known ones.

    A name may carry its own seed count, ``apex:1`` (a model too slow for every seed); see ``seed_counts``.
    """
    names = [
        n.strip().split(":")[0] for n in (text.split(",") if isinstance(text, str) else text) if n.strip()
    ]
    unknown = [n for n in names if n not in known_models()]
    if unknown or not names:
        raise ValueError(
            f"--models: unknown model(s) {unknown or '(none given)'}; known: {', '.join(known_models())}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--models names a model twice: {','.join(names)}")
    for name in names:
        if name in ENSEMBLES and ENSEMBLES[name] not in names:
            member = ENSEMBLES[name]
            raise ValueError(
                f"--models {name}: it averages the seeds of {member}, so {member} must be compared too "
                f"(e.g. --models {member}:3,{name})"
            )
    return names


@dataclass
class CompareResult:
    """What ``compare`` wrote: the table rows, the paired tests, and where the files are."""

    folder: CompareFolder
    horizons: list[int]
    rows: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    units: list[UnitRecord] = field(default_factory=list)


def compare(
    data_path: str | Path,
    out: str | Path,
    models: Sequence[str],
    *,
    seeds: int = 3,
    preset: str | Path | None = "cpu",
    overrides: Sequence[str] = (),
    say: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> CompareResult:
    """Train and score every (model, seed, fold) on the same splits; write the comparison to ``out``.

    The first model is the one the paired tests compare against every other. ``seeds`` applies to the
    seeded models (deep models, LightGBM, random); rules and the oracle run once.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    counts = seed_counts(models, seeds)
    models = parse_models(models)
    for name in (m for m in models if m in ENSEMBLES):
        if counts[ENSEMBLES[name]] < 2 or (name in counts and counts[name] != 1):
            raise ValueError(
                f"--models {name}: an ensemble of {ENSEMBLES[name]} needs it with 2 or more seeds "
                f"({ENSEMBLES[name]}:{counts[ENSEMBLES[name]]} given) and takes no seed count of its own"
            )
        counts[name] = 1
    base = load_config(preset, list(overrides)).cfg
    dataset = DatasetFolder(data_path)
    n_folds = len(splits_from_config(dataset.calendar(), base))
    folder = CompareFolder(out)
    folder.start(data_path=str(Path(data_path).resolve()), preset=str(preset), overrides=list(overrides),
                 n_folds=n_folds)  # fmt: skip
    folder.record_request(models=models, seeds=counts)
    ordered = [m for m in models if m not in ENSEMBLES] + [
        m for m in models if m in ENSEMBLES
    ]  # members first
    units = [
        (model, seed, fold) for fold in range(n_folds) for model in ordered for seed in range(counts[model])
    ]
    records: list[UnitRecord] = []
    run_data: dict[int, RunData] = {}
    for i, (model, seed, fold) in enumerate(units):
        if progress is not None:
            progress(f"{model} seed {seed} fold {fold}", i, len(units))
        # an ensemble is rescored every time: its members may have grown since (atft:3 -> atft:5)
        record = None if model in ENSEMBLES else folder.read_unit(model, seed, fold)
        if record is not None and model in DEEP_MODELS:
            _check_unchanged(folder, model, seed, fold, _deep_config(base, preset, overrides, model, seed))
        if record is None:
            if model in ENSEMBLES:
                members = [r for r in records if r.model == ENSEMBLES[model] and r.fold == fold]
                record = _ensemble(base, dataset, folder, model, fold, members)
            elif model in DEEP_MODELS:
                record = _train_deep(base, preset, overrides, dataset, folder, model, seed, fold, say)
            else:
                record = _fit_baseline(
                    base, _fold_data(run_data, base, dataset, fold, say), folder, model, seed, fold
                )
            folder.write_unit(record)
        elif not record.valid:  # a unit from before validation was recorded: score it once, keep it
            if model in DEEP_MODELS:
                valid = RunFolder(folder.run_dir(model, seed, fold)).read_predictions("valid")
            else:
                data = _fold_data(run_data, base, dataset, fold, say)
                valid = BASELINES[model](base.train.seed + seed).fit(data).predict(data, "valid")
            record.valid = validation_scores(base, valid)
            folder.write_unit(record)  # its parquet files stay as they are
        records.append(record)
    if progress is not None:
        progress("tables", len(units), len(units))
    _check_same_rows(folder, records)
    horizons = list(base.data.horizons)
    rows = summarize(records, models, horizons)
    paired = paired_tests(folder, records, models, horizons)
    folder.write_tables(rows, paired, render_compare_markdown(rows, paired, horizons, folder.settings()))
    curves = {m: folder.mean_book_curve(m, [r for r in records if r.model == m]) for m in models}
    plot_compare(rows, curves, horizons, folder.plot_paths())
    return CompareResult(folder, horizons, rows, paired, records)


def _fold_data(
    cache: dict[int, RunData], base: ATFTConfig, dataset: DatasetFolder, fold: int, say: Callable[[str], None]
) -> RunData:
    """The fold's data for the baselines, loaded once (one fold's panel in memory at a time)."""
    if fold not in cache:
        cache.clear()
        cache[fold] = load_run_data(base, dataset, fold=fold, say=say)
    return cache[fold]


def model_preset(model: str, preset: str | Path | None) -> str | Path | None:
    """The preset a deep model trains with: its own (``OWN_PRESETS``) when ``preset`` is the default."""
    return OWN_PRESETS.get(model, preset) if preset == DEFAULT_PRESET else preset


# ---- one unit -------------------------------------------------------------------------------------------------


def _train_deep(
    base: ATFTConfig,
    preset: str | Path | None,
    overrides: Sequence[str],
    dataset: DatasetFolder,
    folder: CompareFolder,
    model: str,
    seed: int,
    fold: int,
    say: Callable[[str], None],
) -> UnitRecord:
    cfg = _deep_config(base, preset, overrides, model, seed)
    run_dir = folder.run_dir(model, seed, fold)
    run = RunFolder(run_dir)
    reset_peak_memory()
    started = time.time()
    if run.is_finished():  # a finished run without its unit (scoring was interrupted): reused if unchanged
        _check_unchanged(folder, model, seed, fold, cfg)
        summary = run.read_summary() or {}
    else:
        if run.root.exists():  # an interrupted unit starts again: only finished runs are reused
            shutil.rmtree(run.root)
        summary = train_run(cfg, dataset.root, run_dir, fold=fold, say=say, progress_bar=False)
    seconds = float(summary.get("seconds", time.time() - started))
    preds = run.read_predictions("test")
    return score_unit(cfg, dataset, model, seed, fold, preds, valid=run.read_predictions("valid"),
                      seconds=seconds, parameters=int(summary.get("parameters", 0)),
                      peak_mb=peak_memory_mb())  # fmt: skip


def _deep_config(
    base: ATFTConfig, preset: str | Path | None, overrides: Sequence[str], model: str, seed: int
) -> ATFTConfig:
    """The config a deep model's unit trains with: its preset (its own on the default one, ``model_preset``),
    the overrides, the model and its seed."""
    return load_config(
        model_preset(model, preset),
        [*overrides, f"model.name={DEEP_MODELS[model]}", f"train.seed={base.train.seed + seed}"],
    ).cfg


def _check_unchanged(folder: CompareFolder, model: str, seed: int, fold: int, cfg: ATFTConfig) -> None:
    """A finished deep unit is reused only if it was trained with the config it would be trained with now:
    a preset file edited since (a new default) would otherwise mix two configs in one table."""
    run = RunFolder(folder.run_dir(model, seed, fold))
    if not run.config_file.is_file():
        return  # a unit copied without its run folder: nothing to check it against
    before = run.read_config()
    changed = config_changes(before, cfg)
    if changed:
        shown = ", ".join(
            f"{k} {OmegaConf.select(before, k)!r} -> {OmegaConf.select(cfg, k)!r}" for k in changed[:3]
        )
        raise CompareFolderError(
            f"{run.root} was trained with another config than the preset gives now ({shown}"
            f"{', ...' if len(changed) > 3 else ''}): the preset changed since; give another --out"
        )


def _ensemble(
    base: ATFTConfig,
    dataset: DatasetFolder,
    folder: CompareFolder,
    model: str,
    fold: int,
    members: list[UnitRecord],
) -> UnitRecord:
    """The seed ensemble of a deep model's finished runs on ``fold``; its cost is the sum of theirs."""
    runs = [RunFolder(folder.run_dir(m.model, m.seed, fold)) for m in members]
    preds, valid = (
        average_forecasts([run.read_predictions(split) for run in runs]) for split in ("test", "valid")
    )
    return score_unit(base, dataset, model, 0, fold, preds, valid=valid, seconds=sum(m.seconds for m in members),
                      parameters=sum(m.parameters for m in members),
                      peak_mb=max(m.peak_mb for m in members))  # fmt: skip


def _fit_baseline(
    cfg: ATFTConfig, run: RunData, folder: CompareFolder, model: str, seed: int, fold: int
) -> UnitRecord:
    reset_peak_memory()
    started = time.time()
    estimator = BASELINES[model](cfg.train.seed + seed)
    preds = estimator.fit(run).predict(run, "test")
    seconds = time.time() - started
    return score_unit(cfg, run.dataset, model, seed, fold, preds, valid=estimator.predict(run, "valid"),
                      seconds=seconds, parameters=int(getattr(estimator, "n_parameters", 0)),
                      peak_mb=peak_memory_mb())  # fmt: skip


def score_unit(
    cfg: ATFTConfig,
    dataset: DatasetFolder,
    model: str,
    seed: int,
    fold: int,
    preds: pl.DataFrame,
    *,
    valid: pl.DataFrame | None = None,
    seconds: float,
    parameters: int,
    peak_mb: float,
) -> UnitRecord:
    """Score one unit's test forecasts: the evaluation and the 5-day staggered long-short book; and its
    ``valid`` forecasts, when given, by ``validation_scores``."""
    evaluation = evaluate_predictions(
        preds, oracle=dataset.oracle(), cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile
    )
    signals = preds.filter(pl.col("horizon") == BOOK_HORIZON).select("date", "code", "prediction")
    book = backtest(
        signals,
        dataset.daily_returns(),
        strategy="long_short",
        quantile=cfg.eval.quantile,
        holding_days=BOOK_HORIZON,
        cost_bps=cfg.eval.cost_bps,
    )
    return UnitRecord(
        model=model,
        seed=seed,
        fold=fold,
        metrics=evaluation.metrics,
        book=book.summary,
        seconds=round(seconds, 2),
        parameters=parameters,
        peak_mb=round(peak_mb, 1),
        per_day=evaluation.per_day,
        book_daily=book.daily,
        keys=preds.select("date", "code", "horizon").sort("date", "code", "horizon"),
        valid=validation_scores(cfg, valid) if valid is not None else {},
    )


def validation_scores(cfg: ATFTConfig, preds: pl.DataFrame) -> dict[str, dict[str, float]]:
    """The validation segment's RankIC and its Newey-West t per horizon: what a model may be chosen by."""
    metrics = evaluate_predictions(preds, cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile).metrics
    return {
        key: {"rankic": _num(m.get("rankic")), "rankic_nw_tstat": _num(m.get("rankic_nw_tstat"))}
        for key, m in metrics.items()
        if key[:-1].isdigit() and key.endswith("d")
    }


def _check_same_rows(folder: CompareFolder, records: list[UnitRecord]) -> None:
    """Every unit of a fold must have been scored on the exact same (date, code, horizon) test rows."""
    for fold in sorted({r.fold for r in records}):
        first = None
        for record in (r for r in records if r.fold == fold):
            keys = folder.read_keys(record)
            if first is None:
                first = (record, keys)
            elif not keys.equals(first[1]):
                raise ValueError(
                    f"fold {fold}: {record.model} (seed {record.seed}) was scored on other test rows than "
                    f"{first[0].model} ({keys.height:,} against {first[1].height:,}): the comparison is not fair"
                )


# ---- the table ------------------------------------------------------------------------------------------------


def unit_values(record: UnitRecord, horizons: list[int]) -> dict[str, float]:
    """The numbers of one unit that the table shows, flat."""
    out: dict[str, float] = {}
    for h in horizons:
        m = record.metrics.get(f"{h}d", {})
        for key in ("rankic", "rankicir", "icir", "rankic_tstat", "rankic_nw_tstat", "capture"):
            out[f"{key}_{h}d"] = _num(m.get(key))
    for h in horizons:
        out[f"valid_rankic_{h}d"] = _num(record.valid.get(f"{h}d", {}).get("rankic"))
    for key in ("sharpe", "annual_return", "max_drawdown", "mean_turnover"):
        out[f"book_{key}"] = _num(record.book.get(key))
    out["seconds"], out["parameters"], out["peak_mb"] = record.seconds, record.parameters, record.peak_mb
    return out


def summarize(records: list[UnitRecord], models: list[str], horizons: list[int]) -> list[dict[str, Any]]:
    """One row per model: each value's mean and std over seeds (a seed's folds are averaged first)."""
    rows = []
    for model in models:
        mine = [r for r in records if r.model == model]
        seeds = sorted({r.seed for r in mine})
        per_seed = []
        for seed in seeds:
            units = [unit_values(r, horizons) for r in mine if r.seed == seed]
            per_seed.append({k: float(np.nanmean([u[k] for u in units])) if _any_finite(units, k) else math.nan
                             for k in units[0]})  # fmt: skip
        row: dict[str, Any] = {"model": model, "seeds": len(seeds), "folds": len({r.fold for r in mine})}
        for key in per_seed[0]:
            values = np.array([p[key] for p in per_seed], dtype=float)
            finite = values[np.isfinite(values)]
            row[key] = float(finite.mean()) if finite.size else math.nan
            row[f"{key}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        rows.append(row)
    return rows


def paired_tests(
    folder: CompareFolder, records: list[UnitRecord], models: list[str], horizons: list[int]
) -> list[dict[str, Any]]:
    """The first model against each other one, per horizon, on the daily RankIC difference (seeds averaged
    per day first; folds' test blocks are disjoint, so their days are simply pooled)."""
    daily = {m: mean_daily_rankic(folder, [r for r in records if r.model == m]) for m in models}
    first = models[0]
    out = []
    for other in models[1:]:
        for h in horizons:
            a = daily[first].filter(pl.col("horizon") == h)
            b = daily[other].filter(pl.col("horizon") == h)
            test = paired_daily(a, b, column="rankic", horizon=h)
            out.append({"model": first, "against": other, "horizon": h, **test})
    return out


def mean_daily_rankic(folder: CompareFolder, records: list[UnitRecord]) -> pl.DataFrame:
    """(date, horizon, rankic): a model's daily RankIC, averaged over its seeds."""
    frames = [folder.read_per_day(r).select("date", "horizon", "rankic") for r in records]
    return pl.concat(frames).group_by("date", "horizon").agg(pl.col("rankic").mean()).sort("horizon", "date")


# ---- peak memory --------------------------------------------------------------------------------------------


def reset_peak_memory() -> None:
    """Reset this process's peak resident set (Linux: ``/proc/self/clear_refs``), so each unit gets its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """Peak resident memory of this process since the last reset, in MB (NaN where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _any_finite(units: list[dict[str, float]], key: str) -> bool:
    return any(math.isfinite(u[key]) for u in units)
