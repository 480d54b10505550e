"""The dataset guard: refuse to train on features or labels that cannot carry information.

It catches the previous system's failures before any epoch is spent:

- a stock feature that is constant (all zero, typically) across the cross-section on most dates, which is
  what a cross-sectional z-score computed one stock at a time produces;
- a feature that is mostly null after the warmup;
- a degenerate label: all null, constant across stocks on most dates, or present where the future is
  unknown (the last h rows of a stock filled with 0).

Market features hold one value per date by design; for them "constant" means over time, and that is only
a warning (a regime flag may simply never switch on within a short sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from atft.config import ATFTConfig
from atft.config.schema import GuardConfig
from atft.features.dataset import DatasetFolder


class DatasetGuardError(ValueError):
    """The dataset has features or labels that a model cannot learn from."""


@dataclass
class GuardReport:
    """What the guard found: ``problems`` stop training, ``warnings`` are reported."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Share of null values per feature over the rows past the warmup (the manifest reports it too).
    null_rate_after_warmup: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"passed": self.passed, "problems": self.problems, "warnings": self.warnings}

    def raise_if_failed(self) -> None:
        if self.problems:
            listed = "; ".join(self.problems[:10])
            more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
            raise DatasetGuardError(f"dataset guard failed on {len(self.problems)} check(s): {listed}{more}")


def _degenerate_date_share(
    frame: pl.DataFrame, columns: list[str], rows: pl.Expr | None = None
) -> dict[str, tuple[float, int]]:
    """Per column: share of dates (with at least 2 values) on which it is constant, and how many such dates.

    ``rows`` (a boolean expression) restricts the statistics to those rows; a date without any is not
    counted.
    """

    def values(c: str) -> pl.Expr:
        # Nulled rather than filtered: std and count skip nulls, and a mask is several times faster per group.
        return pl.col(c) if rows is None else pl.when(rows).then(pl.col(c))

    per_date = frame.group_by("date").agg(
        *[(values(c).std() == 0).alias(c) for c in columns],
        *[values(c).count().alias(f"{c}__n") for c in columns],
    )
    out = {}
    for c in columns:
        usable = per_date.filter(pl.col(f"{c}__n") >= 2)
        out[c] = (float(usable[c].mean()) if usable.height else 1.0, usable.height)
    return out


def check_dataset(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    stock_features: list[str],
    market_features: list[str],
    target_columns: dict[int, str],
    warm: pl.Series,
    max_degenerate_date_frac: float = 0.5,
    max_null_rate: float = 0.5,
) -> GuardReport:
    """Check the features (rows where ``warm`` is True, i.e. past the warmup) and the labels.

    ``target_columns`` maps each horizon to its label column. ``features`` and ``labels`` have the same
    rows in the same order (sorted by date, code).
    """
    report = GuardReport()
    warm_rows = int(warm.sum())
    if warm_rows == 0:
        report.problems.append(
            "no row is past the warmup: every stock's history is shorter than the longest window"
        )
        return report
    # The rows past the warmup are masked, not copied out: on a 10M-row panel a filtered copy of every
    # feature would double the memory the build needs.
    frame = features.with_columns(warm.alias("__warm"))
    if frame["date"].is_sorted():  # flagged, the per-date group-bys take contiguous slices instead of hashing
        frame = frame.with_columns(pl.col("date").set_sorted())
    post = pl.col("__warm")

    nulls = frame.select(
        ((pl.col(c).is_null() & post).sum() / warm_rows).alias(c) for c in stock_features + market_features
    ).row(0, named=True)
    report.null_rate_after_warmup = nulls
    for name, rate in nulls.items():
        if rate > max_null_rate:
            hint = (
                " (stocks alone in their sector have no sector peers: use a coarser data.sector_level or a "
                "larger universe)"
                if name.startswith(("sector_", "rel_sector_"))
                else ""
            )
            report.problems.append(f"{name} is null on {rate:.0%} of rows after the warmup{hint}")

    shares = _degenerate_date_share(frame, stock_features, post)
    for name, (share, n_dates) in shares.items():
        if nulls[name] > max_null_rate:
            continue  # already reported; its per-date statistics say nothing more
        if share > max_degenerate_date_frac:
            zero = frame.select(pl.col(name).filter(post).abs().max() == 0).item()
            what = "all zero" if zero else "constant across stocks"
            report.problems.append(
                f"{name} is {what} on {share:.0%} of {n_dates} dates: it cannot rank stocks (a per-stock "
                "z-score, the previous system's bug, makes a feature exactly this; so does a one-sector universe "
                "for sector features)"
            )
    if market_features:
        stds = frame.select(pl.col(market_features).filter(post).std()).row(0, named=True)
        for name, std in stds.items():
            if not std:
                report.warnings.append(f"{name} never changes over the sample")

    label_shares = _degenerate_date_share(labels, list(target_columns.values()))
    position_from_end = pl.int_range(pl.len(), 0, -1).over("code")  # 1 on a stock's last row
    # One pass for every horizon: the positions are computed once.
    leaks = labels.select(
        ((position_from_end <= h) & pl.col(name).is_not_null()).sum().alias(name)
        for h, name in target_columns.items()
    ).row(0, named=True)
    for h, name in target_columns.items():
        col = labels[name]
        if col.null_count() == col.len():
            report.problems.append(f"label {name} is null everywhere")
            continue
        share, n_dates = label_shares[name]
        if share > max_degenerate_date_frac:
            report.problems.append(
                f"label {name} is constant across stocks on {share:.0%} of {n_dates} dates"
            )
        leaked = leaks[name]
        if leaked:
            report.problems.append(
                f"label {name} has a value on {leaked} rows within {h} days of a stock's last row, where the "
                "future is unknown (filled with 0?)"
            )
    return report


# Feature groups with one value per date: checked over time, like the market group, never across stocks.
PER_DATE_GROUPS = ("market", "flows")


def per_date_features(groups: dict[str, list[str]]) -> list[str]:
    """The features the guard checks over time rather than across stocks: the per-date groups, and the
    ``*_valid`` flags of the J-Quants groups, which are 1 for every stock on a day when all have data."""
    per_date = [n for g in PER_DATE_GROUPS for n in groups.get(g, [])]
    flags = [n for names in groups.values() for n in names if n.endswith("_valid")]
    return list(dict.fromkeys([*per_date, *flags]))


def guard_dataset(dataset_dir: str | Path | DatasetFolder, cfg: ATFTConfig | None = None) -> GuardReport:
    """Run the guard on a dataset folder written by ``atft data build``: the check before any training.

    Thresholds come from ``cfg.features.guard`` (the resolved config), or the schema defaults.
    """
    limits = cfg.features.guard if cfg is not None else GuardConfig()
    folder = dataset_dir if isinstance(dataset_dir, DatasetFolder) else DatasetFolder(dataset_dir)
    manifest = folder.manifest
    market = per_date_features(manifest["features"])
    stock = [n for n in manifest["model_features"] if n not in market]
    warmup_flag = f"is_valid_{manifest['warmup_days']}d"
    targets = dict(zip(manifest["horizons"], manifest["labels"]["target"], strict=True))
    features = folder.read("features", ["date", "code", *stock, *market, warmup_flag])
    labels = folder.read("labels", ["date", "code", *targets.values()])
    return check_dataset(
        features,
        labels,
        stock_features=stock,
        market_features=market,
        target_columns=targets,
        warm=features[warmup_flag],
        max_degenerate_date_frac=limits.max_degenerate_date_frac,
        max_null_rate=limits.max_null_rate,
    )
