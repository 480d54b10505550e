"""Typed configuration of ATFT: one schema, YAML presets, environment aliases and dotted overrides.

>>> from atft.config import load_config
>>> resolved = load_config("production", ["train.optimizer.lr=3e-4"], env={})
>>> resolved.cfg.train.optimizer.lr
0.0003
>>> resolved.sources["train.optimizer.lr"]
'cli'

``ATFTConfig`` is the type of the whole config (the root dataclass of the schema), for annotations
such as ``cfg: ATFTConfig``. The modules: ``schema`` (the dataclasses and their rules), ``validation``
(the checks and conversions that enforce them), ``loader`` (presets, environment aliases, overrides
and provenance), ``errors`` (``ConfigError``).

See docs/config.md for the layers, the override syntax and the table of environment aliases.
"""

from atft.config.errors import ConfigError
from atft.config.loader import (
    CONFIG_DIR_ENV,
    DEFAULT_PRESET,
    ENV_ALIASES,
    EnvAlias,
    ResolvedConfig,
    available_presets,
    config_changes,
    find_config_dir,
    load_config,
)
from atft.config.schema import (
    ATFTConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    schema_fields,
)
from atft.config.validation import validate

__all__ = [
    "ATFTConfig",
    "CONFIG_DIR_ENV",
    "ConfigError",
    "DEFAULT_PRESET",
    "DataConfig",
    "ENV_ALIASES",
    "EnvAlias",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "ResolvedConfig",
    "TrainConfig",
    "available_presets",
    "config_changes",
    "find_config_dir",
    "load_config",
    "schema_fields",
    "validate",
]
