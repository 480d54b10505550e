"""``atft experiment``: plans, decision rules, the winner by validation, resume, and a search blind to the test days."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
import torch
from test_training import TINY
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.data.splits import splits_from_config
from atft.features.dataset import DatasetFolder
from atft.training import datamodule
from atft.training.run_folder import RunFolder
from atft.workflow import experiment as ex

runner = CliRunner()
BASE = [*TINY, "train.scheduler.warmup_epochs=0", "train.max_epochs=1"]
# Smaller still, for the tests that really train: short segments, a 5-day window, no graph.
FAST = [
    *BASE,
    "data.lookback=5",
    "data.split.window=sliding",
    "data.split.train_days=30",
    "data.split.valid_days=20",
    "data.split.test_days=20",
    "model.graph.mode=none",
]


def write_plan(path: Path, text: str, base: list[str] = BASE) -> Path:
    lines = "\n".join(f"  - {token}" for token in base)
    path.write_text(text.replace("BASE", f"base:\n{lines}"), encoding="utf-8")
    return path


# ---- the plan ---------------------------------------------------------------------------------------------


def plan_error(tmp_path: Path, text: str) -> str:
    path = write_plan(tmp_path / "plan.yaml", text)
    with pytest.raises(ex.PlanError) as caught:
        ex.resolve_configs(ex.load_plan(path))
    message = str(caught.value)
    assert str(path) in message, message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: p\nBASE\nvariants:\n  - name: a\n    overides: {model.hidden_size: 16}\n",
         ["variant 'a'", "'overides'", "allowed: name, overrides, continue_if, after"]),
        ("name: p\nBASE\nvariant:\n  - name: a\n", ["'variant'", "allowed: name, base, variants"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    continue_if: rankic_5d > 0.02\n",
         ["variant 'a'", "'rankic_5d > 0.02' is not a rule", "val/rankic_5d > 0.02"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    continue_if: val/rankic_5d => 0.02\n",
         ["variant 'a'", "is not a rule"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n  - name: b\n    continue_if: val/rankic_7d > 0\n",
         ["variant 'b'", "'val/rankic_7d'", "<h> one of 1, 5, 10, 20"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n  - name: a\n", ["variant 'a'", "used twice"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n  - name: b\n    overrides: {model.hidden_sise: 16}\n",
         ["variant 'b'", "model.hidden_sise"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    after: b\n  - name: b\n",
         ["variant 'a'", "after 'b' names no earlier variant"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    overrides: {SHARPE_WEIGHT: 0.5, loss.weights.sharpe: 0.1}\n",
         ["variant 'a'", "'loss.weights.sharpe'", "'SHARPE_WEIGHT' already sets"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    overrides: {model.hidden_size: 16, model.hidden_size: 24}\n",
         ["'model.hidden_size' is written twice"]),
        ("name: p\nBASE\nvariants:\n  - name: a\n    overrides: {data.horizons: [1, 10]}\n",
         ["variant 'a'", "lacks 5"]),
        ("name: p\nBASE\nvariants: []\n", ["key 'variants'"]),
    ],
)  # fmt: skip
def test_plan_errors_name_the_file_the_variant_and_the_key(tmp_path, text, expected):
    message = plan_error(tmp_path, text)
    for part in expected:
        assert part in message, message


def test_aliases_become_dotted_keys_and_the_shell_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKIC_WEIGHT", "0.9")  # the shell's alias: a plan sets every value itself
    plan = ex.load_plan(write_plan(tmp_path / "plan.yaml", """
name: aliases
BASE
variants:
  - name: a
    overrides:
      SHARPE_WEIGHT: 0.5
      DISABLE_GRAPH_BUILDER: true
      BYPASS_GAT_COMPLETELY: false
      train: {optimizer: {lr: 3e-4}}
