"""The typed configuration schema of ATFT, and the one validator that checks it.

Every setting lives in a small dataclass; OmegaConf turns the tree into a structured (typed) config.
Constraints are written next to each field as ``field(metadata=...)`` rules, so adding a setting never
means touching the validator:

- ``ge`` / ``gt`` / ``le`` / ``lt``: value >= / > / <= / < the bound;
- ``choices``: value is one of the given tuple;
- ``min_length`` / ``length``: a list has at least / exactly this many items;
- ``increasing``: list items are strictly increasing;
- ``date_range``: a ``[start, end]`` pair of strict ``YYYY-MM-DD`` dates with start <= end.

For a list field, bounds and choices apply to each item. These per-field rules are checked by
``validate_fields``.

Rules that link several fields (e.g. one loss weight per horizon) are the ``CROSS_CHECKS`` below,
checked by ``validate_cross_fields``; defaults that depend on another key (the early-stopping monitor
follows ``data.horizons``) are adapted by ``adapt_defaults``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import itertools
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem: an unknown key, a badly typed or out-of-range value, a missing preset.

    The message is one line meant for the user: it names the dotted key, where the value came from
    (preset file, environment variable or override token) and what would have been accepted.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


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
class ModelConfig:
    """Which model to build and how big it is."""

    name: str = field(
        default="atft_gat_fan", metadata={"choices": ("atft_gat_fan", "apex_ranker", "mlp", "lightgbm")}
    )
    hidden_size: int = field(default=64, metadata={"ge": 8})
    dropout: float = field(default=0.1, metadata={"ge": 0.0, "lt": 1.0})
    fan: FanConfig = field(default_factory=FanConfig)
    vsn: VsnConfig = field(default_factory=VsnConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    gat: GatConfig = field(default_factory=GatConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    # A linear path from the last day's features (and, with the graph, their neighbour mean) to the heads.
    shortcut: bool = True
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

    # A string because Lightning spells it so; an int 32 in YAML is normalised to "32".
    precision: str = field(default="32", metadata={"choices": ("32", "bf16-mixed", "16-mixed")})
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
    """Out-of-sample evaluation: which split, the long/short portfolio, and costs."""

    split: str = field(default="test", metadata={"choices": ("valid", "test")})
    top_k: int = field(default=50, metadata={"ge": 1})
    # Fraction of the cross-section in each of the long and short legs.
    quantile: float = field(default=0.2, metadata={"gt": 0.0, "le": 0.5})
    cost_bps: float = field(default=5.0, metadata={"ge": 0.0})
    rebalance: str = field(default="daily", metadata={"choices": ("daily", "horizon")})
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
    {"ge", "gt", "le", "lt", "choices", "min_length", "length", "increasing", "date_range"}
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


def field_spec(key: str) -> FieldSpec:
    """The spec of one leaf key; raises ConfigError (with a suggestion) for anything else."""
    leaves, sections = _schema()
    if key in leaves:
        return leaves[key]
    if key in sections:
        children = [k for k in leaves if k.startswith(key + ".")]
        raise ConfigError(
            f"'{key}' is a section, not a value; set one of its keys, e.g. '{children[0]}'", key=key
        )
    hint = suggest_keys(key)
    suggestion = " Did you mean " + " or ".join(f"'{k}'" for k in hint) + "?" if hint else ""
    raise ConfigError(f"Unknown config key '{key}'.{suggestion}", key=key)


def suggest_keys(key: str, limit: int = 3) -> list[str]:
    """Valid keys close to a mistyped one: by whole key first, then by its last part."""
    leaves = list(_schema()[0])
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.75)
    if close:  # one clear candidate; listing near-misses of a near-miss only confuses
        return close
    # "train.lr" or "model.hiden_size": the leaf name is usually right, the section path is not.
    leaf = key.rsplit(".", 1)[-1]
    names = {k.rsplit(".", 1)[-1] for k in leaves}
    near = set(difflib.get_close_matches(leaf, names, n=limit, cutoff=0.75))
    return [k for k in leaves if k.rsplit(".", 1)[-1] in near][:limit]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """A short readable name for a schema type: ``int``, ``list[float]``, ``list[str] or null``."""
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is list:
        name = f"list[{type_name(typing.get_args(inner)[0])}]"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def is_optional_type(tp: Any) -> bool:
    """True for ``X | None``: such a field accepts null."""
    return _unwrap_optional(tp)[1]


def is_text_type(tp: Any) -> bool:
    """True for ``str`` and ``str | None``: such values are taken verbatim from the command line."""
    return _unwrap_optional(tp)[0] is str


def is_list_type(tp: Any) -> bool:
    """True for ``list[X]`` and ``list[X] | None``."""
    return typing.get_origin(_unwrap_optional(tp)[0]) is list


# --------------------------------------------------------------------------------------------------
# Type coercion
# --------------------------------------------------------------------------------------------------

TRUE_WORDS = frozenset({"1", "true", "yes"})
FALSE_WORDS = frozenset({"0", "false", "no"})
BOOL_WORDS = "1/0, true/false, yes/no"


def parse_bool(text: str) -> bool | None:
    """Strict boolean text: 1/0/true/false/yes/no in any case; None for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


