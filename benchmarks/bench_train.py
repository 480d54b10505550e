"""Benchmark: training throughput of ATFT-GAT-FAN in stock-windows per second, forward + backward + update.

Target (model and training issue): at least 3,000 windows/s for the full model at hidden 64, lookback 20 and
80 features on 2 cores. The yardstick: a measured step of a hidden-64 LSTM + attention + GATv2 model on 500
stocks x 20 steps x 80 features takes about 140 ms (3,600 windows/s); pytorch-forecasting's TFT does 167
windows/s on that shape.

Each size runs in its own child process so that its peak RSS is its own. A step is one day-batch: 500
stocks x 20 steps x 80 features, a correlation-like graph of ~10 neighbours per stock, the full default loss
(Huber, pinball, coverage, soft-rank RankIC, variance floor) on 4 days of 125 stocks, and an AdamW update.
Usage: ``.venv/bin/python benchmarks/bench_train.py [--stocks 500 --steps 20]``; writes results/train.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from harness import save_result

TARGET = 3_000


def one_size(
    hidden: int,
    stocks: int,
    lookback: int,
    features: int,
    steps: int,
    days: int,
    device: str = "cpu",
    bf16: bool = False,
) -> dict:
    import contextlib

    import torch

    from atft.config import load_config
    from atft.models.atft_gat_fan import ATFTGATFAN, count_parameters
    from atft.training.allocator import keep_freed_memory
    from atft.training.loss import MultiHorizonLoss

    torch.set_num_threads(2)  # CI has 2 cores
    keep_freed_memory()  # as `atft train` does before its first step
    torch.manual_seed(0)
    cfg = load_config(None, [f"model.hidden_size={hidden}"], env={}).cfg
    horizons = list(cfg.data.horizons)
    model = ATFTGATFAN(features, horizons, list(cfg.model.quantiles), cfg.model).to(device)
    loss_fn = MultiHorizonLoss(horizons, list(cfg.model.quantiles), cfg.loss).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)  # as ForecastModule's

    x = torch.randn(stocks, lookback, features, device=device)
    per_day = stocks // days
    day = torch.arange(stocks) // per_day
    # ~10 neighbours per stock, within its own day, both directions
    src = torch.arange(stocks).repeat_interleave(5)
    dst = day.repeat_interleave(5) * per_day + torch.randint(0, per_day, (stocks * 5,))
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    edge_attr = torch.rand(edge_index.shape[1], 3)
    batch = {k: v.to(device) for k, v in batch_on_cpu(stocks, days, per_day, day, horizons).items()}
    edge_index, edge_attr = edge_index.to(device), edge_attr.to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            out = model(x, edge_index, edge_attr)
            total, _ = loss_fn(out, batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {
        "hidden": hidden,
        "parameters": count_parameters(model),
        "step_ms": round(seconds * 1000, 1),
        "windows_per_s": round(stocks / seconds),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        **(
            {"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2)} if device == "cuda" else {}
        ),
    }


def batch_on_cpu(stocks: int, days: int, per_day: int, day, horizons: list[int]) -> dict:
    import torch

    return {
        "y": torch.randn(stocks, len(horizons)) * 0.03,
        "y_mask": torch.ones(stocks, len(horizons), dtype=torch.bool),
        "day": day,
        "day_ptr": torch.arange(0, stocks + 1, per_day),
        "day_index": torch.arange(days),
        "stock_id": torch.arange(stocks),
        "sector_id": torch.randint(1, 18, (stocks,)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=500)
    ap.add_argument("--lookback", type=int, default=20)
    ap.add_argument("--features", type=int, default=80)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=None, help="(internal) measure one size in this process")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    args = ap.parse_args()
    shape = (args.stocks, args.lookback, args.features, args.steps, args.days)
    if args.hidden is not None:
        print(json.dumps(one_size(args.hidden, *shape, device=args.device, bf16=args.bf16)))
        return
    sizes = []
    for hidden in (64, 128, 256):
        child = subprocess.run(
            [sys.executable, __file__, "--hidden", str(hidden), "--stocks", str(args.stocks),
             "--lookback", str(args.lookback), "--features", str(args.features), "--steps", str(args.steps),
             "--days", str(args.days), "--device", args.device, *(["--bf16"] if args.bf16 else [])],
            check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        sizes.append(json.loads(child.stdout.strip().splitlines()[-1]))
    h64 = sizes[0]["windows_per_s"]
    save_result(
        "train"
        if args.device == "cpu" and not args.bf16
        else f"train_{args.device}{'_bf16' if args.bf16 else ''}",
        {
            "shape": {
                "stocks": args.stocks,
                "lookback": args.lookback,
                "features": args.features,
                "days": args.days,
            },
            "sizes": sizes,
            "target_windows_per_s_h64": TARGET,
            "pass": h64 >= TARGET,
            "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
        },
    )


if __name__ == "__main__":
    main()
