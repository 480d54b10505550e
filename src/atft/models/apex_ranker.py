"""APEX-Ranker: a PatchTST encoder that ranks one day's stocks, in the order that data flows through it.

A light alternative to ATFT-GAT-FAN for the same job (a cross-section of stock windows in, per-horizon
forecasts out, trained by the same engine), selected with ``model.name=apex``. It reads no graph.

    x [N, L, F]  ->  each feature's series on its own (channel independence): [N*F, L]
                 ->  pad the start, cut into patches of patch_len days every stride days: [N*F, P, patch_len]
                 ->  one shared linear patch embedding + learned position: [N*F, P, D]
                 ->  Transformer encoder over the patches: [N*F, P, D]
                 ->  mean over patches, then one linear over all features' vectors: h [N, D]
                 ->  one head per horizon  ->  forecasts

N is the number of stock-windows in the batch (one or more days), L the lookback, F the features, D
``model.apex.d_model``, P the number of patches. The loader serves full windows only: x holds no NaN.

Patching keeps the most recent days. The window is padded at its *start* (the first day repeated) so
that the patches tile it exactly and the last patch ends on the last day; the previous system cut
patches from the start and dropped the last days of every window that did not fit (4 of them).
Positions are counted from the end: the most recent patch always has the same position embedding,
whatever the lookback.

Channel independence: every feature's series goes through the same patch embedding and encoder, so the
encoder learns temporal shapes shared by all features, at the cost of F sequences per stock. Which
feature a vector came from is known again only in the channel mix, whose linear weights are per feature.
There is no per-window normalization (PatchTST's RevIN): features are already standardized per date
across stocks, and a window's level relative to other stocks is the signal a ranker needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atft.config.schema import ApexConfig, ModelConfig
from atft.models.atft_gat_fan import HorizonHead, horizon_outputs


def patch_layout(length: int, patch_len: int, stride: int) -> tuple[int, int]:
    """(pad, n_patches) for a window of ``length`` days.

    ``pad`` days are added at the start so that ``(length + pad - patch_len) % stride == 0``: patch i
    covers padded days ``[i * stride, i * stride + patch_len)``, and the last one ends on the last day.
    A window shorter than one patch is padded to one patch.
    """
    if length < 1:
        raise ValueError(f"a window needs at least one day, got {length}")
    if length <= patch_len:
        return patch_len - length, 1
    pad = -(length - patch_len) % stride
    return pad, (length + pad - patch_len) // stride + 1


class PatchEmbedding(nn.Module):
    """Each feature's window cut into patches, each patch embedded by one shared linear map plus its position.

    The position table has ``max_patches`` rows; the last row is the most recent patch's.
    """

    def __init__(self, patch_len: int, stride: int, d_model: int, max_patches: int) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.proj = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.randn(max_patches, d_model) * 0.02)

    def patches(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, F] -> [N, F, P, patch_len]
        n, length, n_features = x.shape
        pad, _ = patch_layout(length, self.patch_len, self.stride)
        series = x.transpose(1, 2)  # [N, F, L]
        if pad:  # repeat the first day: the padding carries no day the window does not hold
            first = series[..., :1].expand(n, n_features, pad)  # [N, F, pad]
            series = torch.cat([first, series], dim=-1)  # [N, F, L + pad]
        return series.unfold(-1, self.patch_len, self.stride)  # [N, F, P, patch_len]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, F] -> [N * F, P, D]
        n, _, n_features = x.shape
        patches = self.patches(x)
        n_patches = patches.shape[2]
        if n_patches > len(self.position):
            raise ValueError(
                f"a {x.shape[1]}-day window makes {n_patches} patches, more than model.apex.max_patches="
                f"{len(self.position)}: raise model.apex.max_patches or model.apex.stride"
            )
        tokens = self.proj(patches) + self.position[-n_patches:]  # [N, F, P, D]
        return tokens.reshape(n * n_features, n_patches, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over one series' patches; every patch sees every patch (no mask).

    No dropout on the attention weights: it would force the slow unfused kernel on CPU (1.4x the time of
    the block), and the residual dropout of ``Block`` regularizes the same path.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B, P, D] -> [B, P, D]
        b, p, d = t.shape
        q, k, v = self.qkv(t).split(d, dim=-1)
        q, k, v = (z.view(b, p, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, P, D / heads]
        return self.proj(a.transpose(1, 2).reshape(b, p, d))  # [B, P, D]


class Block(nn.Module):
    """A pre-norm Transformer block: attention, then an MLP, each added back to its input."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B, P, D] -> [B, P, D]
        t = t + self.dropout(self.attn(self.ln1(t)))
        return t + self.dropout(self.mlp(self.ln2(t)))


