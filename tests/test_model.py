"""ATFT-GAT-FAN: shapes, switches, the FAN split, non-crossing quantiles, and that it can learn at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atft.config import load_config
from atft.models import atft_gat_fan
from atft.models.atft_gat_fan import (
    ATFTGATFAN,
    FastDropout,
    FrequencyAdaptiveNorm,
    TemporalEncoder,
    VariableSelection,
    count_parameters,
    heads_forward,
    quantile_name,
    top_k_mask,
)

HORIZONS = [1, 5, 10, 20]


def model_cfg(*overrides: str):
    return load_config(None, list(overrides), env={}).cfg.model


def make_model(*overrides: str, n_features: int = 8) -> ATFTGATFAN:
    torch.manual_seed(0)
    cfg = model_cfg(
        "model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2", *overrides
    )
    return ATFTGATFAN(n_features, HORIZONS, list(cfg.quantiles), cfg)


def two_day_graph(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ring within each half of the rows (two days that never link)."""
    half = n // 2
    src = torch.cat([torch.arange(half), torch.arange(half, n)])
    dst = torch.cat([(torch.arange(half) + 1) % half, half + (torch.arange(n - half) + 1) % (n - half)])
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return edge_index, torch.rand(edge_index.shape[1], 3)


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.fan.enabled=false",),
        ("model.vsn.enabled=false",),
        ("model.gat.enabled=false",),
        ("model.graph.mode=none",),
        ("model.head.variant=apex",),
        ("model.head.use_layernorm=true", "model.head.layer_scale=0"),
        ("model.temporal.lstm_layers=2", "model.gat.layers=2"),
        ("model.shortcut=false",),
        ("model.shortcut=false", "model.graph.mode=none"),
        ("model.shortcut_to=heads",),
        ("model.shortcut_to=both", "model.graph.mode=none"),
    ],
)
def test_shapes_and_switches(overrides):
    model = make_model(*overrides)
    x = torch.randn(12, 10, 8)
    edge_index, edge_attr = two_day_graph(12)
    out = model(x, edge_index, edge_attr)
    assert out["point"].shape == (12, 4)
    assert out["quantiles"].shape == (12, 4, 5)
    assert out["embedding"].shape == (12, 16)
    assert torch.isfinite(out["point"]).all() and torch.isfinite(out["quantiles"]).all()
    assert (out["quantiles"].diff(dim=-1) >= 0).all()  # never cross, by construction
    uses_graph = "model.gat.enabled=false" not in overrides and "model.graph.mode=none" not in overrides
    assert (model.gat is not None) == uses_graph
    assert (model.fan is not None) == ("model.fan.enabled=false" not in overrides)
    out["point"].sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_graph_is_required_when_the_gat_is_on():
    with pytest.raises(ValueError, match="graph"):
        make_model()(torch.randn(4, 10, 8))


def test_the_graph_changes_predictions_only_through_linked_stocks():
    model = make_model().eval()
    x = torch.randn(12, 10, 8)
    edge_index, edge_attr = two_day_graph(12)
    base = model(x, edge_index, edge_attr)["point"]
    x2 = x.clone()
    x2[7] += 1.0  # a stock of the second day
    moved = model(x2, edge_index, edge_attr)["point"]
    assert torch.allclose(base[:6], moved[:6])  # the first day never sees it
    assert not torch.allclose(base[6:], moved[6:])


def test_the_gat_passes_only_the_neighbours_message_and_isolated_stocks_hear_nothing():
    model = make_model()
    x = torch.randn(6, 10, 8)
    # stocks 0-1-2 form a path; 3, 4, 5 have no edges that day
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    edge_attr = torch.rand(4, 3)
    h = torch.randn(6, 16, requires_grad=True)
    message = model.gat(h, edge_index, edge_attr)
    assert torch.equal(message[3:], torch.zeros(3, 16))
    assert (message[:3].norm(dim=-1) > 1).all()
    # no self loop: stock 0's message depends on its neighbour 1 only, not on itself
    (grad,) = torch.autograd.grad(message[0] @ torch.randn(16), h)  # (a LayerNorm output sums to 0)
    assert grad[0].abs().max() == 0 and grad[1].abs().max() > 0 and grad[2:].abs().max() == 0
    # with isolated stocks in the batch the gradients stay small (a constant vector's LayerNorm would blow up)
    model(x, edge_index, edge_attr)["point"].sum().backward()
    gat_norm = torch.cat([p.grad.flatten() for p in model.gat.parameters() if p.grad is not None]).norm()
    assert torch.isfinite(gat_norm) and gat_norm < 1e3


