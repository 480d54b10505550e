"""The owners of the dataset and run folders: a damaged file is one line naming it, a run that never
checkpointed can be started again, Ctrl-C exits 130, and --resume refuses what it cannot continue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from test_training import TINY, tiny_cfg
from typer.testing import CliRunner

from atft.cli.app import app
from atft.features.dataset import DatasetError, DatasetFolder
from atft.training.module import ForecastModule
from atft.training.run_folder import RunFolder, RunFolderError
from atft.workflow.train import new_run_dir, resume_config, train_run

runner = CliRunner()
ONE_EPOCH = [*TINY, "train.scheduler.warmup_epochs=0", "train.max_epochs=1"]  # TINY sets a 1-epoch warmup


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def copy_dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, out)
    return out


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train_run(
        tiny_cfg("train.scheduler.warmup_epochs=0", epochs=1),
        tiny_dataset,
        run_dir,
        say=lambda s: None,
        progress_bar=False,
    )
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


# ---- damaged files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["features", "labels", "stocks"])
def test_a_damaged_dataset_table_is_one_line_naming_it(tiny_dataset, tmp_path, table):
    dataset = copy_dataset(tiny_dataset, tmp_path)
    truncate(dataset / f"{table}.parquet")
    with pytest.raises(DatasetError, match=rf"{table}\.parquet is damaged .*atft data build") as e:
        DatasetFolder(dataset).read(table)
    assert "\n" not in str(e.value)


def test_train_on_a_truncated_features_file_names_it(tiny_dataset, tmp_path):
    dataset = copy_dataset(tiny_dataset, tmp_path)
    truncate(dataset / "features.parquet")
    result = runner.invoke(
        app, ["train", "--data-path", str(dataset), "--run-name", "r", *TINY, f"train.runs_dir={tmp_path}"]
    )
    assert result.exit_code == 2, result.output
    assert "features.parquet is damaged" in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "features.parquet" in errors[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_evaluate_with_a_damaged_checkpoint_names_it(finished_run, tmp_path, damage):
    run_dir = copy_run(finished_run, tmp_path)
    best = run_dir / "checkpoints" / "best.ckpt"
    if damage == "garbage":
        best.write_bytes(b"\x80\x04 not a checkpoint at all" * 40)
    else:
        truncate(best, 0.6)
    result = runner.invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "best.ckpt is damaged" in result.output and "last.ckpt" in result.output
    assert "Invalid argument" not in result.output and "Traceback" not in result.output


def test_a_damaged_json_or_metrics_file_is_one_line(finished_run, tmp_path):
    folder = RunFolder(copy_run(finished_run, tmp_path))
    folder.summary_file.write_text('{"best_epoch": ')
    with pytest.raises(RunFolderError, match=r"summary.json is damaged"):
        folder.read_summary()
    folder.info_file.write_text("not json")
    with pytest.raises(RunFolderError, match=r"run.json is damaged"):
        folder.data_path()


# ---- a run that never checkpointed ---------------------------------------------------------------------------


def test_a_run_that_failed_before_its_first_checkpoint_can_start_again(tiny_dataset, tmp_path):
    args = ["train", "--run-name", "r", *ONE_EPOCH, f"train.runs_dir={tmp_path}"]
    wrong = runner.invoke(app, [*args, "--data-path", str(tmp_path / "nope")])
    assert wrong.exit_code == 2 and "nope" in wrong.output
    assert (tmp_path / "r" / "config.yaml").is_file()  # the folder was started...
    assert new_run_dir(tmp_path, "r") == tmp_path / "r"  # ...but holds nothing worth keeping
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "r")])
    assert resumed.exit_code == 2 and "stopped before its first checkpoint" in resumed.output
    again = runner.invoke(app, [*args, "--data-path", str(tiny_dataset)])
    assert again.exit_code == 0, again.output
    with pytest.raises(RunFolderError, match="already holds a run"):
        new_run_dir(tmp_path, "r")


def test_ctrl_c_in_the_first_epoch_exits_130_and_leaves_a_reusable_folder(
    tiny_dataset, tmp_path, monkeypatch
):
    def interrupt(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(ForecastModule, "training_step", interrupt)
    args = [
        "train",
        "--data-path",
        str(tiny_dataset),
        "--run-name",
        "r",
        *ONE_EPOCH,
        f"train.runs_dir={tmp_path}",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output
    assert new_run_dir(tmp_path, "r") == tmp_path / "r"


# ---- resume ------------------------------------------------------------------------------------------------


def test_resume_with_a_truncated_last_checkpoint_fails_without_logging_a_resume(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "summary.json").unlink()  # as if killed before the end
    truncate(run_dir / "checkpoints" / "last.ckpt")
    log_before = (run_dir / "train.log").read_text()
    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "last.ckpt is damaged" in result.output
    assert (run_dir / "train.log").read_text() == log_before
    assert "Resumed from" not in log_before


def test_resume_on_a_finished_run_says_it_is_finished(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2
    assert "already finished" in result.output and "--max-epochs" in result.output
    cfg, data_path = resume_config(run_dir, max_epochs=3)  # extending it is allowed
    assert cfg.train.max_epochs == 3 and RunFolder(run_dir).read_config().train.max_epochs == 3
    assert data_path.is_dir()


# ---- an empty training segment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.min_stocks_per_day=100000", "data.min_stocks_per_day=100000"),
        ("data.lookback=400", "data.lookback=400"),
    ],
)
def test_an_empty_training_segment_names_its_cause(tiny_dataset, tmp_path, override, expected):
    with pytest.raises(ValueError, match="the train segment serves no trading day") as e:
        train_run(tiny_cfg(override), tiny_dataset, tmp_path / "r", say=lambda s: None, progress_bar=False)
    assert expected in str(e.value) and "label std" not in str(e.value)


# ---- the owner's layout ------------------------------------------------------------------------------------------


def test_the_run_folder_names_every_file_once(finished_run):
    folder = RunFolder(finished_run)
    assert folder.is_run() and folder.is_finished() and folder.has_checkpoint()
    assert folder.read_config().train.max_epochs == 1
    assert folder.read_metrics()["epoch"].to_list() == [0.0]
    events, bad = folder.read_events()
    assert bad == 0 and events[0]["event"] == "start"
    assert folder.selected_checkpoint() == folder.best_checkpoint
    assert folder.checkpoint_epoch(folder.best_checkpoint) == 0
    assert folder.read_predictions("test").equals(
        pl.read_parquet(finished_run / "predictions" / "test.parquet")
    )
    assert folder.eval_dir("valid") == finished_run / "eval" / "valid"
    with pytest.raises(RunFolderError, match="--split must be one of"):
        folder.eval_dir("tset")
    assert isinstance(folder.load_checkpoint(folder.last_checkpoint)["state_dict"], dict)
    assert torch.load(folder.last_checkpoint, map_location="cpu", weights_only=False)["epoch"] == 0


# ---- every fold ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_with_several_folds_trains_and_reports_every_fold(tiny_dataset, tmp_path):
    args = ["train", "--data-path", str(tiny_dataset), "--run-name", "cv", *ONE_EPOCH]
    result = runner.invoke(app, [*args, f"train.runs_dir={tmp_path}", "data.split.n_folds=2"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert record["n_folds"] == 2 and len(record["folds"]) == 2
    tests = [RunFolder(tmp_path / "cv" / f"fold_{k}").read_summary()["split"]["test"] for k in (0, 1)]
    assert tests[0][1] < tests[1][0]  # fold 0 is scored on an earlier block than fold 1
    assert RunFolder(tmp_path / "cv" / "fold_0").fold() == 0
    r5 = [s["test_metrics"]["rankic_5d"] for s in record["folds"]]
    assert record["mean_test_metrics"]["rankic_5d"] == pytest.approx(sum(r5) / 2)
    assert "mean" in result.output and "fold_<k>" in result.output
    again = runner.invoke(app, [*args, f"train.runs_dir={tmp_path}", "data.split.n_folds=2"])
    assert again.exit_code == 2 and "already holds a run" in again.output
