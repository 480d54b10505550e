"""The typed configuration schema of ATFT: every setting, its type, default and rules.

Every setting lives in a small dataclass; OmegaConf turns the tree (rooted at ``ATFTConfig``) into a
structured (typed) config. Constraints are declared next to each field as ``field(metadata=...)``
rules, so adding a setting never means touching the validator:

- ``ge`` / ``gt`` / ``le`` / ``lt``: value >= / > / <= / < the bound;
- ``choices``: value is one of the given tuple; ``choices_noun`` says what the choices are (``"model"``)
  so that a refused value is answered with "the models that exist are ...";
- ``min_length`` / ``length``: a list has at least / exactly this many items;
- ``increasing``: list items are strictly increasing;
- ``date_range``: a ``[start, end]`` pair of strict ``YYYY-MM-DD`` dates with start <= end.

For a list field, bounds and choices apply to each item.

This module only *describes* the schema: the dataclasses, every leaf key with its type, default and
rules (``schema_fields``), and small pure helpers about what settings mean (``parse_monitor``: the
metric and horizon an early-stopping monitor name watches). Enforcing the rules (type coercion, range
and choice checks, the rules that link keys, "did you mean" suggestions, defaults derived from other
keys) is the job of ``atft.config.validation``, which imports this module, never the reverse.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


@dataclass
class SplitConfig:
    """How trading days are divided into train / valid / test, with a purge gap against leakage."""

    mode: str = field(default="walk_forward", metadata={"choices": ("walk_forward", "explicit")})
    # Explicit [start, end] date ranges (ISO strings); used when mode == "explicit".
    train: list[str] | None = field(default=None, metadata={"length": 2, "date_range": True})
    valid: list[str] | None = field(default=None, metadata={"length": 2, "date_range": True})
    test: list[str] | None = field(default=None, metadata={"length": 2, "date_range": True})
    # Days dropped between train and the next split so that label horizons cannot overlap it.
    purge_days: int = field(default=20, metadata={"ge": 0})
    embargo_days: int = field(default=0, metadata={"ge": 0})
    window: str = field(default="expanding", metadata={"choices": ("expanding", "sliding")})
    # Training days of a sliding window, and the least an expanding one may have.
    train_days: int = field(default=500, metadata={"ge": 1})
    n_folds: int = field(default=1, metadata={"ge": 1})
    valid_days: int = field(default=250, metadata={"ge": 1})
    test_days: int = field(default=250, metadata={"ge": 1})


@dataclass
class DataConfig:
    """Where the data lives, which horizons are predicted, and how samples are windowed."""

    raw_dir: str | None = None
    dataset_dir: str | None = None
    # Forward-return horizons in trading days (260 is about one year).
    horizons: list[int] = field(
        default_factory=lambda: [1, 5, 10, 20],
        metadata={"ge": 1, "le": 260, "min_length": 1, "increasing": True},
    )
    lookback: int = field(default=20, metadata={"ge": 1})
    # The label the models learn from (docs/dataset.md, labels): the raw forward return, minus the index's
    # ("excess"), minus the sector's mean ("sector_resid"), or its percentile rank that day ("rank").
    # Validation, early stopping, forecasts and every metric read the raw return whatever this says.
    target: str = field(default="raw", metadata={"choices": ("raw", "excess", "sector_resid", "rank")})
    min_stocks_per_day: int = field(default=20, metadata={"ge": 1})
    sector_level: str = field(default="sector17", metadata={"choices": ("sector17", "sector33")})
    # Absolute daily return above which a move is treated as a data error / corporate action.
    extreme_move: float = field(default=0.25, metadata={"gt": 0.0})
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class GuardConfig:
    """Thresholds of the dataset guard that runs before training (``atft.features.guard``)."""

    # A feature fails when it is constant (or all zero) across the cross-section on more than this share
    # of dates; the previous system's per-stock z-score bug made every such feature exactly 0.
    max_degenerate_date_frac: float = field(default=0.5, metadata={"ge": 0.0, "le": 1.0})
    # A feature fails when more than this share of its post-warmup rows is null.
    max_null_rate: float = field(default=0.5, metadata={"ge": 0.0, "le": 1.0})


@dataclass
class FeaturesConfig:
    """How the dataset build normalizes features across each date's cross-section."""

    normalization: str = field(default="robust_z", metadata={"choices": ("robust_z", "z")})
    clip: float = field(default=5.0, metadata={"gt": 0.0})
    # Feature groups of the dataset's manifest (``returns``, ``volume_liquidity`` ...) that the models do not
    # read: an ablation knob (docs/quality.md). Applied when a run loads the panel, not when the dataset is built.
    drop_groups: list[str] = field(default_factory=list)
    guard: GuardConfig = field(default_factory=GuardConfig)


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------


