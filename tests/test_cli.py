"""The `atft` command line: help everywhere, the data commands end to end, clean errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from atft.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["data"],
        ["data", "synth"],
        ["data", "import"],
        ["data", "info"],
        ["data", "build"],
        ["data", "splits"],
        ["config"],
        ["config", "show"],
        ["demo"],
    ],
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    # A docstring-derived description, not just the usage line.
    assert len(result.output.strip().splitlines()) > 3


def test_synth_then_info(tmp_path):
    out = tmp_path / "raw"
    r = runner.invoke(
        app, ["data", "synth", "--stocks", "60", "--days", "300", "--seed", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["codes"] == 60 and manifest["dates"] == 300 and manifest["source"]["params"]["seed"] == 3
    r = runner.invoke(app, ["data", "info", str(out)])
    assert r.exit_code == 0
    assert "synthetic" in r.output and "oracle" in r.output.lower()


def test_synth_refuses_to_overwrite_without_flag(tmp_path):
    args = ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(tmp_path / "raw")]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "already exists" in r.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_bad_synth_parameter_is_a_clean_error(tmp_path):
    r = runner.invoke(app, ["data", "synth", "--stocks", "3", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "n_stocks" in r.output
    assert isinstance(r.exception, SystemExit)  # a handled error, not an uncaught exception


def test_info_on_a_folder_that_is_not_a_store(tmp_path):
    r = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert r.exit_code == 2 and "manifest.json" in r.output


def test_demo_writes_the_synthetic_market(tmp_path):
    r = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--stocks", "30", "--days", "1100", "--epochs", "1"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo" / "raw" / "manifest.json").is_file()
    assert (tmp_path / "demo" / "dataset" / "features.parquet").is_file()
    run = tmp_path / "demo" / "run"
    for written in ("summary.json", "eval/metrics.json", "backtest/long_short_5d/summary.json", "report.md"):
        assert (run / written).is_file(), written
    assert "Test period" in r.output and "capture" in r.output and "Diagnosis" in r.output
    assert "Oracle" in r.output and "guard passed" in r.output
    for split in ("train", "valid", "test"):
        assert split in r.output


def test_demo_too_short_for_the_splits_is_a_clean_error(tmp_path):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--stocks", "30", "--days", "300"])
    assert r.exit_code == 2
    assert "trading days" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--signal-strength", "inf", "signal_strength"),
        ("--signal-strength", "-1", "signal_strength"),
        ("--seed", "-1", "seed"),
    ],
)
def test_synth_rejects_out_of_range_values_by_name(tmp_path, option, value, named):
    r = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), option, value])
    assert r.exit_code == 2 and named in r.output
    assert not (tmp_path / "x").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_store(tmp_path):
    victim = tmp_path / "work"
    victim.mkdir()
    (victim / "thesis.txt").write_text("mine")
    for args in (
        ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(victim), "--overwrite"],
        ["demo", "--stocks", "20", "--days", "200", "--out", str(tmp_path)],
    ):
        if args[0] == "demo":
            (tmp_path / "raw").mkdir()
            (tmp_path / "raw" / "thesis.txt").write_text("mine")
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "refusing to replace" in r.output
    assert (victim / "thesis.txt").read_text() == "mine"
    assert (tmp_path / "raw" / "thesis.txt").read_text() == "mine"


def test_paths_and_data_with_brackets_print_literally(tmp_path):
    # Rich markup must never interpret user data: "[/x]" would crash it, "[red]" would vanish.
    out = tmp_path / "[red]run[/x]"
    r = runner.invoke(app, ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "[red]run[/x]" in r.output.replace("\n", "")
    r = runner.invoke(app, ["data", "info", str(tmp_path / "[/bold]missing")])
    assert r.exit_code == 2 and "[/bold]missing" in r.output
    assert isinstance(r.exception, SystemExit)


def test_info_renders_hand_edited_manifest_entries(tmp_path):
    out = tmp_path / "raw"
    assert (
        runner.invoke(app, ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(out)]).exit_code
        == 0
    )
    mf = out / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest.update(
        checks=["[/oops]"],
        details={
            "extreme_moves": ["x", {"code": "[b]", "return": "big"}],
            "codes_without_sector": [1, "[/i]"],
        },
        oracle_rank_ic={"5d": "n/a"},
        rows="lots",
    )
    mf.write_text(json.dumps(manifest))
    r = runner.invoke(app, ["data", "info", str(out)])
    assert r.exit_code == 0, r.output
    assert "[/oops]" in r.output and "n/a" in r.output and "lots" in r.output and "[/i]" in r.output


def test_info_on_a_malformed_manifest_is_a_clean_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"tables": {"prices": [1]}}')
    r = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert r.exit_code == 2 and "tables.prices" in r.output
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{}")
    r = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert r.exit_code == 2 and "UTF-8" in r.output


def test_os_errors_are_clean_errors(tmp_path):
    (tmp_path / "a_file").write_text("x")
    r = runner.invoke(
        app, ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(tmp_path / "a_file" / "raw")]
    )
    assert r.exit_code == 2 and "a_file" in r.output
    assert isinstance(r.exception, SystemExit)


def test_synth_refuses_a_symlinked_out(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    r = runner.invoke(
        app,
        ["data", "synth", "--stocks", "20", "--days", "200", "--out", str(tmp_path / "link"), "--overwrite"],
    )
    assert r.exit_code == 2 and "symbolic link" in r.output
