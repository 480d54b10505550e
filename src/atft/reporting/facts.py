"""What the run doctor measured and concluded: the data classes every part of ``atft.reporting`` shares.

``doctor`` fills :class:`Facts` from a run folder, ``rules`` turns them into :class:`Finding` s, ``plots``
and ``report`` draw and write them, and :class:`Diagnosis` carries the lot. This module imports no other
module of ``atft.reporting`` except ``numbers``, so that each of them can import it without a loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from atft.config import ATFTConfig
from atft.reporting.numbers import finite
from atft.training.run_folder import RunFolder

SEVERITIES = ("critical", "warning", "info")
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
    scheduler: str | None = None  # None when the run's config is unknown
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
    """The dataset guard's verdict, read from the dataset's manifest."""

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
class TearSheetFacts:
    """The test segment as a tear sheet shows it (section 9): the daily RankIC and its rolling mean, the mean
    label by prediction decile, and the long-short book's cumulative net return and drawdown.

    ``rankic`` and ``rolling`` are aligned with ``dates`` (NaN on a day without a value); the rolling mean at
    a day is the mean of the values present among the last ``window`` days, from the ``window``-th day on and
    where at least half of them have one. ``deciles`` is ``decile_mean_label`` of eval/metrics.json (decile 1
    = the lowest predictions). The book's ``cumulative`` is ``cumprod(1 + net) - 1`` and its ``drawdown`` the
    wealth below its running peak, the wealth starting at 1 before the first day (as ``max_drawdown`` of the
    backtest's summary). ``notes`` say what is missing and the command that makes it.
    """

    horizon: int | None = None  # the horizon drawn bold: grade_horizon, else the first one the run has
    window: int = 63
    dates: list[Any] = field(default_factory=list)
    rankic: dict[int, list[float]] = field(default_factory=dict)
    rolling: dict[int, list[float]] = field(default_factory=dict)
    deciles: dict[int, list[float]] = field(default_factory=dict)
    book: str | None = None  # e.g. "long_short_5d": the backtest read, None when the run has none
    book_split: str = "test"
    book_horizon: int | None = None
    holding_days: int | None = None
    book_dates: list[Any] = field(default_factory=list)
    net: list[float] = field(default_factory=list)
    gross: list[float] = field(default_factory=list)
    cumulative: list[float] = field(default_factory=list)
    drawdown: list[float] = field(default_factory=list)
    book_stats: dict[str, float] = field(default_factory=dict)  # the backtest summary's statistics
    notes: list[str] = field(default_factory=list)

    @property
    def evaluated(self) -> bool:
        """True when the test segment's daily RankIC or decile means were read."""
        return bool(self.rankic or self.deciles)


@dataclass
class RegimeFacts:
    """Factor ICs by period (``atft.evaluation.factor_ic``): each feature's mean daily RankIC, alone, against
    the raw ``label`` over each of the run's segments, read from its dataset; and the sign flips between the
    training segment and ``later`` (the test segment when the run has one, else validation).

    ``table`` is None when the dataset or the segments could not be read (``notes`` say why).
    """

    label: str | None = None
    lags: int = 0
    segments: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    table: pl.DataFrame | None = None
    later: str | None = None
    significant: list[str] = field(default_factory=list)  # features with |NW t| >= regime_t in ``later``
    flipped: list[str] = field(default_factory=list)  # those among them of the opposite sign in training
    agreement: float = math.nan  # correlation across features of training and ``later`` RankICs
    notes: list[str] = field(default_factory=list)


@dataclass
class Facts:
    """Everything measured on a run: what the rules judge and the report shows.

    ``config`` is the run's ``config.yaml`` read through the schema (every default filled in); when that
    file is missing or does not load, it is the schema defaults and ``config_loaded`` is False (a note
    says so).
    """

    folder: RunFolder
    config: ATFTConfig
    config_loaded: bool
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
    log_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tear_sheet: TearSheetFacts = field(default_factory=TearSheetFacts)
    regime: RegimeFacts = field(default_factory=RegimeFacts)

    @property
    def run_dir(self) -> Path:
        return self.folder.root

    @property
    def headline_split(self) -> str:
        """``test`` when the run has test metrics (they are what it delivers), else ``valid``."""
        return "test" if any(finite(v) for k, v in self.test.items() if k.startswith("rankic_")) else "valid"

    def headline(self, metric: str, h: int) -> float:
        """``metric`` at horizon ``h`` on the headline split (NaN when unknown)."""
        source = self.test if self.headline_split == "test" else self.valid
        return source.get(f"{metric}_{h}d", math.nan)

    @property
    def financial_share(self) -> float:
        """Mean gradient share of the ranking terms together."""
        return float(sum(t.share_mean for t in self.terms if t.financial and finite(t.share_mean)))


# ------------------------------------------------------------------------------------------------------
# what the doctor concluded
# ------------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One rule's verdict on a run."""

    name: str
    title: str
    fired: bool
    severity: str  # critical | warning | info
    evidence: str
    recommendation: str = ""  # what to do and why, ending with the command line
    command: str = ""  # the command line alone

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


def ranked(findings: list[Finding]) -> list[Finding]:
    """The fired findings, most severe first, ties in rule order: the first is the run's main problem."""
    order = {f.name: i for i, f in enumerate(findings)}
    return sorted((f for f in findings if f.fired), key=lambda f: (f.rank, order[f.name]))


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
        return ranked(self.findings)

    @property
    def main(self) -> Finding | None:
        """The main problem's finding, or None for a healthy run."""
        fired = self.fired
        return fired[0] if fired else None
