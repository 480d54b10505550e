"""The run doctor names deliberately broken runs correctly, and calls a healthy run healthy.

``make_run`` writes a small healthy run folder (config.yaml, run.json, metrics.csv, events.jsonl,
summary.json, and a dataset manifest) in the current format; each test perturbs one thing in it and
checks the doctor's status and fired rules.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from atft.config import load_config
from atft.evaluation.backtest import performance_summary
from atft.reporting.doctor import diagnose, diagnose_run
from atft.reporting.facts import SEVERITIES
from atft.reporting.report import SECTION_TITLES
from atft.reporting.rules import DEFAULT_THRESHOLDS, RULES, healthy_recommendation

DEFAULTS = load_config(None, env={}).cfg

HORIZONS = (1, 5, 10, 20)
MODULES = {"fan": 0.05, "vsn": 0.1, "temporal": 0.05, "gat": 0.02, "fusion": 0.01, "heads": 0.5}
SHARES = {"huber": 0.3, "pinball": 0.1, "coverage": 0.05, "rankic": 0.45, "variance_floor": 0.1}


def _val_metrics(
    epoch: int, *, rankic: float = 0.04, ic: float = 0.045, scale: float = 0.06
) -> dict[str, float]:
    """Metrics of a healthy model: positive IC, small spread, so RMSE just under the naive RMSE."""
    out = {}
    for h in HORIZONS:
        naive = 0.02 * math.sqrt(h)
        out |= {
            f"mae_{h}d": 0.8 * naive,
            f"rmse_{h}d": naive * math.sqrt(1 - 2 * scale * ic + scale**2),
            f"r2_{h}d": 0.001,
            f"naive_rmse_{h}d": naive,
            f"ic_{h}d": ic,
            f"rankic_{h}d": rankic + 0.001 * epoch,
            f"icir_{h}d": 0.4,
            f"rankicir_{h}d": 0.45,
            f"scale_{h}d": scale,
            f"sharpe_{h}d": 1.5,
            f"n_days_{h}d": 240.0,
            f"coverage_{h}d": 1.0,
        }
    return out


def healthy_parts(root: Path, epochs: int = 8) -> dict[str, Any]:
    """Every file of a healthy run, as Python objects a test can perturb before they are written."""
    rows = []
    for e in range(epochs):
        row: dict[str, Any] = {"epoch": e, "train_loss": 0.56 - 0.01 * e, "val_loss": 0.48 - 0.004 * e}
        row |= {"gate_mean": 0.5, "gate_std": 0.15}
        row |= {f"grad_norm_{m}": v for m, v in MODULES.items()}
        row |= {f"gradshare_{t}": s for t, s in SHARES.items()}
        row |= {f"loss_{t}": 0.1 * s for t, s in SHARES.items()}
        row |= {f"scale_{h}d": 0.07 for h in HORIZONS}
        row["lr"] = 3e-4 * 0.5 * (1 + math.cos(math.pi * e / epochs))
        row |= {f"val_{k}": v for k, v in _val_metrics(e).items()}
        row |= {"head_resets": 0, "epoch_seconds": 10.0}
        rows.append(row)
    steps = [
        {
            "event": "grad_norm",
            "step": 50 * i,
            "epoch": i // 2,
            "norms": {m: v * (1 + 0.1 * (i % 3)) for m, v in MODULES.items()},
        }
        for i in range(2 * epochs)
    ]
    test = _val_metrics(epochs - 1, rankic=0.034)
    dataset = root / "dataset"
    return {
        "rows": rows,
        "events": [
            {"event": "start", "parameters": 1000},
            *steps,
            {"event": "end", "best_epoch": epochs - 1},
        ],
        "summary": {
            "epochs_run": epochs,
            "best_epoch": epochs - 1,
            "monitor": "val/rankic_5d",
            "head_resets": 0,
            "degeneracy_warnings": 0,
            "valid_metrics": {
                k.removeprefix("val_"): v
                for k, v in rows[-1].items()
                if k.startswith("val_") and k != "val_loss"
            },
            "test_metrics": test,
            "oracle_test_rankic": {f"rankic_{h}d": 0.08 for h in HORIZONS},  # capture 0.041/0.08 ~ 0.5
        },
        "config": {
            "data": {"horizons": list(HORIZONS)},
            "model": {
                "dropout": 0.2,
                "fan": {"enabled": True},
                "gat": {"enabled": True},
                "graph": {"mode": "correlation"},
            },
            "train": {
                "seed": 42,
                "optimizer": {"lr": 3e-4, "weight_decay": 0.01, "grad_clip": 1.0},
                "scheduler": {"name": "warmup_cosine", "warmup_epochs": 1},
                "early_stopping": {"monitor": "val/rankic_5d", "mode": "max", "patience": 3},
            },
            "loss": {
                "weights": {
                    "huber": 1.0,
                    "pinball": 0.5,
                    "coverage": 0.1,
                    "rankic": 0.5,
                    "variance_floor": 1.0,
                },
                "scale_floor": 0.05,
            },
            "eval": {
                "cost_bps": 5.0,
                "grading": {"minimum_rankic": 0.01, "target_rankic": 0.03, "stretch_rankic": 0.05},
            },
        },
        "run_json": {"data_path": str(dataset)},
        "manifest": {
            "kind": "dataset",
            "source": {"raw_dir": str(root / "raw"), "raw_kind": "synthetic"},
            "guard": {"passed": True, "problems": [], "warnings": []},
        },
        "dataset": dataset,
    }


def write_run(root: Path, parts: dict[str, Any]) -> Path:
    """Write the parts as a run folder ``root/run`` (and the dataset manifest beside it)."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(parts["config"]))
    (run / "run.json").write_text(json.dumps(parts["run_json"]))
    columns = list(dict.fromkeys(k for r in parts["rows"] for k in r))
    if columns:  # the training engine writes metrics.csv at the first epoch's end
        with (run / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(parts["rows"])
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in parts["events"]))
    if parts["summary"] is not None:
        (run / "summary.json").write_text(json.dumps(parts["summary"]))
    if parts["manifest"] is not None:
        parts["dataset"].mkdir(parents=True, exist_ok=True)
        (parts["dataset"] / "manifest.json").write_text(json.dumps(parts["manifest"]))
        for table, frame in parts.get("tables", {}).items():
            frame.write_parquet(parts["dataset"] / f"{table}.parquet")
    return run


