"""APEX-Ranker: shapes, patch coverage of the whole window, non-crossing quantiles, that it learns, the
registry, and a tiny run through the training engine, evaluation included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from atft.config import load_config
from atft.config.schema import MODEL_NAMES
from atft.models.apex_ranker import ApexRanker, PatchEmbedding, patch_layout
from atft.models.atft_gat_fan import ATFTGATFAN, count_parameters
from atft.models.graph import uses_graph
from atft.models.registry import MODELS, build_model, model_label
from atft.training.loss import MultiHorizonLoss
from atft.workflow.evaluate import evaluate_run
from atft.workflow.train import train_run

HORIZONS = [1, 5, 10, 20]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP threads waiting for
    each other made the overfit test 30x slower (28 s instead of 0.9 s). Module-wide: the tiny run too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = ["model.apex.d_model=16", "model.apex.n_heads=2", "model.apex.n_layers=1"]


def apex_cfg(*overrides: str, preset: str | None = None):
    return load_config(preset, ["model.name=apex", *overrides], env={}).cfg


def make_model(*overrides: str, n_features: int = 6) -> ApexRanker:
    torch.manual_seed(0)
    cfg = apex_cfg(*SMALL, *overrides).model
    model = build_model(n_features, HORIZONS, list(cfg.quantiles), cfg)
    assert isinstance(model, ApexRanker)
    return model


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [(), ("model.head.variant=apex",), ("model.apex.stride=3",)])
def test_shapes_and_the_engine_attributes(overrides):
    model = make_model(*overrides)
    x = torch.randn(12, 20, 6)
    out = model(x)
    assert out["point"].shape == (12, 4)
    assert out["quantiles"].shape == (12, 4, 5)
    assert out["embedding"].shape == (12, 16)
    assert torch.isfinite(out["point"]).all() and torch.isfinite(out["quantiles"]).all()
    # the graph is accepted and ignored
    edge_index, edge_attr = torch.tensor([[0, 1], [1, 0]]), torch.rand(2, 3)
    assert torch.equal(model.eval()(x, edge_index, edge_attr)["point"], model(x)["point"])
    # what the engine and its callbacks read
    assert model.gate_stats is None and model.selection_weights is None
    assert len(model.heads) == 4 and all(
        hasattr(h, "reset_parameters") and hasattr(h, "out") for h in model.heads
    )
    model.train()
    model(x)["point"].sum().backward()
    for name, part in model.named_children():  # the gradient monitor's groups: each one learns
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert torch.stack([g.norm() for g in grads]).norm() > 0, name


@pytest.mark.parametrize(
    ("length", "patch_len", "stride", "pad", "n_patches"),
    [
        (20, 5, 5, 0, 4),
        (20, 16, 8, 4, 2),
        (60, 5, 5, 0, 12),
        (21, 5, 5, 4, 5),
        (20, 5, 3, 0, 6),
        (3, 5, 5, 2, 1),
    ],
)
def test_patches_tile_the_padded_window_and_the_last_ends_on_the_last_day(
    length, patch_len, stride, pad, n_patches
):
    assert patch_layout(length, patch_len, stride) == (pad, n_patches)
    assert (length + pad - patch_len) % stride == 0 or length <= patch_len
    last_end = (n_patches - 1) * stride + patch_len - 1 - pad  # index of the last patch's last day, unpadded
    assert last_end == length - 1
    first_start = -pad  # the first patch starts at (or before) the first day: every day is covered
    assert first_start <= 0
    embed = PatchEmbedding(patch_len, stride, d_model=8, max_patches=16)
    x = torch.arange(length, dtype=torch.float32)[None, :, None]  # [1, L, 1]: each day's value is its index
    patches = embed.patches(x)  # [1, 1, P, patch_len]
    assert patches.shape == (1, 1, n_patches, patch_len)
    assert patches[0, 0, -1, -1] == length - 1  # the last patch ends on the last day
    assert patches[0, 0, 0, 0] == 0  # padding repeats the first day
    assert set(patches.flatten().long().tolist()) == set(range(length))  # no day is dropped


def test_the_previous_layout_dropped_the_last_days():
    """Cutting from the start (no padding) as before leaves days after the last patch unseen."""
    length, patch_len, stride = 20, 16, 8
    unpadded = torch.arange(length).unfold(0, patch_len, stride)
    assert unpadded.max() == 15  # days 16..19: the last 4 days, never seen
    embed = PatchEmbedding(patch_len, stride, d_model=8, max_patches=4)
    assert embed.patches(torch.arange(length, dtype=torch.float32)[None, :, None]).max() == length - 1


@pytest.mark.parametrize("overrides", [(), ("model.apex.patch_len=16", "model.apex.stride=8")])
def test_changing_only_the_last_day_or_the_first_day_changes_the_forecast(overrides):
    model = make_model(*overrides).eval()
    x = torch.randn(8, 20, 6)
    base = model(x)["point"]
    for day in (-1, 0):
        moved = x.clone()
        moved[:, day] += 1.0
        changed = (model(moved)["point"] - base).abs().amax(dim=1)  # [N]
        assert (changed > 1e-6).all(), f"day {day} does not reach the output"
    # and a stock's forecast depends on its own window only
    moved = x.clone()
    moved[3] += 1.0
    delta = (model(moved)["point"] - base).abs().amax(dim=1)
    assert delta[3] > 1e-6 and torch.all(delta[torch.arange(8) != 3] == 0)


def test_quantiles_never_cross_and_follow_the_target_scale():
    model = make_model().eval()
    x = 10 * torch.randn(64, 20, 6)
    out = model(x)
    assert (out["quantiles"].diff(dim=-1) >= 0).all()
    torch.manual_seed(0)
    cfg = apex_cfg(*SMALL).model
    scaled = ApexRanker(6, HORIZONS, list(cfg.quantiles), cfg, target_scale=[1.0, 2.0, 3.0, 4.0]).eval()
    expected = out["point"] * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(scaled(x)["point"], expected, atol=1e-6)


def test_bad_sizes_name_their_keys():
    with pytest.raises(ValueError, match=r"model.apex.d_model=16 .* model.apex.n_heads=3"):
        make_model("model.apex.n_heads=3")
    with pytest.raises(ValueError, match="model.apex.stride=6 exceeds model.apex.patch_len=5"):
        make_model("model.apex.stride=6")
    with pytest.raises(ValueError, match="model.apex.max_patches"):
        make_model("model.apex.max_patches=2")(torch.randn(2, 20, 6))


def test_a_tiny_model_learns_to_rank_a_tiny_random_panel():
    """Two days of 16 stocks with random labels, the apex preset's objective: it must memorize the order."""
    torch.manual_seed(0)
    cfg = apex_cfg(*SMALL, "model.apex.dropout=0", preset="apex")
    model = build_model(6, HORIZONS, list(cfg.model.quantiles), cfg.model)
    loss_fn = MultiHorizonLoss(HORIZONS, list(cfg.model.quantiles), cfg.loss)
    x = torch.randn(32, 20, 6)
    batch = {
        "y": torch.randn(32, 4) * 0.02,
        "y_mask": torch.ones(32, 4, dtype=torch.bool),
        "day": torch.arange(32) // 16,
        "day_ptr": torch.tensor([0, 16, 32]),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    listnet = []
    for _ in range(100):
        total, _ = loss_fn(model(x), batch)
        listnet.append(loss_fn.last_raw["listnet"])
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    # ListNet's minimum is the entropy of its target (softmax of the day's z-scored labels), not 0
    y = batch["y"].view(2, 16, 4).transpose(1, 2)  # [day, horizon, stock]
    target = ((y - y.mean(-1, keepdim=True)) / y.std(-1, unbiased=False, keepdim=True)).softmax(-1)
    floor = float(-(target * target.log()).sum(-1).mean())
    assert listnet[-1] - floor < 0.02 * (listnet[0] - floor)
    point = model.eval()(x)["point"].detach()
    for d in (slice(0, 16), slice(16, 32)):  # Spearman within each day and horizon
        ranks_p = point[d].argsort(0).argsort(0).float()
        ranks_y = batch["y"][d].argsort(0).argsort(0).float()
        rho = torch.stack(
            [torch.corrcoef(torch.stack([ranks_p[:, j], ranks_y[:, j]]))[0, 1] for j in range(4)]
        )
        assert (rho > 0.9).all(), rho


def test_parameter_count_at_the_default_sizes():
    """docs/apex.md quotes it: 94 features, 4 horizons, 5 quantiles, the apex preset."""
    cfg = apex_cfg(preset="apex").model
    model = build_model(94, HORIZONS, list(cfg.quantiles), cfg)
    assert count_parameters(model) == 116_472
    assert count_parameters(model.mix) > 0.5 * count_parameters(model)  # the per-feature mix dominates


# --------------------------------------------------------------------------------------------------
# the registry and the graph switch
# --------------------------------------------------------------------------------------------------


def test_build_model_picks_each_model_by_name():
    assert set(MODELS) == set(MODEL_NAMES)  # every name the config accepts builds something
    for name, cls in (("atft_gat_fan", ATFTGATFAN), ("apex", ApexRanker)):
        cfg = load_config(None, [f"model.name={name}", "model.graph.mode=none"], env={}).cfg.model
        assert type(build_model(6, HORIZONS, list(cfg.quantiles), cfg, [1.0] * 4)) is cls
    assert model_label("atft_gat_fan") == "ATFT-GAT-FAN"
    assert model_label("apex") == "APEX-Ranker"
    with pytest.raises(ValueError, match="the models that exist are 'atft_gat_fan', 'apex'"):
        model_label("mlp")


def test_only_atft_gat_fan_uses_the_graph():
    assert uses_graph(load_config(None, [], env={}).cfg.model)
    assert not uses_graph(load_config(None, ["model.graph.mode=none"], env={}).cfg.model)
    apex = load_config(None, ["model.name=apex"], env={}).cfg.model
    assert apex.gat.enabled and apex.graph.mode == "correlation"  # untouched defaults...
    assert not uses_graph(apex)  # ...yet no graph is built for APEX


# --------------------------------------------------------------------------------------------------
# a tiny run through the engine
# --------------------------------------------------------------------------------------------------

# The tiny market of tests/test_training.py (TINY there), with a small APEX and the apex preset's loss.
TINY = [
    "data.split.train_days=100",
    "data.split.valid_days=40",
    "data.split.test_days=40",
    "data.min_stocks_per_day=10",
    "train.scheduler.warmup_epochs=1",
    "train.diagnostics.grad_monitor_every=5",
    "train.max_epochs=2",
    *SMALL,
]


@pytest.fixture(scope="module")
def apex_run(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    cfg = load_config("apex", TINY, env={}).cfg
    run_dir = tmp_path_factory.mktemp("runs") / "apex"
    summary = train_run(cfg, tiny_dataset, run_dir, say=lambda s: None, progress_bar=False)
    return run_dir, summary


def test_a_tiny_apex_run_trains_forecasts_and_evaluates(apex_run):
    run_dir, summary = apex_run
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/best.ckpt",
        "predictions/test.parquet",
    ):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    metrics = on_disk["test_metrics"]
    for h in HORIZONS:
        assert math.isfinite(metrics[f"rankic_{h}d"]) and math.isfinite(metrics[f"mae_{h}d"]), h
    test = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    assert test["prediction"].is_finite().all() and test["prediction"].std() > 0
    # the run trained the preset's objective and the gradient monitor saw APEX's modules
    columns = pl.read_csv(run_dir / "metrics.csv").columns
    assert {"loss_listnet", "loss_ranknet", "loss_huber"} <= set(columns)
    assert "loss_rankic" not in columns
    assert {f"grad_norm_{m}" for m in ("patch_embed", "encoder", "mix", "heads")} <= set(columns)

    result, out = evaluate_run(run_dir, say=lambda s: None)
    assert (out / "metrics.json").is_file()
    assert math.isfinite(result.metrics["5d"]["rankic"])