def test_the_shortcut_reads_the_last_day_and_the_neighbours_mean():
    model = make_model()
    shortcut = model.shortcut
    assert shortcut is not None and torch.equal(shortcut.proj.weight, torch.zeros_like(shortcut.proj.weight))
    with torch.no_grad():
        shortcut.proj.weight.copy_(torch.eye(16, 16))  # own features -> 0..7, neighbour mean -> 8..15
    x_last = torch.randn(4, 8)
    edge_index = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])  # stock 0 hears 1 and 2; 3 is isolated
    edge_attr = torch.tensor([[0.5, 0, 0], [-0.25, 0, 0], [0.5, 0, 0], [-0.25, 0, 0]])
    out, to_heads = shortcut(x_last, edge_index, edge_attr)
    assert to_heads is None  # the default enters the embedding only
    torch.testing.assert_close(out[:, :8], x_last)
    expected = (0.5 * x_last[1] + 0.25 * x_last[2]) / 0.75  # weighted by |corr|
    torch.testing.assert_close(out[0, 8:], expected)
    torch.testing.assert_close(out[1, 8:], x_last[0])
    assert torch.equal(out[3, 8:], torch.zeros(8))


@pytest.mark.parametrize("where", ["heads", "both"])
def test_the_shortcut_to_the_heads_adds_a_linear_map_per_horizon_to_every_output(where):
    """Against a hand-computed reference: point and quantiles move by (W u + b) * target_scale, where u is the
    last day's features and their |corr|-weighted neighbour mean; the shortcut starts at zero."""
    scale = [0.01, 0.02, 0.03, 0.05]
    cfg = model_cfg("model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2",
                    f"model.shortcut_to={where}")  # fmt: skip
    torch.manual_seed(0)
    model = ATFTGATFAN(8, HORIZONS, list(cfg.quantiles), cfg, target_scale=scale).eval()
    assert (model.shortcut.proj is not None) == (where == "both")
    x = torch.randn(4, 10, 8)
    edge_index = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])
    edge_attr = torch.tensor([[0.5, 0, 0], [-0.25, 0, 0], [0.5, 0, 0], [-0.25, 0, 0]])
    before = model(x, edge_index, edge_attr)
    weight, bias = torch.randn(4, 16), torch.randn(4)
    with torch.no_grad():
        model.shortcut.to_heads.weight.copy_(weight)
        model.shortcut.to_heads.bias.copy_(bias)
    after = model(x, edge_index, edge_attr)
    x_last = x[:, -1]
    neighbours = torch.stack(
        [(0.5 * x_last[1] + 0.25 * x_last[2]) / 0.75, x_last[0], x_last[0], torch.zeros(8)]
    )
    expected = (torch.cat([x_last, neighbours], dim=-1) @ weight.T + bias) * torch.tensor(scale)  # [4, 4]
    torch.testing.assert_close(after["point"] - before["point"], expected)
    torch.testing.assert_close(
        after["quantiles"] - before["quantiles"], expected[..., None].expand(-1, -1, 5)
    )


def test_the_default_shortcut_keeps_its_checkpoint_names():
    """Checkpoints trained before ``shortcut_to`` existed load into the default model."""
    names = set(make_model().state_dict())
    assert {"shortcut.proj.weight", "shortcut.proj.bias"} <= names
    assert not any(n.startswith("shortcut.to_heads") for n in names)


