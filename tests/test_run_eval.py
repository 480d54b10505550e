"""``atft evaluate``, ``atft backtest`` and ``atft diagnose`` on real run folders: the tiny synthetic market
(oracle and capture included) and the real JP sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from atft.cli.app import app
from atft.evaluation.backtest import backtest
from atft.evaluation.evaluate import evaluate_predictions
from atft.features.dataset import DatasetFolder

runner = CliRunner()

TINY = [
    "data.split.train_days=100",
    "data.split.valid_days=40",
    "data.split.test_days=40",
    "data.min_stocks_per_day=10",
    "model.hidden_size=16",
    "model.gat.heads=2",
    "model.temporal.attention_heads=2",
    "train.diagnostics.grad_monitor_every=5",
]


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("eval_runs")
    cli("train", "--data-path", str(tiny_dataset), "--max-epochs", "2", "--run-name", "r",
        *TINY, f"train.runs_dir={runs}")  # fmt: skip
    return runs / "r"


def test_evaluate_writes_the_files_and_scores_what_training_forecast(tiny_run, tiny_dataset):
    out = cli("evaluate", str(tiny_run))
    assert "capture" in out and "RankIC" in out
    eval_dir = tiny_run / "eval"
    preds = pl.read_parquet(eval_dir / "predictions.parquet")
    assert {"date", "code", "horizon", "prediction", "label", "q05", "q95"} <= set(preds.columns)
    # the same best checkpoint forecast the test segment at the end of training
    trained = pl.read_parquet(tiny_run / "predictions" / "test.parquet")
    joined = preds.join(trained, on=["date", "code", "horizon"], suffix="_train")
    assert joined.height == preds.height == trained.height
    assert (joined["prediction"] - joined["prediction_train"]).abs().max() < 1e-5
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    oracle = pl.read_parquet(tiny_dataset / "oracle.parquet")
    expected = evaluate_predictions(preds, oracle=oracle).metrics
    for h in ("1d", "5d", "10d", "20d"):
        assert metrics[h]["rankic"] == pytest.approx(expected[h]["rankic"], abs=1e-12)
        assert metrics[h]["capture"] == pytest.approx(expected[h]["rankic"] / expected[h]["oracle_rankic"])
    assert metrics["settings"]["split"] == "test"
    per_day = pl.read_parquet(eval_dir / "per_day.parquet")
    assert set(per_day["horizon"].unique().to_list()) == {1, 5, 10, 20}

    cli("evaluate", str(tiny_run), "--split", "valid")
    valid = json.loads((eval_dir / "valid" / "metrics.json").read_text())
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert valid["5d"]["rankic"] == pytest.approx(summary["valid_metrics"]["rankic_5d"], abs=1e-5)


def test_backtest_trades_the_runs_forecasts(tiny_run, tiny_dataset):
    cli("backtest", str(tiny_run), "--horizon", "5", "--top-k", "5", "--cost-bps", "10")
    out_dir = tiny_run / "backtest" / "long_short_5d"
    record = json.loads((out_dir / "summary.json").read_text())
    assert record["params"]["holding_days"] == 5 and record["params"]["cost_bps"] == 10
    preds = pl.read_parquet(tiny_run / "predictions" / "test.parquet")
    signals = preds.filter(pl.col("horizon") == 5).select("date", "code", "prediction")
    direct = backtest(
        signals, DatasetFolder(tiny_dataset).daily_returns(), top_k=5, holding_days=5, cost_bps=10
    )
    daily = pl.read_parquet(out_dir / "daily.parquet")
    assert daily.equals(direct.daily)
    assert record["summary"]["sharpe"] == pytest.approx(direct.summary["sharpe"])

    cli("backtest", str(tiny_run), "--strategy", "long_only", "--horizon", "1", "--quantile", "0.2")
    long_only = json.loads((tiny_run / "backtest" / "long_only_1d" / "summary.json").read_text())
    assert long_only["params"]["holding_days"] == 1
    assert "excess_sharpe" in long_only["summary"]


def test_diagnose_writes_the_report(tiny_run):
    out = cli("diagnose", str(tiny_run), "--html")
    assert "Status:" in out and "Grade:" in out
    report = (tiny_run / "report.md").read_text()
    assert "## 1. Executive summary" in report and "oracle" in report.lower()
    assert (tiny_run / "report.html").is_file() and list((tiny_run / "report").glob("*.png"))


def test_bad_run_folders_and_options_get_clear_errors(tiny_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code != 0 and "is not a run folder" in result.output
    result = runner.invoke(app, ["evaluate", str(tiny_run), "--split", "holdout"])
    assert result.exit_code != 0 and "--split" in result.output
    result = runner.invoke(app, ["backtest", str(tiny_run), "--horizon", "3"])
    assert result.exit_code != 0 and "horizons [1, 5, 10, 20]" in result.output
    result = runner.invoke(app, ["diagnose", str(tmp_path)])
    assert result.exit_code != 0 and "metrics.csv" in result.output
    result = runner.invoke(app, ["backtest", str(tiny_run), "--holding-days", "0"])
    assert result.exit_code != 0 and "holding_days" in result.output


def test_a_run_that_died_before_its_first_epoch_is_still_diagnosed(tiny_run, tmp_path):
    dead = tmp_path / "dead"
    dead.mkdir()
    for name in ("config.yaml", "run.json"):
        (dead / name).write_text((tiny_run / name).read_text())
    out = cli("diagnose", str(dead))
    assert "no_epochs" in out and (dead / "report.md").is_file()


def test_evaluation_refuses_a_dataset_rebuilt_with_other_features(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("eval", "backtest", "report*"))
    data_path = json.loads((copy / "run.json").read_text())["data_path"]
    rebuilt = tmp_path / "dataset"
    shutil.copytree(data_path, rebuilt)
    manifest = json.loads((rebuilt / "manifest.json").read_text())
    manifest["model_features"] = manifest["model_features"][::-1]  # same features, another order
    (rebuilt / "manifest.json").write_text(json.dumps(manifest))
    (copy / "run.json").write_text(json.dumps({"data_path": str(rebuilt)}))
    result = runner.invoke(app, ["evaluate", str(copy)])
    assert result.exit_code != 0 and "was the dataset rebuilt" in result.output


@pytest.mark.real_data
@pytest.mark.slow
def test_the_real_jp_run_is_evaluated_backtested_and_diagnosed(real_dataset, tmp_path):
    cli("train", "--data-path", str(real_dataset), "--max-epochs", "2", "--run-name", "jp",
        "model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2",
        "data.split.window=sliding", "data.split.train_days=150", "data.split.valid_days=80",
        "data.split.test_days=80", f"train.runs_dir={tmp_path / 'runs'}")  # fmt: skip
    run_dir = tmp_path / "runs" / "jp"
    cli("evaluate", str(run_dir))
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert "oracle_rankic" not in metrics["5d"]  # a real market has no oracle
    assert metrics["5d"]["n_days"] > 20 and math.isfinite(metrics["5d"]["rankic"])
    cli("backtest", str(run_dir), "--horizon", "5")
    record = json.loads((run_dir / "backtest" / "long_short_5d" / "summary.json").read_text())
    assert record["summary"]["n_days"] > 20
    cli("diagnose", str(run_dir))
    report = (run_dir / "report.md").read_text()
    assert "## 7." in report and "## 8." in report
    assert "guard passed" in report  # the real dataset was reached and its guard read


def test_scoring_the_training_forecasts_gives_what_evaluate_gives(tiny_run, tmp_path):
    import shutil

    from atft.workflow.evaluate import evaluate_run, score_training_forecasts

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("eval", "backtest", "report*"))
    fresh, _ = evaluate_run(copy, say=lambda s: None)
    scored, out = score_training_forecasts(copy)
    assert out == copy / "eval" and (out / "metrics.json").is_file()
    for h in ("1d", "5d", "10d", "20d"):
        assert scored.metrics[h]["rankic"] == pytest.approx(fresh.metrics[h]["rankic"], abs=1e-4)
        assert scored.metrics[h]["capture"] == pytest.approx(fresh.metrics[h]["capture"], abs=1e-3)
