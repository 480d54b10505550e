"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from atft.cli.app import app

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jp_large_caps"


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory) -> Path:
    if not (SAMPLE / "prices.parquet").is_file():
        pytest.skip(f"real JP sample not found at {SAMPLE}; it lives in ../shared/data beside the repo")
    root = tmp_path_factory.mktemp("real_build")
    imported = runner.invoke(
        app,
        ["data", "import", "--prices", str(SAMPLE / "prices.parquet"), "--index", str(SAMPLE / "index_n225.parquet"),
         "--listed-info", str(SAMPLE / "listed_info.csv"), "--out", str(root / "raw")],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    built = runner.invoke(app, ["data", "build", "--raw", str(root / "raw"), "--out", str(root / "dataset")])
    assert built.exit_code == 0, built.output
    return root / "dataset"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 60-stock, 420-day synthetic market, built: small enough that a run on it takes seconds."""
    root = tmp_path_factory.mktemp("tiny_market")
    synth = runner.invoke(
        app, ["data", "synth", "--out", str(root / "raw"), "--stocks", "60", "--days", "420", "--seed", "3"]
    )
    assert synth.exit_code == 0, synth.output
    built = runner.invoke(app, ["data", "build", "--raw", str(root / "raw"), "--out", str(root / "dataset")])
    assert built.exit_code == 0, built.output
    return root / "dataset"
