"""ATFT-GAT-FAN: the flagship model, in the order that data flows through it.

One day's cross-section of stock windows goes in; per-horizon point and quantile forecasts come out:

    x [N, L, F]  ->  FAN  ->  variable selection  ->  LSTM + causal attention  ->  h [N, H]
                                                                          |
                               day graph (edge_index, edge_attr)  ->  GATv2  ->  g [N, H] (neighbours' message)
                                                                          |
                                     gated fusion  z = h + gate * rescale(g)
    x[:, -1] and its neighbour mean  ->  linear shortcut  ->  z + s  ->  heads  ->  forecasts (+ its own
                                                                     per-horizon map, with shortcut_to)

N is the number of stock-windows in the batch (several days concatenated; the graph never links two days),
L the lookback, F the features, H the hidden size. Inside the encoder the windows are time-major, [L, N, F]:
the LSTM's own layout, in which FAN's spectra are computed too, so no copy is made between them. Every part
has a switch so that it can be ablated: ``fan.enabled``, ``vsn.enabled``, ``gat.enabled`` / ``graph.mode=none``, ``shortcut``, ``head.variant``.

The previous system gave every feature its own gated residual network inside the variable selection
network (16.5M of its 20M parameters). Here each feature has its own *linear* embedding, and one shared
network computes the per-feature selection weights: the weights stay per variable and interpretable, and
the embedding of a whole time step is two matrix products (see ``VariableSelection``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import GATv2Conv

from atft.config.schema import HeadConfig, ModelConfig
from atft.models.graph import uses_graph

EDGE_DIM = 3  # (corr, same_sector, same_market): see atft.models.graph


def quantile_name(q: float) -> str:
    """The one name of a quantile forecast everywhere (predictions files, reports): 0.05 -> ``q05``, 0.975 -> ``q97.5``."""
    pct = round(q * 100, 6)
    return f"q{int(pct):02d}" if pct == int(pct) else f"q{pct:g}"


class FastDropout(nn.Module):
    """``nn.Dropout`` with CPU masks at a third of the cost: 16 random bits an element from torch's generator.

    On the CPU ``bernoulli_`` draws one element at a time (~7.5 ns each on the developers' machines): the
    dropout over the LSTM's output alone, [N, L, H], was ~9% of the ``cpu`` preset's training step, all the
    masks ~10%. Here each 64-bit draw of torch's generator decides four elements, 16 bits each: an element
    is dropped when its bits, read as a signed integer, fall below t - 2^15 with t = round(p * 2^16), so
    with probability p' = t / 2^16 (|p' - p| <= 2^-17), and the kept ones are scaled by 1 / (1 - p').
    Elements are still dropped independently and the expectation of the output is the input, as with
    ``nn.Dropout``; the draws themselves differ from its. Off the CPU (CUDA's Philox masks are already
    fast) it is ``F.dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.threshold = round(self.p * 65536)  # drop below this, out of 2^16

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [...] -> [...]
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
        u = bits.view(torch.int16)[:n].view(x.shape)  # uniform over [-2^15, 2^15)
        keep = u >= self.threshold - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GatedResidualNetwork(nn.Module):
    """TFT's GRN: a two-layer MLP whose output passes a GLU gate, added to a skip path, then LayerNorm."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, 2 * d_out)  # value and gate of the GLU
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.dropout = FastDropout(dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_out]
        hidden = self.dropout(F.elu(self.fc1(a)))
        return self.norm(self.skip(a) + F.glu(self.fc2(hidden), dim=-1))


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """[K, ...] -> bool [K, ...]: the k largest entries of each column (along the first axis), exactly as ``topk``.

    ``topk`` costs ~150 ns a column, and FAN has ~10^5 columns of K = L//2+1 entries a batch (a third of the
    model's forward at lookback 20). Here a running top-k over the K rows (elementwise max/min on whole
    tensors, ~4x faster) gives each column's k-th largest value; where exactly k entries reach it, they are
    the top k. The columns with a tie at the k-th value (a constant or two-valued feature over the window:
    ~2% of them) go to ``topk``, so the choice among tied entries stays ``topk``'s.
    """
    top: list[torch.Tensor] = []  # descending: top[0] >= top[1] >= ... >= top[k-1]
    for v in values:
        for i, kept in enumerate(top):  # insert v: the larger stays at rank i, the smaller moves on
            top[i] = torch.maximum(kept, v)
            if i + 1 < k:  # what falls below rank k - 1 is dropped, so it is not computed
                v = torch.minimum(kept, v)
        if len(top) < k:
            top.append(v)
    keep = values >= top[-1]  # [K, ...]
    tied = keep.sum(0) != k  # [...]: also catches NaN (compares False)
    if tied.any():
        columns = values[:, tied]  # [K, T]
        first = columns.topk(k, dim=0).indices  # [k, T]
        keep[:, tied] = torch.zeros_like(columns, dtype=torch.bool).scatter_(0, first, True)
    return keep


def real_dft(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The real DFT of ``length`` steps as two float32 matrices on ``device``, K = length//2 + 1 frequencies:

    - ``forward`` [2K, L]: ``forward @ x`` is ``rfft(x)`` along the first axis, real parts then imaginary;
    - ``inverse`` [L, 2K]: ``inverse @ spectrum`` is ``irfft`` of it, n = L.

    At FAN's lengths (L ~ 20-60) one matrix product over every window and channel beats ``torch.fft``, whose
    complex tensors also make the masking dear; the values agree to float32 rounding (~1e-7 relative).
    Built on each call (~0.1 ms, against a step of ~50 ms), which keeps it a constant for ``torch.compile``.
    """
    k = torch.arange(length // 2 + 1, dtype=torch.float64, device=device)  # [K]
    step = torch.arange(length, dtype=torch.float64, device=device)  # [L]
    angle = 2 * math.pi * k[:, None] * step / length  # [K, L]
    forward = torch.cat([angle.cos(), -angle.sin()])  # [2K, L]
    weight = torch.full_like(k, 2.0)  # irfft counts each frequency twice (k and L-k) but DC and Nyquist once
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    inverse = torch.cat([weight[:, None] * angle.cos(), -weight[:, None] * angle.sin()]).T / length  # [L, 2K]
    return forward.float(), inverse.float()


class FrequencyAdaptiveNorm(nn.Module):
    """FAN: split each window's channels into their top-k frequency components and a residual.

    The dominant frequencies (by amplitude over the lookback, per window and channel) carry the
    non-stationary part: level, trend, slow cycles. The encoder sees the residual standardized over the
    window, plus a learned projection of what was removed, so that no information is thrown away but
    the shifting part enters through a path the model learns to scale.
    """

    def __init__(self, n_features: int, top_k: int, eps: float = 1e-2) -> None:
        super().__init__()
        self.top_k, self.eps = top_k, eps
        self.removed_proj = nn.Linear(n_features, n_features)
        with torch.no_grad():  # start as "residual + removed part", i.e. close to the raw input
            self.removed_proj.weight.copy_(torch.eye(n_features))
            self.removed_proj.bias.zero_()

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(main, residual) of time-major windows x [L, N, F], both [L, N, F], with main + residual == x; main
        holds the top-k frequencies of each channel."""
        length, n, n_features = x.shape
        forward, inverse = real_dft(length, x.device)
        with torch.autocast(x.device.type, enabled=False):  # ranking the powers needs float32, not bf16
            columns = x.float().reshape(length, n * n_features)  # [L, N*F]: one column a channel
            spectrum = (forward @ columns).view(2, -1, n * n_features)  # [2, K, N*F]: real, imaginary
            power = spectrum.square().sum(0)  # [K, N*F]: ranks like the amplitude, without a sqrt
            keep = top_k_mask(power, min(self.top_k, power.shape[0]))  # [K, N*F]
            main = (inverse @ (spectrum * keep).view(-1, n * n_features)).view(length, n, n_features)
            return main, columns.view(length, n, n_features) - main

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [L, N, F] -> [L, N, F]
        main, residual = self.split(x)
        centered = residual - residual.mean(0, keepdim=True)
        std = (centered.square().mean(0, keepdim=True) + self.eps).sqrt()  # torch.var is ~10x slower
        return (centered / std + self.removed_proj(main)).to(x.dtype)


class VariableSelection(nn.Module):
    """Per-time-step feature weights, and the weighted sum of per-feature linear embeddings.

    Feature f at a step has value x_f and embedding x_f * W_f + b_f (W_f, b_f in R^H). A shared GRN reads
    the whole step and gives softmax weights a_f. The selected embedding

        sum_f a_f (x_f W_f + b_f) = (a * x) @ W + a @ B          W, B: [F, H]

    is two matrix products, never the [N, L, F, H] tensor of all embeddings. It works step by step, so the
    windows may come batch- or time-major. With ``record = True`` the weights of the last call are kept
    (detached, in the layout of the input) for interpretation.
    """

    def __init__(self, n_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_features, hidden) / math.sqrt(n_features))
        self.B = nn.Parameter(torch.zeros(n_features, hidden))
        # no dropout on the selector: its masks over every step's features cost more than the rest of the
        # step's dropout
        self.selector = GatedResidualNetwork(n_features, hidden, n_features, dropout=0.0)
        self.post = GatedResidualNetwork(hidden, hidden, hidden, dropout)
        self.record = False  # keep each call's weights (one per step and feature): off while training
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., F] -> [..., H], e.g. [L, N, F] -> [L, N, H]
        a = torch.softmax(self.selector(x), dim=-1)  # [..., F]
        if self.record:
            self.weights = a.detach()
        return self.post((a * x) @ self.W + a @ self.B)


def last_step_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of one query per window over all its steps: q [N, H], k and v [L, N, H] -> [N, H].

    What ``scaled_dot_product_attention`` computes for a single query, its weights written out over the
    time-major keys. The CPU attends with this: torch's CPU kernel wants [N, heads, L, H/heads], copies the
    keys and values into it, and took ~1.25x this function's time (forward and backward, at the `cpu`
    preset's shape; docs/performance.md). A GPU uses torch's fused kernel.
    """
    length, n, hidden = k.shape
    d = hidden // heads
    k, v = k.reshape(length, n, heads, d), v.reshape(length, n, heads, d)
    weights = ((k * q.view(n, heads, d)).sum(-1) / math.sqrt(d)).softmax(dim=0)  # [L, N, heads]
    return (weights[..., None] * v).sum(0).reshape(n, hidden)  # [N, heads, d] -> [N, H]


class TemporalEncoder(nn.Module):
    """LSTM, then causal multi-head self-attention over its outputs, each with a gated residual (TFT).

    Only the last step's embedding is used downstream, and with causal masking the last step attends to
    every step: so only its query is computed, which is exactly the last row of full causal attention.
    The windows come time-major, [L, N, H], the layout oneDNN's LSTM computes in: batch-major, the LSTM
    copied its input, its output and both their gradients into it and back, every step.
    """

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(
                f"hidden size {hidden} must be divisible by model.temporal.attention_heads={heads}"
            )
        self.heads = heads
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0)
        self.lstm_gate = nn.Linear(hidden, 2 * hidden)
        self.lstm_norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_gate = nn.Linear(hidden, 2 * hidden)
        self.attn_norm = nn.LayerNorm(hidden)
        self.dropout = FastDropout(dropout)
        self.ffn = GatedResidualNetwork(hidden, hidden, hidden, dropout)

    def forward(self, e: torch.Tensor) -> torch.Tensor:  # [L, N, H] -> [N, H]
        _, n, hidden = e.shape
        out, _ = self.lstm(e)  # [L, N, H]
        s = self.lstm_norm(e + F.glu(self.lstm_gate(self.dropout(out)), dim=-1))  # [L, N, H]
        # keys and values of every step, but the query of the last step alone, which sees every step, so no
        # mask is needed (the rows of qkv are q, k, v: a third of its work is skipped)
        kv = F.linear(s, self.qkv.weight[hidden:], self.qkv.bias[hidden:])  # [L, N, 2H]
        q = F.linear(s[-1], self.qkv.weight[:hidden], self.qkv.bias[:hidden])  # [N, H]
        if s.device.type == "cpu":
            # torch's CPU attention kernel in bf16 takes ~1.8x its float32 time at these shapes, so under
            # autocast the CPU attends in float32, with the weights written out (docs/performance.md)
            with torch.autocast("cpu", enabled=False):
                k, v = kv.float().split(hidden, dim=-1)  # [L, N, H] each
                a = last_step_attention(q.float(), k, v, self.heads)  # [N, H]
        else:
            k, v = kv.split(hidden, dim=-1)  # [L, N, H] each
            shape = (-1, n, self.heads, hidden // self.heads)
            q, k, v = (t.reshape(shape).permute(1, 2, 0, 3) for t in (q[None], k, v))  # [N, heads, len, d]
            a = F.scaled_dot_product_attention(q, k, v).reshape(n, hidden)  # [N, heads, 1, d] -> [N, H]
        a = self.attn_out(a)  # [N, H]
        last = self.attn_norm(s[-1] + F.glu(self.attn_gate(self.dropout(a)), dim=-1))  # [N, H]
        return self.ffn(last)


class CrossSectionGAT(nn.Module):
    """GATv2 over the day's stock graph: what each stock hears from the stocks it is correlated with.

    The output is the neighbours' message alone: no self loops and no residual to the stock's own
    embedding, because the fusion that follows already adds it back. With both, the message was mostly the
    stock itself and the lead-lag signal of its neighbours was diluted (test RankIC 5d 0.034 -> 0.060 on the
    synthetic market; docs/decisions.md). A stock without neighbours that day hears nothing (zeros).
    Each further layer is one more hop over the previous layer's messages. The convolutions have no bias:
    the LayerNorm after them has one, and a bias feeding the norm collected the gradient of every stock of
    the batch (a norm of ~1,800 at the first step, against < 1 for every other module).
    """

    def __init__(self, hidden: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} must be divisible by model.gat.heads={heads}")
        self.convs = nn.ModuleList(
            GATv2Conv(
                hidden,
                hidden // heads,
                heads=heads,
                edge_dim=EDGE_DIM,
                dropout=dropout,
                add_self_loops=False,
                bias=False,
            )
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        # Set by the daily ranked list (``keep_attention``): the last layer's attention of each edge,
        # averaged over heads, [E], in the order of edge_index; None otherwise (training keeps nothing).
        self.keep_attention = False
        self.attention: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        heard = torch.zeros(h.shape[0], 1, dtype=torch.bool, device=h.device)  # [N, 1]
        heard[edge_index[1]] = True  # targets of at least one edge
        g = h  # [N, H]
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if self.keep_attention and i == len(self.convs) - 1:
                # without self loops PyG returns the edges as given, so alpha [E, heads] lines up with them
                m, (_, alpha) = conv(g, edge_index, edge_attr.to(g.dtype), return_attention_weights=True)
                self.attention = alpha.detach().float().mean(-1)  # [E]
            else:
                m = conv(g, edge_index, edge_attr.to(g.dtype))
            # Masked after the norm: an isolated stock's message would be a constant vector, whose
            # LayerNorm has ~zero variance and a gradient of ~1/sqrt(eps) (measured: 1e7 at step 0).
            g = torch.where(heard, norm(F.elu(m)), 0.0)
        return g


class GatedFusion(nn.Module):
    """z = h + sigmoid(W [h, g']) * g', where g' is the GAT output rescaled to the norm of h, row by row.

    Rescaling keeps the graph path from swamping (or vanishing against) the temporal embedding whatever
    the GAT's own scale; the gate learns how much of it each stock takes. ``gate_stats`` of the last call
    (mean, std) are kept for logging.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden)
        self.gate_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # [N, H], [N, H] -> [N, H]
        # A zero message (no neighbours) stays zero: the clamp keeps its gradient finite.
        g = g * (h.norm(dim=-1, keepdim=True) / g.norm(dim=-1, keepdim=True).clamp_min(1e-3))
        gate = torch.sigmoid(self.gate(torch.cat([h, g], dim=-1)))
        detached = gate.detach().float()
        self.gate_stats = (detached.mean(), detached.std())  # tensors: read (and synced) only when logged
        return h + gate * g


def neighbour_mean(x: torch.Tensor, edge_index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[N, F] -> [N, F]: each node's ``weight``-weighted mean of its sources' rows (zeros without any)."""
    src, dst = edge_index
    w = weight.to(x.dtype)  # [E]
    total = torch.zeros_like(x).index_add_(0, dst, x[src] * w[:, None])  # [N, F]
    norm = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, dst, w)  # [N]
    return total / norm.clamp_min(1e-6)[:, None]


class FeatureShortcut(nn.Module):
    """A linear path from the last day's raw features, and with the graph their neighbour mean, to the embedding.

    It gives the network the function class of a ridge regression on today's features and today's
    neighbours' features, which on the noisy panel the deep path alone does not reliably reach (docs/
    decisions.md). Zero at init, so training starts from the deep path alone; weight decay shrinks it as
    ridge would. The neighbour mean weighs each neighbour by |corr| (edge attribute 0); it is zero for a
    stock without neighbours, and for one whose neighbours all have corr 0 (too little shared history, or
    links that come from the sector alone in ``graph.mode=sector``).

    With ``to_heads`` (``model.shortcut_to`` heads or both) the same inputs also reach each horizon's forecast
    through a linear map of their own, added to the point and every quantile: a per-horizon ridge inside the
    model, which the shared embedding and the heads' MLP reach only indirectly.
    """

    def __init__(self, n_features: int, hidden: int | None, n_horizons: int | None, use_graph: bool) -> None:
        super().__init__()
        self.use_graph = use_graph
        n_in = n_features * (2 if use_graph else 1)
        self.proj = nn.Linear(n_in, hidden) if hidden else None
        self.to_heads = nn.Linear(n_in, n_horizons) if n_horizons else None
        for layer in (self.proj, self.to_heads):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self, x_last: torch.Tensor, edge_index: torch.Tensor | None, edge_attr: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # [N, F] -> [N, H] or None, [N, n_horizons] or None
        u = x_last
        if self.use_graph:
            neighbours = neighbour_mean(x_last, edge_index, edge_attr[:, 0].abs())  # [N, F]
            u = torch.cat([x_last, neighbours], dim=-1)  # [N, 2F]
        to_embedding = self.proj(u) if self.proj is not None else None
        if self.to_heads is None:
            return to_embedding, None
        with torch.autocast(u.device.type, enabled=False):  # forecasts in full precision, like the heads'
            return to_embedding, self.to_heads(u.float())


class HorizonHead(nn.Module):
    """One horizon's forecast: a point prediction and quantiles that cannot cross.

    ``default``: a residual MLP block (optionally LayerNorm first, its output scaled by a learned
    LayerScale) and a linear output; ``apex``: the linear output alone. The output layer starts with
    weights of std ``init_std`` so that early predictions are small but not zero.

    Quantiles: the lowest is predicted directly and each next one adds a softplus increment, so
    q_1 <= q_2 <= ... by construction. A model's heads are computed together (``heads_forward``).
    """

    def __init__(self, hidden: int, n_quantiles: int, cfg: HeadConfig, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden) if cfg.use_layernorm else nn.Identity()
        self.mlp = None
        if cfg.variant == "default":
            self.mlp = nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), FastDropout(dropout), nn.Linear(hidden, hidden)
            )
            # layer_scale 0 switches the scaling off: a plain residual block
            scale = torch.full((hidden,), float(cfg.layer_scale)) if cfg.layer_scale > 0 else None
            self.layer_scale = nn.Parameter(scale) if scale is not None else None
        self.out = nn.Linear(hidden, 1 + n_quantiles)  # point, lowest quantile, increments
        self.init_std = float(cfg.init_std)
        self.reset_parameters()

    def reset_parameters(
        self, noise_std: float | None = None, generator: torch.Generator | None = None
    ) -> None:
        """Re-initialize the output layer (std ``init_std``, or ``noise_std`` when the degeneracy guard resets it)."""
        nn.init.normal_(self.out.weight, std=noise_std or self.init_std, generator=generator)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [N, H] -> [N], [N, Q]
        point, quantiles = heads_forward([self], z)
        return point[0], quantiles[0]


