"""The training engine: run folder, guards, resume, DDP, schedules, hardware fallbacks, the real JP sample."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import OmegaConf
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.evaluation.evaluate import evaluate_predictions
from atft.training import trainer as trainer_module
from atft.training.callbacks import DegeneracyGuard, NonFiniteGuard
from atft.training.loss import MultiHorizonLoss
from atft.training.module import ForecastModule, NonFiniteLossError, daily_scale
from atft.training.run_folder import RunFolder
from atft.training.trainer import cpu_has_bf16, forecast_precision, resolve_hardware
from atft.workflow.train import train_run

runner = CliRunner()

# A small model on a small market: every run below takes seconds.
TINY = [
    "data.split.train_days=100",
    "data.split.valid_days=40",
    "data.split.test_days=40",
    "data.min_stocks_per_day=10",
    "model.hidden_size=16",
    "model.gat.heads=2",
    "model.temporal.attention_heads=2",
    "train.scheduler.warmup_epochs=1",
    "train.diagnostics.grad_monitor_every=5",
]


def tiny_cfg(*overrides: str, epochs: int = 2):
    return load_config(None, [*TINY, f"train.max_epochs={epochs}", *overrides], env={}).cfg


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, launcher: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``atft ...`` in a fresh process (as a user runs it; DDP and a real kill need their own processes).

    ``launcher``: Python arguments before ``-m atft.cli.app``, e.g. ``("-m", "torch.distributed.run", ...)``.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *launcher, "-m", "atft.cli.app", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# --------------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train_run(tiny_cfg(), tiny_dataset, run_dir, say=lambda s: None, progress_bar=False)
    return run_dir, summary


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_mixed_trains_on_a_cpu_with_native_bf16(tiny_run, tiny_dataset, tmp_path):
    """bf16-mixed on the CPU: the run trains, its losses stay finite and close to the 32-bit run's."""
    run_dir, _ = tiny_run
    cfg = tiny_cfg("train.trainer.precision=bf16-mixed")
    summary = train_run(cfg, tiny_dataset, tmp_path / "bf16", say=lambda s: None, progress_bar=False)
    assert summary["hardware"]["precision"] == "bf16-mixed"
    ours, theirs = (pl.read_csv(d / "metrics.csv") for d in (tmp_path / "bf16", run_dir))
    assert ours["train_loss"].is_finite().all()
    assert ours["train_loss"].to_list() == pytest.approx(theirs["train_loss"].to_list(), rel=0.05)


def test_panel_on_device_trains_the_same_run(tiny_run, tiny_dataset, tmp_path):
    """Windows gathered from the resident panel (here on the CPU) give the run the host windows give."""
    run_dir, summary = tiny_run
    said: list[str] = []
    cfg = tiny_cfg("train.panel_on_device=on")
    resident = train_run(cfg, tiny_dataset, tmp_path / "resident", say=said.append, progress_bar=False)
    assert any("keeping the feature panel" in s for s in said)
    ours, theirs = (pl.read_csv(d / "metrics.csv") for d in (tmp_path / "resident", run_dir))
    for column in ("train_loss", "val_loss", "val_rankic_5d"):
        assert ours[column].to_list() == pytest.approx(theirs[column].to_list(), rel=1e-5, abs=1e-7), column
    assert resident["best_epoch"] == summary["best_epoch"]


