"""The run doctor: read a run folder, measure what happened in it, name the main problem, grade the result.

``diagnose_run(run_dir)`` is the entry point. It reads everything the training engine writes
(``config.yaml``, ``run.json``, ``metrics.csv``, ``events.jsonl``, ``train.log``, ``summary.json``) plus
``eval/metrics.json`` when ``atft evaluate`` has run, and the dataset's ``manifest.json`` for the guard's
verdict on the features. From these it computes ``Facts`` (plateau, overfitting, learning-rate shape, loss
composition, gradient flow, ...), runs the root-cause rules of ``atft.reporting.rules`` on them, grades
the headline number, and writes ``report.md`` (and ``report.html``) with the plots of
``atft.reporting.plots`` under ``report/``.

Every number comes from the run's own files: a file that is missing (an old run, a crashed one) leaves its
sections saying so instead of failing. Thresholds live in ``rules.DEFAULT_THRESHOLDS`` (docs/doctor.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from atft.reporting import rules as rules_mod
from atft.reporting.numbers import finite
from atft.reporting.rules import Finding

# Ranking terms of the loss: the ones that make the model a stock ranker rather than a regressor.
FINANCIAL_TERMS = ("rankic", "cs_ic", "sharpe", "listnet", "ranknet")
# A change smaller than this share of the value is noise, not a rise (float round-off, a flat curve).
NOISE_REL = 1e-4
GRADE_LEVELS = ("below minimum", "minimum", "target", "stretch")


# ------------------------------------------------------------------------------------------------------
# what the doctor read and measured
# ------------------------------------------------------------------------------------------------------


@dataclass
class CurveFacts:
    """Train and validation loss per epoch, and what their shapes say (sections 2 and 7)."""

    epochs: list[int]
    train: list[float]
    val: list[float]
    best_val_epoch: int | None = None
    best_val: float = math.nan
    plateau_epoch: int | None = None  # the last epoch that improved val loss by a meaningful amount
    epochs_since_improvement: int = 0
    plateau_change: float = math.nan  # relative change of val loss from plateau_epoch to the last epoch
    overfit_streak: int = 0  # longest run of epochs with train falling and val rising
    overfit_streak_end: int | None = None
    gap_rel: float = math.nan  # (val - train) at the last epoch, relative to the best val loss
    val_above_best: float = math.nan  # last val loss relative to the best, minus 1
    monitor: str = ""
    monitor_values: list[float] = field(default_factory=list)


@dataclass
class LrFacts:
    """The learning rate at each epoch's end and the schedule's shape (section 3)."""

    values: list[float]
    scheduler: str | None = None
    warmup_epochs: int = 0
    peak_epoch: int | None = None
    decays: bool = False
    reductions: list[tuple[int, float]] = field(default_factory=list)  # (epoch, new/old)
    sign_changes: int = 0


@dataclass
class TermFacts:
    """One loss term: its configured weight, weighted value and share of the gradient (section 5)."""

    name: str
    weight: float | None
    value_last: float
    value_mean: float
    share_mean: float
    share_last: float
    financial: bool


@dataclass
class GradFacts:
    """Gradient norm per top-level module, the guards' actions (section 6)."""

    source: str
    series: dict[str, list[tuple[float, float]]]  # module -> (step or epoch, norm)
    x_label: str
    level: dict[str, float]  # median norm per module: robust to a single spike
    peak: dict[str, tuple[float, float]]  # module -> (step, largest norm)
    unused: list[str] = field(default_factory=list)  # switched off in the config, so no gradient
    vanishing: list[str] = field(default_factory=list)
    reference: tuple[str, float] | None = None  # the module the others are compared with
    spikes: list[tuple[str, float, float, float]] = field(default_factory=list)  # module, step, norm, ratio
    resets: int = 0
    reset_steps: list[Any] = field(default_factory=list)
    degeneracy_warnings: int = 0
    nonfinite: list[str] = field(default_factory=list)
    overflow_skips: int = 0
    resumed: int = 0


@dataclass
class DatasetFacts:
    """The dataset guard's verdict, read from the dataset's manifest.json."""

    path: Path | None
    reachable: bool
    note: str
    dead: list[str] = field(default_factory=list)  # stock features failing the guard (constant, all zero)
    mostly_null: list[str] = field(default_factory=list)
    constant_over_time: list[str] = field(default_factory=list)  # market features that never change
    label_problems: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw_dir: str | None = None
    synthetic: bool = False


