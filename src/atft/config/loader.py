"""Resolve the configuration: schema defaults < preset < environment aliases < command-line overrides.

Each layer is turned into a list of ``(dotted key, value)`` assignments, every value is converted to
its schema type, the layer is merged into the structured OmegaConf config, and every field is checked
against its own rules (range, choices, dates), so such an error names the layer (preset file,
environment variable or override token) that introduced it.

Rules that relate several keys (warm-up shorter than training, one loss weight per horizon, the
monitored metric exists, ...) are checked once, on the final config: a layer may set one of two linked
keys and a later layer the other, and only the end result matters. Before that, defaults that depend on
another key are adapted (``adapt_defaults``: the early-stopping monitor follows ``data.horizons``, a
warm-up that no environment alias or override set shrinks to fit ``train.max_epochs``).
The source of every key is remembered for provenance.

The schema (the dataclasses and their rules) is ``atft.config.schema``; the checks and conversions
that enforce it are ``atft.config.validation``. This module reads the layers, merges them in order and
keeps track of which layer set each key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import atft
from atft.config.errors import ConfigError
from atft.config.schema import (
    ATFTConfig,
    is_list_type,
    is_optional_type,
    is_text_type,
    schema_fields,
    schema_sections,
)
from atft.config.validation import (
    BOOL_WORDS,
    adapt_defaults,
    coerce_value,
    field_spec,
    parse_bool,
    validate_cross_fields,
    validate_fields,
)

CONFIG_DIR_ENV = "ATFT_CONFIG_DIR"
DEFAULT_PRESET = "cpu"
NO_PRESET = "none"  # ResolvedConfig.preset when load_config(preset=None)
PRESET_LABEL = "preset:"  # the provenance label of a preset's values starts so: "preset:cpu"


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key written twice in one YAML mapping, with the lines (1-based) of both."""

    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark) -> None:
        super().__init__(None, None, f"found duplicate key {key!r}", second)
        self.key = key
        self.lines = (first.line + 1, second.line + 1)


class _TextDatesLoader(yaml.SafeLoader):
    """YAML's safe loader without implicit timestamps: `2020-01-03` stays a string.

    Dates in configs are validated by the schema (``date_range``), which names the key; PyYAML would
    otherwise build ``datetime.date`` objects itself and crash on an impossible date like 2020-13-01.

    It also refuses a key written twice in one mapping: PyYAML silently keeps the last one, so a
    preset that sets ``lookback`` twice would quietly ignore the first value.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):  # anything else: the base class reports the error
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                # `<<: *base` merge keys are expanded by the base class; a key written next to a merge
                # overriding a merged one is how merges are meant to be used, not a duplicate.
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key (a list): the base class reports it
                    continue
                if first is not key_node:
                    raise _DuplicateKeyError(key, first.start_mark, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_TextDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_TextDatesLoader)  # noqa: S506 - a SafeLoader subclass


# The spellings YAML reads as null; an optional field given one of them is set to None.
_NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})


# --------------------------------------------------------------------------------------------------
# Environment aliases of the previous system
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvAlias:
    """An environment variable of the previous system and the config key it now sets.

    A plain alias sets ``key`` to the variable's value. A *switch* alias reads the variable as a
    boolean and, only when it is true, sets ``key`` to ``when_true``; false leaves the config alone.
    """

    key: str
    example: str
    description: str
    switch: bool = False
    when_true: Any = None

    @property
    def type_name(self) -> str:
        """The type the variable's text must parse as (for docs and messages)."""
        return "bool" if self.switch else field_spec(self.key).type_name


