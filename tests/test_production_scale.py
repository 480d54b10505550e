"""The caches that let a production-size run fit one machine (docs/production.md): the memory-mapped feature
panel, the day graphs on disk and the guard's verdict, all in the dataset's ``cache/`` folder.

They must change nothing: the same arrays and graphs, bit for bit, as computing them; a changed dataset is
never served from a stale cache; a damaged cache file is rebuilt (with a warning), since it holds nothing
that the tables do not.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch
from test_training import tiny_cfg

from atft.features.dataset import CACHE_DIR, DatasetFolder
from atft.features.panel import DayPanel
from atft.workflow import run_data
from atft.workflow.run_data import day_graph, load_run_data
from atft.workflow.train import train_run


@pytest.fixture
def dataset(tiny_dataset, tmp_path) -> DatasetFolder:
    """A private copy of the tiny dataset (without any cache), free to change and damage."""
    shutil.copytree(tiny_dataset, tmp_path / "ds", ignore=shutil.ignore_patterns(CACHE_DIR))
    return DatasetFolder(tmp_path / "ds")


def _cache_files(folder: DatasetFolder, kind: str) -> list:
    return sorted((folder.root / CACHE_DIR).glob(f"{kind}-*"))


def _assert_same_panel(a: DayPanel, b: DayPanel) -> None:
    assert a.x.shape == b.x.shape and a.x.dtype == b.x.dtype == np.float32
    assert a.x.tobytes() == b.x.tobytes()  # bit for bit, NaN payloads included
    for name in ("y", "label_end", "dates", "codes", "stock_id", "sector_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.feature_names == b.feature_names and a.label_names == b.label_names


def test_memory_mapped_panel_is_the_in_memory_one(dataset):
    in_memory = DayPanel.load(dataset)
    cold = DayPanel.load(dataset, cache=True)  # scatters into the cache file
    warm = DayPanel.load(dataset, cache=True)  # reads it back
    _assert_same_panel(in_memory, cold)
    _assert_same_panel(in_memory, warm)
    assert len(_cache_files(dataset, "panel")) == 1
    assert isinstance(warm.x.base, np.memmap)  # held by the page cache, not copied into the process
    assert warm.x.flags.writeable and torch.equal(
        warm.x_tensor.nan_to_num(7), in_memory.x_tensor.nan_to_num(7)
    )
    assert torch.equal(warm.window_view(30, 20).nan_to_num(7), in_memory.window_view(30, 20).nan_to_num(7))

    # another feature list is another file, never a slice of the first one's
    some = list(reversed(dataset.manifest["model_features"][:7]))
    _assert_same_panel(
        DayPanel.load(dataset, features=some), DayPanel.load(dataset, features=some, cache=True)
    )
    assert len(_cache_files(dataset, "panel")) == 2


def test_writing_to_the_mapped_panel_never_changes_the_cache(dataset):
    first = DayPanel.load(dataset, cache=True)
    first.x[:] = 0.0  # copy-on-write: this process's pages only
    _assert_same_panel(DayPanel.load(dataset), DayPanel.load(dataset, cache=True))


def test_a_changed_dataset_is_never_served_from_the_cache(dataset):
    before = DayPanel.load(dataset, cache=True)
    old = _cache_files(dataset, "panel")
    # change one value of features.parquet in place: the stamp (size, mtime, schema hash) changes
    table = dataset.read("features")
    name = dataset.manifest["model_features"][0]
    table = table.with_columns(pl.col(name).fill_null(0.0) + 1.0)
    table.write_parquet(dataset.path("features"))
    after = DayPanel.load(dataset, cache=True)
    _assert_same_panel(DayPanel.load(dataset), after)
    assert not np.array_equal(before.x[..., 0], after.x[..., 0], equal_nan=True)
    assert _cache_files(dataset, "panel") != old and len(_cache_files(dataset, "panel")) == 1  # stale gone


def test_rebuilding_the_dataset_over_its_cache_is_allowed(dataset):
    DayPanel.load(dataset, cache=True)
    tables = {t: dataset.read(t) for t in DatasetFolder.TABLES if dataset.has(t)}
    manifest = {k: v for k, v in dataset.manifest.items() if k != "kind"}
    DatasetFolder.write(dataset.root, tables, manifest, overwrite=True)  # `atft data build --overwrite`
    assert not (dataset.root / CACHE_DIR).exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape"])
def test_a_damaged_panel_cache_is_rebuilt_with_a_warning(dataset, damage):
    """Rebuilt, not refused: the file is derived (the tables are the truth), and it is written atomically,
    so only the disk or another program damages it; refusing would make the user delete it by hand."""
    DayPanel.load(dataset, cache=True)
    [path] = _cache_files(dataset, "panel")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an npy file" * 100)
    else:
        np.save(path, np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.warns(UserWarning, match=r"panel-.*\.npy is damaged .*rebuilding it"):
        panel = DayPanel.load(dataset, cache=True)
    _assert_same_panel(DayPanel.load(dataset), panel)
    _assert_same_panel(panel, DayPanel.load(dataset, cache=True))  # the rebuilt file is whole


def _graphs(builder, data) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The graph of every served day of every segment, as the loaders ask for them."""
    out = []
    for segment in data.datasets.values():
        for i in range(len(segment)):
            stocks = segment.stock_idx[segment.day_ptr[i] : segment.day_ptr[i + 1]]
            out.append(builder(int(segment.day_index[i]), stocks))
    return out