class _Mismatch(Exception):
    """Internal: a value that does not fit its type, with the position inside a list if any."""

    def __init__(self, expected: str, value: Any, index: int | None = None) -> None:
        super().__init__(expected)
        self.expected, self.value, self.index = expected, value, index


def _coerce(tp: Any, value: Any) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise _Mismatch(type_name(tp), value)
    if typing.get_origin(inner) is list:
        if not isinstance(value, list | tuple):
            raise _Mismatch(type_name(tp), value)
        item_type = typing.get_args(inner)[0]
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(item_type, item))
            except _Mismatch as exc:
                raise _Mismatch(exc.expected, exc.value, i) from None
        return out
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        parsed = parse_bool(value) if isinstance(value, str) else None
        if parsed is None:
            raise _Mismatch(f"bool ({BOOL_WORDS})", value)
        return parsed
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _Mismatch("int", value)
    if inner is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())  # also reads "3e-4", which YAML 1.1 leaves a string
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise _Mismatch("float (finite)" if number is not None else "float", value)
        return number
    if inner is str:
        if isinstance(value, str):
            return value
        # YAML reads `precision: 32` as an int and `2000-01-03` as a date; both are meant as text.
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch("str (quote it if YAML read it as something else)", value)
    raise TypeError(f"unsupported schema type {tp!r}")  # a schema bug, not a user error


def coerce_value(key: str, value: Any, origin: str | None = None) -> Any:
    """Convert a user-supplied value to the schema type of ``key``, or raise a ConfigError naming it."""
    spec = field_spec(key)
    try:
        return _coerce(spec.type, value)
    except _Mismatch as exc:
        where = key if exc.index is None else f"{key}[{exc.index}]"
        raise ConfigError(
            f"{_where(where, origin)}: expected {exc.expected}, got {exc.value!r}", key=key
        ) from None


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _where(key: str, origin: str | None) -> str:
    return f"{key} (from {origin})" if origin else key


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounds_text(rules: Mapping[str, Any]) -> str | None:
    """The allowed range of a field as text: ``>= 0``, ``> 0`` or ``in [0, 1)``; None when unbounded."""
    lo = ("[", rules["ge"]) if "ge" in rules else ("(", rules["gt"]) if "gt" in rules else None
    hi = ("]", rules["le"]) if "le" in rules else (")", rules["lt"]) if "lt" in rules else None
    if lo and hi:
        return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + _num(lo[1])
    if hi:
        return ("<= " if hi[0] == "]" else "< ") + _num(hi[1])
    return None


def _in_bounds(x: Any, rules: Mapping[str, Any]) -> bool:
    return not (
        ("ge" in rules and x < rules["ge"])
        or ("gt" in rules and x <= rules["gt"])
        or ("le" in rules and x > rules["le"])
        or ("lt" in rules and x >= rules["lt"])
    )


def _check_scalar(x: Any, rules: Mapping[str, Any]) -> str | None:
    """The problem with one value under the bound/choice rules, or None."""
    if "choices" in rules and x not in rules["choices"]:
        allowed = ", ".join(repr(c) for c in rules["choices"])
        return f"{x!r} is not an allowed choice; choose one of {allowed}"
    if isinstance(x, int | float) and not isinstance(x, bool) and not _in_bounds(x, rules):
        return f"{_num(x)} is out of range; must be {bounds_text(rules)}"
    return None


# Dates are written as YYYY-MM-DD with ASCII digits and nothing else. date.fromisoformat alone is too
# lenient: it also takes "20200103" and week dates like "2020-W01-1", and other Python versions take
# more; str.isdigit-style checks would let full-width digits ("２０２０") through. [0-9] is ASCII only.
_DATE_FORMAT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
DATE_FORMAT_TEXT = "YYYY-MM-DD (ASCII digits, a real calendar day, e.g. 2020-01-03)"


def parse_date(text: Any) -> dt.date | None:
    """A strict ``YYYY-MM-DD`` calendar date, or None for anything else (other formats, 2020-02-30)."""
    # fullmatch, not match: "$" alone would also accept a trailing newline.
    if not isinstance(text, str) or not _DATE_FORMAT.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:  # the right shape but no such day
        return None