@dataclass
class Facts:
    """Everything measured on a run: what the rules judge and the report shows."""

    run_dir: Path
    config: dict[str, Any]
    horizons: list[int]
    data_path: Path | None
    epochs_run: int
    best_epoch: int | None
    monitor: str
    monitor_mode: str
    valid: dict[str, float]
    valid_source: str
    test: dict[str, float]
    test_source: str
    oracle: dict[int, float]
    capture: dict[int, float]
    synthetic: bool
    curve: CurveFacts
    lr: LrFacts
    terms: list[TermFacts]
    grads: GradFacts
    gate_mean: float
    gate_std: float
    gate_series: list[float]
    graph_enabled: bool
    dataset: DatasetFacts
    metrics: pl.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def headline_split(self) -> str:
        """``test`` when the run has test metrics (they are what it delivers), else ``valid``."""
        return "test" if any(finite(v) for k, v in self.test.items() if k.startswith("rankic_")) else "valid"

    def headline(self, metric: str, h: int) -> float:
        """``metric`` at horizon ``h`` on the headline split (NaN when unknown)."""
        source = self.test if self.headline_split == "test" else self.valid
        return source.get(f"{metric}_{h}d", math.nan)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """A value of the run's config by dotted key (``train.optimizer.lr``), or ``default``."""
        return cfg_get(self.config, dotted, default)

    @property
    def financial_share(self) -> float:
        """Mean gradient share of the ranking terms together."""
        return float(sum(t.share_mean for t in self.terms if t.financial and finite(t.share_mean)))


@dataclass
class Grade:
    """The run against the minimum / target / stretch levels of one headline number."""

    level: str  # one of GRADE_LEVELS, or "ungraded" when the number is unknown
    metric: str  # e.g. capture_5d or rankic_5d
    value: float
    split: str
    levels: dict[str, float]

    def __str__(self) -> str:
        return self.level


@dataclass
class Diagnosis:
    """What ``diagnose_run`` returns: the status, every rule's result, the grade, and where it wrote."""

    run_dir: Path
    status: str  # "healthy" or the name of the main problem's rule
    findings: list[Finding]
    grade: Grade
    facts: Facts
    thresholds: dict[str, Any]
    report_md: Path | None = None
    report_html: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def fired(self) -> list[Finding]:
        """The rules that fired, main problem first."""
        return rules_mod.ranked(self.findings)

    @property
    def main(self) -> Finding | None:
        """The main problem's finding, or None for a healthy run."""
        fired = self.fired
        return fired[0] if fired else None


# ------------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------------


def diagnose_run(run_dir: Path, *, html: bool = False, thresholds: dict | None = None) -> Diagnosis:
    """Diagnose a run folder and write ``report.md`` (+ ``report/*.png``, + ``report.html`` with ``html``)."""
    from atft.reporting import plots, report

    diagnosis = diagnose(run_dir, thresholds=thresholds)
    root = Path(run_dir)
    diagnosis.plots = plots.make_plots(diagnosis.facts, root / "report")
    diagnosis.report_md = root / "report.md"
    diagnosis.report_md.write_text(report.render_markdown(diagnosis))
    if html:
        diagnosis.report_html = root / "report.html"
        diagnosis.report_html.write_text(report.render_html(diagnosis))
    return diagnosis


def diagnose(run_dir: Path, *, thresholds: dict | None = None) -> Diagnosis:
    """The diagnosis of a run folder without writing anything (``diagnose_run`` also writes the report)."""
    root = Path(run_dir)
    th = resolve_thresholds(_read_yaml(root / "config.yaml", []), thresholds)
    facts = collect_facts(root, th)
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


def resolve_thresholds(config: dict[str, Any], overrides: dict | None) -> dict[str, Any]:
    """``DEFAULT_THRESHOLDS``, then the run's ``eval.grading`` levels, then ``overrides`` (names checked)."""
    th = dict(rules_mod.DEFAULT_THRESHOLDS)
    grading = cfg_get(config, "eval.grading", None)
    if isinstance(grading, dict):
        th.update({k: float(v) for k, v in grading.items() if k in th and v is not None})
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