def make_run(root: Path, perturb: Callable[[dict[str, Any]], None] | None = None, epochs: int = 8) -> Path:
    """A healthy run, changed by ``perturb`` before it is written."""
    parts = healthy_parts(root, epochs)
    if perturb is not None:
        perturb(parts)
    return write_run(root, parts)


def _set_metric(parts: dict[str, Any], metric: str, value: Callable[[int], float] | float) -> None:
    """Set ``metric`` at every horizon: per epoch in metrics.csv, and in the summary's valid/test metrics."""
    fn = value if callable(value) else (lambda _h, v=value: v)
    for row in parts["rows"]:
        row |= {f"val_{metric}_{h}d": fn(h) for h in HORIZONS}
    for split in ("valid_metrics", "test_metrics"):
        parts["summary"][split] |= {f"{metric}_{h}d": fn(h) for h in HORIZONS}


def fired(diagnosis) -> set[str]:
    return {f.name for f in diagnosis.findings if f.fired}


# ------------------------------------------------------------------------------------------------------
# the perturbations, one failure each
# ------------------------------------------------------------------------------------------------------


def collapsed(parts: dict[str, Any]) -> None:
    _set_metric(parts, "scale", 0.01)
    for row in parts["rows"]:
        row |= {f"scale_{h}d": 0.01 for h in HORIZONS}
    parts["events"].insert(3, {"event": "head_reset", "step": 150, "scale_ema": 0.01, "resets": 1})


def negative_ic(parts: dict[str, Any]) -> None:
    _set_metric(parts, "rankic", -0.03)
    _set_metric(parts, "ic", -0.03)
    _set_metric(parts, "rmse", lambda h: 0.02 * math.sqrt(h) * 1.004)  # a wrong-way spread costs RMSE too


def plateaued(parts: dict[str, Any]) -> None:
    # 14 epochs: val improves until epoch 4, then wobbles by 0.001% for 9 epochs; train barely moves
    parts["rows"] = [dict(parts["rows"][0], epoch=e) for e in range(14)]
    for e, row in enumerate(parts["rows"]):
        row["val_loss"] = 0.48 - 0.004 * min(e, 4) + (5e-6 if e > 4 and e % 2 else 0.0)
        row["train_loss"] = 0.50 - 0.0005 * e
        row["lr"] = 3e-4
    parts["config"]["train"]["scheduler"]["name"] = "constant"
    parts["summary"] |= {"epochs_run": 14, "best_epoch": 4}


