"""Benchmark: three parts of a training step, each package version's own, side by side.

The parts issue 15's profile found dear on a CPU (docs/performance.md): FAN's forward, the dropout over the
LSTM's output ([N, L, H], forward and backward), and the optimizer step. Each version (``--before SRC``, an
older package's ``src``, and this checkout's) builds its own model and optimizer (``bench_train.package_parts``)
on the benchmark's batch (``bench_train.day_batch``) in a child process and times every part ``--reps``
times; the versions alternate ``--runs`` times and the medians are kept.

Usage: ``.venv/bin/python benchmarks/bench_step_parts.py [--preset cpu] [--before OLD_SRC --runs 3]
[--name step_parts]``; writes results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import env_with_src, save_result


def time_parts(preset: str | None, stocks: int, days: int, features: int, reps: int) -> dict[str, float]:
    """Median milliseconds of each part, in this process (2 threads, as CI)."""
    import torch
    from bench_train import day_batch, package_parts

    from atft.config import load_config

    try:
        from atft.training.allocator import keep_freed_memory
    except ImportError:  # a package older than the allocator setting ran its steps without it
        keep_freed_memory = None
    torch.set_num_threads(2)
    if keep_freed_memory is not None:
        keep_freed_memory()  # as `atft train` does before its first step
    torch.manual_seed(0)
    cfg = load_config(preset, ["train.trainer.precision=32"], env={}).cfg  # the parts in full precision
    model, _, optimizer, _ = package_parts(cfg, features, "cpu")
    model.train()
    x, _, _, _ = day_batch(stocks, days, int(cfg.data.lookback), features, list(cfg.data.horizons), "cpu")
    # a package whose encoder is time-major (its LSTM not batch_first) takes FAN's windows as [L, N, F]
    windows = x if model.temporal.lstm.batch_first else x.transpose(0, 1)
    # the LSTM's output, [N, L, H] or [L, N, H]: the dropout's cost depends on the size alone
    hidden = torch.randn(stocks, x.shape[1], int(cfg.model.hidden_size), requires_grad=True)
    grad = torch.randn_like(hidden)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3

    def fan() -> None:
        model.fan(windows)

    def dropout() -> None:
        model.temporal.dropout(hidden).backward(grad)

    parts = {"fan_forward": fan, "lstm_output_dropout_fwd_bwd": dropout, "optimizer_step": optimizer.step}
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(reps):
        for name, part in parts.items():
            start = time.perf_counter()
            part()
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(t[3:]), 3) for name, t in times.items()}  # 3 warm-up reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--stocks", type=int, default=500)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--features", type=int, default=80)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--before", type=Path, help="The src folder of an older package, run first in each pair.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--name", default="step_parts", help="results/<name>.json")
    ap.add_argument("--child", action="store_true", help="(internal) time the parts in this process")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(time_parts(args.preset, args.stocks, args.days, args.features, args.reps)))
        return
    new_src = Path(__file__).resolve().parents[1] / "src"
    versions = {"before": args.before, "after": new_src} if args.before else {"after": new_src}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    for _ in range(args.runs):
        for name, src in versions.items():
            child = subprocess.run(
                [sys.executable, __file__, "--child", "--preset", args.preset, "--stocks", str(args.stocks),
                 "--days", str(args.days), "--features", str(args.features), "--reps", str(args.reps)],
                check=True, stdout=subprocess.PIPE, text=True, env=env_with_src(src),
            )  # fmt: skip
            runs[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    medians = {
        name: {part: statistics.median(r[part] for r in rs) for part in rs[0]} for name, rs in runs.items()
    }
    result = {
        "benchmark": "step_parts",
        "preset": args.preset,
        "shape": {"stocks": args.stocks, "days": args.days, "features": args.features},
        "before_src": str(args.before) if args.before else None,
        "median_ms": medians,
        "runs_ms": runs,
    }
    if args.before:
        result["ratio_before_to_after"] = {
            part: round(medians["before"][part] / medians["after"][part], 2) for part in medians["after"]
        }
    save_result(args.name, result)


if __name__ == "__main__":
    main()