"""))  # fmt: skip
    assert plan.variants[0].overrides == [
        "loss.weights.sharpe=0.5",
        "model.graph.mode=none",
        "train.optimizer.lr=3e-4",
    ]
    cfg = ex.resolve_configs(plan)["a"]
    assert (
        cfg.loss.weights.sharpe == 0.5 and cfg.model.graph.mode == "none" and cfg.train.optimizer.lr == 3e-4
    )
    assert cfg.loss.weights.rankic == load_config(None, [], env={}).cfg.loss.weights.rankic


def test_the_shipped_plan_resolves():
    plan = ex.load_plan(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "sharpe_focus.yaml")
    configs = ex.resolve_configs(plan)
    assert list(configs) == ["baseline", "sharpe_weights", "cosine_warmup", "hidden_384"]
    w = configs["sharpe_weights"].loss.weights
    assert (w.sharpe, w.rankic, w.cs_ic, w.huber) == (0.5, 0.2, 0.1, 0.1)
    cos = configs["cosine_warmup"]
    assert cos.train.scheduler.name == "warmup_cosine" and cos.train.scheduler.warmup_epochs == 5
    assert cos.train.max_epochs > 5 and cos.train.optimizer.lr == 3e-4
    assert (cos.loss.weights.sharpe, cos.loss.weights.rankic) == (0.3, 0.15)
    assert configs["hidden_384"].model.hidden_size == 384
    assert all(v.after == "baseline" for v in plan.variants[1:])


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_plan_resolves(path):
    """Each plan the benchmarks run loads and gives every variant a valid config (a typo fails here, not
    an hour into a benchmark)."""
    plan = ex.load_plan(path)
    configs = ex.resolve_configs(plan)
    assert list(configs) == [v.name for v in plan.variants]


def test_rules():
    rule = ex.parse_rule(" val/rankic_5d >= -2.5e-2 ")
    assert (rule.metric, rule.op, rule.threshold) == ("val/rankic_5d", ">=", -0.025)
    assert rule.check({"rankic_5d": -0.025}) == (True, -0.025)
    assert rule.check({"rankic_5d": float("nan")})[0] is False
    assert rule.check({})[0] is False


def test_the_winner_is_chosen_by_validation_alone():
    def result(name: str, valid: float, status: str = "trained") -> ex.VariantResult:
        return ex.VariantResult(name, status, "atft_gat_fan", [], valid_metrics={"rankic_5d": valid})

    variants = [result("a", 0.02), result("b", 0.05), result("c", float("nan")), result("d", 0.09, "skipped")]
    assert ex.pick_winner(variants) == "b"
    assert ex.pick_winner([result("a", float("nan"))]) is None


# ---- running a plan (training replaced by forecasts made from the labels) -----------------------------------


def fake_train_run(quality: dict[str, tuple[float, float]], calls: list[str]):
    """A ``train_run`` that writes a finished run folder in no time: the validation RankIC at 5 days given,
    and test forecasts equal to the labels plus noise of the given size (more noise, less test RankIC)."""

    def train(
        cfg, data_path, run_dir, *, fold=None, with_test=True, callbacks=(), say=print, progress_bar=True
    ):
        run_dir = Path(run_dir)
        calls.append(run_dir.name)
        valid, noise = quality[run_dir.name]
        folder = RunFolder(run_dir)
        folder.create(cfg, Path(data_path))
        dataset = DatasetFolder(data_path)
        test = next(r for r in splits_from_config(dataset.calendar(), cfg)[-1].ranges() if r.name == "test")
        labels = dataset.read("labels", ["date", "code", *(f"target_{h}d" for h in cfg.data.horizons)])
        frame = (
            labels.filter(pl.col("date").is_between(test.start_date, test.end_date))
            .unpivot(index=["date", "code"], variable_name="target", value_name="label")
            .with_columns(horizon=pl.col("target").str.extract(r"(\d+)").cast(pl.Int32))
            .sort("date", "code", "horizon")
        )
        rng = np.random.default_rng(len(calls))
        noise_col = pl.Series(rng.normal(0.0, noise, frame.height), dtype=pl.Float32)
        frame = frame.select(
            "date", "code", "horizon",
            prediction=(pl.col("label").fill_null(0.0) + noise_col).cast(pl.Float32),
            label=pl.col("label").cast(pl.Float32),
        )  # fmt: skip
        folder.write_predictions("test", frame)
        summary = {
            "valid_metrics": {"rankic_5d": valid, "ic_5d": valid},
            "best_epoch": 0,
            "epochs_run": 1,
            "seconds": 0.1,
            "parameters": 10,
        }
        folder.write_summary(summary)
        return summary

    return train


CHAIN = """
name: chain
BASE
variants:
  - name: first
    continue_if: "val/rankic_5d > 0.02"
  - name: second
    overrides: {SHARPE_WEIGHT: 0.3}
    continue_if: "val/rankic_5d >= 0.1"
  - name: third
    overrides: {model.hidden_size: 24}
  - name: branch
    after: first
    overrides: {loss.weights.rankic: 0.7}
