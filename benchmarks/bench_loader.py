"""Benchmark: how many stock-windows per second the day loader serves on 2 threads.

Target (day-panel loader issue): at least 20,000 stock-windows per second on 2 cores. Builds a random panel
of 4,000 stocks x 400 days x 90 features in memory, then times a shuffled training loader (4 days a batch,
lookback 60, no workers) over ~50 batches and writes ``benchmarks/results/loader.json``.
Usage: ``.venv/bin/python benchmarks/bench_loader.py [--stocks N --days N --features N --batches N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from harness import save_result

from atft.features.panel import DayPanel
from atft.training.datamodule import DayDataModule

TARGET = 20_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--features", type=int, default=90)
    ap.add_argument("--lookback", type=int, default=60)
    ap.add_argument("--batches", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(2)  # CI has 2 cores

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.stocks, args.days, args.features), dtype=np.float32)  # [S, D, F]
    y = rng.standard_normal((args.stocks, args.days, 4), dtype=np.float32)  # [S, D, H]
    x[rng.random((args.stocks, args.days)) < 0.001] = np.nan  # a few missing rows
    panel = DayPanel.from_arrays(x, y, label_names=["target_1d", "target_5d", "target_10d", "target_20d"])
    module = DayDataModule(panel, lookback=args.lookback, days_per_batch=4, train=(None, None), seed=0)
    setup_start = time.perf_counter()
    module.setup()
    setup_s = time.perf_counter() - setup_start

    windows, batches = 0, 0
    start = time.perf_counter()
    while batches < args.batches:
        for batch in module.train_dataloader():
            windows += batch["x"].shape[0]
            batches += 1
            if batches == args.batches:
                break
    wall = time.perf_counter() - start
    rate = windows / wall
    result = {
        "benchmark": "loader",
        "stocks": args.stocks,
        "days": args.days,
        "features": args.features,
        "lookback": args.lookback,
        "days_per_batch": 4,
        "batches": batches,
        "stock_windows": windows,
        "wall_s": round(wall, 2),
        "setup_s": round(setup_s, 2),
        "stock_windows_per_s": round(rate),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "targets": {"stock_windows_per_s": TARGET},
    }
    save_result("loader", result)
    ok = rate >= TARGET
    print("PASS" if ok else "FAIL: under target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
