"""The production-size run on one machine: synth -> build -> train -> evaluate at 4,000 stocks x 2,650 days.

    flock /tmp/atft_bigmem.lock .venv/bin/python benchmarks/bench_production.py [--work /tmp/prod] [--reuse]

Each stage is one ``atft`` command in a child process (``harness.run_cli``); its wall time and peak RSS go to
``results/production.json``. Training uses the production preset (``-p production``). Where a GPU is present
it trains one full epoch; on a CPU it trains ``--steps`` batches of one day each (Lightning reads
``PL_TRAINER_LIMIT_TRAIN_BATCHES`` / ``PL_TRAINER_LIMIT_VAL_BATCHES`` from the environment) and forecasts
short validation and test segments, because a CPU step at this size takes about a minute and holds the
model's activations in the process (about 7.5 GB per 4,000 windows of 60 days at hidden size 256; the
preset's four days per batch would need ~30 GB, on a GPU they live in GPU memory); so on a CPU the stocks'
histories are encoded in checkpointed chunks (``model.checkpoint_chunk``, ``--checkpoint-chunk``). The data side (guard,
panel, graphs, loaders) is the production one either way: the whole panel is loaded and served.

Training runs twice: ``train_cold`` on a fresh dataset builds the caches (panel, day graphs, guard verdict:
docs/production.md), ``train_warm`` reads them. ``--reuse`` keeps a raw store and dataset already under
``--work`` (their stages are then not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from harness import run_cli, save_result

TARGETS = {"train_peak_rss_gb": 12.0, "any_stage_peak_rss_gb": 20.0}  # 20 of the machine's 24 GB
CPU_SPLIT = ["data.split.valid_days=10", "data.split.test_days=10"]  # forecasts of 10 + 10 days on a CPU


def stage_in_child(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``atft ARGS`` through ``run_cli`` in a fresh process of this script, so that the peak RSS is this
    stage's alone (ru_maxrss of RUSAGE_CHILDREN is the largest over every child a process ever waited for)."""
    out = subprocess.run(
        [sys.executable, __file__, "--stage-json", json.dumps(args)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prod"))
    parser.add_argument("--stocks", type=int, default=4000)
    parser.add_argument("--days", type=int, default=2650)
    parser.add_argument("--steps", type=int, default=2, help="training batches on a CPU (one day each)")
    parser.add_argument(
        "--checkpoint-chunk",
        type=int,
        default=512,
        help="model.checkpoint_chunk on a CPU (0: keep every activation, ~7.5 GB per 4,000 windows)",
    )
    parser.add_argument("--reuse", action="store_true", help="keep a raw store and dataset under --work")
    parser.add_argument("--stage-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage_json:  # the child of stage_in_child
        print(json.dumps(run_cli(*json.loads(args.stage_json))))
        return

    work, raw, dataset = args.work, args.work / "raw", args.work / "dataset"
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    stages: dict[str, dict[str, float] | None] = {}
    if args.reuse and (dataset / "manifest.json").is_file():
        stages["synth"] = stages["build"] = None
    else:
        synth = ["data", "synth", "--out", str(raw), "--stocks", str(args.stocks), "--days", str(args.days)]
        stages["synth"] = stage_in_child([*synth, "--overwrite"], {})
        build = ["data", "build", "--raw", str(raw), "--out", str(dataset), "--overwrite"]
        stages["build"] = stage_in_child(build, {})
    shutil.rmtree(dataset / "cache", ignore_errors=True)  # train_cold starts without any cache

    train = ["train", "-p", "production", "--data-path", str(dataset), "--max-epochs", "1"]
    train += [f"train.runs_dir={work / 'runs'}"]
    env: dict[str, str] = {}
    if not gpu:
        train += [
            *CPU_SPLIT,
            "train.batch.days_per_batch=1",
            f"model.checkpoint_chunk={args.checkpoint_chunk}",
        ]
        env = {"PL_TRAINER_LIMIT_TRAIN_BATCHES": str(args.steps), "PL_TRAINER_LIMIT_VAL_BATCHES": "1"}
    for name in ("train_cold", "train_warm"):
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
        stages[name] = stage_in_child([*train, "--run-name", name], env)
    stages["evaluate"] = stage_in_child(["evaluate", str(work / "runs" / "train_warm")], {})

    measured = {k: v for k, v in stages.items() if v is not None}
    train_peak = max(stages["train_cold"]["peak_rss_gb"], stages["train_warm"]["peak_rss_gb"])
    passed = train_peak < TARGETS["train_peak_rss_gb"] and all(
        v["peak_rss_gb"] < TARGETS["any_stage_peak_rss_gb"] for v in measured.values()
    )
    manifest = json.loads((dataset / "manifest.json").read_text())
    # The precision training resolved to here: bf16-mixed on a GPU or a CPU with native bf16, else 32.
    hardware = json.loads((work / "runs" / "train_warm" / "summary.json").read_text())["hardware"]
    save_result(
        "production_gpu" if gpu else "production",
        {
            "benchmark": "production",
            "stocks": manifest["n_stocks"],
            "days": manifest["n_dates"],
            "rows": manifest["rows"],
            "features": len(manifest["model_features"]),
            "stages": stages,
            "training": "one full epoch" if gpu else f"{args.steps} batches of 1 day, 1 validation batch",
            "train_precision": hardware["precision"],
            "train_overrides": train[train.index("--max-epochs") :],
            "train_env": env,
            "targets": TARGETS,
            "pass": passed,
            "machine": {"cpu_count": os.cpu_count(), "gpu": gpu, "python": platform.python_version()},
        },
    )
    table = ", ".join(f"{k} {v['wall_s']:.0f} s / {v['peak_rss_gb']:.1f} GB" for k, v in measured.items())
    print(f"{'PASS' if passed else 'FAIL'}: training peak RSS {train_peak:.1f} GB (target < "
          f"{TARGETS['train_peak_rss_gb']:.0f}); {table}")  # fmt: skip


if __name__ == "__main__":
    main()
