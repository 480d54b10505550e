"""``atft rolling``: an honest rolling retrain, scored as one continuous out-of-sample series.

The previous system's rolling retrain had no purge, trained one epoch a month and reported the average of
monthly Sharpe ratios. Here every block of ``every`` trading days gets its own model, trained on the days
before it with a purge of at least the longest horizon between its last training (and validation) label and
its first test day (``atft.data.splits.rolling_splits``). The blocks' test forecasts are concatenated into
one series, which is evaluated and traded as one 5-day staggered book: the summary's Sharpe is that
series' Sharpe; per-block numbers appear only as a table. ``warm_start`` initializes each block from the
previous block's best weights and trains it for ``warm_epochs``. docs/rolling.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from atft.config import ATFTConfig, load_config
from atft.data.splits import Split, rolling_splits
from atft.evaluation.backtest import backtest
from atft.evaluation.evaluate import evaluate_predictions, json_ready
from atft.features.dataset import DatasetFolder
from atft.reporting.numbers import fmt
from atft.training.run_folder import RunFolder, atomic_text, atomic_write
from atft.workflow.baselines import BASELINES
from atft.workflow.compare import BOOK_HORIZON, DEEP_MODELS, model_preset
from atft.workflow.run_data import load_run_data
from atft.workflow.train import train_run

Progress = Callable[[str, int, int], None]


@dataclass
class RollingResult:
    """The continuous series' evaluation and book, the per-block table, and where they were written."""

    out: Path
    summary: dict[str, Any]
    blocks: list[dict[str, Any]]


def block_overrides(split: Split) -> list[str]:
    """The explicit segments of one block, as config overrides (each block's config.yaml says its dates)."""
    return ["data.split.mode=explicit"] + [
        f"data.split.{r.name}=[{r.start_date},{r.end_date}]" for r in split.ranges()
    ]


