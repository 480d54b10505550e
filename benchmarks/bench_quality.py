"""Benchmark: what the default preset learns on the default synthetic market, and what the graph adds.

Targets (model and training issue), on the default synthetic market (500 stocks x 1,500 days, seed 0) with
the default preset on 2 cores: training takes under 15 minutes, and the test-period RankIC at 5 days reaches
at least 50% of the oracle's on the same (date, code) rows. With ``model.graph.mode=none`` the model cannot
see the lead-lag signal planted across stocks, so it should score lower.

Runs ``atft data synth`` and ``atft data build`` (skipped when --dataset is given), then ``atft train``
twice (graph on, graph off), each in a child process, and writes ``results/quality.json``.
Usage: ``.venv/bin/python benchmarks/bench_quality.py [--dataset DIR] [--work DIR] [--only graph|none]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import run_cli, save_result

VARIANTS = {"graph": [], "none": ["model.graph.mode=none"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--only", choices=sorted(VARIANTS), default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="atft_quality_"))
    dataset = args.dataset
    if dataset is None:
        run_cli("data", "synth", "--out", str(work / "raw"))
        run_cli("data", "build", "--raw", str(work / "raw"), "--out", str(work / "dataset"))
        dataset = work / "dataset"
    results = {}
    for name, overrides in VARIANTS.items():
        if args.only and name != args.only:
            continue
        timing = run_cli(
            "train",
            "--data-path",
            str(dataset),
            "--run-name",
            name,
            f"train.runs_dir={work / 'runs'}",
            *overrides,
        )
        summary = json.loads((work / "runs" / name / "summary.json").read_text())
        test, oracle = summary["test_metrics"], summary["oracle_test_rankic"]
        results[name] = {
            **timing,
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "parameters": summary["parameters"],
            "test_rankic": {k.split("_")[1]: round(test[k], 4) for k in test if k.startswith("rankic_")},
            "oracle_test_rankic": {k.split("_")[1]: round(v, 4) for k, v in oracle.items()},
            "capture_5d": round(test["rankic_5d"] / oracle["rankic_5d"], 3),
            "valid_rankic_5d": round(summary["valid_metrics"]["rankic_5d"], 4),
            "test_sharpe_5d": round(test["sharpe_5d"], 3),
        }
    graph = results.get("graph", {})
    save_result(
        "quality" if not args.only else f"quality_{args.only}",
        {
            "market": "atft data synth defaults: 500 stocks x 1,500 days, seed 0",
            "preset": "cpu (default)",
            "runs": results,
            "targets": {"train_minutes": 15, "capture_5d": 0.5},
            "pass_time": graph.get("wall_s", 1e9) < 15 * 60 if graph else None,
            "pass_capture": graph.get("capture_5d", 0) >= 0.5 if graph else None,
        },
    )


if __name__ == "__main__":
    main()