"""
# first: best validation, weak test; branch: weak validation, best test
QUALITY = {"first": (0.05, 1.0), "second": (0.03, 0.05), "third": (0.0, 0.0), "branch": (0.01, 0.0)}


@pytest.fixture(scope="module")
def chain(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    plan = write_plan(root / "chain.yaml", CHAIN)
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ex, "train_run", fake_train_run(QUALITY, calls))
        result = ex.run_experiment(plan, tiny_dataset, root / "out", say=lambda s: None)
    return plan, result, calls


def test_a_failed_rule_skips_the_rest_of_its_chain(chain):
    _, result, calls = chain
    status = {v.name: v for v in result.variants}
    assert calls == ["first", "second", "branch"]
    assert [status[n].status for n in ("first", "second", "third", "branch")] == [
        "trained", "trained", "skipped", "trained"
    ]  # fmt: skip
    assert status["first"].passed is True and status["second"].passed is False
    assert (
        "after second" in status["third"].reason and "val/rankic_5d >= 0.1 failed" in status["third"].reason
    )
    assert [row["model"] for row in result.rows] == ["first", "second", "branch"]  # every variant that ran
    recorded = json.loads((result.out / "experiment.json").read_text())
    assert {v["name"]: v["status"] for v in recorded["variants"]}["third"] == "skipped"


def test_the_winner_is_the_best_validation_even_when_the_test_disagrees(chain):
    _, result, _ = chain
    rows = {row["model"]: row for row in result.rows}
    assert rows["branch"]["rankic_5d"] > rows["first"]["rankic_5d"]  # the test prefers branch ...
    assert result.winner == "first"  # ... the winner is chosen on validation
    assert rows["first"]["winner"] and not rows["branch"]["winner"]
    report = (result.out / "compare.md").read_text()
    assert "**Winner: `first`**" in report and "never used to choose" in report
    assert "| first (winner) |" in report and "skipped: after second" in report
    assert result.paired and result.paired[0]["model"] == "first"
    for name in (
        "compare.csv",
        "compare.json",
        "cumulative_net.png",
        "rankic.png",
        "runs/first/summary.json",
    ):
        assert (result.out / name).is_file(), name
    assert json.loads((result.out / "experiment.json").read_text())["winner"] == "first"


def test_resume_reuses_finished_variants_and_reads_the_summaries_again(
    chain, tmp_path, monkeypatch, tiny_dataset
):
    plan, result, _ = chain
    out = tmp_path / "out"
    shutil.copytree(result.out, out)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr(ex, "train_run", refuse)
    again = ex.run_experiment(plan, tiny_dataset, out, say=lambda s: None)
    assert [v.status for v in again.variants] == ["reused", "reused", "skipped", "reused"]
    assert again.winner == "first"

    # the winner follows the validation metrics of the summaries (here: edited by hand)
    summary_file = out / "runs" / "branch" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["valid_metrics"]["rankic_5d"] = 0.2
    summary_file.write_text(json.dumps(summary))
    assert ex.run_experiment(plan, tiny_dataset, out, say=lambda s: None).winner == "branch"

    # an unfinished variant trains again, alone
    (out / "runs" / "second" / "summary.json").unlink()
    calls: list[str] = []
    monkeypatch.setattr(ex, "train_run", fake_train_run(QUALITY, calls))
    third = ex.run_experiment(plan, tiny_dataset, out, say=lambda s: None)
    assert calls == ["second"]
    assert [v.status for v in third.variants] == ["reused", "trained", "skipped", "reused"]

    # a finished run trained with another config than the plan now gives is refused, not silently reused
    changed = write_plan(
        tmp_path / "changed.yaml",
        CHAIN.replace("name: first\n", "name: first\n    overrides: {model.hidden_size: 32}\n"),
    )
    with pytest.raises(
        ex.PlanError, match=r"variant 'first'.*runs/first was trained with another config.*model.hidden_size"
    ):
        ex.run_experiment(changed, tiny_dataset, out, say=lambda s: None)


def test_cli_runs_a_plan_and_reports_bad_plans(chain, tmp_path, monkeypatch, tiny_dataset):
    plan, _, _ = chain
    monkeypatch.setattr(ex, "train_run", fake_train_run(QUALITY, []))
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["experiment", str(plan), "--data-path", str(tiny_dataset), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "(winner)" in result.output and "never used to choose" in result.output
    assert (out / "compare.md").is_file()
    bad = write_plan(tmp_path / "bad.yaml", "name: bad\nBASE\nvariants:\n  - name: a\n    continue_if: big\n")
    result = runner.invoke(app, ["experiment", str(bad), "--data-path", str(tiny_dataset), "--out", str(out)])
    assert result.exit_code == 2 and "bad.yaml" in result.output and "variant 'a'" in result.output


def test_cli_search_prints_the_best_trial_as_train_overrides(tmp_path, monkeypatch, tiny_dataset):
    asked: list[bool] = []

    def train(cfg, data_path, run_dir, *, with_test=True, callbacks=(), **kwargs):
        asked.append(with_test)
        assert any(isinstance(c, ex.PruneOnValidation) for c in callbacks)
        return {"valid_metrics": {"rankic_5d": float(cfg.loss.weights.sharpe)}}  # the more Sharpe, the better

    monkeypatch.setattr(ex, "train_run", train)
    plan = write_plan(tmp_path / "plan.yaml", "name: s\nBASE\n")  # a plan for a search needs no variants
    out = tmp_path / "out"
    args = ["experiment", str(plan), "--data-path", str(tiny_dataset), "--out", str(out), "--search", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert asked == [False, False, False]  # every trial without the test segment
    body = json.loads((out / "search.json").read_text())
    best = max(body["trials"], key=lambda t: t["value"])
    assert body["best"]["number"] == best["number"]
    assert body["best"]["value"] == best["params"]["loss.weights.sharpe"]
    command = body["best"]["command"]
    assert (
        command.startswith(f"atft train --data-path {tiny_dataset} ")
        and "loss.listnet.enabled=true" in command
    )
    assert "Train it with:" in result.output and "atft train --data-path" in result.output
    assert body["sampler"] == "TPESampler(seed=42)" and body["pruner"].startswith("MedianPruner")
    # a seeded sampler: the same plan proposes the same trials
    again = runner.invoke(app, [*args[:4], "--out", str(tmp_path / "again"), "--search", "3"])
    assert again.exit_code == 0, again.output
    params = [t["params"] for t in json.loads((tmp_path / "again" / "search.json").read_text())["trials"]]
    assert params == [t["params"] for t in body["trials"]]


# ---- real training --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_plan_trains_scores_and_reports(tiny_dataset, tmp_path):
    plan = write_plan(tmp_path / "real.yaml", """