def heads_forward(
    heads: list[HorizonHead] | nn.ModuleList, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head on the same embeddings z [N, H] at once -> point [n_h, N], quantiles [n_h, N, Q].

    The heads keep their own parameters (and checkpoint names); here each layer's are stacked, so a layer is
    one batched matrix product for all horizons. On a CPU each small operator costs a few microseconds
    whatever its size: head by head, the four heads' forward and backward took 4.1-4.3 ms, ~9% of the
    `cpu` preset's step, and together they take 2.3-3.1 ms (docs/performance.md).
    """

    def stacked(get) -> torch.Tensor:  # one parameter of every head: [n_h, ...]
        return torch.stack([get(head) for head in heads])

    first = heads[0]
    if isinstance(first.norm, nn.LayerNorm):  # the same normalization for every head, then each its affine
        weight, bias = stacked(lambda head: head.norm.weight), stacked(lambda head: head.norm.bias)
        u = torch.addcmul(bias[:, None], F.layer_norm(z, z.shape[-1:], eps=first.norm.eps), weight[:, None])
    else:
        u = z.expand(len(heads), *z.shape)  # [n_h, N, H]
    if first.mlp is not None:  # Linear, GELU, FastDropout, Linear
        w1 = stacked(lambda head: head.mlp[0].weight).transpose(1, 2)  # [n_h, H, H]: (in, out)
        b1 = stacked(lambda head: head.mlp[0].bias)[:, None]  # [n_h, 1, H]
        w2 = stacked(lambda head: head.mlp[3].weight).transpose(1, 2)
        b2 = stacked(lambda head: head.mlp[3].bias)[:, None]
        hidden = first.mlp[2](F.gelu(torch.baddbmm(b1, u, w1)))  # [n_h, N, H]: one mask for all heads
        delta = torch.baddbmm(b2, hidden, w2)  # [n_h, N, H]
        if first.layer_scale is not None:
            delta = delta * stacked(lambda head: head.layer_scale)[:, None]
        u = u + delta
    with torch.autocast(u.device.type, enabled=False):  # bf16 keeps ~3 digits: forecasts would tie
        w_out = stacked(lambda head: head.out.weight).transpose(1, 2)  # [n_h, H, 1 + Q]
        b_out = stacked(lambda head: head.out.bias)[:, None]  # [n_h, 1, 1 + Q]
        out = torch.baddbmm(b_out, u.float(), w_out)  # [n_h, N, 1 + Q]
    point, lowest, steps = out[..., 0], out[..., 1:2], out[..., 2:]
    quantiles = torch.cat([lowest, lowest + F.softplus(steps).cumsum(-1)], dim=-1)  # [n_h, N, Q], ascending
    return point, quantiles


def horizon_outputs(
    heads: nn.ModuleList, h: torch.Tensor, target_scale: torch.Tensor, offset: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Every horizon head on the stock embeddings ``h`` [N, H], back in return units (the heads predict in
    units of each horizon's training-label std): the forward output every model of the engine returns.
    ``offset`` [N, n_horizons] (same units) shifts each horizon's point and quantiles alike."""
    point, quantiles = heads_forward(heads, h)  # [n_h, N], [n_h, N, Q]
    point, quantiles = point.T, quantiles.transpose(0, 1)  # [N, n_h], [N, n_h, Q]
    if offset is not None:
        point, quantiles = point + offset, quantiles + offset[..., None]
    scale = target_scale.to(point.dtype)
    return {
        "point": point * scale,  # [N, n_horizons]
        "quantiles": quantiles * scale[:, None],  # [N, n_horizons, Q]
        "embedding": h,
    }


class ATFTGATFAN(nn.Module):
    """The whole model. ``forward(x, edge_index, edge_attr)`` -> dict of

    - ``point``      [N, n_horizons]: the point forecast of each horizon's forward return;
    - ``quantiles``  [N, n_horizons, Q]: ascending quantile forecasts;
    - ``embedding``  [N, H]: the fused stock embedding the heads read.
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
        hidden, dropout = cfg.hidden_size, cfg.dropout
        self.horizons, self.quantiles = list(horizons), list(quantiles)
        # The heads work in units of each horizon's label std (from the training labels): returns of 1 and
        # 20 days differ in scale by ~4.5x, and an init_std means the same thing at every horizon.
        scale = torch.tensor(target_scale if target_scale is not None else [1.0] * len(horizons))
        self.register_buffer("target_scale", scale.float())
        self.fan = FrequencyAdaptiveNorm(n_features, cfg.fan.top_k) if cfg.fan.enabled else None
        if cfg.vsn.enabled:
            self.vsn: nn.Module = VariableSelection(n_features, hidden, dropout)
        else:  # ablation: one linear embedding of the whole step
            self.vsn = nn.Linear(n_features, hidden)
        self.temporal = TemporalEncoder(
            hidden, cfg.temporal.lstm_layers, cfg.temporal.attention_heads, dropout
        )
        self.use_graph = uses_graph(cfg)
        self.gat = CrossSectionGAT(hidden, cfg.gat.heads, cfg.gat.layers, dropout) if self.use_graph else None
        self.fusion = GatedFusion(hidden) if self.use_graph else None
        self.shortcut = None
        if cfg.shortcut:
            to_embedding = hidden if cfg.shortcut_to in ("embedding", "both") else None
            to_heads = len(horizons) if cfg.shortcut_to in ("heads", "both") else None
            self.shortcut = FeatureShortcut(n_features, to_embedding, to_heads, self.use_graph)
        self.heads = nn.ModuleList(HorizonHead(hidden, len(quantiles), cfg.head, dropout) for _ in horizons)
        self.checkpoint_chunk = int(getattr(cfg, "checkpoint_chunk", 0) or 0)  # absent from older checkpoints

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor | None = None, edge_attr: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        x_raw = x  # [N, L, F]
        if self.checkpoint_chunk and torch.is_grad_enabled():
            # each stock's history is encoded alone, so chunks of stocks give the same h; their
            # activations are recomputed in the backward pass instead of kept (model.checkpoint_chunk)
            parts = x.split(self.checkpoint_chunk)  # [chunk, L, F] each
            h = torch.cat([checkpoint(self.encode, part, use_reentrant=False) for part in parts])  # [N, H]
        else:
            h = self.encode(x)  # [N, H]
        if self.gat is not None:
            if edge_index is None or edge_attr is None:
                raise ValueError("the GAT is enabled but the batch has no graph: set model.graph.mode")
            h = self.fusion(h, self.gat(h, edge_index, edge_attr))  # [N, H]
        offset = None
        if self.shortcut is not None:
            s, offset = self.shortcut(x_raw[:, -1], edge_index, edge_attr)  # [N, H] or None, [N, n_h] or None
            h = h + s if s is not None else h
        return horizon_outputs(self.heads, h, self.target_scale, offset)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, F] -> [N, H]
        """Each stock's own history: FAN, variable selection, LSTM and attention (no stock sees another)."""
        x = x.transpose(0, 1)  # [L, N, F]: time-major from here on (a view; FAN's columns copy it once)
        if self.fan is not None:
            x = self.fan(x)  # [L, N, F]
        return self.temporal(self.vsn(x))  # [L, N, H] -> [N, H]

    @property
    def selection_weights(self) -> torch.Tensor | None:
        """Per-step feature weights [N, L, F] of the last forward pass (None without the VSN)."""
        weights = getattr(self.vsn, "weights", None)  # [L, N, F]: kept as the encoder computed them
        return weights.transpose(0, 1).contiguous() if weights is not None else None

    @property
    def gate_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of the fusion gate in the last forward pass (None without the graph or before one)."""
        return self.fusion.gate_stats if self.fusion is not None else None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
