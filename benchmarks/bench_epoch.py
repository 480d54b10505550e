"""Benchmark: the demo's training epoch in stock-windows per second, old code against new.

What a user waits for is the whole epoch (loader, day graphs, forward, backward, update), not the model's
step alone. This trains the `cpu` preset for one epoch on the demo's dataset (500 stocks x 1,500 days,
built under ``--work`` once) with ``atft train --max-epochs 1``, each run a child process, and reads the
epoch's pace from the run folder: the run logs its gradient norms at steps 0, 50, 100 and 150, so
windows/s = 150 steps x (training windows / steps per epoch) / (time of step 150 - time of step 0). That
leaves out the first step (the first day graphs) and validation. ``--before SRC`` (an older package's
``src``, as for ``bench_features.py``) runs the same command on the old code, alternating old and new
``--runs`` times. Target (issue 15): 7,000 windows/s on 2 cores.

Usage: ``.venv/bin/python benchmarks/bench_epoch.py [--before OLD_SRC] [--runs 3] [--name epoch]``; writes
results/<name>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import dataset, env_with_src, save_result

from atft.training.run_folder import RunFolder

TARGET = 7_000
LAST_STEP = 150  # the last step whose gradient norms the run logs within the demo's epoch of 186 steps


def one_epoch(data: Path, runs_dir: Path, src: Path) -> dict:
    """Train one epoch with the package under ``src``; its pace, wall time and peak RSS."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "atft.cli.app", "train", "--data-path", str(data), "--max-epochs", "1",
         f"train.runs_dir={runs_dir}"],
        env=env_with_src(src), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"atft train with {src} failed (wait status {status}); rerun it to see why")
    (run,) = [RunFolder(p) for p in runs_dir.iterdir() if p.is_dir()]
    events, _ = run.read_events()
    train = next(e for e in events if e["event"] == "start")["data"]["train"]
    steps = math.ceil(train["days"] / run.read_config().train.batch.days_per_batch)
    at = {e["step"]: e["time"] for e in events if e["event"] == "grad_norm" and e["epoch"] == 0}
    return {
        "windows_per_s": round(LAST_STEP * train["stock_windows"] / steps / (at[LAST_STEP] - at[0])),
        "process_wall_s": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/tmp/atft_bench"))
    ap.add_argument("--before", type=Path, help="The src folder of an older package, run first in each pair.")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--name", default="epoch", help="results/<name>.json")
    args = ap.parse_args()
    data = dataset(args.work, "synth")
    new_src = Path(__file__).resolve().parents[1] / "src"
    versions = {"before": args.before, "after": new_src} if args.before else {"after": new_src}
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for name, src in versions.items():
                runs[name].append(one_epoch(data, Path(tmp) / f"{name}{i}", src))
    result = {
        "benchmark": "epoch",
        "preset": "cpu",
        "dataset": "demo market, 500 stocks x 1,500 days",
        "before_src": str(args.before) if args.before else None,
        **{
            name: {"median_windows_per_s": statistics.median(r["windows_per_s"] for r in rs), "runs": rs}
            for name, rs in runs.items()
        },
        "target_windows_per_s": TARGET,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    if args.before:
        result["ratio_after_to_before"] = round(
            result["after"]["median_windows_per_s"] / result["before"]["median_windows_per_s"], 3
        )
    save_result(args.name, result)


if __name__ == "__main__":
    main()