def test_run_folder_is_complete(tiny_run):
    run_dir, summary = tiny_run
    for name in ("config.yaml", "metrics.csv", "events.jsonl", "train.log", "summary.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt", "predictions/valid.parquet",
                 "predictions/test.parquet"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert OmegaConf.load(run_dir / "config.yaml").model.hidden_size == 16

    metrics = pl.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].to_list() == [0, 1]
    for column in ("train_loss", "val_loss", "lr", "loss_huber", "loss_rankic", "loss_variance_floor",
                   "gradshare_huber", "gradshare_rankic", "head_mean_5d", "head_std_5d", "scale_5d",
                   "gate_mean", "grad_norm_gat", "grad_norm_heads"):  # fmt: skip
        assert column in metrics.columns, column
    for h in (1, 5, 10, 20):
        for m in ("mae", "rmse", "r2", "naive_rmse", "ic", "rankic", "icir", "scale", "sharpe"):
            assert f"val_{m}_{h}d" in metrics.columns
    shares = metrics.select(pl.col("^gradshare_.*$")).sum_horizontal()
    assert ((shares - 1).abs() < 1e-6).all()  # each step's shares sum to 1, and so does their mean

    lines = (run_dir / "train.log").read_text().splitlines()
    epoch_lines = [line for line in lines if line.startswith("Epoch")]
    pattern = r"Epoch \d+: train=\d+\.\d{4} / val=\d+\.\d{4} \| RankIC5d=-?\d\.\d{3} SCALE5d=\d+\.\d{2} \| lr=\d\.\de[-+]\d\d"
    assert len(epoch_lines) == 2 and all(re.fullmatch(pattern, line) for line in epoch_lines), epoch_lines

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"start", "grad_norm", "head_stats", "days_seen", "end"} <= kinds
    grad = next(e for e in events if e["event"] == "grad_norm")
    assert set(grad["norms"]) == {"fan", "vsn", "temporal", "gat", "fusion", "shortcut", "heads"}

    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    assert preds.columns[:5] == ["date", "code", "horizon", "prediction", "label"]
    assert {"q05", "q25", "q50", "q75", "q95"} <= set(preds.columns)
    assert preds.select("date", "code", "horizon").is_duplicated().sum() == 0
    assert preds["label"].null_count() > 0  # labels past the end of the test segment stay missing...
    assert (preds["label"].drop_nulls() != 0).all()  # ...and are never filled with 0
    assert summary["test_metrics"]["n_days_5d"] > 0 and "rankic_5d" in summary["oracle_test_rankic"]
    assert json.loads((run_dir / "summary.json").read_text())["best_epoch"] in (0, 1)


def test_best_checkpoint_reloads_and_reproduces_its_predictions(tiny_run, tiny_dataset):
    from atft.data.splits import splits_from_config
    from atft.features.dataset import DatasetFolder
    from atft.features.panel import DayPanel
    from atft.training.datamodule import DayDataModule
    from atft.training.module import predict_frame
    from atft.workflow.run_data import day_graph

    run_dir, _ = tiny_run
    module = ForecastModule.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cpu")
    cfg = module.cfg
    panel = DayPanel.load(tiny_dataset, labels=[f"target_{h}d" for h in cfg.data.horizons])
    dataset = DatasetFolder(tiny_dataset)
    split = splits_from_config(dataset.calendar(), cfg)[-1]
    data = DayDataModule.from_split(
        panel, split, lookback=cfg.data.lookback, min_stocks=cfg.data.min_stocks_per_day,
        graph=day_graph(panel, cfg, dataset),
    )  # fmt: skip
    data.setup()
    assert pl.read_parquet(tiny_dataset / "stocks.parquet")["market_id"].n_unique() > 1  # a real attribute
    again = predict_frame(module, data.test_dataloader(), panel)
    saved = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    assert again.equals(saved)


# --------------------------------------------------------------------------------------------------
# Guards
# --------------------------------------------------------------------------------------------------


def test_degeneracy_guard_fires_on_a_collapsing_model(tiny_dataset, tmp_path):
    """Heads that output ~0 and cannot learn (lr ~0, no variance floor): the guard warns, then resets them."""
    cfg = tiny_cfg(
        "model.head.init_std=1e-9",
        "train.optimizer.lr=1e-12",
        "loss.weights.variance_floor=0",
        "train.scheduler.name=constant",
        epochs=4,  # the guard waits out the first epoch (the heads start small on purpose)
    )
    summary = train_run(cfg, tiny_dataset, tmp_path / "collapse", say=lambda s: None, progress_bar=False)
    events = [json.loads(line) for line in (tmp_path / "collapse" / "events.jsonl").read_text().splitlines()]
    warning = [e for e in events if e["event"] == "degeneracy_warning"]
    resets = [e for e in events if e["event"] == "head_reset"]
    assert warning and resets and warning[0]["step"] < resets[0]["step"]
    assert summary["head_resets"] == len(resets) >= 1
    metrics = pl.read_csv(tmp_path / "collapse" / "metrics.csv")
    assert metrics["scale_5d"][0] < 1e-3 < metrics["scale_5d"][-1]  # the reset gave the heads a scale again
    assert "RESET step" in (tmp_path / "collapse" / "train.log").read_text()


