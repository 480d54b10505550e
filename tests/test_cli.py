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
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--stocks", "40", "--days", "250"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "demo" / "raw" / "manifest.json").is_file()
    assert "Oracle" in r.output


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
