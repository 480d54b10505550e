"""Profile one training step (forward, loss, backward, AdamW) with torch.profiler: where the time goes.

The step of ``bench_train.py`` (a batch of ``--days`` days of ``--stocks`` stocks, a ~10-neighbour graph,
the preset's full loss) with the preset's model (``--preset production`` by default: hidden 256, lookback
60, VSN on), in the precision `atft train` gives the preset on this machine (``--bf16`` forces bf16
autocast). Prints the operators by self time and the forward by module, and writes both to
``benchmarks/results/profile_<device>[_bf16].json``. On a GPU the times are CUDA times and the peak GPU
memory is recorded. Usage::

    .venv/bin/python benchmarks/profile_step.py [--preset production] [--device cpu|cuda] [--bf16]
        [--stocks 4000] [--days 1] [--features 94] [--steps 5]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from bench_train import day_batch, package_parts, step_autocast
from harness import save_result
from torch.profiler import ProfilerActivity, profile, record_function

from atft.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="production")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="force bf16 autocast; otherwise the preset's precision on this machine",
    )
    ap.add_argument("--stocks", type=int, default=500)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--features", type=int, default=94)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=20, help="operators to list")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)  # CI's and the developers' machines have 2 cores
    torch.manual_seed(0)
    cfg = load_config(args.preset, env={}).cfg
    horizons, lookback = list(cfg.data.horizons), int(cfg.data.lookback)
    model, loss_fn, optimizer, precision = package_parts(cfg, args.features, device.type, args.bf16)
    args.bf16 = precision == "bf16-mixed"  # the preset's own precision on this machine, or forced
    x, edge_index, edge_attr, batch = day_batch(
        args.stocks, args.days, lookback, args.features, horizons, device
    )
    autocast = step_autocast(precision, device.type)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        with autocast:
            with record_function("forward"):
                out = model(x, edge_index, edge_attr)
            with record_function("loss"):
                total, _ = loss_fn(out, batch)
        optimizer.zero_grad()
        with record_function("backward"):
            total.backward()
        with record_function("optimizer"):
            optimizer.step()

    for _ in range(3):  # warm-up (and cuDNN / oneDNN kernel choice)
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    step_ms = 1000 * (time.perf_counter() - start) / args.steps

    for name, module in model.named_children():  # the forward by module, as profiler ranges
        forward = module.forward

        def timed(*a, _forward=forward, _name=name, **k):
            with record_function(f"module::{_name}"):
                return _forward(*a, **k)

        module.forward = timed
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    events = prof.key_averages()
    on_device = device.type == "cuda"

    def self_us(e) -> float:
        return e.self_device_time_total if on_device else e.self_cpu_time_total

    def total_us(e) -> float:
        return e.device_time_total if on_device else e.cpu_time_total

    ops = [
        e for e in events if not e.key.startswith(("module::", "forward", "loss", "backward", "optimizer"))
    ]
    all_self = sum(self_us(e) for e in ops) or 1.0
    top = sorted(ops, key=self_us, reverse=True)[: args.top]
    table = [{"op": e.key, "share": round(self_us(e) / all_self, 4), "calls": e.count} for e in top]
    ranges: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith("module::") or e.key in ("forward", "loss", "backward", "optimizer"):
            ranges[e.key] += total_us(e) if not on_device else e.cpu_time_total
    forward = ranges.get("forward", 0.0) or 1.0
    modules = {k.removeprefix("module::"): round(v / forward, 4) for k, v in ranges.items() if "::" in k}
    phases = {k: round(v / args.steps / 1000, 2) for k, v in ranges.items() if "::" not in k}

    print(f"step {step_ms:.1f} ms ({args.stocks / step_ms * 1000:,.0f} windows/s) on {device}")
    for row in table:
        print(f"  {row['share']:6.1%}  {row['op']}  ({row['calls']} calls)")
    print(
        "forward by module:",
        ", ".join(f"{k} {v:.0%}" for k, v in sorted(modules.items(), key=lambda kv: -kv[1])),
    )
    result = {
        "preset": args.preset,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if on_device else None,
        "bf16": args.bf16,
        "shape": {"stocks": args.stocks, "days": args.days, "lookback": lookback, "features": args.features},
        "step_ms": round(step_ms, 1),
        "windows_per_s": round(args.stocks / step_ms * 1000),
        "top_ops_by_self_time": table,
        "forward_share_by_module": modules,
        "phase_ms_host": phases,
        **({"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2)} if on_device else {}),
    }
    save_result(f"profile_{device.type}{'_bf16' if args.bf16 else ''}", result)


if __name__ == "__main__":
    main()