ENV_ALIASES: dict[str, EnvAlias] = {
    "SHARPE_WEIGHT": EnvAlias("loss.weights.sharpe", "0.1", "weight of the Sharpe loss term"),
    "RANKIC_WEIGHT": EnvAlias("loss.weights.rankic", "0.5", "weight of the RankIC loss term"),
    "CS_IC_WEIGHT": EnvAlias("loss.weights.cs_ic", "0.2", "weight of the cross-sectional IC term"),
    "HUBER_WEIGHT": EnvAlias("loss.weights.huber", "1.0", "weight of the Huber point loss"),
    "PINBALL_WEIGHT": EnvAlias("loss.weights.pinball", "0.5", "weight of the pinball (quantile) loss"),
    "COVERAGE_WEIGHT": EnvAlias("loss.weights.coverage", "0.1", "weight of the 5-95% coverage penalty"),
    "RANKNET_WEIGHT": EnvAlias("loss.weights.ranknet", "0.1", "weight of the RankNet pairwise term"),
    "VARIANCE_FLOOR_WEIGHT": EnvAlias("loss.weights.variance_floor", "1.0", "weight of the variance floor"),
    "EXPOSURE_WEIGHT": EnvAlias("loss.weights.exposure", "0.1", "weight of the sector/beta exposure penalty"),
    "TURNOVER_WEIGHT": EnvAlias("loss.weights.turnover", "0.1", "weight of the turnover penalty"),
    "USE_LISTNET_LOSS": EnvAlias("loss.listnet.enabled", "1", "turn the ListNet ranking loss on"),
    "LISTNET_WEIGHT": EnvAlias("loss.weights.listnet", "0.3", "weight of the ListNet term"),
    "LISTNET_TAU": EnvAlias("loss.listnet.tau", "0.5", "ListNet softmax temperature"),
    "LISTNET_TOPK": EnvAlias("loss.listnet.topk", "50", "ListNet top-k (0 = whole cross-section)"),
    "TRAIN_SCHEDULER": EnvAlias("train.scheduler.name", "plateau", "learning-rate schedule"),
    "WARMUP_EPOCHS": EnvAlias("train.scheduler.warmup_epochs", "3", "warm-up epochs"),
    "PRED_HEAD_VARIANT": EnvAlias("model.head.variant", "apex", "prediction head variant"),
    "PRED_HEAD_INIT_STD": EnvAlias("model.head.init_std", "0.02", "init std of the head's output layer"),
    "PRED_HEAD_LAYER_SCALE": EnvAlias("model.head.layer_scale", "0.1", "head residual layer scale (0 = off)"),
    "PRED_HEAD_USE_LAYERNORM": EnvAlias("model.head.use_layernorm", "true", "LayerNorm before the head"),
    "ENABLE_PREDICTION_HEAD_DIAGNOSTICS": EnvAlias(
        "train.diagnostics.head_diagnostics", "0", "log prediction-head statistics"
    ),
    "GRAD_MONITOR_EVERY": EnvAlias(
        "train.diagnostics.grad_monitor_every", "100", "steps between gradient-norm logs"
    ),
    "DISABLE_GRAPH_BUILDER": EnvAlias(
        "model.graph.mode", "1", 'true sets model.graph.mode="none"', switch=True, when_true="none"
    ),
    "BYPASS_GAT_COMPLETELY": EnvAlias(
        "model.gat.enabled", "1", "true sets model.gat.enabled=false", switch=True, when_true=False
    ),
}


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass
class ResolvedConfig:
    """The resolved configuration and where each non-default value came from.

    ``cfg`` is a typed, read-only OmegaConf config of the ``ATFTConfig`` schema. ``sources`` maps each
    dotted key whose value differs from the schema default to ``preset:<name or path>``,
    ``env:<VARIABLE>``, ``cli``, or ``derived:<key>`` for a default adapted to another key (e.g. the
    early-stopping monitor to ``data.horizons``, the warm-up to ``train.max_epochs``).
    """

    cfg: DictConfig
    sources: dict[str, str]
    preset: str

    def non_default(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every value that differs from the schema default, sorted by key."""
        out = []
        for key in sorted(self.sources):
            value = OmegaConf.select(self.cfg, key)
            if isinstance(value, ListConfig):
                value = OmegaConf.to_container(value)
            out.append((key, value, self.sources[key]))
        return out

    def to_yaml(self) -> str:
        """The whole resolved config as YAML."""
        return OmegaConf.to_yaml(self.cfg)

    def to_container(self) -> dict:
        """The whole resolved config as plain nested dicts and lists."""
        container = OmegaConf.to_container(self.cfg, resolve=True)
        assert isinstance(container, dict)
        return container


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def find_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of YAML presets: ``$ATFT_CONFIG_DIR`` if set, else the ``configs/`` folder that sits
    next to a ``pyproject.toml`` in a parent of the installed ``atft`` package (the source checkout)."""
    env = os.environ if env is None else env
    configured = env.get(CONFIG_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{CONFIG_DIR_ENV}={configured!r} is not a directory")
        return path
    for parent in Path(atft.__file__).resolve().parents:
        if (parent / "configs").is_dir() and (parent / "pyproject.toml").is_file():
            return parent / "configs"
    raise ConfigError(
        f"Cannot find the configs/ folder of presets above {Path(atft.__file__).parent}; "
        f"set {CONFIG_DIR_ENV} or pass --preset a path to a .yaml file"
    )


def available_presets(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the presets in the configs folder (file names without .yaml / .yml), sorted."""
    folder = find_config_dir(env)
    return sorted({p.stem for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()})


def _looks_like_path(preset: str | Path) -> bool:
    text = str(preset)
    return isinstance(preset, Path) or "/" in text or os.sep in text or text.endswith((".yaml", ".yml"))


def resolve_preset(preset: str | Path, env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The file of a preset given by name (looked up in the configs folder) or by path, and its label."""
    if _looks_like_path(preset):
        path = Path(preset).expanduser()
        if path.is_dir():
            raise ConfigError(f"Preset {path} is a directory; pass a .yaml file or a preset name")
        if not path.is_file():
            raise ConfigError(f"Preset file {path} does not exist")
        return path, f"{PRESET_LABEL}{preset}"
    folder = find_config_dir(env)
    for suffix in (".yaml", ".yml"):
        path = folder / f"{preset}{suffix}"
        if path.is_file():
            return path, f"{PRESET_LABEL}{preset}"
    names = ", ".join(available_presets(env)) or "(none)"
    raise ConfigError(
        f"Unknown preset {str(preset)!r}; available presets in {folder}: {names} (or pass a path to a .yaml file)"
    )


# --------------------------------------------------------------------------------------------------
# Layers: each becomes a list of assignments
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where one assignment came from: the provenance label, and a longer text for error messages."""

    label: str  # "preset:cpu", "env:SHARPE_WEIGHT", "cli"
    detail: str  # "preset file /.../cpu.yaml", "environment variable SHARPE_WEIGHT='-1'", ...


@dataclass
class _Layer:
    """One merge layer: the values it sets, already converted to their schema types."""

    assignments: list[tuple[str, Any, _Origin]] = field(default_factory=list)

    def add(self, key: str, value: Any, origin: _Origin, *, text: bool = False) -> None:
        """Add ``key = value``; ``text=True`` for the text of an override or environment variable."""
        try:
            field_spec(key)
        except ConfigError as exc:  # an unknown key: say where it was written
            raise ConfigError(f"{exc} (in {origin.detail})", key=exc.key) from None
        if text:
            value = _parse_text(key, value)
        self.assignments.append((key, coerce_value(key, value, origin.detail), origin))


def _preset_layer(path: Path, label: str) -> _Layer:
    origin = _Origin(label, f"preset file {path}")
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # a ValueError, not an OSError: it would escape as a traceback
        raise ConfigError(
            f"Preset file {path} is not valid UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:  # a directory, no permission, ...; strerror avoids repeating the path
        raise ConfigError(f"Cannot read preset file {path}: {exc.strerror or exc}") from None
    except _DuplicateKeyError as exc:
        raise ConfigError(
            f"Preset file {path}: key {exc.key!r} is written twice in one mapping (lines "
            f"{exc.lines[0]} and {exc.lines[1]}); YAML would silently keep the last, so remove one"
        ) from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # YAML errors span several lines; keep the message on one
        raise ConfigError(f"Cannot read preset file {path}: {problem}") from None
    if data is None:  # an empty preset changes nothing
        return _Layer()
    if not isinstance(data, dict):
        raise ConfigError(f"Preset file {path} must be a mapping of sections (data:, model:, ...)")
    layer = _Layer()
    sections = schema_sections()

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if key in sections:
                if isinstance(value, dict):
                    walk(value, key + ".")
                elif value is not None:  # `model:` with nothing under it is harmless
                    raise ConfigError(
                        f"{key} (from {origin.detail}) is a section; expected a mapping, got {value!r}"
                    )
                continue
            layer.add(key, value, origin)

    walk(data, "")
    return layer


def _parse_text(key: str, text: str) -> Any:
    """Turn the text of an override or environment variable into a value, guided by the key's type.

    Text fields are taken verbatim (surrounding quotes removed), so `model.graph.mode=none` or
    `train.trainer.precision=32` are never re-read by YAML as null or a number. Lists are read as YAML
    flow sequences (`[1, 5, 10]`); dates in them stay ISO strings. Numbers and booleans are converted
    by the schema type.
    """
    spec = field_spec(key)
    stripped = text.strip()
    if is_optional_type(spec.type) and stripped in _NULL_WORDS:
        return None
    if is_text_type(spec.type):
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            return stripped[1:-1]
        return stripped
    if is_list_type(spec.type):
        try:
            return _load_yaml(stripped)
        except yaml.YAMLError:
            return stripped  # not a YAML list: coerce_value reports the type mismatch
    return stripped


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    for var, alias in ENV_ALIASES.items():
        raw = env.get(var)
        if raw is None or not raw.strip():  # unset or empty: the old system treated both as "not given"
            continue
        origin = _Origin(f"env:{var}", f"environment variable {var}={raw!r}")
        if alias.switch:
            on = parse_bool(raw)
            if on is None:
                raise ConfigError(
                    f"Environment variable {var}={raw!r} must be a boolean ({BOOL_WORDS}); "
                    f"when true it sets {alias.key}={alias.when_true!r}",
                    key=alias.key,
                )
            if on:
                layer.add(alias.key, alias.when_true, origin)
            continue
        if field_spec(alias.key).type_name == "bool" and parse_bool(raw) is None:
            # Say which variable is wrong, in the words users of the old system know.
            raise ConfigError(
                f"Environment variable {var}={raw!r} must be a boolean ({BOOL_WORDS}); it sets {alias.key}",
                key=alias.key,
            )
        layer.add(alias.key, raw, origin, text=True)
    return layer


def _cli_layer(overrides: Sequence[str]) -> _Layer:
    layer = _Layer()
    for token in overrides:
        key, sep, text = token.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"Malformed override {token!r}: expected KEY=VALUE with a dotted key, e.g. train.optimizer.lr=3e-4"
            )
        layer.add(key, text, _Origin("cli", f"override {token!r}"), text=True)
    return layer


# --------------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------------


def load_config(
    preset: str | Path | None = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ResolvedConfig:
    """Resolve the configuration from schema defaults, a preset, environment aliases and overrides.

    ``preset`` is a name in the configs folder, a path to a YAML file, or None for the bare schema
    defaults. ``overrides`` are ``dotted.key=value`` tokens. ``env`` is where aliases (and
    ``ATFT_CONFIG_DIR``) are read; None means ``os.environ``; pass ``{}`` to ignore the process
    environment. Raises ConfigError with a one-line message on any problem.
    """
    env = os.environ if env is None else env
    if isinstance(overrides, str):  # a lone "a=b" would otherwise be iterated character by character
        overrides = (overrides,)

    cfg = OmegaConf.structured(ATFTConfig)
    origins: dict[str, _Origin] = {}

    def origin_of(key: str) -> str | None:
        return origins[key].detail if key in origins else None

    def final_origin_of(key: str) -> str:
        # For the checks on the final config, a key no layer set is at its schema default; saying so
        # tells the user which of the linked keys they did not choose.
        return origin_of(key) or "the schema default"

    def merge(layer: _Layer) -> dict[str, Any]:
        """Apply ``layer`` in place (later assignments win, lists are replaced), check every field,
        and return the config as plain nested dicts."""
        for key, value, origin in layer.assignments:
            origins[key] = origin
            try:
                OmegaConf.update(cfg, key, value, merge=False)
            except OmegaConfBaseException as exc:  # values are already typed, so this is unexpected
                raise ConfigError(
                    f"Cannot set {key} (from {origin.detail}): {' '.join(str(exc).split())}"
                ) from None
        values = OmegaConf.to_container(cfg)
        validate_fields(values, origin_of)
        return values

    # Each layer is read and its fields checked in turn, so a bad value names the layer that set it.
    if preset is not None:
        merge(_preset_layer(*resolve_preset(preset, env)))
    values = merge(_env_layer(env))
    values = merge(_cli_layer(overrides))

    # Only now, with every layer in, adapt the defaults that follow other keys and check the rules that
    # link keys: an intermediate state (env sets warm-up, the command line raises max_epochs) may be
    # inconsistent without the result being so. A key any layer set counts as chosen by the user, except
    # that a preset's warm-up may still shrink to fit max_epochs: only env and cli protect it.
    user_set = {key for key, origin in origins.items() if not origin.label.startswith(PRESET_LABEL)}
    derived = _Layer()
    for key, value, follows in adapt_defaults(values, explicit=set(origins), user_set=user_set):
        derived.add(key, value, _Origin(f"derived:{follows}", f"the default, adapted to {follows}"))
    if derived.assignments:
        values = merge(derived)
    validate_cross_fields(values, final_origin_of)

    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:  # a ${...} in a value that names no key
        raise ConfigError(f"Cannot resolve an interpolation: {' '.join(str(exc).split())}") from None
    OmegaConf.set_readonly(cfg, True)
    sources = {
        key: origins[key].label
        for key, spec in schema_fields().items()
        if key in origins and OmegaConf.select(cfg, key) != spec.default
    }
    return ResolvedConfig(cfg=cfg, sources=sources, preset=NO_PRESET if preset is None else str(preset))


def config_changes(a: Any, b: Any) -> list[str]:
    """The dotted keys whose values differ between two configs (a run's saved one and the one it would be
    trained with now): what makes a finished run unfit for reuse."""

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix.rstrip("."): tree}
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    flat_a = flat(OmegaConf.to_container(a, resolve=True))
    flat_b = flat(OmegaConf.to_container(b, resolve=True))
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))