def dead(parts: dict[str, Any]) -> None:
    parts["manifest"]["guard"] = {
        "passed": False,
        "problems": [
            "mom_20d is all zero on 100% of 700 dates: it cannot rank stocks (a per-stock z-score ...)",
            "vol_60d is constant across stocks on 80% of 700 dates: it cannot rank stocks",
        ],
        "warnings": ["mkt_regime never changes over the sample"],
    }


def dominated(parts: dict[str, Any]) -> None:
    for row in parts["rows"]:
        row |= {
            "gradshare_rankic": 0.96,
            "gradshare_huber": 0.01,
            "gradshare_pinball": 0.01,
            "gradshare_coverage": 0.01,
            "gradshare_variance_floor": 0.01,
        }


def vanishing(parts: dict[str, Any]) -> None:
    for row in parts["rows"]:
        row["grad_norm_temporal"] = 1e-6
    for e in parts["events"]:
        if e["event"] == "grad_norm":
            e["norms"]["temporal"] = 1e-6


def exploding(parts: dict[str, Any]) -> None:
    readings = [e for e in parts["events"] if e["event"] == "grad_norm"]
    for e in readings[3:5]:
        e["norms"]["gat"] = 1e4


def oscillating(parts: dict[str, Any]) -> None:
    for e, row in enumerate(parts["rows"]):
        row["lr"] = 3e-4 if e % 2 == 0 else 1e-4


def overfit(parts: dict[str, Any]) -> None:
    for e, row in enumerate(parts["rows"]):
        row["val_loss"] = 0.47 + 0.005 * max(0, e - 4)  # best at epoch 4, then rising while train falls


def gate_closed(parts: dict[str, Any]) -> None:
    for row in parts["rows"]:
        row["gate_mean"] = 0.01


def rmse_bad(parts: dict[str, Any]) -> None:
    _set_metric(parts, "scale", 0.8)
    _set_metric(parts, "rmse", lambda h: 0.02 * math.sqrt(h) * 1.25)


def nan_stop(parts: dict[str, Any]) -> None:
    parts["events"].append({"event": "non_finite", "step": 321, "message": "non-finite loss nan at step 321"})


def not_started(parts: dict[str, Any]) -> None:
    parts["rows"], parts["summary"] = [], None
    parts["events"] = parts["events"][:1]


