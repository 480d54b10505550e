"""``atft compare``: the same rows for every model, the table, the paired test, resume, bad input."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import polars as pl
import pytest
from test_training import TINY
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import config_changes, load_config
from atft.evaluation.ensemble import average_forecasts
from atft.evaluation.metrics import mean_daily_rank_ic
from atft.evaluation.stats import paired_daily
from atft.training.run_folder import RunFolder
from atft.workflow.compare import _deep_config, compare, parse_models, seed_counts, summarize
from atft.workflow.compare_folder import CompareFolder, CompareFolderError

runner = CliRunner()
ONE_EPOCH = [*TINY, "train.scheduler.warmup_epochs=0", "train.max_epochs=1"]


@pytest.fixture(scope="module")
def compared(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = compare(
        tiny_dataset, out, ["atft", "ridge", "momentum", "reversal", "random"], seeds=2, preset=None,
        overrides=ONE_EPOCH, say=lambda s: None,
    )  # fmt: skip
    return out, result


def test_every_model_is_scored_on_the_same_rows(compared):
    out, result = compared
    folder = CompareFolder(out)
    keys = [folder.read_keys(r) for r in result.units]
    assert len(result.units) == 2 + 1 + 1 + 1 + 2  # atft and random have two seeds each
    assert all(k.equals(keys[0]) for k in keys) and keys[0].height > 0
    assert keys[0].select("date", "code", "horizon").is_duplicated().sum() == 0


def test_the_table_has_one_row_per_model_with_the_seed_spread(compared):
    out, result = compared
    rows = {row["model"]: row for row in result.rows}
    assert list(rows) == ["atft", "ridge", "momentum", "reversal", "random"]
    assert rows["atft"]["seeds"] == 2 and rows["ridge"]["seeds"] == 1
    atft = [r for r in result.units if r.model == "atft"]
    values = [r.metrics["5d"]["rankic"] for r in atft]
    assert rows["atft"]["rankic_5d"] == pytest.approx(np.mean(values))
    assert rows["atft"]["rankic_5d_std"] == pytest.approx(np.std(values, ddof=1))
    assert np.isnan(rows["ridge"]["rankic_5d_std"])  # one seed: no spread
    assert rows["momentum"]["rankic_5d"] == pytest.approx(-rows["reversal"]["rankic_5d"], abs=0.2)  # sanity
    for name in ("compare.md", "compare.csv", "compare.json", "cumulative_net.png", "rankic.png"):
        assert (out / name).is_file(), name
    text = (out / "compare.md").read_text()
    assert "Paired tests: atft against each model" in text and "book Sharpe" in text
    csv = pl.read_csv(out / "compare.csv")
    assert csv["model"].to_list() == list(rows)


def test_the_paired_test_is_the_daily_rankic_difference(compared):
    out, result = compared
    folder = CompareFolder(out)

    def daily(model):
        frames = [folder.read_per_day(r) for r in result.units if r.model == model]
        return pl.concat(frames).group_by("date", "horizon").agg(pl.col("rankic").mean())

    a, b = daily("atft"), daily("ridge")
    got = next(p for p in result.paired if p["against"] == "ridge" and p["horizon"] == 5)
    want = paired_daily(a.filter(pl.col("horizon") == 5), b.filter(pl.col("horizon") == 5), horizon=5)
    assert got["mean_diff"] == pytest.approx(want["mean_diff"]) and got["nw_tstat"] == pytest.approx(
        want["nw_tstat"]
    )
    assert got["lags"] == 4


def test_compare_resumes_from_the_finished_units(compared, tiny_dataset):
    out, result = compared
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")}
    again = compare(tiny_dataset, out, ["atft", "ridge", "momentum", "reversal", "random"], seeds=2, preset=None,
                    overrides=ONE_EPOCH, say=lambda s: None)  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")} == stamps
    assert again.rows == result.rows or json.dumps(again.rows, default=str) == json.dumps(
        result.rows, default=str
    )


def test_compare_refuses_bad_input(compared, tiny_dataset, tmp_path):
    out, _ = compared
    with pytest.raises(ValueError, match="unknown model.*'xgb'.*known: atft"):
        parse_models("atft,xgb")
    with pytest.raises(ValueError, match="twice"):
        parse_models("ridge,ridge")
    with pytest.raises(CompareFolderError, match="other settings.*overrides"):
        compare(
            tiny_dataset, out, ["ridge"], seeds=2, preset=None, overrides=[*ONE_EPOCH, "eval.cost_bps=20"]
        )
    with pytest.raises(ValueError, match="seed count after ':'"):
        seed_counts("atft:x,ridge", 3)
    assert seed_counts("atft:1,lgbm,ridge", 3) == {"atft": 1, "lgbm": 3, "ridge": 1}
    result = runner.invoke(app, ["compare", "--data-path", str(tiny_dataset), "--models", "ridge,nope",
                                 "--out", str(tmp_path / "c")])  # fmt: skip
    assert result.exit_code == 2 and "unknown model" in result.output


def test_validation_is_scored_for_every_unit_and_picks_the_rivals(compared, tiny_dataset):
    out, result = compared
    folder = CompareFolder(out)
    for record in (r for r in result.units if r.model == "atft"):
        valid = RunFolder(folder.run_dir("atft", record.seed, 0)).read_predictions("valid")
        want = mean_daily_rank_ic(valid.filter(pl.col("horizon") == 5), "prediction", "label")
        assert record.valid["5d"]["rankic"] == pytest.approx(want)
    rows = {r["model"]: r for r in result.rows}
    assert all(np.isfinite(rows[m]["valid_rankic_5d"]) for m in rows)
    text = (out / "compare.md").read_text()
    best_rule = max(("momentum", "reversal"), key=lambda m: rows[m]["valid_rankic_5d"])
    assert re.search(rf"Chosen on validation .*(rule|model and rule) \*\*{best_rule}\*\*", text)
    assert "valid RankIC 5d" in text
    # a unit written before validation was recorded gets it once, and keeps its other files
    unit = out / "units" / "ridge-s0-f0"
    body = json.loads((unit / "unit.json").read_text())
    before = body.pop("valid")
    (unit / "unit.json").write_text(json.dumps(body))
    stamp = (unit / "per_day.parquet").stat().st_mtime_ns
    compare(tiny_dataset, out, ["atft", "ridge", "momentum", "reversal", "random"], seeds=2, preset=None,
            overrides=ONE_EPOCH, say=lambda s: None)  # fmt: skip
    after = json.loads((unit / "unit.json").read_text())["valid"]
    assert {h: pytest.approx(v) for h, v in after.items()} == before
    assert (unit / "per_day.parquet").stat().st_mtime_ns == stamp


def test_a_changed_preset_is_not_mixed_with_old_units(compared, tiny_dataset, tmp_path):
    out, _ = compared
    preset = tmp_path / "edited.yaml"  # a preset file that changed since the units were trained
    preset.write_text("model:\n  dropout: 0.35\n")
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    settings = json.loads((copy / "settings.json").read_text())
    settings["preset"] = str(preset)
    (copy / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(
        CompareFolderError, match=r"atft-s0-f0 was trained with another config.*model.dropout 0.1 -> 0.35"
    ):
        compare(tiny_dataset, copy, ["atft", "ridge"], seeds=2, preset=preset, overrides=ONE_EPOCH,
                say=lambda s: None)  # fmt: skip


def test_summarize_averages_folds_within_a_seed_first():
    from atft.workflow.compare_folder import UnitRecord

    def unit(seed, fold, r):
        return UnitRecord("m", seed, fold, {"5d": {"rankic": r}}, {}, 1.0, 0, 0.0)

    rows = summarize([unit(0, 0, 0.1), unit(0, 1, 0.3), unit(1, 0, 0.0), unit(1, 1, 0.2)], ["m"], [5])
    assert rows[0]["rankic_5d"] == pytest.approx(0.15)  # seed means 0.2 and 0.1
    assert rows[0]["rankic_5d_std"] == pytest.approx(np.std([0.2, 0.1], ddof=1))


def test_the_seed_ensemble_averages_the_runs_it_already_has(compared, tiny_dataset):
    out, first = compared
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")}
    result = compare(tiny_dataset, out, "atft,atft_ens,ridge", seeds=2, preset=None, overrides=ONE_EPOCH,
                     say=lambda s: None)  # fmt: skip
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp  # the members were not trained again
    rows = {r["model"]: r for r in result.rows}
    assert list(rows) == ["atft", "atft_ens", "ridge"]
    members = [r for r in result.units if r.model == "atft"]
    ens = next(r for r in result.units if r.model == "atft_ens")
    assert ens.seconds == pytest.approx(sum(m.seconds for m in members), abs=0.02)
    assert ens.parameters == sum(m.parameters for m in members)
    folder = CompareFolder(out)
    preds = average_forecasts(
        [RunFolder(folder.run_dir("atft", m.seed, 0)).read_predictions("test") for m in members]
    )
    want = mean_daily_rank_ic(preds.filter(pl.col("horizon") == 5), "prediction", "label")
    assert ens.metrics["5d"]["rankic"] == pytest.approx(want)
    assert any(p["against"] == "atft_ens" for p in result.paired)
    with pytest.raises(ValueError, match="atft_ens: it averages the seeds of atft"):
        parse_models("ridge,atft_ens")
    with pytest.raises(ValueError, match="needs it with 2 or more seeds"):
        compare(tiny_dataset, out, "atft:1,atft_ens", seeds=2, preset=None, overrides=ONE_EPOCH)


def test_a_comparison_grows_with_new_models_and_reuses_its_units(compared, tiny_dataset):
    out, _ = compared
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")}
    grown = compare(tiny_dataset, out, "atft:1,ridge,ridge_graph", seeds=2, preset=None, overrides=ONE_EPOCH,
                    say=lambda s: None)  # fmt: skip
    assert [r["model"] for r in grown.rows] == ["atft", "ridge", "ridge_graph"]
    assert grown.rows[0]["seeds"] == 1
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp  # nothing finished was redone
    assert CompareFolder(out).settings()["seeds"] == {"atft": 1, "ridge": 1, "ridge_graph": 1}


def test_a_deep_model_trains_with_its_own_preset_on_the_default_one():
    """On the default preset APEX-Ranker's units use configs/apex.yaml (its ranking objective), as documented;
    a preset given explicitly applies to every model."""
    cfg = _deep_config(load_config("cpu").cfg, "cpu", ["train.max_epochs=3"], "apex", 1)
    own = load_config("apex", ["train.max_epochs=3", "model.name=apex", f"train.seed={cfg.train.seed}"]).cfg
    assert config_changes(cfg, own) == []
    assert cfg.loss.listnet.enabled and cfg.model.head.variant == "apex" and cfg.train.seed == 43
    atft = _deep_config(load_config("cpu").cfg, "cpu", [], "atft", 0)
    assert not atft.loss.listnet.enabled and atft.model.name == "atft_gat_fan"
    explicit = _deep_config(load_config("cpu").cfg, "production", [], "apex", 0)
    assert not explicit.loss.listnet.enabled  # an explicit preset is not replaced