def test_degeneracy_guard_stays_quiet_on_a_healthy_scale(tmp_path):
    guard = DegeneracyGuard(RunFolder(tmp_path), floor=0.05, patience=3)
    module = SimpleNamespace(last_scale=torch.tensor([0.5, 0.6]), device=torch.device("cpu"))
    trainer = SimpleNamespace(
        global_step=0, current_epoch=1, strategy=SimpleNamespace(reduce=lambda t, reduce_op: t)
    )
    for _ in range(20):
        guard.on_train_batch_end(trainer, module, None, None, 0)
    assert guard.warnings == guard.resets == 0 and not (tmp_path / "events.jsonl").exists()


def test_non_finite_guard_names_the_step_and_batch():
    guard = NonFiniteGuard()
    trainer = SimpleNamespace(global_step=17, current_epoch=2)
    module = SimpleNamespace(
        current_batch={"batch_idx": 5, "dates": ["2020-01-06", "2020-01-09"]},
        loss=SimpleNamespace(last_raw={"huber": float("nan")}),
    )
    with pytest.raises(
        NonFiniteLossError, match=r"step 17 \(epoch 2, batch 5, dates 2020-01-06\.\.2020-01-09\)"
    ):
        guard.on_before_backward(trainer, module, torch.tensor(float("nan")))
    guard.on_before_backward(trainer, module, torch.tensor(1.0))  # a finite loss passes


def test_daily_scale_matches_numpy():
    torch.manual_seed(0)
    point, y = torch.randn(10, 2), torch.randn(10, 2)
    mask = torch.ones(10, 2, dtype=torch.bool)
    mask[0, 1] = False
    day = torch.tensor([0] * 6 + [1] * 4)
    got = daily_scale(point, y, mask, day, 2)
    for j in range(2):
        ratios = []
        for d in (0, 1):
            rows = (day == d) & mask[:, j]
            ratios.append(point[rows, j].std() / y[rows, j].std())
        assert math.isclose(float(got[j]), float(torch.stack(ratios).mean()), rel_tol=1e-5)


# --------------------------------------------------------------------------------------------------
# Configuration: aliases, schedules, hardware
# --------------------------------------------------------------------------------------------------


def test_environment_aliases_change_the_resolved_loss_weights():
    cfg = load_config(None, env={"SHARPE_WEIGHT": "0.3", "RANKIC_WEIGHT": "0", "HUBER_WEIGHT": "2"}).cfg
    loss = MultiHorizonLoss(list(cfg.data.horizons), list(cfg.model.quantiles), cfg.loss)
    assert loss.weights["sharpe"] == pytest.approx(0.3) and loss.weights["huber"] == 2.0
    assert "rankic" not in loss.weights  # weight 0 switches the term off
    default = load_config(None, env={}).cfg
    assert "sharpe" not in MultiHorizonLoss([1, 5, 10, 20], [0.05, 0.5, 0.95], default.loss).weights


@pytest.mark.parametrize("name", ["warmup_cosine", "plateau", "constant"])
def test_learning_rate_schedules(name):
    cfg = load_config(None, [f"train.scheduler.name={name}", "train.scheduler.warmup_epochs=2",
                             "train.max_epochs=10", "model.hidden_size=16"], env={}).cfg  # fmt: skip
    module = ForecastModule(OmegaConf.to_container(cfg), [f"f{i}" for i in range(4)], [1, 5, 10, 20])
    module.trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=10)
    configured = module.configure_optimizers()
    if name == "constant":
        assert isinstance(configured, torch.optim.AdamW)
        return
    scheduler = configured["lr_scheduler"]["scheduler"]
    if name == "plateau":
        assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert configured["lr_scheduler"]["monitor"] == "val/rankic_5d"
        return
    lrs = []
    for _ in range(100):
        lrs.append(configured["optimizer"].param_groups[0]["lr"])
        configured["optimizer"].step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3 / 20) and lrs[19] == pytest.approx(1e-3)  # 2 of 10 epochs warm up
    assert all(a >= b for a, b in zip(lrs[19:], lrs[20:], strict=False)) and lrs[-1] < 1e-5  # cosine decay