class PatchEncoder(nn.Module):
    """``n_layers`` blocks and a final LayerNorm."""

    def __init__(self, cfg: ApexConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B, P, D] -> [B, P, D]
        for block in self.blocks:
            t = block(t)
        return self.norm(t)


class ChannelMix(nn.Module):
    """Mean over each series' patches, then one linear map from all F features' vectors to the embedding.

    The linear weights are per feature (an [F * D, D] matrix), so the embedding knows again which feature
    said what; the encoder before it did not.
    """

    def __init__(self, n_features: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(n_features * d_model, d_model)

    def forward(self, t: torch.Tensor, n: int) -> torch.Tensor:  # [N * F, P, D] -> [N, D]
        pooled = t.mean(1).reshape(n, -1)  # [N, F * D], feature-major
        return self.proj(self.dropout(pooled))


class ApexRanker(nn.Module):
    """The whole model. ``forward(x, edge_index=None, edge_attr=None)`` (the graph is ignored) -> dict of

    - ``point``      [N, n_horizons]: the point forecast of each horizon's forward return;
    - ``quantiles``  [N, n_horizons, Q]: ascending quantile forecasts;
    - ``embedding``  [N, D]: the stock embedding the heads read.

    Same constructor and outputs as ``ATFTGATFAN``; ``model.apex`` sizes it, ``model.head`` shapes its heads.
    """

    def __init__(
        self,
        n_features: int,
        horizons: list[int],
        quantiles: list[float],
        cfg: ModelConfig,
        target_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        apex = cfg.apex
        if apex.d_model % apex.n_heads:
            raise ValueError(
                f"model.apex.d_model={apex.d_model} must be divisible by model.apex.n_heads={apex.n_heads}"
            )
        if apex.stride > apex.patch_len:
            raise ValueError(
                f"model.apex.stride={apex.stride} exceeds model.apex.patch_len={apex.patch_len}: the days "
                "between two patches would never be seen"
            )
        self.horizons, self.quantiles = list(horizons), list(quantiles)
        # The heads work in units of each horizon's label std, as in ATFT-GAT-FAN.
        scale = torch.tensor(target_scale if target_scale is not None else [1.0] * len(horizons))
        self.register_buffer("target_scale", scale.float())
        self.patch_embed = PatchEmbedding(apex.patch_len, apex.stride, apex.d_model, apex.max_patches)
        self.encoder = PatchEncoder(apex)
        self.mix = ChannelMix(n_features, apex.d_model, apex.dropout)
        self.heads = nn.ModuleList(
            HorizonHead(apex.d_model, len(quantiles), cfg.head, apex.dropout) for _ in horizons
        )

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor | None = None, edge_attr: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        n = x.shape[0]  # x: [N, L, F]
        t = self.patch_embed(x)  # [N * F, P, D]
        t = self.encoder(t)  # [N * F, P, D]
        h = self.mix(t, n)  # [N, D]
        return horizon_outputs(self.heads, h, self.target_scale)

    @property
    def selection_weights(self) -> torch.Tensor | None:
        """None: APEX has no variable selection network (its per-feature weights are ``mix.proj``)."""
        return None

    @property
    def gate_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """None: APEX has no graph fusion gate."""
        return None