def _check_list(items: list[Any], rules: Mapping[str, Any]) -> str | None:
    """The problem with a list as a whole (length, order, date pair), or None."""
    if "length" in rules and len(items) != rules["length"]:
        return f"{items!r} must have exactly {rules['length']} items, got {len(items)}"
    if "min_length" in rules and len(items) < rules["min_length"]:
        return f"{items!r} must have at least {rules['min_length']} item(s)"
    if rules.get("increasing") and any(a >= b for a, b in itertools.pairwise(items)):
        return f"{items!r} must be strictly increasing"
    if rules.get("date_range"):
        dates = [parse_date(x) for x in items]
        for item, date in zip(items, dates, strict=True):
            if date is None:
                return f"{item!r} is not a date; expected [start, end] as {DATE_FORMAT_TEXT}"
        if dates[0] > dates[-1]:
            return f"{items!r} must be [start, end] with start <= end"
    return None


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


# A cross-field check gets the whole config as nested dicts and returns (keys involved, problem) or None.
CrossCheck = Callable[[Mapping[str, Any]], tuple[tuple[str, ...], str] | None]


def _horizon_weights_match(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    horizons = values["data"]["horizons"]
    weights = values["loss"]["horizon_weights"]
    if len(weights) != len(horizons):
        return (
            ("loss.horizon_weights", "data.horizons"),
            f"needs one weight per horizon: {len(weights)} weight(s) {weights} for "
            f"{len(horizons)} horizon(s) {horizons}; set both together",
        )
    return None


def _explicit_split_has_dates(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    split = values["data"]["split"]
    if split["mode"] != "explicit":
        return None
    if split["train"] is None:
        return (
            ("data.split.mode", "data.split.train"),
            "mode 'explicit' needs [start, end] dates for data.split.train",
        )
    if split["valid"] is None and split["test"] is None:
        keys = ("data.split.valid", "data.split.test")
        return (
            ("data.split.mode", *keys),
            "mode 'explicit' needs [start, end] dates for data.split.valid or data.split.test",
        )
    return None


def _grading_ordered(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    g = values["eval"]["grading"]
    if not g["minimum_rankic"] <= g["target_rankic"] <= g["stretch_rankic"]:
        return (
            ("eval.grading.minimum_rankic", "eval.grading.target_rankic", "eval.grading.stretch_rankic"),
            "must satisfy minimum_rankic <= target_rankic <= stretch_rankic",
        )
    return None


def _warmup_shorter_than_training(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    train = values["train"]
    if (
        train["scheduler"]["name"] == "warmup_cosine"
        and train["scheduler"]["warmup_epochs"] >= train["max_epochs"]
    ):
        return (
            ("train.scheduler.warmup_epochs", "train.max_epochs"),
            f"warmup ({train['scheduler']['warmup_epochs']} epochs) must be shorter than training "
            f"({train['max_epochs']} epochs), or the cosine decay never starts",
        )
    return None


MONITOR_KEY = "train.early_stopping.monitor"
HORIZON_WEIGHTS_KEY = "loss.horizon_weights"
MODE_KEY = "train.early_stopping.mode"

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


def _monitor_is_a_reported_metric(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    monitor = values["train"]["early_stopping"]["monitor"]
    horizons = values["data"]["horizons"]
    allowed = reported_metrics(horizons)
    if monitor == "val/sharpe_" + monitor.rsplit("_", 1)[-1] and 1 not in horizons:
        return (
            (MONITOR_KEY, "data.horizons"),
            f"{monitor!r} needs the 1-day horizon in data.horizons: the long-short portfolio earns the "
            "1-day forward return (docs/metrics.md), so without it the metric is always NaN",
        )
    if monitor in allowed:
        return None
    listing = f"valid names for data.horizons {horizons}: {', '.join(allowed)}"
    parsed = parse_monitor(monitor)
    if parsed and parsed[0] in MONITORED_METRICS:
        # A real metric at a horizon that is not predicted: data.horizons is half of the problem.
        return (
            (MONITOR_KEY, "data.horizons"),
            f"{monitor!r} watches the {parsed[1]}-day horizon, which is not in data.horizons; {listing}",
        )
    return ((MONITOR_KEY,), f"{monitor!r} is not a reported validation metric; {listing}")


def _mode_fits_monitor(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    early = values["train"]["early_stopping"]
    needed = required_mode(early["monitor"])
    if needed is None or early["mode"] == needed:
        return None
    better = "lower" if needed == "min" else "higher"
    return (
        (MODE_KEY, MONITOR_KEY),
        f"{early['monitor']!r} is better when {better}, so {MODE_KEY} must be {needed!r}, "
        f"not {early['mode']!r}",
    )


CROSS_CHECKS: tuple[CrossCheck, ...] = (
    _horizon_weights_match,
    _explicit_split_has_dates,
    _grading_ordered,
    _warmup_shorter_than_training,
    _monitor_is_a_reported_metric,  # first: for a misspelled monitor, that is the useful message
    _mode_fits_monitor,
)


def adapt_defaults(values: Mapping[str, Any], explicit: Collection[str]) -> list[tuple[str, Any, str]]:
    """Defaults that depend on another key, adapted to the final config.

    Returns ``(key, new value, key it follows)`` for each default that has to change. Keys in
    ``explicit`` (set by a preset, an environment alias or an override) are never changed: a value the
    user chose is checked by ``CROSS_CHECKS`` and reported if wrong, not silently replaced.

    - ``train.early_stopping.monitor``: the default ``val/rankic_5d`` needs horizon 5. If
      ``data.horizons`` lacks the monitor's horizon, the same metric at the horizon closest to it is
      watched instead (ties go to the shorter horizon), e.g. ``val/rankic_1d`` for ``[1, 10]``.
    - ``train.early_stopping.mode``: set to what the monitored metric needs (``min`` for losses and
      errors, ``max`` for IC, RankIC, Sharpe, ...), e.g. ``min`` when only the monitor is set to
      ``val/loss``.
    - ``loss.horizon_weights``: the default weighs every horizon equally; with other horizons it stays
      equal, one weight per horizon.
    """
    changes: list[tuple[str, Any, str]] = []
    weights = values["loss"]["horizon_weights"]
    n_horizons = len(values["data"]["horizons"])
    if (
        HORIZON_WEIGHTS_KEY not in explicit
        and len(weights) != n_horizons
        and len(set(weights)) <= 1  # uniform, as the default is: nothing to guess
    ):
        changes.append((HORIZON_WEIGHTS_KEY, [weights[0] if weights else 1.0] * n_horizons, "data.horizons"))
    early = values["train"]["early_stopping"]
    monitor = early["monitor"]
    horizons = values["data"]["horizons"]
    parsed = parse_monitor(monitor)
    if MONITOR_KEY not in explicit and parsed and parsed[1] is not None and parsed[1] not in horizons:
        metric, horizon = parsed
        nearest = min(horizons, key=lambda h: (abs(h - horizon), h))
        monitor = f"val/{metric}_{nearest}d"
        changes.append((MONITOR_KEY, monitor, "data.horizons"))
    needed = required_mode(monitor)
    if MODE_KEY not in explicit and needed is not None and early["mode"] != needed:
        changes.append((MODE_KEY, needed, MONITOR_KEY))
    return changes


Origin = Callable[[str], str | None]


def validate_fields(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Check every field of ``values`` (the config as nested dicts) against its own rules.

    These are the rules declared on each field (range, choices, length, order, dates); they never look
    at another key, so they can run after each layer is merged and blame the layer that broke one.
    ``origin_of(key)`` describes where a key's value came from, so that the error can name the preset
    file, environment variable or override token. Raises ConfigError on the first problem.
    """
    for key, spec in _schema()[0].items():
        value = _lookup(values, key)
        if value is None or not spec.rules:
            continue
        for where, problem in _field_problems(key, value, spec.rules):
            if problem:
                raise ConfigError(f"{_where(where, origin_of(key))}: {problem}", key=key)


def _field_problems(key: str, value: Any, rules: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(where, problem or None) for a value: a list as a whole, then each item as ``key[i]``."""
    if isinstance(value, list):
        yield key, _check_list(value, rules)
        for i, item in enumerate(value):
            yield f"{key}[{i}]", _check_scalar(item, rules)
    else:
        yield key, _check_scalar(value, rules)


def validate_cross_fields(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Run the ``CROSS_CHECKS``, the rules that relate several keys, on a complete config.

    Run them on the final config only: a layer may legitimately set one of two linked keys and a later
    layer the other. The error names every key involved, each with ``origin_of(key)`` if known.
    """
    for check in CROSS_CHECKS:
        found = check(values)
        if found:
            keys, problem = found
            named = ", ".join(_where(k, origin_of(k)) for k in keys)
            raise ConfigError(f"{named}: {problem}", key=keys[0])


def validate(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Check a complete config: every field against its own rules, then the rules linking fields.

    ``origin_of(key)`` describes where a key's value came from, so that the error can name the preset
    file, environment variable or override token. Raises ConfigError on the first problem.
    """
    validate_fields(values, origin_of)
    validate_cross_fields(values, origin_of)