def small_module() -> ForecastModule:
    """A hidden-16 module outside any Trainer, its optimizer without a schedule."""
    cfg = load_config(None, ["train.scheduler.name=constant", "model.hidden_size=16"], env={}).cfg
    return ForecastModule(OmegaConf.to_container(cfg), [f"f{i}" for i in range(4)], [1, 5, 10, 20])


@pytest.mark.parametrize(
    ("precision", "fused"), [("32-true", True), ("bf16-mixed", True), ("16-mixed", False)]
)
def test_the_optimizer_is_fused_except_under_float16(precision, fused):
    """One fused AdamW kernel, except under float16, whose loss scaler a fused step would undo after clipping."""
    module = small_module()
    module.trainer = SimpleNamespace(precision=precision)
    defaults = module.configure_optimizers().defaults
    assert (defaults["fused"], defaults["foreach"]) == ((True, None) if fused else (None, True))


@pytest.mark.parametrize("algorithm", [GradClipAlgorithmType.NORM, GradClipAlgorithmType.VALUE])
def test_a_fused_optimizer_is_clipped_under_bf16_and_refused_under_float16(algorithm):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimizer; without a loss scaler
    (bf16-mixed) the module clips it as 32-bit would, and with one (16-mixed) Lightning's refusal stands."""
    module = small_module()
    module.trainer = SimpleNamespace(
        precision="bf16-mixed",
        precision_plugin=MixedPrecision("bf16-mixed", "cpu"),
        gradient_clip_val=0.5,
        gradient_clip_algorithm=algorithm,
    )
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"]
    parameters = [p for p in module.parameters() if p.requires_grad]
    for p in parameters:
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, 0.5, algorithm)
    grads = torch.cat([p.grad.flatten() for p in parameters])
    if algorithm == GradClipAlgorithmType.NORM:  # the enum Lightning passes
        assert grads.norm().item() == pytest.approx(0.5, rel=1e-4)
    else:
        assert grads.abs().max().item() == 0.5
    module.trainer.precision_plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(RuntimeError, match="fused"):
        module.configure_gradient_clipping(optimizer, 0.5, algorithm)


def test_auto_precision_is_bf16_where_the_device_computes_it_natively(monkeypatch):
    """The `cpu` preset's precision: bf16-mixed on a CPU with AVX-512 BF16 or AMX, or a bf16 GPU; else 32."""
    auto = load_config(env={}).cfg.train.trainer  # the default preset
    assert auto.precision == "auto"
    assert resolve_hardware(auto, cuda=False, cpu_bf16=True).precision == "bf16-mixed"
    assert resolve_hardware(auto, cuda=False, cpu_bf16=False).precision == "32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_hardware(auto, cuda=True, cpu_bf16=False).precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_hardware(auto, cuda=True, cpu_bf16=True).precision == "32"  # a GPU's choice, not the CPU's
    # a pre-Ampere GPU emulates bf16 (slowly): not native, so "auto" is 32 and bf16-mixed falls back
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_hardware(auto, cuda=True, cpu_bf16=True).precision == "32"
    prod = load_config("production", env={}).cfg.train.trainer
    assert resolve_hardware(prod, cuda=True).precision == "16-mixed"
    on_cpu = load_config(overrides=["train.trainer.accelerator=cpu"], env={}).cfg.train.trainer
    assert resolve_hardware(on_cpu, cuda=True, cpu_bf16=True).precision == "bf16-mixed"  # the CPU decides
    for cpu_bf16 in (True, False):  # a choice, not a fallback: nothing to warn about
        assert resolve_hardware(auto, cuda=False, cpu_bf16=cpu_bf16).notes == ()