@dataclass
class FanConfig:
    """Frequency-adaptive normalisation (FAN): removes the dominant frequencies of each input window."""

    enabled: bool = True
    top_k: int = field(default=4, metadata={"ge": 1})


@dataclass
class VsnConfig:
    """Variable selection network: learned per-feature gating."""

    enabled: bool = True


@dataclass
class TemporalConfig:
    """The sequence encoder over the lookback window."""

    lstm_layers: int = field(default=1, metadata={"ge": 1})
    attention_heads: int = field(default=4, metadata={"ge": 1})


@dataclass
class GraphConfig:
    """How the daily stock graph is built for the GAT."""

    mode: str = field(default="correlation", metadata={"choices": ("correlation", "sector", "none")})
    # About a year of trailing returns, a 120-day half-life and 3 neighbours: on the synthetic market a
    # 60-day window with 10 neighbours found 67-79% of the planted leader links but buried them among
    # chance correlations (docs/graph.md, "Choosing the window").
    window: int = field(default=250, metadata={"ge": 5})
    threshold: float = field(default=0.3, metadata={"ge": 0.0, "le": 1.0})
    top_k: int = field(default=3, metadata={"ge": 1})
    # Ledoit-Wolf style shrinkage of the correlation matrix towards the identity.
    shrinkage: float = field(default=0.1, metadata={"ge": 0.0, "le": 1.0})
    ewm_halflife: float = field(default=120.0, metadata={"gt": 0.0})
    # The dataset feature whose trailing values the correlations are computed from (known at each date).
    return_feature: str = "ret_1d"


@dataclass
class GatConfig:
    """Graph attention over the daily stock graph."""

    enabled: bool = True
    heads: int = field(default=2, metadata={"ge": 1})
    layers: int = field(default=1, metadata={"ge": 1})


@dataclass
class HeadConfig:
    """The prediction head that maps the encoding to per-horizon point and quantile forecasts."""

    variant: str = field(default="default", metadata={"choices": ("default", "apex")})
    init_std: float = field(default=0.01, metadata={"gt": 0.0})
    # Residual layer scale; 0 switches the scaling off.
    layer_scale: float = field(default=1.0, metadata={"ge": 0.0})
    use_layernorm: bool = False


@dataclass
class ApexConfig:
    """APEX-Ranker (``model.name=apex``): a PatchTST encoder over each feature's series (docs/apex.md)."""

    # Days per patch and days between patch starts; the window is padded at its start so that the last
    # patch ends on the last day.
    patch_len: int = field(default=5, metadata={"ge": 1})
    stride: int = field(default=5, metadata={"ge": 1})
    d_model: int = field(default=32, metadata={"ge": 8})
    n_layers: int = field(default=2, metadata={"ge": 1})
    # Attention heads; d_model must be divisible by them.
    n_heads: int = field(default=4, metadata={"ge": 1})
    # Hidden size of each Transformer block's MLP, as a multiple of d_model.
    ff_mult: int = field(default=2, metadata={"ge": 1})
    dropout: float = field(default=0.1, metadata={"ge": 0.0, "lt": 1.0})
    # Rows of the learned positional table: the most patches a window may have.
    max_patches: int = field(default=64, metadata={"ge": 1})


# The models ``atft train`` can build (``model.name``), built by ``atft.models.registry``:
# ``atft_gat_fan`` is ``atft.models.atft_gat_fan``, ``apex`` is ``atft.models.apex_ranker``.
MODEL_NAMES = ("atft_gat_fan", "apex")