def factor_dataset(parts: dict[str, Any], *, flip: bool, seed: int = 0) -> None:
    """A dataset whose features rank the 5-day label one way in training and, with ``flip``, the other way
    on the test segment; the run's start event names the three segments."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2021, 1, 4) + dt.timedelta(days=i) for i in range(160)]
    names = [f"f{k}" for k in range(8)]
    loadings = rng.uniform(0.2, 0.5, len(names)) * rng.choice([-1, 1], len(names))
    features, labels = [], []
    for i, d in enumerate(dates):
        x = rng.standard_normal((40, len(names)))
        sign = -1.0 if flip and i >= 110 else 1.0
        y = sign * x @ loadings + 2.0 * rng.standard_normal(40)
        codes = [f"{s:04d}" for s in range(40)]
        features.append(
            pl.DataFrame(
                {
                    "date": [d] * 40,
                    "code": codes,
                    **dict(zip(names, x.T, strict=True)),
                    "mkt_x": [float(i)] * 40,
                }
            )
        )
        labels.append(pl.DataFrame({"date": [d] * 40, "code": codes, "target_5d": y}))
    parts["tables"] = {"features": pl.concat(features), "labels": pl.concat(labels)}
    parts["manifest"] |= {
        "model_features": [*names, "mkt_x"],
        "features": {"returns": names, "market": ["mkt_x"]},
        "labels": {"raw": ["target_5d"]},
    }
    segments = {"train": (0, 99), "valid": (100, 109), "test": (110, 159)}
    parts["events"][0]["data"] = {
        name: {"first_date": dates[a].isoformat(), "last_date": dates[b].isoformat()}
        for name, (a, b) in segments.items()
    }


def regime_shift(parts: dict[str, Any]) -> None:
    factor_dataset(parts, flip=True)


BROKEN = {
    "no_epochs": not_started,
    "collapse": collapsed,
    "negative_ic": negative_ic,
    "plateau": plateaued,
    "dead_features": dead,
    "dominated_loss": dominated,
    "vanishing_gradients": vanishing,
    "exploding_gradients": exploding,
    "lr_oscillation": oscillating,
    "overfitting": overfit,
    "graph_adds_nothing": gate_closed,
    "rmse_worse_than_naive": rmse_bad,
    "non_finite": nan_stop,
    "regime_change": regime_shift,
}


# ------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------


def test_every_rule_has_a_broken_run():
    assert {r.name for r in RULES} == set(BROKEN)


def test_healthy_run_is_healthy(tmp_path):
    d = diagnose(make_run(tmp_path))
    assert d.status == "healthy", [(f.name, f.evidence) for f in d.findings if f.fired]
    assert fired(d) == set()
    assert len(d.findings) == len(RULES)
    # synthetic: graded on the capture ratio, test RankIC 0.041 / oracle 0.08
    assert d.grade.metric == "capture_5d" and d.grade.level == "target"
    assert d.grade.value == pytest.approx(0.041 / 0.08)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_run_is_named(tmp_path, name):
    d = diagnose(make_run(tmp_path, BROKEN[name]))
    assert name in fired(d), next(f.evidence for f in d.findings if f.name == name)
    assert d.status == name, f"status {d.status}; fired {fired(d)}"
    main = d.main
    assert main.evidence and main.recommendation
    assert main.command in main.recommendation
    if name == "regime_change":  # the fix is not a retrain on the same segment
        assert main.command.startswith("atft rolling --data-path ") and "--warm-start" in main.command
        return
    assert "atft train " in main.command
    # the command carries dotted config overrides (except a rebuild-and-retrain and a plain retry)
    assert re.search(r" [a-z_]+\.[a-z_.]+=\S+", main.command) or name in ("dead_features", "no_epochs")


def test_factor_ics_by_period_in_the_report(tmp_path):
    d = diagnose_run(make_run(tmp_path, regime_shift))
    finding = next(f for f in d.findings if f.name == "regime_change")
    assert re.search(
        r"(\d+) of the \1 features with \|NW t\| ≥ 2 alone on test had the opposite sign", finding.evidence
    )
    assert "--start 2021-04-24 --end 2021-06-12" in finding.command  # the test segment's days
    regime = d.facts.regime
    assert regime.later == "test" and regime.agreement < 0
    assert "mkt_x" not in regime.table["feature"].to_list()  # one value per date: nothing to rank
    assert any("mkt_x" in n for n in regime.notes)
    text = d.report_md.read_text()
    section = text.split("## 10. Factor ICs by period")[1]
    assert "| `f0` |" in section and "RankIC test (t)" in section and "1 feature(s) left out" in section


def test_a_stationary_market_is_no_regime_change(tmp_path):
    d = diagnose(make_run(tmp_path, lambda parts: factor_dataset(parts, flip=False)))
    finding = next(f for f in d.findings if f.name == "regime_change")
    assert not finding.fired and "0 of the" in finding.evidence
    assert d.facts.regime.agreement > 0.5


def test_regime_facts_need_segments_and_tables(tmp_path):
    d = diagnose(make_run(tmp_path))  # a manifest without tables, a start event without segments
    finding = next(f for f in d.findings if f.name == "regime_change")
    assert not finding.fired and "no training segment" in finding.evidence

    def no_tables(parts):
        factor_dataset(parts, flip=True)
        del parts["tables"]

    d = diagnose(make_run(tmp_path / "b", no_tables))
    finding = next(f for f in d.findings if f.name == "regime_change")
    assert not finding.fired and "labels.parquet not found: the dataset is incomplete" in finding.evidence


def test_collapse_evidence_and_fix(tmp_path):
    d = diagnose(make_run(tmp_path, collapsed))
    f = d.main
    assert f.severity == "critical"
    assert "0.010" in f.evidence and "re-initialized the heads 1 time(s)" in f.evidence
    assert "loss.weights.variance_floor=2.0" in f.command and "train.optimizer.lr=0.0001" in f.command


@pytest.mark.parametrize("perturb, rule", [(collapsed, "collapse"), (rmse_bad, "rmse_worse_than_naive")])
def test_size_rules_stand_down_when_the_run_learns_ranks(tmp_path, perturb, rule):
    """A run trained on percentile ranks forecasts ranks: its size cannot be held against raw returns."""
    assert rule in fired(diagnose(make_run(tmp_path / "returns", perturb)))

    def on_ranks(parts):
        perturb(parts)
        parts["config"]["data"]["target"] = "rank"

    d = diagnose(make_run(tmp_path / "ranks", on_ranks))
    finding = next(f for f in d.findings if f.name == rule)
    assert not finding.fired and "data.target=rank" in finding.evidence


def test_negative_ic_fires_only_when_every_horizon_is_negative(tmp_path):
    def one_positive(parts):
        negative_ic(parts)
        parts["summary"]["test_metrics"]["rankic_20d"] = 0.01

    d = diagnose(make_run(tmp_path, one_positive))
    assert "negative_ic" not in fired(d)


def test_plateau_reports_epoch_and_change(tmp_path):
    d = diagnose(make_run(tmp_path, plateaued))
    c = d.facts.curve
    assert c.plateau_epoch == 4 and c.epochs_since_improvement == 9
    assert abs(c.plateau_change) < 1e-4
    assert "overfitting" not in fired(d)
    assert "train.scheduler.name=plateau" in d.main.command


def test_overfitting_advice_stops_at_the_best_epoch_when_it_came_early(tmp_path):
    def overfit_early(parts):
        overfit(parts)
        parts["summary"]["best_epoch"] = 4

    d = diagnose(make_run(tmp_path / "early", overfit_early))
    assert d.status == "overfitting"
    assert "train.max_epochs=5" in d.main.command and "model.dropout" not in d.main.command
    assert "epoch 5 of 8" in d.main.recommendation
    late = diagnose(make_run(tmp_path / "late", overfit))  # the best checkpoint is the last one
    assert (
        "model.dropout=0.3" in late.main.command and "train.optimizer.weight_decay=0.05" in late.main.command
    )


def test_dead_features_are_named(tmp_path):
    d = diagnose(make_run(tmp_path, dead))
    f = d.main
    assert f.severity == "critical"
    assert "mom_20d" in f.evidence and "vol_60d" in f.evidence and "mkt_regime" in f.evidence
    assert f.command.startswith("atft data build --raw ") and "&& atft train " in f.command


def test_dominated_loss_recommends_a_computed_weight(tmp_path):
    d = diagnose(make_run(tmp_path, dominated))
    # weight x k with k = 0.6 * 0.04 / (0.4 * 0.96) = 0.0625: 0.5 -> 0.031
    assert "loss.weights.rankic=0.031" in d.main.command
    # a ranking term that dominates is how the model learns to rank: information, with the measured cost
    assert d.main.severity == "info" and "0.065 to 0.016" in d.main.recommendation

    def huber_dominates(parts):
        for row in parts["rows"]:
            row |= {"gradshare_huber": 0.96, "gradshare_rankic": 0.01, "gradshare_pinball": 0.01,
                    "gradshare_coverage": 0.01, "gradshare_variance_floor": 0.01}  # fmt: skip

    d = diagnose(make_run(tmp_path / "huber", huber_dominates))
    assert d.main.name == "dominated_loss" and d.main.severity == "warning"
    assert (
        "loss.weights.huber=0.063" in d.main.command
    )  # 1.0 x 0.0625 and "0.016" not in d.main.recommendation


def test_rmse_fix_depends_on_what_holds_the_spread(tmp_path):
    d = diagnose(make_run(tmp_path / "low", rmse_bad))
    assert "loss.weights.huber=3.0" in d.main.command  # the floor (0.05) is not what holds the spread

    def high_floor(parts):
        rmse_bad(parts)
        parts["config"]["loss"]["scale_floor"] = 0.5

    d = diagnose(make_run(tmp_path / "high", high_floor))
    assert "loss.scale_floor=0.05" in d.main.command  # IC 0.045, kept above the collapse line 0.05
    assert "expected ~1.252" in d.main.evidence  # sqrt(1 - 2 * 0.8 * 0.045 + 0.64)


def test_unreachable_dataset_is_reported_not_fatal(tmp_path):
    def no_dataset(parts):
        parts["manifest"] = None

    run = make_run(tmp_path, no_dataset)
    d = diagnose_run(run)
    assert d.status == "healthy"
    dead_check = next(f for f in d.findings if f.name == "dead_features")
    assert not dead_check.fired and "not reachable" in dead_check.evidence
    assert "not reachable" in (run / "report.md").read_text()


def test_thresholds_are_configurable(tmp_path):
    run = make_run(tmp_path)
    assert diagnose(run, thresholds={"collapse_scale": 0.5}).status == "collapse"
    assert (
        diagnose(run, thresholds={"minimum_capture": 0.6, "target_capture": 0.7}).grade.level
        == "below minimum"
    )
    with pytest.raises(ValueError, match="unknown doctor threshold"):
        diagnose(run, thresholds={"colapse_scale": 0.5})
    assert set(DEFAULT_THRESHOLDS) >= {"collapse_scale", "minimum_rankic", "minimum_capture", "gate_min_mean"}


def test_old_run_without_summary(tmp_path):
    def old(parts):
        parts["summary"] = None
        parts["manifest"]["source"]["raw_kind"] = "real"

    d = diagnose(make_run(tmp_path, old))
    assert d.status == "healthy"
    assert d.facts.best_epoch == 7  # the monitor's best in metrics.csv
    assert d.facts.valid_source.startswith("metrics.csv") and d.facts.headline_split == "valid"
    assert d.grade.metric == "rankic_5d" and d.grade.level == "target"  # 0.047 on validation
    assert any("summary.json is missing" in n for n in d.facts.notes)


def test_eval_metrics_json_takes_precedence(tmp_path):
    run = make_run(tmp_path)
    (run / "eval").mkdir()
    # the shape `atft evaluate` writes: per-horizon objects, cross-horizon summaries, settings
    evaluation: dict[str, Any] = {
        f"{h}d": {"rankic": -0.02, "ic": -0.02, "scale": 0.06, "decile_mean_label": [0.0] * 10,
                  "oracle_rankic": 0.08, "capture": -0.25}
        for h in HORIZONS
    }  # fmt: skip
    evaluation["ic_decay"] = {"rankic": {f"{h}d": -0.02 for h in HORIZONS}}
    evaluation["settings"] = {"top_k": None, "cost_bps": 5.0, "split": "test"}
    (run / "eval" / "metrics.json").write_text(json.dumps(evaluation))
    d = diagnose(run)
    assert d.facts.test_source == "eval/metrics.json"
    assert d.facts.test["rankic_5d"] == -0.02 and "cost_bps_5d" not in d.facts.test
    assert d.status == "negative_ic"
    assert d.grade.metric == "capture_5d" and d.grade.value == pytest.approx(-0.25)


def test_report_has_all_sections_plots_and_selfcontained_html(tmp_path):
    run = make_run(tmp_path, collapsed)
    d = diagnose_run(run, html=True)
    text = (run / "report.md").read_text()
    for title in SECTION_TITLES:
        assert f"## {title}" in text
    assert "**Status: collapse**" in text and "atft train " in text
    names = {"loss_curves", "val_metrics", "lr_schedule", "loss_composition", "gradient_flow"}
    assert set(d.plots) == names
    for name in names:
        png = run / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(report/{name}.png)" in text
    page = (run / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(names) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page and "http" not in page
    for title in SECTION_TITLES:
        assert title in page


def test_a_folder_without_run_files_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"is not a run folder: it has no metrics.csv, summary.json or config"
    ):
        diagnose(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        diagnose(tmp_path / "missing")


def test_a_missing_or_invalid_config_falls_back_to_the_schema_defaults(tmp_path):
    run = make_run(tmp_path / "missing")
    (run / "config.yaml").unlink()
    d = diagnose(run)
    assert d.status == "healthy" and not d.facts.config_loaded
    assert any("config.yaml is missing" in n for n in d.facts.notes)
    assert any("schema defaults" in n for n in d.facts.notes)
    assert d.facts.horizons == list(HORIZONS)  # from metrics.csv's columns, noted
    assert "--config" not in healthy_recommendation(d.facts)[1]

    run = make_run(tmp_path / "invalid")
    (run / "config.yaml").write_text("model:\n  dropout: 2.0\n")
    d = diagnose(run)
    assert not d.facts.config_loaded
    assert any("not a valid run config" in n for n in d.facts.notes)
    assert d.facts.config.model.dropout == DEFAULTS.model.dropout


def test_the_config_is_read_through_the_schema(tmp_path):
    def sparse(parts):
        parts["config"] = {"data": {"horizons": list(HORIZONS)}}  # every other key at its schema default

    d = diagnose(make_run(tmp_path, sparse))
    assert d.facts.config_loaded and d.facts.config.train.seed == DEFAULTS.train.seed
    assert d.facts.monitor == DEFAULTS.train.early_stopping.monitor
    assert d.thresholds["target_rankic"] == DEFAULTS.eval.grading.target_rankic


def test_a_switched_off_graph_is_not_judged(tmp_path):
    def no_gat(parts):
        gate_closed(parts)
        parts["config"]["model"]["gat"]["enabled"] = False

    d = diagnose(make_run(tmp_path, no_gat))
    graph = next(f for f in d.findings if f.name == "graph_adds_nothing")
    assert not d.facts.graph_enabled and not graph.fired and "switched off" in graph.evidence


def test_a_damaged_summary_is_a_note(tmp_path):
    run = make_run(tmp_path)
    (run / "summary.json").write_text("{not json")
    d = diagnose(run)
    assert any("summary.json is damaged" in n for n in d.facts.notes)
    assert any("summary.json is missing" in n for n in d.facts.notes)
    assert d.facts.valid_source.startswith("metrics.csv")


def test_rules_are_one_table():
    assert len({r.name for r in RULES}) == len(RULES)
    assert all(r.severity in SEVERITIES and callable(r.check) and callable(r.advise) for r in RULES)


# ------------------------------------------------------------------------------------------------------
# the test period's tear sheet (section 9)
# ------------------------------------------------------------------------------------------------------

TEAR_PLOTS = {"test_rankic", "test_deciles", "test_book"}


def write_evaluation(run: Path, days: int = 150, seed: int = 0) -> dict[str, Any]:
    """``atft evaluate``'s eval/per_day.parquet and eval/metrics.json for ``days`` test days, as written."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(days)]
    rankic = {h: rng.normal(0.04, 0.06, days) for h in HORIZONS}
    rows = []
    for h in HORIZONS:
        for i, day in enumerate(dates):
            # a day without a value: the last h days have no label; 20d also misses some mid-period days
            missing = (h != 5 and i >= days - h) or (h == 20 and 70 <= i < 100)
            rows.append({"date": day, "horizon": h, "ic": 0.0, "rankic": None if missing else rankic[h][i]})
    (run / "eval").mkdir(exist_ok=True)
    pl.DataFrame(rows, schema_overrides={"horizon": pl.Int32}).write_parquet(run / "eval" / "per_day.parquet")
    metrics: dict[str, Any] = {
        f"{h}d": {
            "rankic": float(np.mean(rankic[h])),
            "scale": 0.06,
            "sharpe": 1.25 + h,
            "decile_mean_label": [float(x) for x in np.sort(rng.normal(0.0, 0.001 * h, 10))],
        }
        for h in HORIZONS
    }
    metrics["settings"] = {"cost_bps": 5.0, "quantile": 0.2}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return {"dates": dates, "rankic": rankic, "metrics": metrics}


