"""The models ``atft train`` can build, by ``model.name``: the one place that maps a name to a class.

Every model takes ``(n_features, horizons, quantiles, model_cfg, target_scale)``, reads ``forward(x,
edge_index, edge_attr)`` and returns the same dict (``point``, ``quantiles``, ``embedding``), so the
training engine, evaluation, backtest and doctor work on any of them unchanged. A new model is one file
in ``models/``, one entry below, and its name in ``atft.config.schema.MODEL_NAMES``.
"""

from __future__ import annotations

from torch import nn

from atft.config.schema import ModelConfig
from atft.models.apex_ranker import ApexRanker
from atft.models.atft_gat_fan import ATFTGATFAN

# model.name -> (class, display name)
MODELS: dict[str, tuple[type[nn.Module], str]] = {
    "atft_gat_fan": (ATFTGATFAN, "ATFT-GAT-FAN"),
    "apex": (ApexRanker, "APEX-Ranker"),
}


def _entry(name: str) -> tuple[type[nn.Module], str]:
    if name not in MODELS:
        known = ", ".join(repr(n) for n in MODELS)
        raise ValueError(f"{name!r} is not an available model; the models that exist are {known}")
    return MODELS[name]


def build_model(
    n_features: int,
    horizons: list[int],
    quantiles: list[float],
    model_cfg: ModelConfig,
    target_scale: list[float] | None = None,
) -> nn.Module:
    """The model named by ``model_cfg.name``, built for ``n_features`` inputs and these horizons."""
    cls, _ = _entry(str(model_cfg.name))
    return cls(n_features, horizons, quantiles, model_cfg, target_scale)


def model_label(name: str) -> str:
    """The display name of a model: ``atft_gat_fan`` -> ``ATFT-GAT-FAN``, ``apex`` -> ``APEX-Ranker``."""
    return _entry(name)[1]
