"""The run doctor: read a run folder, measure what happened in it, name the main problem, grade the result.

``diagnose_run(run_dir)`` is the entry point. It reads the run folder only through its owner,
``atft.training.run_folder.RunFolder``: the config (through the schema, so every default is the schema's),
the dataset path, the per-epoch metrics, the events, the log and the summary that the training engine
writes, plus the evaluation when ``atft evaluate`` has run; and the dataset's manifest through
``atft.features.dataset.DatasetFolder`` for the guard's verdict on the features. From these it computes
``Facts`` (plateau, overfitting, learning-rate shape, loss composition, gradient flow, ...; the data
classes live in ``atft.reporting.facts``), runs the rules table of ``atft.reporting.rules`` on them,
grades the headline number, and writes ``report.md`` (and ``report.html``) with the plots of
``atft.reporting.plots`` under ``report/``.

Every number comes from the run's own files: a file that is missing (an old run, a crashed one) leaves its
sections saying so instead of failing. Thresholds live in ``rules.DEFAULT_THRESHOLDS`` (docs/doctor.md).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from atft.config import ATFTConfig, load_config
from atft.config.schema import GradingConfig, LossWeights, ModelConfig
from atft.data.store import MANIFEST
from atft.evaluation.factor_ic import factor_ic_by_segment, ic_agreement, sign_flips
from atft.evaluation.stats import default_lags
from atft.features.dataset import DatasetError, DatasetFolder, select_features
from atft.models.graph import uses_graph
from atft.reporting import plots, report
from atft.reporting import rules as rules_mod
from atft.reporting.facts import (
    GRADE_LEVELS,
    CurveFacts,
    DatasetFacts,
    Diagnosis,
    Facts,
    Finding,
    Grade,
    GradFacts,
    LrFacts,
    RegimeFacts,
    TearSheetFacts,
    TermFacts,
)
from atft.reporting.numbers import finite
from atft.training.run_folder import RunFolder, RunFolderError

__all__ = [
    "CurveFacts",
    "DatasetFacts",
    "Diagnosis",
    "Facts",
    "Finding",
    "GRADE_LEVELS",
    "Grade",
    "GradFacts",
    "LrFacts",
    "TearSheetFacts",
    "TermFacts",
    "collect_facts",
    "decile_means",
    "diagnose",
    "diagnose_run",
    "flatten_horizon_metrics",
    "grade_run",
    "open_run_folder",
    "read_run_config",
    "resolve_thresholds",
    "rolling_mean",
    "tear_sheet_facts",
]

# Ranking terms of the loss: the ones that make the model a stock ranker rather than a regressor.
FINANCIAL_TERMS = ("rankic", "cs_ic", "sharpe", "listnet", "ranknet")
# A change smaller than this share of the value is noise, not a rise (float round-off, a flat curve).
NOISE_REL = 1e-4
# The test period's tear sheet: the rolling window of the daily RankIC (a quarter of trading days) and the
# backtest it draws (``atft backtest``'s default strategy).
ROLLING_DAYS = 63
BOOK_STRATEGY = "long_short"

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------------


def diagnose_run(run_dir: Path, *, html: bool = False, thresholds: dict | None = None) -> Diagnosis:
    """Diagnose a run folder and write ``report.md`` (+ ``report/*.png``, + ``report.html`` with ``html``)."""
    diagnosis = diagnose(run_dir, thresholds=thresholds)
    folder = diagnosis.facts.folder
    diagnosis.plots = plots.make_plots(diagnosis.facts, folder.report_dir)
    markdown = report.render_markdown(diagnosis)
    page = report.render_html(diagnosis) if html else None
    diagnosis.report_md, diagnosis.report_html = folder.write_report(markdown, page)
    return diagnosis


def diagnose(run_dir: Path, *, thresholds: dict | None = None) -> Diagnosis:
    """The diagnosis of a run folder without writing anything (``diagnose_run`` also writes the report)."""
    folder = open_run_folder(run_dir)
    notes: list[str] = []
    config, loaded = read_run_config(folder, notes)
    th = resolve_thresholds(config, thresholds)
    facts = collect_facts(folder, config, th, notes, config_loaded=loaded)
    findings = rules_mod.evaluate(facts, th)
    fired = rules_mod.ranked(findings)
    return Diagnosis(
        run_dir=Path(run_dir),
        status=fired[0].name if fired else "healthy",
        findings=findings,
        grade=grade_run(facts, th),
        facts=facts,
        thresholds=th,
    )


def open_run_folder(run_dir: Path | str) -> RunFolder:
    """The run folder at ``run_dir``, refused (one line naming it) when it holds nothing of a run: the
    doctor reads a run that crashed or still trains, but needs its metrics, its summary or its config."""
    folder = RunFolder(run_dir)
    if not folder.root.is_dir():
        raise FileNotFoundError(f"{folder.root} is not a folder")
    files = (folder.metrics, folder.summary_file, folder.config_file)
    if not any(path.exists() for path in files):
        names = [path.name for path in files]
        raise ValueError(
            f"{folder.root} is not a run folder: it has no {', '.join(names[:-1])} or {names[-1]}"
        )
    return folder


def read_run_config(folder: RunFolder, notes: list[str]) -> tuple[ATFTConfig, bool]:
    """The run's config through the schema and True; the schema defaults and False (noted) when its
    config.yaml is missing or does not load."""
    if not folder.is_run():
        notes.append("config.yaml is missing: schedule, loss weights and overrides are unknown")
    else:
        try:
            return folder.read_config(), True
        except RunFolderError as e:
            notes.append(str(e))  # names the file and what is wrong with it
    notes.append("the schema defaults stand in for the run's settings (atft.config.load_config(None))")
    return load_config(None, env={}).cfg, False


def resolve_thresholds(config: ATFTConfig, overrides: dict | None) -> dict[str, Any]:
    """``DEFAULT_THRESHOLDS``, then the run's ``eval.grading`` levels, then ``overrides`` (names checked)."""
    th = dict(rules_mod.DEFAULT_THRESHOLDS)
    grading = config.eval.grading
    th.update(
        {
            level.name: float(getattr(grading, level.name))
            for level in dataclasses.fields(GradingConfig)
            if level.name in th
        }
    )
    unknown = sorted(set(overrides or {}) - set(th))
    if unknown:
        raise ValueError(f"unknown doctor threshold(s) {unknown}; known: {sorted(th)}")
    th.update(overrides or {})
    return th


def grade_run(facts: Facts, th: dict[str, Any]) -> Grade:
    """Grade the capture ratio on a synthetic dataset (it measures skill against the best possible),
    else the headline RankIC, at ``grade_horizon`` days."""
    h = int(th["grade_horizon"])
    if h not in facts.horizons and facts.horizons:
        h = facts.horizons[0]
    if finite(facts.capture.get(h, math.nan)):
        kind, value, split = "capture", facts.capture[h], "test"
    else:
        kind, value, split = "rankic", facts.headline("rankic", h), facts.headline_split
    levels = {name: float(th[f"{name}_{kind}"]) for name in ("minimum", "target", "stretch")}
    if not finite(value):
        return Grade("ungraded", f"{kind}_{h}d", value, split, levels)
    level = GRADE_LEVELS[0]
    for name in ("minimum", "target", "stretch"):
        if value >= levels[name]:
            level = name
    return Grade(level, f"{kind}_{h}d", value, split, levels)


# ------------------------------------------------------------------------------------------------------
# reading the run folder
# ------------------------------------------------------------------------------------------------------


def collect_facts(
    folder: RunFolder,
    config: ATFTConfig,
    thresholds: dict[str, Any],
    notes: list[str],
    *,
    config_loaded: bool = True,
) -> Facts:
    """Read a run folder and measure everything the rules and the report need.

    ``config`` is the run's (``read_run_config``; ``config_loaded`` False when it is the schema defaults
    standing in for a missing one), ``thresholds`` the resolved ones (the plateau and gradient measurements
    depend on them); what could not be read is added to ``notes``.
    """
    th = thresholds
    data_path = _tolerant(folder.recorded_data_path, notes)
    if data_path is None and folder.info_file.is_file():
        notes.append("run.json: unreadable, or it names no data_path")
    summary = _tolerant(folder.read_summary, notes)
    if summary is not None and not isinstance(summary, dict):
        notes.append("summary.json: unreadable (not a JSON object)")
        summary = None
    if summary is None:
        notes.append(
            "summary.json is missing (an older run, or one still training or stopped): "
            "best epoch and validation metrics come from metrics.csv, "
            "test metrics only from eval/metrics.json"
        )
    evaluation = _tolerant(folder.read_evaluation, notes)
    metrics = folder.read_metrics()  # a damaged metrics.csv is refused: it is what the doctor reads most
    if metrics is None:
        notes.append("metrics.csv is missing: no per-epoch curves")
        metrics = pl.DataFrame({"epoch": []}, schema={"epoch": pl.Float64})
    elif metrics.height == 0:
        notes.append("metrics.csv is empty: no per-epoch curves")
    read = folder.read_events()
    if read is None:
        notes.append("events.jsonl is missing: no step-level gradient readings or guard events")
        events: list[dict[str, Any]] = []
    else:
        events, bad = read
        if bad:
            notes.append(f"events.jsonl: {bad} unreadable line(s) skipped")
    log_lines = folder.read_log()

    horizons = [int(h) for h in config.data.horizons]
    if not config_loaded:
        guessed = _horizons_from(metrics)
        if guessed:
            horizons = guessed
            notes.append(f"horizons {horizons} read from the val_rankic_<h>d columns of metrics.csv")
        else:
            notes.append(f"horizons {horizons}: the schema default")
    early_stopping = config.train.early_stopping
    monitor = str(early_stopping.monitor)
    if summary and summary.get("monitor"):
        monitor = str(summary["monitor"])
    mode = str(early_stopping.mode)
    monitor_col = monitor.replace("/", "_")

    best_epoch = summary.get("best_epoch") if summary else None
    if best_epoch is None:
        best_epoch = _best_epoch(metrics, monitor_col, mode)
    epochs_run = (
        int(summary["epochs_run"]) if summary and summary.get("epochs_run") is not None else metrics.height
    )

    valid, valid_source = _valid_metrics(summary, metrics, best_epoch)
    test, test_source, eval_flat = {}, "none", {}
    if evaluation is not None:
        eval_flat = flatten_horizon_metrics(evaluation)
        test, test_source = eval_flat, "eval/metrics.json"
    if not any(k.startswith("rankic_") for k in test) and summary and summary.get("test_metrics"):
        test, test_source = _floats(summary["test_metrics"]), "summary.json"

    oracle = {h: eval_flat[f"oracle_rankic_{h}d"] for h in horizons if f"oracle_rankic_{h}d" in eval_flat}
    if not oracle and summary and isinstance(summary.get("oracle_test_rankic"), dict):
        oracle = {
            h: float(v)
            for h in horizons
            if (v := summary["oracle_test_rankic"].get(f"rankic_{h}d")) is not None
        }
    capture = {h: eval_flat[f"capture_{h}d"] for h in horizons if f"capture_{h}d" in eval_flat}
    for h, o in oracle.items():
        r = test.get(f"rankic_{h}d", math.nan)
        if h not in capture and finite(o) and o > 0 and finite(r):
            capture[h] = r / o

    recorded = data_path or (summary or {}).get("data_path") or config.data.dataset_dir
    dataset_path = Path(recorded) if recorded else None
    dataset = read_dataset_facts(dataset_path)
    gate = _column(metrics, "gate_mean")
    return Facts(
        folder=folder,
        config=config,
        config_loaded=config_loaded,
        horizons=horizons,
        data_path=dataset_path,
        epochs_run=epochs_run,
        best_epoch=int(best_epoch) if best_epoch is not None else None,
        monitor=monitor,
        monitor_mode=mode,
        valid=valid,
        valid_source=valid_source,
        test=test,
        test_source=test_source,
        oracle=oracle,
        capture=capture,
        synthetic=bool(oracle) or dataset.synthetic,
        curve=curve_facts(metrics, monitor_col, th["plateau_min_improvement"]),
        lr=lr_facts(metrics, str(config.train.scheduler.name) if config_loaded else None),
        terms=term_facts(metrics, config.loss.weights if config_loaded else None),
        grads=grad_facts(
            metrics, events, log_lines, config, summary, th["vanishing_ratio"], th["exploding_ratio"]
        ),
        gate_mean=_last_finite(gate),
        gate_std=_last_finite(_column(metrics, "gate_std")),
        gate_series=[float(v) for v in gate] if gate is not None else [],
        graph_enabled=uses_graph(config.model),
        dataset=dataset,
        metrics=metrics,
        log_lines=log_lines,
        notes=notes,
        tear_sheet=tear_sheet_facts(folder, evaluation, horizons, int(th["grade_horizon"]), notes),
        regime=regime_facts(events, dataset, horizons, th),
    )


def tear_sheet_facts(
    folder: RunFolder,
    evaluation: Any,
    horizons: list[int],
    grade_horizon: int,
    notes: list[str],
    window: int = ROLLING_DAYS,
) -> TearSheetFacts:
    """The test segment's tear sheet: daily RankIC per horizon (eval/per_day.parquet) and its ``window``-day
    rolling mean, the mean label by prediction decile (eval/metrics.json), and the long-short backtest's
    cumulative net return and drawdown (backtest/long_short_<h>d/, the graded horizon's first, else another
    horizon's). Whatever is missing is a note of the tear sheet naming the command that makes it; a damaged
    file is a note in ``notes`` too."""
    ts = TearSheetFacts(window=window)
    root = folder.root
    per_day = _tolerant(folder.read_per_day, notes)
    if per_day is not None and not {"date", "horizon", "rankic"} <= set(per_day.columns):
        notes.append(f"{folder.eval_dir()}/per_day.parquet has no date, horizon and rankic columns")
        per_day = None
    if per_day is not None:
        _daily_rankic(ts, per_day)
    if isinstance(evaluation, dict):
        ts.deciles = decile_means(evaluation)
    if evaluation is None and per_day is None:
        ts.notes.append(f"run `atft evaluate {root}` for the test-period tear sheet")
    elif per_day is None:
        ts.notes.append(f"eval/per_day.parquet is missing: rerun `atft evaluate {root}` for the daily RankIC")
    elif evaluation is not None and not ts.deciles:
        ts.notes.append(f"eval/metrics.json has no decile_mean_label: rerun `atft evaluate {root}`")

    shown = set(horizons) | set(ts.rankic) | set(ts.deciles)
    if grade_horizon in shown:
        ts.horizon = grade_horizon
    elif shown:
        ts.horizon = next((h for h in horizons if h in shown), min(shown))
    order = [h for h in [ts.horizon, *horizons] if h is not None]
    for h in dict.fromkeys(order):
        found = _tolerant(lambda h=h: folder.read_backtest(BOOK_STRATEGY, h), notes)
        if found is not None:
            _book(ts, h, *found)
            break
    if ts.book is None:
        ts.notes.append(
            f"no backtest of the run yet: run `atft backtest {root}` for the "
            f"{BOOK_STRATEGY.replace('_', '-')} book's cumulative return and drawdown"
        )
    return ts


def _daily_rankic(ts: TearSheetFacts, per_day: pl.DataFrame) -> None:
    """Fill ``dates``, ``rankic`` and ``rolling`` of ``ts`` from eval/per_day.parquet."""
    frame = per_day.select(
        "date",
        pl.col("horizon").cast(pl.Int64, strict=False),
        pl.col("rankic").cast(pl.Float64, strict=False).fill_nan(None),
    ).filter(pl.col("date").is_not_null() & pl.col("horizon").is_not_null())
    days = frame.select("date").unique().sort("date")
    ts.dates = days["date"].to_list()
    for h in sorted(frame["horizon"].unique().to_list()):
        one = frame.filter(pl.col("horizon") == h).unique("date", keep="last").drop("horizon")
        values = days.join(one, on="date", how="left").sort("date")["rankic"].to_numpy()
        ts.rankic[int(h)] = [float(v) for v in values]
        ts.rolling[int(h)] = rolling_mean(values, ts.window)


def _book(ts: TearSheetFacts, h: int, daily: pl.DataFrame, record: Any) -> None:
    """Fill the book's series and statistics of ``ts`` from a backtest's daily frame and summary record."""
    record = record if isinstance(record, dict) else {}
    ts.book, ts.book_horizon = f"{BOOK_STRATEGY}_{h}d", h
    ts.book_split = str(record.get("split") or "test")
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    holding = params.get("holding_days")
    ts.holding_days = int(holding) if finite(holding) else h
    stats = record.get("summary") if isinstance(record.get("summary"), dict) else record
    ts.book_stats = _floats(stats)
    if "date" not in daily.columns or "net" not in daily.columns:
        ts.notes.append(f"backtest/{ts.book}/daily.parquet has no date and net columns: rerun the backtest")
        return
    daily = daily.sort("date")
    net = daily["net"].cast(pl.Float64, strict=False).fill_nan(None)
    if net.null_count():
        ts.notes.append(f"backtest/{ts.book}: {net.null_count()} day(s) without a net return, taken as 0")
    r = net.fill_null(0.0).to_numpy()
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]  # the wealth starts at 1
    ts.book_dates = daily["date"].to_list()
    ts.net = [float(v) for v in r]
    if "gross" in daily.columns:
        gross = daily["gross"].cast(pl.Float64, strict=False).fill_nan(None).fill_null(0.0)
        ts.gross = [float(v) for v in gross.to_numpy()]
    ts.cumulative = [float(v) for v in wealth - 1.0]
    ts.drawdown = [float(v) for v in wealth / peak - 1.0]


def rolling_mean(values: Any, window: int, min_share: float = 0.5) -> list[float]:
    """The mean of the finite values among the last ``window`` ones, from the ``window``-th value on, where
    at least ``min_share`` of the window has a value (NaN elsewhere)."""
    x = np.asarray(values, dtype=float)
    ok = np.isfinite(x)
    out = np.full(x.size, math.nan)
    if window < 1 or x.size < window:
        return [float(v) for v in out]
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    total = sums[window:] - sums[:-window]
    count = counts[window:] - counts[:-window]
    enough = count >= max(1, math.ceil(min_share * window))
    out[window - 1 :] = np.where(enough, total / np.maximum(count, 1), math.nan)
    return [float(v) for v in out]


def decile_means(evaluation: Any) -> dict[int, list[float]]:
    """``decile_mean_label`` per horizon from eval/metrics.json, in the shapes ``flatten_horizon_metrics``
    reads (``{"5d": {...}}``, ``{"horizons": {"5": {...}}}``, records with a ``horizon``, flat
    ``decile_mean_label_5d``); a missing decile is NaN."""
    out: dict[int, list[float]] = {}

    def means(value: list[Any]) -> list[float]:
        return [float(v) if finite(v) else math.nan for v in value]

    def walk(node: Any, h: int | None) -> None:
        if isinstance(node, list):
            for item in node:
                if isinstance(item, dict) and "horizon" in item:
                    walk({k: v for k, v in item.items() if k != "horizon"}, _horizon_of(item["horizon"]))
            return
        if not isinstance(node, dict):
            return
        for key in sorted(node, key=lambda k: k not in ("test", "metrics")):
            value, hk = node[key], _horizon_of(key)
            flat = re.fullmatch(r"decile_mean_label_(\d+)d", str(key))
            if isinstance(value, list) and (flat or (key == "decile_mean_label" and h is not None)):
                out.setdefault(int(flat[1]) if flat else h, means(value))  # type: ignore[arg-type]
            elif hk is not None and isinstance(value, dict):
                walk(value, hk)
            elif isinstance(value, dict | list):
                walk(value, h)

    walk(evaluation, None)
    return dict(sorted(out.items()))


def run_segments(events: list[dict[str, Any]]) -> dict[str, tuple[date, date]]:
    """The first and last date of each segment the run served (train, valid, test), in time order, from
    the last ``start`` event of events.jsonl (a resumed run logs one per start)."""
    starts = [e for e in events if e.get("event") == "start" and isinstance(e.get("data"), dict)]
    if not starts:
        return {}
    segments = {}
    for name in ("train", "valid", "test"):
        info = starts[-1]["data"].get(name)
        if isinstance(info, dict) and info.get("first_date") and info.get("last_date"):
            try:
                segments[name] = (
                    date.fromisoformat(info["first_date"]),
                    date.fromisoformat(info["last_date"]),
                )
            except (TypeError, ValueError):
                continue
    return segments


def regime_facts(
    events: list[dict[str, Any]], dataset: DatasetFacts, horizons: list[int], th: dict[str, Any]
) -> RegimeFacts:
    """Factor ICs by period on the run's own segments, against the raw label of the graded horizon."""
    h = int(th["grade_horizon"]) if int(th["grade_horizon"]) in horizons else horizons[0]
    facts = RegimeFacts(label=f"target_{h}d", lags=default_lags(h))
    facts.segments = run_segments(events)
    if "train" not in facts.segments or len(facts.segments) < 2:
        facts.notes.append("events.jsonl names no training segment and a later one: no factor ICs by period")
        return facts
    if not dataset.reachable or dataset.path is None:
        facts.notes.append(f"no factor ICs by period: {dataset.note}")
        return facts
    folder = DatasetFolder(dataset.path)
    try:
        features = select_features(folder.manifest)
        if facts.label not in folder.columns("labels"):
            facts.notes.append(f"no factor ICs by period: {folder.path('labels')} has no {facts.label}")
            return facts
        frame = folder.read("features", ["date", "code", *features]).join(
            folder.read("labels", ["date", "code", facts.label]), on=["date", "code"], how="left"
        )
    except KeyError as e:
        facts.notes.append(f"no factor ICs by period: the dataset manifest has no {e} (rebuild the dataset)")
        return facts
    except (DatasetError, ValueError, OSError) as e:
        facts.notes.append(f"no factor ICs by period: {e}")
        return facts
    table = factor_ic_by_segment(frame, features, facts.label, facts.segments, lags=facts.lags)
    ranked = pl.any_horizontal(pl.col(f"days_{name}") > 0 for name in facts.segments)
    unranked = table.filter(~ranked)["feature"].to_list()
    if unranked:
        facts.notes.append(
            f"{len(unranked)} feature(s) left out of the factor ICs: one value per date, or too few stocks "
            f"with a value, so there is no day to rank ({', '.join(unranked[:4])}{', ...' if len(unranked) > 4 else ''})"
        )
    facts.table = table.filter(ranked)
    facts.later = "test" if "test" in facts.segments else "valid"
    facts.significant, facts.flipped = sign_flips(facts.table, "train", facts.later, float(th["regime_t"]))
    facts.agreement = ic_agreement(facts.table, "train", facts.later)
    return facts


def read_dataset_facts(path: Path | None) -> DatasetFacts:
    """The dataset guard's findings from the dataset's manifest, or why they could not be read."""
    if path is None:
        return DatasetFacts(
            None, False, "the run records no dataset path (run.json, summary.json, data.dataset_dir)"
        )
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return DatasetFacts(
            path, False, f"dataset not reachable: {manifest_path} not found, features not checked"
        )
    try:
        manifest = DatasetFolder(path).manifest
    except DatasetError as e:
        return DatasetFacts(
            path, False, f"dataset manifest {manifest_path} unreadable ({e}): features not checked"
        )
    guard = manifest.get("guard") or {}
    facts = DatasetFacts(
        path,
        True,
        f"guard {'passed' if guard.get('passed', True) else 'FAILED'} ({manifest_path})",
        problems=list(guard.get("problems") or []),
        warnings=list(guard.get("warnings") or []),
        raw_dir=(manifest.get("source") or {}).get("raw_dir"),
        synthetic=(manifest.get("source") or {}).get("raw_kind") == "synthetic",
    )
    for text in facts.problems:
        if text.startswith("label "):
            facts.label_problems.append(text)
        elif m := re.match(r"(\S+) is (?:all zero|constant across stocks)", text):
            facts.dead.append(m[1])
        elif m := re.match(r"(\S+) is null on", text):
            facts.mostly_null.append(m[1])
    for text in facts.warnings:
        if m := re.match(r"(\S+) never changes", text):
            facts.constant_over_time.append(m[1])
    return facts


def flatten_horizon_metrics(obj: Any) -> dict[str, float]:
    """Per-horizon metrics in any of the usual JSON shapes, as ``{"rankic_5d": ...}``.

    Accepts flat keys (``rankic_5d``), horizon maps (``{"5d": {"rankic": ...}}``, ``{"5": ...}``,
    ``{"horizons": {...}}``) and lists of records with a ``horizon`` field; a ``test`` or ``metrics``
    sub-object is read first, so the test split wins over any other split in the file.
    """
    out: dict[str, float] = {}

    def number(v: Any) -> float | None:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    def walk(node: Any, h: int | None) -> None:
        if isinstance(node, list):
            for item in node:
                if isinstance(item, dict) and "horizon" in item:
                    walk({k: v for k, v in item.items() if k != "horizon"}, _horizon_of(item["horizon"]))
            return
        if not isinstance(node, dict):
            return
        for key in sorted(node, key=lambda k: k not in ("test", "metrics")):
            value, hk = node[key], _horizon_of(key)
            if hk is not None and isinstance(value, dict):
                walk(value, hk)
            elif (x := number(value)) is not None:
                if m := re.fullmatch(r"(.+)_(\d+)d", str(key)):
                    out.setdefault(f"{m[1]}_{m[2]}d", x)
                elif h is not None:
                    out.setdefault(f"{key}_{h}d", x)
            elif isinstance(value, dict | list):
                walk(value, h)

    walk(obj, None)
    return out


def _horizon_of(key: Any) -> int | None:
    m = re.fullmatch(r"(?:h|horizon_?)?(\d+)d?", str(key))
    return int(m[1]) if m else None


# ------------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------------


def curve_facts(metrics: pl.DataFrame, monitor_col: str, min_improvement: float = 1e-3) -> CurveFacts:
    """Plateau and overfitting measurements on the train / validation loss curves.

    The plateau epoch is the last one whose validation loss beat the running best by more than
    ``min_improvement`` (relative): smaller gains do not count as progress. ``rules`` decides from these
    numbers, with its own thresholds, whether the run plateaued or overfit.
    """
    epochs = [int(e) for e in _column(metrics, "epoch", [])]
    train = _column(metrics, "train_loss", [math.nan] * len(epochs))
    val = _column(metrics, "val_loss", [math.nan] * len(epochs))
    facts = CurveFacts(epochs, [float(x) for x in train], [float(x) for x in val], monitor=monitor_col)
    facts.monitor_values = [float(x) for x in _column(metrics, monitor_col, [])]
    ok = [i for i, v in enumerate(val) if finite(v)]
    if not ok:
        return facts
    best_i = min(ok, key=lambda i: val[i])
    facts.best_val_epoch, facts.best_val = epochs[best_i], float(val[best_i])
    running, plateau_i = val[ok[0]], ok[0]
    for i in ok[1:]:
        if val[i] < running - min_improvement * abs(running):
            plateau_i = i
        running = min(running, val[i])
    last = ok[-1]
    facts.plateau_epoch = epochs[plateau_i]
    facts.epochs_since_improvement = epochs[last] - epochs[plateau_i]
    facts.plateau_change = _rel(val[last], val[plateau_i])
    facts.val_above_best = _rel(val[last], facts.best_val)
    streak = 0
    for a, b in zip(ok, ok[1:], strict=False):
        train_falls = finite(train[a]) and finite(train[b]) and train[b] < train[a]
        val_rises = val[b] - val[a] > NOISE_REL * abs(val[a])
        streak = streak + 1 if train_falls and val_rises else 0
        if streak > facts.overfit_streak:
            facts.overfit_streak, facts.overfit_streak_end = streak, epochs[b]
    if finite(train[last]) and facts.best_val:
        facts.gap_rel = (val[last] - train[last]) / abs(facts.best_val)
    return facts


def lr_facts(metrics: pl.DataFrame, scheduler: str | None) -> LrFacts:
    """Warmup, peak, decay, plateau reductions and oscillation of the epoch-end learning rate."""
    lr = [float(x) for x in _column(metrics, "lr", []) if finite(x)]
    facts = LrFacts(lr, scheduler)
    if len(lr) < 2:
        return facts
    tol = 1e-6 * max(abs(x) for x in lr)
    signs = [0 if abs(b - a) <= tol else (1 if b > a else -1) for a, b in zip(lr, lr[1:], strict=False)]
    for s in signs:
        if s <= 0:
            break
        facts.warmup_epochs += 1
    facts.peak_epoch = int(np.argmax(lr))
    facts.decays = lr[-1] < lr[facts.peak_epoch] - tol
    moving = [s for s in signs if s]
    facts.sign_changes = sum(a != b for a, b in zip(moving, moving[1:], strict=False))
    for t in range(1, len(lr)):
        # a plateau scheduler's cut: a drop after a flat stretch (a cosine decays every epoch)
        flat_before = scheduler == "plateau" or (t >= 2 and signs[t - 2] == 0)
        if signs[t - 1] < 0 and flat_before:
            facts.reductions.append((t, lr[t] / lr[t - 1]))
    return facts


def term_facts(metrics: pl.DataFrame, weights: LossWeights | None) -> list[TermFacts]:
    """Each loss term's weighted value and gradient share, over the epochs logged (``weights``: the run's
    configured ones, None when unknown)."""
    names = sorted(
        {c.removeprefix("loss_") for c in metrics.columns if c.startswith("loss_")}
        | {c.removeprefix("gradshare_") for c in metrics.columns if c.startswith("gradshare_")}
    )
    out = []
    for name in names:
        value = _column(metrics, f"loss_{name}", [])
        share = _column(metrics, f"gradshare_{name}", [])
        w = getattr(weights, name, None) if weights is not None else None
        out.append(
            TermFacts(
                name=name,
                weight=float(w) if isinstance(w, int | float) else None,
                value_last=_last_finite(value),
                value_mean=_nanmean(value),
                share_mean=_nanmean(share),
                share_last=_last_finite(share),
                financial=name in FINANCIAL_TERMS,
            )
        )
    return sorted(out, key=lambda t: -t.share_mean if finite(t.share_mean) else 0.0)


def grad_facts(
    metrics: pl.DataFrame,
    events: list[dict[str, Any]],
    log_lines: list[str],
    config: ATFTConfig,
    summary: dict[str, Any] | None,
    vanishing_ratio: float = 1e-3,
    exploding_ratio: float = 1e3,
) -> GradFacts:
    """Gradient flow per module from the step readings in events.jsonl (else metrics.csv's epoch means),
    and what the guards did."""
    readings = [e for e in events if e.get("event") == "grad_norm" and isinstance(e.get("norms"), dict)]
    series: dict[str, list[tuple[float, float]]] = {}
    if readings:
        source, x_label = f"events.jsonl ({len(readings)} step readings)", "step"
        for e in readings:
            for module, value in e["norms"].items():
                if finite(value):
                    series.setdefault(module, []).append((float(e.get("step", len(series))), float(value)))
    else:
        source, x_label = "metrics.csv (epoch means)", "epoch"
        epochs = _column(metrics, "epoch", [])
        for c in metrics.columns:
            if c.startswith("grad_norm_"):
                values = _column(metrics, c, [])
                series[c.removeprefix("grad_norm_")] = [
                    (float(x), float(v)) for x, v in zip(epochs, values, strict=False) if finite(v)
                ]
    facts = GradFacts(source, series, x_label, level={}, peak={})
    for module, points in series.items():
        if points:
            facts.level[module] = float(np.median([v for _, v in points]))
            facts.peak[module] = max(points, key=lambda p: p[1])
    facts.unused = [
        m for m, pts in series.items() if pts and all(v == 0 for _, v in pts) and _disabled(m, config.model)
    ]
    analyse_gradients(facts, vanishing_ratio, exploding_ratio)

    kinds = [e.get("event") for e in events]
    resets = [e for e in events if e.get("event") in ("head_reset", "degeneracy_reset")]
    facts.reset_steps = [e.get("step") for e in resets]
    column_resets = _last_finite(_column(metrics, "head_resets"))
    facts.resets = max(
        len(resets),
        int(column_resets) if finite(column_resets) else 0,
        int((summary or {}).get("head_resets") or 0),
    )
    facts.degeneracy_warnings = max(
        kinds.count("degeneracy_warning"), int((summary or {}).get("degeneracy_warnings") or 0)
    )
    facts.nonfinite = [
        str(e.get("message", e)) for e in events if e.get("event") in ("non_finite", "nonfinite")
    ] or [line.removeprefix("STOP ").strip() for line in log_lines if line.startswith("STOP ")]
    facts.overflow_skips = kinds.count("overflow_step_skipped")
    facts.resumed = kinds.count("resume")
    return facts


def analyse_gradients(facts: GradFacts, vanishing_ratio: float, exploding_ratio: float) -> None:
    """Fill ``spikes``, ``reference`` and ``vanishing`` of ``facts`` for the given ratios.

    A spike is a reading more than ``exploding_ratio`` times the median of the other modules' readings at
    the same step. The reference is the largest median level among modules that are neither unused nor
    explosive, so that one exploding module does not make every other one look vanishing.
    """
    facts.spikes, facts.vanishing, facts.reference = [], [], None
    steps: dict[float, dict[str, float]] = {}
    for module, points in facts.series.items():
        for x, v in points:
            steps.setdefault(x, {})[module] = v
    for x, norms in sorted(steps.items()):
        for module, v in norms.items():
            others = [o for m, o in norms.items() if m != module and m not in facts.unused and o > 0]
            if len(others) >= 2 and v > exploding_ratio * float(np.median(others)):
                facts.spikes.append((module, x, v, v / float(np.median(others))))
    active = {m: lv for m, lv in facts.level.items() if m not in facts.unused}
    if not active:
        return
    explosive = {
        m
        for m, lv in active.items()
        if len(active) >= 3
        and lv > exploding_ratio * float(np.median([o for n, o in active.items() if n != m]))
    }
    candidates = {m: lv for m, lv in active.items() if m not in explosive} or active
    ref = max(candidates, key=lambda m: candidates[m])
    facts.reference = (ref, candidates[ref])
    facts.vanishing = [m for m, lv in active.items() if m != ref and lv < vanishing_ratio * candidates[ref]]


# ------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------


def _tolerant(read: Callable[[], T], notes: list[str]) -> T | None:
    """``read()``, or None with its one-line error in ``notes`` when the file it reads is damaged."""
    try:
        return read()
    except RunFolderError as e:
        notes.append(str(e))
        return None


def _disabled(module: str, model: ModelConfig) -> bool:
    """True when the model config switches ``module`` off, so that its zero gradient is expected."""
    if module.startswith(("gat", "fusion", "graph")):
        return not uses_graph(model)
    if module == "fan":
        return not model.fan.enabled
    if module == "shortcut":
        return not model.shortcut
    return False


def _column(frame: pl.DataFrame, name: str, default: Any = None) -> Any:
    """A float column as a list (NaN for empty cells), or ``default`` when the column is absent."""
    if name not in frame.columns:
        return default
    return [math.nan if v is None else float(v) for v in frame[name].to_list()]


def _horizons_from(metrics: pl.DataFrame) -> list[int]:
    found = {int(m[1]) for c in metrics.columns if (m := re.fullmatch(r"val_rankic_(\d+)d", c))}
    return sorted(found)


def _best_epoch(metrics: pl.DataFrame, monitor_col: str, mode: str) -> int | None:
    """The early-stopping monitor's best epoch, as the checkpoint callback would pick it."""
    column, better = monitor_col, mode
    if column not in metrics.columns or not any(finite(v) for v in _column(metrics, column)):
        column, better = "val_loss", "min"
    values = _column(metrics, column, [])
    ok = [(v, i) for i, v in enumerate(values) if finite(v)]
    if not ok:
        return None
    i = (max(ok) if better == "max" else min(ok))[1]
    return int(metrics["epoch"][i])


def _valid_metrics(
    summary: dict[str, Any] | None, metrics: pl.DataFrame, best_epoch: int | None
) -> tuple[dict[str, float], str]:
    if summary and summary.get("valid_metrics"):
        return _floats(summary["valid_metrics"]), "summary.json (best checkpoint)"
    if best_epoch is None or "epoch" not in metrics.columns:
        return {}, "none"
    row = metrics.filter(pl.col("epoch") == best_epoch)
    if not row.height:
        return {}, "none"
    values = row.row(0, named=True)
    out = {
        k.removeprefix("val_"): float(v)
        for k, v in values.items()
        if k.startswith("val_") and k != "val_loss" and v is not None
    }
    return out, f"metrics.csv (epoch {best_epoch})"


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _rel(a: float, b: float) -> float:
    return (a - b) / abs(b) if finite(a) and finite(b) and b else math.nan


def _nanmean(values: list[float] | None) -> float:
    kept = [v for v in values or [] if finite(v)]
    return float(np.mean(kept)) if kept else math.nan


def _last_finite(values: list[float] | None) -> float:
    kept = [v for v in values or [] if finite(v)]
    return kept[-1] if kept else math.nan