@pytest.mark.parametrize("native", [True, False])
def test_forecasts_outside_the_trainer_autocast_as_the_run_trained(monkeypatch, native):
    """`atft evaluate` and the daily list forecast in the precision the run's Trainer resolves here, with
    Lightning's autocast (no weight cache); the device used decides, not the accelerator trained on."""
    monkeypatch.setattr(trainer_module, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    for preset in ("cpu", "production"):  # "auto"; "bf16-mixed" with accelerator=gpu, forecast on the CPU
        with forecast_precision(load_config(preset, env={}).cfg.train.trainer, cpu):
            assert torch.is_autocast_enabled("cpu") == native
            if native:
                assert torch.get_autocast_dtype("cpu") == torch.bfloat16
                assert not torch.is_autocast_cache_enabled()
    with forecast_precision(load_config(None, env={}).cfg.train.trainer, cpu):  # "32"
        assert not torch.is_autocast_enabled("cpu")


def test_hardware_falls_back_with_a_clear_message():
    prod = load_config("production", env={}).cfg.train.trainer
    hw = resolve_hardware(prod, cuda=False, cpu_bf16=False)
    assert (hw.accelerator, hw.precision) == ("cpu", "32")
    assert any("bf16-mixed needs a CUDA GPU" in note for note in hw.notes)
    assert any("no CUDA device" in note for note in hw.notes)
    native = resolve_hardware(prod, cuda=False, cpu_bf16=True)  # AVX-512 BF16 or AMX
    assert (native.accelerator, native.precision) == ("cpu", "bf16-mixed")
    assert any("computes bf16 natively" in note for note in native.notes)
    schema = resolve_hardware(load_config(None, env={}).cfg.train.trainer, cuda=False)
    assert schema.notes == () and schema.precision == "32"
    ddp = resolve_hardware(
        load_config(None, ["train.trainer.devices=2"], env={}).cfg.train.trainer, cuda=False
    )
    assert ddp.strategy == "ddp"


# --------------------------------------------------------------------------------------------------
# The command line: errors, resume after a kill, two DDP processes
# --------------------------------------------------------------------------------------------------


def test_train_cli_refuses_bad_input(tiny_dataset, tmp_path):
    missing = runner.invoke(app, ["train", "--data-path", str(tmp_path / "nope"), *TINY])
    assert missing.exit_code == 2 and "nope" in missing.output
    bad_key = runner.invoke(app, ["train", "--data-path", str(tiny_dataset), "model.hiden_size=3"])
    assert bad_key.exit_code == 2 and "hidden_size" in bad_key.output
    no_run = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert no_run.exit_code == 2 and "not a run folder" in no_run.output


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_dataset, tmp_path):
    args = ["train", "--data-path", str(tiny_dataset), "--max-epochs", "3", *TINY, "train.runs_dir=runs"]
    straight = run_cli([*args, "--run-name", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run_cli([*args, "--run-name", "killed"], tmp_path, env={"ATFT_CRASH_AFTER_EPOCH": "1"})
    assert killed.returncode != 0  # SIGKILL as epoch 2 starts
    partial = pl.read_csv(tmp_path / "runs" / "killed" / "metrics.csv")
    assert (
        partial["epoch"].to_list() == [0, 1] and not (tmp_path / "runs" / "killed" / "summary.json").exists()
    )
    resumed = run_cli(["train", "--resume", str(tmp_path / "runs" / "killed")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = pl.read_csv(tmp_path / "runs" / "straight" / "metrics.csv").drop("epoch_seconds")
    b = pl.read_csv(tmp_path / "runs" / "killed" / "metrics.csv").drop("epoch_seconds")
    assert a["epoch"].to_list() == b["epoch"].to_list() == [0, 1, 2]
    for column in a.columns:
        assert a[column].to_list() == pytest.approx(b[column].to_list(), rel=1e-5, abs=1e-7, nan_ok=True), (
            column
        )
    sa = json.loads((tmp_path / "runs" / "straight" / "summary.json").read_text())
    sb = json.loads((tmp_path / "runs" / "killed" / "summary.json").read_text())
    assert sa["test_metrics"] == pytest.approx(sb["test_metrics"], rel=1e-5, abs=1e-7, nan_ok=True)
    assert "Resumed from" in (tmp_path / "runs" / "killed" / "train.log").read_text()


@pytest.mark.slow
def test_two_ddp_processes_train_on_different_days(tiny_dataset, tmp_path):
    result = run_cli(
        ["train", "--data-path", str(tiny_dataset), "--max-epochs", "1", "--run-name", "ddp", *TINY,
         "train.runs_dir=runs", "train.scheduler.name=constant", "train.trainer.accelerator=cpu",
         "train.trainer.devices=2", "train.trainer.strategy=ddp"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    seen = next(e for e in events if e["event"] == "days_seen")["by_rank"]
    assert set(seen) == {"0", "1"}
    first, second = set(seen["0"]), set(seen["1"])
    # each process trained on its own days; the distributed sampler pads an odd count with one repeat
    assert len(first) > 20 and len(second) > 20 and len(first & second) <= 1
    start = next(e for e in events if e["event"] == "start")
    assert len(first | second) == start["data"]["train"]["days"]  # together they saw every training day
    assert json.loads((run_dir / "summary.json").read_text())["hardware"]["strategy"] == "ddp"
    assert pl.read_csv(run_dir / "metrics.csv").height == 1


@pytest.mark.slow
def test_torchrun_launch_trains_one_run_whose_validation_covers_every_rank(tiny_dataset, tmp_path):
    """The multi-GPU / multi-node launch of docs/training.md, with 2 CPU processes: torchrun starts the
    processes, Lightning joins them; one run folder, distinct training days per rank, and the validation
    metrics of every process are those of all validation days (gathered), checked against the forecasts."""
    result = run_cli(
        ["train", "--data-path", str(tiny_dataset), "--max-epochs", "1", "--run-name", "torchrun", *TINY,
         "train.runs_dir=runs", "train.scheduler.name=constant", "train.trainer.accelerator=cpu",
         "train.trainer.devices=2", "train.trainer.strategy=ddp"],
        tmp_path,
        env={"OMP_NUM_THREADS": "1"},
        launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["torchrun"]
    run_dir = tmp_path / "runs" / "torchrun"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    seen = next(e for e in events if e["event"] == "days_seen")["by_rank"]
    assert len(set(seen["0"]) & set(seen["1"])) <= 1 and len(seen["0"]) > 20
    # one epoch: the forecasts come from the weights that were validated, on every validation day
    valid = pl.read_parquet(run_dir / "predictions" / "valid.parquet")
    start = next(e for e in events if e["event"] == "start")
    assert valid["date"].n_unique() == start["data"]["valid"]["days"]
    logged = pl.read_csv(run_dir / "metrics.csv").row(0, named=True)
    recomputed = evaluate_predictions(valid).metrics
    for h in (1, 5, 10, 20):
        assert logged[f"val_rankic_{h}d"] == pytest.approx(recomputed[f"{h}d"]["rankic"], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# The real JP sample
# --------------------------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.slow
def test_real_jp_two_epochs_end_to_end(real_dataset, tmp_path):
    result = runner.invoke(
        app,
        ["train", "--data-path", str(real_dataset), "--max-epochs", "2", "--run-name", "jp",
         "model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2",
         "data.split.window=sliding", "data.split.train_days=150", "data.split.valid_days=80",
         "data.split.test_days=80", f"train.runs_dir={tmp_path / 'runs'}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "jp"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 2
    metrics = pl.read_csv(run_dir / "metrics.csv")
    assert metrics.height == 2 and metrics["val_n_days_5d"].min() > 40
    assert all(math.isfinite(v) for v in metrics["train_loss"].to_list())
    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    assert preds["code"].n_unique() > 250 and preds["horizon"].unique().sort().to_list() == [1, 5, 10, 20]