def test_fan_separates_the_dominant_frequency():
    fan = FrequencyAdaptiveNorm(n_features=2, top_k=1)
    t = torch.arange(32, dtype=torch.float32)
    slow = 3 * torch.sin(2 * math.pi * 2 * t / 32)  # the dominant component
    noise = 0.1 * torch.randn(32)
    x = torch.stack([slow + noise, noise], dim=-1)[:, None]  # [L=32, N=1, F=2]: time-major
    main, residual = fan.split(x)
    assert torch.allclose(main + residual, x, atol=1e-5)
    assert torch.allclose(main[:, 0, 0], slow, atol=0.1)  # the top-1 frequency is the sine
    assert residual[:, 0, 0].std() < 0.2
    out = fan(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("length", [20, 15, 60])
def test_fan_split_matches_numpy_fft(length):
    """The split by DFT matrices equals numpy's rfft, the top-k powers of each channel kept, and irfft."""
    generator = torch.Generator().manual_seed(length)
    x = torch.randn(40, length, 6, generator=generator).cumsum(1)  # random walks: a level and a trend
    top_k = 4
    main, residual = FrequencyAdaptiveNorm(n_features=6, top_k=top_k).split(x.transpose(0, 1))  # [L, N, F]
    main, residual = main.transpose(0, 1), residual.transpose(0, 1)  # [N, L, F]
    spectrum = np.fft.rfft(x.double().numpy(), axis=1)  # [N, K, F]
    order = np.argsort(-np.abs(spectrum), axis=1, kind="stable")  # by amplitude, per window and channel
    kept = np.zeros(spectrum.shape, dtype=bool)
    np.put_along_axis(kept, order[:, :top_k], True, axis=1)
    expected = np.fft.irfft(np.where(kept, spectrum, 0), n=length, axis=1)
    scale = np.abs(x.numpy()).max()
    np.testing.assert_allclose(main.numpy(), expected, atol=1e-5 * scale)
    np.testing.assert_allclose((main + residual).numpy(), x.numpy(), atol=1e-5 * scale)


@pytest.mark.parametrize("vsn", ["true", "false"])
def test_the_time_major_encoder_equals_a_batch_major_reference(vsn):
    """``encode`` works time-major. The same layers applied to batch-major windows, with FAN by numpy's FFT and
    full causal attention over every step (its last row kept), give the same embedding."""
    model = make_model("model.dropout=0", f"model.vsn.enabled={vsn}").eval()
    model.vsn.record = True  # kept by the VSN, ignored by the plain linear embedding
    enc, hidden, heads = model.temporal, 16, 2
    x = torch.randn(6, 20, 8, generator=torch.Generator().manual_seed(3)).cumsum(1)  # [N, L, F]
    with torch.no_grad():
        spectrum = np.fft.rfft(x.double().numpy(), axis=1)  # [N, K, F]
        order = np.argsort(-np.abs(spectrum), axis=1, kind="stable")
        kept = np.zeros(spectrum.shape, dtype=bool)
        np.put_along_axis(kept, order[:, : model.fan.top_k], True, axis=1)
        main = torch.from_numpy(np.fft.irfft(np.where(kept, spectrum, 0), n=20, axis=1)).float()
        centered = (x - main) - (x - main).mean(1, keepdim=True)
        std = (centered.square().mean(1, keepdim=True) + model.fan.eps).sqrt()
        e = model.vsn(centered / std + model.fan.removed_proj(main))  # [N, L, H]
        lstm = torch.nn.LSTM(hidden, hidden, batch_first=True)
        lstm.load_state_dict(enc.lstm.state_dict())
        s = enc.lstm_norm(e + F.glu(enc.lstm_gate(lstm(e)[0]), dim=-1))  # [N, L, H]
        q, k, v = (t.reshape(6, 20, heads, -1).transpose(1, 2) for t in enc.qkv(s).split(hidden, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, -1]  # [N, heads, d]
        a = enc.attn_out(a.reshape(6, hidden))
        expected = enc.ffn(enc.attn_norm(s[:, -1] + F.glu(enc.attn_gate(a), dim=-1)))
        reference_weights = getattr(model.vsn, "weights", None)  # [N, L, F]: the batch-major call's (VSN on)
        torch.testing.assert_close(model.encode(x), expected, atol=1e-5, rtol=1e-4)
        if vsn == "true":  # the weights read [N, L, F] whatever the encoder's layout
            torch.testing.assert_close(model.selection_weights, reference_weights, atol=1e-6, rtol=1e-5)


def test_fast_dropout_draws_its_mask_from_the_generator_16_bits_an_element():
    """Output = x * keep / (1 - p'), keep read from torch's 64-bit draws as little-endian signed 16-bit words
    (a numpy reference), p' = round(p * 2^16) / 2^16; the mask differs from call to call, not seed to seed."""
    dropout = FastDropout(0.2).train()
    x = torch.randn(3, 7, 11)  # 231 elements: not a multiple of 4
    torch.manual_seed(5)
    out = dropout(x)
    torch.manual_seed(5)
    draws = torch.empty(58, dtype=torch.int64).random_(-(2**63), None).numpy()  # ceil(231 / 4) draws
    words = draws.view("<i2")[: x.numel()].reshape(x.shape)  # uniform over [-2^15, 2^15)
    threshold = round(0.2 * 65536)
    expected = np.where(words >= threshold - 32768, x.numpy() * 65536 / (65536 - threshold), 0.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    torch.manual_seed(5)
    assert torch.equal(dropout(x), out)  # same seed, same mask
    assert not torch.equal(dropout(x), out)  # the next call draws anew


def test_fast_dropout_drops_each_element_independently_with_probability_p():
    torch.manual_seed(0)
    p, n = 0.2, 4_000_000
    dropped = (FastDropout(p).train()(torch.ones(n)) == 0).double()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean().item() - p) < 5 * sigma
    lanes = dropped.view(-1, 4).mean(0)  # the four 16-bit words of each 64-bit draw
    assert (lanes - p).abs().max().item() < 5 * sigma * 2
    d = dropped - dropped.mean()
    for lag in (1, 2, 3, 4):  # within a draw and across draws
        corr = (d[:-lag] * d[lag:]).mean() / d.var()
        assert abs(corr.item()) < 5 / math.sqrt(n)


def test_fast_dropout_keeps_the_expectation_its_gradient_and_the_identity_when_off():
    torch.manual_seed(1)
    x = torch.full((100_000,), 2.0, requires_grad=True)
    out = FastDropout(0.1).train()(x)
    assert abs(out.mean().item() - 2.0) < 0.01
    out.sum().backward()
    assert torch.equal(x.grad, out.detach() / 2.0)  # d out / d x: the mask times the scale
    y = torch.randn(5, 3)
    assert FastDropout(0.1).eval()(y) is y and FastDropout(0.0).train()(y) is y
    assert FastDropout(0.3).train()(y.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.0)


def test_variable_selection_weights_are_per_step_and_sum_to_one():
    vsn = VariableSelection(n_features=5, hidden=8, dropout=0.0)
    vsn(torch.randn(3, 4, 5))
    assert vsn.weights is None  # not kept unless asked: an [N, L, F] tensor per step
    vsn.record = True
    out = vsn(torch.randn(3, 4, 5))
    assert out.shape == (3, 4, 8)
    assert vsn.weights.shape == (3, 4, 5)
    assert torch.allclose(vsn.weights.sum(-1), torch.ones(3, 4))


@pytest.mark.parametrize(
    "overrides",
    [(), ("model.head.use_layernorm=true",), ("model.head.layer_scale=0",), ("model.head.variant=apex",)],
)
def test_the_heads_computed_together_equal_each_head_alone(overrides):
    """``heads_forward`` stacks the heads' parameters; head by head, with their own modules, the forecasts
    and every gradient are the same (dropout off)."""
    model = make_model("model.dropout=0", *overrides).eval()
    heads = model.heads
    with torch.no_grad():  # distinct parameters per head, so a mix-up of heads would show
        for p in heads.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    z = torch.randn(9, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)

    def alone(head):  # the head's own modules, one by one
        u = head.norm(z)
        if head.mlp is not None:
            delta = head.mlp(u)
            u = u + (delta * head.layer_scale if head.layer_scale is not None else delta)
        out = head.out(u)
        return out[:, 0], torch.cat([out[:, 1:2], out[:, 1:2] + F.softplus(out[:, 2:]).cumsum(-1)], dim=-1)

    def one_by_one():
        points, quantiles = zip(*(alone(head) for head in heads), strict=True)
        return torch.stack(points), torch.stack(quantiles)

    results = []
    for compute in (lambda: heads_forward(heads, z), one_by_one):
        heads.zero_grad()
        z.grad = None
        point, quantiles = compute()
        assert point.shape == (4, 9) and quantiles.shape == (4, 9, 5)
        (point.square().sum() + (quantiles * torch.arange(5.0)).sum()).backward()
        results.append([point, quantiles, z.grad] + [p.grad for p in heads.parameters()])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_quantile_names():
    assert [quantile_name(q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)] == ["q05", "q25", "q50", "q75", "q95"]
    assert quantile_name(0.975) == "q97.5"


def test_target_scale_sets_the_unit_of_each_horizon():
    cfg = model_cfg("model.hidden_size=16", "model.gat.enabled=false")
    torch.manual_seed(0)
    unit = ATFTGATFAN(8, HORIZONS, list(cfg.quantiles), cfg).eval()
    torch.manual_seed(0)
    scaled = ATFTGATFAN(8, HORIZONS, list(cfg.quantiles), cfg, target_scale=[1.0, 2.0, 3.0, 4.0]).eval()
    x = torch.randn(6, 10, 8)
    a, b = unit(x), scaled(x)
    assert torch.allclose(b["point"], a["point"] * torch.tensor([1.0, 2.0, 3.0, 4.0]), atol=1e-6)


@pytest.mark.parametrize("hidden", [64, 128, 256])
def test_parameter_counts_match_the_readme(hidden):
    """README's table of default parameter counts (94 features, 4 horizons, 5 quantiles) must stay true."""
    documented = {64: 195_506, 128: 660_210, 256: 2_425_202}
    cfg = model_cfg(f"model.hidden_size={hidden}")
    model = ATFTGATFAN(94, HORIZONS, list(cfg.quantiles), cfg)
    assert count_parameters(model) == documented[hidden]
    # the previous system's variable selection alone held 16.5M parameters; here it is a small share
    assert count_parameters(model.vsn) < 0.25 * count_parameters(model)


def test_a_tiny_model_overfits_a_tiny_panel():
    """Memorizing 2 days of 16 stocks is the least a model that can learn must do."""
    torch.manual_seed(0)
    model = make_model("model.dropout=0")
    x = torch.randn(32, 10, 8)
    y = torch.randn(32, 4) * 0.02
    edge_index, edge_attr = two_day_graph(32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = ((model(x, edge_index, edge_attr)["point"] - y) ** 2).mean()
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.02 * first


def test_top_k_mask_keeps_exactly_what_topk_keeps_ties_included():
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(11, 300, 7, generator=generator)  # [K, N, F]: distinct values
    values[:, :40] = torch.randint(0, 3, (11, 40, 7), generator=generator).float()  # ties at the k-th value
    for k in (1, 3, 5, 11):
        expected = torch.zeros_like(values, dtype=torch.bool).scatter_(0, values.topk(k, dim=0).indices, True)
        assert torch.equal(top_k_mask(values, k), expected)


def test_checkpointed_chunks_give_the_same_forecasts_and_gradients():
    """model.checkpoint_chunk recomputes the per-stock encoder in the backward pass: same function, same
    gradients (dropout off, so no random draw differs)."""
    cfg = load_config(overrides=["model.hidden_size=16", "model.gat.heads=2", "model.temporal.attention_heads=2",
                                 "model.dropout=0", "model.graph.mode=none"], env={}).cfg  # fmt: skip
    torch.manual_seed(0)
    plain = ATFTGATFAN(6, HORIZONS, [0.1, 0.5, 0.9], cfg.model)
    chunked = ATFTGATFAN(6, HORIZONS, [0.1, 0.5, 0.9], cfg.model)
    chunked.load_state_dict(plain.state_dict())
    chunked.checkpoint_chunk = 7  # 30 stocks: chunks of 7, 7, 7, 7, 2
    x = torch.randn(30, 20, 6, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (plain, chunked):
        out = model(x)
        (out["point"].square().sum() + out["quantiles"].sum()).backward()
        outs.append(
            (out["point"].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        )
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert len(outs[0][1]) == len(outs[1][1])
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_on_a_cpu_attention_runs_in_float32_under_bf16_autocast(monkeypatch):
    """torch's CPU attention kernel is slower in bf16 than in float32: under autocast the CPU attends in
    float32 (written out, ``last_step_attention``), and the projections around it still run in bf16."""
    seen = []
    attend = atft_gat_fan.last_step_attention

    def recorded(q, k, v, heads):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return attend(q, k, v, heads)

    monkeypatch.setattr(atft_gat_fan, "last_step_attention", recorded)
    torch.manual_seed(0)
    encoder = TemporalEncoder(hidden=16, layers=1, heads=2, dropout=0.0).eval()
    projected = []
    encoder.attn_out.register_forward_hook(lambda _m, _i, out: projected.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(torch.randn(8, 5, 16))
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]
    assert projected == [torch.bfloat16]
    with torch.autocast("cpu", enabled=False):  # without autocast nothing changes: float32 throughout
        seen.clear()
        encoder(torch.randn(8, 5, 16))
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]


def test_the_written_out_attention_equals_torchs_kernel():
    """``last_step_attention`` (the CPU's) and ``scaled_dot_product_attention`` (a GPU's) give the same
    output and the same gradients, on time-major keys as the encoder holds them."""
    generator = torch.Generator().manual_seed(6)
    length, n, heads, d = 7, 5, 4, 3
    q, k, v = (torch.randn(*shape, generator=generator, requires_grad=True)
               for shape in ((n, heads * d), (length, n, heads * d), (length, n, heads * d)))  # fmt: skip
    weight = torch.randn(n, heads * d, generator=generator)
    ours = atft_gat_fan.last_step_attention(q, k, v, heads)
    (ours * weight).sum().backward()
    ours_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    q4, k4, v4 = (t.reshape(-1, n, heads, d).permute(1, 2, 0, 3) for t in (q[None], k, v))  # [N, h, L, d]
    theirs = F.scaled_dot_product_attention(q4, k4, v4).reshape(n, heads * d)
    (theirs * weight).sum().backward()
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    for a, b in zip(ours_grads, (q.grad, k.grad, v.grad), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