def rolling(
    data_path: str | Path,
    out: str | Path,
    *,
    model: str = "atft",
    every: int = 21,
    train_days: int = 756,
    window: str = "sliding",
    start: str | None = None,
    end: str | None = None,
    warm_start: bool = False,
    warm_epochs: int | None = None,
    preset: str | Path | None = "cpu",
    overrides: Sequence[str] = (),
    say: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> RollingResult:
    """Refit ``model`` every ``every`` trading days and score the concatenated forecasts (module docstring)."""
    if model not in DEEP_MODELS and model not in BASELINES:
        raise ValueError(f"--model {model!r}: choose one of {', '.join([*DEEP_MODELS, *BASELINES])}")
    if warm_start and model not in DEEP_MODELS:
        raise ValueError(f"--warm-start needs a trained network (atft, apex), not {model!r}")
    base = load_config(preset, list(overrides)).cfg
    dataset = DatasetFolder(data_path)
    s = base.data.split
    blocks = rolling_splits(
        dataset.calendar(),
        horizons=list(base.data.horizons),
        every=every,
        train_days=train_days,
        valid_days=s.valid_days,
        purge_days=s.purge_days,
        window=window,
        start=start,
        end=end,
    )
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    frames, table, previous = [], [], None
    for k, split in enumerate(blocks):
        if progress is not None:
            progress(f"block {k}: test {split.test.start_date(split.calendar)}", k, len(blocks))
        tokens = [*overrides, *block_overrides(split)]
        if model in DEEP_MODELS:
            tokens.append(f"model.name={DEEP_MODELS[model]}")
            if warm_start and previous is not None and warm_epochs is not None:
                tokens.append(f"train.max_epochs={warm_epochs}")
        cfg = load_config(model_preset(model, preset), tokens).cfg
        preds, info = _block(
            cfg, dataset, model, root / "blocks" / f"block_{k:03d}", previous, warm_start, say
        )
        previous = info.get("best_checkpoint")
        frames.append(preds)
        table.append({"block": k, **{f"{r.name}": [str(r.start_date), str(r.end_date)] for r in split.ranges()},
                      **_block_scores(preds, base), "seconds": info.get("seconds")})  # fmt: skip
    series = pl.concat(frames).sort("date", "code", "horizon")
    evaluation = evaluate_predictions(
        series, oracle=dataset.oracle(), cost_bps=base.eval.cost_bps, quantile=base.eval.quantile
    )
    book = backtest(
        series.filter(pl.col("horizon") == BOOK_HORIZON).select("date", "code", "prediction"),
        dataset.daily_returns(),
        strategy="long_short",
        quantile=base.eval.quantile,
        holding_days=BOOK_HORIZON,
        cost_bps=base.eval.cost_bps,
    )
    summary = {
        "model": model,
        "every": every,
        "train_days": train_days,
        "window": window,
        "warm_start": warm_start,
        "purge_days": s.purge_days,
        "blocks": len(blocks),
        "first_test_day": table[0]["test"][0],
        "last_test_day": table[-1]["test"][1],
        "metrics": evaluation.metrics,
        "book": book.summary,
    }
    atomic_write(root / "predictions.parquet", series.write_parquet)
    atomic_write(root / "book.parquet", book.daily.write_parquet)
    atomic_write(root / "per_day.parquet", evaluation.per_day.write_parquet)
    atomic_text(root / "rolling.md", render_rolling(summary, table, list(base.data.horizons)))
    atomic_text(
        root / "rolling.json",
        json.dumps(json_ready({**summary, "block_table": table}), indent=2, default=str),
    )
    return RollingResult(root, summary, table)


def _block(
    cfg: ATFTConfig,
    dataset: DatasetFolder,
    model: str,
    run_dir: Path,
    previous: str | None,
    warm_start: bool,
    say: Callable[[str], None],
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """One block's test forecasts: a finished block is reused, so an interrupted retrain resumes."""
    folder = RunFolder(run_dir)
    if model in DEEP_MODELS:
        if not folder.is_finished():
            init = Path(previous) if warm_start and previous else None
            train_run(cfg, dataset.root, run_dir, init_from=init, say=say, progress_bar=False)
        return folder.read_predictions("test"), folder.read_summary() or {}
    cached = run_dir / "predictions.parquet"
    if cached.is_file():
        return pl.read_parquet(cached), {}
    run = load_run_data(cfg, dataset, say=say)
    preds = BASELINES[model](cfg.train.seed).fit(run).predict(run, "test")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, preds.write_parquet)
    return preds, {}


def _block_scores(preds: pl.DataFrame, cfg: ATFTConfig) -> dict[str, float]:
    metrics = evaluate_predictions(preds, cost_bps=cfg.eval.cost_bps, quantile=cfg.eval.quantile).metrics
    return {f"rankic_{h}d": metrics.get(f"{h}d", {}).get("rankic") for h in cfg.data.horizons}


def render_rolling(summary: dict[str, Any], table: list[dict[str, Any]], horizons: list[int]) -> str:
    """``rolling.md``: the continuous series first, the blocks only as a table."""
    m, b = summary["metrics"], summary["book"]
    lines = [
        f"# Rolling retrain: {summary['model']}, every {summary['every']} trading days",
        "",
        f"{summary['blocks']} blocks, {summary['window']} training window of {summary['train_days']} days, "
        f"purge {summary['purge_days']} days, warm start {'on' if summary['warm_start'] else 'off'}; out of "
        f"sample {summary['first_test_day']} .. {summary['last_test_day']}, as one continuous series.",
        "",
        "| horizon | RankIC | RankIC IR | t | NW t |",
        "|---|---|---|---|---|",
    ]
    for h in horizons:
        hm = m.get(f"{h}d", {})
        lines.append(
            f"| {h}d | {_f(hm.get('rankic'), '.4f')} | {_f(hm.get('rankicir'), '.2f')} | "
            f"{_f(hm.get('rankic_tstat'), '.1f')} | {_f(hm.get('rankic_nw_tstat'), '.1f')} |"
        )
    lines += [
        "",
        f"5-day staggered long-short book, net of costs: book Sharpe {_f(b.get('sharpe'), '.2f')}, annual return "
        f"{_f(b.get('annual_return'), '.1%')}, max drawdown {_f(b.get('max_drawdown'), '.1%')}, daily turnover "
        f"{_f(b.get('mean_turnover'), '.0%')}.",
        "",
        "## Blocks (for inspection; the summary above is the one continuous series)",
        "",
        "| block | train | valid | test | " + " | ".join(f"RankIC {h}d" for h in horizons) + " | seconds |",
        "|---|---|---|---|" + "---|" * len(horizons) + "---|",
    ]
    for row in table:
        cells = [_f(row.get(f"rankic_{h}d"), ".4f") for h in horizons]
        lines.append(
            f"| {row['block']} | {' .. '.join(row['train'])} | {' .. '.join(row['valid'])} | "
            f"{' .. '.join(row['test'])} | " + " | ".join(cells) + f" | {_f(row.get('seconds'), '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def _f(value: Any, spec: str) -> str:
    return fmt(value, spec, missing="-")