name: real
BASE
variants:
  - name: base
    continue_if: "val/rankic_5d > -1"
  - name: sharpe
    overrides: {SHARPE_WEIGHT: 0.5}
""", base=FAST)  # fmt: skip
    result = ex.run_experiment(plan, tiny_dataset, tmp_path / "out", say=lambda s: None)
    assert [v.status for v in result.variants] == ["trained", "trained"]
    assert result.winner in ("base", "sharpe")
    assert all(np.isfinite(row["rankic_5d"]) for row in result.rows)
    assert "Winner" in (result.out / "compare.md").read_text()


class PruneSecondTrial(optuna.pruners.BasePruner):
    """Prunes every trial after the first, at its first report: pruning happens, whatever the values."""

    def prune(self, study, trial) -> bool:
        return trial.number >= 1


@pytest.mark.slow
def test_a_search_prunes_cleanly_and_never_reads_the_test_days(tiny_dataset, tmp_path, monkeypatch):
    served: list[tuple[str, str]] = []  # (first, last) date of every day set built
    loaders: list[str] = []
    original_init, original_loader = datamodule.DayDataset.__init__, datamodule.DayDataModule.eval_dataloader

    def recording_init(self, panel, start=None, end=None, **kwargs):
        original_init(self, panel, start, end, **kwargs)
        days = panel.dates[self.day_index]
        served.append((str(start), str(end)))
        if len(days):
            served.append((str(days.min()), str(days.max())))

    def recording_loader(self, split):
        loaders.append(split)
        return original_loader(self, split)

    monkeypatch.setattr(datamodule.DayDataset, "__init__", recording_init)
    monkeypatch.setattr(datamodule.DayDataModule, "eval_dataloader", recording_loader)
    plan = write_plan(tmp_path / "search.yaml", "name: search\nBASE\n", base=FAST)
    out = tmp_path / "out"
    found = ex.search(plan, tiny_dataset, 2, out, pruner=PruneSecondTrial(), say=lambda s: None)

    cfg = load_config(None, FAST, env={}).cfg
    test = next(
        r
        for r in splits_from_config(DatasetFolder(tiny_dataset).calendar(), cfg)[-1].ranges()
        if r.name == "test"
    )
    assert served and all(last < str(test.start_date) for _, last in served), (served, test)
    assert "test" not in loaders and "valid" in loaders
    assert not list(out.rglob("test.parquet"))

    body = json.loads((out / "search.json").read_text())
    assert [t["state"] for t in body["trials"]] == ["COMPLETE", "PRUNED"]
    assert list(body["trials"][1]["intermediate"]) == ["0"]  # pruned after its first epoch's validation
    assert body["best"]["number"] == 0 and body["best"]["command"].startswith("atft train --data-path ")
    assert set(body["trials"][0]["params"]) == set(ex.SEARCH_SPACE)
    assert found.best == body["best"]
    pruned = RunFolder(out / "search" / "trial_1")
    assert not pruned.is_finished()
    assert any(e.get("event") == "pruned" for e in pruned.read_events()[0])
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError, match="already holds a search"):
        ex.search(plan, tiny_dataset, 1, out, say=lambda s: None)