def _assert_same_graphs(a, b) -> None:
    assert len(a) == len(b)
    for (ei_a, ea_a), (ei_b, ea_b) in zip(a, b, strict=True):
        assert ei_a.dtype == ei_b.dtype == torch.long and ea_a.dtype == ea_b.dtype == torch.float32
        assert torch.equal(ei_a, ei_b) and torch.equal(ea_a, ea_b)


def test_graphs_cached_on_disk_are_the_computed_ones(dataset):
    cfg = tiny_cfg()
    run = load_run_data(cfg, dataset, say=lambda s: None)
    computed = _graphs(day_graph(run.panel, cfg, dataset, disk=None), run.data)
    cold = day_graph(run.panel, cfg, dataset)  # computes and writes
    _assert_same_graphs(computed, _graphs(cold, run.data))
    warm = day_graph(run.panel, cfg, dataset)  # a fresh builder (another run): reads every graph back
    _assert_same_graphs(computed, _graphs(warm, run.data))
    assert warm.disk_hits == len(computed) and cold.disk_hits == 0
    assert sum(e.shape[1] for e, _ in computed) > 0  # the graphs are not all empty

    # other settings are other graphs: never read from the first ones' files
    other = tiny_cfg("model.graph.top_k=5")
    builder = day_graph(run.panel, other, dataset)
    _assert_same_graphs(
        _graphs(day_graph(run.panel, other, dataset, disk=None), run.data), _graphs(builder, run.data)
    )
    assert builder.disk_hits == 0

    # a damaged day file is computed again, with a warning, and rewritten
    day_file = sorted(cold._disk_dir.iterdir())[0]
    day_file.write_bytes(b"PK\x03\x04 damaged")
    with pytest.warns(UserWarning, match="is damaged"):
        _assert_same_graphs(computed, _graphs(day_graph(run.panel, cfg, dataset), run.data))
    assert np.load(day_file)["edge_index"].dtype == np.int64  # rewritten whole


def test_the_guard_runs_once_per_dataset_and_settings(dataset, monkeypatch):
    calls = []
    real = run_data.guard_dataset
    monkeypatch.setattr(run_data, "guard_dataset", lambda *a: calls.append(a) or real(*a))
    cfg = tiny_cfg()
    run_data.check_dataset(dataset, cfg)
    run_data.check_dataset(dataset, cfg)
    assert len(calls) == 1
    run_data.check_dataset(dataset, tiny_cfg("features.guard.max_null_rate=0.4"))  # other settings
    assert len(calls) == 2
    table = dataset.read("stocks")
    table.write_parquet(dataset.path("stocks"))  # the tables changed (their stamp did)
    run_data.check_dataset(dataset, cfg)
    assert len(calls) == 3


@pytest.mark.slow
def test_training_from_the_caches_gives_the_same_forecasts(dataset, tmp_path):
    """A run that builds the caches and one that reads them forecast the same numbers, bit for bit."""
    cfg = tiny_cfg(f"train.runs_dir={tmp_path / 'runs'}")
    frames = []
    for name in ("cold", "warm"):
        train_run(cfg, dataset.root, tmp_path / "runs" / name, say=lambda s: None, progress_bar=False)
        frames.append(pl.read_parquet(tmp_path / "runs" / name / "predictions" / "valid.parquet"))
    assert frames[0].equals(frames[1])