@dataclass
class ModelConfig:
    """Which model to build and how big it is.

    ``hidden_size``, ``dropout``, ``fan``, ``vsn``, ``temporal``, ``graph``, ``gat`` and ``shortcut`` are
    ATFT-GAT-FAN's; ``apex`` is APEX-Ranker's; ``head`` and ``quantiles`` are read by both.
    """

    # Only models that exist are accepted: a name nothing builds would silently train ATFT-GAT-FAN.
    name: str = field(default="atft_gat_fan", metadata={"choices": MODEL_NAMES, "choices_noun": "model"})
    hidden_size: int = field(default=64, metadata={"ge": 8})
    dropout: float = field(default=0.1, metadata={"ge": 0.0, "lt": 1.0})
    fan: FanConfig = field(default_factory=FanConfig)
    vsn: VsnConfig = field(default_factory=VsnConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    gat: GatConfig = field(default_factory=GatConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    apex: ApexConfig = field(default_factory=ApexConfig)
    # A linear path from the last day's features (and, with the graph, their neighbour mean) to the heads.
    shortcut: bool = True
    # Where the shortcut enters: the shared embedding (before the heads), each horizon's forecast directly
    # (a per-horizon linear map, ridge's function class), or both.
    shortcut_to: str = field(default="embedding", metadata={"choices": ("embedding", "heads", "both")})
    # Activation checkpointing: during training, encode the stocks' histories (FAN, VSN, LSTM, attention) in
    # chunks of this many stocks and recompute each chunk's activations in the backward pass instead of
    # keeping them; ~1/3 more compute for a fraction of the memory (the production preset keeps ~7.5 GB per
    # 4,000 windows otherwise). 0 keeps every activation. The chunks draw their own dropout masks.
    checkpoint_chunk: int = field(default=0, metadata={"ge": 0})
    quantiles: list[float] = field(
        default_factory=lambda: [0.05, 0.25, 0.5, 0.75, 0.95],
        metadata={"gt": 0.0, "lt": 1.0, "min_length": 1, "increasing": True},
    )


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


@dataclass
class BatchConfig:
    """Batch sizes: trading days per batch (a batch holds whole days, since the loss ranks within a day)."""

    # Not read by the engine: a batch is ``days_per_batch`` whole days, whatever their stock count.
    # Kept so that the previous system's configs still load; see docs/training.md.
    train_batch_size: int = field(default=4096, metadata={"ge": 1})
    days_per_batch: int = field(default=4, metadata={"ge": 1})


@dataclass
class OptimizerConfig:
    """The optimiser and its step size; grad_clip 0 disables clipping."""

    name: str = field(default="adamw", metadata={"choices": ("adamw",)})
    lr: float = field(default=1e-3, metadata={"gt": 0.0})
    weight_decay: float = field(default=1e-4, metadata={"ge": 0.0})
    grad_clip: float = field(default=1.0, metadata={"ge": 0.0})


@dataclass
class SchedulerConfig:
    """Learning-rate schedule."""

    name: str = field(default="warmup_cosine", metadata={"choices": ("warmup_cosine", "plateau", "constant")})
    warmup_epochs: int = field(default=2, metadata={"ge": 0})
    plateau_factor: float = field(default=0.5, metadata={"gt": 0.0, "lt": 1.0})
    plateau_patience: int = field(default=3, metadata={"ge": 0})


@dataclass
class TrainerConfig:
    """What Lightning's Trainer receives: precision and hardware."""

    # A string because Lightning spells it so; an int 32 in YAML is normalised to "32". "auto": bf16-mixed
    # where the device computes bf16 natively (atft.training.trainer.resolve_hardware), 32 elsewhere.
    precision: str = field(default="32", metadata={"choices": ("32", "bf16-mixed", "16-mixed", "auto")})
    accelerator: str = field(default="auto", metadata={"choices": ("auto", "cpu", "gpu")})
    devices: int = field(default=1, metadata={"ge": 1})
    strategy: str = field(default="auto", metadata={"choices": ("auto", "ddp")})
    num_nodes: int = field(default=1, metadata={"ge": 1})


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored validation metric stops improving."""

    monitor: str = "val/rankic_5d"
    mode: str = field(default="max", metadata={"choices": ("max", "min")})
    patience: int = field(default=5, metadata={"ge": 1})


@dataclass
class DiagnosticsConfig:
    """Training-time health checks (prediction-head statistics, gradient norms, collapse detection)."""

    head_diagnostics: bool = True
    grad_monitor_every: int = field(default=50, metadata={"ge": 1})
    # Cross-sectional prediction std below which the model is flagged as degenerate (constant output).
    degeneracy_floor: float = field(default=0.05, metadata={"ge": 0.0})


@dataclass
class TrainConfig:
    """The training loop."""

    seed: int = field(default=42, metadata={"ge": 0})
    max_epochs: int = field(default=25, metadata={"ge": 1})
    batch: BatchConfig = field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    runs_dir: str = "runs"
    # DataLoader worker processes; 0 loads days in the training process (best on 2 cores).
    num_workers: int = field(default=0, metadata={"ge": 0})
    # Exponential moving average of the weights, per optimizer step; validation, checkpoints and forecasts
    # use the average. 0 switches it off.
    ema_decay: float = field(default=0.0, metadata={"ge": 0.0, "lt": 1.0})
    # Recency weighting: each training day's loss is weighted by 2^(-age / halflife), age in trading days
    # before the last training day, scaled to a mean of 1 (atft.training.datamodule.recency_weights). For a
    # market whose relations drift; 0 switches it off.
    recency_halflife_days: float = field(default=0.0, metadata={"ge": 0.0})
    # torch.compile the model's forward (atft.workflow.train.compile_model): worth it on a GPU, where it
    # fuses the many small kernels of the VSN and heads; on a CPU compiling costs more than it saves.
    # ``compile_backend`` is torch.compile's backend ("inductor"; "aot_eager" traces without code generation).
    compile: bool = False
    compile_backend: str = "inductor"
    # Keep the feature panel on the accelerator and gather each training batch's windows there
    # (atft.training.datamodule): no window is built on the host or copied per batch. "auto": on a CUDA
    # device when the panel takes at most half its free memory; "on" also on a CPU (the same gather, for
    # tests); "off": windows built on the host and copied.
    panel_on_device: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})


# --------------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------------


@dataclass
class LossWeights:
    """Weight of each loss term in the total; 0 switches a term off."""

    huber: float = field(default=1.0, metadata={"ge": 0.0})
    pinball: float = field(default=0.5, metadata={"ge": 0.0})
    coverage: float = field(default=0.1, metadata={"ge": 0.0})
    rankic: float = field(default=0.5, metadata={"ge": 0.0})
    cs_ic: float = field(default=0.0, metadata={"ge": 0.0})
    sharpe: float = field(default=0.0, metadata={"ge": 0.0})
    listnet: float = field(default=0.0, metadata={"ge": 0.0})
    ranknet: float = field(default=0.0, metadata={"ge": 0.0})
    variance_floor: float = field(default=1.0, metadata={"ge": 0.0})
    exposure: float = field(default=0.0, metadata={"ge": 0.0})
    turnover: float = field(default=0.0, metadata={"ge": 0.0})


@dataclass
class ListNetConfig:
    """ListNet ranking loss; topk 0 means the whole cross-section."""

    enabled: bool = False
    tau: float = field(default=1.0, metadata={"gt": 0.0})
    topk: int = field(default=0, metadata={"ge": 0})


@dataclass
class LossConfig:
    """The multi-horizon loss: one weight per horizon, and the weight of each term."""

    # One weight per entry of data.horizons (checked below, in CROSS_CHECKS).
    horizon_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0], metadata={"ge": 0.0})
    weights: LossWeights = field(default_factory=LossWeights)
    huber_delta: float = field(default=0.01, metadata={"gt": 0.0})
    listnet: ListNetConfig = field(default_factory=ListNetConfig)
    # Fraction of the target's cross-sectional std that the prediction std must keep (variance-floor term).
    scale_floor: float = field(default=0.5, metadata={"ge": 0.0, "le": 1.0})
    # Softness of the differentiable rank used by the RankIC term.
    rankic_temperature: float = field(default=0.1, metadata={"gt": 0.0})
    # Stock pairs sampled per day and horizon by the RankNet term.
    ranknet_pairs: int = field(default=1024, metadata={"ge": 1})


# --------------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------------


@dataclass
class GradingConfig:
    """RankIC levels used to grade a run in reports (must be non-decreasing)."""

    minimum_rankic: float = 0.01
    target_rankic: float = 0.03
    stretch_rankic: float = 0.05


@dataclass
class EvalConfig:
    """Out-of-sample evaluation: the long/short portfolio, its costs, and how a run is graded."""

    # Fraction of the cross-section in each of the long and short legs.
    quantile: float = field(default=0.2, metadata={"gt": 0.0, "le": 0.5})
    cost_bps: float = field(default=5.0, metadata={"ge": 0.0})
    grading: GradingConfig = field(default_factory=GradingConfig)


@dataclass
class ATFTConfig:
    """The whole configuration: the root of the schema."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------------
# Schema introspection
# --------------------------------------------------------------------------------------------------

KNOWN_RULES = frozenset(
    {"ge", "gt", "le", "lt", "choices", "choices_noun", "min_length", "length", "increasing", "date_range"}
)


@dataclass(frozen=True)
class FieldSpec:
    """One leaf setting of the schema: its dotted key, type, default and validation rules."""

    key: str
    type: Any
    default: Any
    rules: Mapping[str, Any]

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@functools.cache
def _schema() -> tuple[dict[str, FieldSpec], frozenset[str]]:
    leaves: dict[str, FieldSpec] = {}
    sections: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = prefix + f.name
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                sections.add(key)
                walk(tp, key + ".")
                continue
            unknown = set(f.metadata) - KNOWN_RULES
            if unknown:  # a typo such as "gte" would otherwise silently disable a check
                raise TypeError(f"{cls.__name__}.{f.name}: unknown validation rule(s) {sorted(unknown)}")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            leaves[key] = FieldSpec(key, tp, default, types.MappingProxyType(dict(f.metadata)))

    walk(ATFTConfig, "")
    return leaves, frozenset(sections)


def schema_fields() -> dict[str, FieldSpec]:
    """Every leaf setting, by dotted key (``train.optimizer.lr``), in schema order."""
    return dict(_schema()[0])


def schema_sections() -> frozenset[str]:
    """Dotted keys that name a group of settings rather than one value (``train.optimizer``)."""
    return _schema()[1]


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """A short readable name for a schema type: ``int``, ``list[float]``, ``list[str] or null``."""
    inner, optional = unwrap_optional(tp)
    if typing.get_origin(inner) is list:
        name = f"list[{type_name(typing.get_args(inner)[0])}]"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def is_optional_type(tp: Any) -> bool:
    """True for ``X | None``: such a field accepts null."""
    return unwrap_optional(tp)[1]


def is_text_type(tp: Any) -> bool:
    """True for ``str`` and ``str | None``: such values are taken verbatim from the command line."""
    return unwrap_optional(tp)[0] is str


def is_list_type(tp: Any) -> bool:
    """True for ``list[X]`` and ``list[X] | None``."""
    return typing.get_origin(unwrap_optional(tp)[0]) is list


# --------------------------------------------------------------------------------------------------
# What the early-stopping monitor names mean
# --------------------------------------------------------------------------------------------------

# Metrics the validation loop reports per horizon (docs/metrics.md); early stopping may watch any of
# them, as 'val/<metric>_<h>d', or the overall 'val/loss'.
MONITORED_METRICS = ("rankic", "ic", "icir", "sharpe", "mae", "rmse", "r2", "scale")

# The early-stopping mode each metric needs: "min" where lower is better (losses and errors), "max"
# where higher is better (correlations, Sharpe, R²). None where neither direction is an improvement:
# scale compares the spread of the predictions with that of the labels, so watching it for a min or a
# max are both legitimate choices.
METRIC_MODES: dict[str, str | None] = {
    "loss": "min",
    "mae": "min",
    "rmse": "min",
    "rankic": "max",
    "ic": "max",
    "icir": "max",
    "sharpe": "max",
    "r2": "max",
    "scale": None,
}

_MONITOR_NAME = re.compile(r"val/([a-z0-9]+)_([0-9]+)d")


def parse_monitor(name: str) -> tuple[str, int | None] | None:
    """``'val/rankic_5d'`` -> ``('rankic', 5)``; ``'val/loss'`` -> ``('loss', None)``; else None.

    Only the shape is read here; whether the metric is reported is checked against the config.
    """
    if name == "val/loss":
        return "loss", None
    found = _MONITOR_NAME.fullmatch(name)
    return (found[1], int(found[2])) if found else None


def reported_metrics(horizons: Collection[int]) -> list[str]:
    """Every name early stopping may watch for these horizons: 'val/loss', then 'val/<metric>_<h>d'."""
    return ["val/loss"] + [f"val/{m}_{h}d" for m in MONITORED_METRICS for h in horizons]


def required_mode(monitor: str) -> str | None:
    """The mode ("min" / "max") a monitored metric needs, or None if either is fine or it is unknown."""
    parsed = parse_monitor(monitor)
    return METRIC_MODES.get(parsed[0]) if parsed else None
