"""``train.compile``: the model's forward compiled by torch.compile computes what the plain model computes,
keeps its checkpoint keys, and a training run with it finishes. The GPU path (inductor with CUDA graphs
and bf16) needs a GPU; here the same code path runs on the CPU with the ``aot_eager`` backend."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from typer.testing import CliRunner

from atft.cli.app import app
from atft.config import load_config
from atft.training.module import ForecastModule
from atft.workflow.train import compile_model

runner = CliRunner()


def tiny_module() -> ForecastModule:
    cfg = load_config(
        overrides=["model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2"], env={}
    ).cfg
    torch.manual_seed(0)
    return ForecastModule(
        OmegaConf.to_container(cfg, resolve=True), [f"f{i}" for i in range(6)], [1, 5, 10, 20], [0.02, 0.05, 0.07, 0.1]
    )


def day_batch(n: int, generator: torch.Generator) -> dict:
    src = torch.arange(n - 1)
    edge_index = torch.cat(
        [torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1
    )  # a chain, both ways
    edges = edge_index.shape[1]
    attr = torch.stack([torch.rand(edges, generator=generator), torch.ones(edges), torch.zeros(edges)], 1)
    return {"x": torch.randn(n, 20, 6, generator=generator), "edge_index": edge_index, "edge_attr": attr}


def test_the_compiled_forward_computes_the_plain_forward_for_any_number_of_stocks():
    plain, compiled = tiny_module().eval(), tiny_module().eval()
    keys = list(compiled.state_dict())
    compile_model(compiled, backend="aot_eager")
    assert list(compiled.state_dict()) == keys  # checkpoints and bundles load into a plain model
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n in (7, 31, 12):  # a new number of stocks each day must not break or recompile per shape
            batch = day_batch(n, generator)
            a, b = plain(batch), compiled(batch)
            assert torch.allclose(a["point"], b["point"], atol=1e-5)
            assert torch.allclose(a["quantiles"], b["quantiles"], atol=1e-5)


@pytest.mark.slow
def test_a_run_trains_with_train_compile(tiny_dataset, tmp_path):
    result = runner.invoke(app, [
        "train", "--data-path", str(tiny_dataset), "--max-epochs", "1", "--run-name", "c",
        "data.split.train_days=100", "data.split.valid_days=40", "data.split.test_days=40",
        "data.min_stocks_per_day=10", "model.hidden_size=16", "model.gat.heads=2",
        "model.temporal.attention_heads=2", "train.compile=true", "train.compile_backend=aot_eager",
        f"train.runs_dir={tmp_path}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "summary.json").is_file()
