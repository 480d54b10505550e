"""The data of a run: the guarded dataset, its panel, the fold it trains on, the day graph and the loaders.

The one place where a run's data is assembled, so that evaluating a run later serves exactly the days and
graphs that training saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from atft.config import ATFTConfig
from atft.data.splits import Split, splits_from_config
from atft.features import guard
from atft.features.dataset import DatasetFolder, features_without
from atft.features.guard import guard_dataset
from atft.features.labels import training_labels
from atft.features.panel import DayPanel
from atft.models.graph import DayGraphBuilder, uses_graph
from atft.training.datamodule import DayDataModule
from atft.training.trainer import panel_on_device

Say = Callable[[str], None]
# Graphs kept in memory when they are also cached on disk: a few batches' worth, not an epoch's (~2 MB a
# day at 4,000 stocks; reading one back from the page cache takes about a millisecond).
GRAPH_MEMORY_DAYS = 64


@dataclass
class RunData:
    """What a run trains and forecasts on."""

    dataset: DatasetFolder
    panel: DayPanel
    split: Split
    data: DayDataModule


def day_graph(
    panel: DayPanel, cfg: ATFTConfig, dataset: DatasetFolder, **kwargs: object
) -> DayGraphBuilder | None:
    """The day graph the model attends over, or None when the config switches the graph off."""
    if not uses_graph(cfg.model):
        return None
    kwargs = {"disk": dataset, "cache_days": GRAPH_MEMORY_DAYS, **kwargs}
    return DayGraphBuilder(
        panel.x,
        panel.feature_names,
        panel.sector_id,
        cfg.model.graph,
        market_id=dataset.market_ids(),
        **kwargs,
    )


def check_dataset(dataset: DatasetFolder, cfg: ATFTConfig) -> None:
    """Run the guard (raising on a problem), unless it already passed on these very tables and settings.

    The guard reads every feature of every row (about 11 GB at 4,000 stocks x 10 years), so its verdict is
    kept in the dataset's cache, keyed by the guard's settings and its source: any change to the tables
    (the stamp), to ``features.guard`` or to the guard's code runs it again. Only a pass is kept.
    """
    source = Path(guard.__file__).read_bytes()
    key = hashlib.blake2b(repr(sorted(cfg.features.guard.items())).encode() + source, digest_size=8).hexdigest()
    passed = dataset.cache_path("guard", key, ".npz")
    if dataset.load_cached(passed) is not None:
        return
    guard_dataset(dataset, cfg).raise_if_failed()
    dataset.save_cached(passed, {})


def pick_fold(folds: list[Split], fold: int | None) -> Split:
    """Fold ``fold`` of the splits (None: the last), or an error naming data.split.n_folds."""
    if fold is None:
        return folds[-1]
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} does not exist: data.split.n_folds gives folds 0..{len(folds) - 1}")
    return folds[fold]


def load_run_data(
    cfg: ATFTConfig,
    dataset: DatasetFolder,
    *,
    fold: int | None = None,
    with_test: bool = True,
    say: Say = print,
) -> RunData:
    """Guard the dataset, load its panel and serve one fold's segments (with the day graph).

    ``fold`` numbers the walk-forward folds from 0 (the oldest); None takes the last one. Without
    ``with_test`` the test segment is never served (a search that must not look at the test days).
    """
    say("checking the dataset (guard)")
    check_dataset(dataset, cfg)
    dataset.check_horizons(list(cfg.data.horizons))

    say("loading the panel")
    horizons = list(cfg.data.horizons)
    features = features_without(dataset.manifest, list(cfg.features.drop_groups))
    if cfg.features.drop_groups:
        say(f"leaving out the feature groups {', '.join(cfg.features.drop_groups)} (features.drop_groups)")
    panel = DayPanel.load(dataset, features=features, labels=training_labels(horizons, "raw"), cache=True)
    train_panel = None
    if cfg.data.target != "raw":
        say(f"training on the {cfg.data.target} labels (data.target); scoring on the raw returns")
        train_panel = panel.with_labels(dataset, training_labels(horizons, cfg.data.target))
    split = pick_fold(splits_from_config(dataset.calendar(), cfg), fold)
    on_device = panel_on_device(cfg.train.panel_on_device, panel.x.nbytes, cfg.train.trainer.accelerator)
    data = DayDataModule.from_split(
        panel,
        split,
        lookback=cfg.data.lookback,
        days_per_batch=cfg.train.batch.days_per_batch,
        min_stocks=cfg.data.min_stocks_per_day,
        seed=cfg.train.seed,
        num_workers=cfg.train.num_workers,
        graph=day_graph(panel, cfg, dataset),
        train_panel=train_panel,
        recency_halflife=cfg.train.recency_halflife_days,
        panel_on_device=on_device,
    )
    if on_device:
        say(f"keeping the feature panel ({panel.x.nbytes / 1e9:.1f} GB) on the training device")
    if cfg.train.recency_halflife_days > 0:
        say(f"weighting training days by recency: half-life {cfg.train.recency_halflife_days:g} trading days")
    if not with_test:
        data.ranges["test"] = None
    data.setup()
    return RunData(dataset, panel, split, data)