def collect_facts(root: Path, thresholds: dict[str, Any] | None = None) -> Facts:
    """Read a run folder and measure everything the rules and the report need (``thresholds``: the
    resolved ones; the plateau and gradient measurements depend on them)."""
    th = thresholds or rules_mod.DEFAULT_THRESHOLDS
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if not any((root / name).exists() for name in ("metrics.csv", "summary.json", "config.yaml")):
        raise ValueError(f"{root} is not a run folder: it has no metrics.csv, summary.json or config.yaml")
    notes: list[str] = []
    config = _read_yaml(root / "config.yaml", notes)
    run_info = _read_json(root / "run.json", notes, required=False) or {}
    summary = _read_json(root / "summary.json", notes, required=False)
    if summary is None:
        notes.append(
            "summary.json is missing (an older run, or one still training or stopped): "
            "best epoch and validation metrics come from metrics.csv, "
            "test metrics only from eval/metrics.json"
        )
    evaluation = _read_json(root / "eval" / "metrics.json", notes, required=False)
    metrics = read_metrics(root / "metrics.csv", notes)
    events = read_events(root / "events.jsonl", notes)
    log_lines = (root / "train.log").read_text().splitlines() if (root / "train.log").exists() else []

    horizons = [int(h) for h in cfg_get(config, "data.horizons", []) or []] or _horizons_from(metrics)
    monitor = str(cfg_get(config, "train.early_stopping.monitor", "val/rankic_5d"))
    if summary and summary.get("monitor"):
        monitor = str(summary["monitor"])
    mode = str(cfg_get(config, "train.early_stopping.mode", "max"))
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

    data_path = (
        run_info.get("data_path") or (summary or {}).get("data_path") or cfg_get(config, "data.dataset_dir")
    )
    dataset = read_dataset_facts(Path(data_path) if data_path else None)
    graph_enabled = (
        bool(cfg_get(config, "model.gat.enabled", True))
        and cfg_get(config, "model.graph.mode", "correlation") != "none"
    )
    gate = _column(metrics, "gate_mean")
    return Facts(
        run_dir=root,
        config=config,
        horizons=horizons,
        data_path=Path(data_path) if data_path else None,
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
        lr=lr_facts(metrics, cfg_get(config, "train.scheduler.name")),
        terms=term_facts(metrics, cfg_get(config, "loss.weights", {}) or {}),
        grads=grad_facts(
            metrics, events, log_lines, config, summary, th["vanishing_ratio"], th["exploding_ratio"]
        ),
        gate_mean=_last_finite(gate),
        gate_std=_last_finite(_column(metrics, "gate_std")),
        gate_series=[float(v) for v in gate] if gate is not None else [],
        graph_enabled=graph_enabled,
        dataset=dataset,
        metrics=metrics,
        notes=notes,
    )


def read_metrics(path: Path, notes: list[str]) -> pl.DataFrame:
    """metrics.csv as floats, one row per epoch (the last row wins for an epoch written twice)."""
    empty = pl.DataFrame({"epoch": []}, schema={"epoch": pl.Float64})
    if not path.exists():
        notes.append("metrics.csv is missing: no per-epoch curves")
        return empty
    try:
        # read as text then cast: an empty cell, "nan" or "inf" must not turn a column into strings
        raw = pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.NoDataError:
        notes.append("metrics.csv is empty: no per-epoch curves")
        return empty
    frame = raw.with_columns(pl.all().cast(pl.Float64, strict=False))
    if "epoch" in frame.columns:
        frame = frame.filter(pl.col("epoch").is_not_null()).unique("epoch", keep="last").sort("epoch")
    return frame


def read_events(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """events.jsonl as a list of dicts; an unreadable line (a kill mid-write) is skipped and noted."""
    if not path.exists():
        notes.append("events.jsonl is missing: no step-level gradient readings or guard events")
        return []
    events, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        notes.append(f"events.jsonl: {bad} unreadable line(s) skipped")
    return events


def read_dataset_facts(path: Path | None) -> DatasetFacts:
    """The dataset guard's findings from ``<dataset>/manifest.json``, or why they could not be read."""
    if path is None:
        return DatasetFacts(
            None, False, "the run records no dataset path (run.json, summary.json, data.dataset_dir)"
        )
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return DatasetFacts(
            path, False, f"dataset not reachable: {manifest_path} not found, features not checked"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
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


def term_facts(metrics: pl.DataFrame, weights: dict[str, Any]) -> list[TermFacts]:
    """Each loss term's weighted value and gradient share, over the epochs logged."""
    names = sorted(
        {c.removeprefix("loss_") for c in metrics.columns if c.startswith("loss_")}
        | {c.removeprefix("gradshare_") for c in metrics.columns if c.startswith("gradshare_")}
    )
    out = []
    for name in names:
        value = _column(metrics, f"loss_{name}", [])
        share = _column(metrics, f"gradshare_{name}", [])
        w = weights.get(name)
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
    config: dict[str, Any],
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
        m for m, pts in series.items() if pts and all(v == 0 for _, v in pts) and _disabled(m, config)
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


def cfg_get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` when any part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _disabled(module: str, config: dict[str, Any]) -> bool:
    """True when the config switches ``module`` off, so that its zero gradient is expected."""
    if module.startswith(("gat", "fusion", "graph")):
        return not cfg_get(config, "model.gat.enabled", True) or cfg_get(config, "model.graph.mode") == "none"
    if module == "fan":
        return not cfg_get(config, "model.fan.enabled", True)
    if module == "shortcut":
        return not cfg_get(config, "model.shortcut", True)
    return False


def _read_yaml(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.exists():
        notes.append("config.yaml is missing: schedule, loss weights and overrides are unknown")
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        notes.append(f"config.yaml unreadable: {e}")
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _read_json(path: Path, notes: list[str], *, required: bool) -> Any:
    if not path.exists():
        if required:
            notes.append(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        notes.append(
            f"{path.relative_to(path.parents[1]) if len(path.parents) > 1 else path}: unreadable ({e})"
        )
        return None


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