def write_backtest(run: Path, horizon: int = 5, days: int = 150, seed: int = 1) -> np.ndarray:
    """``atft backtest``'s backtest/long_short_<h>d/ (daily.parquet, summary.json); returns the net series."""
    rng = np.random.default_rng(seed)
    net = rng.normal(0.0006, 0.004, days)
    net[0] = -0.01  # a loss on the first day is a drawdown from the starting wealth of 1
    out = run / "backtest" / f"long_short_{horizon}d"
    out.mkdir(parents=True)
    pl.DataFrame(
        {
            "date": [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(days)],
            "gross": net + 0.0002,
            "net": net,
            "turnover": np.full(days, 0.4),
            "cost": np.full(days, 0.0002),
            "n_long": np.full(days, 20),
            "n_short": np.full(days, 20),
        }
    ).write_parquet(out / "daily.parquet")
    record = {
        "split": "test",
        "horizon": horizon,
        "params": {"strategy": "long_short", "quantile": 0.2, "holding_days": horizon, "cost_bps": 5.0},
        "summary": performance_summary(net) | {"mean_turnover": 0.4},
    }
    (out / "summary.json").write_text(json.dumps(record))
    return net


def test_test_period_tear_sheet(tmp_path):
    run = make_run(tmp_path)
    written = write_evaluation(run)
    net = write_backtest(run)
    d = diagnose_run(run, html=True)
    ts = d.facts.tear_sheet
    assert ts.horizon == 5 and ts.window == 63 and ts.notes == []
    assert ts.dates == written["dates"]

    # 1. the daily RankIC and its 63-day rolling mean, against polars
    assert ts.rankic[5] == pytest.approx(list(written["rankic"][5]))
    reference = pl.Series(written["rankic"][5]).rolling_mean(63).to_numpy()
    np.testing.assert_allclose(ts.rolling[5], reference, rtol=1e-12, equal_nan=True)
    assert all(math.isnan(v) for v in ts.rolling[5][:62]) and math.isfinite(ts.rolling[5][62])
    # days without a value: the mean of those present, where at least half the window has one
    with_gaps = pl.Series([None if math.isnan(v) else v for v in ts.rankic[20]], dtype=pl.Float64)
    reference = with_gaps.rolling_mean(63, min_samples=32).to_numpy()
    reference[:62] = np.nan
    np.testing.assert_allclose(ts.rolling[20], reference, rtol=1e-12, equal_nan=True)
    assert np.isnan(ts.rankic[20][80]) and np.isfinite(ts.rolling[20][80])

    # 2. the decile bars are metrics.json's decile_mean_label
    assert ts.deciles == {h: written["metrics"][f"{h}d"]["decile_mean_label"] for h in HORIZONS}

    # 3. the book's cumulative net return and drawdown (the wealth starts at 1, as the summary's max_drawdown)
    wealth = np.cumprod(1.0 + net)
    np.testing.assert_allclose(ts.cumulative, wealth - 1.0, rtol=1e-12)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    np.testing.assert_allclose(ts.drawdown, wealth / peak - 1.0, rtol=1e-12, atol=1e-15)
    assert ts.drawdown[0] == pytest.approx(-0.01)
    assert min(ts.drawdown) == pytest.approx(performance_summary(net)["max_drawdown"])
    assert ts.book == "long_short_5d" and ts.holding_days == 5

    assert TEAR_PLOTS <= set(d.plots)
    text = (run / "report.md").read_text()
    assert "## 9. Test period" in text
    for name in TEAR_PLOTS:
        assert (run / "report" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(report/{name}.png)" in text
    section = text.split("## 9. Test period")[1]
    assert f"| **5d** | {np.mean(written['rankic'][5]):.4f} |" in section
    page = (run / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(d.plots)


def test_the_two_sharpe_ratios_are_labelled_apart(tmp_path):
    run = make_run(tmp_path)
    write_evaluation(run)
    net = write_backtest(run)
    diagnose_run(run)
    text = (run / "report.md").read_text()
    book = f"book Sharpe (5d staggered) {performance_summary(net)['sharpe']:.2f}"
    assert book in text  # the summary's line on the backtest
    assert "| daily L/S Sharpe (test) |" in text and "| 6.25 |" in text  # the evaluation's sharpe_5d
    assert "| book Sharpe (5d staggered) |" in text
    assert "net Sharpe" not in text  # no unlabelled Sharpe left


def test_a_run_without_evaluation_gets_the_note(tmp_path):
    run = make_run(tmp_path)
    d = diagnose_run(run, html=True)
    assert not d.facts.tear_sheet.evaluated and d.facts.tear_sheet.book is None
    assert not TEAR_PLOTS & set(d.plots)
    section = (run / "report.md").read_text().split("## 9. Test period")[1]
    assert f"run `atft evaluate {run}` for the test-period tear sheet" in section
    assert f"`atft backtest {run}`" in section


def test_the_tear_sheet_uses_the_backtest_that_exists_and_survives_damage(tmp_path):
    run = make_run(tmp_path / "other")
    write_evaluation(run)
    write_backtest(run, horizon=10)
    d = diagnose_run(run)
    assert d.facts.tear_sheet.book == "long_short_10d" and "test_book" in d.plots
    assert "book Sharpe (10d staggered)" in (run / "report.md").read_text()

    run = make_run(tmp_path / "none")
    write_evaluation(run)
    d = diagnose_run(run)
    assert {"test_rankic", "test_deciles"} <= set(d.plots) and "test_book" not in d.plots
    assert any(f"`atft backtest {run}`" in n for n in d.facts.tear_sheet.notes)

    run = make_run(tmp_path / "damaged")
    write_evaluation(run)
    (run / "eval" / "per_day.parquet").write_bytes(b"not parquet")
    d = diagnose_run(run)
    assert any("per_day.parquet is damaged" in n for n in d.facts.notes)
    assert "test_deciles" in d.plots and "test_rankic" not in d.plots
